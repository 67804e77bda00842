"""What every tab shares: the runs folder and its checkpoints (newest first, never a file outside it), images read
safely from uploads, the command that trains a missing checkpoint, and the message a mistake turns into.

Nothing here imports Gradio, so the tabs' work can be tested as plain functions.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import logging
import os
import shutil
import tempfile
import threading
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Callable

from PIL import Image, ImageOps, UnidentifiedImageError

from i2dl.errors import I2DLError

log = logging.getLogger("i2dl.app")

MAX_PIXELS = 50_000_000  # larger images are refused before they are decoded (decompression bombs)
MAX_UPLOAD = "50mb"
LABS = ("digits", "autoencoder", "keypoints", "segmentation", "rl")
CHECKPOINT_SUFFIXES = {
    "digits": ".ckpt",
    "autoencoder": ".ckpt",
    "keypoints": ".ckpt",
    "segmentation": ".ckpt",
    "rl": ".pt",
}
SKIP_DIRS = {"tensorboard", "csv", "figures", "predictions", "__pycache__"}

# The one command that trains each tab's checkpoint, and how long it takes on the 2-core reference CPU (README.md).
TRAIN_HINTS: dict[str, list[tuple[str, str]]] = {
    "digits": [
        ("i2dl digits fit -c configs/digits/fc.yaml", "33 s, 97.7% test accuracy"),
        ("make demo", "about a minute: the lab's CNN for 2 epochs"),
    ],
    "autoencoder": [
        ("i2dl autoencoder pretrain fit -c configs/autoencoder/pretrain_conv.yaml", "about 9 min on one core"),
        ("i2dl autoencoder run --num_labels 100", "13 min: pretraining, fine-tuning and the baseline"),
    ],
    "keypoints": [("i2dl keypoints fit -c configs/keypoints/keypointnet.yaml", "19 min on one core, RMSE 1.33 px")],
    "segmentation": [
        (
            "i2dl segmentation fit -c configs/segmentation/unet_mobilenet_v2_msrc.yaml",
            "57 min (MSRC-v2, 86.9% accuracy)",
        ),
        ("i2dl segmentation fit -c configs/segmentation/unet_mobilenet_v2_camvid.yaml", "75 min (CamVid, 59.2% mIoU)"),
    ],
    "rl": [
        ("i2dl rl train -c configs/rl/ppo_cartpole.yaml", "about 1 min (CartPole, return 500)"),
        ("i2dl rl train -c configs/rl/ppo_pong.yaml", "2 h on both cores (Pong, +21 greedy)"),
    ],
}
LAB_NOUNS = {
    "digits": "a digits",
    "autoencoder": "an autoencoder",
    "keypoints": "a keypoints",
    "segmentation": "a segmentation",
    "rl": "an RL",
}
TAB_NAMES = {
    "digits": "Digits",
    "autoencoder": "Autoencoder",
    "keypoints": "Keypoints",
    "segmentation": "Segmentation",
    "rl": "RL",
}


class AppError(I2DLError):
    """A mistake in what the user gave the page (a file, a choice); shown as a message, the server goes on."""


def warn(text: str) -> str:
    """An error message as the page shows it (Markdown)."""
    return f"⚠️ {text}"


def train_hint(lab: str, root: Path) -> str:
    """Markdown: no checkpoint of `lab` in `root`, and the command that trains one."""
    lines = [f"No {TAB_NAMES[lab]} checkpoint in `{root}` yet. Train one, then reload this page:"]
    lines += [f"- `{command}` ({time})" for command, time in TRAIN_HINTS[lab]]
    return "\n".join(lines)


# --- run folders and their checkpoints ------------------------------------------------------------------------------
@dataclass
class RunSummary:
    """One run folder: what its results.json says (the i2dl.results/1 schema, or an older flat one)."""

    run_dir: Path
    rel: str
    lab: str
    config: str
    status: str
    metric: str | None
    value: float | None
    wall_time: float | None
    steps: int | None
    updated: str
    results: dict[str, Any] = field(default_factory=dict)
    checkpoint: Path | None = None
    checkpoint_rel: str | None = None


# the figure a flat (pre-schema) results.json most likely headlines, by lab
OLD_HEADLINES = (
    "test/acc",
    "test/miou",
    "test/score",
    "test/rmse_px",
    "eval/mean_return",
    "mean_return",
    "test_acc",
    "val/acc",
)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _mtime_iso(path: Path) -> str:
    try:
        stamp = path.stat().st_mtime
    except OSError:
        return ""
    return dt.datetime.fromtimestamp(stamp, dt.timezone.utc).isoformat(timespec="seconds")


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number == number else None


def _rel(run_dir: Path, root: Path) -> str:
    parts = run_dir.relative_to(root).parts
    return str(Path(*parts)) if parts else "."


def _guess_lab(run_dir: Path, root: Path) -> str:
    parts = run_dir.relative_to(root).parts
    return next((p for p in parts if p in LABS), parts[0] if parts else "?")


def _from_listing(info, root: Path) -> RunSummary:
    """A run as `i2dl runs` lists it (i2dl.runs.RunInfo); a results.json of an older, flat layout ({"test/acc": ...}
    or {"metrics": {...}}) is read for what it holds."""
    from i2dl.runs import read_results

    results = read_results(info.run_dir)
    summary = RunSummary(
        info.run_dir,
        _rel(info.run_dir, root),
        info.lab,
        info.config,
        info.status,
        info.headline_metric,
        _number(info.headline_value),
        _number(info.wall_time),
        info.steps if isinstance(info.steps, int) else None,
        info.updated or _mtime_iso(info.run_dir / "results.json"),
        results or {},
    )
    if results is None:
        old = _read_json(info.run_dir / "results.json")
        if old is not None:
            metrics = old.get("metrics") if isinstance(old.get("metrics"), dict) else old
            metric = next((m for m in OLD_HEADLINES if _number(metrics.get(m)) is not None), None)
            summary.lab, summary.status, summary.results = _guess_lab(info.run_dir, root), "old results.json", old
            summary.metric, summary.value = metric, _number(metrics.get(metric)) if metric else None
            summary.wall_time = _number(old.get("wall_time"))
    return summary


def _holds_checkpoints(run_dir: Path) -> bool:
    folder = run_dir / "checkpoints"
    return folder.is_dir() and not folder.is_symlink() and any(p.suffix in {".ckpt", ".pt"} for p in folder.iterdir())


def find_runs(root: Path, max_depth: int = 6) -> list[RunSummary]:
    """Every run folder under `root`, newest first: what `i2dl runs` lists (i2dl.runs.list_runs: a results.json or a
    lock), and folders that hold only checkpoints/. Symbolic links are not followed: the app reads nothing outside
    the folder it was given."""
    from i2dl.runs import list_runs

    root = Path(root)
    if not root.is_dir():
        return []
    found = {
        summary.rel: summary for summary in (_from_listing(info, root) for info in list_runs(root, max_depth=max_depth))
    }
    for dirpath, dirnames, _ in os.walk(root):
        path = Path(dirpath)
        depth = len(path.relative_to(root).parts)
        dirnames[:] = sorted(
            d
            for d in dirnames
            if not d.startswith(".")
            and d not in SKIP_DIRS | {"checkpoints"}
            and depth < max_depth
            and not (path / d).is_symlink()
        )
        rel = _rel(path, root)
        try:
            if rel not in found and _holds_checkpoints(path):
                found[rel] = RunSummary(
                    path,
                    rel,
                    _guess_lab(path, root),
                    path.name,
                    "no results.json",
                    None,
                    None,
                    None,
                    None,
                    _mtime_iso(path / "checkpoints"),
                )
        except OSError:
            continue
    for summary in found.values():
        summary.checkpoint = best_checkpoint(summary.run_dir, CHECKPOINT_SUFFIXES.get(summary.lab))
        if summary.checkpoint is not None:
            summary.checkpoint_rel = str(summary.checkpoint.relative_to(root))
    return sorted(found.values(), key=lambda r: (r.updated, r.rel), reverse=True)


def best_checkpoint(run_dir: Path, suffix: str | None) -> Path | None:
    """checkpoints/best.<suffix>, else last.<suffix> (a regular file, not a link); None when there is neither."""
    suffixes = [suffix] if suffix else [".ckpt", ".pt"]
    for name in ("best", "last"):
        for ext in suffixes:
            path = run_dir / "checkpoints" / f"{name}{ext}"
            if path.is_file() and not path.is_symlink():
                return path
    return None


def checkpoint_label(run: RunSummary, extra: str = "") -> str:
    value = "" if run.value is None else f" {run.value:.4g}"
    headline = f" · {run.metric}{value}" if run.metric else ""
    when = run.updated[:16].replace("T", " ")
    return f"{run.config}{extra}{headline} · {when} · {Path(run.rel)}"


def checkpoint_choices(
    root: Path,
    lab: str,
    keep: Callable[[RunSummary], bool] = lambda run: True,
    extra: Callable[[RunSummary], str] = lambda run: "",
) -> list[tuple[str, str]]:
    """(label, checkpoint path relative to `root`) of every run of `lab` with a checkpoint, newest first."""
    return [
        (checkpoint_label(run, extra(run)), run.checkpoint_rel)
        for run in find_runs(root)
        if run.lab == lab and run.checkpoint_rel and keep(run)
    ]


def resolve_checkpoint(root: Path, choice: str | None, lab: str) -> Path:
    """The checkpoint file `choice` names, relative to `root`. Anything outside `root` (absolute paths, `..`,
    symbolic links that lead out), any other kind of file, or a checkpoint that its run folder says belongs to
    another lab is refused with a message: a checkpoint is only ever read from the runs folder the app was given."""
    if not choice:
        raise AppError(
            train_hint(lab, root) if not checkpoint_choices(root, lab) else "Pick a checkpoint in the list first."
        )
    root_resolved = Path(root).resolve()
    path = (root_resolved / str(choice)).resolve()
    if not path.is_relative_to(root_resolved):
        raise AppError(f"`{choice}` is outside the runs folder `{root}`; the app only reads checkpoints from there")
    if not path.is_file() or path.suffix not in {".ckpt", ".pt"}:
        raise AppError(f"`{choice}` is not a checkpoint file (.ckpt or .pt) in the runs folder `{root}`")
    run_dir = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    if run_dir.is_relative_to(root_resolved) and run_dir != root_resolved:
        found = run_lab(run_dir, root_resolved)
        if found in LABS and found != lab:
            raise AppError(wrong_lab(choice, LAB_NOUNS[found], lab))
    if path.suffix != CHECKPOINT_SUFFIXES[lab]:
        raise AppError(wrong_lab(choice, "an RL" if path.suffix == ".pt" else "a Lightning (supervised lab)", lab))
    return path


def run_lab(run_dir: Path, root: Path) -> str:
    """The lab a run folder belongs to: its results.json says, else the folder names (runs/<lab>/...)."""
    from i2dl.runs import read_results

    return str((read_results(run_dir) or {}).get("lab") or _guess_lab(run_dir, root))


def wrong_lab(choice: str, found: str, lab: str) -> str:
    command = TRAIN_HINTS[lab][0][0]
    return (
        f"`{choice}` is {found} checkpoint; the {TAB_NAMES[lab]} tab needs one written by "
        f"`{command.split(' -c ')[0]}` (e.g. `{command}`)"
    )


# --- images from the page -------------------------------------------------------------------------------------------
def read_photo(source: str | Path | IO[bytes] | None, what: str = "photo") -> Image.Image:
    """An uploaded file as an RGB image (EXIF rotation applied, transparency on white). Not an image, damaged or
    truncated, or more than `MAX_PIXELS` pixels (checked from the header, before anything is decoded): AppError."""
    if source is None:
        raise AppError(f"No {what} yet: upload one (or take one with the webcam).")
    name = Path(source).name if isinstance(source, (str, Path)) else f"the pasted {what}"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(source)
    except FileNotFoundError:
        raise AppError(f"{name}: the upload is gone; upload it again") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise AppError(
            f"{name} is too large to open safely ({err}); the app takes images up to {MAX_PIXELS / 1e6:.0f} megapixels"
        ) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise AppError(f"{name} is not an image file the app can read (PNG, JPEG, WebP, BMP, GIF, TIFF)") from None
    with image:
        width, height = image.size
        if width * height > MAX_PIXELS:
            raise AppError(
                f"{name} is {width}x{height} pixels ({width * height / 1e6:.0f} megapixels); the app takes "
                f"images up to {MAX_PIXELS / 1e6:.0f} megapixels (larger ones are refused before decoding, "
                f"as decompression bombs would be): scale it down first"
            )
        try:
            image.load()
            image = ImageOps.exif_transpose(image)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
            raise AppError(f"{name} is damaged or truncated and cannot be decoded ({err})") from None
        return flatten(image)


def flatten(image: Image.Image) -> Image.Image:
    """RGB, with any transparency composed onto white (a drawing on a transparent canvas stays visible)."""
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


# --- errors as messages, models kept loaded ------------------------------------------------------------------------
def shows_errors(outputs: int) -> Callable:
    """Wrap a tab's handler whose last output is its message: a user's mistake (I2DLError) becomes that message,
    with the other outputs cleared; an unexpected error is logged with its traceback and reported the same way.
    Either way the server goes on serving."""

    def wrap(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def inner(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except I2DLError as err:
                text = warn(str(err))
            except Exception as err:  # a bug: keep the traceback in the log, keep the server up
                log.exception("%s failed", fn.__name__)
                first_line = str(err).splitlines()[0] if str(err) else ""
                text = warn(
                    f"Something went wrong ({type(err).__name__}: {first_line}); the details are in the server's log."
                )
            return (*([None] * (outputs - 1)), text) if outputs > 1 else text

        return inner

    return wrap


class ModelCache:
    """The last few loaded models by (kind, file, modification time): switching tabs or checkpoints back and forth
    does not reload them, and a checkpoint rewritten by a running training is read afresh."""

    def __init__(self, size: int = 6) -> None:
        self.size, self._items, self._lock = size, OrderedDict(), threading.Lock()

    def get(self, kind: str, path: Path, load: Callable[[Path], Any]) -> Any:
        key = (kind, str(path), path.stat().st_mtime_ns)
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        value = load(path)
        with self._lock:
            self._items[key] = value
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return value


@dataclass
class TabParts:
    """What a tab's `build` hands the page: its checkpoint drop-down, the hint shown while there is no checkpoint,
    the function listing its checkpoints (run again on every page load), and (fn, inputs, outputs) to run then."""

    checkpoint: Any
    hint: Any
    choices: Callable[["AppContext"], list[tuple[str, str]]]
    on_load: list[tuple[Callable, list, list]] = field(default_factory=list)


@dataclass
class AppContext:
    """What the tabs are given: the runs folder, where datasets are, a private folder for files the page shows
    (JSON downloads, videos), and the model cache."""

    runs: Path
    data_dir: Path | None = None
    work_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="i2dl-app-out-")))
    models: ModelCache = field(default_factory=ModelCache)

    def output_path(self, name: str) -> Path:
        """A fresh file in the private output folder (one subfolder per call, so names never collide)."""
        folder = Path(tempfile.mkdtemp(dir=self.work_dir))
        return folder / name

    def publish(self, path: Path) -> str:
        """A copy of a file from the runs folder (a figure) in the private output folder, for the page to show: the
        server hands out its own files only, never a path of the runs folder as such."""
        root = Path(self.runs).resolve()
        source = Path(path)
        if source.is_symlink() or not source.resolve().is_relative_to(root) or not source.is_file():
            raise AppError(f"{path} is not a file of the runs folder {self.runs}")
        copy = self.output_path(source.name)
        shutil.copyfile(source, copy)
        return str(copy)
