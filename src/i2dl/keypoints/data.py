"""`FacialKeypointsDataModule`: Kaggle-layout faces in memory, sliced batches, keypoint-aware augmentation.

Batches are `(images float (B, 1, 96, 96) in [0, 1], targets float (B, 15, 3))`, where `targets[..., :2]` are
the keypoints in normalised coordinates (pixel - 48) / 48 and `targets[..., 2]` is 1 where the keypoint is given.
"""

from __future__ import annotations

from typing import Literal

import lightning as L
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from i2dl.data import resolve_data_dir
from i2dl.data.memory import InMemoryBatches
from i2dl.keypoints.kaggle_csv import IMAGE_SIZE, KEYPOINT_NAMES, FaceKeypoints, read_keypoints_csv, split_path

HALF = IMAGE_SIZE / 2


def _mirror_name(name: str) -> str:
    return name.replace("left", "\0").replace("right", "left").replace("\0", "right")


# FLIP_PERMUTATION[k] = index of the keypoint that keypoint k becomes after a horizontal flip (the subject's left
# eye lands where the right one was, so it must be relabelled "right").
FLIP_PERMUTATION = tuple(KEYPOINT_NAMES.index(_mirror_name(name)) for name in KEYPOINT_NAMES)


def to_normalised(pixels: torch.Tensor) -> torch.Tensor:
    """Pixel coordinates -> the course's [-1, 1] coordinates, (p - 48) / 48."""
    return (pixels - HALF) / HALF


def to_pixels(normalised: torch.Tensor) -> torch.Tensor:
    return normalised * HALF + HALF


def flip_keypoints_left_right(keypoints: torch.Tensor, width: int = IMAGE_SIZE) -> torch.Tensor:
    """Mirror pixel keypoints (..., 15, 2) like `torchvision`'s horizontal flip (x -> width - 1 - x) and swap the
    left/right names so that the result describes the flipped image."""
    flipped = TF.horizontal_flip_keypoints(keypoints, canvas_size=(IMAGE_SIZE, width))
    return flipped[..., list(FLIP_PERMUTATION), :]


class HorizontalFlipKeypoints(v2.Transform):
    """`v2.RandomHorizontalFlip` that also relabels the keypoints (left <-> right).

    `offset` (pixels) is added to every flipped x: torchvision mirrors x -> W - 1 - x, right when the labels are
    mirror-consistent with the pixels; a dataset whose labels sit off-centre needs x -> W - 1 + offset - x
    (`benchmarks/keypoints_flip.py` measures it).
    """

    def __init__(self, p: float = 0.5, offset: float = 0.0) -> None:
        super().__init__()
        self.p, self.offset = p, offset

    def forward(self, *inputs):
        if torch.rand(1) >= self.p:
            return inputs if len(inputs) > 1 else inputs[0]
        return super().forward(*inputs)

    def transform(self, inpt, params):
        if isinstance(inpt, tv_tensors.KeyPoints):
            flipped = TF.horizontal_flip(inpt)[..., list(FLIP_PERMUTATION), :]
            if self.offset:
                flipped = flipped + torch.tensor([self.offset, 0.0], dtype=flipped.dtype)
            return tv_tensors.wrap(flipped, like=inpt)
        return TF.horizontal_flip(inpt)


class KeypointAugment:
    """Random flip (with left/right relabelling), rotation, scale, shift, brightness and contrast.

    Built from `torchvision.transforms.v2` on `tv_tensors.Image` + `tv_tensors.KeyPoints`, so the image and its
    keypoints always get the same geometry (bilinear resampling, so sub-pixel positions survive). Called on a batch
    `(images (B, 1, H, W), pixel keypoints (B, 15, 2), visible (B, 15))` with a generator that makes it
    reproducible; a missing keypoint travels as NaN, so its visibility follows it through the flip's relabelling.
    Each group of `group_size` consecutive faces (in shuffled order) shares one random draw.
    """

    def __init__(
        self,
        hflip: bool = True,
        max_rotation: float = 10.0,
        max_scale: float = 0.1,
        max_shift: float = 0.05,
        brightness: float = 0.2,
        contrast: float = 0.2,
        group_size: int = 8,
        hflip_offset: float = 0.0,
    ) -> None:
        self.group_size = group_size
        steps: list = [HorizontalFlipKeypoints(0.5, hflip_offset)] if hflip else []
        if max_rotation or max_scale or max_shift:
            steps.append(
                v2.RandomAffine(
                    degrees=max_rotation,
                    translate=(max_shift, max_shift),
                    scale=(1 - max_scale, 1 + max_scale),
                    interpolation=v2.InterpolationMode.BILINEAR,
                )
            )
        if brightness or contrast:
            steps.append(v2.ColorJitter(brightness=brightness, contrast=contrast))
        self.pipeline = v2.Compose(steps)

    def __call__(
        self, images: torch.Tensor, keypoints: torch.Tensor, visible: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out_images, out_points = [], []
        canvas = tuple(images.shape[-2:])
        keypoints = torch.where(visible.unsqueeze(-1), keypoints, torch.nan)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(torch.randint(2**62, (1,), generator=generator)))
            # faces of a group share one draw: v2's per-call overhead, not the pixels, dominates at 96x96
            for start in range(0, len(images), self.group_size):
                image, points = self.pipeline(
                    tv_tensors.Image(images[start : start + self.group_size]),
                    tv_tensors.KeyPoints(keypoints[start : start + self.group_size], canvas_size=canvas),
                )
                out_images.append(image.as_subclass(torch.Tensor))
                out_points.append(points.as_subclass(torch.Tensor))
        points = torch.cat(out_points)
        visible = points.isfinite().all(-1)
        return torch.cat(out_images).clamp_(0, 1), torch.nan_to_num(points, nan=0.0), visible


