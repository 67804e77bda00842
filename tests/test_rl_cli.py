"""RL lab through its CLI: learning, resume after SIGKILL, every config with tiny limits, eval/record, error exits."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import run_cli, run_main

from i2dl.cli import main as i2dl_main
from i2dl.rl.runs import load_checkpoint

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "configs" / "rl").glob("*.yaml"))
# The smallest settings that still run every part of each config (an update, a checkpoint, the figures).
TINY = {
    "ppo": [
        "--total_steps",
        "32",
        "--num_envs",
        "2",
        "--num_steps",
        "8",
        "--update_epochs",
        "1",
        "--num_minibatches",
        "2",
        "--checkpoint_every",
        "1",
    ],
    "reinforce": ["--episodes", "2", "--checkpoint_every", "1"],
}
SHORT_EPISODES = {"max_episode_steps": 60}  # Atari episodes of the smoke runs end after 60 agent steps


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def tiny_args(config: Path) -> list[str]:
    settings = yaml.safe_load(config.read_text())
    args = list(TINY[settings["algo"]])
    if settings["env_id"].startswith("ALE/"):
        args += [
            "--env_kwargs",
            yaml.safe_dump({**settings.get("env_kwargs", {}), **SHORT_EPISODES}, default_flow_style=True).strip(),
        ]
    return args


@pytest.mark.parametrize("config", CONFIGS, ids=[c.stem for c in CONFIGS])
def test_every_config_runs_with_tiny_limits(config, tmp_path):
    run_dir = tmp_path / config.stem
    code, out, err = run_main("rl", "train", "-c", str(config), "--run_dir", str(run_dir), *tiny_args(config))
    assert code == 0, err
    assert "train finished" in out and str(run_dir) in out
    checkpoint = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    settings = yaml.safe_load(config.read_text())
    assert checkpoint["algo"] == settings["algo"] and checkpoint["config"]["env_id"] == settings["env_id"]
    assert set(checkpoint) >= {"model", "optimizer", "global_step", "rng", "wall_time"}
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["algo"] == settings["algo"]
    for key, value in settings.items():  # the file's settings, except the ones the tiny limits override
        if f"--{key}" not in tiny_args(config):
            assert saved[key] == value, key
    assert read_csv(run_dir / "metrics.csv")
    results = json.loads((run_dir / "results.json").read_text())
    assert results["lab"] == "rl" and results["config"] == config.stem and results["status"] == "finished"
    assert (
        results["steps"] == checkpoint["global_step"] and results["headline"]["metric"] == "train/mean_return_last100"
    )
    episodes = read_csv(run_dir / "episodes.csv")
    if settings["algo"] == "reinforce":
        assert len(episodes) == 2
    if episodes:
        assert (run_dir / "figures" / "learning_curve.png").stat().st_size > 5000
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))


def test_ppo_learns_cartpole_seeded(tmp_path):
    """A short seeded PPO run: the policy goes from random play (~20) to long balancing."""
    run_dir = tmp_path / "ppo"
    code, out, err = run_main(
        "rl",
        "train",
        "-c",
        str(REPO / "configs/rl/ppo_cartpole.yaml"),
        "--run_dir",
        str(run_dir),
        "--total_steps",
        "12288",
        "--seed",
        "1",
        "--tensorboard",
        "false",
    )
    assert code == 0, err
    returns = np.array([float(r["episode_return"]) for r in read_csv(run_dir / "episodes.csv")])
    assert returns[:20].mean() < 40  # random play at first
    assert returns[-10:].mean() > 150, returns[-10:]
    code, out, err = run_main("rl", "eval", "--ckpt_path", str(run_dir), "--episodes", "5")
    assert code == 0, err
    mean = float(out.split("return mean ")[1].split()[0])
    assert mean > 150, out


def test_reinforce_resume_continues_exactly(tmp_path):
    """Model, optimiser and random states are restored: 3 + 3 episodes give the very same weights as 6."""
    config = str(REPO / "configs/rl/reinforce_cartpole.yaml")
    common = ["--tensorboard", "false", "--checkpoint_every", "1"]
    assert run_main("rl", "train", "-c", config, "--run_dir", str(tmp_path / "a"), "--episodes", "6", *common)[0] == 0
    assert run_main("rl", "train", "-c", config, "--run_dir", str(tmp_path / "b"), "--episodes", "3", *common)[0] == 0
    code, out, _ = run_main(
        "rl", "train", "-c", config, "--run_dir", str(tmp_path / "b"), "--episodes", "6", "--resume", *common
    )
    assert code == 0 and "resuming" in out
    a = load_checkpoint(tmp_path / "a/checkpoints/last.pt")
    b = load_checkpoint(tmp_path / "b/checkpoints/last.pt")
    assert a["episode"] == b["episode"] == 6 and a["global_step"] == b["global_step"]
    for key, tensor in a["model"].items():
        torch.testing.assert_close(tensor, b["model"][key], rtol=0, atol=0)
    assert [r["episode_return"] for r in read_csv(tmp_path / "a/episodes.csv")] == [
        r["episode_return"] for r in read_csv(tmp_path / "b/episodes.csv")
    ]


def test_snapshots_hold_the_run_at_their_step(tmp_path):
    """snapshot_every keeps checkpoints/step_<step>.pt: the one at episode 4 of a 6-episode run is exactly the last
    checkpoint of a 4-episode run (weights, step, episode)."""
    config = str(REPO / "configs/rl/reinforce_cartpole.yaml")
    common = ["--tensorboard", "false", "--eval_every", "0"]
    assert (
        run_main(
            "rl",
            "train",
            "-c",
            config,
            "--run_dir",
            str(tmp_path / "long"),
            "--episodes",
            "6",
            "--snapshot_every",
            "2",
            *common,
        )[0]
        == 0
    )
    assert (
        run_main("rl", "train", "-c", config, "--run_dir", str(tmp_path / "short"), "--episodes", "4", *common)[0] == 0
    )
    snapshots = sorted((tmp_path / "long/checkpoints").glob("step_*.pt"))
    steps = [load_checkpoint(path)["global_step"] for path in snapshots]
    assert [path.name for path in snapshots] == [f"step_{step:09d}.pt" for step in steps] and len(steps) == 3
    short = load_checkpoint(tmp_path / "short/checkpoints/last.pt")
    kept = load_checkpoint(snapshots[1])
    assert kept["episode"] == short["episode"] == 4 and kept["global_step"] == short["global_step"]
    for key, tensor in short["model"].items():
        torch.testing.assert_close(tensor, kept["model"][key], rtol=0, atol=0)


def test_time_limit_stops_with_a_checkpoint_and_resume_extends_it(tmp_path):
    """time_limit is a budget on the run's own clock: the run stops early with a checkpoint, and a resumed run with a
    larger budget goes on from there (its clock counting the time already spent)."""
    config = str(REPO / "configs/rl/ppo_cartpole.yaml")
    run_dir = tmp_path / "budget"
    common = [
        "--run_dir",
        str(run_dir),
        "--tensorboard",
        "false",
        "--total_steps",
        "10000000",
        "--checkpoint_every",
        "1000",
    ]
    assert run_main("rl", "train", "-c", config, "--time_limit", "1", *common)[0] == 0
    first = load_checkpoint(run_dir / "checkpoints/last.pt")
    assert 0 < first["global_step"] < 10_000_000 and first["wall_time"] >= 1
    assert (
        run_main("rl", "train", "-c", config, "--time_limit", str(first["wall_time"] + 1), "--resume", *common)[0] == 0
    )
    second = load_checkpoint(run_dir / "checkpoints/last.pt")
    assert second["global_step"] > first["global_step"] and second["wall_time"] >= first["wall_time"] + 1
    logged = [int(r["step"]) for r in read_csv(run_dir / "metrics.csv")]
    assert logged == sorted(logged) and max(logged) == second["global_step"]


def test_reinforce_best_checkpoint_by_greedy_evaluation(tmp_path):
    """With eval_every, best.pt is the network at the best greedy evaluation mean, and the evaluations leave the
    training itself untouched (same weights and episodes as a run without them)."""
    config = str(REPO / "configs/rl/reinforce_cartpole.yaml")
    common = ["--tensorboard", "false", "--episodes", "8", "--eval_episodes", "2"]
    assert (
        run_main("rl", "train", "-c", config, "--run_dir", str(tmp_path / "plain"), "--eval_every", "0", *common)[0]
        == 0
    )
    assert (
        run_main("rl", "train", "-c", config, "--run_dir", str(tmp_path / "eval"), "--eval_every", "2", *common)[0] == 0
    )
    plain = load_checkpoint(tmp_path / "plain/checkpoints/last.pt")
    evaluated = load_checkpoint(tmp_path / "eval/checkpoints/last.pt")
    for key, tensor in plain["model"].items():
        torch.testing.assert_close(tensor, evaluated["model"][key], rtol=0, atol=0)
    scores = [
        float(r["eval/greedy_return"]) for r in read_csv(tmp_path / "eval/metrics.csv") if r["eval/greedy_return"]
    ]
    assert len(scores) == 4  # after episodes 2, 4, 6, 8
    best = load_checkpoint(tmp_path / "eval/checkpoints/best.pt")
    assert best["best_mean_return"] == max(scores)
    assert best["episode"] == 2 * (scores.index(max(scores)) + 1)


def test_ppo_resume_after_sigkill_continues_the_curve(tmp_path):
    """SIGKILL a training process after a checkpoint; `--resume` continues from it and the logs go on."""
    run_dir = tmp_path / "killed"
    args = [
        sys.executable,
        "-m",
        "i2dl",
        "rl",
        "train",
        "-c",
        str(REPO / "configs/rl/ppo_cartpole.yaml"),
        "--run_dir",
        str(run_dir),
        "--total_steps",
        "100000",
        "--checkpoint_every",
        "3",
    ]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=REPO)
    checkpoint_path = run_dir / "checkpoints" / "last.pt"
    deadline = time.time() + 600  # generous: shared machines can be slow
    try:
        while time.time() < deadline:
            # kill between checkpoints (every 3 updates): the last update logged is not a checkpointed one
            logged_rows = len(read_csv(run_dir / "metrics.csv")) if checkpoint_path.exists() else 0
            if logged_rows >= 7 and logged_rows % 3:
                break
            assert proc.poll() is None, proc.stderr.read().decode()
            time.sleep(0.2)
        else:
            pytest.fail("no checkpoint within 600 s")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    killed_at = load_checkpoint(checkpoint_path)
    step = killed_at["global_step"]
    assert step % 768 == 0 and step > 0  # written every 3 updates of 256 steps
    logged = [int(r["step"]) for r in read_csv(run_dir / "metrics.csv")]
    assert max(logged) > step  # updates after the last checkpoint were logged before the kill ...
    total = step + 4 * 256
    result = run_cli(
        "rl",
        "train",
        "-c",
        "configs/rl/ppo_cartpole.yaml",
        "--run_dir",
        str(run_dir),
        "--total_steps",
        str(total),
        "--checkpoint_every",
        "3",
        "--resume",
    )
    assert result.returncode == 0, result.stderr
    assert f"resuming {run_dir} from step {step}" in result.stdout
    final = load_checkpoint(checkpoint_path)
    assert final["global_step"] == total // 256 * 256 and final["wall_time"] > killed_at["wall_time"]
    # ... and were dropped on resume: the curve has each update once, in order, with wall time going on
    rows = read_csv(run_dir / "metrics.csv")
    assert [int(r["step"]) for r in rows] == list(range(256, final["global_step"] + 1, 256))
    wall = [float(r["wall_time"]) for r in rows]
    assert wall == sorted(wall)
    episodes = read_csv(run_dir / "episodes.csv")
    assert [int(r["episode"]) for r in episodes] == list(range(1, len(episodes) + 1))
    assert [int(r["step"]) for r in episodes] == sorted(int(r["step"]) for r in episodes)


def test_eval_and_record(tmp_path):
    run_dir = tmp_path / "run"
    assert (
        run_main(
            "rl",
            "train",
            "--algo",
            "reinforce",
            "--env_id",
            "CartPole-v1",
            "--episodes",
            "2",
            "--run_dir",
            str(run_dir),
        )[0]
        == 0
    )
    code, out, err = run_main(
        "rl", "eval", "--ckpt_path", str(run_dir / "checkpoints/last.pt"), "--episodes", "3", "--sampled"
    )
    assert code == 0, err
    assert "sampled actions: return mean" in out and "3 episodes" in out
    assert len(out.split("returns: ")[1].split("\n")[0].split()) == 3
    # sampled games are the same games whatever the process drew before (pong-report with 1 or 2 jobs)
    from i2dl.rl.evaluate import evaluate_agent, load_agent

    agent = load_agent(run_dir / "checkpoints/last.pt")
    first = evaluate_agent(agent, 3, seed=7, greedy=False)
    torch.rand(1000)  # the process's random state moves on ...
    state = torch.random.get_rng_state()
    assert evaluate_agent(agent, 3, seed=7, greedy=False) == first  # ... the games do not
    assert torch.equal(torch.random.get_rng_state(), state)  # and evaluating leaves the caller's state alone
    gif = tmp_path / "agent.gif"
    code, out, err = run_main(
        "rl", "record", "--ckpt_path", str(run_dir), "--output", str(gif), "--episodes", "5", "--max_frames", "20"
    )
    assert code == 0, err
    assert f"wrote {gif} (20 frames" in out
    from PIL import Image

    with Image.open(gif) as image:  # Pillow merges identical consecutive frames, so count at most 20
        assert 2 <= image.n_frames <= 20 and image.size == (600, 400)


def test_train_print_config_and_help():
    """`--print_config` gives the resolved settings (file, then overrides) as YAML that `-c` reads back; `--help`
    lists every setting with its documentation."""
    code, out, err = run_main(
        "rl",
        "train",
        "-c",
        str(REPO / "configs/rl/ppo_cartpole.yaml"),
        "--total_steps",
        "5000",
        "--env_kwargs",
        "{max_episode_steps: 100}",
        "--print_config",
    )
    assert code == 0, err
    printed = yaml.safe_load(out)
    assert printed["algo"] == "ppo" and printed["total_steps"] == 5000 and printed["num_envs"] == 8
    assert printed["env_kwargs"] == {"max_episode_steps": 100} and printed["update_epochs"] == 20
    code, out, err = run_main("rl", "train", "--algo", "reinforce", "--help")
    assert code == 0
    assert "--reset_at_point" in out and "restart the discounted sum at every non-zero reward" in out


# --- error exits: one line, status 2 -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cartpole_run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("rl") / "cartpole"
    i2dl_main(
        [
            "rl",
            "train",
            "--algo",
            "reinforce",
            "--env_id",
            "CartPole-v1",
            "--episodes",
            "1",
            "--run_dir",
            str(run_dir),
            "--tensorboard",
            "false",
        ]
    )
    return run_dir


def bad_yaml(tmp_path: Path, text: str) -> str:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize(
    "case, message",
    [
        (
            lambda d, t: ["train", "--algo", "ppo", "--env_id", "NoSuchGame-v9"],
            "unknown environment id 'NoSuchGame-v9'",
        ),
        (lambda d, t: ["train", "--algo", "ppo", "--env_id", "ALE/NoSuchGame-v5"], "unknown environment id"),
        (lambda d, t: ["train", "-c", str(t / "missing.yaml")], "missing.yaml: no such config file"),
        (lambda d, t: ["train", "-c", bad_yaml(t, "algo: ppo\nlr: 0.1\n")], "unknown setting 'lr' for ppo"),
        (lambda d, t: ["train", "-c", bad_yaml(t, "algo: ppo\ngamma: high\n")], "gamma must be a float, got 'high'"),
        (lambda d, t: ["train", "-c", bad_yaml(t, "algo: sarsa\n")], "unknown algorithm 'sarsa'"),
        (lambda d, t: ["train", "-c", bad_yaml(t, "algo: [ppo\n")], "not valid YAML"),
        (lambda d, t: ["train", "--env_id", "CartPole-v1"], "no algorithm"),
        (lambda d, t: ["train", "--algo", "ppo", "--num_envs", "0"], "num_envs must be positive"),
        (lambda d, t: ["train", "--algo", "ppo", "--time_limit", "-5"], "time_limit must not be negative, got -5.0"),
        (lambda d, t: ["train", "--algo", "ppo", "--preprocessing", "atari"], "is for Atari frames"),
        (lambda d, t: ["train", "--algo", "reinforce", "--run_dir", str(d), "--episodes", "1"], "already holds a run"),
        (
            lambda d, t: ["train", "--algo", "reinforce", "--env_id", "Acrobot-v1", "--run_dir", str(d), "--resume"],
            "was trained on CartPole-v1, not Acrobot-v1",
        ),
        (
            lambda d, t: ["train", "--algo", "reinforce", "--hidden", "16", "--run_dir", str(d), "--resume"],
            "net.0.weight has shape (32, 4), the network expects (16, 4)",
        ),
        (
            lambda d, t: ["train", "--algo", "reinforce", "--gamma", "0.5", "--run_dir", str(d), "--resume"],
            "was trained with gamma=0.95, not 0.5",
        ),
        (lambda d, t: ["train", "--algo", "ppo", "--run_dir", str(d), "--resume"], "was written by reinforce, not ppo"),
        (
            lambda d, t: ["eval", "--ckpt_path", str(d), "--env_id", "Acrobot-v1"],
            "was trained on CartPole-v1, not Acrobot",
        ),
        (lambda d, t: ["eval", "--ckpt_path", str(d), "--env_id", "Nope-v1"], "unknown environment id 'Nope-v1'"),
        (lambda d, t: ["eval", "--ckpt_path", str(t / "none.pt")], "none.pt: no such checkpoint"),
        (lambda d, t: ["eval", "--ckpt_path", bad_yaml(t, "not a checkpoint")], "not a readable checkpoint"),
        (lambda d, t: ["record", "--ckpt_path", str(d), "--output", str(t / "a.avi")], "choose a .gif or .mp4"),
        (lambda d, t: ["fly"], "unknown rl command 'fly'"),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_user_errors_exit_2_with_one_line(case, message, cartpole_run, tmp_path):
    code, _, err = run_main("rl", *case(cartpole_run, tmp_path))
    assert code == 2
    lines = [line for line in err.splitlines() if line.startswith("i2dl: error")]
    assert len(lines) == 1 and message in lines[0], err


def test_checkpoint_of_another_network_shape_fails_in_a_subprocess(tmp_path, cartpole_run):
    """The real command line: a checkpoint whose weights do not fit is one line on stderr and exit status 2."""
    checkpoint = load_checkpoint(cartpole_run / "checkpoints/last.pt")
    checkpoint["model"]["net.2.weight"] = torch.zeros(3, 32)
    broken = tmp_path / "broken.pt"
    torch.save(checkpoint, broken)
    result = run_cli("rl", "eval", "--ckpt_path", str(broken))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        (
            f"i2dl: error: {broken} does not fit this network: net.2.weight has shape (3, 32), "
            f"the network expects (2, 32)"
        )
    ], result.stderr
