"""`i2dl rl train|eval|record`: train REINFORCE or PPO from a YAML config with command-line overrides, evaluate a
checkpoint over N seeded episodes, or record the agent playing to a GIF/MP4."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from i2dl.errors import CheckpointError, I2DLError

ALGORITHMS = {"reinforce": ("i2dl.rl.reinforce", "ReinforceConfig"), "ppo": ("i2dl.rl.ppo", "PPOConfig")}

HELP = """usage: i2dl rl {train,eval,record} ...

  train    i2dl rl train -c configs/rl/ppo_cartpole.yaml [--total_steps 50000 --seed 2 ...] [--run_dir DIR] [--resume]
           i2dl rl train --algo reinforce --env_id CartPole-v1 --episodes 300
  eval     i2dl rl eval --ckpt_path runs/rl/ppo_cartpole [--episodes 100] [--sampled]
  record   i2dl rl record --ckpt_path runs/rl/ppo_cartpole --output cartpole.gif

Every field of an algorithm's config (see `i2dl rl train --algo ppo --help`) can be set in the YAML file or
overridden on the command line as --name value.
"""


def algorithm(name: str):
    if name not in ALGORITHMS:
        raise I2DLError(f"unknown algorithm {name!r}; choose from {', '.join(ALGORITHMS)}")
    module_name, config_name = ALGORITHMS[name]
    module = importlib.import_module(module_name)
    return module, getattr(module, config_name)


def _parse_bool(text: str) -> bool:
    if text.lower() in {"true", "1", "yes", "on"}:
        return True
    if text.lower() in {"false", "0", "no", "off"}:
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _parse_dict(text: str) -> dict:
    value = yaml.safe_load(text)
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a mapping like '{{frameskip: 5}}', got {text!r}")
    return value


def _coerce(field: dataclasses.Field, value: Any, source: str) -> Any:
    """A YAML value checked against the field's type (ints may stand for floats, nothing else is converted)."""
    kind = field.type if isinstance(field.type, str) else getattr(field.type, "__name__", str(field.type))
    ok = {"int": isinstance(value, int) and not isinstance(value, bool),
          "float": isinstance(value, (int, float)) and not isinstance(value, bool),
          "bool": isinstance(value, bool), "str": isinstance(value, str), "dict": isinstance(value, dict)}.get(kind, True)
    if not ok:
        raise I2DLError(f"{source}: {field.name} must be a {kind}, got {value!r}")
    return float(value) if kind == "float" else value


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


def build_config(algo_name: str, file_values: dict[str, Any], overrides: list[str], source: str):
    """The algorithm's config dataclass from its defaults, then the YAML file, then command-line overrides."""
    _, config_class = algorithm(algo_name)
    fields = {f.name: f for f in dataclasses.fields(config_class)}
    values = {}
    for key, value in file_values.items():
        if key not in fields:
            raise I2DLError(f"{source}: unknown setting {key!r} for {algo_name}; known: {', '.join(fields)}")
        values[key] = _coerce(fields[key], value, source)
    parser = argparse.ArgumentParser(prog=f"i2dl rl train --algo {algo_name}", argument_default=argparse.SUPPRESS)
    for f in fields.values():
        kind = f.type if isinstance(f.type, str) else f.type.__name__
        convert = {"int": int, "float": float, "bool": _parse_bool, "dict": _parse_dict}.get(kind, str)
        parser.add_argument(f"--{f.name}", type=convert, metavar=kind.upper(),
                            help=_field_doc(config_class, f.name))
    values.update(vars(parser.parse_args(overrides)))
    config = config_class(**values)
    _validate(config, source)
    return config


def _field_doc(config_class, name: str) -> str:
    """The docstring under a dataclass field (CleanRL style), for --help."""
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(config_class))
    body = tree.body[0].body
    for node, nxt in zip(body, body[1:]):
        if isinstance(node, ast.AnnAssign) and getattr(node.target, "id", None) == name and \
                isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant):
            return str(nxt.value.value)
    return ""