def pack_targets(keypoints_px: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
    """(B, 15, 3): normalised x, y and a 0/1 visibility (missing keypoints hold 0, 0)."""
    coords = torch.where(visible.unsqueeze(-1), to_normalised(keypoints_px), torch.zeros_like(keypoints_px))
    return torch.cat([coords, visible.unsqueeze(-1).to(coords.dtype)], dim=-1)


class KeypointBatches(InMemoryBatches):
    """`InMemoryBatches` whose labels are pixel keypoints + visibility `(N, 15, 3)` and whose augmentation moves
    the keypoints with the image; yields `(images, targets)` as described in the module docstring."""

    def make_batch(self, x: torch.Tensor, labels: torch.Tensor, generator: torch.Generator | None):
        points, visible = labels[..., :2], labels[..., 2] > 0.5
        if generator is not None:
            x, points, visible = self.transform(x, points, visible, generator)
        return x, pack_targets(points, visible)


def _labels(faces: FaceKeypoints) -> torch.Tensor:
    return torch.cat([faces.keypoints, faces.visible.unsqueeze(-1).float()], dim=-1)


class FacialKeypointsDataModule(L.LightningDataModule):
    """Kaggle-layout facial keypoints from `<data_dir>/facial_keypoints/{training,val,test}.csv[.gz]`.

    Args:
        data_dir: folder holding `facial_keypoints/` (default `$I2DL_DATA`, else `~/.cache/i2dl`).
        missing: "drop" faces with any keypoint missing (the course's choice) or "mask" them out of the loss.
        val_size: when there is no `val.csv[.gz]`, hold out this many training faces (seeded) instead.
        augment: flip (with left/right relabelling), rotation, scale, shift, brightness, contrast.
        hflip: include the horizontal flip in `augment`; hflip_offset: pixels added to a flipped x (see
            `HorizontalFlipKeypoints`).
        train_subset: use only the first this-many training faces (tests, quick looks); None = all.
    """

    def __init__(
        self,
        data_dir: str | None = None,
        missing: Literal["drop", "mask"] = "drop",
        batch_size: int = 64,
        eval_batch_size: int = 256,
        val_size: int = 400,
        seed: int = 0,
        augment: bool = True,
        hflip: bool = True,
        max_rotation: float = 10.0,
        max_scale: float = 0.1,
        max_shift: float = 0.05,
        brightness: float = 0.2,
        contrast: float = 0.2,
        train_subset: int | None = None,
        hflip_offset: float = 0.0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.train = self.val = self.test = None

    @property
    def folder(self):
        return resolve_data_dir(self.hparams.data_dir)

    def setup(self, stage: str | None = None) -> None:
        hp = self.hparams
        if self.train is None and stage in (None, "fit", "validate"):
            train = read_keypoints_csv(split_path(self.folder, "train"), hp.missing)
            try:
                val_path = split_path(self.folder, "val")
            except Exception:
                val_path = None
            if val_path is not None:
                val = read_keypoints_csv(val_path, hp.missing)
            else:  # Kaggle ships only training.csv: hold out a seeded share of it
                order = torch.randperm(len(train), generator=torch.Generator().manual_seed(hp.seed))
                val, train = train.subset(order[: hp.val_size]), train.subset(order[hp.val_size :])
            if hp.train_subset is not None:
                train = train.subset(slice(0, hp.train_subset))
            self.train, self.val = train, val
        if self.test is None and stage in (None, "test", "predict"):
            self.test = read_keypoints_csv(split_path(self.folder, "test"), hp.missing)

    def _rank(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def train_dataloader(self) -> KeypointBatches:
        hp = self.hparams
        transform = (
            KeypointAugment(
                hp.hflip,
                hp.max_rotation,
                hp.max_scale,
                hp.max_shift,
                hp.brightness,
                hp.contrast,
                hflip_offset=hp.hflip_offset,
            )
            if hp.augment
            else None
        )
        rank, world = self._rank()
        return KeypointBatches(
            self.train.images,
            _labels(self.train),
            batch_size=hp.batch_size,
            shuffle=True,
            seed=hp.seed,
            drop_last=True,
            transform=transform,
            rank=rank,
            world_size=world,
        )

    def _eval_loader(self, faces: FaceKeypoints) -> KeypointBatches:
        rank, world = self._rank()
        return KeypointBatches(
            faces.images, _labels(faces), batch_size=self.hparams.eval_batch_size, rank=rank, world_size=world
        )

    def val_dataloader(self) -> KeypointBatches:
        return self._eval_loader(self.val)

    def test_dataloader(self) -> KeypointBatches:
        return self._eval_loader(self.test)
