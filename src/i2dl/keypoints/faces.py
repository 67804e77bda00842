"""Faces in a whole photo: OpenCV's frontal-face Haar cascade (it ships inside opencv-python-headless < 5, no
download), each face cut out as the network's training faces were, its 15 keypoints mapped back to the photo.

The cut-out is calibrated on the real training faces: placed in larger photos at 96-400 px, the cascade finds 99.7%
of them, and the 96x96 crop the keypoint labels refer to is a square 1.13 times the detector's box, centred 0.07
box widths below the box's centre (medians over 300 faces of `val.csv.gz`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image

from i2dl.errors import DataError, I2DLError
from i2dl.keypoints.kaggle_csv import KEYPOINT_NAMES
from i2dl.keypoints.predict import draw_overlay, predict_pixels, to_face_input, write_json

CROP_SCALE = 1.13  # side of the training crop / width of the detector's box
CROP_SHIFT_Y = 0.07  # (crop centre - box centre) / box width, downwards
DETECT_MAX_SIDE = 1024  # larger photos are scanned at this size (boxes are mapped back)
MIN_FACE = 24  # pixels at the scanned size: the cascade's own window


@dataclass(frozen=True)
class FaceBox:
    """A face the detector found, in the photo's pixels (x, y = top-left corner)."""

    x: float
    y: float
    width: float
    height: float

    def crop_square(self) -> tuple[int, int, int]:
        """(left, top, side) of the square around the face that matches the training crops."""
        side = max(1, round(self.width * CROP_SCALE))
        cx = self.x + self.width / 2
        cy = self.y + self.height / 2 + CROP_SHIFT_Y * self.width
        return round(cx - side / 2), round(cy - side / 2), side

    def as_list(self) -> list[float]:
        return [round(self.x, 1), round(self.y, 1), round(self.width, 1), round(self.height, 1)]


@lru_cache(maxsize=1)
def _cascade():
    try:
        import cv2
    except ImportError:
        raise I2DLError(
            "face detection needs OpenCV: pip install 'opencv-python-headless<5' (or give --no_detect "
            "for ready-made face crops)"
        ) from None
    if not hasattr(cv2, "CascadeClassifier"):
        raise I2DLError(
            f"OpenCV {cv2.__version__} has no Haar cascades (OpenCV 5 moved them out): pip install "
            f"'opencv-python-headless<5'"
        )
    cascade = cv2.CascadeClassifier(str(Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml"))
    if cascade.empty():
        raise I2DLError(f"OpenCV {cv2.__version__} ships no frontal-face cascade in {cv2.data.haarcascades}")
    return cascade


def _overlap(a: FaceBox, b: FaceBox) -> float:
    """Intersection over the smaller box's area."""
    w = min(a.x + a.width, b.x + b.width) - max(a.x, b.x)
    h = min(a.y + a.height, b.y + b.height) - max(a.y, b.y)
    if w <= 0 or h <= 0:
        return 0.0
    return w * h / min(a.width * a.height, b.width * b.height)


def detect_faces(image: Image.Image, min_neighbors: int = 5) -> list[FaceBox]:
    """Frontal faces of any size (from `MIN_FACE` px at the scanned size up to the whole photo), left to right; a
    box inside a larger one is dropped."""
    gray = image.convert("L")
    scale = max(gray.size) / DETECT_MAX_SIDE
    if scale > 1:
        gray = gray.resize((round(gray.width / scale), round(gray.height / scale)), Image.BILINEAR)
    else:
        scale = 1.0
    found = _cascade().detectMultiScale(
        np.asarray(gray), scaleFactor=1.1, minNeighbors=min_neighbors, minSize=(MIN_FACE, MIN_FACE)
    )
    boxes = sorted((FaceBox(*(float(v) * scale for v in box)) for box in found), key=lambda b: -b.width)
    kept: list[FaceBox] = []
    for box in boxes:
        if all(_overlap(box, other) < 0.5 for other in kept):
            kept.append(box)
    return sorted(kept, key=lambda b: (b.x, b.y))


def crop_face(image: Image.Image, box: FaceBox) -> tuple[Image.Image, tuple[int, int]]:
    """The square training-style crop around `box` (parts outside the photo filled with the crop's median grey)
    and its top-left corner in the photo."""
    left, top, side = box.crop_square()
    inside = image.crop((max(left, 0), max(top, 0), min(left + side, image.width), min(top + side, image.height)))
    if inside.size == (side, side):
        return inside, (left, top)
    fill = tuple(int(v) for v in np.median(np.asarray(inside.convert("RGB")).reshape(-1, 3), axis=0))
    square = Image.new("RGB", (side, side), fill)
    square.paste(inside.convert("RGB"), (max(left, 0) - left, max(top, 0) - top))
    return square, (left, top)


def keypoints_of_faces(
    model: Callable[[torch.Tensor], torch.Tensor], image: Image.Image, boxes: list[FaceBox]
) -> torch.Tensor:
    """(faces, 15, 2) keypoints in the photo's pixels for the faces in `boxes` (one batch through `model`, which maps
    (N, 1, 96, 96) faces to (N, 30) normalised keypoints: the network, or the module's `predict_normalised`)."""
    if not boxes:
        return torch.zeros(0, len(KEYPOINT_NAMES), 2)
    inputs, offsets = [], []
    for box in boxes:
        crop, (left, top) = crop_face(image, box)
        x, letterbox = to_face_input(crop)
        inputs.append((x, letterbox))
        offsets.append((left, top))
    points96 = predict_pixels(model, torch.stack([x for x, _ in inputs]))
    points = [
        letterbox.to_original(p) + torch.tensor(offset, dtype=torch.float32)
        for (_, letterbox), p, offset in zip(inputs, points96, offsets)
    ]
    return torch.stack(points)


def faces_json(image_name: str, width: int, height: int, boxes: list[FaceBox], keypoints: torch.Tensor) -> dict:
    """The keypoints of every face of a photo, in the photo's pixels: what `i2dl keypoints predict` and the app
    write."""
    return {
        "image": image_name,
        "width": width,
        "height": height,
        "units": "pixels of the original image",
        "faces": [
            {
                "box": box.as_list(),
                "keypoints": {
                    name: [round(float(x), 2), round(float(y), 2)]
                    for name, (x, y) in zip(KEYPOINT_NAMES, points.tolist())
                },
            }
            for box, points in zip(boxes, keypoints)
        ],
    }


def predict_photos(
    model: Callable[[torch.Tensor], torch.Tensor], paths: list[str], images: list[Image.Image], out_dir: Path
) -> list[tuple[str, int, Path, Path]]:
    """`i2dl keypoints predict` on whole photos: the faces of every photo found first (a photo without one is a
    DataError before anything is written), then per photo an overlay PNG of all faces' keypoints and a JSON file.
    Returns (photo, faces, overlay, JSON) per photo."""
    found = [detect_faces(image) for image in images]
    for path, boxes in zip(paths, found):
        if not boxes:
            raise DataError(
                f"{path}: no face found (the detector finds frontal, upright faces of at least "
                f"{MIN_FACE} px); give --no_detect for ready-made face crops"
            )
    written = []
    for path, image, boxes in zip(paths, images, found):
        keypoints = keypoints_of_faces(model, image, boxes)
        stem = Path(path).stem
        overlay = draw_overlay(image, keypoints.reshape(-1, 2), out_dir / f"{stem}_keypoints.png")
        data = write_json(
            faces_json(str(path), image.width, image.height, boxes, keypoints), out_dir / f"{stem}_keypoints.json"
        )
        written.append((str(path), len(boxes), overlay, data))
    return written
