"""Benchmarks of the RL lab (issue targets), each printing a markdown table with the CPU, its flags and the load.

    python benchmarks/rl.py cartpole [--reinforce_episodes 500 1500] [--eval_episodes 100]
        REINFORCE with the lab's settings and PPO (configs/rl/*_cartpole.yaml): training steps and wall time, the
        first environment step where an episode reached 500, and the greedy mean return over 100 episodes with
        distinct seeds (targets: REINFORCE >= 475; PPO 500 within 100k steps and <= 2 minutes).
    python benchmarks/rl.py pong-throughput [--seconds 8] [--updates 2] [--train_updates 8]
        Agent steps per second of each part of PPO on Pong, each beside its reference measured in the same run:
        the environments (gymnasium's sync vector env with AtariPreprocessing; ale-py's vector env), the inference
        (float32; bf16 + channels-last), the update (float32 on torch's 2 threads; bf16 with 1 or 2 workers), and
        the whole training loop (the loop before issue 15; configs/rl/ppo_pong.yaml with the Nature-DQN network;
        the config as shipped, with cnn_small), with
        the milliseconds per agent step spent in each part.
    python benchmarks/rl.py pong-report --run_dir RUN [RUN ...] [--games 10] [--snapshots] [--checkpoint last]
        Score against agent steps and wall time of (background, resumable) Pong runs from their episodes.csv, the
        greedy score of every kept snapshot (--snapshots), each run's checkpoint in both evaluation protocols (no
        sticky actions; sticky actions 0.25) with greedy and sampled actions, a summary row per run, and one figure
        with every run on the same axes (runs/bench/rl/pong_report.png).
    python benchmarks/rl.py pong-games --ckpt_path CKPT [--games 10] [--sampled] [--sticky 0.25]
        Each game of a checkpoint described from the emulator's RAM: score, longest run of lost points, time with
        the agent's paddle at the top or bottom edge, the actions taken.

The Pong runs of docs/benchmarks.md:
        i2dl rl train -c configs/rl/ppo_pong.yaml --run_dir runs/rl/ppo_pong_2h     # the 2-hour config, 2026-12-08
        i2dl rl train -c configs/rl/ppo_pong.yaml --run_dir runs/rl/ppo_pong_small --total_steps 5000000 \\
            --ent_coef_final null --snapshot_every 250                               # the 2026-12-07 schedule
        i2dl rl train -c configs/rl/reinforce_pong.yaml --run_dir runs/rl/reinforce_pong_budget --threads 1 \\
            --episodes 100000 --snapshot_every 100 --time_limit 7200

Run niced on a shared machine: `nice -n 10 python benchmarks/rl.py cartpole`.
"""

from __future__ import annotations

import argparse
import itertools
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
BENCH_RUNS = REPO / "runs" / "bench" / "rl"


def machine() -> str:
    from i2dl.hardware import describe

    return f"{describe()}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"


def load() -> str:
    return " ".join(f"{v:.1f}" for v in os.getloadavg())


def load_config(name: str, **overrides):
    """(algorithm, config) of configs/rl/<name>.yaml with `--key value` overrides, as `i2dl rl train` reads it."""
    from i2dl.rl.cli import _find_algo, build_config

    path = str(REPO / "configs" / "rl" / f"{name}.yaml")
    args = ["-c", path] + [item for key, value in overrides.items() for item in (f"--{key}", str(value))]
    algo, _ = _find_algo(args)
    return algo, build_config(algo, args, name)[0]


def evaluate(
    checkpoint: Path, episodes: int, greedy: bool = True, seed: int = 10_000, sticky: float = 0.0
) -> list[float]:
    """Scores of `episodes` evaluation games of a checkpoint (or a run folder's last.pt)."""
    from i2dl.rl.evaluate import evaluate_agent, load_agent

    return evaluate_agent(load_agent(checkpoint), episodes, seed, greedy, sticky)


def first_step_reaching(run_dir: Path, value: float) -> int | None:
    from i2dl.rl.logs import read_episodes

    episodes = read_episodes(run_dir)
    hits = np.flatnonzero(episodes["episode_return"] >= value)
    return int(episodes["step"][hits[0]]) if len(hits) else None


