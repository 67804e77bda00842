"""Facial keypoints through `i2dl keypoints ...`: every config trains with tiny limits, runs resume, predict writes
overlays/JSON in the original pixels and Kaggle submissions, export agrees with onnxruntime, errors exit 2."""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from i2dl.cli import main as i2dl_main
from i2dl.keypoints.model import build_model
from i2dl.keypoints.module import FacialKeypointsRegressor
from i2dl.keypoints.predict import Letterbox, predict_pixels, to_face_input
from i2dl.training import load_module

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "configs" / "keypoints").glob("*.yaml"))
TINY = [
    "--trainer.max_epochs",
    "1",
    "--trainer.limit_train_batches",
    "2",
    "--trainer.limit_val_batches",
    "1",
    "--trainer.limit_test_batches",
    "1",
    "--trainer.enable_progress_bar",
    "false",
    "--trainer.log_every_n_steps",
    "1",
    "--data.batch_size",
    "16",
    "--data.eval_batch_size",
    "32",
]


def real_lines(shared_data: Path, split: str, n: int) -> list[str]:
    with gzip.open(shared_data / "facial_keypoints" / f"{split}.csv.gz", "rt", newline="") as fh:
        return [next(fh) for _ in range(n + 1)]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny batches gain nothing from a second thread on a shared 2-core machine, and oversubscription is slow."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def small_data(shared_data, tmp_path_factory) -> Path:
    """A data folder with 48/32/32 real faces (training as .csv, val as .csv.gz, test as .csv)."""
    root = tmp_path_factory.mktemp("faces")
    folder = root / "facial_keypoints"
    folder.mkdir()
    (folder / "training.csv").write_text("".join(real_lines(shared_data, "training", 48)), newline="")
    with gzip.open(folder / "val.csv.gz", "wt", newline="") as fh:
        fh.writelines(real_lines(shared_data, "val", 32))
    (folder / "test.csv").write_text("".join(real_lines(shared_data, "test", 32)), newline="")
    return root


def i2dl(*args: str, capsys=None) -> tuple[int, str, str]:
    """Run the CLI in this process (saves ~5 s of imports per call); returns (exit status, stdout, stderr)."""
    code = 0
    try:
        i2dl_main(list(args))
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else 1
    out, err = capsys.readouterr() if capsys else ("", "")
    return code, out, err


@pytest.fixture(scope="module")
def trained(small_data, tmp_path_factory) -> Path:
    """One tiny fit of the default config; its run folder."""
    run_dir = tmp_path_factory.mktemp("run") / "keypointnet"
    code, _, _ = i2dl(
        "keypoints",
        "fit",
        "-c",
        str(REPO / "configs/keypoints/keypointnet.yaml"),
        *TINY,
        "--data.data_dir",
        str(small_data),
        "--run_dir",
        str(run_dir),
    )
    assert code == 0
    return run_dir


def test_configs_exist_and_models_fit_the_course_limits(tmp_path):
    assert {p.stem for p in CONFIGS} >= {"keypointnet", "lab_cnn"}
    for config in CONFIGS:
        model_args = yaml.safe_load(config.read_text())["model"]
        model = build_model(
            model_args["arch"], width=model_args.get("width", 16), dropout=model_args.get("dropout", 0.1)
        )
        params = sum(p.numel() for p in model.parameters())
        assert params < 5_000_000, (config.name, params)
        torch.save(model.state_dict(), tmp_path / "model.pt")
        assert (tmp_path / "model.pt").stat().st_size < 20 * 2**20, config.name
        assert model(torch.rand(2, 1, 96, 96)).shape == (2, 30)


@pytest.mark.parametrize("config", [c for c in CONFIGS if c.stem != "keypointnet"], ids=lambda p: p.stem)
def test_every_other_config_fits_with_tiny_limits(config, small_data, tmp_path, capsys):
    code, out, err = i2dl(
        "keypoints",
        "fit",
        "-c",
        str(config),
        *TINY,
        "--data.data_dir",
        str(small_data),
        "--run_dir",
        str(tmp_path / "run"),
        capsys=capsys,
    )
    assert code == 0, err[-3000:]
    assert "fit finished" in out and "test/score" in out
    assert (tmp_path / "run/checkpoints/best.ckpt").is_file()


def test_fit_writes_the_run_folder_metrics_and_figures(trained):
    for name in [
        "checkpoints/best.ckpt",
        "checkpoints/last.ckpt",
        "config.yaml",
        "figures/test_predictions.png",
        "figures/worst_predictions.png",
        "figures/keypoint_errors.png",
        "figures/curves.png",
    ]:
        assert (trained / name).is_file(), name
    summary = json.loads((trained / "results.json").read_text())["metrics"]
    assert summary["test/images"] == 32 and len([k for k in summary if k.startswith("test/rmse_px/")]) == 15
    assert summary["test/score"] == pytest.approx(1 / (2 * summary["test/rmse_px"] ** 2 / 48**2), rel=1e-4)
    header = next(csv.reader(open(next(trained.glob("csv/version_0/metrics.csv")))))
    assert {"train/loss", "val/score", "val/rmse_px", "test/score", "test/rmse_px", "test/rmse_px/nose_tip"} <= set(
        header
    )
    assert Image.open(trained / "figures/test_predictions.png").size[0] > 600


