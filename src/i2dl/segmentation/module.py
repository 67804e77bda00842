"""`SegmentationModule`: cross-entropy ignoring void, the course's accuracy, pixel accuracy and (per-class) IoU.

Metrics (void / Unlabelled / padding ignored everywhere):
- `val/acc`, `test/acc`: the course's accuracy: per image, the share of non-void pixels classified correctly,
  averaged over images;
- `val/pixel_acc`, `test/pixel_acc`: the share of all non-void pixels classified correctly;
- `val/miou`, `test/miou`: mean over classes of intersection over union (classes absent from both the truth and
  the prediction of the whole split are left out), from a torchmetrics confusion matrix; per-class IoU is
  logged as `test/iou/<class>` (so it lands in results.json) and drawn by `SegmentationFigures`.
"""

from __future__ import annotations

from typing import Literal

import lightning as L
import torch
import torch.nn.functional as F
from torchmetrics import Metric
from torchmetrics.classification import MulticlassConfusionMatrix

from i2dl.hardware import resolve_channels_last, resolve_precision
from i2dl.schedules import WarmupCosine
from i2dl.segmentation.datasets import DATASETS, IGNORE_INDEX
from i2dl.segmentation.model import build_segmenter
from i2dl.training import CompatibleCheckpoints, lightning_optimizers, make_optimizer, total_training_steps


