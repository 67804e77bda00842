"""Figures of RL runs, drawn from their `episodes.csv`: the learning curve of one run, the lab's Pong win percentage,
and several runs' scores against agent steps and against wall time on the same axes (`pong-report`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from i2dl.rl.logs import read_episodes
from i2dl.viz import save_figure


def smooth(values: np.ndarray, factor: float) -> np.ndarray:
    """The lab's exponential smoothing (`LossHistory(smoothing_factor)`)."""
    out, running = np.empty_like(values, dtype=float), None
    for i, v in enumerate(values):
        running = v if running is None else factor * running + (1 - factor) * v
        out[i] = running
    return out


def plot_learning_curve(run_dir: str | Path, title: str = "") -> Path | None:
    """Episodic return against environment steps and against wall time (raw episodes and a smoothed line)."""
    episodes = read_episodes(run_dir)
    if len(episodes["step"]) == 0:
        return None
    returns = episodes["episode_return"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, x, label in (
        (axes[0], episodes["step"], "environment steps"),
        (axes[1], episodes["wall_time"] / 60, "wall time (minutes)"),
    ):
        ax.plot(x, returns, ".", alpha=0.25, markersize=3, label="episode")
        ax.plot(x, smooth(returns, 0.9), label="smoothed (0.9)")
        ax.set_xlabel(label)
        ax.set_ylabel("episodic return")
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.suptitle(title)
    return save_figure(fig, Path(run_dir) / "figures" / "learning_curve.png")


def plot_win_percentage(run_dir: str | Path, title: str = "") -> Path | None:
    """The lab's Pong curve: share of points won per game (in %), smoothed, against games played."""
    episodes = read_episodes(run_dir)
    played = episodes["points_won"] + episodes["points_lost"]
    if not (played > 0).any():
        return None
    win = 100 * episodes["points_won"] / np.maximum(played, 1)
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    ax.plot(np.arange(1, len(win) + 1), win, ".", alpha=0.3, markersize=3, label="game")
    ax.plot(np.arange(1, len(win) + 1), smooth(win, 0.95), label="smoothed (0.95)")
    ax.axhline(50, color="gray", lw=0.8, ls="--")
    ax.set_xlabel("games")
    ax.set_ylabel("points won (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(title or "win percentage")
    return save_figure(fig, Path(run_dir) / "figures" / "win_percentage.png")


def plot_score_comparison(
    runs: Sequence[tuple[str, str | Path]],
    path: Path,
    evaluations: dict[str, list[tuple[int, float, float]]] | None = None,
    title: str = "",
) -> Path | None:
    """Training score (smoothed, sampled actions) of several runs against agent steps and against wall time, one
    colour per run (`runs` = (label, run folder) pairs); `evaluations[label]` adds evaluation points
    (agent step, wall seconds, mean score) of that run's checkpoints as markers."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    drawn = False
    for k, (label, run_dir) in enumerate(runs):
        episodes = read_episodes(run_dir)
        colour = f"C{k}"
        if len(episodes["step"]):
            score = smooth(episodes["episode_return"], 0.95)
            axes[0].plot(episodes["step"] / 1e6, score, color=colour, label=f"{label} (training, smoothed)")
            axes[1].plot(episodes["wall_time"] / 60, score, color=colour, label=f"{label} (training, smoothed)")
            drawn = True
        points = (evaluations or {}).get(label) or []
        if points:
            steps, seconds, means = (np.array(v, dtype=float) for v in zip(*points))
            axes[0].plot(steps / 1e6, means, "o", color=colour, label=f"{label} (evaluation)")
            axes[1].plot(seconds / 60, means, "o", color=colour, label=f"{label} (evaluation)")
            drawn = True
    if not drawn:
        plt.close(fig)
        return None
    for ax, label in ((axes[0], "agent steps (millions)"), (axes[1], "training wall time (minutes)")):
        ax.set_xlabel(label)
        ax.set_ylabel("score")
        ax.axhline(0, color="gray", lw=0.8, ls="--")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7, loc="lower right")
    fig.suptitle(title)
    return save_figure(fig, Path(path))
