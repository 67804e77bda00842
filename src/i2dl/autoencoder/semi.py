"""The objectives on unlabeled images beyond the lab's reconstruction, as plain functions on batches:

- contrastive pretraining (SimCLR, Chen et al. 2020): two random views of each image, the NT-Xent loss pulls a
  view's projection towards the other view of the same image and away from the other 2N-2 views in the batch;
- FixMatch (Sohn et al. 2020): while fine-tuning on the labels, an unlabeled image's prediction on a weakly
  augmented view becomes its pseudo-label where it is confident (max probability >= threshold), and the network
  is trained to predict it on a strongly augmented view of the same image.

Augmentations work on whole batches of (B, 1, 28, 28) images in [0, 1] with a seeded generator: weak = a small
shift (FixMatch's flip-and-shift without the flip, which would change a digit), strong = a large random affine
map (rotation, shear, scale, shift), then random contrast/brightness and a random erased square (Cutout), the
geometric and colour parts of RandAugment that keep a digit a digit."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from i2dl.data.augment import RandomAffine


def _uniform(n: int, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator)


def weak_augment(x: torch.Tensor, generator: torch.Generator, max_shift: float = 2 / 28) -> torch.Tensor:
    """A random shift of up to 2 pixels."""
    return RandomAffine(0.0, 0.0, max_shift)(x, generator)


def random_affine(
    x: torch.Tensor,
    generator: torch.Generator,
    max_rotation: float,
    max_shear: float,
    scale: tuple[float, float],
    max_shift: float,
) -> torch.Tensor:
    """Rotation (degrees), shear (degrees), independent x/y scale and shift (fraction of the size), per image."""
    n = x.shape[0]
    angle = _uniform(n, -max_rotation, max_rotation, generator) * math.pi / 180
    shear = _uniform(n, -max_shear, max_shear, generator) * math.pi / 180
    sx, sy = _uniform(n, *scale, generator), _uniform(n, *scale, generator)
    tx, ty = _uniform(n, -max_shift, max_shift, generator), _uniform(n, -max_shift, max_shift, generator)
    cos, sin, tan = torch.cos(angle), torch.sin(angle), torch.tan(shear)
    # output -> input coordinates: inverse of (rotate . shear . scale)
    a, b = cos / sx, (-sin + cos * tan) / sx
    c, d = sin / sy, (cos + sin * tan) / sy
    theta = torch.stack([torch.stack([a, b, 2 * tx], 1), torch.stack([c, d, 2 * ty], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def cutout(x: torch.Tensor, generator: torch.Generator, min_size: int = 6, max_size: int = 14) -> torch.Tensor:
    """Erase one random square of `min_size`..`max_size` pixels in each image (centre anywhere in the image)."""
    n, _, h, w = x.shape
    size = torch.randint(min_size, max_size + 1, (n,), generator=generator)
    cy, cx = torch.randint(0, h, (n,), generator=generator), torch.randint(0, w, (n,), generator=generator)
    ys, xs = torch.arange(h).view(1, h, 1), torch.arange(w).view(1, 1, w)
    half = (size // 2).view(n, 1, 1)
    inside = ((ys - cy.view(n, 1, 1)).abs() <= half) & ((xs - cx.view(n, 1, 1)).abs() <= half)
    return x * (~inside).unsqueeze(1).to(x.dtype)


def strong_augment(x: torch.Tensor, generator: torch.Generator, strength: float = 1.0) -> torch.Tensor:
    """Large affine distortion, random contrast and brightness, then Cutout; `strength` scales every magnitude
    (1: rotation 25 degrees, shear 20, scale 0.75-1.2, shift 15%, Cutout squares of 6-14 pixels)."""
    x = random_affine(
        x,
        generator,
        max_rotation=25.0 * strength,
        max_shear=20.0 * strength,
        scale=(1 - 0.25 * strength, 1 + 0.2 * strength),
        max_shift=0.15 * strength,
    )
    n = x.shape[0]
    contrast = _uniform(n, 1 - 0.5 * strength, 1.0, generator).view(n, 1, 1, 1)  # fainter ink
    brightness = _uniform(n, 0.0, 0.2 * strength, generator).view(n, 1, 1, 1)  # a grey background
    x = x * contrast + brightness * (1 - x)
    return cutout(x, generator, min_size=max(1, round(6 * strength)), max_size=max(1, round(14 * strength)))


def contrastive_views(
    x: torch.Tensor, generator: torch.Generator, strength: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Two independent strong views of each image (SimCLR's positive pairs)."""
    return strong_augment(x, generator, strength), strong_augment(x, generator, strength)


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.5) -> torch.Tensor:
    """SimCLR's normalised-temperature cross-entropy over the 2N projections of N positive pairs."""
    z = F.normalize(torch.cat([z1, z2]).float(), dim=1)
    n = z1.shape[0]
    similarity = z @ z.t() / temperature
    similarity.fill_diagonal_(float("-inf"))  # a view is not its own negative
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(similarity, targets)


def align_distribution(
    probs: torch.Tensor, running_mean: torch.Tensor, target: torch.Tensor | None = None
) -> torch.Tensor:
    """Distribution alignment (ReMixMatch, Berthelot et al. 2020): scale each prediction by target / the model's
    running average prediction and renormalise, so that a class the model over-predicts on unlabeled images (a
    cluster of 7s taken for 2s) is pulled back towards its share (uniform by default)."""
    target = torch.full_like(running_mean, 1.0 / len(running_mean)) if target is None else target
    aligned = probs * (target / running_mean.clamp(min=1e-6))
    return aligned / aligned.sum(-1, keepdim=True)


def fixmatch_loss(
    logits_weak: torch.Tensor,
    logits_strong: torch.Tensor,
    threshold: float = 0.95,
    weak_probs: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """FixMatch's unlabeled loss: cross-entropy of the strong view's logits against the weak view's argmax, counted
    only where the weak view's top probability reaches `threshold` (averaged over all unlabeled images). Returns
    (loss, share of images above the threshold, pseudo-labels). `weak_probs` replaces the weak view's softmax (e.g.
    after `align_distribution`)."""
    probs = logits_weak.detach().float().softmax(-1) if weak_probs is None else weak_probs.detach()
    confidence, pseudo = probs.max(-1)
    mask = (confidence >= threshold).float()
    loss = (F.cross_entropy(logits_strong.float(), pseudo, reduction="none") * mask).mean()
    return loss, mask.mean(), pseudo