class PerImageAccuracy(Metric):
    """The course's accuracy: mean over images of (correct non-void pixels / non-void pixels)."""

    full_state_update = False

    def __init__(self, ignore_index: int = IGNORE_INDEX) -> None:
        super().__init__()
        self.ignore_index = ignore_index
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("images", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        valid = target != self.ignore_index
        labelled = valid.flatten(1).sum(1)
        correct = ((preds == target) & valid).flatten(1).sum(1)
        keep = labelled > 0  # an image with no labelled pixel has no accuracy
        self.total += (correct[keep].double() / labelled[keep].double()).sum()
        self.images += int(keep.sum())

    def compute(self) -> torch.Tensor:
        return (self.total / self.images.clamp(min=1)).float()


def iou_from_confusion(matrix: torch.Tensor) -> torch.Tensor:
    """Per-class IoU from a (true, predicted) confusion matrix; NaN for classes absent from truth and prediction."""
    matrix = matrix.double()
    intersection = matrix.diag()
    union = matrix.sum(0) + matrix.sum(1) - intersection
    return torch.where(union > 0, intersection / union.clamp(min=1), torch.full_like(union, float("nan"))).float()


class SegmentationModule(CompatibleCheckpoints, L.LightningModule):
    """Args:
    dataset: "msrc_v2" or "camvid" (linked from `--data.dataset`; sets the classes and colours).
    approach: "torchvision" = (a) a ready-made model with a new last layer (`arch`, `weights`,
        `weights_backbone`, `aux_loss`); "backbone_decoder" = (b) a classification `backbone` with our decoder
        (`weights_backbone` = its ImageNet weights, `decoder_channels`).
    weights / weights_backbone: None, "DEFAULT" (torchvision, downloaded) or a local file; loaded when `fit`
        starts (a resumed run then restores its own weights), with a line saying what was loaded.
    class_weighting: "none", "median_frequency" (SegNet's) or "inverse_sqrt" from the training split's pixel
        counts, for rare classes.
    aux_weight: weight of the auxiliary head's loss (DeepLabV3, FCN), as in torchvision's reference (0.5).
    freeze_backbone_epochs: train only the new layers for this many epochs, then everything.
    frozen_bn: keep the backbone's BatchNorm layers in eval mode throughout (their pretrained statistics are used
        and never updated; their affine parameters still train once the backbone is unfrozen). Right for a
        pretrained backbone at small batch sizes, and necessary for weights with BatchNorm folded into the
        convolutions (../shared/data/weights/mobilenet_v2_imagenet.pth: mean 0, variance 1): in train mode those
        layers would normalise by batch statistics and throw the pretrained features away.
    backbone_lr_factor: the backbone's learning rate is `lr * backbone_lr_factor`.
    schedule: "constant", or per step over the whole run: "cosine" (5% warm-up, cosine decay) or "onecycle"
        (20% warm-up, cosine decay).
    decoder_context: (b) only: "none", "aspp" (DeepLabV3-style pyramid of dilated convolutions) or "pool"
        (LR-ASPP's gating by the image's average features) on the coarsest features.
    loss: "ce" (cross-entropy over every labelled pixel) or "ohem" (online hard example mining: the mean over
        the `ohem_fraction` hardest labelled pixels of each batch, Shrivastava et al. 2016, as BiSeNet/STDC train).
    tta: test-time augmentation at test and predict: "none" or "flip" (the mean of the logits of the image and
        of its mirror image, mirrored back).
    channels_last: NHWC memory layout for the network and its inputs: on this CPU 1.35x faster per training step
        in float32 and 1.62x with bf16 autocast (`benchmarks/segmentation_speed.py`: MobileNetV2 U-Net, batch 8
        at 224x224, against float32 NCHW).
    """

    TEST_TIME_SETTINGS = ("tta",)  # taken from the test command, not from the checkpoint

    def __init__(
        self,
        dataset: Literal["msrc_v2", "camvid"] = "msrc_v2",
        approach: Literal["torchvision", "backbone_decoder"] = "backbone_decoder",
        arch: str = "lraspp_mobilenet_v3_large",
        backbone: str = "mobilenet_v2",
        weights: str | None = None,
        weights_backbone: str | None = None,
        aux_loss: bool = True,
        decoder_channels: tuple[int, ...] = (128, 64, 32, 16),
        dropout: float = 0.1,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        backbone_lr_factor: float = 1.0,
        optimizer: Literal["adamw", "sgd"] = "adamw",
        schedule: Literal["constant", "cosine", "onecycle"] = "cosine",
        class_weighting: Literal["none", "median_frequency", "inverse_sqrt"] = "none",
        aux_weight: float = 0.5,
        freeze_backbone_epochs: int = 0,
        frozen_bn: bool = False,
        decoder_context: Literal["none", "aspp", "pool"] = "none",
        loss: Literal["ce", "ohem"] = "ce",
        ohem_fraction: float = 0.25,
        tta: Literal["none", "flip"] = "none",
        channels_last: bool | Literal["auto"] = "auto",
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.info = DATASETS[dataset]
        self.class_names = list(self.info.classes)
        n = self.info.num_classes
        self.model = build_segmenter(
            approach,
            n,
            arch=arch,
            weights=weights,
            weights_backbone=weights_backbone,
            aux_loss=aux_loss,
            backbone=backbone,
            decoder_channels=decoder_channels,
            dropout=dropout,
            decoder_context=decoder_context,
        )
        self.channels_last = resolve_channels_last(channels_last, resolve_precision("auto"))
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.register_buffer("class_weights", torch.ones(n))
        self.metrics = torch.nn.ModuleDict(
            {
                f"{stage}_{name}": metric
                for stage in ("val", "test")
                for name, metric in (
                    ("acc", PerImageAccuracy()),
                    ("confusion", MulticlassConfusionMatrix(n, ignore_index=IGNORE_INDEX)),
                )
            }
        )

    # --- setup: pretrained weights when training starts; class weights from the training split's pixel counts ---
    def setup(self, stage: str) -> None:
        if stage != "fit" or getattr(self, "_pretrained_loaded", False):
            return
        self._pretrained_loaded = True
        report = self.model.load_pretrained()
        if report is not None:
            print(f"pretrained weights: {report.summary()}")

    def set_class_weights(self, pixel_counts: torch.Tensor) -> None:
        """Class weights of the loss from the training split's pixel count per class (`class_weighting`); the
        LabCLI calls it before `fit` (`datamodule.class_pixel_counts()`). Saved with the checkpoint."""
        if self.hparams.class_weighting == "none":
            return
        freq = pixel_counts.double() / pixel_counts.double().sum()
        present = freq > 0
        if self.hparams.class_weighting == "median_frequency":
            weights = freq[present].median() / freq.clamp(min=1e-12)
        else:
            weights = 1 / freq.clamp(min=1e-12).sqrt()
            weights = weights / weights[present].mean()
        self.class_weights.copy_(torch.where(present, weights, torch.ones_like(weights)).float())
        print(
            "class weights: " + ", ".join(f"{c} {w:.2f}" for c, w in zip(self.class_names, self.class_weights.tolist()))
        )

    def _layout(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(self._layout(x))

    def loss(self, logits: torch.Tensor, target: torch.Tensor, hard_mining: bool = False) -> torch.Tensor:
        # float32 loss also under bf16 autocast
        if not hard_mining or self.hparams.loss != "ohem":
            return F.cross_entropy(logits.float(), target, weight=self.class_weights, ignore_index=IGNORE_INDEX)
        per_pixel = F.cross_entropy(
            logits.float(), target, weight=self.class_weights, ignore_index=IGNORE_INDEX, reduction="none"
        )[target != IGNORE_INDEX]
        if per_pixel.numel() == 0:
            return logits.sum() * 0.0
        keep = max(1, int(per_pixel.numel() * self.hparams.ohem_fraction))
        return per_pixel.topk(keep, sorted=False).values.mean()

    def predict_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for evaluation and prediction, with the `tta` averaging."""
        logits = self(x)
        if self.hparams.tta == "flip":
            logits = (logits + self(x.flip(-1)).flip(-1)) / 2
        return logits

    # --- freezing ------------------------------------------------------------------------------------------------
    def backbone_frozen(self) -> bool:
        return self.current_epoch < self.hparams.freeze_backbone_epochs

    def on_train_epoch_start(self) -> None:
        frozen = self.backbone_frozen()
        for p in self.model.backbone.parameters():
            p.requires_grad_(not frozen)
        self._backbone_modes()

    def train(self, mode: bool = True):
        """Lightning switches to train mode after every validation; the backbone's frozen parts stay in eval mode."""
        super().train(mode)
        if mode and hasattr(self, "hparams"):
            self._backbone_modes()
        return self

    def _backbone_modes(self) -> None:
        if self.backbone_frozen():
            self.model.backbone.eval()  # frozen BatchNorm statistics too
        elif self.hparams.frozen_bn:
            for layer in self.model.backbone.modules():
                if isinstance(layer, torch.nn.modules.batchnorm._BatchNorm):
                    layer.eval()

    # --- steps -----------------------------------------------------------------------------------------------------
    def training_step(self, batch, batch_idx):
        x, y = batch
        out, aux = self.model.forward_train(self._layout(x))
        loss = self.loss(out, y, hard_mining=True)
        if aux is not None and self.hparams.aux_weight:
            aux_loss = self.loss(aux, y, hard_mining=True)
            self.log("train/aux_loss", aux_loss)
            loss = loss + self.hparams.aux_weight * aux_loss
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def _evaluate(self, stage: str, batch, batch_idx: int) -> dict[str, torch.Tensor]:
        x, y = batch
        logits = self.predict_logits(x) if stage == "test" else self(x)
        preds = logits.argmax(1)
        self.log(f"{stage}/loss", self.loss(logits, y), sync_dist=True, batch_size=len(x))
        self.metrics[f"{stage}_acc"].update(preds, y)
        self.metrics[f"{stage}_confusion"].update(preds, y)
        return {"images": x, "targets": y, "preds": preds}

    def _log_epoch(self, stage: str) -> torch.Tensor:
        matrix = self.metrics[f"{stage}_confusion"].compute()
        self.metrics[f"{stage}_confusion"].reset()
        iou = iou_from_confusion(matrix)
        self.log(f"{stage}/acc", self.metrics[f"{stage}_acc"].compute(), prog_bar=True)
        self.metrics[f"{stage}_acc"].reset()
        self.log(f"{stage}/pixel_acc", matrix.diag().sum().float() / matrix.sum().clamp(min=1))
        self.log(f"{stage}/miou", iou.nanmean() if not iou.isnan().all() else torch.tensor(0.0), prog_bar=True)
        return iou

    def validation_step(self, batch, batch_idx):
        self._evaluate("val", batch, batch_idx)

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    def test_step(self, batch, batch_idx):
        return self._evaluate("test", batch, batch_idx)

    def on_test_epoch_end(self) -> None:
        iou = self._log_epoch("test")
        for name, value in zip(self.class_names, iou.tolist()):  # NaN (null in results.json): class never seen
            self.log(f"test/iou/{name}", value)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["class_names"] = self.class_names
        checkpoint["palette"] = [list(c) for c in self.info.palette]

    # --- optimisation ----------------------------------------------------------------------------------------------
    def configure_optimizers(self):
        hp = self.hparams
        backbone_ids = {id(p) for p in self.model.backbone.parameters()}
        groups = [
            {
                "params": [p for p in self.model.parameters() if id(p) in backbone_ids],
                "lr": hp.lr * hp.backbone_lr_factor,
            },
            {"params": [p for p in self.model.parameters() if id(p) not in backbone_ids], "lr": hp.lr},
        ]
        optimizer, _ = make_optimizer(groups, hp.optimizer, hp.lr, hp.weight_decay, "constant", 0, 0.0)
        if hp.schedule == "constant":
            return optimizer
        # linear warm-up from 1/10 over 5% ("cosine") or 20% ("onecycle") of the steps, cosine down to 1/1000; the
        # total is counted again whenever training (re)starts, so a resumed run may be given more epochs
        scheduler = WarmupCosine(
            optimizer,
            total_training_steps(self.trainer),
            warmup=0.05 if hp.schedule == "cosine" else 0.2,
            start_factor=0.1,
            end_factor=1e-3,
        )
        return lightning_optimizers(optimizer, scheduler)
