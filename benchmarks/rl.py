"""Benchmarks of the RL lab (issue targets), each printing a markdown table.

    python benchmarks/rl.py cartpole [--reinforce_episodes 500 1500] [--eval_episodes 100]
        REINFORCE with the lab's settings and PPO (configs/rl/*_cartpole.yaml): training steps and wall time, the
        first environment step where an episode reached 500, and the greedy mean return over 100 episodes with
        distinct seeds (targets: REINFORCE >= 475; PPO 500 within 100k steps and <= 2 minutes).
    python benchmarks/rl.py pong-throughput [--seconds 20]
        Environment steps per second of Pong alone (the lab's preprocessing, the Atari preprocessing with sync and
        async vector envs) and of PPO training (a few updates of configs/rl/ppo_pong.yaml).
    python benchmarks/rl.py pong-report --run_dir RUN [RUN ...] [--games 10] [--snapshots] [--both]
        Score against environment steps and wall time of (background, resumable) Pong runs from their episodes.csv,
        the mean score of each run's last checkpoint over N evaluation games (and of every kept snapshot,
        checkpoints/step_*.pt, with --snapshots), and a summary row per run to compare algorithms at one budget.
    The budget runs of docs/benchmarks.md (both on one core each, side by side, for the same wall time T seconds):
        i2dl rl train -c configs/rl/ppo_pong.yaml --run_dir runs/rl/ppo_pong_budget --threads 1 --snapshot_every 250 \\
            --time_limit T
        i2dl rl train -c configs/rl/reinforce_pong.yaml --run_dir runs/rl/reinforce_pong_budget --threads 1 \\
            --episodes 100000 --time_limit T

Run niced on a shared machine: `nice -n 10 python benchmarks/rl.py cartpole`.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
BENCH_RUNS = REPO / "runs" / "bench" / "rl"


def machine() -> str:
    return f"{os.cpu_count()}-core {platform.machine()} CPU, torch {torch.__version__}, {time.strftime('%Y-%m-%d')}"


def load_config(name: str, **overrides):
    from i2dl.rl.cli import build_config

    values = yaml.safe_load((REPO / "configs" / "rl" / f"{name}.yaml").read_text())
    algo = values.pop("algo")
    args = [item for key, value in overrides.items() for item in (f"--{key}", str(value))]
    return algo, build_config(algo, values, args, name)


def evaluate(checkpoint: Path, episodes: int, greedy: bool = True, seed: int = 10_000) -> list[float]:
    """Returns of `episodes` evaluation episodes of a checkpoint (or a run folder's last.pt)."""
    from i2dl.rl.cli import load_agent
    from i2dl.rl.runs import run_episodes

    network, env, _ = load_agent(str(checkpoint))
    returns = run_episodes(network, env, episodes, seed, greedy=greedy)
    env.close()
    return returns


def first_step_reaching(run_dir: Path, value: float) -> int | None:
    from i2dl.rl.runs import read_episodes

    episodes = read_episodes(run_dir)
    hits = np.flatnonzero(episodes["episode_return"] >= value)
    return int(episodes["step"][hits[0]]) if len(hits) else None


def cartpole(args) -> None:
    from i2dl.rl import ppo, reinforce

    runs = [(f"reinforce_cartpole", reinforce, {"episodes": n}, "eval mean >= 475") for n in args.reinforce_episodes
            if "reinforce" in args.algos]
    if "ppo" in args.algos:
        runs.append(("ppo_cartpole", ppo, {}, "500 within 100k steps, <= 120 s"))
    header = ("| run | checkpoint | env steps | train wall (s) | first step with return 500 | eval return | target | "
              "reached |\n|---|---|---|---|---|---|---|---|")
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
            rows.append((label, f"{which}.pt", summary["global_step"], f"{wall:.0f}",
                         first if first is not None else "never",
                         f"{returns.mean():.1f} ± {returns.std():.1f} (min {returns.min():.0f})", target,
                         "yes" if reached else "no"))
            print("| " + " | ".join(str(v) for v in rows[-1]) + " |", flush=True)
    print(f"\n{machine()}, {args.eval_episodes} greedy evaluation episodes with seeds 10000, 10001, ...; "
          f"best.pt = REINFORCE: the network with the best mean of 10 greedy episodes (seeds 20000, ...) checked every "
          f"10 episodes; PPO: the network when the mean of the last 20 training episodes peaked\n")
    print(header)
    for row in rows:
        print("| " + " | ".join(str(v) for v in row) + " |")


def steps_per_second(envs, seconds: float, vector: bool) -> float:
    steps, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        if vector:
            envs.step(envs.action_space.sample())
            steps += envs.num_envs
        else:
            _, _, terminated, truncated, _ = envs.step(envs.action_space.sample())
            steps += 1
            if terminated or truncated:
                envs.reset()
    return steps / (time.perf_counter() - started)


def pong_throughput(args) -> None:
    from i2dl.rl import ppo
    from i2dl.rl.envs import make_env, make_vector_env

    lab_kwargs = {"frameskip": 5, "repeat_action_probability": 0.0}
    rows = []
    env = make_env("ALE/Pong-v5", 0, "none", env_kwargs=lab_kwargs)
    env.reset(seed=0)
    rows.append(("raw frames (210x160x3), frameskip 5", "1 env", steps_per_second(env, args.seconds, False)))
    env = make_env("ALE/Pong-v5", 0, "lab", env_kwargs=lab_kwargs)
    env.reset(seed=0)
    rows.append(("lab preprocessing (80x80 difference), frameskip 5", "1 env",
                 steps_per_second(env, args.seconds, False)))
    for vectorization in ("sync", "async"):
        envs = make_vector_env("ALE/Pong-v5", 8, 0, "atari", vectorization=vectorization)
        envs.reset(seed=0)
        rows.append(("Atari preprocessing (4x84x84), frameskip 4", f"8 envs, {vectorization}",
                     steps_per_second(envs, args.seconds, True)))
        envs.close()
    _, cfg = load_config("ppo_pong", total_steps=args.train_updates * 1024, tensorboard="false", checkpoint_every=100)
    run_dir = BENCH_RUNS / "ppo_pong_throughput"
    shutil.rmtree(run_dir, ignore_errors=True)
    started = time.perf_counter()
    summary = ppo.train(cfg, run_dir)
    rows.append((f"PPO training (configs/rl/ppo_pong.yaml, {args.train_updates} updates)", "8 envs, sync",
                 summary["global_step"] / (time.perf_counter() - started)))
    load = " ".join(f"{v:.1f}" for v in os.getloadavg())
    print(f"\n{machine()}, torch threads {torch.get_num_threads()}, load average while measuring {load}\n")
    print("| what | envs | agent steps/s |")
    print("|---|---|---|")
    for what, envs_, sps in rows:
        print(f"| {what} | {envs_} | {sps:.0f} |")


def frames_per_step(config: dict) -> int:
    """Atari frames behind one agent step: AtariPreprocessing's skip, otherwise the env's own frameskip."""
    from i2dl.rl.envs import ATARI_FRAME_SKIP

    return ATARI_FRAME_SKIP if config["preprocessing"] == "atari" else int(config["env_kwargs"].get("frameskip", 1))


def _evaluate_job(job: tuple[str, int, bool]) -> list[float]:
    torch.set_num_threads(1)
    path, games, greedy = job
    return evaluate(Path(path), games, greedy=greedy)


def evaluate_many(paths: list[Path], games: int, greedy: bool, jobs: int) -> list[np.ndarray]:
    """`games` evaluation games of each checkpoint, `jobs` checkpoints at a time (one process per CPU core)."""
    work = [(str(path), games, greedy) for path in paths]
    if jobs <= 1 or len(work) <= 1:
        return [np.array(_evaluate_job(job)) for job in work]
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(min(jobs, len(work))) as pool:
        return [np.array(r) for r in pool.map(_evaluate_job, work, chunksize=1)]


def describe(scores: np.ndarray) -> str:
    return f"{scores.mean():+.1f} ± {scores.std():.1f} ({' '.join(f'{s:+.0f}' for s in scores)})"


def pong_report(args) -> None:
    """For each run: its training games in chunks (score against steps and wall time), optionally the greedy score of
    every kept snapshot, and one summary row per run for comparing algorithms at the same budget."""
    from i2dl.rl.runs import load_checkpoint, read_episodes

    summary = []
    for run_dir in map(Path, args.run_dir):
        episodes = read_episodes(run_dir)
        checkpoint = load_checkpoint(run_dir / "checkpoints" / "last.pt")
        skip = frames_per_step(checkpoint["config"])
        print(f"\n{run_dir}: {checkpoint['algo']}, {checkpoint['global_step']:,} agent steps ({skip} frames each), "
              f"{checkpoint['wall_time'] / 60:.0f} min of training at the last checkpoint, {len(episodes['step'])} "
              f"games")
        print("\n| games | up to agent step | up to wall time (min) | mean score | points won |")
        print("|---|---|---|---|---|")
        n = len(episodes["step"])
        points = episodes["points_won"] + episodes["points_lost"]
        for chunk in np.array_split(np.arange(n), min(args.rows, n)) if n else []:
            won = episodes["points_won"][chunk].sum() / max(1, points[chunk].sum())
            print(f"| {chunk[0] + 1}-{chunk[-1] + 1} | {int(episodes['step'][chunk[-1]]):,} | "
                  f"{episodes['wall_time'][chunk[-1]] / 60:.0f} | {episodes['episode_return'][chunk].mean():.1f} | "
                  f"{100 * won:.0f}% |")
        last = np.arange(max(0, n - 100), n)
        row = {"run": str(run_dir), "algo": checkpoint["algo"], "steps": checkpoint["global_step"],
               "frames": checkpoint["global_step"] * skip, "minutes": checkpoint["wall_time"] / 60, "games": n,
               "train_score": episodes["episode_return"][last].mean() if n else float("nan"),
               "points_won": 100 * episodes["points_won"][last].sum() / max(1, points[last].sum())}
        paths = sorted((run_dir / "checkpoints").glob("step_*.pt")) if args.snapshots else []
        if paths:
            started = time.perf_counter()
            results = evaluate_many(paths, args.games, not args.sampled, args.jobs)
            print(f"\nsnapshots, {args.games} {'sampled' if args.sampled else 'greedy'} evaluation games each "
                  f"(seeds 10000, ...), {time.perf_counter() - started:.0f} s:\n")
            print("| agent steps | wall time (min) | mean score ± sd (games) |")
            print("|---|---|---|")
            for path, scores in zip(paths, results):
                snapshot = load_checkpoint(path)
                print(f"| {snapshot['global_step']:,} | {snapshot['wall_time'] / 60:.0f} | {describe(scores)} |")
        if args.games:
            for greedy in (True, False) if args.both else (not args.sampled,):
                started = time.perf_counter()
                scores = evaluate_many([run_dir / "checkpoints" / "last.pt"], args.games, greedy, 1)[0]
                kind = "greedy" if greedy else "sampled"
                row[kind] = describe(scores)
                print(f"\nlast checkpoint, {args.games} evaluation games ({kind} actions): mean score "
                      f"{describe(scores)}, {time.perf_counter() - started:.0f} s")
        summary.append(row)
    print("\n| run | algorithm | agent steps | Atari frames | training wall time (min) | games | last 100 games: mean "
          "score | points won | last.pt greedy | last.pt sampled |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in summary:
        print(f"| {r['run']} | {r['algo']} | {r['steps']:,} | {r['frames']:,} | {r['minutes']:.0f} | {r['games']} | "
              f"{r['train_score']:.1f} | {r['points_won']:.0f}% | {r.get('greedy', '-')} | {r.get('sampled', '-')} |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("cartpole")
    p.add_argument("--reinforce_episodes", type=int, nargs="+", default=[500, 1500],
                   help="REINFORCE training lengths to run (the lab: 500; the config: 1500)")
    p.add_argument("--eval_episodes", type=int, default=100)
    p.add_argument("--algos", nargs="+", default=["reinforce", "ppo"], choices=["reinforce", "ppo"])
    p = sub.add_parser("pong-throughput")
    p.add_argument("--seconds", type=float, default=20)
    p.add_argument("--train_updates", type=int, default=3, help="PPO updates of 1024 steps to time")
    p = sub.add_parser("pong-report")
    p.add_argument("--run_dir", nargs="+", default=["runs/rl/ppo_pong"], help="one or more Pong run folders")
    p.add_argument("--games", type=int, default=10, help="evaluation games per checkpoint (0: none)")
    p.add_argument("--sampled", action="store_true", help="sample actions instead of the greedy (argmax) action")
    p.add_argument("--both", action="store_true", help="evaluate last.pt with greedy and with sampled actions")
    p.add_argument("--snapshots", action="store_true", help="also evaluate every checkpoints/step_*.pt")
    p.add_argument("--jobs", type=int, default=2, help="evaluation processes (one per core)")
    p.add_argument("--rows", type=int, default=8)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    started = time.perf_counter()
    {"cartpole": cartpole, "pong-throughput": pong_throughput, "pong-report": pong_report}[args.what](args)
    print(f"\n(command: python benchmarks/rl.py {' '.join(sys.argv[1:])}; wall time "
          f"{time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
