"""PPO (clipped objective, GAE, value and entropy terms, minibatch epochs) in one file, after CleanRL's ppo.py,
ppo_atari.py and ppo_atari_envpool.py, written against gymnasium 1.x vector environments and ale-py's C++ one.

Next-step autoreset: when sub-environment i ends an episode at step t (terminated or truncated), step t+1 of i
ignores its action and only returns the first observation of the next episode. That step is stored with
`valid = False`: it gets no advantage, takes no part in the loss, and the GAE recursion is cut at t, so nothing
of one episode leaks into another. Because the observation stored at t+1 is then the episode's *final*
observation, a truncated (time-limit) episode is bootstrapped with its value, while a terminated one is not.

Speed on a CPU (Pong): the emulator runs in ale-py's own threads (`vectorization: ale`), and the conv trunk runs in
bf16 autocast with channels-last tensors where the CPU computes bf16 natively (`precision: auto`, decided at run
time by `i2dl.hardware`; on an AVX2-only CPU bf16 is several times slower, so float32 is kept there). The actor and
critic heads, the log-probabilities and the losses stay in float32. Each update logs where its time went
(`time/env`, `time/inference`, `time/update`, seconds) beside `charts/sps`.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from i2dl.checkpoints import rng_states, seed_everything
from i2dl.errors import I2DLError
from i2dl.hardware import resolve_channels_last, resolve_precision
from i2dl.rl.envs import AtariEnvGroups, make_vector_env
from i2dl.rl.figures import plot_learning_curve, plot_win_percentage
from i2dl.rl.logs import EpisodeTracker, RunLogger
from i2dl.rl.runs import BestCheckpoint, last_checkpoint, save_checkpoint, snapshot_checkpoint, start_run, with_defaults

ALGO = "ppo"
NETWORKS = ("mlp", "cnn", "cnn_small")


@dataclass
class PPOConfig:
    """Hyper-parameters of PPO. The defaults suit CartPole-v1 (500 within 100k steps); see configs/rl/ for Pong."""

    env_id: str = "CartPole-v1"
    """gymnasium id, e.g. CartPole-v1 or ALE/Pong-v5"""
    env_kwargs: dict = field(default_factory=dict)
    """extra arguments of gym.make (or of ale-py's AtariVectorEnv with vectorization ale, e.g.
    {repeat_action_probability: 0.25})"""
    preprocessing: str = "none"
    """observation pipeline: none, lab (the course's Pong frame difference) or atari (84x84, frame stack)"""
    frame_stack: int = 4
    """frames stacked by the atari preprocessing"""
    network: str = "mlp"
    """mlp: separate 64-64 tanh actor and critic; cnn: the Nature-DQN conv trunk (32-64-64 channels, dense 512)
    shared by actor and critic; cnn_small: the same trunk with half the channels and a dense 256 (~3x fewer
    multiply-adds)"""
    total_steps: int = 100_000
    """environment steps (summed over the vector env) to train for"""
    num_envs: int = 8
    """parallel environments"""
    vectorization: str = "sync"
    """sync (gymnasium, one process), async (gymnasium, one process per environment) or ale (ale-py's batched C++
    vector env with the atari preprocessing built in; Atari only)"""
    env_threads: int = 0
    """emulator threads of vectorization ale (0: one per CPU core)"""
    env_groups: int = 1
    """vectorization ale: split the environments into this many groups that take turns, so that one group's
    emulation runs while the next group's actions are chosen"""
    num_steps: int = 32
    """steps per environment per rollout; a rollout holds num_envs * num_steps transitions"""
    learning_rate: float = 1e-3
    """Adam step size"""
    anneal_lr: bool = True
    """decay the learning rate linearly to 0 over the run (over total_steps, or over time_limit where that ends
    first)"""
    gamma: float = 0.98
    """discount factor"""
    gae_lambda: float = 0.8
    """GAE lambda (1 gives Monte-Carlo returns minus the value)"""
    num_minibatches: int = 1
    """minibatches per epoch"""
    update_epochs: int = 20
    """passes over each rollout"""
    clip_coef: float = 0.2
    """PPO clip range of the probability ratio"""
    clip_vloss: bool = True
    """also clip the value update"""
    norm_adv: bool = True
    """normalise advantages per minibatch"""
    ent_coef: float = 0.0
    """weight of the entropy bonus"""
    ent_coef_final: float | None = None
    """the entropy bonus's weight at the end of the run, reached linearly from ent_coef as the learning rate anneals
    (None: ent_coef throughout); lower lets the policy turn nearly greedy once it plays well"""
    vf_coef: float = 0.5
    """weight of the value loss"""
    max_grad_norm: float = 0.5
    """gradient clipping"""
    target_kl: float = 0.0
    """stop an update's epochs early when the approximate KL exceeds this (0: never)"""
    seed: int = 1
    """seeds torch/numpy/python and the environments"""
    checkpoint_every: int = 10
    """write checkpoints/last.pt every this many updates (and at the end)"""
    snapshot_every: int = 0
    """also keep a copy as checkpoints/step_<agent steps>.pt every this many updates (0: never), for evaluating the
    score against steps and wall time afterwards"""
    time_limit: float = 0.0
    """stop (with a checkpoint) once the run's training clock passes this many seconds, resumed time included (0: no
    limit): a wall-time budget; the learning rate and entropy weight anneal over it where it ends before
    total_steps"""
    threads: int = 1
    """torch CPU threads (of each worker)"""
    workers: int = 1
    """threads that share each minibatch of the update, each computing its part with `threads` torch threads:
    on a 2-core CPU, 2 workers x 1 thread keep both cores busy, and do not stall as torch's own threads do when
    another process takes a core"""
    precision: str = "auto"
    """conv networks: auto (bf16 autocast where the CPU or GPU computes bf16 natively, else float32), 32-true or
    bf16-mixed; the mlp always computes in float32"""
    channels_last: str = "auto"
    """conv networks: channels-last tensors (auto: where they were measured to pay, see i2dl.hardware), true or
    false"""
    device: str = "cpu"
    """cpu, cuda or auto"""
    tensorboard: bool = True
    """also write TensorBoard event files"""


# --- networks -------------------------------------------------------------------------------------------------------
def layer_init(layer: nn.Module, std: float = float(np.sqrt(2)), bias: float = 0.0) -> nn.Module:
    nn.init.orthogonal_(layer.weight, std)
    nn.init.constant_(layer.bias, bias)
    return layer


class ActorCritic(nn.Module):
    """`get_value(obs)` and `get_action_and_value(obs, action=None)`; `act(obs, greedy)` for playing."""

    def trunk(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def get_value(self, obs: torch.Tensor) -> torch.Tensor:
        return self.critic(self.trunk(obs)[1]).squeeze(-1)

    def get_action_and_value(self, obs: torch.Tensor, action: torch.Tensor | None = None):
        actor_in, critic_in = self.trunk(obs)
        dist = torch.distributions.Categorical(logits=self.actor(actor_in))
        if action is None:
            action = dist.sample()
        return action, dist.log_prob(action), dist.entropy(), self.critic(critic_in).squeeze(-1)

    def act(self, obs: torch.Tensor, greedy: bool = False) -> torch.Tensor:
        logits = self.actor(self.trunk(obs)[0])
        return logits.argmax(-1) if greedy else torch.distributions.Categorical(logits=logits).sample()


class MLPActorCritic(ActorCritic):
    """CleanRL's CartPole agent: actor and critic are separate 64-64 tanh MLPs."""

    def __init__(self, obs_dim: int, n_actions: int, hidden: int = 64) -> None:
        super().__init__()
        self.critic = nn.Sequential(
            layer_init(nn.Linear(obs_dim, hidden)),
            nn.Tanh(),
            layer_init(nn.Linear(hidden, hidden)),
            nn.Tanh(),
            layer_init(nn.Linear(hidden, 1), std=1.0),
        )
        self.actor = nn.Sequential(
            layer_init(nn.Linear(obs_dim, hidden)),
            nn.Tanh(),
            layer_init(nn.Linear(hidden, hidden)),
            nn.Tanh(),
            layer_init(nn.Linear(hidden, n_actions), std=0.01),
        )

    def trunk(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        obs = obs.float().flatten(1)
        return obs, obs


class CNNActorCritic(ActorCritic):
    """CleanRL's Atari agent: the Nature-DQN trunk (32x8s4, 64x4s2, 64x3s1, dense 512) shared by a linear actor
    and critic; `channels`/`hidden` give narrower variants. uint8 frames are scaled to [0, 1]; the lab's float frame
    differences are used as they are. `set_compute` picks bf16 autocast and channels-last for the trunk; the
    heads always compute in float32 (a bf16 log-probability would blur PPO's probability ratio)."""

    def __init__(
        self,
        obs_shape: tuple[int, ...],
        n_actions: int,
        channels: tuple[int, int, int] = (32, 64, 64),
        hidden: int = 512,
    ) -> None:
        super().__init__()
        c1, c2, c3 = channels
        self.network = nn.Sequential(
            layer_init(nn.Conv2d(obs_shape[0], c1, 8, stride=4)),
            nn.ReLU(),
            layer_init(nn.Conv2d(c1, c2, 4, stride=2)),
            nn.ReLU(),
            layer_init(nn.Conv2d(c2, c3, 3, stride=1)),
            nn.ReLU(),
            nn.Flatten(),
        )
        with torch.no_grad():
            flat = self.network(torch.zeros(1, *obs_shape)).shape[1]
        self.network.append(layer_init(nn.Linear(flat, hidden)))
        self.network.append(nn.ReLU())
        self.actor = layer_init(nn.Linear(hidden, n_actions), std=0.01)
        self.critic = layer_init(nn.Linear(hidden, 1), std=1.0)
        self.bf16, self.channels_last = False, False

    def set_compute(self, bf16: bool, channels_last: bool) -> CNNActorCritic:
        self.bf16, self.channels_last = bf16, channels_last
        if channels_last:
            self.network.to(memory_format=torch.channels_last)
        return self

    def trunk(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = obs.float() / 255.0 if obs.dtype == torch.uint8 else obs.float()
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        autocast = torch.autocast(x.device.type, dtype=torch.bfloat16) if self.bf16 else contextlib.nullcontext()
        with autocast:
            hidden = self.network(x)
        hidden = hidden.float()
        return hidden, hidden


def build_network(config: dict[str, Any], obs_shape: tuple[int, ...], n_actions: int) -> ActorCritic:
    if config["network"] == "mlp":
        return MLPActorCritic(int(np.prod(obs_shape)), n_actions)
    if config["network"] == "cnn":
        return CNNActorCritic(tuple(obs_shape), n_actions)
    if config["network"] == "cnn_small":
        return CNNActorCritic(tuple(obs_shape), n_actions, channels=(16, 32, 32), hidden=256)
    raise I2DLError(f"unknown network {config['network']!r} for ppo; choose from {', '.join(NETWORKS)}")


def compute_settings(config: dict[str, Any], device: torch.device) -> tuple[str, bool]:
    """(precision, channels_last) of a conv network on this machine (the mlp: float32, plain layout)."""
    if config["network"] == "mlp":
        return "32-true", False
    if config["precision"] not in ("auto", "32-true", "bf16-mixed"):
        raise I2DLError(f"precision must be auto, 32-true or bf16-mixed, got {config['precision']!r}")
    precision = resolve_precision(
        config["precision"], "gpu" if device.type == "cuda" else "cpu", gpu="detect" if device.type == "cuda" else None
    )
    channels_last = config["channels_last"]
    channels_last = {"true": True, "false": False}.get(str(channels_last).lower(), channels_last)
    try:
        layout = resolve_channels_last(channels_last, precision, cuda=device.type == "cuda")
    except ValueError as err:
        raise I2DLError(str(err)) from None
    return precision, layout


# --- rollouts and GAE -----------------------------------------------------------------------------------------------
@dataclass
class Rollout:
    """num_steps x num_envs transitions; `valid[t, i]` is False for next-step-autoreset steps."""

    obs: torch.Tensor
    actions: torch.Tensor
    logprobs: torch.Tensor
    values: torch.Tensor
    rewards: torch.Tensor
    terminated: torch.Tensor
    truncated: torch.Tensor
    valid: torch.Tensor
    next_value: torch.Tensor
    """value of the observation after the last step (bootstraps the last step of an unfinished episode)"""
    seconds: dict[str, float] = field(default_factory=dict)
    """time spent stepping the environments ("env") and choosing actions ("inference")"""


PolicyFn = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


def collect_rollout(
    envs,
    policy: PolicyFn,
    value_fn: Callable[[torch.Tensor], torch.Tensor],
    next_obs: np.ndarray,
    autoreset: np.ndarray,
    num_steps: int,
    tracker: EpisodeTracker | None = None,
    on_episode: Callable[[int, dict], None] | None = None,
    step_offset: int = 0,
) -> tuple[Rollout, np.ndarray, np.ndarray]:
    """Play `num_steps` vector steps. `policy(obs) -> (action, logprob, value)`; `autoreset[i]` says that env i
    ended its episode on the previous step (so this step is its reset step). Returns the rollout, the next
    observation and the autoreset flags to carry into the next rollout."""
    n = envs.num_envs
    obs_buf = torch.zeros((num_steps, n, *envs.single_observation_space.shape), dtype=torch.as_tensor(next_obs).dtype)
    actions = torch.zeros((num_steps, n), dtype=torch.long)
    logprobs, values, rewards = (torch.zeros((num_steps, n)) for _ in range(3))
    terminated, truncated, valid = (torch.zeros((num_steps, n), dtype=torch.bool) for _ in range(3))
    buffers = (obs_buf, actions, logprobs, values, rewards, terminated, truncated, valid)
    if isinstance(envs, AtariEnvGroups) and len(envs.groups) > 1:
        return _collect_in_turns(
            envs,
            policy,
            value_fn,
            next_obs,
            autoreset,
            num_steps,
            tracker,
            on_episode,
            step_offset,
            buffers,
        )
    env_seconds = inference_seconds = 0.0
    for t in range(num_steps):
        started = time.perf_counter()
        obs_buf[t] = torch.as_tensor(next_obs)
        valid[t] = torch.as_tensor(~autoreset)
        with torch.no_grad():
            action, logprob, value = policy(obs_buf[t])
        actions[t], logprobs[t], values[t] = action, logprob, value
        stepped = time.perf_counter()
        next_obs, reward, term, trunc, _ = envs.step(action.numpy())
        env_seconds += time.perf_counter() - stepped
        inference_seconds += stepped - started
        rewards[t] = torch.as_tensor(reward, dtype=torch.float32)
        terminated[t], truncated[t] = torch.as_tensor(term), torch.as_tensor(trunc)
        if tracker is not None:
            for _, episode in tracker.step(np.asarray(reward), term | trunc, ~autoreset):
                if on_episode:
                    on_episode(step_offset + (t + 1) * n, episode)
        autoreset = term | trunc
    return _finish_rollout(buffers, value_fn, next_obs, autoreset, env_seconds, inference_seconds)


def _finish_rollout(buffers, value_fn, next_obs, autoreset, env_seconds: float, inference_seconds: float):
    """The rollout from its filled buffers, with the value of the observation after its last step."""
    started = time.perf_counter()
    with torch.no_grad():
        next_value = value_fn(torch.as_tensor(next_obs))
    seconds = {"env": env_seconds, "inference": inference_seconds + time.perf_counter() - started}
    return Rollout(*buffers, next_value, seconds), next_obs, autoreset


def _collect_in_turns(
    envs: AtariEnvGroups,
    policy: PolicyFn,
    value_fn,
    next_obs: np.ndarray,
    autoreset: np.ndarray,
    num_steps: int,
    tracker: EpisodeTracker | None,
    on_episode,
    step_offset: int,
    buffers,
) -> tuple[Rollout, np.ndarray, np.ndarray]:
    """`collect_rollout` for environment groups: while group k's emulators play step t in their threads, this
    thread picks the actions of group k+1; the transitions are the same as with one vector env."""
    obs_buf, actions, logprobs, values, rewards, terminated, truncated, valid = buffers
    n, next_obs, autoreset = envs.num_envs, np.array(next_obs), np.array(autoreset)
    env_seconds = inference_seconds = 0.0
    for t in range(num_steps + 1):
        for k, part in enumerate(envs.slices):
            if t > 0:  # group k's result of step t-1
                started = time.perf_counter()
                obs, reward, term, trunc, _ = envs.recv(k)
                env_seconds += time.perf_counter() - started
                next_obs[part] = obs
                rewards[t - 1, part] = torch.as_tensor(reward, dtype=torch.float32)
                terminated[t - 1, part], truncated[t - 1, part] = torch.as_tensor(term), torch.as_tensor(trunc)
                autoreset[part] = term | trunc
            if t == num_steps:
                continue
            started = time.perf_counter()
            obs_buf[t, part] = torch.as_tensor(next_obs[part])
            valid[t, part] = torch.as_tensor(~autoreset[part])
            with torch.no_grad():
                action, logprob, value = policy(obs_buf[t, part])
            actions[t, part], logprobs[t, part], values[t, part] = action, logprob, value
            envs.send(k, action.numpy())
            inference_seconds += time.perf_counter() - started
        if t > 0 and tracker is not None:
            dones = (terminated[t - 1] | truncated[t - 1]).numpy()
            for _, episode in tracker.step(rewards[t - 1].numpy().astype(np.float64), dones, valid[t - 1].numpy()):
                if on_episode:
                    on_episode(step_offset + t * n, episode)
    return _finish_rollout(buffers, value_fn, next_obs, autoreset, env_seconds, inference_seconds)


def compute_gae(rollout: Rollout, gamma: float, gae_lambda: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Advantages and returns (advantage + value) of a rollout, per sub-environment, backwards in time:

        delta_t = r_t + gamma * V(obs_{t+1}) * (1 - terminated_t) - V(obs_t)
        A_t     = delta_t + gamma * lambda * (1 - done_t) * A_{t+1}        (done = terminated or truncated)

    and A_t = 0 where the step is not valid (a next-step-autoreset step). V(obs_{t+1}) of a finished episode is
    the value of its final observation, which only matters when it was truncated."""
    num_steps = rollout.rewards.shape[0]
    advantages = torch.zeros_like(rollout.rewards)
    next_values = torch.cat([rollout.values[1:], rollout.next_value[None]])
    not_terminated = (~rollout.terminated).float()
    not_done = (~(rollout.terminated | rollout.truncated)).float()
    last = torch.zeros_like(rollout.next_value)
    for t in reversed(range(num_steps)):
        delta = rollout.rewards[t] + gamma * next_values[t] * not_terminated[t] - rollout.values[t]
        last = delta + gamma * gae_lambda * not_done[t] * last
        last = torch.where(rollout.valid[t], last, torch.zeros_like(last))
        advantages[t] = last
    return advantages, advantages + rollout.values


# --- the learning-rate and entropy schedule -------------------------------------------------------------------------
def schedule(cfg: PPOConfig, iteration: int, num_iterations: int, wall_time: float = 0.0) -> tuple[float, float]:
    """The learning rate and entropy weight of update `iteration` (0-based) of `num_iterations`, `wall_time` seconds
    into the run: both linear in the fraction of the run done, which under a time_limit is the larger of the steps'
    and the clock's fraction (so that a budget that ends before total_steps still ends annealed). A resumed run
    continues the same line."""
    done = iteration / num_iterations
    if cfg.time_limit:
        done = min(1.0, max(done, wall_time / cfg.time_limit))
    lr = cfg.learning_rate * (1.0 - done) if cfg.anneal_lr else cfg.learning_rate
    end = cfg.ent_coef if cfg.ent_coef_final is None else cfg.ent_coef_final
    return lr, cfg.ent_coef + (end - cfg.ent_coef) * done


# --- the update -----------------------------------------------------------------------------------------------------
@dataclass
class Batch:
    """A rollout's valid transitions, flattened, with their advantages and returns."""

    obs: torch.Tensor
    actions: torch.Tensor
    logprobs: torch.Tensor
    values: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor


def minibatch_loss(
    agent: ActorCritic, batch: Batch, mb: torch.Tensor, advantages: torch.Tensor, cfg: PPOConfig, weight: float = 1.0
) -> dict[str, torch.Tensor]:
    """PPO's loss on the transitions `mb` of `batch` (with their already normalised `advantages`), backpropagated
    with `weight` (the share of the minibatch these transitions are); returns its terms, detached."""
    _, newlogprob, entropy, newvalue = agent.get_action_and_value(batch.obs[mb], batch.actions[mb])
    logratio = newlogprob - batch.logprobs[mb]
    ratio = logratio.exp()
    pg_loss = torch.max(-advantages * ratio, -advantages * ratio.clamp(1 - cfg.clip_coef, 1 + cfg.clip_coef)).mean()
    returns, values = batch.returns[mb], batch.values[mb]
    if cfg.clip_vloss:
        v_unclipped = (newvalue - returns) ** 2
        v_clipped = values + (newvalue - values).clamp(-cfg.clip_coef, cfg.clip_coef)
        v_loss = 0.5 * torch.max(v_unclipped, (v_clipped - returns) ** 2).mean()
    else:
        v_loss = 0.5 * ((newvalue - returns) ** 2).mean()
    entropy_loss = entropy.mean()
    loss = pg_loss - cfg.ent_coef * entropy_loss + v_loss * cfg.vf_coef
    (loss * weight).backward()
    with torch.no_grad():
        return {
            "pg_loss": pg_loss.detach(),
            "v_loss": v_loss.detach(),
            "entropy": entropy_loss.detach(),
            "old_approx_kl": (-logratio).mean(),
            "approx_kl": ((ratio - 1) - logratio).mean(),
            "clipfrac": ((ratio - 1.0).abs() > cfg.clip_coef).float().mean(),
        }


def ppo_update(
    agent: ActorCritic,
    optimizer: torch.optim.Optimizer,
    rollout: Rollout,
    advantages: torch.Tensor,
    returns: torch.Tensor,
    cfg: PPOConfig,
    device: torch.device,
    pool: ThreadPoolExecutor | None = None,
) -> dict[str, float]:
    """`update_epochs` passes of clipped-objective minibatch steps over the rollout's valid transitions. With a
    thread `pool`, each minibatch is split between its threads, whose gradients add up to the minibatch's (the
    same update, computed in parallel)."""
    keep = rollout.valid.reshape(-1)

    def flat(x: torch.Tensor) -> torch.Tensor:
        return x.reshape(-1, *x.shape[2:])[keep].to(device)

    batch = Batch(
        flat(rollout.obs),
        flat(rollout.actions),
        flat(rollout.logprobs),
        flat(rollout.values),
        flat(advantages),
        flat(returns),
    )
    size = len(batch.actions)
    minibatch = max(1, -(-size // cfg.num_minibatches))
    clipfracs, terms = [], {}
    for _ in range(cfg.update_epochs):
        order = torch.randperm(size, device=device)
        for start in range(0, size, minibatch):
            mb = order[start : start + minibatch]
            mb_adv = batch.advantages[mb]
            if cfg.norm_adv and len(mb) > 1:
                mb_adv = (mb_adv - mb_adv.mean()) / (mb_adv.std() + 1e-8)
            optimizer.zero_grad()
            if pool is None or len(mb) < 2 * cfg.workers:
                terms = minibatch_loss(agent, batch, mb, mb_adv, cfg)
            else:
                parts = zip(mb.chunk(cfg.workers), mb_adv.chunk(cfg.workers), [len(mb)] * cfg.workers)
                found = list(
                    pool.map(
                        lambda part: (
                            len(part[0]),
                            minibatch_loss(agent, batch, part[0], part[1], cfg, len(part[0]) / part[2]),
                        ),
                        parts,
                    )
                )
                terms = {k: sum(n * t[k] for n, t in found) / len(mb) for k in found[0][1]}
            clipfracs.append(float(terms["clipfrac"]))
            nn.utils.clip_grad_norm_(agent.parameters(), cfg.max_grad_norm)
            optimizer.step()
        if cfg.target_kl and terms["approx_kl"] > cfg.target_kl:
            break
    var_y = batch.returns.var()
    explained_var = float("nan") if var_y == 0 else float(1 - (batch.returns - batch.values).var() / var_y)
    return {
        "losses/policy_loss": float(terms["pg_loss"]),
        "losses/value_loss": float(terms["v_loss"]),
        "losses/entropy": float(terms["entropy"]),
        "losses/approx_kl": float(terms["approx_kl"]),
        "losses/old_approx_kl": float(terms["old_approx_kl"]),
        "losses/clipfrac": float(np.mean(clipfracs)),
        "losses/explained_variance": explained_var,
    }


METRICS = [
    "charts/learning_rate",
    "charts/ent_coef",
    "charts/sps",
    "losses/policy_loss",
    "losses/value_loss",
    "losses/entropy",
    "losses/approx_kl",
    "losses/old_approx_kl",
    "losses/clipfrac",
    "losses/explained_variance",
    "time/env",
    "time/inference",
    "time/update",
]


# --- training -------------------------------------------------------------------------------------------------------
def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def train(cfg: PPOConfig, run_dir: Path, resume: bool = False, config_name: str | None = None) -> dict[str, Any]:
    """Train for `cfg.total_steps` environment steps in `run_dir` (continuing its last checkpoint with `resume`)."""
    torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    config = asdict(cfg)
    precision, channels_last = compute_settings(config, device)
    batch_size = cfg.num_envs * cfg.num_steps
    num_iterations = max(1, cfg.total_steps // batch_size)
    envs = make_vector_env(
        cfg.env_id,
        cfg.num_envs,
        cfg.seed,
        cfg.preprocessing,
        cfg.frame_stack,
        cfg.env_kwargs,
        cfg.vectorization,
        cfg.env_threads,
        cfg.env_groups,
    )
    seed_everything(cfg.seed)
    agent = build_network(config, envs.single_observation_space.shape, int(envs.single_action_space.n)).to(device)
    if isinstance(agent, CNNActorCritic):
        agent.set_compute(precision.startswith("bf16"), channels_last)
        print(
            f"ppo: {cfg.network} network in {precision}{', channels-last' if channels_last else ''} on {device}, "
            f"{cfg.workers} worker(s) x {cfg.threads} torch thread(s), {cfg.num_envs} {cfg.vectorization} "
            f"environments",
            flush=True,
        )
    optimizer = torch.optim.Adam(agent.parameters(), lr=cfg.learning_rate, eps=1e-5)
    try:
        session = start_run(
            run_dir, ALGO, config, agent, optimizer, resume, config_name, defaults=with_defaults({}, PPOConfig)
        )
    except BaseException:
        envs.close()
        raise
    with session:
        summary = _train_loop(cfg, run_dir, session, envs, agent, optimizer, device, num_iterations, config)
    return summary


def _train_loop(
    cfg: PPOConfig,
    run_dir: Path,
    session,
    envs,
    agent: ActorCritic,
    optimizer,
    device: torch.device,
    num_iterations: int,
    config: dict[str, Any],
) -> dict[str, Any]:
    checkpoint = session.checkpoint
    batch_size = cfg.num_envs * cfg.num_steps
    iteration = checkpoint["iteration"] if checkpoint else 0
    global_step = checkpoint["global_step"] if checkpoint else 0
    log = RunLogger(
        run_dir,
        METRICS,
        resume_step=global_step if checkpoint else None,
        wall_time_before=checkpoint["wall_time"] if checkpoint else 0.0,
        tensorboard=cfg.tensorboard,
    )
    if checkpoint:
        log.episode_count = checkpoint["episodes"]

    best = BestCheckpoint(run_dir, best=checkpoint.get("best_mean_return", -np.inf) if checkpoint else -np.inf)
    recent: list[float] = list(checkpoint.get("recent_returns", [])) if checkpoint else []
    sps = 0.0

    def state() -> dict[str, Any]:
        return {
            "algo": ALGO,
            "config": config,
            "model": agent.state_dict(),
            "optimizer": optimizer.state_dict(),
            "global_step": global_step,
            "iteration": iteration,
            "episodes": log.episode_count,
            "wall_time": log.wall_time(),
            "rng": rng_states(),
            "best_mean_return": best.best,
            "recent_returns": recent[-100:],
        }

    def results() -> dict[str, float]:
        return {
            "train/mean_return_last100": float(np.mean(recent[-100:])) if recent else float("nan"),
            "train/episodes": log.episode_count,
            "train/steps_per_second": sps,
        }

    def write_checkpoint() -> None:
        save_checkpoint(state(), last_checkpoint(run_dir))
        session.progress(results(), global_step, log.wall_time())

    # A resumed run starts fresh episodes (an environment's state is not saved), with seeds that depend on where
    # it resumes, so that it does not replay the episodes it already saw.
    next_obs, _ = envs.reset(seed=cfg.seed + iteration * cfg.num_envs)
    autoreset = np.zeros(cfg.num_envs, dtype=bool)
    tracker = EpisodeTracker(cfg.num_envs)

    def on_episode(step: int, episode: dict) -> None:
        recent.append(episode["episode_return"])
        log.episode(step, **episode)

    def policy(obs: torch.Tensor):
        action, logprob, _, value = agent.get_action_and_value(obs.to(device))
        return action.cpu(), logprob.cpu(), value.cpu()

    def value_fn(obs: torch.Tensor) -> torch.Tensor:
        return agent.get_value(obs.to(device)).cpu()

    pool = ThreadPoolExecutor(cfg.workers, thread_name_prefix="ppo-update") if cfg.workers > 1 else None
    start_step, start_time = global_step, time.perf_counter()
    try:
        while iteration < num_iterations and not (cfg.time_limit and log.wall_time() >= cfg.time_limit):
            lr, ent_coef = schedule(cfg, iteration, num_iterations, log.wall_time())
            optimizer.param_groups[0]["lr"] = lr
            rollout, next_obs, autoreset = collect_rollout(
                envs, policy, value_fn, next_obs, autoreset, cfg.num_steps, tracker, on_episode, step_offset=global_step
            )
            global_step += batch_size
            iteration += 1
            started = time.perf_counter()
            advantages, returns = compute_gae(rollout, cfg.gamma, cfg.gae_lambda)
            metrics = ppo_update(
                agent, optimizer, rollout, advantages, returns, replace(cfg, ent_coef=ent_coef), device, pool
            )
            update_seconds = time.perf_counter() - started
            sps = (global_step - start_step) / max(time.perf_counter() - start_time, 1e-9)
            log.update(
                global_step,
                **{
                    "charts/learning_rate": lr,
                    "charts/ent_coef": ent_coef,
                    "charts/sps": sps,
                    **metrics,
                    "time/env": rollout.seconds["env"],
                    "time/inference": rollout.seconds["inference"],
                    "time/update": update_seconds,
                },
            )
            best.update(recent, state)
            if iteration % cfg.checkpoint_every == 0:
                write_checkpoint()
            if cfg.snapshot_every and iteration % cfg.snapshot_every == 0:
                save_checkpoint(state(), snapshot_checkpoint(run_dir, global_step))
            if iteration % 10 == 0 or iteration == num_iterations:
                shown = f"{np.mean(recent[-20:]):.1f}" if recent else "-"
                print(
                    f"update {iteration}/{num_iterations}  step {global_step}  mean return (last 20) {shown}  "
                    f"entropy {metrics['losses/entropy']:.3f}  {sps:.0f} steps/s",
                    flush=True,
                )
        save_checkpoint(state(), last_checkpoint(run_dir))
    finally:
        if pool is not None:
            pool.shutdown()
        envs.close()
        log.close()
    session.finish(results(), global_step, log.wall_time())
    title = f"PPO on {cfg.env_id}"
    plot_learning_curve(run_dir, title)
    if "pong" in cfg.env_id.lower():
        plot_win_percentage(run_dir, f"{title}: points won per game")
    return {
        "global_step": global_step,
        "iterations": iteration,
        "wall_time": log.wall_time(),
        "recent_returns": recent[-20:],
    }
