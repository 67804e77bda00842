"""The lab's figures: inputs vs reconstructions, the latent space in 2-D (PCA), accuracy against labels."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from i2dl.training import FigureCallback  # noqa: E402
from i2dl.viz import save_figure  # noqa: E402


def plot_reconstructions(inputs: torch.Tensor, reconstructions: torch.Tensor, path: Path, title: str = "") -> Path:
    """Two rows: the input images (top) and the autoencoder's reconstructions of them (bottom)."""
    inputs, reconstructions = inputs.detach().cpu().float(), reconstructions.detach().cpu().float()
    n = len(inputs)
    fig, axes = plt.subplots(2, n, figsize=(0.9 * n, 2.1), squeeze=False)
    for k in range(n):
        for row, images in enumerate((inputs, reconstructions)):
            ax = axes[row, k]
            ax.imshow(images[k].reshape(images[k].shape[-2:]), cmap="gray_r", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0, 0].set_ylabel("input", fontsize=8)
    axes[1, 0].set_ylabel("recon.", fontsize=8)
    fig.suptitle(title, fontsize=9)
    return save_figure(fig, path)


def pca_2d(codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Project codes (N, D) on their first two principal components; returns (points (N, 2), explained share (2,))."""
    codes = codes.detach().double()
    centred = codes - codes.mean(0)
    _, singular, v = torch.linalg.svd(centred, full_matrices=False)
    variance = singular.pow(2)
    share = variance[:2] / variance.sum().clamp_min(1e-12)
    return (centred @ v[:2].T).float(), share.float()


def plot_latent_pca(
    codes: torch.Tensor, labels: torch.Tensor, path: Path, class_names: Sequence[str] | None = None, title: str = ""
) -> Path:
    """Scatter of the codes' first two principal components, one colour per true class."""
    points, share = pca_2d(codes)
    labels = labels.cpu()
    classes = sorted(set(labels.tolist()))
    fig, ax = plt.subplots(figsize=(6, 5))
    cmap = plt.get_cmap("tab10")
    for c in classes:
        mask = labels == c
        name = class_names[c] if class_names is not None and 0 <= c < len(class_names) else str(c)
        ax.scatter(points[mask, 0], points[mask, 1], s=3, alpha=0.5, color=cmap(c % 10), label=name)
    ax.set_xlabel(f"PC 1 ({share[0]:.0%} of variance)")
    ax.set_ylabel(f"PC 2 ({share[1]:.0%} of variance)")
    ax.legend(markerscale=4, fontsize=7, loc="best")
    ax.set_title(title)
    return save_figure(fig, path)


def plot_accuracy_vs_labels(rows: Sequence[dict], path: Path, title: str = "") -> Path:
    """Test accuracy against the number of labels (log x), one line per method; rows hold
    `num_labels`, `method` and `test_acc` (several seeds of one point are drawn as mean with min-max bars)."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for method in dict.fromkeys(r["method"] for r in rows):
        by_n: dict[int, list[float]] = {}
        for r in rows:
            if r["method"] == method:
                by_n.setdefault(int(r["num_labels"]), []).append(float(r["test_acc"]))
        ns = sorted(by_n)
        means = [sum(by_n[n]) / len(by_n[n]) for n in ns]
        low = [m - min(by_n[n]) for m, n in zip(means, ns)]
        high = [max(by_n[n]) - m for m, n in zip(means, ns)]
        ax.errorbar(
            ns,
            [100 * m for m in means],
            yerr=[[100 * v for v in low], [100 * v for v in high]],
            marker="o",
            capsize=3,
            label=method,
        )
    ax.set_xscale("log")
    ax.set_xlabel("labeled training images")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    ax.set_title(title)
    return save_figure(fig, path)


class AutoencoderFigures(FigureCallback):
    """After the autoencoder's test: `reconstructions.png` (the first test images and their reconstructions),
    `latent_pca.png` (every test code, first two principal components, coloured by the true class) and
    `curves.png`."""

    def __init__(self, run_dir: str | Path, class_names: Sequence[str], title: str, images: int = 16) -> None:
        super().__init__(run_dir)
        self.class_names, self.title, self.images = list(class_names), title, images
        self._reset()

    def _reset(self) -> None:
        self.codes: list[torch.Tensor] = []
        self.labels: list[torch.Tensor] = []
        self.examples: tuple[torch.Tensor, torch.Tensor] | None = None

    def on_test_epoch_start(self, trainer, pl_module) -> None:
        self._reset()

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self.codes.append(outputs["codes"].detach().float().cpu())
        self.labels.append(outputs["labels"].cpu())
        if self.examples is None and "reconstructions" in outputs:  # a contrastive encoder has no decoder
            n = self.images
            self.examples = (outputs["images"][:n].cpu(), outputs["reconstructions"][:n].detach().float().cpu())

    def draw(self, metrics: dict[str, float], pl_module) -> None:
        if not self.codes:
            return
        if self.examples is not None:
            plot_reconstructions(
                *self.examples,
                self.folder / "reconstructions.png",
                title=f"{self.title}: test inputs (top) and reconstructions (bottom)",
            )
        plot_latent_pca(
            torch.cat(self.codes),
            torch.cat(self.labels),
            self.folder / "latent_pca.png",
            class_names=self.class_names,
            title=f"{self.title}: test codes, PCA",
        )
        self.curves(self.title)
