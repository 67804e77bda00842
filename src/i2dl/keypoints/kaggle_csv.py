"""Kaggle "Facial Keypoints Detection" CSV files (the layout I2DL uses): 96x96 grey faces and 15 keypoints.

`training.csv` layout: 30 coordinate columns (`left_eye_center_x`, `left_eye_center_y`, ...,
`mouth_center_bottom_lip_y`, pixel units, "left" = the subject's left = image right), then `Image` with 9,216
space-separated grey values. Kaggle's `test.csv` has `ImageId,Image`; `IdLookupTable.csv` has
`RowId,ImageId,FeatureName,Location`. Plain `.csv` and gzipped `.csv.gz` are both read; every malformed row is a
one-line `DataError` naming the file and line.
"""

from __future__ import annotations

import csv
import gzip
import io
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterator, Literal

import numpy as np
import torch

from i2dl.errors import DataError

IMAGE_SIZE = 96
NUM_PIXELS = IMAGE_SIZE * IMAGE_SIZE
KEYPOINT_NAMES = (
    "left_eye_center",
    "right_eye_center",
    "left_eye_inner_corner",
    "left_eye_outer_corner",
    "right_eye_inner_corner",
    "right_eye_outer_corner",
    "left_eyebrow_inner_end",
    "left_eyebrow_outer_end",
    "right_eyebrow_inner_end",
    "right_eyebrow_outer_end",
    "nose_tip",
    "mouth_left_corner",
    "mouth_right_corner",
    "mouth_center_top_lip",
    "mouth_center_bottom_lip",
)
NUM_KEYPOINTS = len(KEYPOINT_NAMES)
COORDINATE_COLUMNS = tuple(f"{name}_{axis}" for name in KEYPOINT_NAMES for axis in ("x", "y"))
SPLIT_FILES = {"train": "training", "val": "val", "test": "test"}

csv.field_size_limit(2**31 - 1)  # one `Image` field is ~35 kB; be generous


@dataclass
class FaceKeypoints:
    """Faces in memory: `images` uint8 (N, 96, 96); `keypoints` float32 (N, 15, 2) in pixels (x, y), 0 where
    missing; `visible` bool (N, 15), True where the keypoint is given; `lines` the CSV line of each face."""

    images: torch.Tensor
    keypoints: torch.Tensor
    visible: torch.Tensor
    lines: torch.Tensor
    source: str

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, index: torch.Tensor | slice) -> "FaceKeypoints":
        return FaceKeypoints(
            self.images[index], self.keypoints[index], self.visible[index], self.lines[index], self.source
        )


def _open_text(path: Path) -> io.TextIOBase:
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    if path.name.endswith(".gz"):
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