def test_resume_validate_and_test_from_checkpoints(trained, small_data, capsys):
    args = [
        "-c",
        str(REPO / "configs/keypoints/keypointnet.yaml"),
        *TINY,
        "--data.data_dir",
        str(small_data),
        "--run_dir",
        str(trained),
    ]
    before = torch.load(trained / "checkpoints/last.ckpt", weights_only=True)
    code, out, err = i2dl(
        "keypoints",
        "fit",
        *args[:-2],
        "--trainer.max_epochs",
        "2",
        "--run_dir",
        str(trained),
        "--ckpt_path",
        "last",
        capsys=capsys,
    )
    assert code == 0, err[-3000:]
    after = torch.load(trained / "checkpoints/last.ckpt", weights_only=True)
    assert before["global_step"] == 2 and after["global_step"] == 4  # one more epoch of 2 steps, not two
    assert after["epoch"] == before["epoch"] + 1
    assert (trained / "csv/version_1/metrics.csv").is_file()
    code, out, err = i2dl(
        "keypoints", "validate", *args, "--ckpt_path", str(trained / "checkpoints/best.ckpt"), capsys=capsys
    )
    assert code == 0 and "val/score" in out and "val/rmse_px" in out
    code, out, err = i2dl(
        "keypoints", "test", *args, "--ckpt_path", str(trained / "checkpoints/best.ckpt"), capsys=capsys
    )
    assert code == 0 and "test/rmse_px/left_eye_center" in out


def test_predict_image_files_of_any_size_and_colour(trained, small_data, tmp_path, capsys):
    row = (small_data / "facial_keypoints/test.csv").read_text().splitlines()[1]
    gray = np.array(row.split(",")[30].split(), dtype=np.uint8).reshape(96, 96)
    big = Image.fromarray(gray).resize((192, 192), Image.BICUBIC)
    tinted = Image.merge("RGB", [big, big.point(lambda v: v * 0.9), big.point(lambda v: v * 0.7)])
    tinted.save(tmp_path / "square.jpg", quality=95)
    wide = Image.new("RGB", (300, 150), (40, 90, 160))
    wide.paste(tinted.resize((150, 150)), (75, 0))
    wide.save(tmp_path / "wide.png")
    out_dir = tmp_path / "out"
    code, out, err = i2dl(
        "keypoints",
        "predict",
        "--ckpt_path",
        str(trained / "checkpoints/best.ckpt"),
        "--no_detect",
        "--output_dir",
        str(out_dir),
        str(tmp_path / "square.jpg"),
        str(tmp_path / "wide.png"),
        capsys=capsys,
    )
    assert code == 0, err[-3000:]
    assert out.count("left eye centre at") == 2
    module = load_module(FacialKeypointsRegressor, trained / "checkpoints/best.ckpt")
    # what predict uses: the network with the checkpoint's test-time flip (keypointnet.yaml has one)
    on_raw_face = predict_pixels(module.predict_normalised, torch.from_numpy(gray / 255.0).float()[None, None])[0]
    square = json.loads((out_dir / "square_keypoints.json").read_text())
    assert (square["width"], square["height"]) == (192, 192) and len(square["keypoints"]) == 15
    got = torch.tensor(list(square["keypoints"].values()))
    assert (got - ((on_raw_face + 0.5) * 2 - 0.5)).abs().max() < 3.0  # same face, twice the size
    wide_json = json.loads((out_dir / "wide_keypoints.json").read_text())
    points = torch.tensor(list(wide_json["keypoints"].values()))
    assert wide_json["width"] == 300 and wide_json["height"] == 150 and points.isfinite().all()
    x, box = to_face_input(Image.open(tmp_path / "wide.png"))  # padded to 300x300, never stretched
    assert x.shape == (1, 96, 96) and (box.scale, box.left, box.top) == (300 / 96, 0.0, 75.0)
    assert Image.open(out_dir / "wide_keypoints.png").size == (300, 150)
    box = Letterbox(width=200, height=100, scale=200 / 96, left=0.0, top=50.0)
    centre = box.to_original(torch.tensor([47.5, 47.5]))
    assert centre.tolist() == pytest.approx([99.5, 49.5])


