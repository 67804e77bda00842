"""Figures shared by the labs: learning curves from the CSV logs, confusion matrices, labelled image grids."""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from i2dl.files import write_with  # noqa: E402


def save_figure(fig, path: Path, dpi: int = 110) -> Path:
    """Write a figure (format from the suffix, PNG by default) whole or not at all, and close it."""
    path = Path(path)
    try:
        write_with(
            path, lambda tmp: fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format=path.suffix.lstrip(".") or "png")
        )
    finally:
        plt.close(fig)
    return path


def grid_axes(n: int, ncols: int, cell_size: tuple[float, float]):
    """A figure of `n` panels without ticks, `ncols` a row, each `cell_size` (width, height) inches; the unused
    places of the last row stay blank. Returns the figure and the `n` panels' axes."""
    nrows = max(1, math.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(cell_size[0] * ncols, cell_size[1] * nrows), squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        if k >= n:
            ax.axis("off")
    return fig, list(axes.flat[:n])


def read_metric_logs(files: Sequence[Path]) -> dict[str, list[tuple[int, float]]]:
    """`{metric: [(step, value), ...]}` from Lightning CSV logs, later files winning on the same step."""
    series: dict[str, dict[int, float]] = defaultdict(dict)
    for file in files:
        with open(file, newline="") as fh:
            for row in csv.DictReader(fh):
                step = int(float(row.get("step") or 0))
                for key, value in row.items():
                    if key in {"step", "epoch"} or value in (None, ""):
                        continue
                    series[key][step] = float(value)
    return {k: sorted(v.items()) for k, v in series.items()}


def plot_curves(files: Sequence[Path], path: Path, title: str = "") -> Path | None:
    """One panel per quantity (loss, acc, ...), train and val on the same axes, x = optimiser steps."""
    series = read_metric_logs(files)
    groups: dict[str, dict[str, list]] = defaultdict(dict)
    for key, points in series.items():
        if "/" not in key or not points:
            continue
        stage, name = key.split("/", 1)
        name = name.removesuffix("_epoch").removesuffix("_step")
        if key.endswith("_epoch") and f"{stage}/{name}_step" in series:
            continue  # the per-step curve is drawn instead
        if stage in {"train", "val"}:
            groups[name][stage] = points
    if not groups:
        return None
    fig, axes = plt.subplots(1, len(groups), figsize=(4.5 * len(groups), 3.4), squeeze=False)
    for ax, (name, stages) in zip(axes[0], sorted(groups.items())):
        for stage, points in sorted(stages.items()):
            steps, values = zip(*points)
            ax.plot(
                steps,
                values,
                label=stage,
                marker="o" if stage == "val" else None,
                markersize=3,
                alpha=0.6 if stage == "train" else 1.0,
            )
        ax.set_xlabel("step")
        ax.set_title(name)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    return save_figure(fig, path)


def plot_confusion_matrix(
    matrix: torch.Tensor | np.ndarray, class_names: Sequence[str], path: Path, title: str = "confusion matrix"
) -> Path:
    """Counts per (true, predicted) class, with row-normalised colours so rare errors stay visible."""
    matrix = np.asarray(matrix, dtype=np.int64)
    share = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    n = len(class_names)
    fig, ax = plt.subplots(figsize=(0.6 * n + 2.5, 0.6 * n + 2))
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(n):
        for j in range(n):
            if matrix[i, j]:
                ax.text(
                    j,
                    i,
                    str(matrix[i, j]),
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if share[i, j] > 0.5 else ("crimson" if i != j else "black"),
                )
    ax.set_xticks(range(n), class_names, rotation=45, ha="right")
    ax.set_yticks(range(n), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    return save_figure(fig, path)


def plot_image_grid(
    images: torch.Tensor,
    titles: Sequence[str],
    path: Path,
    wrong: Sequence[bool] | None = None,
    ncols: int = 8,
    title: str = "",
) -> Path:
    """Greyscale images (N, H, W) or (N, 1, H, W) with a caption each; `wrong` ones get a red frame and caption."""
    images = images.detach().cpu().float()
    if images.dim() == 4:
        images = images[:, 0]
    fig, axes = grid_axes(len(images), ncols, (1.45, 1.7))
    for k, ax in enumerate(axes):
        ax.imshow(images[k], cmap="gray_r")
        bad = bool(wrong[k]) if wrong is not None else False
        ax.set_title(titles[k], fontsize=7, color="crimson" if bad else "black")
        for spine in ax.spines.values():
            spine.set_color("crimson" if bad else "lightgray")
            spine.set_linewidth(2.5 if bad else 0.5)
    fig.suptitle(title)
    return save_figure(fig, path)
