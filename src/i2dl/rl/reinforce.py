"""REINFORCE as in MIT 6.S191 Lab 3, in one file.

The loop of the lab: play one whole episode with actions sampled from the policy, keep a memory of observations,
actions and rewards, compute the discounted returns backwards (for Pong the running sum restarts whenever a point
ends) and normalise them, then take one gradient step on

    loss = mean( cross_entropy(logits(obs_t), action_t) * normalised_return_t )

which is minus the return-weighted log-likelihood of the actions taken. Networks are the lab's: CartPole
dense 32 (ReLU) -> dense n_actions; Pong a small conv net on the 80x80 frame difference.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from i2dl.checkpoints import rng_states, seed_everything
from i2dl.rl.envs import make_env
from i2dl.rl.evaluate import run_episodes
from i2dl.rl.figures import plot_learning_curve, plot_win_percentage
from i2dl.rl.logs import RunLogger
from i2dl.rl.runs import BestCheckpoint, last_checkpoint, save_checkpoint, snapshot_checkpoint, start_run, with_defaults

ALGO = "reinforce"
EVAL_SEED = 20_000


@dataclass
class ReinforceConfig:
    """Hyper-parameters of the lab's REINFORCE. The defaults are the lab's CartPole settings."""

    env_id: str = "CartPole-v1"
    """gymnasium id, e.g. CartPole-v1 or ALE/Pong-v5"""
    env_kwargs: dict = field(default_factory=dict)
    """extra arguments of gym.make (the lab plays Pong with {frameskip: 5, repeat_action_probability: 0.0})"""
    preprocessing: str = "none"
    """observation pipeline: none (CartPole) or lab (the course's Pong frame difference), see envs.py"""
    network: str = "dense"
    """dense: the lab's CartPole net (one hidden layer); conv: the lab's Pong conv net"""
    hidden: int = 32
    """units of the dense net's hidden layer (the lab: 32)"""
    learning_rate: float = 1e-3
    """Adam step size (the lab: 1e-3 for CartPole, 1e-4 for Pong)"""
    gamma: float = 0.95
    """discount factor (the lab: 0.95 for CartPole, 0.99 for Pong)"""
    reset_at_point: bool = False
    """restart the discounted sum at every non-zero reward (Pong: each point is its own game)"""
    normalize_returns: bool = True
    """subtract the mean and divide by the standard deviation of the episode's returns (the lab does)"""
    episodes: int = 500
    """training iterations; each plays one whole episode (the lab: 500 for CartPole)"""
    seed: int = 1
    """seeds torch/numpy/python; episode k is reset with seed + k"""
    checkpoint_every: int = 20
    """write checkpoints/last.pt every this many episodes (and at the end)"""
    snapshot_every: int = 0
    """also keep a copy as checkpoints/step_<agent steps>.pt every this many episodes (0: never)"""
    time_limit: float = 0.0
    """stop (with a checkpoint) once the run's training clock passes this many seconds, resumed time included (0: no
    limit): a wall-time budget"""
    eval_every: int = 0
    """0: checkpoints/best.pt is the network at the best mean training return over 20 episodes (sampled actions);
    N > 0: every N episodes play `eval_episodes` greedy episodes (reset with seeds 20000, 20001, ..., apart from the
    training seeds and from `i2dl rl eval`'s 10000, ...) and keep the network with the best mean of those"""
    eval_episodes: int = 10
    """greedy episodes per evaluation when eval_every > 0"""
    threads: int = 1
    """torch CPU threads (1 is fastest for these small networks on a shared machine)"""
    device: str = "cpu"
    """cpu, cuda or auto"""
    tensorboard: bool = True
    """also write TensorBoard event files"""


# --- the lab's networks ---------------------------------------------------------------------------------------------
class Policy(nn.Module):
    """Logits over actions; `act` samples (training, the lab's `choose_action`) or takes the arg-max."""

    def keras_init(self) -> Policy:
        """Keras' default initialisation, as the lab's TensorFlow models have: Glorot-uniform weights, zero biases."""
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Conv2d)):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        return self

    def act(self, obs: torch.Tensor, greedy: bool = False) -> torch.Tensor:
        logits = self(obs)
        if greedy:
            return logits.argmax(-1)
        return torch.distributions.Categorical(logits=logits).sample()


class DensePolicy(Policy):
    """The lab's CartPole model: Dense(32, relu) -> Dense(n_actions)."""

    def __init__(self, obs_dim: int, n_actions: int, hidden: int = 32) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(obs_dim, hidden), nn.ReLU(), nn.Linear(hidden, n_actions))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(obs.float())


