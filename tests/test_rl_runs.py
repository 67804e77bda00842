"""The RL run folder on the shared core: checkpoints are data (a payload never runs), old checkpoints keep loading,
results.json in the one schema, the run-folder lock, a failed run marked failed."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_cli, run_main

from i2dl.rl.runs import load_checkpoint
from i2dl.runs import RESULT_KEYS, RunLock

TINY_PPO = [
    "--algo",
    "ppo",
    "--env_id",
    "CartPole-v1",
    "--total_steps",
    "256",
    "--num_envs",
    "2",
    "--num_steps",
    "64",
    "--update_epochs",
    "1",
    "--checkpoint_every",
    "1",
    "--tensorboard",
    "false",
]


class Payload:
    """Unpickling this runs `touch marker`: what a crafted checkpoint could do with torch's unsafe loader."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture(scope="module")
def payload_checkpoint(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("payload")
    marker = folder / "marker"
    path = folder / "run" / "checkpoints" / "last.pt"
    path.parent.mkdir(parents=True)
    torch.save(
        {"format": "i2dl-rl-1", "algo": "reinforce", "config": {"env_id": "CartPole-v1"}, "model": Payload(marker)},
        path,
    )
    return path, marker


@pytest.mark.parametrize(
    "command",
    [
        lambda ckpt, tmp: ["eval", "--ckpt_path", str(ckpt)],
        lambda ckpt, tmp: ["record", "--ckpt_path", str(ckpt), "--output", str(tmp / "agent.gif")],
        lambda ckpt, tmp: [
            "train",
            "--algo",
            "reinforce",
            "--env_id",
            "CartPole-v1",
            "--episodes",
            "1",
            "--run_dir",
            str(ckpt.parents[1]),
            "--resume",
        ],
    ],
    ids=["eval", "record", "train --resume"],
)
def test_payload_checkpoint_never_runs(command, payload_checkpoint, tmp_path):
    path, marker = payload_checkpoint
    result = run_cli("rl", *command(path, tmp_path))
    assert not marker.exists(), "the checkpoint's payload ran"
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith(f"i2dl: error: {path}: holds objects the safe loader does not allow"), lines[0]


def test_old_format_checkpoint_loads_resumes_and_evaluates(tmp_path):
    """A checkpoint as `i2dl rl train` wrote it before the shared core (format i2dl-rl-1, NumPy's random state as an
    array, settings added since missing) still evaluates and resumes."""
    run_dir = tmp_path / "old"
    assert run_main("rl", "train", *TINY_PPO, "--run_dir", str(run_dir))[0] == 0
    path = run_dir / "checkpoints" / "last.pt"
    current = load_checkpoint(path)
    random.seed(3)
    np.random.seed(3)
    old = {
        **current,
        "format": "i2dl-rl-1",
        "rng": {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()},
        "config": {
            k: v
            for k, v in current["config"].items()
            if k not in ("workers", "env_threads", "precision", "channels_last")
        },
    }
    torch.save(old, path)
    assert isinstance(load_checkpoint(path)["rng"]["numpy"][1], np.ndarray)

    code, out, err = run_main("rl", "eval", "--ckpt_path", str(path), "--episodes", "2")
    assert code == 0, err
    assert "no sticky actions, greedy actions: return mean" in out and "2 episodes" in out
    code, out, err = run_main("rl", "train", *TINY_PPO, "--run_dir", str(run_dir), "--total_steps", "512", "--resume")
    assert code == 0, err
    assert f"resuming {run_dir} from step 256" in out
    resumed = load_checkpoint(path)
    assert resumed["format"] == "i2dl-rl-2" and resumed["global_step"] == 512
    assert isinstance(resumed["rng"]["numpy"][1], torch.Tensor)  # written back as plain data
    assert np.random.get_state()[1].dtype == np.uint32


def test_results_json_lock_and_failed_run(tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    code, _, err = run_main("rl", "train", *TINY_PPO, "--run_dir", str(run_dir))
    assert code == 0, err
    results = json.loads((run_dir / "results.json").read_text())
    assert tuple(sorted(results)) == tuple(sorted(RESULT_KEYS))
    assert results["lab"] == "rl" and results["status"] == "finished" and results["steps"] == 256
    assert results["config"] == "ppo_CartPole-v1" and results["error"] is None
    assert results["headline"]["metric"] == "train/mean_return_last100"
    assert results["headline"]["value"] == pytest.approx(results["metrics"]["train/mean_return_last100"])
    assert results["wall_time"] == pytest.approx(
        load_checkpoint(run_dir / "checkpoints/last.pt")["wall_time"], abs=0.05
    )

    with RunLock(run_dir):  # another process is writing this run
        code, _, err = run_main("rl", "train", *TINY_PPO, "--run_dir", str(run_dir), "--resume", "--total_steps", "512")
    assert code == 2
    assert err.strip().splitlines() == [
        (
            f"i2dl: error: {run_dir} is in use by another i2dl process "
            f"(pid {os.getpid()}); wait for it to finish or give another --run_dir"
        )
    ]
    assert load_checkpoint(run_dir / "checkpoints/last.pt")["global_step"] == 256  # untouched

    def broken_update(*args, **kwargs):
        raise RuntimeError("update exploded")

    monkeypatch.setattr("i2dl.rl.ppo.ppo_update", broken_update)
    with pytest.raises(RuntimeError, match="update exploded"):  # a bug keeps its traceback ...
        run_main("rl", "train", *TINY_PPO, "--run_dir", str(run_dir), "--resume", "--total_steps", "512")
    results = json.loads((run_dir / "results.json").read_text())  # ... and the run says it failed
    assert results["status"] == "failed" and results["error"] == "update exploded"
    assert results["steps"] == 256


def test_entropy_weight_anneals_with_the_learning_rate_and_resumes_on_the_same_line(tmp_path, monkeypatch):
    """`--ent_coef_final` moves the entropy weight linearly from ent_coef as the learning rate anneals; a run that
    stops after two of its four updates and is resumed logs the same schedule as one run straight through."""
    import pandas as pd

    import i2dl.rl.ppo as ppo

    settings = [*TINY_PPO, "--total_steps", "512", "--learning_rate", "0.001", "--ent_coef", "0.01"]
    annealed = [*settings, "--ent_coef_final", "0.002"]
    whole, halves, constant = tmp_path / "whole", tmp_path / "halves", tmp_path / "constant"
    assert run_main("rl", "train", *annealed, "--run_dir", str(whole))[0] == 0

    update, calls = ppo.ppo_update, []

    def dies_at_the_third_update(*args, **kwargs):
        calls.append(args[5].ent_coef)  # the settings the update gets
        if len(calls) == 3:
            raise KeyboardInterrupt
        return update(*args, **kwargs)

    monkeypatch.setattr(ppo, "ppo_update", dies_at_the_third_update)
    with pytest.raises(KeyboardInterrupt):
        run_main("rl", "train", *annealed, "--run_dir", str(halves))
    monkeypatch.setattr(ppo, "ppo_update", update)
    code, out, err = run_main("rl", "train", *annealed, "--run_dir", str(halves), "--resume")
    assert code == 0, err
    assert f"resuming {halves} from step 256" in out
    assert calls == pytest.approx([0.01, 0.008, 0.006])

    expected_ent = [0.01, 0.008, 0.006, 0.004]  # update i of 4: 0.01 + (0.002 - 0.01) * i / 4
    expected_lr = [0.001, 0.00075, 0.0005, 0.00025]
    for run_dir in (whole, halves):
        metrics = pd.read_csv(run_dir / "metrics.csv")
        assert metrics["charts/ent_coef"].tolist() == pytest.approx(expected_ent), run_dir
        assert metrics["charts/learning_rate"].tolist() == pytest.approx(expected_lr), run_dir
    assert run_main("rl", "train", *settings, "--run_dir", str(constant))[0] == 0
    assert pd.read_csv(constant / "metrics.csv")["charts/ent_coef"].tolist() == pytest.approx([0.01] * 4)


def test_schedule_follows_the_clock_where_the_time_limit_ends_first():
    from i2dl.rl.ppo import PPOConfig, schedule

    cfg = PPOConfig(learning_rate=1e-3, ent_coef=0.01, ent_coef_final=0.0, time_limit=100.0)
    assert schedule(cfg, 10, 100, wall_time=50.0) == pytest.approx((5e-4, 0.005))  # the clock is further along
    assert schedule(cfg, 80, 100, wall_time=50.0) == pytest.approx((2e-4, 0.002))  # the steps are
    assert schedule(cfg, 10, 100, wall_time=150.0) == pytest.approx((0.0, 0.0))  # never past the end
    untimed = PPOConfig(learning_rate=1e-3, ent_coef=0.01, anneal_lr=False)
    assert schedule(untimed, 50, 100, wall_time=1e9) == pytest.approx((1e-3, 0.01))
