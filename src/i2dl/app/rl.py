"""RL tab: a CartPole or Pong checkpoint and a seed -> the agent plays one episode (greedy actions), the page shows
the video and the score (Pong: both players' points)."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from i2dl.app.common import (
    AppContext,
    AppError,
    RunSummary,
    TabParts,
    checkpoint_choices,
    resolve_checkpoint,
    shows_errors,
)

LAB = "rl"
MAX_FRAMES = 5000  # longer episodes are played to the end but the video stops here
FPS = 30
MIN_HEIGHT = 400  # smaller frames are scaled up by a whole factor
_env_lock = threading.Lock()


# --- the RL lab, used only here ------------------------------------------------------------------------------------
def load_rl_agent(path: Path, seed: int):
    """(network, environment rendering RGB frames, env id) of an RL checkpoint file."""
    from i2dl.rl.evaluate import load_agent

    agent = load_agent(path)
    return agent.network, agent.make_env(seed, render_mode="rgb_array"), agent.env_id


def play(network, env, seed: int, frames) -> float:
    """The return of one greedy episode reset with `seed`; rendered frames go to `frames`."""
    from i2dl.rl.evaluate import run_episodes

    return run_episodes(network, env, 1, seed, greedy=True, frames=frames, max_frames=MAX_FRAMES)[0]


# -------------------------------------------------------------------------------------------------------------------
def run_env_id(run: RunSummary) -> str:
    import yaml

    try:
        config = yaml.safe_load((run.run_dir / "config.yaml").read_text()) or {}
        return str(config.get("env_id") or "") if isinstance(config, dict) else ""
    except (OSError, yaml.YAMLError):
        return ""


def choices(ctx: AppContext) -> list[tuple[str, str]]:
    return checkpoint_choices(ctx.runs, LAB, extra=lambda run: f" ({run_env_id(run)})" if run_env_id(run) else "")


class VideoFrames(list):
    """What `run_episodes` appends rendered frames to: each frame goes straight into the MP4 encoder (an episode's
    frames are never all in memory)."""

    def __init__(self, path: Path, fps: int) -> None:
        super().__init__()
        self.path, self.fps, self.count, self.writer = path, fps, 0, None

    def append(self, frame) -> None:
        import imageio.v2 as imageio

        frame = np.asarray(frame, dtype=np.uint8)
        if frame.shape[0] < MIN_HEIGHT:  # Atari's 210x160: blown up with whole pixels, not blurred by the player
            k = -(-MIN_HEIGHT // frame.shape[0])
            frame = frame.repeat(k, axis=0).repeat(k, axis=1)
        if self.writer is None:
            self.writer = imageio.get_writer(
                self.path,
                fps=self.fps,
                codec="libx264",
                macro_block_size=2,
                pixelformat="yuv420p",
                ffmpeg_params=["-preset", "veryfast"],
                ffmpeg_log_level="error",
            )
        self.writer.append_data(frame)
        self.count += 1

    def __len__(self) -> int:
        return self.count

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class ScoreKeeper:
    """Counts the points of both players from the rewards (+1 the agent's, -1 the opponent's) while delegating
    everything else to the environment it wraps."""

    def __init__(self, env) -> None:
        self.env, self.points, self.steps = env, [0, 0], 0

    def reset(self, **kwargs):
        self.points, self.steps = [0, 0], 0
        return self.env.reset(**kwargs)

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.steps += 1
        if reward > 0:
            self.points[0] += 1
        elif reward < 0:
            self.points[1] += 1
        return obs, reward, terminated, truncated, info

    def __getattr__(self, name):
        return getattr(self.env, name)


def play_episode(ctx: AppContext, choice: str | None, seed) -> tuple[str, str, dict, str]:
    """(MP4 path, score line, {"return", "steps", "points"}, summary) of one greedy episode with `seed`."""
    path = resolve_checkpoint(ctx.runs, choice, LAB)
    try:
        seed = int(seed)
    except (TypeError, ValueError):
        raise AppError(f"seed {seed!r}: give a whole number") from None
    if not 0 <= seed < 2**31:
        raise AppError(f"seed {seed}: give a whole number from 0 to {2**31 - 1}")
    try:
        import gymnasium as gym
    except ImportError:
        raise AppError("the RL tab needs the rl extra: pip install 'i2dl[rl,video]'") from None
    network, env, env_id = ctx.models.get(LAB, path, lambda p: load_rl_agent(p, seed))
    video = ctx.output_path("episode.mp4")
    frames = VideoFrames(video, FPS)
    with _env_lock:  # one environment per checkpoint: its episodes take turns
        keeper = ScoreKeeper(env)
        try:
            total = play(network, keeper, seed, frames)
        except gym.error.DependencyNotInstalled as err:
            raise AppError(f"cannot draw {env_id}: {err} (pip install 'i2dl[video]')") from None
        finally:
            frames.close()
        points, steps = list(keeper.points), keeper.steps
    if frames.count == 0:
        raise AppError(f"{env_id} rendered no frames")
    if "Pong" in env_id:
        score = f"agent {points[0]} : {points[1]} opponent"
    else:
        score = f"return {total:.0f} ({steps} steps)"
    clipped = f"; the video shows the first {MAX_FRAMES} frames" if frames.count >= MAX_FRAMES else ""
    return (
        str(video),
        score,
        {
            "return": total,
            "steps": steps,
            "points": {"agent": points[0], "opponent": points[1]},
            "env_id": env_id,
            "seed": seed,
        },
        f"**{env_id}**, seed {seed}: {score}{clipped}",
    )


def build(ctx: AppContext):
    import gradio as gr

    from i2dl.app.components import checkpoint_picker

    found = choices(ctx)
    checkpoint, hint = checkpoint_picker(found, LAB, ctx.runs, "agent")
    with gr.Row(equal_height=False):
        with gr.Column(scale=1):
            seed = gr.Number(value=0, precision=0, minimum=0, maximum=2**31 - 1, label="seed", elem_id="rl-seed")
            button = gr.Button("Play one episode", variant="primary", elem_id="rl-play")
            score = gr.Textbox(label="score", interactive=False, elem_id="rl-score")
            message = gr.Markdown(elem_id="rl-message", elem_classes="i2dl-message")
        with gr.Column(scale=2):
            video = gr.Video(label="the episode", interactive=False, autoplay=True, elem_id="rl-video", height=420)
            with gr.Accordion("episode as JSON", open=False):
                numbers = gr.JSON(elem_id="rl-numbers")
    button.click(
        shows_errors(4)(lambda c, s: play_episode(ctx, c, s)),
        [checkpoint, seed],
        [video, score, numbers, message],
        api_name="rl",
    )
    return TabParts(checkpoint, hint, choices)
