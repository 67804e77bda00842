"""Evaluation of a trained agent: load a checkpoint into its network, and play games with distinct seeds under one of
two protocols, with greedy (most probable) or sampled actions.

Protocols (Atari):
- `no sticky actions`: the environment of training (`repeat_action_probability` 0; random no-op starts).
- `sticky actions 0.25`: the Atari literature's standard since Machado et al. (2018): at every frame the emulator
  repeats the previous action with probability 0.25 instead of the agent's, so a policy cannot replay memorised
  action sequences.

Agents trained in ale-py's vector env are evaluated in it (all games at once, one sub-environment per seed, the first
episode of each counted); the others in one gymnasium environment, game after game (episode k reset with seed + k).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from i2dl.errors import CheckpointError, I2DLError
from i2dl.rl.envs import check_env_id, is_atari, make_env, make_vector_env
from i2dl.rl.logs import EpisodeTracker
from i2dl.rl.runs import check_checkpoint_fits, last_checkpoint, load_checkpoint, with_defaults

ALGORITHMS = {"reinforce": ("i2dl.rl.reinforce", "ReinforceConfig"), "ppo": ("i2dl.rl.ppo", "PPOConfig")}
PROTOCOLS = {"no sticky actions": 0.0, "sticky actions 0.25": 0.25}
EVAL_SEED = 10_000


def algorithm(name: str):
    """(module, config dataclass) of an algorithm name."""
    if name not in ALGORITHMS:
        raise I2DLError(f"unknown algorithm {name!r}; choose from {', '.join(ALGORITHMS)}")
    module_name, config_name = ALGORITHMS[name]
    module = importlib.import_module(module_name)
    return module, getattr(module, config_name)


@dataclass
class Agent:
    """A trained network (eval mode, float32) with the settings it was trained with."""

    network: torch.nn.Module
    checkpoint: dict[str, Any]
    config: dict[str, Any]
    path: Path

    @property
    def env_id(self) -> str:
        return self.config["env_id"]

    def make_env(self, seed: int = 0, sticky: float = 0.0, render_mode: str | None = None, env_id: str | None = None):
        """One gymnasium environment with the observations this agent was trained on."""
        return agent_env(self.config, env_id or self.env_id, seed, sticky, render_mode)


def agent_env(config: dict[str, Any], env_id: str, seed: int = 0, sticky: float = 0.0, render_mode: str | None = None):
    kwargs = dict(config["env_kwargs"])
    if sticky:
        if not is_atari(env_id):
            raise I2DLError(f"sticky actions are an Atari protocol; {env_id} has none")
        kwargs["repeat_action_probability"] = sticky
    ale = config.get("vectorization") == "ale"
    if ale:  # the vector env's settings, as gymnasium spells them
        kwargs = {"frameskip": 1, "repeat_action_probability": kwargs.get("repeat_action_probability", 0.0)}
    return make_env(
        env_id,
        seed,
        config["preprocessing"],
        config.get("frame_stack", 4),
        kwargs,
        render_mode=render_mode,
        stack_padding="zero" if ale else "reset",
    )


def load_agent(ckpt_path: str | Path, env_id: str | None = None) -> Agent:
    """The agent of a checkpoint file or a run folder (its last.pt), checked against the environment's
    observations; every mismatch is a one-line CheckpointError."""
    path = Path(ckpt_path)
    if path.is_dir():
        path = last_checkpoint(path)
    checkpoint = load_checkpoint(path)
    if checkpoint.get("algo") not in ALGORITHMS:
        raise CheckpointError(f"{path}: unknown algorithm {checkpoint.get('algo')!r}")
    module, config_class = algorithm(checkpoint["algo"])
    config = with_defaults(checkpoint["config"], config_class)
    env_id = env_id or config["env_id"]
    check_env_id(env_id)
    env = agent_env(config, env_id)
    if not hasattr(env.action_space, "n"):
        raise CheckpointError(f"{path}: {env_id} has a continuous action space; this agent picks discrete actions")
    try:
        network = module.build_network(config, env.observation_space.shape, int(env.action_space.n))
    except RuntimeError as err:  # a conv net cannot take these observations at all
        raise CheckpointError(
            f"{path} does not fit {env_id}'s observations {env.observation_space.shape}: {str(err).splitlines()[0]}"
        ) from None
    finally:
        env.close()
    check_checkpoint_fits(checkpoint, str(path), checkpoint["algo"], env_id, network)
    network.load_state_dict(checkpoint["model"])
    return Agent(network.eval(), checkpoint, {**config, "env_id": env_id}, path)


def run_episodes(
    network, env, episodes: int, seed: int, greedy: bool, frames: list | None = None, max_frames: int = 0
) -> list[float]:
    """Returns of `episodes` episodes of one gymnasium env reset with seeds seed, seed+1, ...; optionally collects
    rendered frames."""
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


def play_games(network, envs, seed: int, greedy: bool, max_steps: int = 10**7) -> list[dict[str, float]]:
    """The first episode of every sub-environment of a vector env reset with seeds seed, seed+1, ...: its return,
    length and points, in sub-environment order. Actions for all games are chosen in one batch per step."""
    n = envs.num_envs
    obs, _ = envs.reset(seed=seed)
    tracker, autoreset = EpisodeTracker(n), np.zeros(n, dtype=bool)
    first: list[dict[str, float] | None] = [None] * n
    for _ in range(max_steps):
        with torch.no_grad():
            actions = network.act(torch.as_tensor(obs), greedy=greedy).numpy()
        obs, rewards, terminated, truncated, _ = envs.step(actions)
        for i, episode in tracker.step(np.asarray(rewards, dtype=float), terminated | truncated, ~autoreset):
            if first[i] is None:
                first[i] = episode
        autoreset = terminated | truncated
        if all(e is not None for e in first):
            return first  # type: ignore[return-value]
    raise RuntimeError(f"games did not end within {max_steps} steps")


def evaluate_agent(
    agent: Agent,
    episodes: int,
    seed: int = EVAL_SEED,
    greedy: bool = True,
    sticky: float = 0.0,
    env_id: str | None = None,
) -> list[float]:
    """Scores of `episodes` games with seeds seed, seed+1, ... (see the module docstring for the protocols).
    Sampled actions are drawn from torch's generator seeded with `seed` (the caller's random state is left as it
    was), so the same games come out whatever ran before in the process, e.g. in `pong-report --jobs 1` or 2."""
    env_id = env_id or agent.env_id
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if agent.config.get("vectorization") == "ale" and env_id == agent.env_id:
            kwargs = {**agent.config["env_kwargs"], "repeat_action_probability": sticky}
            envs = make_vector_env(env_id, episodes, seed, "atari", agent.config["frame_stack"], kwargs, "ale")
            try:
                return [e["episode_return"] for e in play_games(agent.network, envs, seed, greedy)]
            finally:
                envs.close()
        env = agent.make_env(seed, sticky, env_id=env_id)
        try:
            return run_episodes(agent.network, env, episodes, seed, greedy)
        finally:
            env.close()


def summarize(values) -> str:
    values = np.asarray(list(values), dtype=float)
    return (
        f"mean {values.mean():.2f} ± {values.std():.2f} (min {values.min():.0f}, max {values.max():.0f}, "
        f"{len(values)} episodes)"
    )
