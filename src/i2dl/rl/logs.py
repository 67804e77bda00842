"""The logs of an RL run, which continue after `--resume`: `episodes.csv` (one row per finished episode),
`metrics.csv` (one row per update: losses, entropy, KL, steps/s) and TensorBoard events; and the episode
bookkeeping of vector environments (return, length and Pong points of each sub-environment's current episode)."""

from __future__ import annotations

import csv
import time
from pathlib import Path
from typing import Any

import numpy as np

from i2dl.files import atomic_open

EPISODE_FIELDS = ["step", "wall_time", "episode", "episode_return", "episode_length", "points_won", "points_lost"]


class CSVLog:
    """Append-only CSV, flushed after every row. Opened for a resumed run it first drops rows newer than the
    checkpoint (they were logged after it was written and will be produced again)."""

    def __init__(self, path: Path, fields: list[str], resume_step: int | None) -> None:
        self.path, self.fields = Path(path), fields
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is not None and self.path.exists():
            with open(self.path, newline="") as fh:
                rows = [r for r in csv.DictReader(fh) if int(float(r["step"])) <= resume_step]
            with atomic_open(self.path, "w", newline="") as fh:
                writer = csv.DictWriter(fh, fields, extrasaction="ignore")
                writer.writeheader()
                writer.writerows(rows)
        fresh = resume_step is None or not self.path.exists()
        self._fh = open(self.path, "w" if fresh else "a", newline="")  # noqa: SIM115 (open for the run's life)
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

    def __init__(
        self,
        run_dir: Path,
        metric_fields: list[str],
        resume_step: int | None = None,
        wall_time_before: float = 0.0,
        tensorboard: bool = True,
    ) -> None:
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

    def episode(
        self, step: int, episode_return: float, episode_length: int, points_won: int = 0, points_lost: int = 0
    ) -> None:
        self.episode_count += 1
        self.episodes.write(
            {
                "step": step,
                "wall_time": round(self.wall_time(), 3),
                "episode": self.episode_count,
                "episode_return": float(episode_return),
                "episode_length": int(episode_length),
                "points_won": int(points_won),
                "points_lost": int(points_lost),
            }
        )
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
    (with `valid` False for next-step-autoreset steps, which belong to no episode) and returns finished episodes
    as (sub-environment index, episode) pairs."""

    def __init__(self, num_envs: int) -> None:
        self.returns = np.zeros(num_envs)
        self.lengths = np.zeros(num_envs, dtype=np.int64)
        self.won = np.zeros(num_envs, dtype=np.int64)
        self.lost = np.zeros(num_envs, dtype=np.int64)

    def step(self, rewards: np.ndarray, dones: np.ndarray, valid: np.ndarray) -> list[tuple[int, dict[str, float]]]:
        rewards = np.where(valid, rewards, 0.0)
        self.returns += rewards
        self.lengths += valid
        self.won += rewards > 0
        self.lost += rewards < 0
        finished = []
        for i in np.flatnonzero(dones & valid):
            finished.append(
                (
                    int(i),
                    {
                        "episode_return": float(self.returns[i]),
                        "episode_length": int(self.lengths[i]),
                        "points_won": int(self.won[i]),
                        "points_lost": int(self.lost[i]),
                    },
                )
            )
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
