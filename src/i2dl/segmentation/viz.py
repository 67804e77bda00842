"""Segmentation figures: masks in the dataset's colours, image / truth / prediction rows, per-class IoU bars."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from i2dl.segmentation.datasets import IGNORE_INDEX  # noqa: E402
from i2dl.training import FigureCallback  # noqa: E402
from i2dl.viz import save_figure  # noqa: E402


def colourise(mask: torch.Tensor | np.ndarray, palette: Sequence[Sequence[int]]) -> np.ndarray:
    """Class ids (H, W) -> RGB uint8 (H, W, 3); void / ignored pixels are black."""
    mask = np.asarray(mask, dtype=np.int64)
    lut = np.zeros((256, 3), dtype=np.uint8)
    lut[: len(palette)] = np.asarray(palette, dtype=np.uint8)
    lut[IGNORE_INDEX] = 0
    return lut[np.clip(mask, 0, 255)]


def overlay(image: np.ndarray, colour_mask: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend an RGB uint8 image with its colour mask."""
    return (image.astype(np.float32) * (1 - alpha) + colour_mask.astype(np.float32) * alpha).round().astype(np.uint8)


def plot_segmentation_rows(
    images: torch.Tensor,
    targets: torch.Tensor,
    predictions: torch.Tensor,
    classes: Sequence[str],
    palette: Sequence[Sequence[int]],
    path: Path,
    title: str = "",
) -> Path:
    """One row per image: photo, ground truth, prediction (dataset colours, void black), legend of the classes
    that appear."""
    n = len(images)
    fig, axes = plt.subplots(n, 3, figsize=(9, 2.6 * n + 0.8), squeeze=False)
    shown = set()
    for row in range(n):
        image = (images[row].permute(1, 2, 0).clamp(0, 1).numpy() * 255).astype(np.uint8)
        target, pred = targets[row].numpy(), predictions[row].numpy()
        valid = target != IGNORE_INDEX
        accuracy = float((pred == target)[valid].mean()) if valid.any() else float("nan")
        for ax, picture, caption in zip(
            axes[row],
            (image, colourise(target, palette), colourise(pred, palette)),
            ("image", "ground truth (void black)", f"prediction ({accuracy:.0%} right)"),
        ):
            ax.imshow(picture)
            ax.set_title(caption, fontsize=8)
            ax.axis("off")
        shown.update(int(c) for c in np.unique(target) if c != IGNORE_INDEX)
        shown.update(int(c) for c in np.unique(pred))
    handles = [Patch(color=np.asarray(palette[c]) / 255, label=classes[c]) for c in sorted(shown) if c < len(classes)]
    handles.append(Patch(color="black", label="void"))
    fig.legend(
        handles=handles,
        loc="lower center",
        ncol=min(6, len(handles)),
        fontsize=8,
        frameon=False,
        bbox_to_anchor=(0.5, -0.02),
    )
    fig.suptitle(title)
    return save_figure(fig, path)


def plot_class_iou(
    iou: torch.Tensor, classes: Sequence[str], palette: Sequence[Sequence[int]], path: Path, title: str = ""
) -> Path:
    """Horizontal bars of the IoU of each class (NaN = class absent from truth and prediction: no bar)."""
    values = np.asarray(iou, dtype=np.float64)
    fig, ax = plt.subplots(figsize=(6, 0.3 * len(classes) + 1))
    y = np.arange(len(classes))
    colours = [np.asarray(palette[i]) / 255 for i in range(len(classes))]
    ax.barh(y, np.nan_to_num(values), color=colours, edgecolor="gray")
    for i, v in enumerate(values):
        ax.text((0 if np.isnan(v) else v) + 0.01, i, "absent" if np.isnan(v) else f"{v:.2f}", va="center", fontsize=7)
    ax.set_yticks(y, classes, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1.1)
    ax.set_xlabel("IoU")
    mean = np.nanmean(values) if not np.isnan(values).all() else float("nan")
    ax.set_title(title or f"per-class IoU (mean {mean:.3f})")
    ax.grid(axis="x", alpha=0.3)
    return save_figure(fig, path)


class SegmentationFigures(FigureCallback):
    """After a test: prints the per-class IoU and draws `per_class_iou.png`, `test_predictions.png` (image, truth,
    prediction rows in the dataset's colours) and `curves.png`; given the classes and colours it needs."""

    def __init__(
        self,
        run_dir: str | Path,
        dataset_name: str,
        class_names: Sequence[str],
        palette: Sequence[Sequence[int]],
        title: str,
        rows: int = 4,
    ) -> None:
        super().__init__(run_dir)
        self.dataset_name, self.class_names, self.palette = dataset_name, list(class_names), palette
        self.title, self.rows = title, rows
        self.examples: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def on_test_epoch_start(self, trainer, pl_module) -> None:
        self.examples = []

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        k = self.rows - len(self.examples)
        if k > 0:
            x, y, preds = outputs["images"][:k].cpu(), outputs["targets"][:k].cpu(), outputs["preds"][:k].cpu()
            self.examples.extend(zip(x.float(), y, preds))

    def draw(self, metrics: dict[str, float], pl_module) -> None:
        iou = torch.tensor([metrics.get(f"test/iou/{name}", float("nan")) for name in self.class_names])
        print(
            "per-class IoU: "
            + ", ".join(f"{n} {'-' if v != v else f'{v:.3f}'}" for n, v in zip(self.class_names, iou.tolist()))
        )
        plot_class_iou(
            iou,
            self.class_names,
            self.palette,
            self.folder / "per_class_iou.png",
            title=f"{self.dataset_name} test per-class IoU (mean {float(iou.nanmean()):.3f})",
        )
        if self.examples:
            images, targets, preds = (torch.stack(t) for t in zip(*self.examples))
            plot_segmentation_rows(
                images,
                targets,
                preds,
                self.class_names,
                self.palette,
                self.folder / "test_predictions.png",
                title=f"{self.dataset_name} test images",
            )
        self.curves(self.title)
