"""What both RL algorithms share: the run folder, atomic checkpoints with random states, CSV + TensorBoard logs
that continue after `--resume`, the episode bookkeeping of vector envs, and the figures.

A run folder (`runs/rl/<config name>` or `--run_dir`) holds `config.yaml`, `checkpoints/last.pt`,
`episodes.csv` (one row per finished episode), `metrics.csv` (one row per update: losses, entropy, KL, steps/s),
`tensorboard/` and `figures/`.
"""

from __future__ import annotations

import csv
import os
import random
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch
from torch import nn

from i2dl.errors import CheckpointError

CHECKPOINT_FORMAT = "i2dl-rl-1"
EPISODE_FIELDS = ["step", "wall_time", "episode", "episode_return", "episode_length", "points_won", "points_lost"]


def runs_root() -> Path:
    return Path(os.environ.get("I2DL_RUNS", "runs"))


# --- random states and checkpoints ---------------------------------------------------------------------------------
def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_states() -> dict[str, Any]:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def set_rng_states(states: dict[str, Any]) -> None:
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])


def save_checkpoint(payload: dict[str, Any], path: Path) -> Path:
    """`torch.save` to a temporary file beside `path`, then `os.replace`: a kill never leaves half a checkpoint."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save({"format": CHECKPOINT_FORMAT, **payload}, fh)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read an RL checkpoint; a missing, unreadable or foreign file is a one-line CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # pickle/zip errors come in many types
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(err).__name__}: {err})") from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not a checkpoint of `i2dl rl train` (no {CHECKPOINT_FORMAT!r} format tag)")
    return checkpoint


def check_checkpoint_fits(checkpoint: dict[str, Any], source: str, algo: str, env_id: str,
                          network: nn.Module) -> None:
    """One-line CheckpointError unless `checkpoint` was written by `algo` on `env_id` for a network of this shape."""
    if checkpoint["algo"] != algo:
        raise CheckpointError(f"{source} was written by {checkpoint['algo']}, not {algo}")
    trained_on = checkpoint["config"]["env_id"]
    if trained_on != env_id:
        raise CheckpointError(f"{source} was trained on {trained_on}, not {env_id}; "
                              f"use a new --run_dir or the same env_id")
    expected, found = network.state_dict(), checkpoint["model"]
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    if missing or unexpected:
        raise CheckpointError(f"{source} does not fit this network ({len(missing)} missing keys, e.g. "
                              f"{(missing or ['-'])[0]}; {len(unexpected)} unexpected, e.g. {(unexpected or ['-'])[0]})")
    for key, tensor in expected.items():
        if tuple(found[key].shape) != tuple(tensor.shape):
            raise CheckpointError(f"{source} does not fit this network: {key} has shape {tuple(found[key].shape)}, "
                                  f"the network expects {tuple(tensor.shape)}")


# --- logs that survive a kill and continue after --resume ---------------------------------------------------------
class CSVLog:
    """Append-only CSV, flushed after every row. Opened for a resumed run it first drops rows newer than the
    checkpoint (they were logged after it was written and will be produced again)."""

    def __init__(self, path: Path, fields: list[str], resume_step: int | None) -> None:
        self.path, self.fields = Path(path), fields
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is not None and self.path.exists():
            with open(self.path, newline="") as fh:
                rows = [r for r in csv.DictReader(fh) if int(float(r["step"])) <= resume_step]
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, suffix=".tmp")
            with os.fdopen(fd, "w", newline="") as fh:
                writer = csv.DictWriter(fh, fields, extrasaction="ignore")
                writer.writeheader()
                writer.writerows(rows)
            os.replace(tmp, self.path)
        fresh = resume_step is None or not self.path.exists()
        self._fh = open(self.path, "w" if fresh else "a", newline="")
        self._writer = csv.DictWriter(self._fh, fields, extrasaction="ignore")
        if fresh:
            self._writer.writeheader()

    def write(self, row: dict[str, Any]) -> None:
        self._writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()


class RunLogger:
    """episodes.csv + metrics.csv + TensorBoard (`charts/episodic_return`, `losses/...`) for one run. Wall time is
    the training time summed over all sessions of the run, so a resumed curve continues along both axes."""

    def __init__(self, run_dir: Path, metric_fields: list[str], resume_step: int | None = None,
                 wall_time_before: float = 0.0, tensorboard: bool = True) -> None:
        self.episodes = CSVLog(run_dir / "episodes.csv", EPISODE_FIELDS, resume_step)
        self.metrics = CSVLog(run_dir / "metrics.csv", ["step", "wall_time", *metric_fields], resume_step)
        self.writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(run_dir / "tensorboard"), purge_step=resume_step)
        self._start, self._before = time.perf_counter(), wall_time_before
        self.episode_count = 0

    def wall_time(self) -> float:
        return self._before + time.perf_counter() - self._start

    def episode(self, step: int, episode_return: float, episode_length: int, points_won: int = 0,
                points_lost: int = 0) -> None:
        self.episode_count += 1
        self.episodes.write({"step": step, "wall_time": round(self.wall_time(), 3), "episode": self.episode_count,
                             "episode_return": float(episode_return), "episode_length": int(episode_length),
                             "points_won": int(points_won), "points_lost": int(points_lost)})
        if self.writer:
            self.writer.add_scalar("charts/episodic_return", episode_return, step)
            self.writer.add_scalar("charts/episodic_length", episode_length, step)

    def update(self, step: int, **metrics: float) -> None:
        self.metrics.write({"step": step, "wall_time": round(self.wall_time(), 3), **metrics})
        if self.writer:
            for key, value in metrics.items():
                self.writer.add_scalar(key if "/" in key else f"losses/{key}", value, step)

    def close(self) -> None:
        self.episodes.close()
        self.metrics.close()
        if self.writer:
            self.writer.close()


class EpisodeTracker:
    """Return, length and Pong points of each sub-environment's current episode. `step` takes one vector step
    (with `valid` False for next-step-autoreset steps, which belong to no episode) and returns finished episodes."""

    def __init__(self, num_envs: int) -> None:
        self.returns = np.zeros(num_envs)
        self.lengths = np.zeros(num_envs, dtype=np.int64)
        self.won = np.zeros(num_envs, dtype=np.int64)
        self.lost = np.zeros(num_envs, dtype=np.int64)

    def step(self, rewards: np.ndarray, dones: np.ndarray, valid: np.ndarray) -> list[dict[str, float]]:
        rewards = np.where(valid, rewards, 0.0)
        self.returns += rewards
        self.lengths += valid
        self.won += rewards > 0
        self.lost += rewards < 0
        finished = []
        for i in np.flatnonzero(dones & valid):
            finished.append({"episode_return": float(self.returns[i]), "episode_length": int(self.lengths[i]),
                             "points_won": int(self.won[i]), "points_lost": int(self.lost[i])})
            self.returns[i] = self.lengths[i] = self.won[i] = self.lost[i] = 0
        return finished


def read_episodes(run_dir: str | Path) -> dict[str, np.ndarray]:
    """episodes.csv as columns of floats (empty arrays when no episode finished yet)."""
    path = Path(run_dir) / "episodes.csv"
    if not path.exists():
        return {k: np.zeros(0) for k in EPISODE_FIELDS}
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    return {k: np.array([float(r[k] or 0) for r in rows]) for k in EPISODE_FIELDS}


# --- figures --------------------------------------------------------------------------------------------------------
def _smooth(values: np.ndarray, factor: float) -> np.ndarray:
    """The lab's exponential smoothing (`LossHistory(smoothing_factor)`)."""
    out, running = np.empty_like(values, dtype=float), None
    for i, v in enumerate(values):
        running = v if running is None else factor * running + (1 - factor) * v
        out[i] = running
    return out


