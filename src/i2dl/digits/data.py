"""`DigitsDataModule`: MNIST or Fashion-MNIST in memory, a seeded train/validation split, sliced batches."""

from __future__ import annotations

from typing import Literal

import lightning as L
import torch

from i2dl.data.augment import RandomAffine
from i2dl.data.idx import DATASETS, load_split
from i2dl.data.memory import InMemoryBatches, InMemoryEvalLoaders


class DigitsDataModule(InMemoryEvalLoaders, L.LightningDataModule):
    """MNIST-family data as uint8 tensors in memory.

    Args:
        dataset: "mnist" or "fashion-mnist".
        data_dir: folder holding `<dataset>/` with the IDX files (default `$I2DL_DATA`, else `~/.cache/i2dl`).
        batch_size: training batch size; evaluation uses `eval_batch_size`.
        val_size: images held out of the 60,000 training images for validation (seeded split).
        seed: seed of the split, of the shuffling and of the augmentation.
        augment: random rotation/scale/shift on training batches (and horizontal flips with `hflip`).
        train_subset: use only this many training images (tests, quick looks); None = all.
        download: fetch missing files from the public mirrors.
    """

    def __init__(
        self,
        dataset: Literal["mnist", "fashion-mnist"] = "mnist",
        data_dir: str | None = None,
        batch_size: int = 128,
        eval_batch_size: int = 1000,
        val_size: int = 5000,
        seed: int = 0,
        augment: bool = False,
        max_rotation: float = 10.0,
        max_scale: float = 0.1,
        max_shift: float = 0.1,
        hflip: bool = False,
        train_subset: int | None = None,
        download: bool = True,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.classes = list(DATASETS[dataset].classes)
        self.train = self.val = self.test = None

    def prepare_data(self) -> None:
        for split in ("train", "test"):  # finds or downloads the files once, before any process splits work
            load_split(self.hparams.dataset, split, self.hparams.data_dir, self.hparams.download)

    def setup(self, stage: str | None = None) -> None:
        hp = self.hparams
        if self.train is None:
            images, labels = load_split(hp.dataset, "train", hp.data_dir, hp.download)
            order = torch.randperm(len(images), generator=torch.Generator().manual_seed(hp.seed))
            val_idx, train_idx = order[: hp.val_size], order[hp.val_size :]
            if hp.train_subset is not None:
                train_idx = train_idx[: hp.train_subset]
            self.train = (images[train_idx], labels[train_idx])
            self.val = (images[val_idx], labels[val_idx])
        if self.test is None and stage in (None, "test", "predict"):
            self.test = load_split(hp.dataset, "test", hp.data_dir, hp.download)

    def train_dataloader(self) -> InMemoryBatches:
        hp = self.hparams
        transform = RandomAffine(hp.max_rotation, hp.max_scale, hp.max_shift, hp.hflip) if hp.augment else None
        rank, world = self._rank()
        return InMemoryBatches(
            *self.train,
            batch_size=hp.batch_size,
            shuffle=True,
            seed=hp.seed,
            drop_last=True,
            transform=transform,
            rank=rank,
            world_size=world,
        )
