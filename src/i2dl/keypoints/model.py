"""Keypoint regressors as plain `nn.Module`s: input (B, 1, 96, 96) grey values in [0, 1], output (B, 30) =
(x0, y0, x1, y1, ...) in the course's normalised coordinates (pixel - 48) / 48, Kaggle's keypoint order."""

from __future__ import annotations

import torch
from torch import nn

from i2dl.keypoints.kaggle_csv import IMAGE_SIZE, NUM_KEYPOINTS
from i2dl.layers import Normalize

FACES_MEAN, FACES_STD = 0.45, 0.25  # of the training faces' grey values in [0, 1], rounded


def conv_bn(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class LabKeypointCNN(nn.Sequential):
    """The course's kind of network (after NaimishNet): four conv + max-pool stages with dropout, then two dense
    layers. No batch norm."""

    def __init__(self, num_keypoints: int = NUM_KEYPOINTS, width: int = 32, dropout: float = 0.1) -> None:
        w = width
        super().__init__(
            Normalize(FACES_MEAN, FACES_STD),
            nn.Conv2d(1, w, 4),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Dropout(dropout),  # 96 -> 93 -> 46
            nn.Conv2d(w, 2 * w, 3),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Dropout(dropout),  # 46 -> 44 -> 22
            nn.Conv2d(2 * w, 4 * w, 2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Dropout(dropout),  # 22 -> 21 -> 10
            nn.Conv2d(4 * w, 8 * w, 1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Dropout(dropout),  # 10 -> 10 -> 5
            nn.Flatten(),
            nn.Linear(8 * w * 25, 256),
            nn.ReLU(),
            nn.Dropout(2 * dropout),
            nn.Linear(256, 2 * num_keypoints),
            nn.Tanh(),
        )


class FloatLinear(nn.Linear):
    """A linear layer that stays float32 under bf16 autocast: bf16 outputs would be quantised to ~0.2 pixel."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            return super().forward(x.float())


class KeypointNet(nn.Sequential):
    """Ours: a strided stem to 48x48, then three stages of (stride-2 conv, conv) with batch norm down to 6x6,
    flattened (keeps where things are, unlike global pooling) into one linear layer. About 24M multiply-adds
    per face at width 16, cheap enough to train on a 2-core CPU."""

    def __init__(self, num_keypoints: int = NUM_KEYPOINTS, width: int = 16, dropout: float = 0.1) -> None:
        w = width
        super().__init__(
            Normalize(FACES_MEAN, FACES_STD),
            conv_bn(1, w, 2),  # 96 -> 48
            conv_bn(w, 2 * w, 2),
            conv_bn(2 * w, 2 * w),  # -> 24
            conv_bn(2 * w, 4 * w, 2),
            conv_bn(4 * w, 4 * w),  # -> 12
            conv_bn(4 * w, 8 * w, 2),
            conv_bn(8 * w, 8 * w),  # -> 6
            nn.Flatten(),
            nn.Dropout(dropout),
            FloatLinear(8 * w * (IMAGE_SIZE // 16) ** 2, 2 * num_keypoints),
        )


ARCHITECTURES = {"lab_cnn": LabKeypointCNN, "keypointnet": KeypointNet}


def build_model(arch: str, **kwargs) -> nn.Module:
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; choose from {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[arch](**kwargs)
