"""`AutoencoderDataModule`: the few-labels story's splits of MNIST / Fashion-MNIST, held in memory.

From the 60,000 training images: a seeded, class-balanced labeled validation set (`val_size`), a seeded,
class-balanced labeled training set (`num_labels`), and the unlabeled rest, whose labels are never used.
`stage="pretrain"` trains on the unlabeled images (the autoencoder sees pixels only); `stage="finetune"` trains on
the labeled ones. Both validate on the labeled validation set and test on the full 10,000 test images.
The optional further stage adds pseudo-labeled images (`pseudo_labels`, written by `save_pseudo_labels`) to the
labeled training set.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

import lightning as L
import torch

from i2dl.data.augment import RandomAffine
from i2dl.data.idx import DATASETS, load_split
from i2dl.data.memory import InMemoryBatches, InMemoryEvalLoaders
from i2dl.errors import I2DLError

UNKNOWN_LABEL = -1  # what the pretraining loader yields instead of the unlabeled images' labels


class CleanTargetBatches(InMemoryBatches):
    """Pretraining batches `(augmented images, the same images unaugmented)`: the autoencoder learns to undo the
    random rotation/scale/shift (a denoising autoencoder whose corruption is geometric), so its codes describe the
    digit rather than its pose."""

    def make_batch(self, x: torch.Tensor, labels: torch.Tensor, generator: torch.Generator | None):
        return (x if generator is None else self.transform(x, generator)), x


class WithUnlabeled:
    """Fine-tuning batches for FixMatch: each labeled batch `(images, labels)` comes with `ratio` times as many
    unlabeled images (raw, in [0, 1]; their views are made by the module), cycling through the unlabeled set on its
    own epochs. An epoch is one pass over the labeled batches. Stateful like `InMemoryBatches`, so a run resumed
    mid-epoch continues with the same labeled and unlabeled batches."""

    def __init__(self, labeled: InMemoryBatches, unlabeled: InMemoryBatches) -> None:
        self.labeled, self.unlabeled = labeled, unlabeled
        self._unlabeled_iter = None

    def __len__(self) -> int:
        return len(self.labeled)

    def _next_unlabeled(self) -> torch.Tensor:
        if self._unlabeled_iter is not None:
            batch = next(self._unlabeled_iter, None)
            if batch is not None:
                return batch[0]
        self._unlabeled_iter = iter(self.unlabeled)
        return next(self._unlabeled_iter)[0]

    def __iter__(self):
        for x, y in self.labeled:
            yield x, y, self._next_unlabeled()

    def state_dict(self) -> dict:
        return {"labeled": self.labeled.state_dict(), "unlabeled": self.unlabeled.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.labeled.load_state_dict(state["labeled"])
        self.unlabeled.load_state_dict(state["unlabeled"])
        self._unlabeled_iter = None
        if self.unlabeled._start:  # continue the unlabeled epoch where it stopped
            self._unlabeled_iter = iter(self.unlabeled)


def split_key(dataset: str, num_labels, val_size: int, seed: int) -> dict:
    """What identifies a split: pseudo-labels are only valid for the split whose unlabeled images they label."""
    return {"dataset": dataset, "num_labels": num_labels, "val_size": val_size, "seed": seed}


def save_pseudo_labels(path, key: dict, indices: torch.Tensor, labels: torch.Tensor, confidence: torch.Tensor) -> None:
    """Write pseudo-labels (indices into the training images, predicted class, confidence) for split `key`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(
        {"split": key, "indices": indices.long(), "labels": labels.long(), "confidence": confidence.float()}, tmp
    )
    tmp.replace(path)


