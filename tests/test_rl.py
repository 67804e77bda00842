"""RL lab: returns, Pong preprocessing on real ALE frames, next-step autoreset, PPO learning, checkpoints, CLI."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from i2dl.rl import envs as rl_envs
from i2dl.rl.logs import EpisodeTracker
from i2dl.rl.ppo import collect_rollout, compute_gae
from i2dl.rl.reinforce import discount_rewards, reinforce_loss


# --- the lab's returns ----------------------------------------------------------------------------------------------
def test_discounted_returns_cartpole_gamma_095_by_hand():
    rewards = np.ones(4, dtype=np.float32)
    raw = discount_rewards(rewards, 0.95, normalize=False)
    np.testing.assert_allclose(raw, [1 + 0.95 + 0.9025 + 0.857375, 1 + 0.95 + 0.9025, 1.95, 1.0], rtol=1e-6)
    normalised = discount_rewards(rewards, 0.95)
    expected = np.array([3.709875, 2.8525, 1.95, 1.0])
    expected = (expected - expected.mean()) / expected.std()  # mean 2.3780625, std 1.0295...
    np.testing.assert_allclose(normalised, expected, rtol=1e-5)
    assert abs(normalised.mean()) < 1e-6 and abs(normalised.std() - 1) < 1e-5


def test_discounted_returns_pong_reset_at_each_point():
    # two points: the agent wins at t=2, loses at t=5; the running sum restarts at every non-zero reward
    rewards = np.array([0, 0, 1, 0, 0, -1], dtype=np.float32)
    raw = discount_rewards(rewards, 0.99, reset_at_point=True, normalize=False)
    np.testing.assert_allclose(raw, [0.9801, 0.99, 1.0, -0.9801, -0.99, -1.0], rtol=1e-6)
    # without the reset, the lost point would leak into the won point's steps
    leaky = discount_rewards(rewards, 0.99, reset_at_point=False, normalize=False)
    assert leaky[2] == pytest.approx(1 - 0.99**3, rel=1e-5)


def test_reinforce_loss_is_return_weighted_negative_log_likelihood():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    actions = torch.tensor([0, 0, 1])
    returns = torch.tensor([1.0, -0.5, 2.0])
    log_p = torch.log_softmax(logits, -1)[torch.arange(3), actions]
    assert reinforce_loss(logits, actions, returns).item() == pytest.approx((-(log_p * returns)).mean().item())


# --- Pong preprocessing on real ALE frames --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pong_frames() -> list[np.ndarray]:
    env = rl_envs.make_env("ALE/Pong-v5", env_kwargs={"frameskip": 5, "repeat_action_probability": 0.0})
    frame, _ = env.reset(seed=0)
    frames = [frame]
    for _ in range(40):
        frames.append(env.step(2)[0])
    env.close()
    return frames


def test_lab_pong_preprocessing_shapes_and_values(pong_frames):
    frame = pong_frames[-1]
    assert frame.shape == (210, 160, 3) and frame.dtype == np.uint8
    image = rl_envs.preprocess_pong(frame)
    assert image.shape == (80, 80) and image.dtype == np.float32
    assert set(np.unique(image)) <= {0.0, 1.0}
    field = frame[35:195:2, ::2, 0]
    assert (field == 144).mean() > 0.8  # the background colour fills the field ...
    assert not image[field == 144].any()  # ... and is removed
    assert image[(field != 144) & (field != 109) & (field != 0)].all()  # paddles and ball become 1
    columns = np.flatnonzero(image.any(axis=0))
    assert columns.min() < 12 and columns.max() > 66  # the opponent's paddle on the left, the agent's on the right
    assert 10 < image.sum() < 200  # objects, not the field


def test_lab_pong_frame_difference_and_wrapper(pong_frames):
    change = rl_envs.pong_change(pong_frames[-2], pong_frames[-1])
    assert change.shape == (80, 80) and set(np.unique(change)) <= {-1.0, 0.0, 1.0}
    np.testing.assert_array_equal(
        change, rl_envs.preprocess_pong(pong_frames[-1]) - rl_envs.preprocess_pong(pong_frames[-2])
    )
    env = rl_envs.make_env("ALE/Pong-v5", 0, "lab", env_kwargs={"frameskip": 5, "repeat_action_probability": 0.0})
    obs, _ = env.reset(seed=0)
    assert obs.shape == (1, 80, 80) and not obs.any()  # previous = current at the start
    moved = [env.step(2)[0] for _ in range(40)]
    assert all(o.shape == (1, 80, 80) for o in moved) and any((o != 0).any() for o in moved)
    np.testing.assert_array_equal(moved[-1][0], change)  # the same frames as the fixture (same seed, actions)
    env.close()


def test_atari_preprocessing_and_frame_stack_on_real_frames():
    env = rl_envs.make_env("ALE/Pong-v5", 0, "atari", frame_stack=4)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (4, 84, 84) and obs.dtype == np.uint8
    for _ in range(30):
        obs, *_ = env.step(0)
    assert obs.shape == (4, 84, 84) and 40 < obs.mean() < 200  # grey field, not an empty frame
    np.testing.assert_array_equal(env.step(0)[0][:3], obs[1:])  # oldest frame first: the stack shifts by one
    env.close()


# --- vectorised environments: next-step autoreset never leaks across episodes -----------------------------------------
class ScriptedEpisodes(gym.Env):
    """Episodes of known lengths; obs = 100*episode + t, reward = episode + 1 (so every reward names its episode);
    the episode ends by termination or (with `truncate`) by a time limit. Logs every real transition."""

    def __init__(self, lengths: list[int], truncate: bool) -> None:
        self.lengths, self.truncate = lengths, truncate
        self.observation_space = gym.spaces.Box(-1e6, 1e6, (1,), np.float32)
        self.action_space = gym.spaces.Discrete(2)
        self.episode, self.t, self.log = -1, 0, []

    def _obs(self):
        return np.array([100.0 * self.episode + self.t], np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.episode, self.t = self.episode + 1, 0
        return self._obs(), {}

    def step(self, action):
        obs, reward = self._obs(), float(self.episode + 1)
        self.t += 1
        done = self.t >= self.lengths[self.episode % len(self.lengths)]
        terminated, truncated = done and not self.truncate, done and self.truncate
        self.log.append((obs, reward, self._obs(), terminated, truncated))
        return self._obs(), reward, terminated, truncated, {}


def reference_gae(log, value, gamma, lam):
    """GAE computed episode by episode from an environment's own log of real transitions."""
    advantages, episode = [], []
    for k, (obs, reward, next_obs, terminated, truncated) in enumerate(log):
        episode.append((obs, reward, next_obs, terminated))
        if terminated or truncated or k == len(log) - 1:
            adv, running = [], 0.0
            for obs_, reward_, next_obs_, term_ in reversed(episode):
                bootstrap = 0.0 if term_ else value(next_obs_)
                running = reward_ + gamma * bootstrap - value(obs_) + gamma * lam * running
                adv.append(running)
            advantages.extend(reversed(adv))
            episode = []
    return advantages


