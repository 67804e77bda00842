"""Environments for the RL lab: CartPole and Atari Pong (ale-py ships the ROMs: `gym.register_envs(ale_py)`).

Observation pipelines (`preprocessing`):
- `none`:  the environment's own observations (CartPole's 4 numbers).
- `lab`:   the course's Pong preprocessing: crop the playing field, keep every second row/column of the red channel,
           remove the two background colours, binarise, and feed the *difference* of consecutive frames so the
           policy can see the ball move. Output (1, 80, 80) float32 in {-1, 0, 1}. The lab plays with frameskip 5.
- `atari`: the standard Atari preprocessing (`AtariPreprocessing`: no-op starts, max-pooled frame skip 4,
           84x84 greyscale) followed by a stack of `frame_stack` frames: (frame_stack, 84, 84) uint8.

Vectorisation (`make_vector_env`): `sync` and `async` are gymnasium's vector envs over `make_env` copies (one process,
or one process per environment); `ale` is ale-py's batched C++ vector environment (`AtariVectorEnv`), which does the
`atari` preprocessing itself (frame skip 4 with max-pooling, 84x84 grey, frame stack, up to 30 no-op starts and FIRE
at reset) in its own threads, several times faster than the Python wrappers. Its frame stack starts from zeros
(`make_env(..., stack_padding="zero")` gives the same observations in one gymnasium env, for recording videos).

Vector environments keep gymnasium 1.x's default next-step autoreset: after a step reports terminated/truncated,
the *next* step of that sub-environment ignores its action and returns the first observation of a new episode with
reward 0. The algorithms mark those steps invalid (see `ppo.collect_rollout`), so no transition crosses an episode.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np

from i2dl.errors import I2DLError

PREPROCESSINGS = ("none", "lab", "atari")

# The lab's Pong frames: rows 35..194 are the playing field; these red-channel values are background.
PONG_CROP = slice(35, 195)
PONG_BACKGROUND = (144, 109)


def _register_atari() -> None:
    import ale_py

    gym.register_envs(ale_py)


def check_env_id(env_id: str) -> None:
    """Raise a one-line I2DLError for an environment id gymnasium (with ale-py) does not know."""
    if env_id.startswith("ALE/") or "NoFrameskip" in env_id:
        _register_atari()
    try:
        gym.spec(env_id)
    except gym.error.Error as err:
        raise I2DLError(f"unknown environment id {env_id!r} ({err}); try CartPole-v1 or ALE/Pong-v5") from None


def is_atari(env_id: str) -> bool:
    return env_id.startswith("ALE/") or "NoFrameskip" in env_id


def preprocess_pong(frame: np.ndarray) -> np.ndarray:
    """The lab's `preprocess_pong`: (210, 160, 3) uint8 RGB frame -> (80, 80) float32 with 1 where a paddle or the
    ball is and 0 elsewhere (crop, downsample by 2, background removed, binarised)."""
    image = frame[PONG_CROP, ::2, 0][::2].copy()  # 160x160 field -> 80x80, red channel
    for colour in PONG_BACKGROUND:
        image[image == colour] = 0
    return (image != 0).astype(np.float32)


def pong_change(previous_frame: np.ndarray, current_frame: np.ndarray) -> np.ndarray:
    """The lab's frame difference: current minus previous preprocessed frame, values in {-1, 0, 1}."""
    return preprocess_pong(current_frame) - preprocess_pong(previous_frame)