def cartpole(args) -> None:
    from i2dl.rl import ppo, reinforce

    runs = [
        ("reinforce_cartpole", reinforce, {"episodes": n}, "eval mean >= 475")
        for n in args.reinforce_episodes
        if "reinforce" in args.algos
    ]
    if "ppo" in args.algos:
        runs.append(("ppo_cartpole", ppo, {}, "500 within 100k steps, <= 120 s"))
    header = (
        "| run | checkpoint | env steps | train wall (s) | first step with return 500 | eval return | target | "
        "reached |\n|---|---|---|---|---|---|---|---|"
    )
    print(header, flush=True)
    rows = []
    for name, module, overrides, target in runs:
        _, cfg = load_config(name, tensorboard="false", **overrides)
        label = f"{name} ({overrides['episodes']} episodes)" if overrides else name
        run_dir = BENCH_RUNS / label.replace(" ", "_").replace("(", "").replace(")", "")
        shutil.rmtree(run_dir, ignore_errors=True)
        started = time.perf_counter()
        summary = module.train(cfg, run_dir)
        wall = time.perf_counter() - started
        first = first_step_reaching(run_dir, 500)
        for which in ("last", "best"):
            returns = np.array(evaluate(run_dir / "checkpoints" / f"{which}.pt", args.eval_episodes))
            if name.startswith("ppo"):
                reached = returns.mean() >= 500 and summary["global_step"] <= 100_000 and wall <= 120
            else:
                reached = returns.mean() >= 475
            rows.append(
                (
                    label,
                    f"{which}.pt",
                    summary["global_step"],
                    f"{wall:.0f}",
                    first if first is not None else "never",
                    f"{returns.mean():.1f} ± {returns.std():.1f} (min {returns.min():.0f})",
                    target,
                    "yes" if reached else "no",
                )
            )
            print("| " + " | ".join(str(v) for v in rows[-1]) + " |", flush=True)
    print(
        f"\n{machine()}, {args.eval_episodes} greedy evaluation episodes with seeds 10000, 10001, ...; "
        f"best.pt = REINFORCE: the network with the best mean of 10 greedy episodes (seeds 20000, ...) checked every "
        f"10 episodes; PPO: the network when the mean of the last 20 training episodes peaked\n"
    )
    print(header)
    for row in rows:
        print("| " + " | ".join(str(v) for v in row) + " |")


def steps_per_second(step, seconds: float) -> float:
    """Calls of `step()` (each returning the agent steps it made) per second, over about `seconds`."""
    step()  # warm-up
    steps, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        steps += step()
    return steps / (time.perf_counter() - started)


def env_part(vectorization: str, num_envs: int, threads: int, seconds: float) -> float:
    from i2dl.rl.envs import make_vector_env

    kwargs = {"frameskip": 1, "repeat_action_probability": 0.0} if vectorization != "ale" else {}
    envs = make_vector_env("ALE/Pong-v5", num_envs, 0, "atari", 4, kwargs, vectorization, threads)
    envs.reset(seed=0)
    rng = np.random.default_rng(0)

    def step() -> int:
        envs.step(rng.integers(0, 6, num_envs))
        return num_envs

    try:
        return steps_per_second(step, seconds)
    finally:
        envs.close()


def pong_frames(num_steps: int, num_envs: int) -> torch.Tensor:
    """Real Pong observations (random play) as a (num_steps, num_envs, 4, 84, 84) uint8 tensor."""
    from i2dl.rl.envs import make_vector_env

    envs = make_vector_env("ALE/Pong-v5", num_envs, 0, "atari", 4, {}, "ale", 2)
    obs, _ = envs.reset(seed=0)
    frames = []
    for _ in range(num_steps):
        frames.append(torch.from_numpy(obs.copy()))
        obs, *_ = envs.step(np.random.default_rng(len(frames)).integers(0, 6, num_envs))
    envs.close()
    return torch.stack(frames)


def make_agent(network: str, precision: str):
    from i2dl.rl.ppo import CNNActorCritic, build_network

    agent = build_network({"network": network}, (4, 84, 84), 6)
    assert isinstance(agent, CNNActorCritic)
    bf16 = precision == "bf16-mixed"
    return agent.set_compute(bf16, channels_last=bf16)


