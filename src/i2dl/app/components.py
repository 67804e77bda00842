"""Two Gradio inputs that hand the tabs what they can check themselves, so that every bad upload becomes the tab's
own clear message instead of an error inside Gradio.

`PhotoInput` is `gr.Image` that passes the uploaded file's path on undecoded (Gradio would open it first, and a
non-image or a decompression bomb would fail there); `common.read_photo` then checks the size from the header
before decoding. `DigitSketchpad` is `gr.Sketchpad` whose decoding errors arrive as a `SketchError` value.
"""

from __future__ import annotations

import base64
import binascii
import io
from contextlib import contextmanager
from dataclasses import dataclass

import gradio as gr
from gradio import component_meta


@contextmanager
def _no_stub_files():
    """Gradio writes a `.pyi` stub beside the module of every component class it sees defined; a package's folder
    is not the place for that (and may be read-only), so the writer is switched off while ours are defined."""
    writer = component_meta.create_or_modify_pyi
    component_meta.create_or_modify_pyi = lambda *args, **kwargs: None
    try:
        yield
    finally:
        component_meta.create_or_modify_pyi = writer


@dataclass
class SketchError:
    """What `DigitSketchpad` passes on when Gradio could not decode a drawing (a malformed API call)."""

    message: str


with _no_stub_files():

    class PhotoInput(gr.Image):
        """An image upload / webcam / clipboard input whose value is the uploaded file's path (or bytes for an
        inline data: URL), never decoded by Gradio."""

        def get_block_name(self) -> str:  # the front end draws it as a plain gr.Image
            return "image"

        def get_block_class(self) -> str:
            return "image"

        def preprocess(self, payload):
            if payload is None:
                return None
            if payload.url and payload.url.startswith("data:"):
                try:
                    return io.BytesIO(base64.b64decode(payload.url.split(",", 1)[1], validate=False))
                except (IndexError, binascii.Error, ValueError):
                    return io.BytesIO(b"")
            return payload.path

    class DigitSketchpad(gr.Sketchpad):
        """A black-ink sketchpad; a drawing Gradio cannot decode arrives as a `SketchError`, not an exception."""

        def get_block_name(self) -> str:
            return "imageeditor"

        def get_block_class(self) -> str:
            return "imageeditor"

        def preprocess(self, payload):
            try:
                return super().preprocess(payload)
            except Exception as err:  # Gradio's own decoding: a non-image or an image too large to open
                return SketchError(f"the drawing could not be read ({type(err).__name__}: {str(err)[:200]})")


def sketchpad(elem_id: str) -> DigitSketchpad:
    """A 280x280 white canvas with a black brush about as wide, relative to the digit, as MNIST's pen."""
    return DigitSketchpad(
        label="draw a digit",
        canvas_size=(280, 280),
        fixed_canvas=True,
        layers=False,
        brush=gr.Brush(default_size=14, colors=["#000000"], color_mode="fixed"),
        height=380,
        elem_id=elem_id,
        elem_classes="i2dl-sketchpad",
        buttons=["fullscreen"],
    )


def checkpoint_picker(found: list[tuple[str, str]], lab: str, runs, label: str) -> tuple[gr.Dropdown, gr.Markdown]:
    """A tab's checkpoint drop-down (newest first, the newest picked) and, when there is none, the hint that says
    how to train one."""
    from i2dl.app.common import train_hint

    checkpoint = gr.Dropdown(
        found,
        value=found[0][1] if found else None,
        label=f"{label} (newest first)",
        allow_custom_value=True,
        elem_id=f"{lab}-checkpoint",
    )
    hint = gr.Markdown(train_hint(lab, runs), visible=not found, elem_classes="i2dl-hint")
    return checkpoint, hint