class LabPongObservation(gym.Wrapper):
    """Observation = `pong_change(previous raw frame, current raw frame)` as (1, 80, 80) float32; the first
    observation of an episode is all zeros (the lab starts with previous = current)."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.observation_space = gym.spaces.Box(-1.0, 1.0, (1, 80, 80), np.float32)
        self._previous: np.ndarray | None = None

    def reset(self, **kwargs):
        frame, info = self.env.reset(**kwargs)
        self._previous = preprocess_pong(frame)
        return np.zeros((1, 80, 80), np.float32), info

    def step(self, action):
        frame, reward, terminated, truncated, info = self.env.step(action)
        current = preprocess_pong(frame)
        change = (current - self._previous)[None]
        self._previous = current
        return change, reward, terminated, truncated, info


ATARI_FRAME_SKIP = 4  # Atari frames behind one agent step with the `atari` preprocessing


VECTORIZATIONS = ("sync", "async", "ale")


def make_env(
    env_id: str,
    seed: int | None = None,
    preprocessing: str = "none",
    frame_stack: int = 4,
    env_kwargs: dict[str, Any] | None = None,
    render_mode: str | None = None,
    record_stats: bool = True,
    stack_padding: str = "reset",
) -> gym.Env:
    """One environment with the chosen observation pipeline (see the module docstring); `stack_padding` is how
    the `atari` frame stack starts an episode: copies of the first frame ("reset") or zeros ("zero", as ale-py's
    vector env does)."""
    check_env_id(env_id)
    if preprocessing not in PREPROCESSINGS:
        raise I2DLError(f"unknown preprocessing {preprocessing!r}; choose from {', '.join(PREPROCESSINGS)}")
    if preprocessing != "none" and not is_atari(env_id):
        raise I2DLError(f"preprocessing {preprocessing!r} is for Atari frames, not {env_id!r}; use 'none'")
    kwargs = dict(env_kwargs or {})
    if render_mode:
        kwargs["render_mode"] = render_mode
    if preprocessing == "atari":
        kwargs.setdefault("frameskip", 1)  # AtariPreprocessing skips (and max-pools) frames itself
        kwargs.setdefault("repeat_action_probability", 0.0)
    try:
        env = gym.make(env_id, **kwargs)
    except TypeError as err:
        raise I2DLError(f"bad env_kwargs {kwargs} for {env_id!r}: {err}") from None
    if record_stats:
        env = gym.wrappers.RecordEpisodeStatistics(env)
    if preprocessing == "lab":
        env = LabPongObservation(env)
    elif preprocessing == "atari":
        env = gym.wrappers.AtariPreprocessing(env, noop_max=30, frame_skip=ATARI_FRAME_SKIP, screen_size=84)
        env = gym.wrappers.FrameStackObservation(env, frame_stack, padding_type=stack_padding)
    if seed is not None:
        env.action_space.seed(seed)
    return env


def make_vector_env(
    env_id: str,
    num_envs: int,
    seed: int,
    preprocessing: str = "none",
    frame_stack: int = 4,
    env_kwargs: dict[str, Any] | None = None,
    vectorization: str = "sync",
    threads: int = 0,
    groups: int = 1,
) -> gym.vector.VectorEnv | AtariEnvGroups:
    """`num_envs` environments in a gymnasium Sync- or AsyncVectorEnv or in ale-py's vector env (`vectorization`
    ale; `threads` emulator threads, 0: one per core; `groups` > 1: `AtariEnvGroups`), all with next-step
    autoreset, reset with seeds seed, seed+1, ... by the caller (`envs.reset(seed=seed)` seeds sub-env i with
    seed+i)."""
    if vectorization == "ale":
        if preprocessing != "atari":
            raise I2DLError(
                f"vectorization 'ale' does the atari preprocessing itself; set preprocessing: atari "
                f"(not {preprocessing!r}) or use vectorization sync"
            )
        if groups > 1:
            if num_envs % groups:
                raise I2DLError(f"num_envs ({num_envs}) must be a multiple of env_groups ({groups})")
            per_group = max(1, (threads or os.cpu_count() or 1) // groups)
            return AtariEnvGroups(
                [
                    make_ale_vector_env(env_id, num_envs // groups, frame_stack, env_kwargs, per_group)
                    for _ in range(groups)
                ]
            )
        return make_ale_vector_env(env_id, num_envs, frame_stack, env_kwargs, threads)
    make_env(env_id, None, preprocessing, frame_stack, env_kwargs).close()  # fail early, in this process
    thunks: list[Callable[[], gym.Env]] = [
        (lambda: make_env(env_id, None, preprocessing, frame_stack, env_kwargs)) for _ in range(num_envs)
    ]
    if vectorization == "sync":
        envs = gym.vector.SyncVectorEnv(thunks)
    elif vectorization == "async":
        envs = gym.vector.AsyncVectorEnv(thunks)
    else:
        raise I2DLError(f"unknown vectorization {vectorization!r}; choose from {', '.join(VECTORIZATIONS)}")
    envs.action_space.seed(seed)
    return envs


def ale_game(env_id: str) -> str:
    """ale-py's ROM name of a gymnasium Atari id: ALE/Pong-v5 -> pong, ALE/MsPacman-v5 -> ms_pacman."""
    name = env_id.split("/")[-1].split("-v")[0].replace("NoFrameskip", "").replace("Deterministic", "")
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def make_ale_vector_env(
    env_id: str, num_envs: int, frame_stack: int = 4, env_kwargs: dict[str, Any] | None = None, threads: int = 0
) -> gym.vector.VectorEnv:
    """ale-py's `AtariVectorEnv` with the standard preprocessing (frame skip 4 with max-pooling, 84x84 grey,
    `frame_stack` frames, up to 30 no-op starts, FIRE at reset) and raw (unclipped) rewards, so that returns are game
    scores. `env_kwargs` are its settings (e.g. `repeat_action_probability: 0.25` for sticky actions);
    `max_episode_steps` is read as agent steps, like gymnasium's. Unlike gymnasium's `AtariPreprocessing`, the no-op
    starts count agent steps (up to 30 x 4 frames) and the frame stack starts from zeros."""
    if not is_atari(env_id):
        raise I2DLError(f"vectorization 'ale' is for Atari games (ALE/...), not {env_id!r}; use sync or async")
    check_env_id(env_id)
    from ale_py.vector_env import AtariVectorEnv

    kwargs: dict[str, Any] = {"reward_clipping": False, "repeat_action_probability": 0.0}
    kwargs.update(env_kwargs or {})
    if "max_episode_steps" in kwargs:
        kwargs["max_num_frames_per_episode"] = int(kwargs.pop("max_episode_steps")) * ATARI_FRAME_SKIP
    if kwargs.pop("frameskip", 1) != 1:
        raise I2DLError(
            "vectorization 'ale' always skips 4 frames per agent step (AtariPreprocessing's skip); "
            "leave frameskip out of env_kwargs"
        )
    try:
        return AtariVectorEnv(
            ale_game(env_id), num_envs, num_threads=threads, stack_num=frame_stack, frameskip=ATARI_FRAME_SKIP, **kwargs
        )
    except TypeError as err:
        raise I2DLError(f"bad env_kwargs {env_kwargs} for ale-py's vector env: {err}") from None