def _validate(config, source: str) -> None:
    for name in ("num_envs", "num_steps", "num_minibatches", "update_epochs", "checkpoint_every", "threads", "hidden",
                 "frame_stack"):
        value = getattr(config, name, None)
        if value is not None and value < 1:
            raise I2DLError(f"{source}: {name} must be positive, got {value}")
    for name in ("total_steps", "episodes", "snapshot_every", "time_limit"):  # 0: none / no limit
        value = getattr(config, name, None)
        if value is not None and value < 0:
            raise I2DLError(f"{source}: {name} must not be negative, got {value}")
    for name in ("learning_rate", "gamma"):
        value = getattr(config, name, None)
        if value is not None and not (0 < value <= (1 if name == "gamma" else 10)):
            raise I2DLError(f"{source}: {name} is out of range: {value}")


# --- train ----------------------------------------------------------------------------------------------------------
def train(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="i2dl rl train", add_help=False,
                                     description="Train REINFORCE or PPO; other --name value pairs set config fields.")
    parser.add_argument("-c", "--config", help="YAML file of settings (configs/rl/*.yaml); `algo:` picks the algorithm")
    parser.add_argument("--algo", choices=list(ALGORITHMS), help="reinforce or ppo (overrides the file's algo)")
    parser.add_argument("--run_dir", help="folder of this run (default: runs/rl/<config name>)")
    parser.add_argument("--resume", action="store_true", help="continue the run in run_dir from its last checkpoint")
    parser.add_argument("-h", "--help", action="store_true")
    args, overrides = parser.parse_known_args(argv)
    file_values = load_config_file(args.config) if args.config else {}
    algo_name = args.algo or file_values.pop("algo", None)
    file_values.pop("algo", None)
    if args.help:
        parser.print_help()
        if algo_name:
            print(f"\nsettings of {algo_name}:")
            build_config(algo_name, {}, ["--help"], "--help")
        sys.exit(0)
    if not algo_name:
        raise I2DLError("no algorithm: give --algo reinforce|ppo or a config file with `algo:`")
    source = args.config or "command line"
    config = build_config(algo_name, file_values, overrides, source)
    module, _ = algorithm(algo_name)
    from i2dl.rl.envs import check_env_id

    check_env_id(config.env_id)
    name = Path(args.config).stem if args.config else f"{algo_name}_{config.env_id.replace('/', '_')}"
    from i2dl.rl.runs import runs_root

    run_dir = Path(args.run_dir) if args.run_dir else runs_root() / "rl" / name
    started = time.perf_counter()
    summary = module.train(config, run_dir, resume=args.resume)
    recent = summary["recent_returns"]
    shown = f"{np.mean(recent):.1f} (last {len(recent)} episodes)" if recent else "- (no episode finished)"
    print(f"\ntrain finished: {summary['global_step']} environment steps, mean return {shown}, "
          f"{time.perf_counter() - started:.0f} s this session, {summary['wall_time']:.0f} s in all")
    print(f"run folder: {run_dir}")
    print(f"checkpoint: {run_dir / 'checkpoints' / 'last.pt'}")


# --- eval and record ------------------------------------------------------------------------------------------------
def load_agent(ckpt_path: str, env_id: str | None = None, render_mode: str | None = None, seed: int = 0):
    """(network in eval mode, environment, checkpoint) from a checkpoint file or a run folder."""
    from i2dl.rl.envs import check_env_id, make_env
    from i2dl.rl.runs import check_checkpoint_fits, last_checkpoint, load_checkpoint

    path = Path(ckpt_path)
    if path.is_dir():
        path = last_checkpoint(path)
    checkpoint = load_checkpoint(path)
    if checkpoint.get("algo") not in ALGORITHMS:
        raise CheckpointError(f"{path}: unknown algorithm {checkpoint.get('algo')!r}")
    module, _ = algorithm(checkpoint["algo"])
    config = checkpoint["config"]
    env_id = env_id or config["env_id"]
    check_env_id(env_id)
    env = make_env(env_id, seed, config["preprocessing"], config.get("frame_stack", 4), config["env_kwargs"],
                   render_mode=render_mode)
    if not hasattr(env.action_space, "n"):
        raise CheckpointError(f"{path}: {env_id} has a continuous action space; this agent picks discrete actions")
    try:
        network = module.build_network(config, env.observation_space.shape, int(env.action_space.n))
    except RuntimeError as err:  # a conv net cannot take these observations at all
        raise CheckpointError(f"{path} does not fit {env_id}'s observations {env.observation_space.shape}: "
                              f"{str(err).splitlines()[0]}") from None
    check_checkpoint_fits(checkpoint, str(path), checkpoint["algo"], env_id, network)
    network.load_state_dict(checkpoint["model"])
    return network.eval(), env, checkpoint


