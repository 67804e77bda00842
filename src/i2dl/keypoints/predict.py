"""Keypoints for image files of any size or colour, and Kaggle submissions from `test.csv`.

An image is letterboxed (padded to a square with its border's median grey, never stretched), made 96x96
greyscale, and the predicted keypoints are mapped back to the original image's pixel coordinates.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image, ImageDraw, UnidentifiedImageError

from i2dl.errors import DataError
from i2dl.files import atomic_open, write_text, write_with
from i2dl.keypoints.data import to_pixels
from i2dl.keypoints.kaggle_csv import COORDINATE_COLUMNS, IMAGE_SIZE, KEYPOINT_NAMES, NUM_KEYPOINTS


@dataclass
class Letterbox:
    """How a (width, height) image maps onto the 96x96 input: pixel = (p96 + 0.5) * scale - 0.5 - offset."""

    width: int
    height: int
    scale: float
    left: float
    top: float

    def to_original(self, xy96: torch.Tensor) -> torch.Tensor:
        """(..., 2) pixel coordinates of the 96x96 input -> the original image's pixel coordinates."""
        x = (xy96[..., 0] + 0.5) * self.scale - 0.5 - self.left
        y = (xy96[..., 1] + 0.5) * self.scale - 0.5 - self.top
        return torch.stack([x, y], dim=-1)


def load_image(path: str | Path) -> Image.Image:
    try:
        with Image.open(path) as img:
            img.load()
            return img.convert("RGB")
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except (UnidentifiedImageError, OSError) as err:
        raise DataError(f"{path}: not a readable image ({err})") from None


def to_face_input(image: Image.Image) -> tuple[torch.Tensor, Letterbox]:
    """(1, 96, 96) grey float in [0, 1] and the mapping back to `image`'s pixels."""
    gray = np.asarray(image.convert("L"), dtype=np.float32)
    h, w = gray.shape
    side = max(h, w)
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    canvas = np.full((side, side), float(np.median(border)), dtype=np.float32)
    top, left = (side - h) // 2, (side - w) // 2
    canvas[top : top + h, left : left + w] = gray
    small = Image.fromarray(canvas.astype(np.uint8)).resize((IMAGE_SIZE, IMAGE_SIZE), Image.BILINEAR, reducing_gap=3.0)
    x = torch.from_numpy(np.asarray(small, dtype=np.float32) / 255.0).unsqueeze(0)
    return x, Letterbox(w, h, side / IMAGE_SIZE, float(left), float(top))


def draw_overlay(image: Image.Image, keypoints: torch.Tensor, path: Path) -> Path:
    """The original image with each keypoint as a red dot (sized to the image) and a green nose-eye-mouth scale."""
    out = image.copy()
    draw = ImageDraw.Draw(out)
    r = max(1.5, max(out.size) / 120)
    for x, y in keypoints.tolist():
        draw.ellipse([x - r, y - r, x + r, y + r], fill=(230, 30, 30), outline=(255, 255, 255))
    return write_with(path, lambda tmp: out.save(tmp, format="PNG"))


@torch.no_grad()
def predict_pixels(
    model: Callable[[torch.Tensor], torch.Tensor], faces: torch.Tensor, batch_size: int = 256
) -> torch.Tensor:
    """(N, 1, 96, 96) in [0, 1] -> (N, 15, 2) keypoints in pixels of the 96x96 faces."""
    out = [
        model(faces[i : i + batch_size]).float().view(-1, NUM_KEYPOINTS, 2) for i in range(0, len(faces), batch_size)
    ]
    return to_pixels(torch.cat(out))


def keypoints_json(path: str | Path, box: Letterbox, keypoints: torch.Tensor) -> dict:
    return {
        "image": str(path),
        "width": box.width,
        "height": box.height,
        "units": "pixels of the original image",
        "keypoints": {
            name: [round(float(x), 2), round(float(y), 2)] for name, (x, y) in zip(KEYPOINT_NAMES, keypoints.tolist())
        },
    }


def write_json(data: dict, path: Path) -> Path:
    return write_text(path, json.dumps(data, indent=2) + "\n")


def write_submission(
    ids: list[int], keypoints_px: torch.Tensor, table: list[tuple[int, int, str]], path: Path, source: str
) -> int:
    """Kaggle's `RowId,Location` file: the lookup table's features, clipped to [0, 96]; written atomically."""
    by_image = {image_id: k for k, image_id in enumerate(ids)}
    flat = keypoints_px.reshape(len(ids), -1).clamp(0, IMAGE_SIZE)
    column = {name: k for k, name in enumerate(COORDINATE_COLUMNS)}
    with atomic_open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["RowId", "Location"])
        for row_id, image_id, feature in table:
            if image_id not in by_image:
                raise DataError(
                    f"{source}: RowId {row_id} asks for ImageId {image_id}, which the test file does not hold"
                )
            writer.writerow([row_id, f"{float(flat[by_image[image_id], column[feature]]):.4f}"])
    return len(table)
