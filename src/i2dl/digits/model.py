"""The lab's networks and ours, as plain `nn.Module`s taking images in [0, 1], shape (B, 1, 28, 28)."""

from __future__ import annotations

from torch import nn

from i2dl.layers import Normalize

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


class LabFC(nn.Sequential):
    """The lab's fully connected baseline: 784 -> 128 (ReLU) -> 10."""

    def __init__(self, num_classes: int = 10, hidden: int = 128) -> None:
        super().__init__(
            Normalize(MNIST_MEAN, MNIST_STD),
            nn.Flatten(),
            nn.Linear(28 * 28, hidden),
            nn.ReLU(),
            nn.Linear(hidden, num_classes),
        )


class LabCNN(nn.Sequential):
    """The lab's CNN: conv 24 3x3, max-pool, conv 36 3x3, max-pool, dense 128, dense 10."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__(
            Normalize(MNIST_MEAN, MNIST_STD),
            nn.Conv2d(1, 24, 3),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 28 -> 26 -> 13
            nn.Conv2d(24, 36, 3),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 13 -> 11 -> 5
            nn.Flatten(),
            nn.Linear(36 * 5 * 5, 128),
            nn.ReLU(),
            nn.Linear(128, num_classes),
        )


def conv_bn(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class DigitNet(nn.Sequential):
    """Ours, for the accuracy target: two VGG-style stages with batch norm, a third conv, global pooling."""

    def __init__(self, num_classes: int = 10, width: int = 16, dropout: float = 0.1) -> None:
        w = width
        super().__init__(
            Normalize(MNIST_MEAN, MNIST_STD),
            conv_bn(1, w),
            conv_bn(w, w),
            nn.MaxPool2d(2),  # 28 -> 14
            conv_bn(w, 2 * w),
            conv_bn(2 * w, 2 * w),
            nn.MaxPool2d(2),  # 14 -> 7
            conv_bn(2 * w, 4 * w),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(4 * w, num_classes),
        )


ARCHITECTURES = {"lab_fc": LabFC, "lab_cnn": LabCNN, "digitnet": DigitNet}


def build_model(arch: str, num_classes: int = 10, **kwargs) -> nn.Module:
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; choose from {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[arch](num_classes=num_classes, **kwargs)
