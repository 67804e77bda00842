"""The digits lab end to end: models, in-memory batches, CLI runs and their folders, determinism, resume after
SIGKILL, predict on photos, ONNX export, checkpoint mismatch, DDP on two CPU processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, SHARED_DATA, run_main
from PIL import Image

from i2dl.data.idx import FASHION_MNIST, load_split
from i2dl.data.memory import InMemoryBatches
from i2dl.digits.model import build_model
from i2dl.digits.predict import to_mnist_format
from i2dl.export import onnx_max_abs_diff

# jsonargparse reads "1" as 1.0 (= all batches), so one batch of validation (5 x 1000) and test (10 x 1000)
# images is written as a fraction
TINY = [
    "--trainer.enable_progress_bar",
    "false",
    "--trainer.limit_val_batches",
    "0.2",
    "--trainer.limit_test_batches",
    "0.1",
]


def fit(run_dir: Path, *args: str) -> dict:
    code, out, err = run_main("digits", "fit", "--run_dir", str(run_dir), *TINY, *args)
    assert code == 0, err[-3000:]
    return json.loads((run_dir / "results.json").read_text())


@pytest.fixture(scope="module")
def trained_fc(tmp_path_factory) -> Path:
    """A lab FC net trained for one epoch on 10,000 real MNIST images (about 95% accurate)."""
    run_dir = tmp_path_factory.mktemp("fc") / "run"
    code, _, err = run_main(
        "digits",
        "fit",
        "-c",
        "configs/digits/fc.yaml",
        "--run_dir",
        str(run_dir),
        "--trainer.max_epochs",
        "1",
        "--data.train_subset",
        "10000",
        "--trainer.enable_progress_bar",
        "false",
        "--data.data_dir",
        str(SHARED_DATA),
    )
    assert code == 0, err[-3000:]
    return run_dir


def test_models_match_the_lab():
    fc, cnn = build_model("lab_fc"), build_model("lab_cnn")
    assert sum(p.numel() for p in fc.parameters()) == 784 * 128 + 128 + 128 * 10 + 10
    convs = [m for m in cnn.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size) for c in convs] == [(24, (3, 3)), (36, (3, 3))]
    for arch in ("lab_fc", "lab_cnn", "digitnet"):
        assert build_model(arch)(torch.rand(3, 1, 28, 28)).shape == (3, 10)


def test_in_memory_batches_cover_each_image_once_and_shard_for_ddp():
    images = torch.arange(10).view(10, 1, 1).expand(10, 2, 2).to(torch.uint8)
    labels = torch.arange(10)
    loader = InMemoryBatches(images, labels, batch_size=3, shuffle=True, seed=1)
    first = torch.cat([y for _, y in loader])
    second = torch.cat([y for _, y in loader])
    assert sorted(first.tolist()) == list(range(10)) and len(loader) == 4
    assert first.tolist() != second.tolist()  # a new order each epoch
    x, y = next(iter(InMemoryBatches(images, labels, 4)))
    assert x.shape == (4, 1, 2, 2) and x.dtype == torch.float32 and torch.allclose(x[:, 0, 0, 0] * 255, y.float())
    shards = [
        torch.cat([y for _, y in InMemoryBatches(images, labels, 2, True, 1, rank=r, world_size=2)]) for r in (0, 1)
    ]
    assert set(shards[0].tolist()).isdisjoint(shards[1].tolist()) and len(shards[0]) == len(shards[1]) == 5


def test_in_memory_batches_resume_mid_epoch_with_the_same_order():
    images, labels = torch.zeros(20, 2, 2, dtype=torch.uint8), torch.arange(20)
    loader = InMemoryBatches(images, labels, batch_size=4, shuffle=True, seed=3)
    full = [y.tolist() for _, y in loader] + [y.tolist() for _, y in loader]  # epochs 0 and 1
    again = InMemoryBatches(images, labels, batch_size=4, shuffle=True, seed=3)
    it = iter(again)
    for _ in range(2):  # two batches trained on, then a checkpoint
        next(it)
    resumed = InMemoryBatches(images, labels, batch_size=4, shuffle=True, seed=3)
    resumed.load_state_dict(again.state_dict())
    assert [y.tolist() for _, y in resumed] == full[2:5]
    assert [y.tolist() for _, y in resumed] == full[5:]


@pytest.mark.parametrize("config", sorted(p.stem for p in (REPO / "configs" / "digits").glob("*.yaml")))
def test_every_config_trains_and_fills_its_run_folder(config, tmp_path, shared_data):
    if "fashion" in config and not Path(FASHION_MNIST.system_dirs[0]).is_dir():
        pytest.skip("Fashion-MNIST not installed (apt-get install dataset-fashion-mnist; .ci/run does)")
    run_dir = tmp_path / config
    results = fit(
        run_dir,
        "-c",
        f"configs/digits/{config}.yaml",
        "--trainer.max_epochs",
        "1",
        "--trainer.limit_train_batches",
        "3",
    )
    assert 0.0 <= results["metrics"]["test/acc"] <= 1.0 and results["steps"] == 3
    for name in (
        "checkpoints/best.ckpt",
        "checkpoints/last.ckpt",
        "config.yaml",
        "csv/version_0/metrics.csv",
        "figures/test_predictions.png",
        "figures/confusion_matrix.png",
        "figures/curves.png",
    ):
        assert (run_dir / name).is_file(), name
    assert list((run_dir / "tensorboard").glob("version_0/events.out.tfevents.*"))
    assert "arch:" in (run_dir / "config.yaml").read_text()


def test_learning_happens_and_same_seed_gives_same_metrics(tmp_path, shared_data):
    args = [
        "-c",
        "configs/digits/cnn.yaml",
        "--trainer.max_epochs",
        "1",
        "--data.train_subset",
        "3000",
        "--trainer.limit_val_batches",
        "0.4",
        "--trainer.limit_test_batches",
        "0.2",
    ]
    a = fit(tmp_path / "a", *args)
    b = fit(tmp_path / "b", *args)
    assert a["metrics"]["test/acc"] > 0.8  # 3,000 images, one epoch of the lab CNN (chance: 0.1)
    assert (
        a["metrics"]["test/acc"] == b["metrics"]["test/acc"] and a["metrics"]["test/loss"] == b["metrics"]["test/loss"]
    )
    wa = torch.load(tmp_path / "a" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    wb = torch.load(tmp_path / "b" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_run_killed_mid_epoch_resumes_from_last_checkpoint(tmp_path, shared_data):
    """SIGKILL during training, then the same command with --ckpt_path last: the run completes, and its
    weights equal those of a run that was never interrupted (stateful batches, optimiser state restored)."""
    common = [
        "-c",
        "configs/digits/cnn.yaml",
        "--trainer.max_epochs",
        "2",
        "--data.train_subset",
        "4000",
        "--data.batch_size",
        "32",
        "--checkpoint_every_n_steps",
        "20",
        "--test_after_fit",
        "false",
        # float32: bf16 autocast (what precision auto picks on an AVX512-BF16 CPU) is not bit-for-bit the same
        # between the killed subprocess and this process, and the weights are compared to 1e-6
        "--trainer.precision",
        "32-true",
        *TINY,
    ]
    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, "-m", "i2dl", "digits", "fit", "--run_dir", str(killed), *common],
        cwd=REPO,
        # the same number of threads as the in-process runs below (an earlier test may have changed it): float32
        # sums over a different number of threads differ in the last bits, and 230 steps grow that past 1e-6
        env={**os.environ, "I2DL_DATA": str(SHARED_DATA), "OMP_NUM_THREADS": str(torch.get_num_threads())},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    last = killed / "checkpoints" / "last.ckpt"
    deadline = time.time() + 300
    while not last.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    step_at_kill = torch.load(last, weights_only=True)["global_step"]
    assert 0 < step_at_kill < 2 * 125 and step_at_kill % 125 != 0  # 4000 / 32 = 125 steps an epoch
    code, _, err = run_main("digits", "fit", "--run_dir", str(killed), "--ckpt_path", "last", *common)
    assert code == 0, err[-3000:]
    resumed = torch.load(last, weights_only=True)
    assert resumed["global_step"] == 250 and resumed["epoch"] == 1
    run_main("digits", "fit", "--run_dir", str(tmp_path / "straight"), *common)
    straight = torch.load(tmp_path / "straight" / "checkpoints" / "last.ckpt", weights_only=True)
    for key, value in straight["state_dict"].items():
        assert torch.allclose(value, resumed["state_dict"][key], atol=1e-6), key
    resumed_log = (killed / "csv" / "version_1" / "metrics.csv").read_text().splitlines()
    steps = [int(row.split(",")[1]) for row in resumed_log[1:]]
    assert min(steps) >= step_at_kill - 1 and max(steps) == 249  # the curve goes on where it stopped


def test_predict_reads_photos_of_any_size_and_colour(trained_fc, tmp_path, shared_data):
    images, labels = load_split("mnist", "test", shared_data)
    paths = []
    for i in range(12):
        digit = 255 - images[i].numpy()  # dark ink on white paper
        photo = Image.fromarray(digit).resize((120, 120), Image.BILINEAR)
        canvas = Image.new("L", (300, 200), 255)
        canvas.paste(photo, (40 + 10 * i, 30))
        rgb = Image.merge("RGB", [canvas, canvas.point(lambda v: v * 0.9), canvas.point(lambda v: v * 0.8 + 20)])
        path = tmp_path / f"digit{i}.{'jpg' if i % 2 else 'png'}"
        rgb.save(path)
        paths.append(path)
        restored = to_mnist_format(np.asarray(rgb.convert("L"), dtype=np.float32) / 255)[0].numpy()
        # the MNIST recipe recovers the original 28x28 digit, up to a pixel or two of centring
        corr = max(
            np.corrcoef(np.roll(restored, (dy, dx), (0, 1)).ravel(), images[i].numpy().ravel())[0, 1]
            for dy in range(-2, 3)
            for dx in range(-2, 3)
        )
        assert corr > 0.85, (i, corr)
    code, out, err = run_main(
        "digits", "predict", "--ckpt_path", str(trained_fc / "checkpoints" / "best.ckpt"), *map(str, paths)
    )
    assert code == 0, err
    lines = [line for line in out.splitlines() if line.startswith(str(tmp_path))]
    probs = [
        list(map(float, line.split(": ", 1)[1].split()))
        for line in out.splitlines()
        if line.strip().startswith("probabilities:")
    ]
    assert len(lines) == 12 and all(abs(sum(p) - 1) < 1e-3 for p in probs)
    predicted = [int(line.split(": ")[1].split()[0]) for line in lines]
    assert sum(p == int(t) for p, t in zip(predicted, labels[:12])) >= 10


def test_predict_bad_image_is_one_line(trained_fc, tmp_path):
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    code, _, err = run_main("digits", "predict", "--ckpt_path", str(trained_fc / "checkpoints" / "best.ckpt"), str(bad))
    assert code == 2 and err.strip() == f"i2dl: error: {bad}: not a readable image " + err.split("image ", 1)[1].strip()


def test_onnx_export_matches_pytorch(trained_fc, tmp_path):
    from i2dl.digits.module import DigitClassifier
    from i2dl.training import load_module

    out = tmp_path / "model.onnx"
    code, stdout, err = run_main(
        "digits", "export", "--ckpt_path", str(trained_fc / "checkpoints" / "best.ckpt"), "--output", str(out)
    )
    assert code == 0, err
    module = load_module(DigitClassifier, trained_fc / "checkpoints" / "best.ckpt")
    example = torch.rand(7, 1, 28, 28)  # another batch size than the export example
    assert onnx_max_abs_diff(out, module.model, example) < 1e-4


def test_onnx_export_that_disagrees_is_exit_2_and_keeps_the_old_file(trained_fc, tmp_path, monkeypatch):
    """The onnxruntime check runs before the file replaces the output: a failed check writes nothing."""
    import i2dl.export

    out = tmp_path / "model.onnx"
    out.write_bytes(b"an earlier export")
    monkeypatch.setattr(i2dl.export, "onnx_max_abs_diff", lambda *args: float("nan"))
    code, _, err = run_main(
        "digits", "export", "--ckpt_path", str(trained_fc / "checkpoints" / "best.ckpt"), "--output", str(out)
    )
    assert code == 2 and "differ from PyTorch's by nan" in err and len(err.strip().splitlines()) == 1, err
    assert out.read_bytes() == b"an earlier export" and sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]


def test_incompatible_checkpoint_is_one_line_exit_2(trained_fc, tmp_path):
    # resuming a run with another architecture than the one its checkpoints hold
    run_dir = tmp_path / "r"
    fit(run_dir, "-c", "configs/digits/fc.yaml", "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2")
    code, _, err = run_main(
        "digits",
        "fit",
        "-c",
        "configs/digits/cnn.yaml",
        "--run_dir",
        str(run_dir),
        "--ckpt_path",
        "last",
        "--trainer.max_epochs",
        "2",
        *TINY,
    )
    assert code == 2
    last = err.strip().splitlines()[-1]
    assert last.startswith("i2dl: error: the checkpoint does not fit this model (missing model.1.weight")
    # a checkpoint of something else entirely
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"hyper_parameters": {"latent_dim": 20}, "state_dict": {"encoder.0.weight": torch.zeros(2)}}, foreign)
    code, _, err = run_main("digits", "predict", "--ckpt_path", str(foreign), "x.png")
    assert code == 2 and err.startswith(f"i2dl: error: {foreign}: was not written by DigitClassifier")
    code, _, err = run_main("digits", "predict", "--ckpt_path", str(tmp_path / "missing.ckpt"), "x.png")
    assert code == 2 and "missing.ckpt: no such checkpoint" in err


def test_bad_config_value_exits_2(tmp_path):
    code, _, err = run_main("digits", "fit", "--model.arch", "resnet9000", "--run_dir", str(tmp_path / "r"))
    assert code == 2 and "resnet9000" in err


def test_ddp_on_two_cpu_processes(tmp_path, shared_data):
    run_dir = tmp_path / "ddp"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "i2dl",
            "digits",
            "fit",
            "-c",
            "configs/digits/fc.yaml",
            "--run_dir",
            str(run_dir),
            "--trainer.strategy",
            "ddp",
            "--trainer.devices",
            "2",
            "--trainer.accelerator",
            "cpu",
            "--trainer.max_epochs",
            "1",
            "--data.train_subset",
            "512",
            "--trainer.limit_val_batches",
            "0.34",
            "--trainer.limit_test_batches",
            "0.2",
            "--trainer.enable_progress_bar",
            "false",
        ],
        cwd=REPO,
        env={**os.environ, "I2DL_DATA": str(SHARED_DATA)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "distributed_backend=gloo" in proc.stderr + proc.stdout
    results = json.loads((run_dir / "results.json").read_text())
    assert results["steps"] == 4 and 0 <= results["metrics"]["test/acc"] <= 1  # 512 images / 2 ranks / 64 a batch
