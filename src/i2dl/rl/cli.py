"""`i2dl rl train|eval|record`: train REINFORCE or PPO from a YAML config with command-line overrides, evaluate a
checkpoint over N seeded episodes, or record the agent playing to a GIF/MP4."""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
import yaml

from i2dl.errors import I2DLError
from i2dl.rl.evaluate import ALGORITHMS, PROTOCOLS, algorithm

HELP = """usage: i2dl rl {train,eval,record} ...

  train    i2dl rl train -c configs/rl/ppo_cartpole.yaml [--total_steps 50000 --seed 2 ...] [--run_dir DIR] [--resume]
           i2dl rl train --algo reinforce --env_id CartPole-v1 --episodes 300
  eval     i2dl rl eval --ckpt_path runs/rl/ppo_cartpole [--episodes 100] [--sampled] [--sticky 0.25] [--protocols]
  record   i2dl rl record --ckpt_path runs/rl/ppo_cartpole --output cartpole.gif

Every field of an algorithm's config (see `i2dl rl train --algo ppo --help`) can be set in the YAML file or
overridden on the command line as --name value; `--print_config` shows the resolved settings.
"""

_TYPE_ERROR = re.compile(r'Parser key "(\w+)":\s*Expected a <class \'(\w+)\'>\. Got value: (.*)')
_UNKNOWN = re.compile(r"(?:Option|Key) '([\w.]+)' is not (?:accepted|expected)|unrecognized arguments: --([\w.]+)")


