"""Facial keypoints: the Kaggle CSV reader, its errors, the flip that swaps left and right, the augmentation,
the data module and the metrics -- on small real slices of ../shared/data and small generated corrupt files."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
import torch
from conftest import run_cli
from torchvision import tv_tensors

from i2dl.errors import DataError
from i2dl.keypoints.data import (
    FLIP_PERMUTATION,
    FacialKeypointsDataModule,
    HorizontalFlipKeypoints,
    KeypointAugment,
    flip_keypoints_left_right,
    to_normalised,
)
from i2dl.keypoints.kaggle_csv import (
    KEYPOINT_NAMES,
    read_id_lookup_table,
    read_keypoints_csv,
    read_test_csv,
    split_path,
)
from i2dl.keypoints.module import KeypointErrors, masked_mse


def real_lines(shared_data: Path, split: str, n: int) -> list[str]:
    """The header and the first `n` faces of a real split, as text lines."""
    with gzip.open(shared_data / "facial_keypoints" / f"{split}.csv.gz", "rt", newline="") as fh:
        return [next(fh) for _ in range(n + 1)]


@pytest.fixture(scope="module")
def lines(shared_data) -> list[str]:
    return real_lines(shared_data, "training", 12)


def write(path: Path, lines: list[str]) -> Path:
    if path.name.endswith(".gz"):
        with gzip.open(path, "wt", newline="") as fh:
            fh.writelines(lines)
    else:
        path.write_text("".join(lines), newline="")
    return path


def test_reads_real_faces_from_csv_and_csv_gz(tmp_path, lines):
    plain = read_keypoints_csv(write(tmp_path / "training.csv", lines))
    zipped = read_keypoints_csv(write(tmp_path / "training.csv.gz", lines))
    assert plain.images.shape == (12, 96, 96) and plain.images.dtype == torch.uint8
    assert plain.keypoints.shape == (12, 15, 2) and plain.visible.all()
    assert torch.equal(plain.images, zipped.images) and torch.equal(plain.keypoints, zipped.keypoints)
    first = [float(v) for v in lines[1].split(",")[:30]]
    assert plain.keypoints[0].flatten().tolist() == pytest.approx(first, abs=1e-4)
    assert plain.images[0, 0, :3].tolist() == [int(v) for v in lines[1].split(",")[30].split()[:3]]
    assert plain.lines[:2].tolist() == [2, 3]


def test_missing_keypoints_are_dropped_or_masked(tmp_path, lines):
    fields = lines[2].split(",")
    fields[0] = fields[1] = ""  # left_eye_center missing in the second face
    fields[28] = ""  # mouth_center_bottom_lip_x missing (its y is there): the point is missing
    rows = [lines[0], lines[1], ",".join(fields), lines[3]]
    path = write(tmp_path / "kaggle.csv", rows)
    dropped = read_keypoints_csv(path, missing="drop")
    assert len(dropped) == 2 and dropped.lines.tolist() == [2, 4]
    masked = read_keypoints_csv(path, missing="mask")
    assert len(masked) == 3
    assert masked.visible[1].tolist() == [False] + [True] * 13 + [False]
    assert masked.keypoints[1, 0].tolist() == [0.0, 0.0] and masked.keypoints[1, 14].tolist() == [0.0, 0.0]
    targets = torch.cat([to_normalised(masked.keypoints), masked.visible.unsqueeze(-1).float()], -1)
    pred = targets[..., :2].clone().flatten(1)
    pred.view(-1, 15, 2)[1, 0] = 5.0  # a wild guess where the truth is missing costs nothing
    assert float(masked_mse(pred, targets)) == 0.0


@pytest.mark.parametrize(
    "corrupt, message",
    [
        (lambda f: f[:30] + [" ".join(f[30].split()[:-1])], "line 3: Image has 9215 pixel values, expected 9216"),
        (lambda f: f[:30] + [f[30].replace(" ", " x7 ", 1)], "line 3: Image has 9217 pixel values"),
        (lambda f: f[:30] + [" ".join(["x7"] + f[30].split()[1:])], "line 3: Image holds a non-numeric value 'x7'"),
        (lambda f: ["abc"] + f[1:], "line 3: left_eye_center_x is not a number: 'abc'"),
        (lambda f: f[:29] + [f[30]], "line 3: 30 fields, the header has 31"),
        (lambda f: f[:30] + [f[30].replace("1", "300", 1)], "line 3: Image values must lie in 0..255"),
    ],
)
def test_corrupt_rows_are_one_line_errors_naming_file_and_line(tmp_path, lines, corrupt, message):
    fields = lines[2].rstrip("\n").split(",")
    bad = ",".join(corrupt(fields)) + "\n"
    path = write(tmp_path / "bad.csv.gz", [lines[0], lines[1], bad])
    with pytest.raises(DataError) as err:
        read_keypoints_csv(path)
    assert str(err.value).startswith(f"{path}, {message}")
    assert "\n" not in str(err.value)


def test_missing_column_and_unreadable_files(tmp_path, lines):
    header = lines[0].replace("nose_tip_y", "nose_y")
    path = write(tmp_path / "renamed.csv", [header, lines[1]])
    with pytest.raises(DataError, match=r"renamed.csv, line 1: missing column 'nose_tip_y'"):
        read_keypoints_csv(path)
    (tmp_path / "broken.csv.gz").write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match=r"broken.csv.gz: not a readable CSV file"):
        read_keypoints_csv(tmp_path / "broken.csv.gz")
    with pytest.raises(DataError, match=r"nowhere.csv: no such file"):
        read_keypoints_csv(tmp_path / "nowhere.csv")
    with pytest.raises(DataError, match=r"no training.csv or training.csv.gz"):
        split_path(tmp_path, "train")


def test_kaggle_test_file_and_lookup_table(tmp_path, lines):
    pixels = [line.rstrip("\n").split(",")[30] for line in lines[1:4]]
    path = write(tmp_path / "test.csv", ["ImageId,Image\n"] + [f"{i + 1},{p}\n" for i, p in enumerate(pixels)])
    ids, images = read_test_csv(path)
    assert ids == [1, 2, 3] and images.shape == (3, 96, 96)
    table = write(
        tmp_path / "IdLookupTable.csv",
        ["RowId,ImageId,FeatureName,Location\n", "1,1,left_eye_center_x,\n", "2,3,nose_tip_y,\n"],
    )
    assert read_id_lookup_table(table) == [(1, 1, "left_eye_center_x"), (2, 3, "nose_tip_y")]
    write(table, ["RowId,ImageId,FeatureName,Location\n", "1,1,left_ear_x,\n"])
    with pytest.raises(DataError, match=r"IdLookupTable.csv, line 2: unknown FeatureName 'left_ear_x'"):
        read_id_lookup_table(table)


def test_flip_permutation_swaps_exactly_the_left_right_pairs():
    pairs = {KEYPOINT_NAMES[k]: KEYPOINT_NAMES[j] for k, j in enumerate(FLIP_PERMUTATION)}
    assert pairs == {
        "left_eye_center": "right_eye_center",
        "right_eye_center": "left_eye_center",
        "left_eye_inner_corner": "right_eye_inner_corner",
        "right_eye_inner_corner": "left_eye_inner_corner",
        "left_eye_outer_corner": "right_eye_outer_corner",
        "right_eye_outer_corner": "left_eye_outer_corner",
        "left_eyebrow_inner_end": "right_eyebrow_inner_end",
        "right_eyebrow_inner_end": "left_eyebrow_inner_end",
        "left_eyebrow_outer_end": "right_eyebrow_outer_end",
        "right_eyebrow_outer_end": "left_eyebrow_outer_end",
        "mouth_left_corner": "mouth_right_corner",
        "mouth_right_corner": "mouth_left_corner",
        "nose_tip": "nose_tip",
        "mouth_center_top_lip": "mouth_center_top_lip",
        "mouth_center_bottom_lip": "mouth_center_bottom_lip",
    }


def test_flip_on_real_faces_keeps_the_subjects_left_on_the_image_right(tmp_path, lines):
    faces = read_keypoints_csv(write(tmp_path / "t.csv", lines))
    x = lambda pts, name: pts[:, KEYPOINT_NAMES.index(name), 0]  # noqa: E731
    # in the data, the subject's left eye/mouth corner lies on the image's right (larger x)
    assert (x(faces.keypoints, "left_eye_center") > x(faces.keypoints, "right_eye_center")).all()
    flipped = flip_keypoints_left_right(faces.keypoints)
    for left, right in [
        ("left_eye_center", "right_eye_center"),
        ("left_eye_outer_corner", "right_eye_outer_corner"),
        ("left_eyebrow_outer_end", "right_eyebrow_outer_end"),
        ("mouth_left_corner", "mouth_right_corner"),
    ]:
        assert (x(flipped, left) > x(flipped, right)).all()
        k, j = KEYPOINT_NAMES.index(left), KEYPOINT_NAMES.index(right)
        # the new left eye is the old right eye, mirrored (x -> 95 - x, y unchanged)
        assert torch.allclose(flipped[:, k], torch.stack([95 - faces.keypoints[:, j, 0], faces.keypoints[:, j, 1]], -1))
    nose = KEYPOINT_NAMES.index("nose_tip")
    assert torch.allclose(flipped[:, nose, 0], 95 - faces.keypoints[:, nose, 0])
    # the v2 transform does the same to a tv_tensors sample, and mirrors the image
    image = tv_tensors.Image(faces.images[:1].float())
    points = tv_tensors.KeyPoints(faces.keypoints[0], canvas_size=(96, 96))
    out_image, out_points = HorizontalFlipKeypoints(p=1.0)(image, points)
    assert isinstance(out_points, tv_tensors.KeyPoints)
    assert torch.equal(out_image, image.flip(-1)) and torch.allclose(out_points, flipped[0])
    # a calibrated mirror x -> 95 + offset - x (labels that sit off-centre) moves x only, by the offset
    _, shifted = HorizontalFlipKeypoints(p=1.0, offset=2.3)(image, points)
    assert torch.allclose(shifted[:, 0], flipped[0, :, 0] + 2.3) and torch.equal(shifted[:, 1], out_points[:, 1])


def test_augmentation_moves_keypoints_with_the_image():
    """A bright dot at each keypoint ends up where the augmented keypoint says (rotation, scale, shift, flip)."""
    augment = KeypointAugment(hflip=True, max_rotation=25, max_scale=0.15, max_shift=0.08, brightness=0, contrast=0)
    points = torch.tensor([[30.0, 40.0], [60.0, 35.0], [48.0, 70.0]]).repeat(5, 1)[:15].repeat(8, 1, 1)
    ys, xs = torch.meshgrid(torch.arange(96.0), torch.arange(96.0), indexing="ij")
    for k in range(3):
        images = torch.zeros(8, 1, 96, 96)
        images[:, 0, int(points[0, k, 1]), int(points[0, k, 0])] = 1.0
        visible = torch.zeros(8, 15, dtype=torch.bool)
        visible[:, k] = True
        out, moved, seen = augment(images, points, visible, torch.Generator().manual_seed(k))
        assert seen.sum(1).tolist() == [1] * 8  # still one keypoint each (maybe relabelled by a flip)
        for b in range(8):
            w = out[b, 0]
            centre = torch.stack([(w * xs).sum() / w.sum(), (w * ys).sum() / w.sum()])
            assert torch.allclose(moved[b][seen[b]][0], centre, atol=0.5), (k, b)
    again = augment(images, points, visible, torch.Generator().manual_seed(2))
    assert torch.equal(again[0], out) and torch.equal(again[1], moved)


def test_data_module_batches_and_held_out_validation(tmp_path, shared_data):
    folder = tmp_path / "facial_keypoints"
    folder.mkdir()
    write(folder / "training.csv", real_lines(shared_data, "training", 40))
    dm = FacialKeypointsDataModule(data_dir=str(tmp_path), batch_size=16, val_size=8)
    dm.setup("fit")  # no val.csv: 8 faces are held out of training.csv
    assert len(dm.train) == 32 and len(dm.val) == 8
    assert not set(dm.train.lines.tolist()) & set(dm.val.lines.tolist())
    x, targets = next(iter(dm.train_dataloader()))
    assert x.shape == (16, 1, 96, 96) and 0 <= float(x.min()) and float(x.max()) <= 1
    assert targets.shape == (16, 15, 3) and targets[..., 2].eq(1).all()
    assert targets[..., :2].abs().max() < 1.0
    x, targets = next(iter(dm.val_dataloader()))
    assert torch.allclose(targets[..., :2], (dm.val.keypoints - 48) / 48)


def test_metrics_score_rmse_and_per_keypoint_errors():
    targets = torch.zeros(4, 15, 3)
    targets[..., 2] = 1
    pred = torch.full((4, 30), 1 / 48)  # every coordinate 1 pixel off
    pred.view(4, 15, 2)[:, 3] = 3 / 48  # keypoint 3: 3 pixels off in x and y
    metric = KeypointErrors()
    metric.update(pred[:2], targets[:2])
    metric.update(pred[2:], targets[2:])
    values = metric.compute()
    mse_px = (14 * 2 * 1 + 2 * 9) / 30
    assert float(values["rmse_px"]) == pytest.approx(mse_px**0.5, rel=1e-5)
    assert float(values["score"]) == pytest.approx(1 / (2 * mse_px / 48**2), rel=1e-5)
    per = values["rmse_px_per_keypoint"]
    assert per[3] == pytest.approx(3.0) and per[0] == pytest.approx(1.0)


def test_bad_data_through_the_cli_is_exit_2_with_one_line(tmp_path, shared_data):
    """As a user runs it: a subprocess, so the exit status and stderr are the real ones."""
    folder = tmp_path / "facial_keypoints"
    folder.mkdir()
    lines = real_lines(shared_data, "training", 3)
    bad = lines[3].replace(",", ";", 1)
    write(folder / "training.csv", lines[:3] + [bad])
    proc = run_cli("keypoints", "validate", "--data.data_dir", str(tmp_path), "--trainer.enable_progress_bar", "false")
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("i2dl: error: ") and f"{folder / 'training.csv'}, line 4:" in last
    assert "Traceback" not in proc.stderr


def test_test_time_flip_maps_the_mirror_prediction_back():
    """With the data's mirror constants, a network that is exactly mirror-consistent gives the same keypoints
    with and without the test-time flip; the averaging is (plain + mirrored back) / 2."""
    from i2dl.keypoints.data import FLIP_PERMUTATION, to_normalised
    from i2dl.keypoints.module import FacialKeypointsRegressor

    torch.manual_seed(0)
    module = FacialKeypointsRegressor(width=4, channels_last=False, tta_mirror=[95.0] * 15).eval()
    x = torch.rand(3, 1, 96, 96)
    with torch.no_grad():
        plain = module(x).view(-1, 15, 2)
        mirror = module(x.flip(-1)).view(-1, 15, 2)[:, list(FLIP_PERMUTATION)]
        back = torch.stack([to_normalised(95.0 - (mirror[..., 0] * 48 + 48)), mirror[..., 1]], -1)
        assert torch.allclose(module.predict_normalised(x).view(-1, 15, 2), (plain + back) / 2, atol=1e-5)
    with pytest.raises(ValueError, match="15 mirror constants"):
        FacialKeypointsRegressor(tta_mirror=[95.0] * 3)
