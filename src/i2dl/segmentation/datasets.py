"""Semantic segmentation data: MSRC-v2 (course layout, colour-coded targets) and CamVid (SegNet layout).

Both are read into memory once as uint8 tensors (591 and 701 small photos) and returned as
`(image uint8 (3, H, W), mask uint8 (H, W))` with class ids 0..C-1 and `IGNORE_INDEX` (255) for void /
Unlabelled. Joint augmentation uses `torchvision.transforms.v2` with `tv_tensors.Mask`, so geometric transforms
resize the mask with nearest-neighbour sampling (a label is never interpolated) and colour transforms skip it.
Every bad input is a one-line `DataError` naming the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torchvision import tv_tensors
from torchvision.transforms import v2

from i2dl.errors import DataError

IGNORE_INDEX = 255
IMAGE_SUFFIXES = (".bmp", ".png", ".webp", ".jpg", ".jpeg")

# MSRC-v2: the official colour of each class; palette index = class id + 1, index 0 is void (black).
MSRC_CLASSES = (
    "building",
    "grass",
    "tree",
    "cow",
    "horse",
    "sheep",
    "sky",
    "mountain",
    "aeroplane",
    "water",
    "face",
    "car",
    "bicycle",
    "flower",
    "sign",
    "bird",
    "book",
    "chair",
    "road",
    "cat",
    "dog",
    "body",
    "boat",
)
MSRC_VOID_RGB = (0, 0, 0)
MSRC_PALETTE = (
    (128, 0, 0),
    (0, 128, 0),
    (128, 128, 0),
    (0, 0, 128),
    (128, 0, 128),
    (0, 128, 128),
    (128, 128, 128),
    (64, 0, 0),
    (192, 0, 0),
    (64, 128, 0),
    (192, 128, 0),
    (64, 0, 128),
    (192, 0, 128),
    (64, 128, 128),
    (192, 128, 128),
    (0, 64, 0),
    (128, 64, 0),
    (0, 192, 0),
    (128, 64, 128),
    (0, 192, 128),
    (128, 192, 128),
    (64, 64, 0),
    (192, 64, 0),
)
MSRC_RARE_CLASSES = ("horse", "mountain")  # I2DL maps these to void (3 and 26 images)

# CamVid (SegNet): label PNGs hold 0..10, 11 = Unlabelled.
CAMVID_CLASSES = (
    "Sky",
    "Building",
    "Pole",
    "Road",
    "Pavement",
    "Tree",
    "SignSymbol",
    "Fence",
    "Car",
    "Pedestrian",
    "Bicyclist",
)
CAMVID_PALETTE = (
    (128, 128, 128),
    (128, 0, 0),
    (192, 192, 128),
    (128, 64, 128),
    (60, 40, 222),
    (128, 128, 0),
    (192, 128, 128),
    (64, 64, 128),
    (64, 0, 128),
    (64, 64, 0),
    (0, 128, 192),
)
CAMVID_UNLABELLED = 11
CAMVID_SPLITS = {"train": ("train", "trainannot"), "val": ("val", "valannot"), "test": ("test", "testannot")}
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class DatasetInfo:
    """What a model and a figure need to know about a dataset."""

    name: str
    classes: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]  # RGB per class id; void is drawn black

    @property
    def num_classes(self) -> int:
        return len(self.classes)


DATASETS = {
    "msrc_v2": DatasetInfo("msrc_v2", MSRC_CLASSES, MSRC_PALETTE),
    "camvid": DatasetInfo("camvid", CAMVID_CLASSES, CAMVID_PALETTE),
}


# --- reading single files --------------------------------------------------------------------------------------
def read_rgb(path: Path) -> np.ndarray:
    """An image file as uint8 (H, W, 3); a file that is not an image is a one-line error naming it."""
    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"), dtype=np.uint8)
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise DataError(f"{path}: not a readable image ({type(err).__name__}: {err})") from None


def read_label_png(path: Path) -> np.ndarray:
    """A CamVid label image (one class id per pixel) as uint8 (H, W)."""
    try:
        with Image.open(path) as img:
            if img.mode not in ("L", "P", "I", "I;16"):
                raise DataError(
                    f"{path}: a label image must hold one class id per pixel (mode L or P), found mode {img.mode}"
                )
            return np.asarray(img, dtype=np.int64).astype(np.uint8) if img.mode != "P" else np.asarray(img)
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise DataError(f"{path}: not a readable image ({type(err).__name__}: {err})") from None


def _rgb_codes(rgb: np.ndarray) -> np.ndarray:
    rgb = rgb.astype(np.int32)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def decode_colour_target(
    rgb: np.ndarray,
    palette: Sequence[tuple[int, int, int]],
    path: Path | str,
    void_rgb: tuple[int, int, int] = MSRC_VOID_RGB,
    void_classes: Sequence[int] = (),
) -> np.ndarray:
    """Colour-coded target (H, W, 3) -> class ids (H, W) uint8, void and `void_classes` -> IGNORE_INDEX.

    A colour outside the palette is an error naming the file, the colour and how many pixels have it.
    """
    codes = _rgb_codes(rgb)
    lut_keys = np.array([_rgb_codes(np.array(c)) for c in palette] + [_rgb_codes(np.array(void_rgb))])
    lut_values = np.array(
        [IGNORE_INDEX if i in set(void_classes) else i for i in range(len(palette))] + [IGNORE_INDEX], dtype=np.uint8
    )
    order = np.argsort(lut_keys)
    keys_sorted, values_sorted = lut_keys[order], lut_values[order]
    pos = np.clip(np.searchsorted(keys_sorted, codes), 0, len(keys_sorted) - 1)
    known = keys_sorted[pos] == codes
    if not known.all():
        unknown, counts = np.unique(codes[~known], return_counts=True)
        worst = int(unknown[np.argmax(counts)])
        colour = ((worst >> 16) & 255, (worst >> 8) & 255, worst & 255)
        raise DataError(
            f"{path}: {int((~known).sum())} pixels have colours that are not in the palette "
            f"({len(unknown)} colours, most common RGB{colour} on {int(counts.max())} pixels); "
            f"is this a target of this dataset?"
        )
    return values_sorted[pos]


def _find_image(folder: Path, stem: str, what: str, id_source: Path | str) -> Path:
    for suffix in IMAGE_SUFFIXES:
        candidate = folder / f"{stem}{suffix}"
        if candidate.is_file():
            return candidate
    raise DataError(
        f"{id_source}: id {stem.removesuffix('_GT')!r} has no {what} ({folder / stem}.{{bmp,png,webp}} not found)"
    )


def _check_same_size(image: np.ndarray, mask: np.ndarray, image_path: Path, target_path: Path) -> None:
    if image.shape[:2] != mask.shape[:2]:
        raise DataError(
            f"{target_path}: target is {mask.shape[1]}x{mask.shape[0]} but its image {image_path.name} "
            f"is {image.shape[1]}x{image.shape[0]} (width x height)"
        )


def _to_tensors(image: np.ndarray, mask: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))), torch.from_numpy(mask.copy())


# --- whole splits ----------------------------------------------------------------------------------------------
def msrc_ids(root: Path, split: str) -> list[str]:
    list_file = Path(root) / f"{split}.txt"
    if not list_file.is_file():
        raise DataError(f"{list_file}: no such split list (expected train.txt, val.txt, test.txt in {root})")
    return [line.strip() for line in list_file.read_text().splitlines() if line.strip()]


def load_msrc_v2(
    root: str | Path, split: str, void_rare_classes: bool = True, limit: int | None = None
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """MSRC-v2 split `split` from `root` (`images/<id>.*`, `targets/<id>_GT.*`, `<split>.txt`).

    With `void_rare_classes`, horse and mountain become void as in I2DL (the network keeps 23 outputs).
    """
    root = Path(root)
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; choose from {', '.join(SPLITS)}")
    void = [MSRC_CLASSES.index(c) for c in MSRC_RARE_CLASSES] if void_rare_classes else []
    list_file = root / f"{split}.txt"
    samples = []
    for image_id in msrc_ids(root, split)[:limit]:
        image_path = _find_image(root / "images", image_id, "image", list_file)
        target_path = _find_image(root / "targets", f"{image_id}_GT", "target", list_file)
        image = read_rgb(image_path)
        target = read_rgb(target_path)
        _check_same_size(image, target, image_path, target_path)
        samples.append(_to_tensors(image, decode_colour_target(target, MSRC_PALETTE, target_path, void_classes=void)))
    return samples


def load_camvid(root: str | Path, split: str, limit: int | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """CamVid split from `root/<split>/` paired with `root/<split>annot/` by file stem; 11 (Unlabelled) -> ignore."""
    root = Path(root)
    if split not in CAMVID_SPLITS:
        raise DataError(f"unknown split {split!r}; choose from {', '.join(CAMVID_SPLITS)}")
    image_dir, label_dir = (root / d for d in CAMVID_SPLITS[split])
    for folder in (image_dir, label_dir):
        if not folder.is_dir():
            raise DataError(f"{folder}: no such folder (CamVid in the SegNet layout has train/, trainannot/, ...)")
    images = {p.stem: p for p in sorted(image_dir.iterdir()) if p.is_file() and not p.name.startswith(".")}
    labels = {p.stem: p for p in sorted(label_dir.iterdir()) if p.is_file() and not p.name.startswith(".")}
    if not images:
        raise DataError(f"{image_dir}: no images")
    for stem, path in images.items():
        if stem not in labels:
            raise DataError(f"{path}: no label image with stem {stem!r} in {label_dir}")
    for stem, path in labels.items():
        if stem not in images:
            raise DataError(f"{path}: no image with stem {stem!r} in {image_dir}")
    samples = []
    for stem in list(images)[:limit]:
        image = read_rgb(images[stem])
        mask = read_label_png(labels[stem])
        _check_same_size(image, mask, images[stem], labels[stem])
        bad = mask > CAMVID_UNLABELLED
        if bad.any():
            raise DataError(
                f"{labels[stem]}: {int(bad.sum())} pixels hold labels above {CAMVID_UNLABELLED} "
                f"(largest {int(mask.max())}); CamVid labels are 0..10 and 11 = Unlabelled"
            )
        mask = np.where(mask == CAMVID_UNLABELLED, IGNORE_INDEX, mask).astype(np.uint8)
        samples.append(_to_tensors(image, mask))
    return samples


def load_segmentation_split(
    dataset: str, root: str | Path, split: str, limit: int | None = None, void_rare_classes: bool = True
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    if dataset == "msrc_v2":
        return load_msrc_v2(root, split, void_rare_classes=void_rare_classes, limit=limit)
    if dataset == "camvid":
        return load_camvid(root, split, limit=limit)
    raise DataError(f"unknown segmentation dataset {dataset!r}; choose from {', '.join(DATASETS)}")


# --- transforms and the torch Dataset --------------------------------------------------------------------------
def train_transform(
    size: Sequence[int], scale: Sequence[float] = (0.35, 1.0), hflip: bool = True, color_jitter: float = 0.3
) -> v2.Transform:
    """Random resized crop + flip + colour jitter, applied jointly to an `Image` and a `Mask`."""
    steps: list[v2.Transform] = [v2.RandomResizedCrop(tuple(size), scale=tuple(scale), antialias=True)]
    if hflip:
        steps.append(v2.RandomHorizontalFlip())
    if color_jitter:
        steps.append(
            v2.ColorJitter(
                brightness=color_jitter, contrast=color_jitter, saturation=color_jitter, hue=min(0.5, color_jitter / 6)
            )
        )
    return v2.Compose(steps)


def eval_transform(size: Sequence[int] | None) -> v2.Transform | None:
    """Optional resize for quick evaluation (tests); None keeps the full resolution."""
    return v2.Resize(tuple(size), antialias=True) if size else None


class SegmentationDataset(torch.utils.data.Dataset):
    """In-memory `(image, mask)` pairs -> `(float image in [0, 1] (3, H, W), long mask (H, W))`."""

    def __init__(self, samples: list[tuple[torch.Tensor, torch.Tensor]], transform: v2.Transform | None = None):
        self.samples, self.transform = samples, transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, mask = self.samples[index]
        image, mask = tv_tensors.Image(image), tv_tensors.Mask(mask)
        if self.transform is not None:
            image, mask = self.transform(image, mask)
        return image.as_subclass(torch.Tensor).float().div_(255), mask.as_subclass(torch.Tensor).long()


def pad_collate(batch: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack images of different sizes (MSRC has portrait and landscape photos): pad the bottom/right with
    zeros and the masks with IGNORE_INDEX, so padding never counts in the loss or the metrics."""
    height = max(img.shape[-2] for img, _ in batch)
    width = max(img.shape[-1] for img, _ in batch)
    images = torch.zeros(len(batch), 3, height, width)
    masks = torch.full((len(batch), height, width), IGNORE_INDEX, dtype=torch.long)
    for i, (img, mask) in enumerate(batch):
        images[i, :, : img.shape[-2], : img.shape[-1]] = img
        masks[i, : mask.shape[-2], : mask.shape[-1]] = mask
    return images, masks


def class_pixel_counts(samples: list[tuple[torch.Tensor, torch.Tensor]], num_classes: int) -> torch.Tensor:
    """Labelled pixels per class over a split (void excluded)."""
    counts = torch.zeros(num_classes, dtype=torch.long)
    for _, mask in samples:
        counts += torch.bincount(mask[mask != IGNORE_INDEX].long().flatten(), minlength=num_classes)[:num_classes]
    return counts
