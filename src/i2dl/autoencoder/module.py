"""LightningModules of the lab: `AutoencoderModule` (stage 1, reconstruction) and `EncoderClassifier` (stage 2,
encoder + small head on the few labels, from a pretrained encoder or from scratch)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import lightning as L
import torch
import torch.nn.functional as F
from torchmetrics.classification import MulticlassAccuracy

from i2dl.autoencoder.model import Autoencoder, Classifier, ContrastiveNet, resolved_width
from i2dl.autoencoder.semi import (
    align_distribution,
    contrastive_views,
    fixmatch_loss,
    nt_xent,
    strong_augment,
    weak_augment,
)
from i2dl.checkpoints import check_state_dict_compatible
from i2dl.checkpoints import load as load_checkpoint
from i2dl.errors import CheckpointError
from i2dl.training import (
    CompatibleCheckpoints,
    CrossEntropySteps,
    lightning_optimizers,
    make_optimizer,
    total_training_steps,
)

GRID_IMAGES = 16


def _optimizer(param_groups: list[dict], lr: float, weight_decay: float, schedule: str, total_steps: int):
    # AdamW; at least 20 steps: OneCycleLR cannot split fewer into warm-up and annealing (tiny smoke runs)
    return lightning_optimizers(
        *make_optimizer(param_groups, "adamw", lr, weight_decay, schedule, max(int(total_steps), 20), pct_start=0.1)
    )


def _tensorboard(trainer):
    for logger in trainer.loggers:
        if hasattr(logger.experiment, "add_image"):
            return logger.experiment
    return None


class AutoencoderModule(CompatibleCheckpoints, L.LightningModule):
    """Stage 1: an autoencoder trained to reconstruct the unlabeled images (labels are never looked at).

    Args:
        arch: "fc" (the course's fully connected encoder/decoder) or "conv" (ours).
        latent_dim: size of the code the encoder produces (the course uses 20).
        width: conv channels of the first stage ("conv", default 16) or units of the first hidden layer ("fc",
            default 256).
        loss: "mse" (the course's) or "bce" (per-pixel binary cross-entropy) reconstruction loss.
        lr, weight_decay, schedule: AdamW; "onecycle" warms up to `lr` and anneals to ~0.
    Logs `train/loss`, `val/loss`, `test/loss` (the reconstruction loss) and, each validation, a grid of validation
    images and their reconstructions to TensorBoard. Test steps return inputs, codes and reconstructions for
    `AutoencoderFigures` (`figures/reconstructions.png`, `figures/latent_pca.png`).
    """

    def __init__(
        self,
        arch: Literal["fc", "conv"] = "conv",
        latent_dim: int = 32,
        width: int | None = None,
        loss: Literal["mse", "bce"] = "mse",
        lr: float = 2e-3,
        weight_decay: float = 0.0,
        schedule: Literal["constant", "onecycle"] = "onecycle",
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.model = Autoencoder(arch, latent_dim, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def reconstruction_loss(self, x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if self.hparams.loss == "bce":
            return F.binary_cross_entropy(x_hat.clamp(1e-6, 1 - 1e-6), x)
        return F.mse_loss(x_hat, x)

    def training_step(self, batch, batch_idx):
        # (images, placeholder labels -1, never used), or (augmented images, clean images) to reconstruct
        x, target = batch
        loss = self.reconstruction_loss(self(x), target if target.dim() == x.dim() else x)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, _ = batch
        x_hat = self(x)
        self.log("val/loss", self.reconstruction_loss(x_hat, x), prog_bar=True, sync_dist=True)
        if batch_idx == 0 and not self.trainer.sanity_checking:
            self._log_grid(x[:GRID_IMAGES], x_hat[:GRID_IMAGES])

    def _log_grid(self, x: torch.Tensor, x_hat: torch.Tensor) -> None:
        writer = _tensorboard(self.trainer) if self.trainer.is_global_zero else None
        if writer is None:
            return
        import torchvision

        grid = torchvision.utils.make_grid(torch.cat([x, x_hat]).cpu(), nrow=len(x), pad_value=0.5)
        writer.add_image("val/reconstructions", grid, self.global_step)

    def test_step(self, batch, batch_idx):
        x, y = batch
        z = self.model.encoder(x)
        x_hat = self.model.decoder(z)
        self.log("test/loss", self.reconstruction_loss(x_hat, x), sync_dist=True)
        return {"images": x, "reconstructions": x_hat, "codes": z, "labels": y}

    def configure_optimizers(self):
        hp = self.hparams
        total = total_training_steps(self.trainer) if hp.schedule == "onecycle" else 0
        return _optimizer([{"params": self.parameters(), "lr": hp.lr}], hp.lr, hp.weight_decay, hp.schedule, total)


def step_generator(seed: int, step: int) -> torch.Generator:
    """The generator of one training step's random views: the same seed and step give the same views, so a run
    resumed from a checkpoint draws what an uninterrupted run would have drawn."""
    return torch.Generator().manual_seed((seed * 1_000_003 + step) & 0x7FFF_FFFF)


class ContrastiveModule(CompatibleCheckpoints, L.LightningModule):
    """Stage 1, the stronger objective: contrastive pretraining (SimCLR) of the same encoder on the unlabeled images.

    Each image is seen as two random strong views (`i2dl.autoencoder.semi.strong_augment`); the encoder and a
    projection head are trained with NT-Xent so that the two views of an image match and differ from the rest of
    the batch. Labels are never looked at. Only the encoder goes on to the classifier.

    Args:
        arch, latent_dim, width: the encoder (as in `AutoencoderModule`, so either can start a classifier).
        projection_hidden, projection_dim: the projection head.
        temperature: NT-Xent's temperature.
        lr, weight_decay, schedule: AdamW; "onecycle" warms up to `lr` and anneals to ~0.
        view_strength: scales the views' distortions (`i2dl.autoencoder.semi.strong_augment`).
        seed: seeds the random views of each step.
    Logs `train/loss`, `val/loss`, `test/loss` (NT-Xent; validation and test views are fixed per batch).
    """

    def __init__(
        self,
        arch: Literal["fc", "conv"] = "conv",
        latent_dim: int = 32,
        width: int | None = None,
        projection_hidden: int = 128,
        projection_dim: int = 64,
        temperature: float = 0.5,
        lr: float = 2e-3,
        weight_decay: float = 1e-4,
        schedule: Literal["constant", "onecycle"] = "onecycle",
        view_strength: float = 1.0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.model = ContrastiveNet(arch, latent_dim, width, projection_hidden, projection_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.encoder(x)

    def contrastive_loss(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        v1, v2 = contrastive_views(x.cpu(), generator, self.hparams.view_strength)
        projected = self.model(torch.cat([v1, v2]).to(x.device))
        z1, z2 = projected.chunk(2)
        return nt_xent(z1, z2, self.hparams.temperature)

    def training_step(self, batch, batch_idx):
        loss = self.contrastive_loss(batch[0], step_generator(self.hparams.seed, self.global_step))
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        loss = self.contrastive_loss(batch[0], step_generator(-1, batch_idx))
        self.log("val/loss", loss, prog_bar=True, sync_dist=True)

    def test_step(self, batch, batch_idx):
        x, y = batch
        self.log("test/loss", self.contrastive_loss(x, step_generator(-2, batch_idx)), sync_dist=True)
        return {"images": x, "codes": self.model.encoder(x), "labels": y}

    def configure_optimizers(self):
        hp = self.hparams
        total = total_training_steps(self.trainer) if hp.schedule == "onecycle" else 0
        return _optimizer([{"params": self.parameters(), "lr": hp.lr}], hp.lr, hp.weight_decay, hp.schedule, total)


def load_pretrained_encoder(
    path: str | Path, arch: str, latent_dim: int, width: int | None = None
) -> dict[str, torch.Tensor]:
    """The encoder weights of an `AutoencoderModule` or `ContrastiveModule` checkpoint, checked against the
    classifier's encoder."""
    checkpoint = load_checkpoint(path)
    hparams = checkpoint.get("hyper_parameters") or {}
    if "state_dict" not in checkpoint or "arch" not in hparams or "latent_dim" not in hparams:
        raise CheckpointError(
            f"{path}: not an autoencoder checkpoint (nor a contrastive encoder) of `i2dl autoencoder` "
            "(no arch/latent_dim hyper-parameters)"
        )
    found = {
        "arch": hparams["arch"],
        "latent_dim": hparams["latent_dim"],
        "width": resolved_width(hparams["arch"], hparams.get("width")),
    }
    wanted = {"arch": arch, "latent_dim": latent_dim, "width": resolved_width(arch, width)}
    differ = [k for k in found if found[k] != wanted[k]]
    if differ:
        raise CheckpointError(
            f"{path}: the encoder checkpoint has "
            + ", ".join(f"{k}={found[k]!r}" for k in differ)
            + " but this classifier has "
            + ", ".join(f"{k}={wanted[k]!r}" for k in differ)
            + "; set "
            + ", ".join(f"--model.{k}" for k in differ)
            + " to match"
        )
    prefix = "model.encoder."
    weights = {k[len(prefix) :]: v for k, v in checkpoint["state_dict"].items() if k.startswith(prefix)}
    if not weights:
        raise CheckpointError(f"{path}: holds no encoder weights ({prefix}*)")
    return weights


class EncoderClassifier(CrossEntropySteps, CompatibleCheckpoints, L.LightningModule):
    """Stage 2: encoder + small head trained with cross-entropy on the few labels.

    Args:
        arch, latent_dim, width: the encoder (must match the pretrained checkpoint's).
        encoder_ckpt: an `AutoencoderModule` checkpoint whose encoder starts the classifier; None = from scratch.
        init_ckpt: an `EncoderClassifier` checkpoint whose weights (encoder and head) start this one instead (the
            optional pseudo-label stage goes on from the fine-tuned classifier); must match arch/latent/width.
        encoder_mode: "full" (fine-tune everything at `lr`), "lower_lr" (encoder at `lr * encoder_lr_ratio`),
            "frozen" (only the head learns; the encoder, batch-norm statistics included, stays as pretrained).
        lr, weight_decay, schedule, label_smoothing: AdamW and cross-entropy settings.
        head_hidden, dropout: the head (latent -> hidden -> classes).
        unlabeled_weight, threshold: FixMatch, used when the training batches also carry unlabeled images
            (`AutoencoderDataModule(unlabeled_ratio > 0)`): the weight of the unlabeled loss and the confidence
            a weak view's prediction needs to become the strong view's target.
        distribution_alignment: align the weak views' predictions with the (balanced) class distribution before
            taking pseudo-labels, using a running average of the predictions (`alignment_momentum`).
        strong_strength: scales the strong view's distortions (`i2dl.autoencoder.semi.strong_augment`).
        seed: seeds each step's weak and strong views of the unlabeled images.
    Logs `train/loss`, `val/loss`, `val/acc`, `test/loss`, `test/acc`; with unlabeled images also
    `train/loss_labeled`, `train/loss_unlabeled` and `train/confident` (share of unlabeled images above the
    threshold).
    """

    def __init__(
        self,
        arch: Literal["fc", "conv"] = "conv",
        latent_dim: int = 32,
        width: int | None = None,
        num_classes: int = 10,
        encoder_ckpt: str | None = None,
        init_ckpt: str | None = None,
        encoder_mode: Literal["full", "lower_lr", "frozen"] = "lower_lr",
        encoder_lr_ratio: float = 0.1,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        schedule: Literal["constant", "onecycle"] = "onecycle",
        label_smoothing: float = 0.1,
        head_hidden: int = 64,
        dropout: float = 0.3,
        unlabeled_weight: float = 1.0,
        threshold: float = 0.95,
        distribution_alignment: bool = False,
        alignment_momentum: float = 0.99,
        strong_strength: float = 1.0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.model = Classifier(arch, latent_dim, num_classes, hidden=head_hidden, dropout=dropout, width=width)
        self.encoder_loaded = False
        if encoder_mode == "frozen":
            self.model.encoder.requires_grad_(False)
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes, average="micro")
        # the running average of the weak views' predictions (distribution alignment); not saved, so classifiers
        # written before it existed still load (a resumed run starts it uniform again; it adapts within ~100 steps)
        self.register_buffer("prediction_average", torch.full((num_classes,), 1.0 / num_classes), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def load_encoder(self) -> None:
        """Copy the starting weights in (once): `init_ckpt`'s whole classifier, else `encoder_ckpt`'s encoder.
        A checkpoint of this classifier, when resuming or testing, is restored after this and wins; rebuilding from
        a classifier checkpoint never reads `encoder_ckpt` or `init_ckpt`."""
        hp = self.hparams
        if hp.init_ckpt and not self.encoder_loaded:
            state = load_checkpoint(hp.init_ckpt).get("state_dict", {})
            check_state_dict_compatible(self.state_dict(), state, str(hp.init_ckpt))
            self.load_state_dict(state)
            self.encoder_loaded = True
        if hp.encoder_ckpt and not self.encoder_loaded:
            weights = load_pretrained_encoder(hp.encoder_ckpt, hp.arch, hp.latent_dim, hp.width)
            check_state_dict_compatible(self.model.encoder.state_dict(), weights, str(hp.encoder_ckpt))
            self.model.encoder.load_state_dict(weights)
            self.encoder_loaded = True

    def setup(self, stage: str) -> None:
        if stage == "fit":
            self.load_encoder()

    def training_step(self, batch, batch_idx):
        if len(batch) == 2:  # labels only
            return super().training_step(batch, batch_idx)
        x, y, unlabeled = batch  # FixMatch: labeled images (augmented) and unlabeled ones (raw)
        hp = self.hparams
        generator = step_generator(hp.seed, self.global_step)
        weak = weak_augment(unlabeled.cpu(), generator).to(x.device)
        strong = strong_augment(unlabeled.cpu(), generator, hp.strong_strength).to(x.device)
        with torch.no_grad():  # the weak view only provides targets: a forward pass without backward is enough
            weak_logits = self(weak)
        labeled, strong_logits = self(torch.cat([x, strong])).split([len(x), len(strong)])
        loss_labeled = F.cross_entropy(labeled.float(), y, label_smoothing=hp.label_smoothing)
        weak_probs = weak_logits.float().softmax(-1)
        if hp.distribution_alignment:
            momentum = hp.alignment_momentum
            self.prediction_average.mul_(momentum).add_(weak_probs.mean(0), alpha=1 - momentum)
            weak_probs = align_distribution(weak_probs, self.prediction_average)
        loss_unlabeled, confident, _ = fixmatch_loss(weak_logits, strong_logits, hp.threshold, weak_probs)
        loss = loss_labeled + hp.unlabeled_weight * loss_unlabeled
        self.log_dict(
            {"train/loss_labeled": loss_labeled, "train/loss_unlabeled": loss_unlabeled, "train/confident": confident}
        )
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def on_train_epoch_start(self) -> None:
        if self.hparams.encoder_mode == "frozen":
            self.model.encoder.eval()  # keep the pretrained batch-norm statistics

    def configure_optimizers(self):
        hp = self.hparams
        head = {"params": self.model.head.parameters(), "lr": hp.lr}
        groups = [head]
        if hp.encoder_mode != "frozen":
            ratio = hp.encoder_lr_ratio if (hp.encoder_mode == "lower_lr" and hp.encoder_ckpt) else 1.0
            groups.insert(0, {"params": self.model.encoder.parameters(), "lr": hp.lr * ratio})
        total = total_training_steps(self.trainer) if hp.schedule == "onecycle" else 0
        return _optimizer(groups, hp.lr, hp.weight_decay, hp.schedule, total)
