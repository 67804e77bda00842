"""The app's parts that need no browser or server: face detection on real faces (`i2dl.keypoints.faces`, also behind
`i2dl keypoints predict`), safe image reading, and checkpoint choices that never leave the runs folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import SHARED_DATA, run_main
from PIL import Image

from i2dl.app.common import AppError, find_runs, read_photo, resolve_checkpoint
from i2dl.keypoints.faces import CROP_SCALE, FaceBox, crop_face, detect_faces, keypoints_of_faces
from i2dl.keypoints.kaggle_csv import read_keypoints_csv
from i2dl.runs import Run

# two real faces (96x96 crops of the keypoints data): (index in test.csv.gz, size, top-left corner) in a 640x480 photo
FACES = ((0, 190, (60, 120)), (5, 130, (420, 200)))


# --- helpers the app tests use too ---------------------------------------------------------------------------------
def save_lightning_checkpoint(
    module: torch.nn.Module, run_dir: Path, lab: str, config: str, metric: str, value: float, config_yaml: dict
) -> Path:
    """A run folder as a Lightning lab writes it: checkpoints/best.ckpt (hyper-parameters + weights), config.yaml,
    results.json."""
    path = run_dir / "checkpoints" / "best.ckpt"
    path.parent.mkdir(parents=True)
    torch.save({"hyper_parameters": dict(module.hparams), "state_dict": module.state_dict()}, path)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config_yaml))
    run = Run(run_dir, lab, config, metric)
    run.start()
    run.finish({metric: value})
    return path


def mean_face_keypoints() -> torch.Tensor:
    return read_keypoints_csv(SHARED_DATA / "facial_keypoints" / "test.csv.gz").keypoints.mean(0)


def mean_face_model(run_dir: Path) -> Path:
    """KeypointNet whose last layer answers the test faces' mean keypoints for every face: a model whose output
    is known, so that detection, crop and mapping back can be checked against the faces' true keypoints."""
    from i2dl.keypoints.module import FacialKeypointsRegressor

    module = FacialKeypointsRegressor(arch="keypointnet", width=8)
    last = [m for m in module.model.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(((mean_face_keypoints() - 48) / 48).flatten())
    return save_lightning_checkpoint(
        module.eval(),
        run_dir,
        "keypoints",
        "keypointnet",
        "test/rmse_px",
        3.0,
        {"model": {"arch": "keypointnet", "width": 8}},
    )


def face_photo(path: Path, faces=FACES, size=(640, 480)) -> list[dict]:
    """A photo of real faces (different sizes) on a noisy grey background; returns where each face's 96x96 crop went
    (left, top, side) and its true keypoints in the photo's pixels."""
    data = read_keypoints_csv(SHARED_DATA / "facial_keypoints" / "test.csv.gz")
    rng = np.random.default_rng(0)
    photo = Image.fromarray(rng.integers(90, 150, (size[1], size[0], 3), dtype=np.uint8))
    placed = []
    for index, side, (left, top) in faces:
        face = Image.fromarray(data.images[index].numpy()).resize((side, side), Image.BICUBIC)
        photo.paste(face.convert("RGB"), (left, top))
        truth = (data.keypoints[index] + 0.5) * side / 96 - 0.5 + torch.tensor([left, top])
        placed.append({"left": left, "top": top, "side": side, "keypoints": truth})
    photo.save(path)
    return placed


def square_iou(a: tuple[float, float, float], b: tuple[float, float, float]) -> float:
    (ax, ay, aside), (bx, by, bside) = a, b
    w = max(0.0, min(ax + aside, bx + bside) - max(ax, bx))
    h = max(0.0, min(ay + aside, by + bside) - max(ay, by))
    return w * h / (aside**2 + bside**2 - w * h)


# --- face detection ------------------------------------------------------------------------------------------------
def test_the_detector_finds_real_faces_of_any_size_and_crops_them_like_the_training_faces(tmp_path):
    found, ious = 0, []
    for k, side in enumerate([100, 150, 230, 330] * 4):
        left, top = 40 + (k * 37) % 200, 30 + (k * 23) % 100
        face_photo(tmp_path / "one.png", faces=((30 + k, side, (left, top)),))
        boxes = detect_faces(Image.open(tmp_path / "one.png"))
        if boxes:
            found += 1
            ious.append(max(square_iou(box.crop_square(), (left, top, side)) for box in boxes))
        assert len(boxes) <= 1, f"{len(boxes)} faces found where there is one"
    assert found >= 15  # of 16
    assert np.median(ious) > 0.75 and min(ious) > 0.55


def test_a_big_photo_is_scanned_smaller_and_its_boxes_are_in_its_own_pixels(tmp_path):
    face_photo(tmp_path / "big.png", faces=((3, 700, (1300, 500)),), size=(2400, 1800))
    boxes = detect_faces(Image.open(tmp_path / "big.png"))
    assert len(boxes) == 1 and square_iou(boxes[0].crop_square(), (1300, 500, 700)) > 0.7


def test_no_face_no_box():
    assert detect_faces(Image.new("RGB", (640, 480), (128, 128, 128))) == []


class ConstantKeypoints(torch.nn.Module):
    """Answers the same normalised keypoints for every face."""

    def __init__(self, normalised: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("out", normalised.flatten())

    def forward(self, x):
        return self.out.expand(len(x), -1)


def test_keypoints_go_back_through_the_crop_into_the_photos_pixels():
    photo = Image.new("RGB", (400, 300), (100, 100, 100))
    inside, at_edge = FaceBox(100, 80, 100, 100), FaceBox(-30, 200, 100, 100)  # the second sticks out of the photo
    points96 = torch.tensor([[10.0, 20.0], [47.5, 47.5]] + [[50.0, 50.0]] * 13)
    model = ConstantKeypoints((points96 - 48) / 48)
    got = keypoints_of_faces(model, photo, [inside, at_edge])
    for box, points in zip([inside, at_edge], got):
        left, top, side = box.crop_square()
        assert side == round(100 * CROP_SCALE)
        expected = (points96 + 0.5) * side / 96 - 0.5 + torch.tensor([left, top], dtype=torch.float32)
        assert torch.allclose(points, expected, atol=1e-3)
    crop, (left, top) = crop_face(photo, at_edge)
    assert crop.size == (113, 113) and left < 0  # filled where the photo ends, not shifted


def test_keypoints_predict_finds_the_faces_of_whole_photos_unless_told_not_to(tmp_path):
    ckpt = mean_face_model(tmp_path / "runs" / "keypoints" / "mean")
    placed = face_photo(tmp_path / "two.png")
    Image.new("RGB", (320, 240), (90, 110, 130)).save(tmp_path / "wall.png")
    out = tmp_path / "out"
    code, stdout, err = run_main(
        "keypoints", "predict", "--ckpt_path", str(ckpt), "--output_dir", str(out), str(tmp_path / "two.png")
    )
    assert code == 0, err
    assert "two.png: 2 faces ->" in stdout
    data = json.loads((out / "two_keypoints.json").read_text())
    assert (data["width"], data["height"]) == (640, 480) and [len(f["keypoints"]) for f in data["faces"]] == [15, 15]
    for face, truth in zip(data["faces"], placed):
        points = torch.tensor(list(face["keypoints"].values()))
        assert (points - truth["keypoints"]).norm(dim=1).mean() / truth["side"] * 96 < 10
    assert Image.open(out / "two_keypoints.png").size == (640, 480)
    code, _, err = run_main(
        "keypoints",
        "predict",
        "--ckpt_path",
        str(ckpt),
        "--output_dir",
        str(tmp_path / "o2"),
        str(tmp_path / "two.png"),
        str(tmp_path / "wall.png"),
    )
    assert code == 2 and "wall.png: no face found" in err and "--no_detect" in err
    assert not (tmp_path / "o2").exists()  # every photo is checked before anything is written
    code, stdout, _ = run_main(
        "keypoints",
        "predict",
        "--ckpt_path",
        str(ckpt),
        "--output_dir",
        str(out),
        "--no_detect",
        str(tmp_path / "wall.png"),
    )
    assert code == 0 and "left eye centre at" in stdout
    assert len(json.loads((out / "wall_keypoints.json").read_text())["keypoints"]) == 15


def test_app_command_mistakes_are_one_line(tmp_path):
    code, _, err = run_main("app", "--runs", str(tmp_path / "missing"))
    assert code == 2 and err.strip() == f"i2dl: error: --runs {tmp_path / 'missing'}: no such folder"
    code, _, err = run_main("app", "--port", "70000")
    assert code == 2 and "--port 70000: choose 1 to 65535" in err


def test_pong_points_are_counted_for_both_players_and_atari_frames_are_blown_up(tmp_path):
    from i2dl.app.rl import ScoreKeeper, VideoFrames

    class Rally:
        rewards = [0.0, 1.0, 0.0, -1.0, -1.0]

        def reset(self, **kwargs):
            self.t = 0
            return 0, {}

        def step(self, action):
            self.t += 1
            return 0, self.rewards[self.t - 1], self.t == len(self.rewards), False, {}

        def render(self):
            return np.zeros((210, 160, 3), dtype=np.uint8)

    env = ScoreKeeper(Rally())
    env.reset(seed=1)
    while not env.step(0)[2]:
        pass
    assert env.points == [1, 2] and env.steps == 5 and env.render().shape == (210, 160, 3)
    imageio = pytest.importorskip("imageio.v2")
    frames = VideoFrames(tmp_path / "pong.mp4", fps=30)
    for _ in range(4):
        frames.append(env.render())
    frames.close()
    assert len(frames) == 4 and imageio.get_reader(tmp_path / "pong.mp4").get_meta_data()["size"] == (320, 420)


# --- images from uploads -------------------------------------------------------------------------------------------
def test_read_photo_refuses_what_is_not_a_sound_image_of_a_sane_size(tmp_path):
    (tmp_path / "notes.png").write_text("hello")
    with pytest.raises(AppError, match="notes.png is not an image file"):
        read_photo(tmp_path / "notes.png")
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (200, 300, 3), dtype=np.uint8)).save(
        tmp_path / "full.jpg"
    )
    (tmp_path / "cut.jpg").write_bytes((tmp_path / "full.jpg").read_bytes()[:3000])
    with pytest.raises(AppError, match="cut.jpg is damaged or truncated"):
        read_photo(tmp_path / "cut.jpg")
    Image.new("1", (10000, 6000)).save(tmp_path / "bomb.png")  # 60 megapixels, a few kB on disk
    with pytest.raises(AppError, match=r"10000x6000 pixels \(60 megapixels\)"):
        read_photo(tmp_path / "bomb.png")
    Image.new("1", (20000, 20000)).save(tmp_path / "huge.png")  # beyond PIL's own limit: refused at open
    with pytest.raises(AppError, match="huge.png is too large"):
        read_photo(tmp_path / "huge.png")
    with pytest.raises(AppError, match="No photo yet"):
        read_photo(None)


