"""`DigitClassifier`: trains any digits network with cross-entropy; logs `train/loss`, `val/acc`, `test/acc`."""

from __future__ import annotations

from typing import Literal

import lightning as L
from torchmetrics.classification import MulticlassAccuracy

from i2dl.data.idx import DATASETS
from i2dl.digits.model import build_model
from i2dl.training import (
    CompatibleCheckpoints,
    CrossEntropySteps,
    lightning_optimizers,
    make_optimizer,
    total_training_steps,
)


class DigitClassifier(CrossEntropySteps, CompatibleCheckpoints, L.LightningModule):
    """Args:
    arch: "lab_fc", "lab_cnn" (the lab's networks) or "digitnet" (ours).
    lr: peak learning rate; with `schedule="onecycle"` it warms up to it and anneals to ~0.
    optimizer: "adam" (the lab's choice), "adamw" or "sgd" (Nesterov momentum 0.9).
    label_smoothing: cross-entropy label smoothing (0 = plain cross-entropy).
    width, dropout: size of "digitnet".
    dataset: "mnist" or "fashion-mnist" (linked from `--data.dataset`): names the classes in the checkpoint.
    """

    def __init__(
        self,
        arch: Literal["lab_fc", "lab_cnn", "digitnet"] = "lab_cnn",
        num_classes: int = 10,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        optimizer: Literal["adam", "adamw", "sgd"] = "adam",
        schedule: Literal["constant", "onecycle"] = "constant",
        label_smoothing: float = 0.0,
        width: int = 16,
        dropout: float = 0.1,
        dataset: Literal["mnist", "fashion-mnist"] = "mnist",
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        extra = {"width": width, "dropout": dropout} if arch == "digitnet" else {}
        self.model = build_model(arch, num_classes=num_classes, **extra)
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes, average="micro")
        self.class_names = list(DATASETS[dataset].classes)[:num_classes]

    def forward(self, x):
        return self.model(x)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["class_names"] = list(self.class_names)

    def configure_optimizers(self):
        return lightning_optimizers(*build_optimizer(self, total_training_steps(self.trainer)))


def build_optimizer(module: DigitClassifier, total_steps: int):
    """The optimiser and (for `schedule="onecycle"`) the per-step LR schedule a module's hyper-parameters ask for."""
    hp = module.hparams
    return make_optimizer(
        module.parameters(), hp.optimizer, hp.lr, hp.weight_decay, hp.schedule, total_steps, pct_start=0.2
    )