def _rows(path: Path) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) for every row after the header, the header itself first with line 1."""
    try:
        with _open_text(path) as fh:
            reader = csv.reader(fh)
            for fields in reader:
                yield reader.line_num, fields
    except (OSError, EOFError, UnicodeDecodeError, gzip.BadGzipFile, csv.Error) as err:
        raise DataError(f"{path}: not a readable CSV file ({type(err).__name__}: {err})") from None


def _parse_image(text: str, path: Path, line: int) -> np.ndarray:
    values = text.split()
    if len(values) != NUM_PIXELS:
        raise DataError(
            f"{path}, line {line}: Image has {len(values)} pixel values, expected "
            f"{NUM_PIXELS} ({IMAGE_SIZE}x{IMAGE_SIZE})"
        )
    try:
        pixels = np.array(values, dtype=np.float32)
    except ValueError:
        bad = next(v for v in values if not _is_number(v))
        raise DataError(f"{path}, line {line}: Image holds a non-numeric value {bad!r}") from None
    if not np.isfinite(pixels).all() or pixels.min() < 0 or pixels.max() > 255:
        raise DataError(
            f"{path}, line {line}: Image values must lie in 0..255 (found {pixels.min():g}..{pixels.max():g})"
        )
    return np.rint(pixels).astype(np.uint8).reshape(IMAGE_SIZE, IMAGE_SIZE)


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _header_index(header: list[str], required: tuple[str, ...], path: Path) -> list[int]:
    header = [h.strip().lstrip("\ufeff") for h in header]
    missing = [c for c in required if c not in header]
    if missing:
        raise DataError(
            f"{path}, line 1: missing column {missing[0]!r}"
            + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
            + f"; expected Kaggle's columns {required[0]}, ..., {required[-1]}"
        )
    return [header.index(c) for c in required]


def read_keypoints_csv(path: str | os.PathLike, missing: Literal["drop", "mask"] = "drop") -> FaceKeypoints:
    """Read a Kaggle training-layout CSV (`.csv` or `.csv.gz`).

    `missing="drop"` keeps only faces with all 15 keypoints (the course's choice); `"mask"` keeps every face and
    marks absent keypoints in `visible` (an empty cell is absent; a non-numeric one is an error).
    """
    if missing not in ("drop", "mask"):
        raise DataError(f"missing={missing!r}: choose 'drop' or 'mask'")
    path = Path(path)
    stat = path.stat() if path.is_file() else None
    key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size) if stat else (str(path), 0, 0)
    return _read_keypoints_csv_cached(key, missing)


@lru_cache(maxsize=8)
def _read_keypoints_csv_cached(key: tuple[str, int, int], missing: str) -> FaceKeypoints:
    """Parsed once per process and file version (the datamodule, the tests and the notebook reuse it)."""
    path = Path(key[0])
    images, coords, visible, lines = [], [], [], []
    rows = _rows(path)
    first = next(rows, None)
    if first is None:
        raise DataError(f"{path}: empty file, expected a header line with Kaggle's columns")
    columns = _header_index(first[1], COORDINATE_COLUMNS + ("Image",), path)
    width = len(first[1])
    coord_columns, image_column = columns[:-1], columns[-1]
    for line, fields in rows:
        if not fields or (len(fields) == 1 and not fields[0].strip()):
            continue  # blank line (a trailing newline)
        if len(fields) != width:
            raise DataError(f"{path}, line {line}: {len(fields)} fields, the header has {width}")
        xy = np.zeros(2 * NUM_KEYPOINTS, dtype=np.float32)
        given = np.ones(2 * NUM_KEYPOINTS, dtype=bool)
        for k, c in enumerate(coord_columns):
            text = fields[c].strip()
            if not text:
                given[k] = False
                continue
            try:
                xy[k] = float(text)
            except ValueError:
                raise DataError(f"{path}, line {line}: {COORDINATE_COLUMNS[k]} is not a number: {text!r}") from None
            if not np.isfinite(xy[k]):
                raise DataError(f"{path}, line {line}: {COORDINATE_COLUMNS[k]} is not finite: {text!r}")
        pair_given = given[0::2] & given[1::2]
        if missing == "drop" and not pair_given.all():
            continue
        xy.reshape(-1, 2)[~pair_given] = 0.0
        images.append(_parse_image(fields[image_column], path, line))
        coords.append(xy.reshape(NUM_KEYPOINTS, 2))
        visible.append(pair_given)
        lines.append(line)
    if not images:
        what = "no face with all 15 keypoints (try missing='mask')" if missing == "drop" else "no faces"
        raise DataError(f"{path}: {what}")
    faces = FaceKeypoints(
        torch.from_numpy(np.stack(images)),
        torch.from_numpy(np.stack(coords)),
        torch.from_numpy(np.stack(visible)),
        torch.tensor(lines),
        str(path),
    )
    for tensor in (faces.images, faces.keypoints, faces.visible):
        tensor.requires_grad_(False)
    return faces


def read_test_csv(path: str | os.PathLike) -> tuple[list[int], torch.Tensor]:
    """Kaggle's `test.csv` (`ImageId,Image`): the ids and uint8 images (N, 96, 96)."""
    path = Path(path)
    rows = _rows(path)
    first = next(rows, None)
    if first is None:
        raise DataError(f"{path}: empty file, expected the header ImageId,Image")
    id_col, image_col = _header_index(first[1], ("ImageId", "Image"), path)
    ids, images = [], []
    for line, fields in rows:
        if not fields or (len(fields) == 1 and not fields[0].strip()):
            continue
        if len(fields) != len(first[1]):
            raise DataError(f"{path}, line {line}: {len(fields)} fields, the header has {len(first[1])}")
        try:
            ids.append(int(fields[id_col]))
        except ValueError:
            raise DataError(f"{path}, line {line}: ImageId is not an integer: {fields[id_col]!r}") from None
        images.append(_parse_image(fields[image_col], path, line))
    if not images:
        raise DataError(f"{path}: no images")
    return ids, torch.from_numpy(np.stack(images))


def read_id_lookup_table(path: str | os.PathLike) -> list[tuple[int, int, str]]:
    """Kaggle's `IdLookupTable.csv`: (RowId, ImageId, FeatureName) for every value the submission must hold."""
    path = Path(path)
    rows = _rows(path)
    first = next(rows, None)
    if first is None:
        raise DataError(f"{path}: empty file, expected the header RowId,ImageId,FeatureName,Location")
    row_col, image_col, feature_col = _header_index(first[1], ("RowId", "ImageId", "FeatureName"), path)
    table = []
    for line, fields in rows:
        if not fields or (len(fields) == 1 and not fields[0].strip()):
            continue
        try:
            row_id, image_id = int(fields[row_col]), int(fields[image_col])
        except (ValueError, IndexError):
            raise DataError(f"{path}, line {line}: RowId and ImageId must be integers") from None
        feature = fields[feature_col].strip()
        if feature not in COORDINATE_COLUMNS:
            raise DataError(f"{path}, line {line}: unknown FeatureName {feature!r}")
        table.append((row_id, image_id, feature))
    return table


def split_path(data_dir: str | os.PathLike, split: str) -> Path:
    """`<data_dir>/facial_keypoints/<training|val|test>.csv[.gz]` (a plain `.csv` wins if both exist)."""
    if split not in SPLIT_FILES:
        raise DataError(f"unknown split {split!r}; choose from {', '.join(SPLIT_FILES)}")
    folder = Path(data_dir) / "facial_keypoints"
    for suffix in (".csv", ".csv.gz"):
        candidate = folder / f"{SPLIT_FILES[split]}{suffix}"
        if candidate.is_file():
            return candidate
    raise DataError(
        f"{folder}: no {SPLIT_FILES[split]}.csv or {SPLIT_FILES[split]}.csv.gz; put Kaggle's "
        f"facial-keypoints CSV files there (or pass --data.data_dir / set I2DL_DATA)"
    )
