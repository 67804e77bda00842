"""`FacialKeypointsRegressor`: trains a keypoint network with (masked) MSE on normalised coordinates.

Logs `train/loss`, `val/loss`, `val/score` (the course's 1 / (2 MSE)), `val/rmse_px` (Kaggle's metric), the same
under `test/`, plus `test/rmse_px/<keypoint>` for each of the 15 keypoints; draws figures at the end of a test.
"""

from __future__ import annotations

from typing import Literal

import lightning as L
import torch
from torchmetrics import Metric

from i2dl.hardware import resolve_channels_last, resolve_precision
from i2dl.keypoints.data import HALF
from i2dl.keypoints.kaggle_csv import KEYPOINT_NAMES, NUM_KEYPOINTS
from i2dl.keypoints.model import build_model
from i2dl.schedules import WarmupCosine
from i2dl.training import CompatibleCheckpoints, lightning_optimizers, total_training_steps


def masked_mse(pred: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the given coordinates only. `pred` (B, 30) normalised, `targets` (B, 15, 3)."""
    pred = pred.float().view(-1, NUM_KEYPOINTS, 2)
    weight = targets[..., 2:3].expand_as(pred)
    return ((pred - targets[..., :2]) ** 2 * weight).sum() / weight.sum().clamp(min=1)


class KeypointErrors(Metric):
    """The lab's metrics, summed across batches (and processes):

    - `score`: 1 / (2 * mean over images of each image's MSE on normalised coordinates) -- the course's score;
    - `rmse_px`: root of the mean squared error in pixels over all given coordinates -- Kaggle's metric;
    - `rmse_px_per_keypoint`: the same for each keypoint (x and y together).
    """

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("image_mse_sum", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("images", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("sq_px", torch.zeros(NUM_KEYPOINTS, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("coords", torch.zeros(NUM_KEYPOINTS, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, pred: torch.Tensor, targets: torch.Tensor) -> None:
        pred = pred.detach().double().view(-1, NUM_KEYPOINTS, 2)
        visible = targets[..., 2:3].double().expand_as(pred)
        sq = (pred - targets[..., :2].double()) ** 2 * visible  # (B, 15, 2), normalised units
        per_image = visible.sum((1, 2))
        has = per_image > 0
        self.image_mse_sum += (sq.sum((1, 2))[has] / per_image[has]).sum()
        self.images += has.sum()
        self.sq_px += sq.sum(-1).sum(0) * HALF**2
        self.coords += visible.sum(-1).sum(0)

    def compute(self) -> dict[str, torch.Tensor]:
        mse = self.image_mse_sum / self.images.clamp(min=1)
        return {
            "score": (1.0 / (2.0 * mse.clamp(min=1e-12))).float(),
            "rmse_px": (self.sq_px.sum() / self.coords.sum().clamp(min=1)).sqrt().float(),
            "rmse_px_per_keypoint": (self.sq_px / self.coords.clamp(min=1)).sqrt().float(),
        }


def image_errors_px(pred: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """RMSE in pixels of each image over its given keypoints, (B,)."""
    pred = pred.detach().float().view(-1, NUM_KEYPOINTS, 2)
    visible = targets[..., 2:3].expand_as(pred)
    sq = ((pred - targets[..., :2]) ** 2 * visible).sum((1, 2)) / visible.sum((1, 2)).clamp(min=1)
    return sq.sqrt() * HALF


class FacialKeypointsRegressor(CompatibleCheckpoints, L.LightningModule):
    """Args:
        arch: "keypointnet" (ours, batch norm) or "lab_cnn" (the course's kind of network).
        width, dropout: size and regularisation of the network.
        lr: peak learning rate; with `schedule="onecycle"` it warms up to it and anneals to ~0, with "cosine" it
            anneals from it.
        optimizer: "adam" (the course's choice) or "adamw".
        loss: "mse" (the course's) or "smooth_l1" (less pulled by outliers); both on normalised coordinates with
            missing keypoints masked out.
        channels_last: NHWC memory layout, the fast one for oneDNN's bf16 kernels; "auto" uses it except with bf16
            on a CPU without AVX-512 (`i2dl.hardware.resolve_channels_last`).
        tta_mirror: test-time flip: the data's mirror constant C_k per keypoint (pixels, x -> C_k - x, measured by
            `benchmarks/keypoints_flip.py` on validation faces), or None for no test-time augmentation. With it,
            test and predict average the prediction on the face and, mapped back, on its mirror image.
    Test steps return images, predictions and targets for `KeypointFigures`.
    """

    TEST_TIME_SETTINGS = ("tta_mirror",)  # taken from the test/predict command, not from the checkpoint

    def __init__(
        self,
        arch: Literal["keypointnet", "lab_cnn"] = "keypointnet",
        width: int = 16,
        dropout: float = 0.1,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        optimizer: Literal["adam", "adamw"] = "adam",
        schedule: Literal["constant", "onecycle", "cosine"] = "constant",
        loss: Literal["mse", "smooth_l1"] = "mse",
        smooth_l1_beta: float = 0.02,
        channels_last: bool | Literal["auto"] = "auto",
        tta_mirror: list[float] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if tta_mirror is not None and len(tta_mirror) != NUM_KEYPOINTS:
            raise ValueError(f"tta_mirror needs {NUM_KEYPOINTS} mirror constants, got {len(tta_mirror)}")
        self.model = build_model(arch, width=width, dropout=dropout)
        self.channels_last = resolve_channels_last(channels_last, resolve_precision("auto"))
        if self.channels_last:  # with bf16-mixed on a CPU with AMX, about 2x faster per step (measured, 1 thread)
            self.model = self.model.to(memory_format=torch.channels_last)
        self.val_errors = KeypointErrors()
        self.test_errors = KeypointErrors()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, 96, 96) in [0, 1] -> (B, 30) normalised (x, y) per keypoint."""
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.model(x)

    def predict_normalised(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 30) normalised keypoints for evaluation and prediction, with the test-time flip when `tta_mirror`."""
        pred = self(x).float()
        if self.hparams.tta_mirror is None:
            return pred
        from i2dl.keypoints.data import FLIP_PERMUTATION, to_normalised, to_pixels

        mirror = to_pixels(self(x.flip(-1)).float().view(-1, NUM_KEYPOINTS, 2))[:, list(FLIP_PERMUTATION)]
        constants = torch.tensor(self.hparams.tta_mirror, dtype=mirror.dtype, device=mirror.device)
        back = torch.stack([constants - mirror[..., 0], mirror[..., 1]], dim=-1)
        return (pred + to_normalised(back).flatten(1)) / 2

    def _loss(self, pred: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if self.hparams.loss == "mse":
            return masked_mse(pred, targets)
        pred = pred.float().view(-1, NUM_KEYPOINTS, 2)
        weight = targets[..., 2:3].expand_as(pred)
        per = torch.nn.functional.smooth_l1_loss(
            pred, targets[..., :2], reduction="none", beta=self.hparams.smooth_l1_beta
        )
        return (per * weight).sum() / weight.sum().clamp(min=1)

    def training_step(self, batch, batch_idx):
        x, targets = batch
        loss = self._loss(self(x), targets)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, targets = batch
        pred = self(x)
        self.val_errors.update(pred, targets)
        self.log("val/loss", self._loss(pred, targets), sync_dist=True)

    def on_validation_epoch_end(self) -> None:
        values = self.val_errors.compute()
        self.val_errors.reset()
        self.log("val/score", values["score"], prog_bar=True, sync_dist=False)
        self.log("val/rmse_px", values["rmse_px"], prog_bar=True, sync_dist=False)

    def test_step(self, batch, batch_idx):
        x, targets = batch
        pred = self.predict_normalised(x)
        self.test_errors.update(pred, targets)
        self.log("test/loss", self._loss(pred, targets), sync_dist=True)
        return {"images": x, "pred": pred.detach().float(), "targets": targets}

    def on_test_epoch_end(self) -> None:
        values = self.test_errors.compute()
        self.log("test/images", self.test_errors.images.float(), sync_dist=False)
        self.test_errors.reset()
        self.log("test/score", values["score"])
        self.log("test/rmse_px", values["rmse_px"])
        for name, value in zip(KEYPOINT_NAMES, values["rmse_px_per_keypoint"]):
            self.log(f"test/rmse_px/{name}", value)

    def configure_optimizers(self):
        hp = self.hparams
        cls = torch.optim.AdamW if hp.optimizer == "adamw" else torch.optim.Adam
        optimizer = cls(self.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
        if hp.schedule == "constant":
            return optimizer
        # linear warm-up from 1/25 over 15% of the steps ("onecycle") or none ("cosine"), cosine down to 1/1000;
        # the total is counted again when a run resumes, so a longer run stretches the schedule
        scheduler = WarmupCosine(
            optimizer,
            total_training_steps(self.trainer),
            warmup=0.15 if hp.schedule == "onecycle" else 0.0,
            start_factor=1 / 25,
            end_factor=1e-3,
        )
        return lightning_optimizers(optimizer, scheduler)
