"""The Lightning-free core every lab stands on: run folders (lock, results.json, `i2dl runs`), atomic files, the
one learning-rate schedule, CPU-aware defaults, packaged configs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import REPO, run_cli, run_main

from i2dl import configs, files
from i2dl.errors import I2DLError
from i2dl.hardware import CPUInfo, parse_cpuinfo, resolve_channels_last, resolve_precision
from i2dl.runs import RESULT_KEYS, Run, RunLock, is_locked, list_runs, read_results
from i2dl.schedules import WarmupCosine, onecycle

AVX512_BF16 = CPUInfo(
    "Intel Xeon (Sapphire Rapids)", frozenset({"avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16"}), 2
)
AVX2_ONLY = CPUInfo("AMD EPYC 7B12", frozenset({"avx2", "fma"}), 2)


# --- CPU-aware defaults ----------------------------------------------------------------------------------------------
def test_auto_precision_follows_the_cpu_both_ways():
    assert resolve_precision("auto", cpu=AVX512_BF16, gpu=None) == "bf16-mixed"
    assert resolve_precision("auto", cpu=AVX2_ONLY, gpu=None) == "32-true"  # bf16 was 5-8x slower there
    assert resolve_precision("auto", cpu=AVX2_ONLY, gpu=True) == "bf16-mixed"  # a GPU with bf16
    assert resolve_precision("auto", cpu=AVX2_ONLY, gpu=False) == "32-true"
    assert resolve_precision("bf16-mixed", cpu=AVX2_ONLY, gpu=None) == "bf16-mixed"  # an explicit choice stands
    assert resolve_channels_last("auto", "bf16-mixed", cpu=AVX512_BF16) is True
    assert resolve_channels_last("auto", "bf16-mixed", cpu=AVX2_ONLY) is False  # 18.5 s vs 12.6 s a step
    assert resolve_channels_last("auto", "32-true", cpu=AVX2_ONLY) is True  # 2.06 s vs 2.22 s a step
    assert resolve_channels_last(False, "32-true", cpu=AVX512_BF16) is False


def test_cpuinfo_is_parsed_from_proc_cpuinfo_text():
    text = "processor\t: 0\nmodel name\t: AMD EPYC 7B12\nflags\t\t: fpu sse2 avx avx2 fma\n\nprocessor\t: 1\n"
    info = parse_cpuinfo(text, cores=2)
    assert info.model == "AMD EPYC 7B12" and info.cores == 2 and not info.native_bf16 and not info.avx512
    assert "avx2" in info.describe() and "2 cores" in info.describe()


def test_default_configs_ask_for_auto_precision():
    for path in sorted((REPO / "configs").glob("*/*.yaml")):
        text = path.read_text()
        assert "bf16-mixed" not in text.split("#")[0] or "precision: auto" in text, path
        if "precision:" in text:
            assert "precision: auto" in text, path


# --- the one schedule -------------------------------------------------------------------------------------------------
def _lrs(scheduler, optimizer, steps: int) -> list[float]:
    out = []
    for _ in range(steps):
        out.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return out


def test_onecycle_shape_is_torchs_onecycle_exactly():
    params = [torch.nn.Parameter(torch.zeros(1))]
    a, b = torch.optim.Adam(params, lr=1e-3), torch.optim.Adam(params, lr=1e-3)
    theirs = torch.optim.lr_scheduler.OneCycleLR(a, max_lr=1e-3, total_steps=100, pct_start=0.2)
    ours = onecycle(b, 100, 0.2)
    for _ in range(100):
        assert b.param_groups[0]["lr"] == pytest.approx(a.param_groups[0]["lr"], rel=1e-12)
        assert b.param_groups[0]["betas"][0] == pytest.approx(a.param_groups[0]["betas"][0], rel=1e-12)
        a.step(), theirs.step(), b.step(), ours.step()


@pytest.mark.parametrize("shape", ["linear", "cos"])
def test_resumed_with_more_steps_follows_the_longer_runs_schedule(shape):
    """A run planned for 60 steps, saved at 40 and resumed with a total of 100 (optimiser, then schedule restored,
    as Lightning does), takes its remaining steps at exactly the learning rates of an uninterrupted 100-step run."""

    def make(total):
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1, momentum=0.9)
        return optimizer, WarmupCosine(
            optimizer,
            total,
            warmup=0.1,
            start_factor=0.04,
            end_factor=1e-3,
            warmup_shape=shape,
            cycle_momentum=shape == "cos",
        )

    straight_opt, straight = make(100)
    reference = _lrs(straight, straight_opt, 100)
    first_opt, first = make(60)
    before = _lrs(first, first_opt, 40)
    state = first.state_dict()
    assert "total_steps" not in state  # the length is configuration, given again at every start
    resumed_opt, resumed = make(100)
    resumed_opt.load_state_dict(first_opt.state_dict())
    resumed.load_state_dict(state)
    assert _lrs(resumed, resumed_opt, 60) == pytest.approx(reference[40:], rel=1e-12)
    assert before != pytest.approx(reference[:40])  # the first 40 steps followed the 60-step plan

    same_opt, same = make(60)  # killed and resumed with the same length: the same schedule throughout
    same_opt.load_state_dict(first_opt.state_dict())
    same.load_state_dict(state)
    plain_opt, plain = make(60)
    assert before + _lrs(same, same_opt, 20) == pytest.approx(_lrs(plain, plain_opt, 60), rel=1e-12)


def test_schedule_past_its_end_stays_at_the_floor():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = WarmupCosine(optimizer, 10, warmup=0.2, start_factor=0.1, end_factor=0.01)
    lrs = _lrs(scheduler, optimizer, 15)
    assert lrs[0] == pytest.approx(0.1) and max(lrs) == pytest.approx(1.0) and lrs[-1] == pytest.approx(0.01)


# --- atomic files ---------------------------------------------------------------------------------------------------
def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "results.json"
    files.write_json(target, {"a": 1, "nan": float("nan")})
    assert json.loads(target.read_text()) == {"a": 1, "nan": None}

    def broken(tmp: Path) -> None:
        tmp.write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        files.write_with(target, broken)
    assert json.loads(target.read_text()) == {"a": 1, "nan": None}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]


# --- run folders -----------------------------------------------------------------------------------------------------
LOCK_HOLDER = """
import sys, time
from i2dl.runs import Run
run = Run(sys.argv[1], sys.argv[2], sys.argv[3], "test/acc").lock()
run.start()
print("locked", flush=True)
time.sleep(60)
"""


def _hold_lock(run_dir: Path, lab: str = "digits", config: str = "cnn") -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", LOCK_HOLDER, str(run_dir), lab, config], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_second_process_on_a_locked_run_folder_stops_with_one_line(tmp_path):
    run_dir = tmp_path / "runs" / "digits" / "cnn"
    holder = _hold_lock(run_dir)
    try:
        assert is_locked(run_dir)
        with pytest.raises(I2DLError, match="in use by another i2dl process"):
            RunLock(run_dir).acquire(wait=0.2)
        proc = run_cli(
            "digits", "fit", "-c", "configs/digits/fc.yaml", "--run_dir", str(run_dir), "--trainer.max_steps", "1"
        )
        assert proc.returncode == 2
        lines = proc.stderr.strip().splitlines()
        assert len(lines) >= 1 and "in use by another i2dl process" in lines[-1] and "Traceback" not in proc.stderr
        assert not (run_dir / "checkpoints").exists()  # nothing was written beside the running process
    finally:
        holder.kill()
        holder.wait()
    assert not is_locked(run_dir)  # the operating system released it with the process
    RunLock(run_dir).acquire().release()


def test_results_json_schema_and_the_runs_listing(tmp_path, capsys):
    root = tmp_path / "runs"
    finished = Run(root / "digits" / "cnn", "digits", "cnn", "test/acc")
    with finished.session():
        time.sleep(0.01)
        finished.finish({"test/acc": torch.tensor(0.99), "test/loss": 0.03}, steps=420, epochs=8)
    results = read_results(finished.run_dir)
    assert set(results) == set(RESULT_KEYS) and results["status"] == "finished"
    assert results["headline"] == {"metric": "test/acc", "value": pytest.approx(0.99), "higher_is_better": True}
    assert results["steps"] == 420 and results["wall_time"] > 0 and results["versions"]["torch"]

    failed = Run(root / "keypoints" / "keypointnet", "keypoints", "keypointnet", "test/rmse_px", False)
    with pytest.raises(ValueError):
        with failed.session():
            raise ValueError("bad value in row 7\nsecond line")
    assert read_results(failed.run_dir)["status"] == "failed"
    assert read_results(failed.run_dir)["error"] == "bad value in row 7"

    stopped = Run(root / "segmentation" / "unet", "segmentation", "unet", "test/miou", True)
    with pytest.raises(KeyboardInterrupt):
        with stopped.session():
            raise KeyboardInterrupt  # Ctrl-C: the user ended it, resumable, not an error in the run
    assert read_results(stopped.run_dir)["status"] == "stopped"
    assert "--ckpt_path last" in read_results(stopped.run_dir)["error"]

    killed = root / "rl" / "ppo_pong"  # a live process holds it; then that process dies without finishing
    holder = _hold_lock(killed, "rl", "ppo_pong")
    statuses = {str(r.run_dir.relative_to(root)): r.status for r in list_runs(root)}
    assert statuses == {
        "digits/cnn": "finished",
        "keypoints/keypointnet": "failed",
        "segmentation/unet": "stopped",
        "rl/ppo_pong": "running",
    }
    holder.kill()
    holder.wait()
    statuses = {str(r.run_dir.relative_to(root)): r.status for r in list_runs(root)}
    assert statuses["rl/ppo_pong"] == "failed"  # results.json says running, but no process holds the lock

    code, out, err = run_main("runs", "--runs", str(root))
    assert code == 0, err
    lines = out.strip().splitlines()
    assert lines[0].split()[:3] == ["status", "lab", "config"] and len(lines) == 5
    assert any("finished" in line and "test/acc 0.99" in line for line in lines)
    code, out, _ = run_main("runs", "--runs", str(root), "--json", "--status", "failed")
    rows = json.loads(out)
    assert {r["lab"] for r in rows} == {"keypoints", "rl"} and all(r["status"] == "failed" for r in rows)
    code, out, _ = run_main("runs", "--runs", str(root), "--json", "--status", "stopped")
    assert [r["lab"] for r in json.loads(out)] == ["segmentation"]
    code, _, err = run_main("runs", "--runs", str(tmp_path / "nowhere"))
    assert code == 2 and "no such folder" in err


# --- packaged configs ------------------------------------------------------------------------------------------------
def test_configs_are_found_through_the_package_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    found = configs.find("digits", "configs/digits/cnn.yaml")
    assert found.is_file() and found.parent.parent.parent.name == "i2dl"
    assert configs.find("digits", "cnn") == found and configs.find("rl", "rl/ppo_cartpole.yaml").is_file()
    assert configs.resolve_config_args("digits", ["fit", "-c", "cnn", "--x", "1"]) == [
        "fit",
        "-c",
        str(found),
        "--x",
        "1",
    ]
    with pytest.raises(FileNotFoundError, match="configs/digits/cnn.yaml"):
        configs.find("digits", "../../etc/passwd")
    assert (REPO / "configs").resolve() == (REPO / "src" / "i2dl" / "configs").resolve()


@pytest.mark.slow
def test_a_non_editable_install_runs_the_autoencoder_story(tmp_path):
    """`pip install .` (not -e) into a folder, then `i2dl autoencoder run --smoke` from an unrelated folder: the
    configs come from the installed package, not from a source checkout."""
    target = tmp_path / "site"
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "--target",
            str(target),
            str(REPO),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stderr[-2000:]
    assert (target / "i2dl" / "configs" / "autoencoder" / "pretrain_conv.yaml").is_file()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(target), "I2DL_RUNS": str(tmp_path / "runs")}
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "import i2dl, sys; print(i2dl.__file__); from i2dl.cli import main; main(sys.argv[1:])",
            "autoencoder",
            "run",
            "--num_labels",
            "10",
            "--smoke",
            "--linear_probe",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=elsewhere,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.splitlines()[0].startswith(str(target))  # the installed copy, not the checkout
    assert "from scratch" in proc.stdout
    assert list((tmp_path / "runs" / "autoencoder").glob("*/results.csv"))