def inference_part(frames: torch.Tensor, network: str, precision: str, seconds: float) -> float:
    agent = make_agent(network, precision)
    batches = itertools.cycle(frames)

    def step() -> int:
        with torch.no_grad():
            obs = next(batches)
            agent.get_action_and_value(obs)
        return len(obs)

    return steps_per_second(step, seconds)


def update_part(frames: torch.Tensor, network: str, precision: str, workers: int, threads: int, updates: int) -> float:
    """Agent steps/s of PPO's update alone (4 epochs x 4 minibatches over a rollout of `frames`)."""
    from concurrent.futures import ThreadPoolExecutor

    from i2dl.rl.ppo import Rollout, compute_gae, ppo_update

    steps, n = frames.shape[:2]
    torch.manual_seed(0)
    rollout = Rollout(
        frames,
        torch.randint(0, 6, (steps, n)),
        torch.full((steps, n), -1.79),
        torch.zeros(steps, n),
        (torch.rand(steps, n) < 0.02).float(),
        torch.zeros(steps, n, dtype=torch.bool),
        torch.zeros(steps, n, dtype=torch.bool),
        torch.ones(steps, n, dtype=torch.bool),
        torch.zeros(n),
    )
    advantages, returns = compute_gae(rollout, 0.99, 0.95)
    _, cfg = load_config("ppo_pong", workers=workers, threads=threads)
    agent = make_agent(network, precision)
    optimizer = torch.optim.Adam(agent.parameters(), lr=2.5e-4, eps=1e-5)
    torch.set_num_threads(threads)
    pool = ThreadPoolExecutor(workers) if workers > 1 else None
    try:
        ppo_update(agent, optimizer, rollout, advantages, returns, cfg, torch.device("cpu"), pool)  # warm-up
        started = time.perf_counter()
        for _ in range(updates):
            ppo_update(agent, optimizer, rollout, advantages, returns, cfg, torch.device("cpu"), pool)
        return updates * steps * n / (time.perf_counter() - started)
    finally:
        torch.set_num_threads(1)
        if pool is not None:
            pool.shutdown()


def loop_part(name: str, updates: int, **overrides) -> dict:
    """A short PPO training (the first update not timed): agent steps/s and seconds per part per 1,000 steps."""
    import csv

    from i2dl.rl import ppo

    _, cfg = load_config("ppo_pong", tensorboard="false", checkpoint_every=1000, snapshot_every=0, **overrides)
    cfg.total_steps = (updates + 1) * cfg.num_envs * cfg.num_steps
    run_dir = BENCH_RUNS / f"throughput_{name}"
    shutil.rmtree(run_dir, ignore_errors=True)
    ppo.train(cfg, run_dir)
    torch.set_num_threads(1)
    with open(run_dir / "metrics.csv", newline="") as fh:
        first, *rows = list(csv.DictReader(fh))
    steps = int(rows[-1]["step"]) - int(first["step"])
    wall = float(rows[-1]["wall_time"]) - float(first["wall_time"])
    parts = {k: sum(float(r[f"time/{k}"]) for r in rows) for k in ("env", "inference", "update")}
    return {
        "sps": steps / wall,
        **{k: 1000 * v / steps for k, v in parts.items()},
        "other": 1000 * (wall - sum(parts.values())) / steps,
    }  # milliseconds per agent step


# The loop of docs/benchmarks.md before issue 15: gymnasium's sync vector env with AtariPreprocessing, 8 envs x 128
# steps, the Nature-DQN network in float32 with torch's own 2 threads.
REFERENCE_LOOP = {
    "vectorization": "sync",
    "env_kwargs": "{frameskip: 1, repeat_action_probability: 0.0}",
    "num_envs": 8,
    "num_steps": 128,
    "threads": 2,
    "workers": 1,
    "precision": "32-true",
    "channels_last": "false",
}


