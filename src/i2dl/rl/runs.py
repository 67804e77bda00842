"""The run folder of `i2dl rl train`, on the core every lab shares (`i2dl.runs`, `i2dl.checkpoints`, `i2dl.files`):
the lock that keeps a second process out, `results.json`, the RL checkpoint format, and resuming.

A run folder (`runs/rl/<config name>` or `--run_dir`) holds `config.yaml`, `results.json`, `checkpoints/last.pt`
(plus `best.pt` and, with `snapshot_every`, `step_<agent steps>.pt`), `episodes.csv`, `metrics.csv`,
`tensorboard/` and `figures/` (see `logs.py` and `figures.py`).

An RL checkpoint is a dict of plain data read with the safe unpickler: `format`, `algo`, `config` (the settings as
numbers and strings), `model` and `optimizer` state dicts, `global_step`, `wall_time`, `rng` (random states as
tensors and numbers) and the algorithm's counters. Format `i2dl-rl-1` (before December 2026) stored NumPy's random
state as an array; it still loads and resumes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn

from i2dl import checkpoints
from i2dl.errors import CheckpointError, I2DLError
from i2dl.files import write_text
from i2dl.runs import Run, runs_root

CHECKPOINT_FORMAT = "i2dl-rl-2"
READABLE_FORMATS = ("i2dl-rl-1", CHECKPOINT_FORMAT)
HEADLINE = "train/mean_return_last100"
# Settings a resumed run may change (limits and bookkeeping); every other one must match the checkpoint.
RESUMABLE_CHANGES = {
    "total_steps",
    "episodes",
    "checkpoint_every",
    "snapshot_every",
    "time_limit",
    "threads",
    "env_threads",
    "env_groups",
    "workers",
    "device",
    "vectorization",
    "tensorboard",
    "precision",
    "channels_last",
}


def rl_runs_root() -> Path:
    return runs_root() / "rl"


# --- checkpoints ----------------------------------------------------------------------------------------------------
def save_checkpoint(payload: dict[str, Any], path: Path) -> Path:
    """Write an RL checkpoint whole or not at all (temporary file, then rename)."""
    return checkpoints.save({"format": CHECKPOINT_FORMAT, **payload}, path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read an RL checkpoint with the safe unpickler; a missing, unreadable, unsafe or foreign file is a one-line
    CheckpointError."""
    checkpoint = checkpoints.load(path, "checkpoint")
    if not isinstance(checkpoint, dict) or checkpoint.get("format") not in READABLE_FORMATS:
        raise CheckpointError(f"{path}: not a checkpoint of `i2dl rl train` (no {CHECKPOINT_FORMAT!r} format tag)")
    return checkpoint


def with_defaults(config: dict[str, Any], config_class: type) -> dict[str, Any]:
    """A checkpoint's settings completed with the defaults of settings added after it was written."""
    assert is_dataclass(config_class)
    defaults = {f.name: getattr(config_class(), f.name) for f in fields(config_class)}
    return {**defaults, **config}


def check_checkpoint_fits(checkpoint: dict[str, Any], source: str, algo: str, env_id: str, network: nn.Module) -> None:
    """One-line CheckpointError unless `checkpoint` was written by `algo` on `env_id` for a network of this shape."""
    if checkpoint.get("algo") != algo:
        raise CheckpointError(f"{source} was written by {checkpoint.get('algo')}, not {algo}")
    trained_on = checkpoint["config"]["env_id"]
    if trained_on != env_id:
        raise CheckpointError(
            f"{source} was trained on {trained_on}, not {env_id}; use a new --run_dir or the same env_id"
        )
    checkpoints.check_state_dict_compatible(network.state_dict(), checkpoint.get("model"), source, "network")


