"""Autoencoder tab: draw a digit or pick a test digit and see its reconstruction; walk through latent space between
two test digits with a slider; the accuracy-against-labels chart of the latest `i2dl autoencoder sweep`."""

from __future__ import annotations

import os
from functools import lru_cache
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
    flatten,
    resolve_checkpoint,
    shows_errors,
)

# the autoencoder lab, used only here
from i2dl.autoencoder.module import AutoencoderModule
from i2dl.data.idx import load_split
from i2dl.digits.predict import to_mnist_format
from i2dl.errors import I2DLError
from i2dl.training import load_module

LAB = "autoencoder"
STEPS = 9  # images in the interpolation strip
SWEEP_CHART = "accuracy_vs_labels.png"


def run_config(run_dir: Path) -> dict:
    try:
        config = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError):
        return {}
    return config if isinstance(config, dict) else {}


def is_pretraining(run: RunSummary) -> bool:
    """An autoencoder (stage 1) run, not one of the fine-tuned classifiers the same lab writes."""
    stage = (run_config(run.run_dir).get("data") or {}).get("stage")
    return stage == "pretrain" if stage else "pretrain" in f"{run.config}/{run.rel}"


def run_dataset(run_dir: Path) -> str:
    return str((run_config(run_dir).get("data") or {}).get("dataset") or "mnist")


def choices(ctx: AppContext) -> list[tuple[str, str]]:
    return checkpoint_choices(
        ctx.runs,
        LAB,
        keep=is_pretraining,
        extra=lambda run: " (Fashion-MNIST)" if run_dataset(run.run_dir) == "fashion-mnist" else "",
    )


def load_autoencoder(ctx: AppContext, choice: str | None) -> tuple[AutoencoderModule, str]:
    path = resolve_checkpoint(ctx.runs, choice, LAB)
    try:
        module = ctx.models.get(LAB, path, lambda p: load_module(AutoencoderModule, p))
    except I2DLError as err:
        raise AppError(f"`{choice}` is not an autoencoder checkpoint (a fine-tuned classifier?): {err}") from None
    return module, run_dataset(path.parent.parent)


@lru_cache(maxsize=2)
def _test_images(dataset: str, data_dir: str | None) -> torch.Tensor:
    images, _ = load_split(dataset, "test", data_dir, download_missing=False)
    return images


def test_digit(ctx: AppContext, dataset: str, index) -> torch.Tensor:
    """Test image `index` of the run's dataset as (1, 28, 28) float in [0, 1] (never downloaded: read locally)."""
    try:
        images = _test_images(dataset, str(ctx.data_dir) if ctx.data_dir else os.environ.get("I2DL_DATA"))
    except I2DLError as err:
        raise AppError(f"the {dataset} test images are not on this machine ({err}); drawing still works") from None
    try:
        index = int(index)
    except (TypeError, ValueError):
        raise AppError(f"test digit {index!r}: give a whole number") from None
    if not 0 <= index < len(images):
        raise AppError(f"test digit {index}: choose 0 to {len(images) - 1}")
    return images[index].float().div(255).unsqueeze(0)


def as_image(x: torch.Tensor) -> np.ndarray:
    """(1, 28, 28) or (28, 28) in [0, 1] -> uint8 grey."""
    return (x.squeeze().clamp(0, 1).numpy() * 255).round().astype(np.uint8)


def reconstruct(ctx: AppContext, x: torch.Tensor, choice: str | None) -> tuple[np.ndarray, np.ndarray, str]:
    module, _ = load_autoencoder(ctx, choice)
    with torch.no_grad():
        out = module(x.unsqueeze(0))[0]
    error = float(((out - x) ** 2).mean())
    return as_image(x), as_image(out), f"reconstruction error (MSE) {error:.4f}"


def from_sketch(ctx: AppContext, sketch, choice: str | None):
    from i2dl.app.components import SketchError

    if isinstance(sketch, SketchError):
        raise AppError(sketch.message)
    composite = sketch.get("composite") if isinstance(sketch, dict) else None
    gray = None
    if composite is not None:
        gray = (
            np.asarray(flatten(Image.fromarray(np.asarray(composite, dtype=np.uint8))).convert("L"), dtype=np.float32)
            / 255.0
        )
    if gray is None or float(gray.max() - gray.min()) < 0.1:
        return None, None, "Draw a digit, or pick a test digit."
    return reconstruct(ctx, to_mnist_format(gray), choice)


def from_test_digit(ctx: AppContext, index, choice: str | None):
    module, dataset = load_autoencoder(ctx, choice)
    return reconstruct(ctx, test_digit(ctx, dataset, index), choice)


def interpolate(ctx: AppContext, index_a, index_b, t, choice: str | None) -> tuple[np.ndarray, np.ndarray, str]:
    """(the decoding of (1 - t) z_a + t z_b, a strip of STEPS decodings from a to b, summary)."""
    module, dataset = load_autoencoder(ctx, choice)
    a, b = test_digit(ctx, dataset, index_a), test_digit(ctx, dataset, index_b)
    t = float(t)
    if not 0 <= t <= 1:
        raise AppError(f"t={t}: choose 0 to 1")
    with torch.no_grad():
        z = module.model.encoder(torch.stack([a, b]))
        weights = torch.linspace(0, 1, STEPS)
        path = torch.cat([((1 - w) * z[0] + w * z[1])[None] for w in [*weights.tolist(), t]])
        images = module.model.decoder(path)
    strip = np.concatenate(
        [np.pad(as_image(img), ((0, 0), (0, 2)), constant_values=128) for img in images[:STEPS]], axis=1
    )[:, :-2]
    return as_image(images[-1]), strip, f"t = {t:.2f}: {1 - t:.0%} of #{int(index_a)}, {t:.0%} of #{int(index_b)}"