def pong_throughput(args) -> None:
    """Agent steps per second of each part of PPO on Pong (environment, inference, update) and of the whole loop,
    each beside its reference measured in the same run."""
    print(f"{machine()}\nload average at the start: {load()}\n", flush=True)
    torch.set_num_threads(1)
    rows = []

    def row(part: str, setting: str, sps: float, reference: float | None) -> None:
        ratio = "1.00 (reference)" if reference is None else f"{sps / reference:.2f}"
        rows.append((part, setting, sps, ratio, load().split()[0]))
        print(f"| {part} | {setting} | {sps:,.0f} | {ratio} | {rows[-1][-1]} |", flush=True)

    print("| part | setting | agent steps/s | ratio | load (1 min) |\n|---|---|---|---|---|")
    seconds = args.seconds
    ref = env_part("sync", 8, 1, seconds)
    row("environment", "gymnasium sync, AtariPreprocessing, 8 envs", ref, None)
    for threads in (1, 2):
        row(
            "environment",
            f"ale-py vector env, 16 envs, {threads} thread(s)",
            env_part("ale", 16, threads, seconds),
            ref,
        )
    frames = pong_frames(64, 16)
    ref = inference_part(frames, "cnn", "32-true", seconds)
    row("inference", "cnn float32, batch 16, 1 thread", ref, None)
    for network in ("cnn", "cnn_small"):
        row(
            "inference",
            f"{network} bf16 + channels-last, batch 16, 1 thread",
            inference_part(frames, network, "bf16-mixed", seconds),
            ref,
        )
    ref = update_part(frames, "cnn", "32-true", 1, 2, args.updates)
    row("update", "cnn float32, torch 2 threads (4 epochs x 4 minibatches of 256)", ref, None)
    for network, workers, threads in (("cnn", 1, 1), ("cnn", 1, 2), ("cnn", 2, 1), ("cnn_small", 2, 1)):
        row(
            "update",
            f"{network} bf16 + channels-last, {workers} worker(s) x {threads} thread(s)",
            update_part(frames, network, "bf16-mixed", workers, threads, args.updates),
            ref,
        )

    loops = [
        ("reference", "gymnasium sync 8 envs x 128, cnn float32, torch 2 threads", REFERENCE_LOOP),
        ("ppo_pong_cnn", "configs/rl/ppo_pong.yaml --network cnn (Nature-DQN)", {"network": "cnn"}),
        ("ppo_pong", "configs/rl/ppo_pong.yaml (cnn_small)", {}),
    ]
    results = []
    for name, label, overrides in loops:
        found = loop_part(name, args.train_updates, **overrides)
        results.append((label, found, load().split()[0]))
        print(f"whole loop {label}: {found['sps']:.0f} agent steps/s (load {results[-1][-1]})", flush=True)
    reference = results[0][1]["sps"]
    print(
        f"\nload average at the end: {load()}\n\n| whole loop | agent steps/s | ratio | ms per agent step: "
        f"env / inference / update / other | load (1 min) |\n|---|---|---|---|---|"
    )
    for label, found, at in results:
        print(
            f"| {label} | {found['sps']:,.0f} | {found['sps'] / reference:.2f} | {found['env']:.2f} / "
            f"{found['inference']:.2f} / {found['update']:.2f} / {found['other']:.2f} | {at} |"
        )


def frames_per_step(config: dict) -> int:
    """Atari frames behind one agent step: AtariPreprocessing's skip, otherwise the env's own frameskip."""
    from i2dl.rl.envs import ATARI_FRAME_SKIP

    return ATARI_FRAME_SKIP if config["preprocessing"] == "atari" else int(config["env_kwargs"].get("frameskip", 1))


def _evaluate_job(job: tuple[str, int, bool, float]) -> list[float]:
    torch.set_num_threads(1)
    path, games, greedy, sticky = job
    return evaluate(Path(path), games, greedy=greedy, sticky=sticky)


def evaluate_many(jobs_: list[tuple[Path, bool, float]], games: int, jobs: int) -> list[np.ndarray]:
    """`games` evaluation games for each (checkpoint, greedy, sticky), `jobs` at a time (one process per core)."""
    work = [(str(path), games, greedy, sticky) for path, greedy, sticky in jobs_]
    if jobs <= 1 or len(work) <= 1:
        return [np.array(_evaluate_job(job)) for job in work]
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(min(jobs, len(work))) as pool:
        return [np.array(r) for r in pool.map(_evaluate_job, work, chunksize=1)]


