"""Digits tab: draw a digit (or upload a photo or scan) and watch the ten probabilities move with every stroke,
next to the 28x28 image the network actually saw."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import yaml
from PIL import Image

from i2dl.app.common import (
    AppContext,
    AppError,
    RunSummary,
    TabParts,
    checkpoint_choices,
    read_photo,
    resolve_checkpoint,
    shows_errors,
)

# the digits lab, used only here
from i2dl.data.idx import DATASETS
from i2dl.digits.module import DigitClassifier
from i2dl.digits.predict import to_mnist_format
from i2dl.training import load_module

LAB = "digits"


def run_dataset(run_dir: Path) -> str:
    """The dataset a digits run was trained on ("mnist" or "fashion-mnist"), from its config.yaml."""
    try:
        config = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
        return str((config.get("data") or {}).get("dataset") or "mnist")
    except (OSError, yaml.YAMLError, AttributeError):
        return "mnist"


def choices(ctx: AppContext) -> list[tuple[str, str]]:
    def extra(run: RunSummary) -> str:
        return " (Fashion-MNIST)" if run_dataset(run.run_dir) == "fashion-mnist" else ""

    return checkpoint_choices(ctx.runs, LAB, extra=extra)


def load_classifier(ctx: AppContext, choice: str | None) -> tuple[DigitClassifier, tuple[str, ...]]:
    path = resolve_checkpoint(ctx.runs, choice, LAB)
    module = ctx.models.get(LAB, path, lambda p: load_module(DigitClassifier, p))
    dataset = DATASETS.get(run_dataset(path.parent.parent), DATASETS["mnist"])
    names = (
        dataset.classes
        if len(dataset.classes) == module.hparams.num_classes
        else tuple(str(i) for i in range(module.hparams.num_classes))
    )
    return module, names


def classify(ctx: AppContext, gray: np.ndarray, choice: str | None) -> tuple[dict[str, float], np.ndarray, str]:
    """Grey image (H, W) in [0, 1], any size and polarity -> ({class: probability}, the 28x28 uint8 input the
    network saw, a one-line summary)."""
    module, names = load_classifier(ctx, choice)
    x = to_mnist_format(gray)
    with torch.no_grad():
        probs = module(x.unsqueeze(0)).float().softmax(-1)[0]
    best = int(probs.argmax())
    seen = (x[0].numpy() * 255).round().astype(np.uint8)
    return ({name: float(p) for name, p in zip(names, probs.tolist())}, seen, f"**{names[best]}** ({probs[best]:.0%})")


def _gray(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("L"), dtype=np.float32) / 255.0


def is_blank(gray: np.ndarray) -> bool:
    return float(gray.max() - gray.min()) < 0.1


def from_sketch(ctx: AppContext, sketch, choice: str | None):
    """The sketchpad's value (Gradio's dict of background, layers and composite) -> classify's outputs."""
    from i2dl.app.components import SketchError

    if isinstance(sketch, SketchError):
        raise AppError(sketch.message)
    composite = sketch.get("composite") if isinstance(sketch, dict) else None
    if composite is None:
        return None, None, "Draw a digit on the sketchpad (white paper, black ink)."
    image = Image.fromarray(np.asarray(composite, dtype=np.uint8))
    from i2dl.app.common import flatten

    gray = _gray(flatten(image))
    if is_blank(gray):
        return None, None, "Draw a digit on the sketchpad (white paper, black ink)."
    return classify(ctx, gray, choice)


def from_upload(ctx: AppContext, photo, choice: str | None):
    """An uploaded photo or scan of a hand-written digit (path from `PhotoInput`) -> classify's outputs."""
    gray = _gray(read_photo(photo, "digit photo"))
    if is_blank(gray):
        raise AppError("the photo is one flat colour: no digit to read")
    return classify(ctx, gray, choice)


def build(ctx: AppContext):
    """The tab's layout and events."""
    import gradio as gr

    from i2dl.app.components import PhotoInput, checkpoint_picker, sketchpad

    found = choices(ctx)
    checkpoint, hint = checkpoint_picker(found, LAB, ctx.runs, "checkpoint")
    with gr.Row(equal_height=False):
        with gr.Column(scale=5, min_width=320):
            with gr.Tabs():
                with gr.Tab("Draw"):
                    sketch = sketchpad("digits-sketchpad")
                with gr.Tab("Upload"):
                    photo = PhotoInput(
                        label="photo or scan of a digit",
                        sources=["upload", "webcam", "clipboard"],
                        elem_id="digits-photo",
                        height=320,
                    )
        with gr.Column(scale=3, min_width=220):
            message = gr.Markdown(elem_id="digits-message", elem_classes="i2dl-message")
            probabilities = gr.Label(num_top_classes=10, label="probabilities", elem_id="digits-probabilities")
        with gr.Column(scale=3, min_width=200):
            seen = gr.Image(
                label="what the network saw (28x28)",
                image_mode="L",
                interactive=False,
                height=250,
                elem_id="digits-seen",
                elem_classes="i2dl-pixels",
                buttons=["download"],
            )
            gr.Markdown(
                "MNIST's recipe, as for every image here: white ink on black, the ink's box scaled to "
                "20x20 and centred by its mass in 28x28.",
                elem_classes="i2dl-note",
            )
    outputs = [probabilities, seen, message]
    sketch.change(
        shows_errors(3)(lambda s, c: from_sketch(ctx, s, c)),
        [sketch, checkpoint],
        outputs,
        api_name="digits_sketch",
        trigger_mode="always_last",
        show_progress="hidden",
    )
    photo.change(
        shows_errors(3)(lambda p, c: from_upload(ctx, p, c)),
        [photo, checkpoint],
        outputs,
        api_name="digits",
        trigger_mode="always_last",
    )
    checkpoint.change(
        shows_errors(3)(lambda s, c: from_sketch(ctx, s, c)),
        [sketch, checkpoint],
        outputs,
        api_visibility="private",
        show_progress="hidden",
    )
    return TabParts(checkpoint, hint, choices)