def latest_sweep_chart(root: Path) -> Path | None:
    """The newest accuracy_vs_labels.png under `root` (symbolic links not followed), if any."""
    newest, newest_time = None, -1.0
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".") and d not in {"checkpoints", "tensorboard", "csv"}]
        if SWEEP_CHART in filenames:
            path = Path(dirpath) / SWEEP_CHART
            if path.is_file() and not path.is_symlink() and path.stat().st_mtime > newest_time:
                newest, newest_time = path, path.stat().st_mtime
    return newest


def sweep_chart(ctx: AppContext) -> tuple[str | None, str]:
    chart = latest_sweep_chart(ctx.runs)
    if chart is None:
        return None, (
            "No sweep yet: `i2dl autoencoder sweep --num_labels 10 100 1000 all` draws test accuracy "
            "against the number of labels, pretrained and from scratch."
        )
    return ctx.publish(chart), f"latest sweep: `{chart.relative_to(ctx.runs)}`"


def build(ctx: AppContext):
    import gradio as gr

    from i2dl.app.components import checkpoint_picker, sketchpad

    found = choices(ctx)
    checkpoint, hint = checkpoint_picker(found, LAB, ctx.runs, "autoencoder")
    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            with gr.Tabs():
                with gr.Tab("Draw"):
                    sketch = sketchpad("autoencoder-sketchpad")
                with gr.Tab("Test digit"):
                    index = gr.Number(
                        value=0, precision=0, minimum=0, label="test digit #", elem_id="autoencoder-index"
                    )
        with gr.Column(scale=2):
            message = gr.Markdown(elem_id="autoencoder-message", elem_classes="i2dl-message")
            with gr.Row():
                seen = gr.Image(
                    label="input (28x28)",
                    image_mode="L",
                    interactive=False,
                    height=168,
                    elem_id="autoencoder-input",
                    elem_classes="i2dl-pixels",
                    buttons=[],
                )
                output = gr.Image(
                    label="reconstruction",
                    image_mode="L",
                    interactive=False,
                    height=168,
                    elem_id="autoencoder-output",
                    elem_classes="i2dl-pixels",
                    buttons=[],
                )
    gr.Markdown("### Between two test digits")
    with gr.Row(equal_height=False):
        with gr.Column(scale=1):
            index_a = gr.Number(value=3, precision=0, minimum=0, label="from test digit #", elem_id="autoencoder-a")
            index_b = gr.Number(value=2, precision=0, minimum=0, label="to test digit #", elem_id="autoencoder-b")
            t = gr.Slider(0, 1, value=0.5, step=0.05, label="t (0 = first, 1 = second)", elem_id="autoencoder-t")
            between_message = gr.Markdown(elem_classes="i2dl-message", elem_id="autoencoder-between-message")
        with gr.Column(scale=1):
            between = gr.Image(
                label="decoded at t",
                image_mode="L",
                interactive=False,
                height=168,
                elem_id="autoencoder-between",
                elem_classes="i2dl-pixels",
                buttons=[],
            )
        with gr.Column(scale=2):
            strip = gr.Image(
                label="the way from one to the other",
                image_mode="L",
                interactive=False,
                height=120,
                elem_id="autoencoder-strip",
                elem_classes="i2dl-pixels",
                buttons=[],
            )
    gr.Markdown("### Pretraining against labels")
    chart_message = gr.Markdown(elem_classes="i2dl-message")
    chart = gr.Image(
        label="test accuracy against number of labels (latest sweep)",
        interactive=False,
        elem_id="autoencoder-sweep",
        height=360,
        buttons=["download", "fullscreen"],
    )
    outputs = [seen, output, message]
    sketch.change(
        shows_errors(3)(lambda s, c: from_sketch(ctx, s, c)),
        [sketch, checkpoint],
        outputs,
        api_name="autoencoder_sketch",
        trigger_mode="always_last",
        show_progress="hidden",
    )
    index.change(
        shows_errors(3)(lambda i, c: from_test_digit(ctx, i, c)),
        [index, checkpoint],
        outputs,
        api_name="autoencoder",
        trigger_mode="always_last",
    )
    walk = shows_errors(3)(lambda a, b, w, c: interpolate(ctx, a, b, w, c))
    for trigger in (index_a.change, index_b.change, t.change):
        trigger(
            walk,
            [index_a, index_b, t, checkpoint],
            [between, strip, between_message],
            api_visibility="private",
            trigger_mode="always_last",
            show_progress="hidden",
        )
    gr.on(
        [checkpoint.change],
        walk,
        [index_a, index_b, t, checkpoint],
        [between, strip, between_message],
        api_name="autoencoder_interpolate",
        show_progress="hidden",
    )
    gr.on(
        [checkpoint.change],
        shows_errors(3)(lambda i, c: from_test_digit(ctx, i, c)),
        [index, checkpoint],
        outputs,
        api_visibility="private",
        show_progress="hidden",
    )
    return TabParts(
        checkpoint,
        hint,
        choices,
        on_load=[
            (shows_errors(2)(lambda: sweep_chart(ctx)), [], [chart, chart_message]),
            (shows_errors(3)(lambda i, c: from_test_digit(ctx, i, c)), [index, checkpoint], outputs),
            (walk, [index_a, index_b, t, checkpoint], [between, strip, between_message]),
        ],
    )