def describe(scores: np.ndarray) -> str:
    return f"{scores.mean():+.1f} ± {scores.std():.1f} ({' '.join(f'{s:+.0f}' for s in scores)})"


def pong_report(args) -> None:
    """For each run: its training games in chunks (score against steps and wall time), the greedy score of every
    kept snapshot (--snapshots), its checkpoint under both evaluation protocols with greedy and sampled actions, one
    summary row per run, and one figure of every run's score against agent steps and wall time."""
    from i2dl.rl.evaluate import PROTOCOLS
    from i2dl.rl.figures import plot_score_comparison
    from i2dl.rl.logs import read_episodes
    from i2dl.rl.runs import load_checkpoint

    print(f"{machine()}; load average at the start: {load()}")
    summary, curves, points = [], [], {}
    for run_dir in map(Path, args.run_dir):
        episodes = read_episodes(run_dir)
        checkpoint_path = run_dir / "checkpoints" / f"{args.checkpoint}.pt"
        checkpoint = load_checkpoint(checkpoint_path)
        skip = frames_per_step(checkpoint["config"])
        label = f"{checkpoint['algo']} ({run_dir.name})"
        curves.append((label, run_dir))
        print(
            f"\n{run_dir}: {checkpoint['algo']}, {checkpoint['global_step']:,} agent steps ({skip} frames each), "
            f"{checkpoint['wall_time'] / 60:.0f} min of training at {checkpoint_path.name}, {len(episodes['step'])} "
            f"training games"
        )
        print("\n| games | up to agent step | up to wall time (min) | mean score | points won |")
        print("|---|---|---|---|---|")
        n = len(episodes["step"])
        played = episodes["points_won"] + episodes["points_lost"]
        for chunk in np.array_split(np.arange(n), min(args.rows, n)) if n else []:
            won = episodes["points_won"][chunk].sum() / max(1, played[chunk].sum())
            print(
                f"| {chunk[0] + 1}-{chunk[-1] + 1} | {int(episodes['step'][chunk[-1]]):,} | "
                f"{episodes['wall_time'][chunk[-1]] / 60:.0f} | {episodes['episode_return'][chunk].mean():.1f} | "
                f"{100 * won:.0f}% |"
            )
        last = np.arange(max(0, n - 100), n)
        row = {
            "run": str(run_dir),
            "algo": checkpoint["algo"],
            "steps": checkpoint["global_step"],
            "frames": checkpoint["global_step"] * skip,
            "minutes": checkpoint["wall_time"] / 60,
            "games": n,
            "train_score": episodes["episode_return"][last].mean() if n else float("nan"),
            "points_won": 100 * episodes["points_won"][last].sum() / max(1, played[last].sum()),
            "lost_21_0": int(((episodes["points_won"][last] == 0) & (episodes["points_lost"][last] >= 21)).sum()),
        }
        paths = sorted((run_dir / "checkpoints").glob("step_*.pt")) if args.snapshots and args.games else []
        if paths:
            started = time.perf_counter()
            results = evaluate_many([(path, True, 0.0) for path in paths], args.games, args.jobs)
            print(
                f"\nsnapshots, {args.games} greedy evaluation games each without sticky actions (seeds 10000, ...), "
                f"{time.perf_counter() - started:.0f} s:\n"
            )
            print("| agent steps | Atari frames | wall time (min) | mean score ± sd (games) |")
            print("|---|---|---|---|")
            points[label] = []
            for path, scores in zip(paths, results):
                snapshot = load_checkpoint(path)
                points[label].append((snapshot["global_step"], snapshot["wall_time"], scores.mean()))
                print(
                    f"| {snapshot['global_step']:,} | {snapshot['global_step'] * skip / 1e6:.1f} M | "
                    f"{snapshot['wall_time'] / 60:.0f} | {describe(scores)} |"
                )
        if args.games:
            started = time.perf_counter()
            runs = [(name, sticky, greedy) for name, sticky in PROTOCOLS.items() for greedy in (True, False)]
            results = evaluate_many(
                [(checkpoint_path, greedy, sticky) for _, sticky, greedy in runs], args.games, args.jobs
            )
            print(
                f"\n{checkpoint_path.name}, {args.games} evaluation games per protocol (seeds 10000, ...), "
                f"{time.perf_counter() - started:.0f} s:\n"
            )
            print("| protocol | actions | mean score ± sd (games) |\n|---|---|---|")
            for (name, sticky, greedy), scores in zip(runs, results):
                kind = "greedy" if greedy else "sampled"
                row[f"{kind}, {name}"] = f"{scores.mean():+.1f} ± {scores.std():.1f}"
                print(f"| {name} | {kind} | {describe(scores)} |")
        summary.append(row)
    columns = [f"{kind}, {name}" for name in PROTOCOLS for kind in ("greedy", "sampled")]
    print(
        f"\n| run | algorithm | agent steps | Atari frames | training wall time (min) | games | last 100 games: mean "
        f"score | points won | lost 21-0 | {' | '.join(columns)} |"
    )
    print("|---" * (9 + len(columns)) + "|")
    for r in summary:
        print(
            f"| {r['run']} | {r['algo']} | {r['steps']:,} | {r['frames']:,} | {r['minutes']:.0f} | {r['games']} | "
            f"{r['train_score']:.1f} | {r['points_won']:.0f}% | {r['lost_21_0']} | "
            + " | ".join(r.get(c, "-") for c in columns)
            + " |"
        )
    figure = plot_score_comparison(curves, Path(args.figure), points, "Pong: score against agent steps and wall time")
    print(f"\nfigure: {figure}; load average at the end: {load()}")