def test_read_photo_puts_transparency_on_white_and_applies_exif_rotation(tmp_path):
    ink = Image.new("RGBA", (20, 10), (0, 0, 0, 0))
    ink.putpixel((3, 4), (0, 0, 0, 255))
    ink.save(tmp_path / "ink.png")
    rgb = np.asarray(read_photo(tmp_path / "ink.png"))
    assert rgb.shape == (10, 20, 3) and rgb[4, 3].tolist() == [0, 0, 0] and rgb[0, 0].tolist() == [255, 255, 255]
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    Image.new("RGB", (40, 20), (10, 200, 10)).save(tmp_path / "phone.jpg", exif=exif)
    assert read_photo(tmp_path / "phone.jpg").size == (20, 40)


# --- checkpoints only from the runs folder -------------------------------------------------------------------------
def test_checkpoint_choices_never_leave_the_runs_folder(tmp_path):
    runs = tmp_path / "runs"
    for lab, name in [("digits", "fc"), ("keypoints", "net")]:
        run_dir = runs / lab / name
        (run_dir / "checkpoints").mkdir(parents=True)
        (run_dir / "checkpoints" / "best.ckpt").write_bytes(b"x")
        Run(run_dir, lab, name, "test/acc").start()
    (tmp_path / "outside.ckpt").write_bytes(b"x")
    (runs / "digits" / "fc" / "checkpoints" / "escape.ckpt").symlink_to(tmp_path / "outside.ckpt")
    (runs / "loop").symlink_to(runs, target_is_directory=True)  # a link loop is not walked
    assert resolve_checkpoint(runs, "digits/fc/checkpoints/best.ckpt", "digits").name == "best.ckpt"
    for choice, message in [
        ("../outside.ckpt", "outside the runs folder"),
        (str(tmp_path / "outside.ckpt"), "outside the runs folder"),
        ("digits/fc/checkpoints/escape.ckpt", "outside the runs folder"),
        ("digits/fc/results.json", "not a checkpoint file"),
        ("keypoints/net/checkpoints/best.ckpt", "is a keypoints checkpoint; the Digits tab"),
        ("digits/fc/checkpoints/missing.ckpt", "not a checkpoint file"),
    ]:
        with pytest.raises(AppError, match=message):
            resolve_checkpoint(runs, choice, "digits")
    with pytest.raises(AppError, match="is an RL checkpoint"):
        (runs / "digits" / "fc" / "checkpoints" / "last.pt").write_bytes(b"x")
        resolve_checkpoint(Path(runs), "digits/fc/checkpoints/last.pt", "digits")
    with pytest.raises(AppError, match=r"i2dl keypoints fit -c configs/keypoints/keypointnet.yaml` \(19 min"):
        resolve_checkpoint(tmp_path / "empty", None, "keypoints")
    assert [run.rel for run in find_runs(runs)] == ["keypoints/net", "digits/fc"]


def test_old_run_folders_are_listed_as_well_as_they_can_be(tmp_path):
    old = tmp_path / "runs" / "segmentation" / "old"
    (old / "checkpoints").mkdir(parents=True)
    (old / "checkpoints" / "last.ckpt").write_bytes(b"x")
    (old / "results.json").write_text(json.dumps({"metrics": {"test/miou": 0.6}, "wall_time": 120}))
    bare = tmp_path / "runs" / "keypoints" / "bare"
    (bare / "checkpoints").mkdir(parents=True)
    (bare / "checkpoints" / "best.ckpt").write_bytes(b"x")
    runs = {run.rel: run for run in find_runs(tmp_path / "runs")}
    assert (
        runs["segmentation/old"].lab,
        runs["segmentation/old"].status,
        runs["segmentation/old"].metric,
        runs["segmentation/old"].value,
        runs["segmentation/old"].wall_time,
    ) == ("segmentation", "old results.json", "test/miou", 0.6, 120.0)
    assert runs["segmentation/old"].checkpoint.name == "last.ckpt"
    assert (runs["keypoints/bare"].lab, runs["keypoints/bare"].status) == ("keypoints", "no results.json")