def load_config_file(path: str) -> dict[str, Any]:
    file = Path(path)
    if not file.is_file():
        raise I2DLError(f"{file}: no such config file")
    try:
        values = yaml.safe_load(file.read_text()) or {}
    except yaml.YAMLError as err:
        raise I2DLError(f"{file}: not valid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(values, dict):
        raise I2DLError(f"{file}: expected a mapping of settings, got {type(values).__name__}")
    return values


def train_parser(algo_name: str):
    """jsonargparse parser of `i2dl rl train` for one algorithm: `-c/--config` YAML, `--print_config`, `--algo`,
    `--run_dir`, `--resume` and one option per field of the algorithm's config dataclass, whose help is the
    field's docstring."""
    from jsonargparse import ActionConfigFile, ArgumentParser, set_parsing_settings

    set_parsing_settings(docstring_parse_attribute_docstrings=True)
    _, config_class = algorithm(algo_name)
    parser = ArgumentParser(
        prog="i2dl rl train",
        exit_on_error=False,
        default_env=False,
        description=f"Train {algo_name} (settings below; a YAML file's `algo:` picks the algorithm).",
    )
    parser.add_argument("-c", "--config", action=ActionConfigFile, help="YAML file of settings (configs/rl/*.yaml)")
    parser.add_argument(
        "--algo",
        type=str,
        default=algo_name,
        choices=list(ALGORITHMS),
        help="reinforce or ppo (overrides the file's algo)",
    )
    parser.add_argument(
        "--run_dir",
        type=Optional[str],
        default=None,  # noqa: UP045 (jsonargparse reads it)
        help="folder of this run (default: runs/rl/<config name>)",
    )
    parser.add_argument("--resume", action="store_true", help="continue the run in run_dir from its last checkpoint")
    parser.add_class_arguments(config_class, as_group=True)
    return parser, config_class


def build_config(algo_name: str, argv: list[str], source: str):
    """The algorithm's config dataclass from its defaults, then the YAML file(s) in `argv`, then the overrides
    after them; plus the namespace of the other options (run_dir, resume). Mistakes are one-line I2DLErrors."""
    from jsonargparse import ArgumentError

    parser, config_class = train_parser(algo_name)
    try:
        namespace = parser.parse_args(argv)
    except ArgumentError as err:
        raise I2DLError(_parse_error(str(err), algo_name, config_class, source)) from None
    values = {f.name: namespace[f.name] for f in dataclasses.fields(config_class)}
    for f in dataclasses.fields(config_class):  # ints may stand for floats (YAML `learning_rate: 1`)
        if f.type in ("float", float) and isinstance(values[f.name], int):
            values[f.name] = float(values[f.name])
    config = config_class(**values)
    _validate(config, source)
    return config, namespace


def _parse_error(message: str, algo_name: str, config_class, source: str) -> str:
    text = " ".join(message.split())
    typed = _TYPE_ERROR.search(text)
    if typed:
        name, kind, value = typed.groups()
        return f"{source}: {name} must be a{'n' if kind[0] in 'aeiou' else ''} {kind}, got {value.strip()!r}"
    unknown = _UNKNOWN.search(text)
    if unknown:
        name = unknown.group(1) or unknown.group(2)
        known = ", ".join(f.name for f in dataclasses.fields(config_class))
        return f"{source}: unknown setting {name!r} for {algo_name}; known: {known}"
    return f"{source}: {text}"


def _validate(config, source: str) -> None:
    for name in (
        "num_envs",
        "num_steps",
        "num_minibatches",
        "update_epochs",
        "checkpoint_every",
        "threads",
        "hidden",
        "frame_stack",
        "workers",
        "env_groups",
    ):
        value = getattr(config, name, None)
        if value is not None and value < 1:
            raise I2DLError(f"{source}: {name} must be positive, got {value}")
    for name in ("total_steps", "episodes", "snapshot_every", "time_limit", "env_threads"):  # 0: none / no limit
        value = getattr(config, name, None)
        if value is not None and value < 0:
            raise I2DLError(f"{source}: {name} must not be negative, got {value}")
    for name in ("learning_rate", "gamma"):
        value = getattr(config, name, None)
        if value is not None and not (0 < value <= (1 if name == "gamma" else 10)):
            raise I2DLError(f"{source}: {name} is out of range: {value}")


# --- train ----------------------------------------------------------------------------------------------------------
def _find_algo(argv: list[str]) -> tuple[str | None, str | None]:
    """(algorithm, config file) from `--algo` and the `algo:` of the last `-c` file, without parsing the rest."""
    algo_name, config_path = None, None
    for k, arg in enumerate(argv):
        value = argv[k + 1] if k + 1 < len(argv) else None
        if arg.startswith(("--config=", "--algo=")):
            arg, value = arg.split("=", 1)
        if arg in ("-c", "--config") and value is not None:
            config_path = value
            file_algo = load_config_file(value).get("algo")
            if file_algo is not None:
                algo_name = file_algo
        elif arg == "--algo" and value is not None:
            algo_name = value
    return algo_name, config_path


def train(argv: list[str]) -> None:
    algo_name, config_path = _find_algo(argv)
    if algo_name is not None and not isinstance(algo_name, str):
        raise I2DLError(f"{config_path}: algo must be reinforce or ppo, got {algo_name!r}")
    if algo_name is None:
        if any(arg in ("-h", "--help") for arg in argv):
            print(
                "usage: i2dl rl train [-c CONFIG.yaml] [--algo {reinforce,ppo}] [--run_dir DIR] [--resume] "
                "[--name value ...]\n\nThe settings depend on the algorithm: i2dl rl train --algo ppo --help"
            )
            sys.exit(0)
        raise I2DLError("no algorithm: give --algo reinforce|ppo or a config file with `algo:`")
    algorithm(algo_name)  # a one-line error for an unknown name
    source = config_path or "command line"
    config, options = build_config(algo_name, argv, source)
    module, _ = algorithm(algo_name)
    from i2dl.rl.envs import check_env_id

    check_env_id(config.env_id)
    name = Path(config_path).stem if config_path else f"{algo_name}_{config.env_id.replace('/', '_')}"
    from i2dl.rl.runs import rl_runs_root

    run_dir = Path(options.run_dir) if options.run_dir else rl_runs_root() / name
    started = time.perf_counter()
    summary = module.train(config, run_dir, resume=options.resume, config_name=name)
    recent = summary["recent_returns"]
    shown = f"{np.mean(recent):.1f} (last {len(recent)} episodes)" if recent else "- (no episode finished)"
    print(
        f"\ntrain finished: {summary['global_step']} environment steps, mean return {shown}, "
        f"{time.perf_counter() - started:.0f} s this session, {summary['wall_time']:.0f} s in all"
    )
    print(f"run folder: {run_dir}")
    print(f"checkpoint: {run_dir / 'checkpoints' / 'last.pt'}")


# --- eval and record ------------------------------------------------------------------------------------------------
def evaluate(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="i2dl rl eval", description="Play N seeded games and print the scores.")
    parser.add_argument("--ckpt_path", required=True, help="checkpoint file or run folder")
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--seed", type=int, default=10_000, help="game k is reset with seed + k")
    parser.add_argument("--sampled", action="store_true", help="sample actions from the policy (default: greedy)")
    parser.add_argument(
        "--sticky",
        type=float,
        default=0.0,
        help="sticky-action probability (Atari; 0.25 is the protocol of Machado et al. 2018)",
    )
    parser.add_argument(
        "--protocols", action="store_true", help="all four: no sticky actions and sticky 0.25, each greedy and sampled"
    )
    parser.add_argument("--env_id", help="evaluate on another environment id (it must fit the network)")
    args = parser.parse_args(argv)
    if args.episodes < 1:
        raise I2DLError(f"--episodes must be positive, got {args.episodes}")
    if not 0 <= args.sticky < 1:
        raise I2DLError(f"--sticky must be a probability in [0, 1), got {args.sticky}")
    import torch

    from i2dl.rl.evaluate import evaluate_agent, load_agent, summarize

    torch.set_num_threads(1)
    agent = load_agent(args.ckpt_path, args.env_id)
    runs = (
        [(name, p, greedy) for name, p in PROTOCOLS.items() for greedy in (True, False)]
        if args.protocols
        else [
            (f"sticky actions {args.sticky:g}" if args.sticky else "no sticky actions", args.sticky, not args.sampled)
        ]
    )
    print(
        f"{agent.checkpoint['algo']} on {agent.env_id} after {agent.checkpoint['global_step']} training steps "
        f"({agent.path}), {args.episodes} games with seeds {args.seed}, {args.seed + 1}, ..."
    )
    for protocol, sticky, greedy in runs:
        started = time.perf_counter()
        returns = evaluate_agent(agent, args.episodes, args.seed, greedy, sticky)
        mode = "greedy" if greedy else "sampled"
        print(f"{protocol}, {mode} actions: return {summarize(returns)}  ({time.perf_counter() - started:.1f} s)")
        print("returns: " + " ".join(f"{r:.0f}" for r in returns))


def record(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="i2dl rl record", description="Write a GIF or MP4 of the agent playing.")
    parser.add_argument("--ckpt_path", required=True, help="checkpoint file or run folder")
    parser.add_argument("--output", default="agent.gif", help=".gif (Pillow) or .mp4 (needs the video extra)")
    parser.add_argument("--episodes", type=int, default=1)
    parser.add_argument("--seed", type=int, default=10_000)
    parser.add_argument("--sampled", action="store_true", help="sample actions (default: greedy)")
    parser.add_argument("--sticky", type=float, default=0.0, help="sticky-action probability (Atari)")
    parser.add_argument("--max_frames", type=int, default=3000, help="stop recording after this many frames")
    parser.add_argument("--fps", type=int, default=30)
    args = parser.parse_args(argv)
    output = Path(args.output)
    if output.suffix.lower() not in {".gif", ".mp4"}:
        raise I2DLError(f"{output}: choose a .gif or .mp4 file name")
    import gymnasium as gym

    from i2dl.rl.evaluate import load_agent, run_episodes

    agent = load_agent(args.ckpt_path)
    env = agent.make_env(args.seed, args.sticky, render_mode="rgb_array")
    frames: list[np.ndarray] = []
    try:
        returns = run_episodes(
            agent.network,
            env,
            args.episodes,
            args.seed,
            greedy=not args.sampled,
            frames=frames,
            max_frames=args.max_frames,
        )
    except gym.error.DependencyNotInstalled as err:
        raise I2DLError(f"cannot draw {agent.env_id}: {err} (or pip install 'i2dl[video]')") from None
    finally:
        env.close()
    write_video(frames, output, args.fps)
    print(f"wrote {output} ({len(frames)} frames, returns {' '.join(f'{r:.0f}' for r in returns)})")


def write_video(frames: list[np.ndarray], output: Path, fps: int) -> None:
    """A GIF (Pillow) or MP4 (imageio-ffmpeg) of the frames, written whole or not at all."""
    from i2dl.files import atomic_path

    with atomic_path(output) as tmp:
        if output.suffix.lower() == ".gif":
            from PIL import Image

            images = [Image.fromarray(np.asarray(f)) for f in frames]
            images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)
            return
        try:
            import imageio.v2 as imageio

            with imageio.get_writer(tmp, format="FFMPEG", fps=fps) as writer:
                for frame in frames:
                    writer.append_data(np.asarray(frame))
        except (ImportError, ValueError, RuntimeError) as err:
            raise I2DLError(
                f"cannot write {output}: MP4 needs imageio and imageio-ffmpeg "
                f"(pip install 'i2dl[video]'), or write a .gif ({str(err).splitlines()[0]})"
            ) from None


def main(argv: list[str]) -> None:
    if not argv or argv[0] in {"-h", "--help"}:
        print(HELP)
        sys.exit(0 if argv else 2)
    commands = {"train": train, "eval": evaluate, "record": record}
    if argv[0] not in commands:
        raise I2DLError(f"unknown rl command {argv[0]!r}; choose train, eval or record")
    commands[argv[0]](argv[1:])
