"""Encoders, decoders, the autoencoder and the classifier (encoder + small head) as plain `nn.Module`s.

Images come in as float [0, 1], shape (B, 1, 28, 28); reconstructions go out the same way (sigmoid), so the
reconstruction loss compares pixels directly.
"""

from __future__ import annotations

import torch
from torch import nn

from i2dl.layers import Normalize

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


class FCEncoder(nn.Sequential):
    """The course's encoder: fully connected layers only, 784 -> width -> width/2 -> latent (20)."""

    def __init__(self, latent_dim: int = 20, width: int = 256) -> None:
        hidden = width
        super().__init__(
            Normalize(MNIST_MEAN, MNIST_STD),
            nn.Flatten(),
            nn.Linear(28 * 28, hidden),
            nn.LeakyReLU(0.1),
            nn.Linear(hidden, hidden // 2),
            nn.LeakyReLU(0.1),
            nn.Linear(hidden // 2, latent_dim),
        )


class FCDecoder(nn.Sequential):
    """Mirror of `FCEncoder`: latent -> width/2 -> width -> 784 pixels in [0, 1]."""

    def __init__(self, latent_dim: int = 20, width: int = 256) -> None:
        hidden = width
        super().__init__(
            nn.Linear(latent_dim, hidden // 2),
            nn.LeakyReLU(0.1),
            nn.Linear(hidden // 2, hidden),
            nn.LeakyReLU(0.1),
            nn.Linear(hidden, 28 * 28),
            nn.Sigmoid(),
            nn.Unflatten(1, (1, 28, 28)),
        )


def conv_bn(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


def up_bn(cin: int, cout: int) -> nn.Sequential:
    """Doubles the resolution (transposed conv, stride 2)."""
    return nn.Sequential(
        nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


class ConvEncoder(nn.Sequential):
    """Ours: conv stages 28 -> 14 -> 7 with batch norm, then a linear map to the latent vector."""

    def __init__(self, latent_dim: int = 32, width: int = 16) -> None:
        w = width
        super().__init__(
            Normalize(MNIST_MEAN, MNIST_STD),
            conv_bn(1, w),
            conv_bn(w, w, stride=2),  # 28 -> 14
            conv_bn(w, 2 * w),
            conv_bn(2 * w, 2 * w, stride=2),  # 14 -> 7
            conv_bn(2 * w, 4 * w, stride=2),  # 7 -> 4
            nn.Flatten(),
            nn.Linear(4 * w * 4 * 4, latent_dim),
        )


class ConvDecoder(nn.Module):
    """Mirror of `ConvEncoder`: latent -> 4x4 feature map -> 7 -> 14 -> 28 pixels in [0, 1]."""

    def __init__(self, latent_dim: int = 32, width: int = 16) -> None:
        super().__init__()
        w = width
        self.width = w
        self.project = nn.Sequential(nn.Linear(latent_dim, 4 * w * 7 * 7), nn.ReLU(inplace=True))
        self.body = nn.Sequential(
            up_bn(4 * w, 2 * w),  # 7 -> 14
            up_bn(2 * w, w),  # 14 -> 28
            nn.Conv2d(w, 1, 3, padding=1),
            nn.Sigmoid(),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.body(self.project(z).view(-1, 4 * self.width, 7, 7))


# arch -> (encoder, decoder, default width: conv channels of the first stage / units of the first hidden layer)
ARCHITECTURES = {"fc": (FCEncoder, FCDecoder, 256), "conv": (ConvEncoder, ConvDecoder, 16)}


def _parts(arch: str, width: int | None):
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown encoder architecture {arch!r}; choose from {', '.join(ARCHITECTURES)}")
    encoder_class, decoder_class, default_width = ARCHITECTURES[arch]
    return encoder_class, decoder_class, width or default_width


def resolved_width(arch: str, width: int | None) -> int | None:
    """`width`, or the arch's default when None (None for an unknown arch)."""
    return width or (ARCHITECTURES[arch][2] if arch in ARCHITECTURES else None)


def build_encoder(arch: str, latent_dim: int, width: int | None = None) -> nn.Module:
    encoder_class, _, width = _parts(arch, width)
    return encoder_class(latent_dim=latent_dim, width=width)


class Autoencoder(nn.Module):
    """Encoder to a `latent_dim` vector and decoder back to the image (`width`: None = the arch's default)."""

    def __init__(self, arch: str = "conv", latent_dim: int = 32, width: int | None = None) -> None:
        super().__init__()
        encoder_class, decoder_class, width = _parts(arch, width)
        self.encoder = encoder_class(latent_dim=latent_dim, width=width)
        self.decoder = decoder_class(latent_dim=latent_dim, width=width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


class ContrastiveNet(nn.Module):
    """An encoder and SimCLR's projection head (latent -> hidden -> ReLU -> projection), whose output the
    contrastive loss compares; only the encoder is kept for the classifier."""

    def __init__(
        self,
        arch: str = "conv",
        latent_dim: int = 32,
        width: int | None = None,
        hidden: int = 128,
        projection_dim: int = 64,
    ) -> None:
        super().__init__()
        self.encoder = build_encoder(arch, latent_dim, width)
        self.projector = nn.Sequential(
            nn.Linear(latent_dim, hidden),
            nn.BatchNorm1d(hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, projection_dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projector(self.encoder(x))


class Classifier(nn.Module):
    """An encoder (pretrained or fresh) and a small head: latent -> (dropout) hidden (ReLU) -> classes."""

    def __init__(
        self,
        arch: str = "conv",
        latent_dim: int = 32,
        num_classes: int = 10,
        hidden: int = 64,
        dropout: float = 0.3,
        width: int | None = None,
    ) -> None:
        super().__init__()
        self.encoder = build_encoder(arch, latent_dim, width)
        self.head = nn.Sequential(
            nn.Dropout(dropout), nn.Linear(latent_dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))
