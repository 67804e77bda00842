"""`DigitClassifier`: trains any digits network with cross-entropy; logs `train/loss`, `val/acc`, `test/acc`."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import lightning as L
import torch
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix

from i2dl.digits.model import build_model
from i2dl.training import (CompatibleCheckpoints, CrossEntropySteps, csv_metric_files, lightning_optimizers,
                           make_optimizer, total_training_steps)
from i2dl.viz import plot_confusion_matrix, plot_curves, plot_image_grid

GRID_IMAGES = 40
GRID_WRONG = 8


class DigitClassifier(CrossEntropySteps, CompatibleCheckpoints, L.LightningModule):
    """Args:
        arch: "lab_fc", "lab_cnn" (the lab's networks) or "digitnet" (ours).
        lr: peak learning rate; with `schedule="onecycle"` it warms up to it and anneals to ~0.
        optimizer: "adam" (the lab's choice), "adamw" or "sgd" (Nesterov momentum 0.9).
        label_smoothing: cross-entropy label smoothing (0 = plain cross-entropy).
        width, dropout: size of "digitnet".
    """

    def __init__(self, arch: Literal["lab_fc", "lab_cnn", "digitnet"] = "lab_cnn", num_classes: int = 10,
                 lr: float = 1e-3, weight_decay: float = 0.0, optimizer: Literal["adam", "adamw", "sgd"] = "adam",
                 schedule: Literal["constant", "onecycle"] = "constant", label_smoothing: float = 0.0,
                 width: int = 16, dropout: float = 0.1) -> None:
        super().__init__()
        self.save_hyperparameters()
        extra = {"width": width, "dropout": dropout} if arch == "digitnet" else {}
        self.model = build_model(arch, num_classes=num_classes, **extra)
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_confusion = MulticlassConfusionMatrix(num_classes)
        self.test_examples: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self.class_names = [str(i) for i in range(num_classes)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def on_test_epoch_start(self) -> None:
        self.test_examples = []

    def keep_test_examples(self, x: torch.Tensor, y: torch.Tensor, logits: torch.Tensor, batch_idx: int) -> None:
        # the grid shows the first test images, then misclassified ones from anywhere in the test set
        probs = logits.softmax(-1)
        keep = torch.zeros(len(x), dtype=torch.bool)
        if batch_idx == 0:
            keep[: GRID_IMAGES - GRID_WRONG] = True
        wrong = (probs.argmax(-1) != y).cpu() & ~keep
        room = GRID_IMAGES - sum(len(part[0]) for part in self.test_examples) - int(keep.sum())
        keep[wrong.nonzero().flatten()[: max(room, 0)]] = True
        if keep.any():
            self.test_examples.append((x[keep].cpu(), y[keep].cpu(), probs[keep].cpu()))

    def on_test_epoch_end(self) -> None:
        matrix = self.test_confusion.compute().cpu()
        self.test_confusion.reset()
        if self.trainer.is_global_zero and not self.trainer.sanity_checking:
            self.write_figures(Path(self.trainer.default_root_dir) / "figures", matrix)

    def write_figures(self, folder: Path, matrix: torch.Tensor) -> None:
        """Test-image grid (prediction, confidence, truth; wrong ones in red), confusion matrix, curves."""
        names = self.class_names
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is not None and hasattr(datamodule, "classes"):
            names = datamodule.classes
        if self.test_examples:
            x, y, probs = (torch.cat(parts) for parts in zip(*self.test_examples))
            conf, pred = probs.max(-1)
            titles = [f"{names[p]} {c:.0%}" + ("" if p == t else f"\n(true {names[t]})")
                      for p, c, t in zip(pred.tolist(), conf.tolist(), y.tolist())]
            plot_image_grid(x, titles, folder / "test_predictions.png", wrong=(pred != y).tolist(),
                            title="test images: predicted class, confidence (wrong ones in red)")
        plot_confusion_matrix(matrix, names, folder / "confusion_matrix.png",
                              title=f"test confusion matrix ({int(matrix.trace())}/{int(matrix.sum())} correct)")
        plot_curves(csv_metric_files(self.trainer.default_root_dir), folder / "curves.png", title=self.hparams.arch)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        checkpoint["class_names"] = list(getattr(datamodule, "classes", self.class_names))

    def configure_optimizers(self):
        return lightning_optimizers(*build_optimizer(self, total_training_steps(self.trainer)))


def build_optimizer(module: DigitClassifier, total_steps: int):
    """The optimiser and (for `schedule="onecycle"`) the per-step LR schedule a module's hyper-parameters ask for."""
    hp = module.hparams
    return make_optimizer(module.parameters(), hp.optimizer, hp.lr, hp.weight_decay, hp.schedule, total_steps,
                          pct_start=0.2)