class AtariEnvGroups:
    """ale-py vector envs side by side, as one vector env of all their sub-environments (in order). Besides the
    synchronous `step`, `send(group, actions)` / `recv(group)` let a caller choose one group's actions while the
    others' emulation runs in their own threads (see `ppo.collect_rollout`)."""

    def __init__(self, groups: list) -> None:
        self.groups = groups
        self.sizes = [g.num_envs for g in groups]
        self.slices = [slice(sum(self.sizes[:k]), sum(self.sizes[: k + 1])) for k in range(len(groups))]
        self.num_envs = sum(self.sizes)
        self.single_observation_space = groups[0].single_observation_space
        self.single_action_space = groups[0].single_action_space
        self.metadata = groups[0].metadata

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """Sub-environment i of the whole is reset with seed + i, as in one vector env."""
        found = [g.reset(seed=None if seed is None else seed + s.start) for g, s in zip(self.groups, self.slices)]
        return np.concatenate([obs for obs, _ in found]), {}

    def send(self, group: int, actions: np.ndarray) -> None:
        self.groups[group].send(np.asarray(actions))

    def recv(self, group: int):
        return self.groups[group].recv()

    def step(self, actions: np.ndarray):
        for k, part in enumerate(self.slices):
            self.send(k, actions[part])
        results = [self.recv(k) for k in range(len(self.groups))]
        obs, rewards, terminated, truncated = (np.concatenate([r[i] for r in results]) for i in range(4))
        return obs, rewards, terminated, truncated, {}

    def close(self) -> None:
        for g in self.groups:
            g.close()
