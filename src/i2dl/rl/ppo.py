"""PPO (clipped objective, GAE, value and entropy terms, minibatch epochs) in one file, after CleanRL's ppo.py and
ppo_atari.py, written against gymnasium 1.x vector environments.

Next-step autoreset: when sub-environment i ends an episode at step t (terminated or truncated), step t+1 of i
ignores its action and only returns the first observation of the next episode. That step is stored with
`valid = False`: it gets no advantage, takes no part in the loss, and the GAE recursion is cut at t, so nothing
of one episode leaks into another. Because the observation stored at t+1 is then the episode's *final*
observation, a truncated (time-limit) episode is bootstrapped with its value, while a terminated one is not.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from i2dl.rl.envs import make_vector_env
from i2dl.rl.runs import (BestCheckpoint, EpisodeTracker, RunLogger, last_checkpoint, plot_learning_curve,
                          plot_win_percentage, rng_states, save_checkpoint, seed_everything, snapshot_checkpoint,
                          start_run)

ALGO = "ppo"


@dataclass
class PPOConfig:
    """Hyper-parameters of PPO. The defaults suit CartPole-v1 (500 within 100k steps); see configs/rl/ for Pong."""

    env_id: str = "CartPole-v1"
    """gymnasium id, e.g. CartPole-v1 or ALE/Pong-v5"""
    env_kwargs: dict = field(default_factory=dict)
    """extra arguments of gym.make"""
    preprocessing: str = "none"
    """observation pipeline: none, lab (the course's Pong frame difference) or atari (84x84, frame stack)"""
    frame_stack: int = 4
    """frames stacked by the atari preprocessing"""
    network: str = "mlp"
    """mlp: separate 64-64 tanh actor and critic; cnn: the Nature-DQN conv trunk shared by actor and critic"""
    total_steps: int = 100_000
    """environment steps (summed over the vector env) to train for"""
    num_envs: int = 8
    """parallel environments"""
    vectorization: str = "sync"
    """sync (one process) or async (one process per environment)"""
    num_steps: int = 32
    """steps per environment per rollout; a rollout holds num_envs * num_steps transitions"""
    learning_rate: float = 1e-3
    """Adam step size"""
    anneal_lr: bool = True
    """decay the learning rate linearly to 0 over the run"""
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
    limit): a wall-time budget"""
    threads: int = 1
    """torch CPU threads"""
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
        self.critic = nn.Sequential(layer_init(nn.Linear(obs_dim, hidden)), nn.Tanh(),
                                    layer_init(nn.Linear(hidden, hidden)), nn.Tanh(),
                                    layer_init(nn.Linear(hidden, 1), std=1.0))
        self.actor = nn.Sequential(layer_init(nn.Linear(obs_dim, hidden)), nn.Tanh(),
                                   layer_init(nn.Linear(hidden, hidden)), nn.Tanh(),
                                   layer_init(nn.Linear(hidden, n_actions), std=0.01))

    def trunk(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        obs = obs.float().flatten(1)
        return obs, obs


class CNNActorCritic(ActorCritic):
    """CleanRL's Atari agent: the Nature-DQN trunk (32x8s4, 64x4s2, 64x3s1, dense 512) shared by a linear actor
    and critic. uint8 frames are scaled to [0, 1]; the lab's float frame differences are used as they are."""

    def __init__(self, obs_shape: tuple[int, ...], n_actions: int) -> None:
        super().__init__()
        self.network = nn.Sequential(
            layer_init(nn.Conv2d(obs_shape[0], 32, 8, stride=4)), nn.ReLU(),
            layer_init(nn.Conv2d(32, 64, 4, stride=2)), nn.ReLU(),
            layer_init(nn.Conv2d(64, 64, 3, stride=1)), nn.ReLU(),
            nn.Flatten())
        with torch.no_grad():
            flat = self.network(torch.zeros(1, *obs_shape)).shape[1]
        self.network.append(layer_init(nn.Linear(flat, 512)))
        self.network.append(nn.ReLU())
        self.actor = layer_init(nn.Linear(512, n_actions), std=0.01)
        self.critic = layer_init(nn.Linear(512, 1), std=1.0)

    def trunk(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = obs.float() / 255.0 if obs.dtype == torch.uint8 else obs.float()
        hidden = self.network(x)
        return hidden, hidden


def build_network(config: dict[str, Any], obs_shape: tuple[int, ...], n_actions: int) -> ActorCritic:
    if config["network"] == "mlp":
        return MLPActorCritic(int(np.prod(obs_shape)), n_actions)
    if config["network"] == "cnn":
        return CNNActorCritic(tuple(obs_shape), n_actions)
    from i2dl.errors import I2DLError

    raise I2DLError(f"unknown network {config['network']!r} for ppo; choose mlp or cnn")


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


PolicyFn = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


def collect_rollout(envs, policy: PolicyFn, value_fn: Callable[[torch.Tensor], torch.Tensor], next_obs: np.ndarray,
                    autoreset: np.ndarray, num_steps: int, tracker: EpisodeTracker | None = None,
                    on_episode: Callable[[int, dict], None] | None = None, step_offset: int = 0
                    ) -> tuple[Rollout, np.ndarray, np.ndarray]:
    """Play `num_steps` vector steps. `policy(obs) -> (action, logprob, value)`; `autoreset[i]` says that env i
    ended its episode on the previous step (so this step is its reset step). Returns the rollout, the next
    observation and the autoreset flags to carry into the next rollout."""
    n = envs.num_envs
    obs_buf = torch.zeros((num_steps, n, *envs.single_observation_space.shape),
                          dtype=torch.as_tensor(next_obs).dtype)
    actions = torch.zeros((num_steps, n), dtype=torch.long)
    logprobs, values, rewards = (torch.zeros((num_steps, n)) for _ in range(3))
    terminated, truncated, valid = (torch.zeros((num_steps, n), dtype=torch.bool) for _ in range(3))
    for t in range(num_steps):
        obs_buf[t] = torch.as_tensor(next_obs)
        valid[t] = torch.as_tensor(~autoreset)
        with torch.no_grad():
            action, logprob, value = policy(obs_buf[t])
        actions[t], logprobs[t], values[t] = action, logprob, value
        next_obs, reward, term, trunc, _ = envs.step(action.cpu().numpy())
        rewards[t] = torch.as_tensor(reward, dtype=torch.float32)
        terminated[t], truncated[t] = torch.as_tensor(term), torch.as_tensor(trunc)
        if tracker is not None:
            for episode in tracker.step(np.asarray(reward), term | trunc, ~autoreset):
                if on_episode:
                    on_episode(step_offset + (t + 1) * n, episode)
        autoreset = term | trunc
    with torch.no_grad():
        next_value = value_fn(torch.as_tensor(next_obs))
    return (Rollout(obs_buf, actions, logprobs, values, rewards, terminated, truncated, valid, next_value),
            next_obs, autoreset)


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


# --- the update -----------------------------------------------------------------------------------------------------
def ppo_update(agent: ActorCritic, optimizer: torch.optim.Optimizer, rollout: Rollout, advantages: torch.Tensor,
               returns: torch.Tensor, cfg: PPOConfig, device: torch.device) -> dict[str, float]:
    """`update_epochs` passes of clipped-objective minibatch steps over the rollout's valid transitions."""
    keep = rollout.valid.reshape(-1)
    b_obs = rollout.obs.reshape(-1, *rollout.obs.shape[2:])[keep].to(device)
    b_actions = rollout.actions.reshape(-1)[keep].to(device)
    b_logprobs = rollout.logprobs.reshape(-1)[keep].to(device)
    b_values = rollout.values.reshape(-1)[keep].to(device)
    b_advantages = advantages.reshape(-1)[keep].to(device)
    b_returns = returns.reshape(-1)[keep].to(device)
    batch = len(b_actions)
    minibatch = max(1, -(-batch // cfg.num_minibatches))
    clipfracs, approx_kl, old_approx_kl = [], torch.zeros(()), torch.zeros(())
    for _ in range(cfg.update_epochs):
        order = torch.randperm(batch, device=device)
        for start in range(0, batch, minibatch):
            mb = order[start:start + minibatch]
            _, newlogprob, entropy, newvalue = agent.get_action_and_value(b_obs[mb], b_actions[mb])
            logratio = newlogprob - b_logprobs[mb]
            ratio = logratio.exp()
            with torch.no_grad():
                old_approx_kl = (-logratio).mean()
                approx_kl = ((ratio - 1) - logratio).mean()
                clipfracs.append(((ratio - 1.0).abs() > cfg.clip_coef).float().mean().item())
            mb_adv = b_advantages[mb]
            if cfg.norm_adv and len(mb) > 1:
                mb_adv = (mb_adv - mb_adv.mean()) / (mb_adv.std() + 1e-8)
            pg_loss = torch.max(-mb_adv * ratio, -mb_adv * ratio.clamp(1 - cfg.clip_coef, 1 + cfg.clip_coef)).mean()
            if cfg.clip_vloss:
                v_unclipped = (newvalue - b_returns[mb]) ** 2
                v_clipped = b_values[mb] + (newvalue - b_values[mb]).clamp(-cfg.clip_coef, cfg.clip_coef)
                v_loss = 0.5 * torch.max(v_unclipped, (v_clipped - b_returns[mb]) ** 2).mean()
            else:
                v_loss = 0.5 * ((newvalue - b_returns[mb]) ** 2).mean()
            entropy_loss = entropy.mean()
            loss = pg_loss - cfg.ent_coef * entropy_loss + v_loss * cfg.vf_coef
            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(agent.parameters(), cfg.max_grad_norm)
            optimizer.step()
        if cfg.target_kl and approx_kl > cfg.target_kl:
            break
    var_y = b_returns.var()
    explained_var = float("nan") if var_y == 0 else float(1 - (b_returns - b_values).var() / var_y)
    return {"losses/policy_loss": pg_loss.item(), "losses/value_loss": v_loss.item(),
            "losses/entropy": entropy_loss.item(), "losses/approx_kl": float(approx_kl),
            "losses/old_approx_kl": float(old_approx_kl), "losses/clipfrac": float(np.mean(clipfracs)),
            "losses/explained_variance": explained_var}


METRICS = ["charts/learning_rate", "charts/sps", "losses/policy_loss", "losses/value_loss", "losses/entropy",
           "losses/approx_kl", "losses/old_approx_kl", "losses/clipfrac", "losses/explained_variance"]


# --- training -------------------------------------------------------------------------------------------------------
def train(cfg: PPOConfig, run_dir: Path, resume: bool = False) -> dict[str, Any]:
    """Train for `cfg.total_steps` environment steps in `run_dir` (continuing its last checkpoint with `resume`)."""
    torch.set_num_threads(cfg.threads)
    device = torch.device("cuda" if cfg.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if cfg.device == "auto" else cfg.device))
    config = asdict(cfg)
    batch_size = cfg.num_envs * cfg.num_steps
    num_iterations = max(1, cfg.total_steps // batch_size)
    envs = make_vector_env(cfg.env_id, cfg.num_envs, cfg.seed, cfg.preprocessing, cfg.frame_stack, cfg.env_kwargs,
                           cfg.vectorization)
    seed_everything(cfg.seed)
    agent = build_network(config, envs.single_observation_space.shape, int(envs.single_action_space.n)).to(device)
    optimizer = torch.optim.Adam(agent.parameters(), lr=cfg.learning_rate, eps=1e-5)
    checkpoint = start_run(run_dir, ALGO, config, agent, optimizer, resume)
    iteration = checkpoint["iteration"] if checkpoint else 0
    global_step = checkpoint["global_step"] if checkpoint else 0
    log = RunLogger(run_dir, METRICS, resume_step=global_step if checkpoint else None,
                    wall_time_before=checkpoint["wall_time"] if checkpoint else 0.0, tensorboard=cfg.tensorboard)
    if checkpoint:
        log.episode_count = checkpoint["episodes"]

    best = BestCheckpoint(run_dir, best=checkpoint.get("best_mean_return", -np.inf) if checkpoint else -np.inf)
    recent: list[float] = list(checkpoint.get("recent_returns", [])) if checkpoint else []

    def state() -> dict[str, Any]:
        return {"algo": ALGO, "config": config, "model": agent.state_dict(), "optimizer": optimizer.state_dict(),
                "global_step": global_step, "iteration": iteration, "episodes": log.episode_count,
                "wall_time": log.wall_time(), "rng": rng_states(), "best_mean_return": best.best,
                "recent_returns": recent[-best.window:]}

    def write_checkpoint() -> None:
        save_checkpoint(state(), last_checkpoint(run_dir))

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

    start_step, start_time = global_step, time.perf_counter()
    while iteration < num_iterations and not (cfg.time_limit and log.wall_time() >= cfg.time_limit):
        lr = cfg.learning_rate * (1.0 - iteration / num_iterations) if cfg.anneal_lr else cfg.learning_rate
        optimizer.param_groups[0]["lr"] = lr
        rollout, next_obs, autoreset = collect_rollout(envs, policy, value_fn, next_obs, autoreset, cfg.num_steps,
                                                       tracker, on_episode, step_offset=global_step)
        global_step += batch_size
        iteration += 1
        advantages, returns = compute_gae(rollout, cfg.gamma, cfg.gae_lambda)
        metrics = ppo_update(agent, optimizer, rollout, advantages, returns, cfg, device)
        sps = (global_step - start_step) / max(time.perf_counter() - start_time, 1e-9)
        log.update(global_step, **{"charts/learning_rate": lr, "charts/sps": sps, **metrics})
        best.update(recent, state)
        if iteration % cfg.checkpoint_every == 0:
            write_checkpoint()
        if cfg.snapshot_every and iteration % cfg.snapshot_every == 0:
            save_checkpoint(state(), snapshot_checkpoint(run_dir, global_step))
        if iteration % 10 == 0 or iteration == num_iterations:
            shown = f"{np.mean(recent[-20:]):.1f}" if recent else "-"
            print(f"update {iteration}/{num_iterations}  step {global_step}  mean return (last 20) {shown}  "
                  f"entropy {metrics['losses/entropy']:.3f}  {sps:.0f} steps/s", flush=True)
    write_checkpoint()
    envs.close()
    log.close()
    title = f"PPO on {cfg.env_id}"
    plot_learning_curve(run_dir, title)
    if "pong" in cfg.env_id.lower():
        plot_win_percentage(run_dir, f"{title}: points won per game")
    return {"global_step": global_step, "iterations": iteration, "wall_time": log.wall_time(),
            "recent_returns": recent[-20:]}