def last_checkpoint(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints" / "last.pt"


def snapshot_checkpoint(run_dir: Path, global_step: int) -> Path:
    """checkpoints/step_<9-digit agent step>.pt: the snapshots kept with `snapshot_every`, in step order by name."""
    return Path(run_dir) / "checkpoints" / f"step_{global_step:09d}.pt"


class BestCheckpoint:
    """Keeps `checkpoints/best.pt`: the network whenever the mean return of the last `window` finished episodes
    reaches a new maximum (policy-gradient training is noisy; this is the agent to evaluate)."""

    def __init__(self, run_dir: Path, window: int = 20, best: float = -float("inf")) -> None:
        self.path, self.window, self.best = Path(run_dir) / "checkpoints" / "best.pt", window, best

    def update(self, returns: list[float], payload: Callable[[], dict[str, Any]]) -> bool:
        if len(returns) < self.window:
            return False
        return self.consider(float(np.mean(returns[-self.window :])), payload)

    def consider(self, mean: float, payload: Callable[[], dict[str, Any]]) -> bool:
        """Save the network if `mean` (a training or an evaluation mean return) is a new best."""
        if mean <= self.best:
            return False
        self.best = mean
        save_checkpoint({**payload(), "best_mean_return": mean}, self.path)
        return True


# --- starting, resuming and finishing a run -------------------------------------------------------------------------
class TrainingRun:
    """A training session in a run folder, used as `with start_run(...) as run:`. It holds the folder's lock from
    the start (a second process on the same folder stops with one line), writes results.json (status running,
    then finished, or failed if the block raises, stopped on Ctrl-C) and knows the checkpoint it continues from."""

    def __init__(self, run: Run, checkpoint: dict[str, Any] | None) -> None:
        self.run, self.checkpoint = run, checkpoint

    def progress(self, metrics: dict[str, float], steps: int, wall_time: float) -> None:
        """Record where training is (called with every checkpoint, so results.json matches last.pt)."""
        self.run.update(metrics, steps=int(steps), wall_time=round(wall_time, 2))

    def finish(self, metrics: dict[str, float], steps: int, wall_time: float) -> None:
        self.run.finish(metrics, steps=int(steps), wall_time=round(wall_time, 2))

    def __enter__(self) -> TrainingRun:  # noqa: PYI034
        return self

    def __exit__(self, kind, error, traceback) -> None:
        try:
            if error is not None:
                self.run.fail(error)
        finally:
            self.run.unlock()


def start_run(
    run_dir: Path,
    algo: str,
    config: dict[str, Any],
    network: nn.Module,
    optimizer: torch.optim.Optimizer,
    resume: bool,
    config_name: str | None = None,
    defaults: dict[str, Any] | None = None,
) -> TrainingRun:
    """Lock `run_dir` and prepare it: with `resume`, restore network, optimiser and random states from its last
    checkpoint (`TrainingRun.checkpoint`, None for a new run). A new run never overwrites an existing one;
    `--resume` without a checkpoint starts afresh. `defaults` are the values of settings an older checkpoint
    lacks."""
    run_dir = Path(run_dir)
    run = Run(
        run_dir,
        "rl",
        config_name or run_dir.name,
        HEADLINE,
        higher_is_better=True,
        extra_versions=("gymnasium", "ale-py"),
    )
    run.lock()
    try:
        checkpoint = _continue_from(run_dir, algo, config, network, optimizer, resume, defaults or {})
        write_text(run_dir / "config.yaml", yaml.safe_dump({"algo": algo, **config}, sort_keys=False))
        done = (
            {"steps": checkpoint["global_step"], "wall_time": round(checkpoint["wall_time"], 2)} if checkpoint else {}
        )
        run.start(resume=checkpoint is not None, precision=config.get("precision"), **done)
    except BaseException:
        run.unlock()
        raise
    return TrainingRun(run, checkpoint)


def _continue_from(
    run_dir: Path,
    algo: str,
    config: dict[str, Any],
    network: nn.Module,
    optimizer: torch.optim.Optimizer,
    resume: bool,
    defaults: dict[str, Any],
) -> dict | None:
    path = last_checkpoint(run_dir)
    if path.exists() and not resume:
        raise I2DLError(
            f"{run_dir} already holds a run ({path}); add --resume to continue it, or give another --run_dir"
        )
    if not resume:
        return None
    if not path.exists():
        print(f"no checkpoint in {run_dir} yet: starting a new run")
        return None
    checkpoint = load_checkpoint(path)
    check_checkpoint_fits(checkpoint, str(path), algo, config["env_id"], network)
    for key, value in config.items():
        old = checkpoint["config"].get(key, defaults.get(key))
        if key not in RESUMABLE_CHANGES and old != value:
            raise CheckpointError(
                f"{path} was trained with {key}={old!r}, not {value!r}; resume with the same "
                f"settings or start a new --run_dir"
            )
    network.load_state_dict(checkpoint["model"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    checkpoints.set_rng_states(checkpoint["rng"])
    print(f"resuming {run_dir} from step {checkpoint['global_step']} ({path})")
    return checkpoint
