"""Figures of the keypoints lab: faces with true (green) and predicted (red) keypoints; per-keypoint errors."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from i2dl.keypoints.data import to_pixels
from i2dl.keypoints.kaggle_csv import KEYPOINT_NAMES, NUM_KEYPOINTS
from i2dl.training import FigureCallback
from i2dl.viz import grid_axes, plt, save_figure

TRUE_COLOUR, PRED_COLOUR = "#2ca02c", "#d62728"


def plot_keypoint_grid(
    images: torch.Tensor,
    pred: torch.Tensor,
    targets: torch.Tensor | None,
    path: Path,
    errors_px: Sequence[float] | None = None,
    ncols: int = 6,
    title: str = "",
) -> Path:
    """Faces (N, 1, 96, 96) in [0, 1]; `pred` (N, 30) normalised; `targets` (N, 15, 3) or None (no truth)."""
    fig, axes = grid_axes(len(images), ncols, (2.0, 2.15))
    pred_px = to_pixels(pred.detach().float().view(-1, NUM_KEYPOINTS, 2))
    for k, ax in enumerate(axes):
        ax.imshow(images[k].squeeze(0), cmap="gray", vmin=0, vmax=1)
        if targets is not None:
            seen = targets[k, :, 2] > 0.5
            true_px = to_pixels(targets[k, :, :2])[seen]
            ax.scatter(true_px[:, 0], true_px[:, 1], s=9, c=TRUE_COLOUR, marker="o", label="true")
        ax.scatter(pred_px[k, :, 0], pred_px[k, :, 1], s=11, c=PRED_COLOUR, marker="x", linewidths=1, label="predicted")
        if errors_px is not None:
            ax.set_title(f"RMSE {float(errors_px[k]):.2f} px", fontsize=8)
    fig.suptitle(title)
    return save_figure(fig, path)


def plot_keypoint_errors(rmse_px: Sequence[float], path: Path, title: str = "") -> Path:
    """A bar per keypoint: its RMSE in pixels."""
    values = [float(v) for v in rmse_px]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.barh(range(len(values)), values, color="#1f77b4")
    ax.set_yticks(range(len(values)), KEYPOINT_NAMES, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("RMSE (pixels of the 96x96 face)")
    ax.grid(axis="x", alpha=0.3)
    ax.set_title(title)
    return save_figure(fig, path)


class KeypointFigures(FigureCallback):
    """After a test: `test_predictions.png` (the first faces, true and predicted keypoints), `worst_predictions.png`,
    `keypoint_errors.png` (RMSE per keypoint) and `curves.png`, from what the module's `test_step` returns."""

    def __init__(self, run_dir: str | Path, title: str, grid_faces: int = 24, worst_faces: int = 12) -> None:
        super().__init__(run_dir)
        self.title, self.grid_faces, self.worst_faces = title, grid_faces, worst_faces
        self.outputs: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def on_test_epoch_start(self, trainer, pl_module) -> None:
        self.outputs = []

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self.outputs.append((outputs["images"].cpu(), outputs["pred"].cpu(), outputs["targets"].cpu()))

    def draw(self, metrics: dict[str, float], pl_module) -> None:
        from i2dl.keypoints.module import image_errors_px

        if not self.outputs:
            return
        x, pred, targets = (torch.cat(parts) for parts in zip(*self.outputs))
        self.outputs = []
        errors = image_errors_px(pred, targets)
        score, rmse = metrics.get("test/score", float("nan")), metrics.get("test/rmse_px", float("nan"))
        title = f"test: score {score:.0f}, RMSE {rmse:.2f} px"
        n = self.grid_faces
        plot_keypoint_grid(
            x[:n],
            pred[:n],
            targets[:n],
            self.folder / "test_predictions.png",
            errors[:n],
            title=f"{title} (green: true, red: predicted)",
        )
        worst = errors.argsort(descending=True)[: self.worst_faces]
        plot_keypoint_grid(
            x[worst],
            pred[worst],
            targets[worst],
            self.folder / "worst_predictions.png",
            errors[worst],
            title="the worst test predictions (green: true, red: predicted)",
        )
        per_keypoint = torch.tensor([metrics.get(f"test/rmse_px/{name}", float("nan")) for name in KEYPOINT_NAMES])
        plot_keypoint_errors(per_keypoint, self.folder / "keypoint_errors.png", title=title)
        self.curves(self.title)