# Pong's RAM (Atari RAM annotations of Anand et al. 2019): the agent's paddle, the opponent's, the ball, the scores.
PONG_RAM = {"player_y": 51, "enemy_y": 50, "ball_x": 49, "ball_y": 54, "enemy_score": 13, "player_score": 14}


def pong_games(args) -> None:
    """Play games of one checkpoint in gymnasium's Pong (the agent's observations, plus the emulator's RAM) and
    describe each: score, longest run of lost points, where the agent's paddle was, which actions it took. Every
    step is kept in runs/bench/rl/pong_games/<name>.npz for a closer look."""
    from i2dl.rl.evaluate import load_agent

    torch.set_num_threads(1)
    agent = load_agent(args.ckpt_path)
    out = BENCH_RUNS / "pong_games"
    out.mkdir(parents=True, exist_ok=True)
    mode = "sampled" if args.sampled else "greedy"
    print(
        f"{machine()}\n{agent.path}: {agent.checkpoint['global_step']:,} agent steps; {args.games} {mode} games, "
        f"sticky {args.sticky:g}, seeds {args.seed}, ...\n"
    )
    print(
        "| seed | score | won-lost | longest run of lost points | points won after a lost point (the agent receives "
        "the serve) | after a won point | paddle at the top / bottom edge | actions NOOP FIRE UP DOWN UPFIRE "
        "DOWNFIRE | mean probability of the likeliest action / move (NOOP+FIRE, UP+UPFIRE, DOWN+DOWNFIRE move alike) |"
        "\n|---|---|---|---|---|---|---|---|---|"
    )
    after = {-1: [], 1: []}
    for k in range(args.games):
        env = agent.make_env(args.seed + k, args.sticky)
        obs, _ = env.reset(seed=args.seed + k)
        ale = env.unwrapped.ale
        log: dict[str, list] = {key: [] for key in [*PONG_RAM, "action", "reward", "probs"]}
        done = False
        while not done:
            with torch.no_grad():
                logits = agent.network.actor(agent.network.trunk(torch.as_tensor(np.asarray(obs))[None])[0])[0]
            probs = torch.softmax(logits, -1)
            action = int(probs.argmax() if not args.sampled else torch.multinomial(probs, 1))
            log["probs"].append(probs.numpy())
            obs, reward, terminated, truncated, _ = env.step(action)
            ram = ale.getRAM()
            for key, address in PONG_RAM.items():
                log[key].append(int(ram[address]))
            log["action"].append(action)
            log["reward"].append(float(reward))
            done = terminated or truncated
        env.close()
        data = {key: np.array(values) for key, values in log.items()}
        np.savez_compressed(
            out / f"{Path(args.ckpt_path).stem}_{mode}_sticky{args.sticky:g}_{args.seed + k}.npz", **data
        )
        points = data["reward"][data["reward"] != 0]
        runs = np.diff(np.flatnonzero(np.concatenate([[1], points, [1]]) > 0)) - 1
        top, bottom = (data["player_y"] <= 40).mean(), (data["player_y"] >= 200).mean()
        shares = np.bincount(data["action"], minlength=6) / len(data["action"])
        probs = data["probs"]
        moves = probs[:, [0, 2, 3]] + probs[:, [1, 4, 5]]
        won_after = {}
        for previous in (-1, 1):  # Pong serves toward the player who lost the last point
            outcomes = points[1:][points[:-1] == previous] > 0
            after[previous].extend(outcomes)
            won_after[previous] = f"{outcomes.sum()}/{len(outcomes)}"
        print(
            f"| {args.seed + k} | {points.sum():+.0f} | {(points > 0).sum()}-{(points < 0).sum()} | {runs.max()} | "
            f"{won_after[-1]} | {won_after[1]} | {100 * top:.0f}% / {100 * bottom:.0f}% | "
            f"{' '.join(f'{100 * v:.0f}%' for v in shares)} | {probs.max(1).mean():.2f} / {moves.max(1).mean():.2f} |",
            flush=True,
        )
    print(
        f"\nall games: points won after a lost point {np.mean(after[-1]):.0%} ({len(after[-1])} points), after a "
        f"won point {np.mean(after[1]):.0%} ({len(after[1])} points)"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("cartpole")
    p.add_argument(
        "--reinforce_episodes",
        type=int,
        nargs="+",
        default=[500, 1500],
        help="REINFORCE training lengths to run (the lab: 500; the config: 1500)",
    )
    p.add_argument("--eval_episodes", type=int, default=100)
    p.add_argument("--algos", nargs="+", default=["reinforce", "ppo"], choices=["reinforce", "ppo"])
    p = sub.add_parser("pong-throughput")
    p.add_argument("--seconds", type=float, default=8, help="seconds to time each environment/inference part")
    p.add_argument("--updates", type=int, default=2, help="updates to time for each update part")
    p.add_argument(
        "--train_updates",
        type=int,
        default=8,
        help="PPO updates (of 1,024 agent steps) to time for each whole loop, after one untimed update",
    )
    p = sub.add_parser("pong-games")
    p.add_argument("--ckpt_path", required=True, help="checkpoint file or run folder")
    p.add_argument("--games", type=int, default=10)
    p.add_argument("--seed", type=int, default=10_000)
    p.add_argument("--sampled", action="store_true", help="sample actions (default: greedy)")
    p.add_argument("--sticky", type=float, default=0.0, help="sticky-action probability")
    p = sub.add_parser("pong-report")
    p.add_argument("--run_dir", nargs="+", default=["runs/rl/ppo_pong"], help="one or more Pong run folders")
    p.add_argument("--checkpoint", default="last", help="the checkpoint of each run to evaluate: last, best, ...")
    p.add_argument("--games", type=int, default=10, help="evaluation games per checkpoint and protocol (0: none)")
    p.add_argument("--snapshots", action="store_true", help="also evaluate every checkpoints/step_*.pt (greedy)")
    p.add_argument("--jobs", type=int, default=2, help="evaluation processes (one per core)")
    p.add_argument("--rows", type=int, default=8)
    p.add_argument("--figure", default=str(BENCH_RUNS / "pong_report.png"), help="where to write the figure")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    started = time.perf_counter()
    {"cartpole": cartpole, "pong-throughput": pong_throughput, "pong-report": pong_report, "pong-games": pong_games}[
        args.what
    ](args)
    print(
        f"\n(command: python benchmarks/rl.py {' '.join(sys.argv[1:])}; wall time "
        f"{time.perf_counter() - started:.0f} s)"
    )


if __name__ == "__main__":
    main()
