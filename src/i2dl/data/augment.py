"""Batch-wise augmentation for small greyscale images held in memory (one `affine_grid` call per batch)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class RandomAffine:
    """Random rotation (degrees), isotropic scale, shift (fraction of the size) and optional horizontal flip."""

    max_rotation: float = 10.0
    max_scale: float = 0.1
    max_shift: float = 0.1
    hflip: bool = False

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        n = x.shape[0]

        def uniform(low: float, high: float) -> torch.Tensor:
            return low + (high - low) * torch.rand(n, generator=generator)

        angle = uniform(-self.max_rotation, self.max_rotation) * math.pi / 180
        scale = uniform(1 - self.max_scale, 1 + self.max_scale)
        shift = torch.stack([uniform(-self.max_shift, self.max_shift), uniform(-self.max_shift, self.max_shift)], 1)
        flip = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0) if self.hflip else torch.ones(n)
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        # theta maps output coordinates to input coordinates in [-1, 1]
        theta = torch.stack(
            [torch.stack([cos * flip, -sin, shift[:, 0] * 2], 1), torch.stack([sin * flip, cos, shift[:, 1] * 2], 1)], 1
        )
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
