"""Turn any image of a hand-written digit (photo or scan, any size or colour) into an MNIST-style 28x28 input.

MNIST's own recipe: white digit on black, the digit's bounding box scaled to fit 20x20, then placed in a 28x28
field so that its centre of mass sits at the centre.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from i2dl.errors import DataError


def load_image_gray(path: str | Path) -> np.ndarray:
    """Greyscale float array in [0, 1]; an unreadable file is a one-line DataError."""
    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("L"), dtype=np.float32) / 255.0
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except (UnidentifiedImageError, OSError) as err:
        raise DataError(f"{path}: not a readable image ({err})") from None


def to_mnist_format(gray: np.ndarray) -> torch.Tensor:
    """(1, 28, 28) float tensor in [0, 1], white ink on black, centred like MNIST."""

    def border(a: np.ndarray) -> np.ndarray:
        return np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]])

    if border(gray).mean() > 0.5:  # dark ink on light paper: invert
        gray = 1.0 - gray
    gray = np.clip(gray - np.median(border(gray)), 0, None)  # paper becomes 0
    if gray.max() > 0:
        gray = gray / gray.max()
    ink = gray > 0.2
    if ink.any():
        rows, cols = np.where(ink)
        gray = gray[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    h, w = gray.shape
    scale = 20.0 / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    digit = (
        np.asarray(Image.fromarray((gray * 255).astype(np.uint8)).resize(size, Image.LANCZOS), dtype=np.float32) / 255.0
    )
    canvas = np.zeros((28, 28), dtype=np.float32)
    top, left = (28 - digit.shape[0]) // 2, (28 - digit.shape[1]) // 2
    canvas[top : top + digit.shape[0], left : left + digit.shape[1]] = digit
    if canvas.sum() > 0:  # shift the centre of mass to the centre
        ys, xs = np.indices(canvas.shape)
        dy = int(round(13.5 - (ys * canvas).sum() / canvas.sum()))
        dx = int(round(13.5 - (xs * canvas).sum() / canvas.sum()))
        canvas = np.roll(np.roll(canvas, dy, axis=0), dx, axis=1)
    return torch.from_numpy(canvas).unsqueeze(0)
