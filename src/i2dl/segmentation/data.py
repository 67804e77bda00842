"""`SegmentationDataModule`: MSRC-v2 or CamVid held in memory, joint augmentation, padded evaluation batches."""

from __future__ import annotations

from typing import Literal

import lightning as L
import torch
from torch.utils.data import DataLoader

from i2dl.data import resolve_data_dir
from i2dl.errors import DataError
from i2dl.segmentation.datasets import (
    DATASETS,
    SegmentationDataset,
    class_pixel_counts,
    eval_transform,
    load_segmentation_split,
    pad_collate,
    train_transform,
)


class SegmentationDataModule(L.LightningDataModule):
    """Args:
    dataset: "msrc_v2" (23 classes + void) or "camvid" (11 classes + Unlabelled).
    data_dir: folder holding `msrc_v2/` or `camvid/` (default `$I2DL_DATA`, else `~/.cache/i2dl`).
    batch_size, eval_batch_size: images per training / evaluation batch (evaluation pads to the largest image).
    train_size: (height, width) of the random resized crops used for training.
    crop_scale: area range of those crops, as fractions of the image.
    hflip, color_jitter: the other joint augmentations (0 = no colour jitter).
    eval_size: resize evaluation images (and, nearest-neighbour, masks) to (height, width); None = full size,
        as the benchmarks use. Tests use a small size to stay fast.
    void_rare_classes: MSRC-v2 only: horse and mountain count as void, as in I2DL.
    num_workers: DataLoader workers for training batches (0 = in the main process; augmentation is cheap next
        to the network on a CPU, so workers only help where spare cores exist).
    train_subset, eval_subset: use only the first N images of a split (tests, quick looks).
    train_on: "train", or "trainval" (train and validation images together: the usual protocol for a final
        CamVid model, whose number is then read on the test split; validation scores are then not held out).
    """

    def __init__(
        self,
        dataset: Literal["msrc_v2", "camvid"] = "msrc_v2",
        data_dir: str | None = None,
        batch_size: int = 8,
        eval_batch_size: int = 8,
        train_size: tuple[int, int] = (224, 224),
        crop_scale: tuple[float, float] = (0.35, 1.0),
        hflip: bool = True,
        color_jitter: float = 0.3,
        eval_size: tuple[int, int] | None = None,
        void_rare_classes: bool = True,
        num_workers: int = 0,
        train_subset: int | None = None,
        eval_subset: int | None = None,
        seed: int = 0,
        train_on: Literal["train", "trainval"] = "train",
    ) -> None:
        super().__init__()
        if dataset not in DATASETS:
            raise DataError(f"unknown dataset {dataset!r}; choose from {', '.join(DATASETS)}")
        self.save_hyperparameters()
        self.info = DATASETS[dataset]
        self.classes = list(self.info.classes)
        self.splits: dict[str, list] = {}

    @property
    def root(self):
        root = resolve_data_dir(self.hparams.data_dir) / self.hparams.dataset
        if not root.is_dir():
            raise DataError(f"{root}: no such folder; put {self.hparams.dataset} there or pass --data.data_dir")
        return root

    def load(self, split: str) -> list:
        if split not in self.splits:
            hp = self.hparams
            limit = hp.train_subset if split == "train" else hp.eval_subset
            self.splits[split] = load_segmentation_split(
                hp.dataset, self.root, split, limit=limit, void_rare_classes=hp.void_rare_classes
            )
        return self.splits[split]

    def setup(self, stage: str | None = None) -> None:
        wanted = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",)}.get(stage or "", SPLITS_ALL)
        for split in wanted:
            self.load(split)

    def training_images(self) -> list:
        images = self.load("train")
        return images + self.load("val") if self.hparams.train_on == "trainval" else images

    def class_pixel_counts(self) -> torch.Tensor:
        return class_pixel_counts(self.training_images(), self.info.num_classes)

    def train_dataloader(self) -> DataLoader:
        hp = self.hparams
        dataset = SegmentationDataset(
            self.training_images(), train_transform(hp.train_size, hp.crop_scale, hp.hflip, hp.color_jitter)
        )
        generator = torch.Generator().manual_seed(hp.seed)
        return DataLoader(
            dataset,
            batch_size=hp.batch_size,
            shuffle=True,
            drop_last=len(dataset) > hp.batch_size,
            num_workers=hp.num_workers,
            persistent_workers=hp.num_workers > 0,
            generator=generator,
        )

    def _eval_loader(self, split: str) -> DataLoader:
        hp = self.hparams
        dataset = SegmentationDataset(self.load(split), eval_transform(hp.eval_size))
        return DataLoader(dataset, batch_size=hp.eval_batch_size, collate_fn=pad_collate)

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")


SPLITS_ALL = ("train", "val", "test")
