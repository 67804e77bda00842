"""Segmentation tab: a photo -> the class of every pixel as an overlay (opacity on a slider, no recomputation), a
legend in the dataset's colours and each class's share of the image; MSRC-v2 and CamVid models."""

from __future__ import annotations

import html
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import yaml
from PIL import Image

from i2dl.app.common import (
    AppContext,
    RunSummary,
    TabParts,
    checkpoint_choices,
    read_photo,
    resolve_checkpoint,
    shows_errors,
)
from i2dl.hardware import resolve_precision

# the segmentation lab, used only here
from i2dl.segmentation.module import SegmentationModule
from i2dl.segmentation.viz import colourise, overlay
from i2dl.training import load_module

LAB = "segmentation"
MAX_SIDE = 640  # photos are segmented at most this large (CamVid is 480x360, MSRC-v2 about 320x213)
DATASET_NAMES = {"msrc_v2": "MSRC-v2", "camvid": "CamVid"}


def run_dataset(run_dir: Path) -> str | None:
    try:
        config = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError):
        return None
    if not isinstance(config, dict):
        return None
    for section in ("model", "data"):
        value = (config.get(section) or {}).get("dataset") if isinstance(config.get(section), dict) else None
        if value:
            return str(value)
    return None


def choices(ctx: AppContext) -> list[tuple[str, str]]:
    def extra(run: RunSummary) -> str:
        name = DATASET_NAMES.get(run_dataset(run.run_dir) or "")
        return f" ({name})" if name else ""

    return checkpoint_choices(ctx.runs, LAB, extra=extra)


def predict_mask(module: SegmentationModule, image: Image.Image) -> tuple[np.ndarray, np.ndarray]:
    """(the photo as the network saw it, RGB uint8 (H, W, 3) at most MAX_SIDE; class ids (H, W))."""
    scale = min(1.0, MAX_SIDE / max(image.size))
    if scale < 1:
        image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.BILINEAR)
    rgb = np.asarray(image.convert("RGB"))
    x = torch.from_numpy(rgb.copy()).permute(2, 0, 1).float().div(255).unsqueeze(0)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=native_bf16()):
        pred = module(x).float().argmax(1)[0].numpy()
    return rgb, pred


@lru_cache(maxsize=1)
def native_bf16() -> bool:
    """bf16 where the CPU computes it natively (AMX / AVX512-BF16), as the lab's `precision: auto` trains: the
    MobileNetV2 U-Net at 480x360 took 93-101 ms against 130-143 ms in float32 on the reference CPU (medians of 12,
    alternating in one process)."""
    return resolve_precision("auto", accelerator="cpu", gpu=None) == "bf16-mixed"


def class_shares(pred: np.ndarray, names) -> dict[str, float]:
    """Each predicted class's share of the image, largest first."""
    ids, counts = np.unique(pred, return_counts=True)
    order = np.argsort(-counts)
    return {names[int(ids[k])]: round(float(counts[k]) / pred.size, 4) for k in order if int(ids[k]) < len(names)}


def legend_html(shares: dict[str, float], names, palette, dataset: str) -> str:
    """One row per class present: a swatch and a bar in the dataset's colour, the name and the share."""
    rows = []
    for name, share in shares.items():
        r, g, b = palette[list(names).index(name)]
        colour = f"rgb({r},{g},{b})"
        rows.append(
            f'<div class="seg-row" data-class="{html.escape(name)}" style="display:flex;align-items:center;'
            f'gap:8px;margin:2px 0"><span style="display:inline-block;width:14px;height:14px;'
            f'background:{colour};border:1px solid #888"></span><span style="width:90px">{html.escape(name)}'
            f'</span><span style="display:inline-block;height:10px;width:{max(1.0, share * 160):.0f}px;'
            f'background:{colour}"></span><span>{share:.1%}</span></div>'
        )
    title = f"<div style='margin-bottom:4px'><b>{html.escape(dataset)}</b> classes in this photo</div>"
    return f"<div id='segmentation-legend-rows'>{title}{''.join(rows)}</div>"


def segment(ctx: AppContext, photo, choice: str | None, opacity: float):
    """(overlay RGB, legend HTML, {class: share}, state for the opacity slider, summary) for an uploaded photo."""
    path = resolve_checkpoint(ctx.runs, choice, LAB)
    if photo is None:
        return None, None, None, None, ""
    image = read_photo(photo)
    module = ctx.models.get(LAB, path, lambda p: load_module(SegmentationModule, p))
    rgb, pred = predict_mask(module, image)
    names, palette = module.class_names, module.info.palette
    colour = colourise(pred, palette)
    shares = class_shares(pred, names)
    dataset = DATASET_NAMES.get(module.info.name, module.info.name)
    top = ", ".join(f"{name} {share:.0%}" for name, share in list(shares.items())[:3])
    return (
        overlay(rgb, colour, float(opacity)),
        legend_html(shares, names, palette, dataset),
        shares,
        (rgb, colour),
        f"**{dataset}** model, {rgb.shape[1]}x{rgb.shape[0]}: {top}",
    )


def reblend(state, opacity: float):
    """A new opacity for the overlay already computed (no second pass through the network)."""
    if not state:
        return None
    rgb, colour = state
    return overlay(rgb, colour, float(opacity))


def build(ctx: AppContext):
    import gradio as gr

    from i2dl.app.components import PhotoInput, checkpoint_picker

    found = choices(ctx)
    checkpoint, hint = checkpoint_picker(found, LAB, ctx.runs, "model")
    state = gr.State()
    with gr.Row(equal_height=False):
        with gr.Column():
            photo = PhotoInput(
                label="a photo", sources=["upload", "webcam", "clipboard"], elem_id="segmentation-photo", height=400
            )
            opacity = gr.Slider(0, 1, value=0.5, step=0.05, label="overlay opacity", elem_id="segmentation-opacity")
        with gr.Column():
            message = gr.Markdown(elem_id="segmentation-message", elem_classes="i2dl-message")
            result = gr.Image(
                label="classes over the photo",
                interactive=False,
                height=400,
                format="jpeg",
                elem_id="segmentation-overlay",
                buttons=["download", "fullscreen"],
            )
            legend = gr.HTML(elem_id="segmentation-legend")
            with gr.Accordion("shares as JSON", open=False):
                shares = gr.JSON(elem_id="segmentation-shares")
    handler = shows_errors(5)(lambda p, c, a: segment(ctx, p, c, a))
    outputs = [result, legend, shares, state, message]
    photo.change(handler, [photo, checkpoint, opacity], outputs, api_name="segmentation", trigger_mode="always_last")
    checkpoint.change(handler, [photo, checkpoint, opacity], outputs, api_visibility="private")
    opacity.change(
        reblend, [state, opacity], result, api_visibility="private", show_progress="hidden", trigger_mode="always_last"
    )
    return TabParts(checkpoint, hint, choices)