@pytest.mark.parametrize("truncate", [False, True])
def test_vector_env_autoreset_never_leaks_into_gae(truncate):
    lengths = [[3, 2, 4], [5, 1]]
    envs = gym.vector.SyncVectorEnv([lambda l=l: ScriptedEpisodes(l, truncate) for l in lengths])
    assert envs.metadata["autoreset_mode"] == gym.vector.AutoresetMode.NEXT_STEP
    next_obs, _ = envs.reset(seed=0)
    value = lambda obs: 0.01 * float(np.asarray(obs).reshape(-1)[0]) + 0.5
    value_fn = lambda obs: torch.tensor([value(o) for o in obs.numpy()])
    policy = lambda obs: (torch.zeros(len(obs), dtype=torch.long), torch.zeros(len(obs)), value_fn(obs))
    tracker, finished = EpisodeTracker(2), []
    autoreset = np.zeros(2, dtype=bool)
    rollout, next_obs, autoreset = collect_rollout(
        envs, policy, value_fn, next_obs, autoreset, 12, tracker, lambda step, ep: finished.append(ep)
    )
    gamma, lam = 0.9, 0.8
    advantages, returns = compute_gae(rollout, gamma, lam)
    for i in range(2):
        env = envs.envs[i]
        valid = rollout.valid[:, i].numpy()
        # the step after each episode end is the reset step: invalid, reward 0, advantage 0
        done = (rollout.terminated[:, i] | rollout.truncated[:, i]).numpy()
        np.testing.assert_array_equal(valid[1:], ~done[:-1])
        assert valid[0] and not rollout.rewards[~rollout.valid[:, i], i].any()
        assert not advantages[~rollout.valid[:, i], i].any()
        # the valid steps are exactly the environment's real transitions, and their advantages match GAE
        # computed separately for each episode (the last one bootstrapped from the observation after the rollout)
        assert len(env.log) == valid.sum()
        np.testing.assert_array_equal(rollout.obs[valid, i, 0].numpy(), [t[0][0] for t in env.log])
        expected = reference_gae(env.log, value, gamma, lam)
        np.testing.assert_allclose(advantages[valid, i].numpy(), expected, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(
            returns[valid, i].numpy(), advantages[valid, i].numpy() + rollout.values[valid, i].numpy(), rtol=1e-6
        )
    # lambda = 1 and V = 0: each valid step's advantage is the sum of the rewards left in *its own* episode
    # (every reward names its episode, so a leak from the next episode would change the sum)
    rollout.values.zero_()
    rollout.next_value.zero_()
    mc, _ = compute_gae(rollout, 1.0, 1.0)
    for i in range(2):
        rewards, advantage = rollout.rewards[rollout.valid[:, i], i], mc[rollout.valid[:, i], i]
        for t in range(len(rewards)):
            run = int((rewards[t:] == rewards[t]).int().cumprod(0).sum())
            assert advantage[t].item() == pytest.approx(float(rewards[t : t + run].sum()))
    # the tracker reports each finished episode once, with its own length and return (no reset step counted)
    assert sorted((e["episode_length"], e["episode_return"]) for e in finished) == [
        (1, 2.0),
        (2, 4.0),
        (3, 3.0),
        (4, 12.0),
        (5, 5.0),
    ]
    envs.close()


# --- the fast Pong path: ale-py's vector env, the parallel update, bf16 only where it pays ---------------------------
def test_ale_game_names():
    assert rl_envs.ale_game("ALE/Pong-v5") == "pong"
    assert rl_envs.ale_game("ALE/MsPacman-v5") == "ms_pacman"
    assert rl_envs.ale_game("SpaceInvadersNoFrameskip-v4") == "space_invaders"


def test_ale_vector_env_matches_the_gymnasium_atari_pipeline():
    """ale-py's vector env gives the observations of AtariPreprocessing + a zero-padded frame stack (no-op starts and
    FIRE at reset off, so both start alike), and raw scores."""
    envs = rl_envs.make_ale_vector_env("ALE/Pong-v5", 1, env_kwargs={"noop_max": 0, "use_fire_reset": False})
    env = gym.wrappers.FrameStackObservation(
        gym.wrappers.AtariPreprocessing(
            gym.make("ALE/Pong-v5", frameskip=1, repeat_action_probability=0.0), noop_max=0
        ),
        4,
        padding_type="zero",
    )
    vector_obs, _ = envs.reset(seed=3)
    obs, _ = env.reset(seed=3)
    rng, rewards = np.random.default_rng(0), []
    for t in range(200):
        np.testing.assert_array_equal(vector_obs[0], obs)
        action = int(rng.integers(6))
        vector_obs, vector_reward, *_ = envs.step(np.array([action]))
        obs, reward, *_ = env.step(action)
        assert vector_reward[0] == reward
        rewards.append(reward)
    assert min(rewards) == -1  # a point was played
    envs.close()
    env.close()


def test_play_games_counts_the_first_episode_of_each_seed():
    from i2dl.rl.evaluate import play_games

    class Greedy(torch.nn.Module):
        def act(self, obs, greedy=False):
            return torch.zeros(len(obs), dtype=torch.long)

    lengths = [[3, 2, 4], [5, 1], [2]]
    envs = gym.vector.SyncVectorEnv([lambda l=l: ScriptedEpisodes(l, False) for l in lengths])
    games = play_games(Greedy(), envs, seed=0, greedy=True)
    assert [(g["episode_length"], g["episode_return"]) for g in games] == [(3, 3.0), (5, 5.0), (2, 2.0)]


def test_parallel_update_equals_the_single_thread_update():
    """Splitting each minibatch between worker threads gives the same gradients, so the same weights."""
    from concurrent.futures import ThreadPoolExecutor

    from i2dl.rl.ppo import CNNActorCritic, PPOConfig, Rollout, compute_gae, ppo_update

    torch.manual_seed(0)
    steps, n = 8, 4
    obs = torch.randint(0, 255, (steps, n, 4, 84, 84), dtype=torch.uint8)
    rollout = Rollout(
        obs,
        torch.randint(0, 6, (steps, n)),
        -torch.rand(steps, n) - 1,
        torch.randn(steps, n),
        torch.randn(steps, n),
        torch.zeros(steps, n, dtype=torch.bool),
        torch.zeros(steps, n, dtype=torch.bool),
        torch.rand(steps, n) > 0.1,
        torch.randn(n),
    )
    advantages, returns = compute_gae(rollout, 0.99, 0.95)
    cfg = PPOConfig(update_epochs=2, num_minibatches=2, workers=2, ent_coef=0.01, clip_coef=0.1)
    agents = []
    for pool in (None, ThreadPoolExecutor(2)):
        torch.manual_seed(1)
        agent = CNNActorCritic((4, 84, 84), 6, channels=(8, 16, 16), hidden=64)
        optimizer = torch.optim.Adam(agent.parameters(), lr=1e-3, eps=1e-5)
        metrics = ppo_update(agent, optimizer, rollout, advantages, returns, cfg, torch.device("cpu"), pool)
        agents.append((agent, metrics))
    (single, single_metrics), (parallel, parallel_metrics) = agents
    assert single_metrics["losses/clipfrac"] > 0  # the update moved the policy past the clip range
    for key, tensor in single.state_dict().items():
        torch.testing.assert_close(parallel.state_dict()[key], tensor, rtol=1e-4, atol=1e-5)
    for key in ("losses/policy_loss", "losses/value_loss", "losses/entropy", "losses/approx_kl"):
        assert parallel_metrics[key] == pytest.approx(single_metrics[key], rel=1e-4, abs=1e-6)


@pytest.mark.parametrize(
    "flags, expected",
    [
        ({"avx2", "fma"}, ("32-true", True)),  # AVX2 only: bf16 was 5.7x slower there; float32 with channels-last
        ({"avx2", "avx512f", "avx512_bf16", "amx_bf16"}, ("bf16-mixed", True)),
    ],
)
def test_pong_network_uses_bf16_only_where_the_cpu_has_it(flags, expected, monkeypatch):
    from i2dl import hardware
    from i2dl.rl.ppo import PPOConfig, compute_settings

    monkeypatch.setattr(hardware, "cpu_info", lambda: hardware.CPUInfo("test CPU", frozenset(flags), 2))
    config = vars(PPOConfig(network="cnn"))
    assert compute_settings(config, torch.device("cpu")) == expected
    assert compute_settings({**config, "network": "mlp"}, torch.device("cpu")) == ("32-true", False)
    assert compute_settings({**config, "precision": "32-true", "channels_last": "false"}, torch.device("cpu")) == (
        "32-true",
        False,
    )


def test_environment_groups_taking_turns_give_the_same_rollout():
    """Stepping the environments in two groups that take turns (one emulates while the other's actions are chosen)
    collects exactly the transitions of one vector env, episode ends and autoresets included."""
    from i2dl.rl.ppo import collect_rollout

    def policy(obs):  # deterministic, so both collections take the same actions
        action = obs.flatten(1).float().sum(1).long() % 6
        return action, -action.float(), action.float() / 10

    def value_fn(obs):
        return obs.flatten(1).float().mean(1)

    kwargs = {"max_episode_steps": 7}  # episodes end inside the rollout
    collected = []
    for groups in (1, 2):
        envs = rl_envs.make_vector_env("ALE/Pong-v5", 4, 0, "atari", 4, kwargs, "ale", threads=2, groups=groups)
        obs, _ = envs.reset(seed=5)
        autoreset, episodes, tracker = np.zeros(4, dtype=bool), [], EpisodeTracker(4)
        for _ in range(2):  # two rollouts: the carried observation and autoreset flags are right too
            rollout, obs, autoreset = collect_rollout(
                envs,
                policy,
                value_fn,
                obs,
                autoreset,
                6,
                tracker,
                lambda step, ep, found=episodes: found.append((step, ep)),
            )
            collected.append((rollout, obs.copy(), autoreset.copy(), list(episodes)))
        envs.close()
    for single, turns in zip(collected[:2], collected[2:]):
        for name in (
            "obs",
            "actions",
            "logprobs",
            "values",
            "rewards",
            "terminated",
            "truncated",
            "valid",
            "next_value",
        ):
            torch.testing.assert_close(getattr(turns[0], name), getattr(single[0], name), rtol=0, atol=0)
        np.testing.assert_array_equal(turns[1], single[1])
        np.testing.assert_array_equal(turns[2], single[2])
        assert turns[3] == single[3]
    assert (~collected[1][0].valid).any() and collected[1][3]  # autoreset steps and finished episodes were seen