def evaluate(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="i2dl rl eval", description="Play N seeded episodes and print the returns.")
    parser.add_argument("--ckpt_path", required=True, help="checkpoint file or run folder")
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--seed", type=int, default=10_000, help="episode k is reset with seed + k")
    parser.add_argument("--sampled", action="store_true", help="sample actions from the policy (default: greedy)")
    parser.add_argument("--env_id", help="evaluate on another environment id (it must fit the network)")
    args = parser.parse_args(argv)
    if args.episodes < 1:
        raise I2DLError(f"--episodes must be positive, got {args.episodes}")
    import torch

    torch.set_num_threads(1)
    network, env, checkpoint = load_agent(args.ckpt_path, args.env_id)
    from i2dl.rl.runs import run_episodes, summarize

    started = time.perf_counter()
    returns = run_episodes(network, env, args.episodes, args.seed, greedy=not args.sampled)
    env.close()
    mode = "sampled" if args.sampled else "greedy"
    print(f"{checkpoint['algo']} on {args.env_id or checkpoint['config']['env_id']} after "
          f"{checkpoint['global_step']} training steps, {mode} actions: return {summarize(returns)}")
    print("returns: " + " ".join(f"{r:.0f}" for r in returns))
    print(f"({time.perf_counter() - started:.1f} s)")


def record(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="i2dl rl record", description="Write a GIF or MP4 of the agent playing.")
    parser.add_argument("--ckpt_path", required=True, help="checkpoint file or run folder")
    parser.add_argument("--output", default="agent.gif", help=".gif (Pillow) or .mp4 (needs the video extra)")
    parser.add_argument("--episodes", type=int, default=1)
    parser.add_argument("--seed", type=int, default=10_000)
    parser.add_argument("--sampled", action="store_true", help="sample actions (default: greedy)")
    parser.add_argument("--max_frames", type=int, default=3000, help="stop recording after this many frames")
    parser.add_argument("--fps", type=int, default=30)
    args = parser.parse_args(argv)
    output = Path(args.output)
    if output.suffix.lower() not in {".gif", ".mp4"}:
        raise I2DLError(f"{output}: choose a .gif or .mp4 file name")
    network, env, checkpoint = load_agent(args.ckpt_path, render_mode="rgb_array")
    frames: list[np.ndarray] = []
    import gymnasium as gym

    from i2dl.rl.runs import run_episodes

    try:
        returns = run_episodes(network, env, args.episodes, args.seed, greedy=not args.sampled, frames=frames,
                               max_frames=args.max_frames)
    except gym.error.DependencyNotInstalled as err:
        raise I2DLError(f"cannot draw {checkpoint['config']['env_id']}: {err} (or pip install 'i2dl[video]')") from None
    env.close()
    write_video(frames, output, args.fps)
    print(f"wrote {output} ({len(frames)} frames, returns {' '.join(f'{r:.0f}' for r in returns)})")


def write_video(frames: list[np.ndarray], output: Path, fps: int) -> None:
    output.parent.mkdir(parents=True, exist_ok=True)
    if output.suffix.lower() == ".gif":
        from PIL import Image

        images = [Image.fromarray(np.asarray(f)) for f in frames]
        images[0].save(output, save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)
        return
    try:
        import imageio.v2 as imageio

        with imageio.get_writer(output, fps=fps) as writer:
            for frame in frames:
                writer.append_data(np.asarray(frame))
    except (ImportError, ValueError, RuntimeError) as err:
        raise I2DLError(f"cannot write {output}: MP4 needs imageio and imageio-ffmpeg "
                        f"(pip install 'i2dl[video]'), or write a .gif ({str(err).splitlines()[0]})") from None


def main(argv: list[str]) -> None:
    if not argv or argv[0] in {"-h", "--help"}:
        print(HELP)
        sys.exit(0 if argv else 2)
    commands = {"train": train, "eval": evaluate, "record": record}
    if argv[0] not in commands:
        raise I2DLError(f"unknown rl command {argv[0]!r}; choose train, eval or record")
    commands[argv[0]](argv[1:])