def test_predict_writes_a_kaggle_submission(trained, small_data, tmp_path, capsys):
    rows = (small_data / "facial_keypoints/test.csv").read_text().splitlines()[1:6]
    images = [r.split(",")[30] for r in rows]
    (tmp_path / "test.csv").write_text("ImageId,Image\n" + "".join(f"{i + 1},{p}\n" for i, p in enumerate(images)))
    (tmp_path / "IdLookupTable.csv").write_text(
        "RowId,ImageId,FeatureName,Location\n1,1,left_eye_center_x,\n"
        "2,1,left_eye_center_y,\n3,5,mouth_center_bottom_lip_y,\n"
    )
    code, out, err = i2dl(
        "keypoints",
        "predict",
        "--ckpt_path",
        str(trained / "checkpoints/best.ckpt"),
        "--kaggle_test",
        str(tmp_path / "test.csv"),
        "--id_lookup",
        str(tmp_path / "IdLookupTable.csv"),
        "--submission",
        str(tmp_path / "sub.csv"),
        capsys=capsys,
    )
    assert code == 0, err[-3000:]
    table = list(csv.reader(open(tmp_path / "sub.csv")))
    assert table[0] == ["RowId", "Location"] and [r[0] for r in table[1:]] == ["1", "2", "3"]
    module = load_module(FacialKeypointsRegressor, trained / "checkpoints/best.ckpt")
    faces = torch.tensor([[int(v) for v in p.split()] for p in images], dtype=torch.float32).view(-1, 1, 96, 96)
    expected = predict_pixels(module.predict_normalised, faces / 255.0).clamp(0, 96)  # with its test-time flip
    assert [float(r[1]) for r in table[1:]] == pytest.approx(
        [float(expected[0, 0, 0]), float(expected[0, 0, 1]), float(expected[4, 14, 1])], abs=1e-3
    )


def test_export_onnx_matches_pytorch(trained, tmp_path, capsys):
    import onnxruntime as ort

    code, out, err = i2dl(
        "keypoints",
        "export",
        "--ckpt_path",
        str(trained / "checkpoints/best.ckpt"),
        "--output",
        str(tmp_path / "kp.onnx"),
        capsys=capsys,
    )
    assert code == 0, err[-3000:]
    assert "max |diff|" in out
    x = torch.rand(3, 1, 96, 96)
    session = ort.InferenceSession(str(tmp_path / "kp.onnx"), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    module = load_module(FacialKeypointsRegressor, trained / "checkpoints/best.ckpt")
    with torch.no_grad():
        assert np.abs(got - module.model(x).numpy()).max() < 1e-4


def test_user_mistakes_are_one_line_and_exit_2(trained, tmp_path, capsys):
    (tmp_path / "not_an_image.png").write_bytes(b"hello")
    code, _, err = i2dl(
        "keypoints",
        "predict",
        "--ckpt_path",
        str(trained / "checkpoints/best.ckpt"),
        str(tmp_path / "not_an_image.png"),
        capsys=capsys,
    )
    assert code == 2 and err.strip() == err.strip().splitlines()[0]
    assert f"{tmp_path / 'not_an_image.png'}: not a readable image" in err
    digits = {"state_dict": {"model.1.weight": torch.zeros(3)}, "hyper_parameters": {"arch": "keypointnet"}}
    torch.save(digits, tmp_path / "other.ckpt")
    code, _, err = i2dl("keypoints", "export", "--ckpt_path", str(tmp_path / "other.ckpt"), capsys=capsys)
    assert code == 2 and "other.ckpt does not fit this model" in err
    code, _, err = i2dl("keypoints", "predict", "--ckpt_path", str(tmp_path / "missing.ckpt"), "x.png", capsys=capsys)
    assert code == 2 and "missing.ckpt: no such checkpoint" in err


def test_test_time_flip_is_the_test_commands_choice_not_the_checkpoints(trained, small_data, tmp_path, capsys):
    """LightningCLI lets a checkpoint's hyper-parameters win over the command line; a test-time setting must not
    (the checkpoint was trained with keypointnet.yaml's mirror constants: `--model.tta_mirror null` and another
    list must each be used, not replaced by the checkpoint's)."""
    args = ["-c", str(REPO / "configs/keypoints/keypointnet.yaml"), *TINY, "--data.data_dir", str(small_data)]
    best = str(trained / "checkpoints/best.ckpt")
    rmse = {}
    for name, extra in (("plain", ["--model.tta_mirror", "null"]), ("flip", ["--model.tta_mirror", str([60.0] * 15)])):
        run_dir = tmp_path / name
        code, out, err = i2dl(
            "keypoints", "test", *args, *extra, "--run_dir", str(run_dir), "--ckpt_path", best, capsys=capsys
        )
        assert code == 0, err[-3000:]
        config = yaml.safe_load((run_dir / "config.yaml").read_text())
        assert config["model"]["tta_mirror"] == ([60.0] * 15 if name == "flip" else None)
        rmse[name] = json.loads((run_dir / "results.json").read_text())["metrics"]["test/rmse_px"]
    assert rmse["flip"] != rmse["plain"]  # a mirror constant of 60 px moves every x: the flip was applied