def load_pseudo_labels(
    path, key: dict, unlabeled: torch.Tensor, num_images: int, num_classes: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """`(indices, labels)` from a `save_pseudo_labels` file, checked against this split: one-line errors."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
        indices, labels, split = data["indices"], data["labels"], data["split"]
    except FileNotFoundError:
        raise I2DLError(f"{path}: pseudo-label file not found") from None
    except Exception as exc:  # not a torch file, or not ours
        raise I2DLError(f"{path}: not a pseudo-label file of `i2dl autoencoder run` ({type(exc).__name__})") from None
    if split != key:
        raise I2DLError(f"{path}: pseudo-labels for split {split}, but this run's split is {key}")
    in_range = len(indices) == 0 or (indices.min() >= 0 and indices.max() < num_images)
    if len(indices) != len(labels) or not in_range or _not_in(indices, unlabeled, num_images).any():
        raise I2DLError(f"{path}: pseudo-labels must name unlabeled images of this split, one label each")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise I2DLError(f"{path}: pseudo-label {int(labels.max())} outside 0..{num_classes - 1}")
    return indices, labels


def balanced_quotas(available: list[int], total: int, generator: torch.Generator) -> list[int]:
    """How many images to take per class: as equal as possible, never more than a class has.

    The remainder (and a short class's shortfall) goes to classes in a seeded random order.
    """
    quotas = [0] * len(available)
    left = total
    while left > 0:
        open_classes = [c for c in range(len(available)) if quotas[c] < available[c]]
        share = left // len(open_classes)
        if share == 0:  # fewer images left than open classes: one more each, in a seeded order
            order = torch.randperm(len(open_classes), generator=generator).tolist()
            for k in order[:left]:
                quotas[open_classes[k]] += 1
            break
        for c in open_classes:
            take = min(share, available[c] - quotas[c])
            quotas[c] += take
            left -= take
    return quotas


def balanced_subset(
    labels: torch.Tensor, pool: torch.Tensor, total: int, num_classes: int, generator: torch.Generator
) -> torch.Tensor:
    """`total` indices from `pool` (already in a seeded random order), balanced over the classes."""
    pool_labels = labels[pool].numpy()
    pool_np = pool.numpy()
    per_class = [torch.from_numpy(pool_np[pool_labels == c]) for c in range(num_classes)]
    quotas = balanced_quotas([len(p) for p in per_class], total, generator)
    chosen = torch.cat([p[:q] for p, q in zip(per_class, quotas)])
    return chosen[torch.randperm(len(chosen), generator=generator)]


def split_indices(
    labels: torch.Tensor, num_labels: int, val_size: int, seed: int, num_classes: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`(labeled, validation, unlabeled)` indices into the training images; impossible sizes are I2DLErrors."""
    n = len(labels)
    if num_labels < 0 or val_size < 0:
        raise I2DLError(f"num_labels={num_labels}, val_size={val_size}: sizes must not be negative")
    if val_size < num_classes:
        raise I2DLError(
            f"val_size={val_size}: the labeled validation set needs at least one image per class ({num_classes})"
        )
    if num_labels < num_classes:
        raise I2DLError(
            f"num_labels={num_labels}: need at least one labeled image per class ({num_classes}); "
            f"use {num_classes} or more"
        )
    if num_labels + val_size > n:
        raise I2DLError(
            f"num_labels={num_labels}: only {n - val_size} training images are left after the "
            f"validation set of {val_size} (of {n}); use num_labels <= {n - val_size}"
        )
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(n, generator=generator)
    val = balanced_subset(labels, order, val_size, num_classes, generator)
    rest = order[_not_in(order, val, n)]
    labeled = balanced_subset(labels, rest, num_labels, num_classes, generator)
    unlabeled = rest[_not_in(rest, labeled, n)]
    return labeled, val, unlabeled


def _not_in(index: torch.Tensor, taken: torch.Tensor, n: int) -> torch.Tensor:
    """Mask of the entries of `index` (values in 0..n-1) that are not in `taken` (faster than torch.isin)."""
    free = torch.ones(n, dtype=torch.bool)
    free[taken] = False
    return free[index]


class AutoencoderDataModule(InMemoryEvalLoaders, L.LightningDataModule):
    """Args:
    dataset: "mnist" or "fashion-mnist".
    data_dir: folder holding `<dataset>/` (default `$I2DL_DATA`, else `~/.cache/i2dl`).
    stage: "pretrain" (train on the unlabeled images) or "finetune" (train on the `num_labels` labeled ones).
    num_labels: size of the labeled training set (class-balanced, seeded); "all" = every non-validation image.
    val_size: size of the labeled validation set (class-balanced, seeded).
    seed: seed of the splits, the shuffling and the augmentation.
    batch_size: training batch size (capped at the training set's size).
    samples_per_epoch: a small labeled set is repeated (each copy augmented differently) until an epoch
        holds at least this many images, so that tiny sets do not pay a validation pass per optimiser step.
    augment: random rotation/scale/shift (`RandomAffine`) on training batches.
    pretrain_target: what the autoencoder reconstructs: "input" (the image it is given, augmented or not) or
        "clean" (the unaugmented image from the augmented one: a denoising autoencoder; needs `augment`).
    pseudo_labels: the optional further stage: a file of pseudo-labels for this split's unlabeled images
        (`save_pseudo_labels`, written by `i2dl autoencoder run --pseudo_labels`), added to the labeled
        training set in the fine-tuning stage.
    labeled_share: with pseudo-labels, the labeled images are repeated until they are about this share of the
        training set (so each batch still holds the real labels).
    unlabeled_ratio: FixMatch: every labeled training batch also carries `unlabeled_ratio` times as many
        unlabeled images (0: labels only).
    pretrain_on: "unlabeled" (the images left after the labeled and validation sets) or "train" (every one of
        the training images, labels unused): the same pretraining images for every N and seed, so one
        pretrained encoder serves a whole sweep.
    unlabeled_limit: use only this many unlabeled images (tests, quick looks); None = all.
    download: fetch missing files from the public mirrors.
    """

    def __init__(
        self,
        dataset: Literal["mnist", "fashion-mnist"] = "mnist",
        data_dir: str | None = None,
        stage: Literal["pretrain", "finetune"] = "finetune",
        num_labels: int | Literal["all"] = 100,
        val_size: int = 100,
        seed: int = 0,
        batch_size: int = 128,
        eval_batch_size: int = 1000,
        samples_per_epoch: int = 2000,
        augment: bool = True,
        max_rotation: float = 15.0,
        max_scale: float = 0.15,
        max_shift: float = 0.12,
        hflip: bool = False,
        pretrain_target: Literal["input", "clean"] = "input",
        pseudo_labels: str | None = None,
        labeled_share: float = 0.4,
        unlabeled_ratio: int = 0,
        pretrain_on: Literal["unlabeled", "train"] = "unlabeled",
        unlabeled_limit: int | None = None,
        download: bool = True,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if dataset not in DATASETS:
            raise I2DLError(f"unknown dataset {dataset!r}; choose from {', '.join(DATASETS)}")
        if stage not in ("pretrain", "finetune"):
            raise I2DLError(f"stage={stage!r}: choose 'pretrain' or 'finetune'")
        if not (num_labels == "all" or (isinstance(num_labels, int) and not isinstance(num_labels, bool))):
            raise I2DLError(f"num_labels={num_labels!r}: give a whole number or 'all'")
        if pretrain_target == "clean" and not augment:
            raise I2DLError(
                "pretrain_target='clean' reconstructs unaugmented images from augmented ones: it needs augment=true"
            )
        if not 0 < labeled_share < 1:
            raise I2DLError(f"labeled_share={labeled_share}: must be between 0 and 1")
        if unlabeled_ratio < 0:
            raise I2DLError(f"unlabeled_ratio={unlabeled_ratio}: must not be negative")
        self.classes = list(DATASETS[dataset].classes)
        self.labeled = self.val = self.unlabeled = self.test = self.pseudo = None

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def prepare_data(self) -> None:
        for split in ("train", "test"):
            load_split(self.hparams.dataset, split, self.hparams.data_dir, self.hparams.download)

    def setup(self, stage: str | None = None) -> None:
        hp = self.hparams
        if self.labeled is None:
            images, labels = load_split(hp.dataset, "train", hp.data_dir, hp.download)
            num_labels = len(images) - hp.val_size if hp.num_labels == "all" else hp.num_labels
            labeled, val, unlabeled = split_indices(labels, num_labels, hp.val_size, hp.seed, self.num_classes)
            if hp.unlabeled_limit is not None:
                unlabeled = unlabeled[: hp.unlabeled_limit]
            self.labeled = (images[labeled], labels[labeled])
            self.pseudo = None
            if hp.pseudo_labels:
                key = split_key(hp.dataset, hp.num_labels, hp.val_size, hp.seed)
                self.pseudo = load_pseudo_labels(hp.pseudo_labels, key, unlabeled, len(images), self.num_classes)
                self.pseudo = (images[self.pseudo[0]], self.pseudo[1])
            self.val = (images[val], labels[val])
            self.unlabeled = (images[unlabeled], torch.full((len(unlabeled),), UNKNOWN_LABEL, dtype=torch.long))
            self.unlabeled_indices = unlabeled  # into the training images: what pseudo-label files refer to
            pretrain = unlabeled if hp.pretrain_on == "unlabeled" else torch.arange(len(images))
            if hp.unlabeled_limit is not None:
                pretrain = pretrain[: hp.unlabeled_limit]
            self.pretrain = (images[pretrain], torch.full((len(pretrain),), UNKNOWN_LABEL, dtype=torch.long))
        if self.test is None and stage in (None, "test", "predict"):
            self.test = load_split(hp.dataset, "test", hp.data_dir, hp.download)

    def train_dataloader(self) -> InMemoryBatches:
        hp = self.hparams
        images, labels = self.pretrain if hp.stage == "pretrain" else self.labeled
        if len(images) == 0:
            raise I2DLError(
                f"no {'unlabeled' if hp.stage == 'pretrain' else 'labeled'} training images are left "
                f"with num_labels={hp.num_labels}, val_size={hp.val_size}"
            )
        repeats = max(1, math.ceil(hp.samples_per_epoch / len(images))) if hp.stage == "finetune" else 1
        pseudo = self.pseudo if hp.stage == "finetune" else None
        if pseudo is not None and len(pseudo[0]):
            share = hp.labeled_share / (1 - hp.labeled_share)
            repeats = max(repeats, math.ceil(share * len(pseudo[0]) / len(images)))
        if repeats > 1:
            images, labels = images.repeat(repeats, 1, 1), labels.repeat(repeats)
        if pseudo is not None:
            images, labels = torch.cat([images, pseudo[0]]), torch.cat([labels, pseudo[1]])
        transform = RandomAffine(hp.max_rotation, hp.max_scale, hp.max_shift, hp.hflip) if hp.augment else None
        rank, world = self._rank()
        batch_size = min(hp.batch_size, len(images) // world)
        batches = CleanTargetBatches if hp.stage == "pretrain" and hp.pretrain_target == "clean" else InMemoryBatches
        loader = batches(
            images,
            labels,
            batch_size=batch_size,
            shuffle=True,
            seed=hp.seed,
            drop_last=True,
            transform=transform,
            rank=rank,
            world_size=world,
        )
        if hp.stage == "pretrain" or not hp.unlabeled_ratio:
            return loader
        unlabeled = InMemoryBatches(
            *self.unlabeled,
            batch_size=batch_size * hp.unlabeled_ratio,
            shuffle=True,
            seed=hp.seed + 1,
            drop_last=True,
            rank=rank,
            world_size=world,
        )
        if len(unlabeled) == 0:
            raise I2DLError(
                f"unlabeled_ratio={hp.unlabeled_ratio}: fewer than {batch_size * hp.unlabeled_ratio} "
                f"unlabeled images are left"
            )
        return WithUnlabeled(loader, unlabeled)
