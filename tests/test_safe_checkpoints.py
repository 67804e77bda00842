"""Checkpoints are data, not code (issue 16): a checkpoint or weights file whose pickle carries a payload is refused
by every entry point of the supervised labs before any of it runs; checkpoints written before the change load."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch
from conftest import REPO, run_cli, run_main
from test_segmentation_data import make_msrc

FIXTURE = REPO / "tests" / "fixtures" / "digits_digitnet_w2_v0.1.ckpt"  # written by i2dl before this change


class Payload:
    """Unpickling this runs `touch <marker>` (what a malicious checkpoint would do, harmlessly)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def payload_checkpoint(path: Path, marker: Path, like: Path = FIXTURE) -> Path:
    """A real i2dl checkpoint with one payload object tucked into its hyper-parameters."""
    checkpoint = torch.load(like, map_location="cpu", weights_only=True)
    checkpoint["hyper_parameters"]["note"] = Payload(marker)
    torch.save(checkpoint, path)
    return path


def assert_refused(code: int, err: str, marker: Path, path: Path) -> None:
    assert not marker.exists(), "the payload ran"
    assert code == 2, err[-2000:]
    lines = [line for line in err.strip().splitlines() if line.startswith("i2dl: error")]
    assert len(lines) == 1 and "Traceback" not in err
    assert str(path) in lines[0] and "holds objects the safe loader does not allow" in lines[0], lines[0]


@pytest.fixture
def evil(tmp_path) -> tuple[Path, Path]:
    marker = tmp_path / "PWNED"
    return payload_checkpoint(tmp_path / "evil.ckpt", marker), marker


@pytest.fixture
def digit_image(tmp_path) -> Path:
    from PIL import Image, ImageDraw

    image = Image.new("L", (60, 60), 255)
    ImageDraw.Draw(image).line([(30, 8), (30, 52)], fill=0, width=6)
    image.save(tmp_path / "one.png")
    return tmp_path / "one.png"


TINY_DIGITS = [
    "-c",
    "configs/digits/best.yaml",
    "--model.width",
    "2",
    "--trainer.max_steps",
    "1",
    "--trainer.limit_val_batches",
    "0.2",
    "--trainer.limit_test_batches",
    "0.1",
    "--data.train_subset",
    "256",
    "--trainer.enable_progress_bar",
    "false",
]


@pytest.mark.parametrize("command", ["predict", "export", "test", "validate", "fit"])
def test_digits_entry_points_refuse_a_payload_checkpoint(command, evil, digit_image, tmp_path):
    path, marker = evil
    if command == "predict":
        args = ["predict", "--ckpt_path", str(path), str(digit_image)]
    elif command == "export":
        args = ["export", "--ckpt_path", str(path), "--output", str(tmp_path / "m.onnx")]
    else:  # Lightning's own loading: test/validate a checkpoint, resume a fit from one
        args = [command, *TINY_DIGITS, "--run_dir", str(tmp_path / "run"), "--ckpt_path", str(path)]
    code, _, err = run_main("digits", *args)
    assert_refused(code, err, marker, path)
    assert not (tmp_path / "m.onnx").exists()


def test_resume_from_a_payload_last_checkpoint_in_the_run_folder(evil, tmp_path):
    path, marker = evil
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    shutil.copy(path, run_dir / "checkpoints" / "last.ckpt")
    proc = run_cli("digits", "fit", *TINY_DIGITS, "--run_dir", str(run_dir), "--ckpt_path", "last")
    assert_refused(proc.returncode, proc.stderr, marker, run_dir / "checkpoints" / "last.ckpt")


def test_keypoints_and_segmentation_predict_refuse_a_payload_checkpoint(evil, digit_image):
    path, marker = evil
    for lab in ("keypoints", "segmentation"):
        code, _, err = run_main(lab, "predict", "--ckpt_path", str(path), str(digit_image))
        assert_refused(code, err, marker, path)


@pytest.mark.parametrize("option", ["--model.encoder_ckpt", "--model.init_ckpt"])
def test_autoencoder_fine_tuning_refuses_a_payload_encoder(option, evil, tmp_path):
    path, marker = evil
    code, _, err = run_main(
        "autoencoder",
        "finetune",
        "fit",
        "-c",
        "configs/autoencoder/finetune_conv.yaml",
        option,
        str(path),
        "--trainer.max_steps",
        "1",
        "--data.unlabeled_limit",
        "256",
        "--trainer.enable_progress_bar",
        "false",
        "--run_dir",
        str(tmp_path / "run"),
    )
    assert_refused(code, err, marker, path)


@pytest.mark.parametrize("option", ["--model.weights", "--model.weights_backbone"])
def test_segmentation_weights_refuse_a_payload_file(option, tmp_path, shared_data):
    marker = tmp_path / "PWNED"
    weights = tmp_path / "evil.pth"
    torch.save({"conv.weight": torch.zeros(1), "x": Payload(marker)}, weights)
    data = tmp_path / "data"
    make_msrc(shared_data, data / "msrc_v2", {"train": ["1_23_s"], "val": ["10_12_s"], "test": ["10_11_s"]})
    config = "lraspp_msrc.yaml" if option == "--model.weights" else "unet_mobilenet_v2_msrc.yaml"
    other = ["--model.weights_backbone", "null"] if option == "--model.weights" else []
    code, _, err = run_main(
        "segmentation",
        "fit",
        "-c",
        str(REPO / "configs" / "segmentation" / config),
        "--data.data_dir",
        str(data),
        option,
        str(weights),
        *other,
        "--trainer.max_steps",
        "1",
        "--data.train_size",
        "[64, 64]",
        "--data.eval_size",
        "[64, 64]",
        "--trainer.enable_progress_bar",
        "false",
        "--run_dir",
        str(tmp_path / "run"),
    )
    assert_refused(code, err, marker, weights)


def test_a_checkpoint_written_before_the_safe_loader_still_works(digit_image, tmp_path, shared_data):
    """The committed fixture was written by i2dl's Lightning layer before this change: it predicts, exports, tests
    and resumes under the safe loader."""
    code, out, err = run_main("digits", "predict", "--ckpt_path", str(FIXTURE), str(digit_image))
    assert code == 0, err
    assert "one.png:" in out and "probabilities:" in out
    code, out, err = run_main("digits", "export", "--ckpt_path", str(FIXTURE), "--output", str(tmp_path / "m.onnx"))
    assert code == 0 and (tmp_path / "m.onnx").is_file(), err
    run_dir = tmp_path / "resumed"
    (run_dir / "checkpoints").mkdir(parents=True)
    shutil.copy(FIXTURE, run_dir / "checkpoints" / "last.ckpt")
    code, out, err = run_main(
        "digits",
        "fit",
        *TINY_DIGITS[:-4],
        "--trainer.max_steps",
        "5",
        "--trainer.enable_progress_bar",
        "false",
        "--run_dir",
        str(run_dir),
        "--ckpt_path",
        "last",
    )
    assert code == 0, err[-2000:]
    resumed = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert resumed["global_step"] == 5  # the fixture stopped at 3 and the run went on from there
