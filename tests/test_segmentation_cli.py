"""`i2dl segmentation fit|test|predict|export` on tiny real slices: every config, resume, CamVid -> MSRC-v2 fine-tuning
from our own checkpoint, colour-mask predictions, ONNX export checked with onnxruntime."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_segmentation_data import make_camvid, make_msrc

from i2dl.cli import main as i2dl_main
from i2dl.segmentation.datasets import CAMVID_PALETTE, MSRC_PALETTE

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "configs" / "segmentation").glob("*.yaml"))
TINY = [
    "--trainer.max_epochs",
    "1",
    "--trainer.limit_train_batches",
    "1",
    "--trainer.limit_val_batches",
    "1",
    "--trainer.limit_test_batches",
    "1",
    "--trainer.enable_progress_bar",
    "false",
    "--data.batch_size",
    "2",
    "--data.eval_batch_size",
    "2",
    "--data.train_size",
    "[64, 64]",
    "--data.eval_size",
    "[64, 96]",
]


@pytest.fixture(scope="module")
def tiny_data(shared_data, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("segdata")
    make_msrc(
        shared_data,
        root / "msrc_v2",
        {"train": ["1_23_s", "10_10_s"], "val": ["10_12_s", "3_14_s"], "test": ["10_11_s", "20_9_s"]},
    )
    make_camvid(shared_data, root / "camvid")
    return root


def fit(tiny_data, shared_data, run_dir, *args: str, config: str = "unet_mobilenet_v2_msrc.yaml") -> None:
    i2dl_main(
        [
            "segmentation",
            "fit",
            "-c",
            str(REPO / "configs" / "segmentation" / config),
            "--run_dir",
            str(run_dir),
            "--data.data_dir",
            str(tiny_data),
            *TINY,
            *args,
        ]
    )


def weights_args(config: Path, shared_data: Path) -> list[str]:
    text = config.read_text()
    if "approach: torchvision" in text:  # offline: no torchvision download
        return ["--model.weights", "null", "--model.weights_backbone", "null"]
    return ["--model.weights_backbone", str(shared_data / "weights" / "mobilenet_v2_imagenet.pth")]


@pytest.mark.parametrize("config", CONFIGS, ids=[c.stem for c in CONFIGS])
def test_every_config_fits_and_tests_with_tiny_limits(config, tiny_data, shared_data, tmp_path, capsys):
    run_dir = tmp_path / config.stem
    fit(tiny_data, shared_data, run_dir, *weights_args(config, shared_data), config=config.name)
    out = capsys.readouterr().out
    assert "fit finished:" in out and "test/miou" in out and "test/acc" in out and "test/pixel_acc" in out
    assert (run_dir / "checkpoints" / "best.ckpt").is_file() and (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert (run_dir / "config.yaml").is_file()
    for figure in ("test_predictions.png", "per_class_iou.png", "curves.png"):
        assert (run_dir / "figures" / figure).stat().st_size > 1000, figure
    metrics = json.loads((run_dir / "results.json").read_text())["metrics"]
    rows = {k: v for k, v in metrics.items() if k.startswith("test/iou/")}
    assert len(rows) == (23 if "msrc" in config.stem else 11)
    ious = [v for v in rows.values() if v is not None]
    assert ious and all(0.0 <= v <= 1.0 for v in ious)


def test_resume_continues_from_last_checkpoint(tiny_data, shared_data, tmp_path):
    run_dir = tmp_path / "resume"
    fit(
        tiny_data,
        shared_data,
        run_dir,
        "--model.weights_backbone",
        "null",
        "--trainer.limit_train_batches",
        "2",
        "--test_after_fit",
        "false",
    )
    first = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert first["global_step"] == 1  # 2 training images, batch 2: one step per epoch
    fit(
        tiny_data,
        shared_data,
        run_dir,
        "--model.weights_backbone",
        "null",
        "--trainer.max_epochs",
        "3",
        "--ckpt_path",
        "last",
        "--test_after_fit",
        "false",
    )
    second = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert second["global_step"] == 3 and second["epoch"] == first["epoch"] + 2
    assert len(list((run_dir / "csv").glob("version_*"))) == 2


def test_camvid_checkpoint_fine_tunes_on_msrc_with_a_new_last_layer(tiny_data, shared_data, tmp_path, capsys):
    camvid = tmp_path / "camvid"
    offline = ["--model.weights", "null", "--model.weights_backbone", "null", "--test_after_fit", "false"]
    fit(tiny_data, shared_data, camvid, *offline, config="lraspp_camvid.yaml")
    ckpt = camvid / "checkpoints" / "best.ckpt"
    capsys.readouterr()
    fit(
        tiny_data,
        shared_data,
        tmp_path / "msrc",
        "--model.weights",
        str(ckpt),
        "--test_after_fit",
        "false",
        config="lraspp_msrc.yaml",
    )
    out = capsys.readouterr().out
    camvid_state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    total = sum(1 for k in camvid_state if k.startswith("model.net."))
    assert (
        f"pretrained weights: loaded {total - 4}/{total} tensors from {ckpt}; new: classifier.low_classifier.weight,"
        in out
    )
    msrc_state = torch.load(tmp_path / "msrc" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)[
        "state_dict"
    ]
    assert msrc_state["model.net.classifier.high_classifier.weight"].shape[0] == 23
    assert camvid_state["model.net.classifier.high_classifier.weight"].shape[0] == 11


@pytest.fixture(scope="module")
def msrc_checkpoint(tiny_data, shared_data, tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("msrc_run")
    fit(tiny_data, shared_data, run_dir, "--model.weights_backbone", "null", "--test_after_fit", "false")
    return run_dir / "checkpoints" / "best.ckpt"


def test_predict_writes_colour_mask_and_overlay(msrc_checkpoint, shared_data, tmp_path, capsys):
    photo = shared_data / "weights" / "samples" / "parrot.jpg"
    i2dl_main(
        ["segmentation", "predict", "--ckpt_path", str(msrc_checkpoint), "--output_dir", str(tmp_path), str(photo)]
    )
    out = capsys.readouterr().out
    assert str(tmp_path / "parrot_mask.png") in out
    size = Image.open(photo).size
    mask = np.asarray(Image.open(tmp_path / "parrot_mask.png").convert("RGB"))
    over = np.asarray(Image.open(tmp_path / "parrot_overlay.png").convert("RGB"))
    assert mask.shape == over.shape == (size[1], size[0], 3)
    colours = {tuple(c) for c in mask.reshape(-1, 3).tolist()}
    assert colours <= set(MSRC_PALETTE) and colours.isdisjoint(set(CAMVID_PALETTE) - set(MSRC_PALETTE))
    photo_pixels = np.asarray(Image.open(photo).convert("RGB")).astype(int)
    assert np.abs(over - (photo_pixels + mask.astype(int)) / 2).max() <= 1


def test_export_onnx_matches_pytorch(msrc_checkpoint, tmp_path, capsys):
    output = tmp_path / "seg.onnx"
    i2dl_main(
        [
            "segmentation",
            "export",
            "--ckpt_path",
            str(msrc_checkpoint),
            "--output",
            str(output),
            "--height",
            "64",
            "--width",
            "96",
        ]
    )
    out = capsys.readouterr().out
    assert output.stat().st_size > 100_000
    diff = float(out.rsplit("max |diff| ", 1)[1].split(")")[0])
    assert diff < 1e-3


def test_bad_checkpoint_and_image_are_one_line_errors(msrc_checkpoint, tmp_path, capsys):
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"nope")
    not_image = tmp_path / "photo.png"
    not_image.write_text("text")
    for argv, message in (
        (["predict", "--ckpt_path", str(junk), str(not_image)], "junk.ckpt: not a readable checkpoint"),
        (["predict", "--ckpt_path", str(msrc_checkpoint), str(not_image)], "photo.png: not a readable image"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            i2dl_main(["segmentation", *argv])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0]
