"""The one learning-rate schedule of every lab: a warm-up to the peak, then a cosine down to a floor.

The length of the run is configuration, not state: a checkpoint keeps only the step count, and the total is given
again whenever training (re)starts. So a run resumed with more epochs follows, from the step it resumed at, the
schedule of an uninterrupted run of the new length (OneCycleLR, which saves its total, refuses to step past it;
a LambdaLR over a callable object restores the old total from the checkpoint).

Two warm-up shapes: `linear` (from `start_factor` straight up over `warmup` of the steps, then the cosine), and
`cos`, which is exactly torch's OneCycleLR (cosine warm-up from peak/25, cosine down to peak/25e4, and with
`cycle_momentum` the momentum or Adam's beta1 moved between 0.95 and 0.85 against the learning rate)."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch.optim.lr_scheduler import LRScheduler


def _cos_anneal(start: float, end: float, pct: float) -> float:
    return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)


class WarmupCosine(LRScheduler):
    """Per-step schedule. `lr = peak * factor(step)` for each parameter group's own peak learning rate."""

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        total_steps: int,
        warmup: float = 0.0,
        start_factor: float = 1 / 25,
        end_factor: float = 1e-3,
        warmup_shape: str = "linear",
        cycle_momentum: bool = False,
        momentum_range: tuple[float, float] = (0.85, 0.95),
        last_epoch: int = -1,
    ) -> None:
        if warmup_shape not in ("linear", "cos"):
            raise ValueError(f"warmup_shape must be linear or cos, got {warmup_shape!r}")
        if not 0.0 <= warmup < 1.0:
            raise ValueError(f"warmup must be a fraction in [0, 1), got {warmup}")
        self.total_steps = max(1, int(total_steps))
        self.warmup, self.start_factor, self.end_factor = warmup, start_factor, end_factor
        self.warmup_shape, self.cycle_momentum, self.momentum_range = warmup_shape, cycle_momentum, momentum_range
        if cycle_momentum:
            for group in optimizer.param_groups:
                if "betas" not in group and "momentum" not in group:
                    raise ValueError("cycle_momentum needs an optimiser with momentum or betas")
        super().__init__(optimizer, last_epoch)

    # configuration, given again at every (re)start, is not part of the saved state
    _CONFIG = (
        "total_steps",
        "warmup",
        "start_factor",
        "end_factor",
        "warmup_shape",
        "cycle_momentum",
        "momentum_range",
    )

    def state_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "optimizer" and k not in self._CONFIG}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the step count; the optimiser's learning rates (restored before this, with the old run's value)
        are set for that step under this run's length, so the very next step already follows it."""
        self.__dict__.update({k: v for k, v in state_dict.items() if k not in self._CONFIG})
        for group, lr in zip(self.optimizer.param_groups, self.get_lr()):
            group["lr"] = lr
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def phase(self, step: int) -> tuple[float, float]:
        """(learning-rate factor, momentum position in [0, 1]: 0 at the low momentum) at `step`."""
        total = self.total_steps
        if self.warmup_shape == "cos":  # torch's OneCycleLR, two phases
            end_warm = float(self.warmup * total) - 1
            if step <= end_warm:
                pct = step / end_warm if end_warm > 0 else 1.0
                return _cos_anneal(self.start_factor, 1.0, pct), _cos_anneal(1.0, 0.0, pct)
            pct = min(1.0, (step - end_warm) / max(total - 1 - end_warm, 1e-12))
            return _cos_anneal(1.0, self.end_factor, pct), _cos_anneal(0.0, 1.0, pct)
        warm_steps = int(total * self.warmup)
        if self.warmup > 0:
            warm_steps = max(1, warm_steps)
        if step < warm_steps:
            pct = step / warm_steps
            return self.start_factor + (1 - self.start_factor) * pct, 1.0 - pct
        pct = min(1.0, (step - warm_steps) / max(1, total - warm_steps))
        return _cos_anneal(1.0, self.end_factor, pct), pct

    def get_lr(self) -> list[float]:
        factor, momentum_pos = self.phase(self.last_epoch)
        if self.cycle_momentum:
            low, high = self.momentum_range
            momentum = low + (high - low) * momentum_pos
            for group in self.optimizer.param_groups:
                if "betas" in group:
                    group["betas"] = (momentum, *group["betas"][1:])
                else:
                    group["momentum"] = momentum
        return [base * factor for base in self.base_lrs]


def onecycle(optimizer: torch.optim.Optimizer, total_steps: int, pct_start: float) -> WarmupCosine:
    """The digits/autoencoder schedule: OneCycleLR's shape (resumable with a longer run)."""
    return WarmupCosine(
        optimizer,
        total_steps,
        warmup=pct_start,
        start_factor=1 / 25,
        end_factor=1 / 25e4,
        warmup_shape="cos",
        cycle_momentum=True,
    )