class ConvPolicy(Policy):
    """The lab's Pong model: Conv(32,5,s2) Conv(48,5,s2) Conv(64,3,s2) Conv(64,3,s2), all ReLU with 'same' padding,
    then Dense(128, relu) -> Dense(n_actions). On the (1, 80, 80) frame difference the last map is 64x5x5."""

    def __init__(self, obs_shape: tuple[int, ...], n_actions: int) -> None:
        super().__init__()
        channels = obs_shape[0]
        self.features = nn.Sequential(
            nn.Conv2d(channels, 32, 5, stride=2, padding=2),
            nn.ReLU(),
            nn.Conv2d(32, 48, 5, stride=2, padding=2),
            nn.ReLU(),
            nn.Conv2d(48, 64, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(64, 64, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Flatten(),
        )
        with torch.no_grad():
            flat = self.features(torch.zeros(1, *obs_shape)).shape[1]
        self.head = nn.Sequential(nn.Linear(flat, 128), nn.ReLU(), nn.Linear(128, n_actions))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(obs.float()))


def build_network(config: dict[str, Any], obs_shape: tuple[int, ...], n_actions: int) -> Policy:
    if config["network"] == "dense":
        return DensePolicy(int(np.prod(obs_shape)), n_actions, config["hidden"]).keras_init()
    if config["network"] == "conv":
        return ConvPolicy(tuple(obs_shape), n_actions).keras_init()
    from i2dl.errors import I2DLError

    raise I2DLError(f"unknown network {config['network']!r} for reinforce; choose dense or conv")


# --- the lab's returns ----------------------------------------------------------------------------------------------
def discount_rewards(
    rewards: np.ndarray, gamma: float, reset_at_point: bool = False, normalize: bool = True
) -> np.ndarray:
    """Discounted return of every step, computed backwards: R_t = r_t + gamma * R_{t+1}. With `reset_at_point`
    the running sum restarts at each non-zero reward (a Pong point ends there). Then normalised (mean 0, std 1)."""
    returns = np.zeros(len(rewards), dtype=np.float64)
    running = 0.0
    for t in reversed(range(len(rewards))):
        if reset_at_point and rewards[t] != 0:
            running = 0.0
        running = rewards[t] + gamma * running
        returns[t] = running
    if normalize:
        returns = (returns - returns.mean()) / (returns.std() + 1e-8)
    return returns.astype(np.float32)


def reinforce_loss(logits: torch.Tensor, actions: torch.Tensor, returns: torch.Tensor) -> torch.Tensor:
    """The lab's `compute_loss`: cross-entropy of the taken actions weighted by their (normalised) returns."""
    return (F.cross_entropy(logits, actions, reduction="none") * returns).mean()


def play_episode(env, policy: Policy, seed: int, device: torch.device) -> dict[str, Any]:
    """One whole episode with sampled actions: the lab's memory of observations, actions and rewards."""
    obs, _ = env.reset(seed=seed)
    observations, actions, rewards = [], [], []
    while True:
        with torch.no_grad():
            action = int(policy.act(torch.as_tensor(obs, device=device)[None])[0])
        next_obs, reward, terminated, truncated, _ = env.step(action)
        observations.append(obs)
        actions.append(action)
        rewards.append(float(reward))
        obs = next_obs
        if terminated or truncated:
            return {
                "observations": np.stack(observations),
                "actions": np.array(actions),
                "rewards": np.array(rewards, dtype=np.float32),
            }


# --- training -------------------------------------------------------------------------------------------------------
def train(cfg: ReinforceConfig, run_dir: Path, resume: bool = False, config_name: str | None = None) -> dict[str, Any]:
    """Train for `cfg.episodes` episodes in `run_dir` (continuing its last checkpoint with `resume`)."""
    torch.set_num_threads(cfg.threads)
    device = torch.device(
        "cuda"
        if cfg.device == "auto" and torch.cuda.is_available()
        else ("cpu" if cfg.device == "auto" else cfg.device)
    )
    config = asdict(cfg)
    env = make_env(cfg.env_id, cfg.seed, cfg.preprocessing, env_kwargs=cfg.env_kwargs)
    eval_env = make_env(cfg.env_id, EVAL_SEED, cfg.preprocessing, env_kwargs=cfg.env_kwargs) if cfg.eval_every else None
    seed_everything(cfg.seed)
    policy = build_network(config, env.observation_space.shape, int(env.action_space.n)).to(device)
    optimizer = torch.optim.Adam(policy.parameters(), lr=cfg.learning_rate)
    try:
        session = start_run(
            run_dir, ALGO, config, policy, optimizer, resume, config_name, defaults=with_defaults({}, ReinforceConfig)
        )
        with session:
            summary = _train_loop(cfg, run_dir, session, env, eval_env, policy, optimizer, device, config)
    finally:
        env.close()
        if eval_env is not None:
            eval_env.close()
    plot_learning_curve(run_dir, f"REINFORCE on {cfg.env_id}")
    if "pong" in cfg.env_id.lower():
        plot_win_percentage(run_dir, f"REINFORCE on {cfg.env_id}: points won per game")
    return summary


def _train_loop(
    cfg: ReinforceConfig,
    run_dir: Path,
    session,
    env,
    eval_env,
    policy: Policy,
    optimizer,
    device: torch.device,
    config: dict[str, Any],
) -> dict[str, Any]:
    checkpoint = session.checkpoint
    returns: list[float] = list(checkpoint.get("recent_returns", [])) if checkpoint else []
    episode = checkpoint["episode"] if checkpoint else 0
    global_step = checkpoint["global_step"] if checkpoint else 0
    metrics = ["loss", "sps"] + (["eval/greedy_return"] if cfg.eval_every else [])
    log = RunLogger(
        run_dir,
        metrics,
        resume_step=global_step if checkpoint else None,
        wall_time_before=checkpoint["wall_time"] if checkpoint else 0.0,
        tensorboard=cfg.tensorboard,
    )
    log.episode_count = episode
    best = BestCheckpoint(run_dir, best=checkpoint.get("best_mean_return", -np.inf) if checkpoint else -np.inf)
    sps = 0.0

    def state() -> dict[str, Any]:
        return {
            "algo": ALGO,
            "config": config,
            "model": policy.state_dict(),
            "optimizer": optimizer.state_dict(),
            "global_step": global_step,
            "episode": episode,
            "wall_time": log.wall_time(),
            "rng": rng_states(),
            "best_mean_return": best.best,
            "recent_returns": returns[-100:],
        }

    def results() -> dict[str, float]:
        found = {
            "train/mean_return_last100": float(np.mean(returns[-100:])) if returns else float("nan"),
            "train/episodes": episode,
            "train/steps_per_second": sps,
        }
        if cfg.eval_every and np.isfinite(best.best):
            found["eval/best_greedy_return"] = best.best
        return found

    def write_checkpoint() -> None:
        save_checkpoint(state(), last_checkpoint(run_dir))
        session.progress(results(), global_step, log.wall_time())

    start_step, start_time = global_step, time.perf_counter()
    try:
        while episode < cfg.episodes and not (cfg.time_limit and log.wall_time() >= cfg.time_limit):
            memory = play_episode(env, policy, cfg.seed + episode, device)
            rewards = memory["rewards"]
            global_step += len(rewards)
            episode += 1
            log.episode(
                global_step, float(rewards.sum()), len(rewards), int((rewards > 0).sum()), int((rewards < 0).sum())
            )
            returns.append(float(rewards.sum()))

            discounted = discount_rewards(rewards, cfg.gamma, cfg.reset_at_point, cfg.normalize_returns)
            logits = policy(torch.as_tensor(memory["observations"], device=device))
            loss = reinforce_loss(
                logits, torch.as_tensor(memory["actions"], device=device), torch.as_tensor(discounted, device=device)
            )
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

            sps = (global_step - start_step) / max(time.perf_counter() - start_time, 1e-9)
            log.update(global_step, loss=loss.item(), sps=sps)
            if not cfg.eval_every:
                best.update(returns, state)
            elif episode % cfg.eval_every == 0:
                greedy = run_episodes(policy.eval(), eval_env, cfg.eval_episodes, EVAL_SEED, greedy=True)
                policy.train()
                log.update(global_step, **{"eval/greedy_return": float(np.mean(greedy))})
                best.consider(float(np.mean(greedy)), state)
            if episode % cfg.checkpoint_every == 0:
                write_checkpoint()
            if cfg.snapshot_every and episode % cfg.snapshot_every == 0:
                save_checkpoint(state(), snapshot_checkpoint(run_dir, global_step))
            if episode % 10 == 0 or episode == cfg.episodes:
                print(
                    f"episode {episode}/{cfg.episodes}  step {global_step}  return {returns[-1]:.1f}  "
                    f"mean(last 10) {np.mean(returns[-10:]):.1f}  {sps:.0f} steps/s",
                    flush=True,
                )
        save_checkpoint(state(), last_checkpoint(run_dir))
    finally:
        log.close()
    session.finish(results(), global_step, log.wall_time())
    return {
        "global_step": global_step,
        "episodes": episode,
        "wall_time": log.wall_time(),
        "recent_returns": returns[-10:],
    }
