"""MNIST-family datasets in the original IDX format (`.gz` or raw), parsed by our own code.

IDX: two zero bytes, a type byte (0x08 = unsigned byte), the number of dimensions, one big-endian int32 per
dimension, then the data in C order. Images are (N, 28, 28), labels (N,).
"""

from __future__ import annotations

import gzip
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from i2dl.data import resolve_data_dir
from i2dl.data.download import download
from i2dl.errors import DataError

UNSIGNED_BYTE = 0x08


@dataclass(frozen=True)
class IdxDataset:
    """Where an IDX dataset lives and what its files must contain."""

    name: str  # folder under the data dir
    classes: tuple[str, ...]
    mirrors: tuple[str, ...]
    # split -> (images file, labels file); file names without `.gz`
    files: dict
    # file name (without .gz) -> sha256 of the decompressed content
    sha256: dict
    system_dirs: tuple[str, ...] = ()  # read-only folders where a system package puts the files

    def filenames(self, split: str) -> tuple[str, str]:
        return self.files[split]


MNIST = IdxDataset(
    name="mnist",
    classes=tuple(str(i) for i in range(10)),
    mirrors=("https://ossci-datasets.s3.amazonaws.com/mnist/", "https://storage.googleapis.com/cvdf-datasets/mnist/"),
    files={
        "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
        "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
    },
    sha256={
        "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    },
)

FASHION_MNIST = IdxDataset(
    name="fashion-mnist",
    classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
    mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
    files=MNIST.files,
    sha256={
        "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    },
    system_dirs=("/usr/share/datasets/fashion-mnist",),  # Debian: apt-get install dataset-fashion-mnist
)

DATASETS = {"mnist": MNIST, "fashion-mnist": FASHION_MNIST}


def read_idx(path: str | Path) -> torch.Tensor:
    """Parse one IDX file (gzip or raw) into a uint8 tensor; any defect is a DataError naming the file."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except OSError as err:
        raise DataError(f"{path}: cannot read ({err.strerror})") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as err:
            raise DataError(f"{path}: corrupt or truncated gzip data ({err})") from None
    elif path.suffix == ".gz":
        raise DataError(f"{path}: not a gzip file (it ends in .gz but does not start with the gzip magic bytes)")
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataError(f"{path}: not an IDX file (bad magic number {raw[:4].hex() or 'empty'})")
    if raw[2] != UNSIGNED_BYTE:
        raise DataError(f"{path}: IDX element type 0x{raw[2]:02x} is not unsigned byte (0x08)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise DataError(f"{path}: truncated IDX header")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(shape))
    found = len(raw) - header
    if found != expected:
        what = "truncated" if found < expected else "has trailing bytes"
        raise DataError(f"{path}: {what}: header says {'x'.join(map(str, shape))} = {expected} bytes, found {found}")
    array = np.frombuffer(raw, dtype=np.uint8, count=expected, offset=header).reshape(shape)
    return torch.from_numpy(array.copy())


def read_images_and_labels(
    images_path: Path, labels_path: Path, num_classes: int = 10
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N, 28, 28) uint8 and labels (N,) int64, checked against each other."""
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.dim() != 3:
        raise DataError(f"{images_path}: expected a 3-D image array, found shape {tuple(images.shape)}")
    if labels.dim() != 1:
        raise DataError(f"{labels_path}: expected a 1-D label array, found shape {tuple(labels.shape)}")
    if len(images) != len(labels):
        raise DataError(f"{images_path} holds {len(images)} images but {labels_path} holds {len(labels)} labels")
    bad = (labels >= num_classes).nonzero()
    if len(bad):
        i = int(bad[0])
        raise DataError(f"{labels_path}: label {int(labels[i])} at index {i} is not a class 0..{num_classes - 1}")
    return images, labels.long()


def _find(dataset: IdxDataset, filename: str, folders: list[Path]) -> Path | None:
    for folder in folders:
        for candidate in (folder / (filename + ".gz"), folder / filename):
            if candidate.is_file():
                return candidate
    return None


def locate(
    dataset: IdxDataset, split: str, data_dir: str | Path | None = None, download_missing: bool = True
) -> tuple[Path, Path]:
    """Find the split's two files under the data dir (or a system folder), downloading what is missing."""
    root = resolve_data_dir(data_dir)
    folders = [root / dataset.name, root / dataset.name.upper() / "raw", *map(Path, dataset.system_dirs)]
    found = []
    for filename in dataset.filenames(split):
        path = _find(dataset, filename, folders)
        if path is None and download_missing:
            path = download(filename + ".gz", root / dataset.name, list(dataset.mirrors), dataset.sha256[filename])
        if path is None:
            raise DataError(f"{filename}(.gz) not found: put the {dataset.name} IDX files in {root / dataset.name}")
        found.append(path)
    return found[0], found[1]


def load_split(
    dataset: IdxDataset | str, split: str, data_dir: str | Path | None = None, download_missing: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """`(images uint8 (N, 28, 28), labels int64 (N,))` for `split` in {"train", "test"}."""
    if isinstance(dataset, str):
        if dataset not in DATASETS:
            raise DataError(f"unknown dataset {dataset!r}; choose from {', '.join(DATASETS)}")
        dataset = DATASETS[dataset]
    images_path, labels_path = locate(dataset, split, data_dir, download_missing)
    return read_images_and_labels(images_path, labels_path, len(dataset.classes))
