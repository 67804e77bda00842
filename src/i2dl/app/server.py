"""The page (one tab per lab, and the runs) and the server that hands it out on 127.0.0.1.

Offline and private by construction: no analytics, no share link, no fonts or scripts from elsewhere (the theme
uses the system's fonts), no fetching of URLs by the server. The only files it serves are in its own private
temporary folder: the uploads, what the tabs made, and copies of the figures it shows from the runs folder (which it
only reads, and never walks out of). No path on the disk is served as such (`allowed_paths` stays empty).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import warnings
from pathlib import Path
from urllib.parse import unquote

from i2dl.app.common import MAX_PIXELS, MAX_UPLOAD, AppContext, TabParts

TITLE = "i2dl: every lab in the browser"
CSS = """
.i2dl-message p { margin: 0.2em 0; }
.i2dl-pixels img { image-rendering: pixelated; object-fit: contain !important; }
#digits-seen img { width: 196px !important; height: 196px !important; margin: 8px auto 0; display: block; }
"""
# the sketchpads start with the brush picked (Gradio's start with no tool: "select the draw tool to start")
JS = """() => {
  const armed = new WeakSet();
  const arm = () => document.querySelectorAll('.i2dl-sketchpad button[aria-label="Brush"]').forEach((button) => {
    if (!armed.has(button)) { armed.add(button); button.click(); }
  });
  new MutationObserver(arm).observe(document.body, {childList: true, subtree: true});
  arm();
}"""
SYSTEM_FONTS = ["system-ui", "-apple-system", "Segoe UI", "Roboto", "Helvetica Neue", "Arial", "sans-serif"]
MONO_FONTS = ["ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "monospace"]


def offline_environment(work_dir: Path) -> None:
    """Before Gradio is imported: no analytics or update checks, and its upload/cache folders private to this
    process (so the server never serves another app's files from a shared /tmp/gradio)."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
    os.environ["GRADIO_TEMP_DIR"] = str(work_dir / "uploads")
    os.environ["GRADIO_EXAMPLES_CACHE"] = str(work_dir / "examples")
    os.environ.setdefault("MPLBACKEND", "Agg")


def refuse_decompression_bombs() -> None:
    """Every image this process decodes (Gradio's too) is refused above MAX_PIXELS pixels."""
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    warnings.simplefilter("error", Image.DecompressionBombWarning)


REMOTE = re.compile(r"^\s*(?:[a-zA-Z][a-zA-Z0-9+.-]*:)?//")  # scheme://... or //host...


def names_remote_file(value) -> bool:
    """Whether a decoded JSON payload holds a file object whose path is a URL (at any depth)."""
    if isinstance(value, dict):
        path = value.get("path")
        return (isinstance(path, str) and bool(REMOTE.match(path))) or any(map(names_remote_file, value.values()))
    if isinstance(value, list):
        return any(map(names_remote_file, value))
    return False


class RefuseRemoteFiles:
    """ASGI middleware: Gradio fetches URLs for clients, and this app fetches nothing. `/file=<URL>` would stream
    any public URL back, and a call whose file input's path is a URL would make the server download it; both get
    403 before Gradio sees them. (Uploads are multipart and pass; other requests' bodies are read whole to check.)"""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = unquote(scope.get("path", ""))
        marker = path.find("/file=")
        target = path[marker + 6 :] if marker >= 0 else ""
        if marker >= 0 and ("://" in target or target.startswith("//")):
            return await self.refuse(send, b"this app serves its own files only")
        headers = dict(scope.get("headers") or [])
        if scope.get("method") == "POST" and b"multipart" not in headers.get(b"content-type", b""):
            messages, more = [], True
            while more:
                message = await receive()
                messages.append(message)
                more = message["type"] == "http.request" and message.get("more_body", False)
            try:
                payload = json.loads(b"".join(m.get("body", b"") for m in messages) or b"null")
            except ValueError:
                payload = None  # not JSON: Gradio answers it
            if names_remote_file(payload):
                return await self.refuse(send, b"this app reads uploaded files only, never URLs")
            pending = iter(messages)

            async def replay():
                return next(pending, None) or await receive()

            return await self.app(scope, replay, send)
        return await self.app(scope, receive, send)

    @staticmethod
    async def refuse(send, text: bytes) -> None:
        await send({"type": "http.response.start", "status": 403, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": text})


def theme():
    """Gradio's default look with the system's fonts (nothing fetched from a font service)."""
    import gradio as gr

    return gr.themes.Default(font=SYSTEM_FONTS, font_mono=MONO_FONTS)


def build_app(ctx: AppContext):
    """The gr.Blocks page with every tab."""
    import gradio as gr

    from i2dl.app import autoencoder, digits, keypoints, rl, runs, segmentation

    tabs: list[TabParts] = []
    with gr.Blocks(title=TITLE, analytics_enabled=False, delete_cache=(1800, 3600)) as page:
        gr.Markdown(
            f"## i2dl · the labs in the browser\nCheckpoints come from `{ctx.runs}` (newest first).",
            elem_id="i2dl-header",
        )
        with gr.Tabs(elem_id="i2dl-tabs"):
            for name, module in (
                ("Digits", digits),
                ("Autoencoder", autoencoder),
                ("Keypoints", keypoints),
                ("Segmentation", segmentation),
                ("RL", rl),
            ):
                with gr.Tab(name, id=module.LAB, elem_id=f"tab-{module.LAB}"):
                    tabs.append(module.build(ctx))
            with gr.Tab("Runs", id="runs", elem_id="tab-runs"):
                runs_on_page_load = runs.build(ctx)

        def on_load():
            """Checkpoints trained since the server started appear on a reload of the page."""
            found = [tab.choices(ctx) for tab in tabs]
            return [gr.Dropdown(choices=f, value=f[0][1] if f else None) for f in found] + [
                gr.Markdown(visible=not f) for f in found
            ]

        loaded = page.load(
            on_load,
            None,
            [tab.checkpoint for tab in tabs] + [tab.hint for tab in tabs],
            api_visibility="private",
            show_progress="hidden",
        )
        for tab in tabs:
            for fn, inputs, outputs in tab.on_load:
                loaded.then(fn, inputs, outputs, api_visibility="private", show_progress="hidden")
        runs_on_page_load(page)
    return page


def launch(
    runs: Path,
    host: str = "127.0.0.1",
    port: int | None = None,
    data_dir: Path | None = None,
    block: bool = True,
    quiet: bool = False,
) -> tuple[object, str, Path]:
    """Build and serve the app; returns (the gr.Blocks, its local URL, its private folder of uploads and outputs).
    `block=False` returns at once."""
    work_dir = Path(tempfile.mkdtemp(prefix="i2dl-app-"))
    offline_environment(work_dir)
    refuse_decompression_bombs()
    from starlette.middleware import Middleware

    ctx = AppContext(runs=Path(runs), data_dir=data_dir, work_dir=work_dir / "outputs")
    ctx.work_dir.mkdir(parents=True, exist_ok=True)
    page = build_app(ctx)
    page.queue(default_concurrency_limit=2)
    try:
        _, url, _ = page.launch(
            server_name=host,
            server_port=port,
            share=False,
            inbrowser=False,
            prevent_thread_lock=True,
            show_error=True,
            allowed_paths=[],
            max_file_size=MAX_UPLOAD,
            ssr_mode=False,
            quiet=quiet,
            enable_monitoring=False,
            app_kwargs={"middleware": [Middleware(RefuseRemoteFiles)]},
            footer_links=["api"],
            theme=theme(),
            css=CSS,
            js=JS,
        )
    except BaseException:
        shutil.rmtree(work_dir, ignore_errors=True)
        raise
    if block:
        page.block_thread()
    return page, url, work_dir