def plot_learning_curve(run_dir: str | Path, title: str = "") -> Path | None:
    """Episodic return against environment steps and against wall time (raw episodes and a smoothed line)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    episodes = read_episodes(run_dir)
    if len(episodes["step"]) == 0:
        return None
    returns = episodes["episode_return"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, x, label in ((axes[0], episodes["step"], "environment steps"),
                         (axes[1], episodes["wall_time"] / 60, "wall time (minutes)")):
        ax.plot(x, returns, ".", alpha=0.25, markersize=3, label="episode")
        ax.plot(x, _smooth(returns, 0.9), label="smoothed (0.9)")
        ax.set_xlabel(label)
        ax.set_ylabel("episodic return")
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.suptitle(title)
    return _save(fig, Path(run_dir) / "figures" / "learning_curve.png")


def plot_win_percentage(run_dir: str | Path, title: str = "") -> Path | None:
    """The lab's Pong curve: share of points won per game (in %), smoothed, against games played."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    episodes = read_episodes(run_dir)
    played = episodes["points_won"] + episodes["points_lost"]
    if not (played > 0).any():
        return None
    win = 100 * episodes["points_won"] / np.maximum(played, 1)
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    ax.plot(np.arange(1, len(win) + 1), win, ".", alpha=0.3, markersize=3, label="game")
    ax.plot(np.arange(1, len(win) + 1), _smooth(win, 0.95), label="smoothed (0.95)")
    ax.axhline(50, color="gray", lw=0.8, ls="--")
    ax.set_xlabel("games")
    ax.set_ylabel("points won (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(title or "win percentage")
    return _save(fig, Path(run_dir) / "figures" / "win_percentage.png")


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def summarize(values: Iterable[float]) -> str:
    values = np.asarray(list(values), dtype=float)
    return (f"mean {values.mean():.2f} ± {values.std():.2f} (min {values.min():.0f}, max {values.max():.0f}, "
            f"{len(values)} episodes)")


# --- starting or resuming a run -------------------------------------------------------------------------------------
# Settings a resumed run may change (limits and bookkeeping); every other one must match the checkpoint.
RESUMABLE_CHANGES = {"total_steps", "episodes", "checkpoint_every", "snapshot_every", "time_limit", "threads", "device", "vectorization",
                     "tensorboard"}


def last_checkpoint(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints" / "last.pt"


def snapshot_checkpoint(run_dir: Path, global_step: int) -> Path:
    """checkpoints/step_<9-digit agent step>.pt: the snapshots kept with `snapshot_every`, in step order by name."""
    return Path(run_dir) / "checkpoints" / f"step_{global_step:09d}.pt"


def start_run(run_dir: Path, algo: str, config: dict[str, Any], network: nn.Module, optimizer: torch.optim.Optimizer,
              resume: bool) -> dict[str, Any] | None:
    """Prepare `run_dir` and return the checkpoint to continue from (model, optimiser and RNG states restored), or
    None for a new run. A new run never overwrites an existing one; `--resume` without a checkpoint starts afresh."""
    import yaml

    from i2dl.errors import I2DLError

    path = last_checkpoint(run_dir)
    checkpoint = None
    if path.exists() and not resume:
        raise I2DLError(f"{run_dir} already holds a run ({path}); add --resume to continue it, "
                        f"or give another --run_dir")
    if resume and path.exists():
        checkpoint = load_checkpoint(path)
        check_checkpoint_fits(checkpoint, str(path), algo, config["env_id"], network)
        for key, value in config.items():
            old = checkpoint["config"].get(key)
            if key not in RESUMABLE_CHANGES and old != value:
                raise CheckpointError(f"{path} was trained with {key}={old!r}, not {value!r}; resume with the same "
                                      f"settings or start a new --run_dir")
        network.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        set_rng_states(checkpoint["rng"])
        print(f"resuming {run_dir} from step {checkpoint['global_step']} ({path})")
    elif resume:
        print(f"no checkpoint in {run_dir} yet: starting a new run")
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / "config.yaml", "w") as fh:
        yaml.safe_dump({"algo": algo, **config}, fh, sort_keys=False)
    return checkpoint


def run_episodes(network, env, episodes: int, seed: int, greedy: bool, frames: list | None = None,
                 max_frames: int = 0) -> list[float]:
    """Returns of `episodes` episodes reset with seeds seed, seed+1, ...; optionally collects rendered frames."""
    returns = []
    for k in range(episodes):
        obs, _ = env.reset(seed=seed + k)
        total, done = 0.0, False
        while not done:
            if frames is not None and (not max_frames or len(frames) < max_frames):
                frames.append(env.render())
            with torch.no_grad():
                action = int(network.act(torch.as_tensor(np.asarray(obs))[None], greedy=greedy)[0])
            obs, reward, terminated, truncated, _ = env.step(action)
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
    return returns


class BestCheckpoint:
    """Keeps `checkpoints/best.pt`: the network whenever the mean return of the last `window` finished episodes
    reaches a new maximum (policy-gradient training is noisy; this is the agent to evaluate)."""

    def __init__(self, run_dir: Path, window: int = 20, best: float = -float("inf")) -> None:
        self.path, self.window, self.best = Path(run_dir) / "checkpoints" / "best.pt", window, best

    def update(self, returns: list[float], payload: Callable[[], dict[str, Any]]) -> bool:
        if len(returns) < self.window:
            return False
        return self.consider(float(np.mean(returns[-self.window:])), payload)

    def consider(self, mean: float, payload: Callable[[], dict[str, Any]]) -> bool:
        """Save the network if `mean` (a training or an evaluation mean return) is a new best."""
        if mean <= self.best:
            return False
        self.best = mean
        save_checkpoint({**payload(), "best_mean_return": mean}, self.path)
        return True
