"""`SegmentationModule`: cross-entropy ignoring void, the course's accuracy, pixel accuracy and (per-class) IoU.

Metrics (void / Unlabelled / padding ignored everywhere):
- `val/acc`, `test/acc`: the course's accuracy: per image, the share of non-void pixels classified correctly,
  averaged over images;
- `val/pixel_acc`, `test/pixel_acc`: the share of all non-void pixels classified correctly;
- `val/miou`, `test/miou`: mean over classes of intersection over union (classes absent from both the truth and
  the prediction of the whole split are left out), from a torchmetrics confusion matrix; per-class IoU is
  printed, written to `figures/per_class_iou.csv` and drawn at test end.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Literal

import lightning as L
import torch
import torch.nn.functional as F
from torchmetrics import Metric
from torchmetrics.classification import MulticlassConfusionMatrix

from i2dl.data.segmentation import DATASETS, IGNORE_INDEX
from i2dl.segmentation.model import build_segmenter
from i2dl.segmentation.viz import plot_class_iou, plot_segmentation_rows
from i2dl.training import CompatibleCheckpoints, csv_metric_files, make_optimizer, total_training_steps
from i2dl.viz import plot_curves

FIGURE_ROWS = 4


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
        channels_last: NHWC memory layout for the network and its inputs: on this CPU 1.35x faster per training step
            in float32 and 1.62x with bf16 autocast (`benchmarks/segmentation_speed.py`: MobileNetV2 U-Net, batch 8
            at 224x224, against float32 NCHW).
    """

    def __init__(self, dataset: Literal["msrc_v2", "camvid"] = "msrc_v2",
                 approach: Literal["torchvision", "backbone_decoder"] = "backbone_decoder",
                 arch: str = "lraspp_mobilenet_v3_large", backbone: str = "mobilenet_v2",
                 weights: str | None = None, weights_backbone: str | None = None, aux_loss: bool = True,
                 decoder_channels: tuple[int, ...] = (128, 64, 32, 16), dropout: float = 0.1,
                 lr: float = 1e-3, weight_decay: float = 1e-4, backbone_lr_factor: float = 1.0,
                 optimizer: Literal["adamw", "sgd"] = "adamw",
                 schedule: Literal["constant", "cosine", "onecycle"] = "cosine",
                 class_weighting: Literal["none", "median_frequency", "inverse_sqrt"] = "none",
                 aux_weight: float = 0.5, freeze_backbone_epochs: int = 0, frozen_bn: bool = False,
                 channels_last: bool = True) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.info = DATASETS[dataset]
        self.class_names = list(self.info.classes)
        n = self.info.num_classes
        self.model = build_segmenter(approach, n, arch=arch, weights=weights, weights_backbone=weights_backbone,
                                     aux_loss=aux_loss, backbone=backbone, decoder_channels=decoder_channels,
                                     dropout=dropout)
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.register_buffer("class_weights", torch.ones(n))
        self.metrics = torch.nn.ModuleDict({
            f"{stage}_{name}": metric
            for stage in ("val", "test")
            for name, metric in (("acc", PerImageAccuracy()),
                                 ("confusion", MulticlassConfusionMatrix(n, ignore_index=IGNORE_INDEX)))})
        self.examples: list[torch.Tensor] = []

    # --- setup: pretrained weights and class weights, only when training starts ---------------------------------
    def setup(self, stage: str) -> None:
        if stage != "fit" or getattr(self, "_pretrained_loaded", False):
            return
        self._pretrained_loaded = True
        report = self.model.load_pretrained()
        if report is not None:
            print(f"pretrained weights: {report.summary()}")
        if self.hparams.class_weighting != "none":
            counts = self.trainer.datamodule.class_pixel_counts().double()
            freq = counts / counts.sum()
            present = freq > 0
            if self.hparams.class_weighting == "median_frequency":
                weights = freq[present].median() / freq.clamp(min=1e-12)
            else:
                weights = 1 / freq.clamp(min=1e-12).sqrt()
                weights = weights / weights[present].mean()
            self.class_weights.copy_(torch.where(present, weights, torch.ones_like(weights)).float())
            print("class weights: " + ", ".join(f"{c} {w:.2f}" for c, w in zip(self.class_names,
                                                                                self.class_weights.tolist())))

    def _layout(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.hparams.channels_last else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(self._layout(x))

    def loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        # float32 loss also under bf16 autocast
        return F.cross_entropy(logits.float(), target, weight=self.class_weights, ignore_index=IGNORE_INDEX)

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
        loss = self.loss(out, y)
        if aux is not None and self.hparams.aux_weight:
            aux_loss = self.loss(aux, y)
            self.log("train/aux_loss", aux_loss)
            loss = loss + self.hparams.aux_weight * aux_loss
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def _evaluate(self, stage: str, batch, batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        preds = logits.argmax(1)
        self.log(f"{stage}/loss", self.loss(logits, y), sync_dist=True, batch_size=len(x))
        self.metrics[f"{stage}_acc"].update(preds, y)
        self.metrics[f"{stage}_confusion"].update(preds, y)
        if stage == "test" and len(self.examples) < FIGURE_ROWS:
            k = FIGURE_ROWS - len(self.examples)
            self.examples.extend(zip(x[:k].cpu(), y[:k].cpu(), preds[:k].cpu()))

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

    def on_test_epoch_start(self) -> None:
        self.examples = []

    def test_step(self, batch, batch_idx):
        self._evaluate("test", batch, batch_idx)

    def on_test_epoch_end(self) -> None:
        iou = self._log_epoch("test")
        self.last_test_iou = iou.cpu()
        if self.trainer.is_global_zero and not self.trainer.sanity_checking:
            self.write_test_outputs(Path(self.trainer.default_root_dir) / "figures", iou.cpu())

    def write_test_outputs(self, folder: Path, iou: torch.Tensor) -> None:
        """Per-class IoU table (printed and CSV), IoU bars, image/truth/prediction rows, learning curves."""
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / "per_class_iou.csv", "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["class", "iou"])
            for name, value in zip(self.class_names, iou.tolist()):
                writer.writerow([name, "" if value != value else f"{value:.4f}"])
        print("per-class IoU: " + ", ".join(f"{n} {'-' if v != v else f'{v:.3f}'}"
                                            for n, v in zip(self.class_names, iou.tolist())))
        plot_class_iou(iou, self.class_names, self.info.palette, folder / "per_class_iou.png",
                       title=f"{self.info.name} test per-class IoU (mean {float(iou.nanmean()):.3f})")
        if self.examples:
            images, targets, preds = (torch.stack(t) for t in zip(*self.examples))
            plot_segmentation_rows(images, targets, preds, self.class_names, self.info.palette,
                                   folder / "test_predictions.png", title=f"{self.info.name} test images")
        plot_curves(csv_metric_files(self.trainer.default_root_dir), folder / "curves.png",
                    title=f"{self.hparams.approach} {self.hparams.arch if self.hparams.approach == 'torchvision' else self.hparams.backbone}")

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["class_names"] = self.class_names
        checkpoint["palette"] = [list(c) for c in self.info.palette]

    # --- optimisation ----------------------------------------------------------------------------------------------
    def configure_optimizers(self):
        hp = self.hparams
        backbone_ids = {id(p) for p in self.model.backbone.parameters()}
        groups = [{"params": [p for p in self.model.parameters() if id(p) in backbone_ids],
                   "lr": hp.lr * hp.backbone_lr_factor},
                  {"params": [p for p in self.model.parameters() if id(p) not in backbone_ids], "lr": hp.lr}]
        optimizer, _ = make_optimizer(groups, hp.optimizer, hp.lr, hp.weight_decay, "constant", 0, 0.0)
        if hp.schedule == "constant":
            return optimizer
        # Recomputed whenever training (re)starts, so a resumed run may be given more epochs than it began with.
        total = max(1, total_training_steps(self.trainer))
        warmup = max(1, int(total * (0.05 if hp.schedule == "cosine" else 0.2)))

        def factor(step: int) -> float:
            if step < warmup:
                return 0.1 + 0.9 * step / warmup
            progress = min(1.0, (step - warmup) / max(1, total - warmup))
            return 1e-3 + (1 - 1e-3) * 0.5 * (1 + math.cos(math.pi * progress))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
