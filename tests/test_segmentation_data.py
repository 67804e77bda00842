"""MSRC-v2 and CamVid loading, one-line errors for bad input, joint augmentation, padded batches."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import tv_tensors
from torchvision.transforms import v2

from i2dl.cli import main as i2dl_main
from i2dl.errors import DataError
from i2dl.segmentation.datasets import (
    IGNORE_INDEX,
    MSRC_CLASSES,
    MSRC_PALETTE,
    SegmentationDataset,
    class_pixel_counts,
    decode_colour_target,
    load_camvid,
    load_msrc_v2,
    pad_collate,
    train_transform,
)

REPO = Path(__file__).resolve().parents[1]

HORSE = MSRC_CLASSES.index("horse")


def make_msrc(shared: Path, root: Path, splits: dict[str, list[str]]) -> Path:
    """A small MSRC-v2 folder of real photos and targets (copied: tests may then corrupt them)."""
    (root / "images").mkdir(parents=True)
    (root / "targets").mkdir()
    for split, ids in splits.items():
        (root / f"{split}.txt").write_text("\n".join(ids) + "\n")
        for image_id in ids:
            shutil.copy(shared / "msrc_v2" / "images" / f"{image_id}.webp", root / "images")
            shutil.copy(shared / "msrc_v2" / "targets" / f"{image_id}_GT.png", root / "targets")
    return root


def make_camvid(shared: Path, root: Path, per_split: int = 2) -> Path:
    for split in ("train", "val", "test"):
        for folder in (split, f"{split}annot"):
            (root / folder).mkdir(parents=True)
        for image in sorted((shared / "camvid" / split).iterdir())[:per_split]:
            shutil.copy(image, root / split)
            shutil.copy(shared / "camvid" / f"{split}annot" / f"{image.stem}.png", root / f"{split}annot")
    return root


def test_msrc_real_slice_decodes_palette_and_voids_rare_classes(shared_data, tmp_path):
    root = make_msrc(shared_data, tmp_path / "msrc_v2", {"train": ["1_23_s", "10_10_s"]})
    kept = load_msrc_v2(root, "train", void_rare_classes=False)
    voided = load_msrc_v2(root, "train", void_rare_classes=True)
    (image, mask), (_, mask_voided) = kept[0], voided[0]
    target = np.asarray(Image.open(root / "targets" / "1_23_s_GT.png").convert("RGB"))
    assert image.dtype == torch.uint8 and image.shape == (3, *target.shape[:2]) and mask.shape == target.shape[:2]
    horse_pixels = (target == MSRC_PALETTE[HORSE]).all(-1)
    assert horse_pixels.sum() == 11742 == int((mask == HORSE).sum())
    assert (mask_voided[torch.from_numpy(horse_pixels)] == IGNORE_INDEX).all()
    assert int((mask_voided == HORSE).sum()) == 0
    black = (target == 0).all(-1)
    assert (mask[torch.from_numpy(black)] == IGNORE_INDEX).all()
    # every other pixel's class id is the index of its colour in the palette
    grass = (target == MSRC_PALETTE[MSRC_CLASSES.index("grass")]).all(-1)
    assert (mask[torch.from_numpy(grass)] == MSRC_CLASSES.index("grass")).all() and grass.any()
    counts = class_pixel_counts(voided, len(MSRC_CLASSES))
    assert counts[HORSE] == 0 and counts.sum() == int(
        (mask_voided != IGNORE_INDEX).sum() + (voided[1][1] != IGNORE_INDEX).sum()
    )


def test_msrc_accepts_bmp_png_and_webp(shared_data, tmp_path):
    root = make_msrc(shared_data, tmp_path / "msrc_v2", {"train": ["10_10_s"]})
    reference = load_msrc_v2(root, "train")[0]
    for suffix, fmt in ((".bmp", "BMP"), (".png", "PNG")):
        image = root / "images" / "10_10_s.webp"
        if image.exists():
            Image.open(image).save(root / "images" / f"10_10_s{suffix}", fmt)
            image.unlink()
        target = next((root / "targets").glob("10_10_s_GT.*"))
        Image.open(target).convert("RGB").save(root / "targets" / f"10_10_s_GT{suffix}", fmt)
        target.unlink()
        loaded = load_msrc_v2(root, "train")[0]
        assert torch.equal(loaded[1], reference[1])
        if suffix == ".bmp":  # lossless re-encodings of the decoded WebP give the same pixels
            assert torch.equal(loaded[0], reference[0])


def test_decode_unknown_colour_names_file_and_pixel_count():
    rgb = np.zeros((4, 5, 3), dtype=np.uint8)
    rgb[0, :3] = (1, 2, 3)
    with pytest.raises(DataError, match=r"t_GT.png: 3 pixels have colours that are not in the palette.*RGB\(1, 2, 3\)"):
        decode_colour_target(rgb, MSRC_PALETTE, "t_GT.png")


@pytest.mark.parametrize(
    "corruption, message",
    [
        ("no_image", r"train.txt: id '10_10_s' has no image"),
        ("no_target", r"train.txt: id '10_10_s' has no target"),
        ("size", r"10_10_s_GT.png: target is 100x80 but its image 10_10_s.webp is 320x213"),
        ("colour", r"10_10_s_GT.png: 12 pixels have colours that are not in the palette"),
        ("not_image", r"10_10_s.webp: not a readable image"),
    ],
)
def test_msrc_bad_input_is_one_line_error_exit_2(shared_data, tmp_path, capsys, corruption, message):
    root = make_msrc(shared_data, tmp_path / "msrc_v2", {"train": ["10_10_s"], "val": ["10_12_s"], "test": ["10_11_s"]})
    image, target = root / "images" / "10_10_s.webp", root / "targets" / "10_10_s_GT.png"
    if corruption == "no_image":
        image.unlink()
    elif corruption == "no_target":
        target.unlink()
    elif corruption == "size":
        Image.open(target).convert("RGB").resize((100, 80), Image.NEAREST).save(target)
    elif corruption == "colour":
        pixels = np.asarray(Image.open(target).convert("RGB")).copy()
        pixels[:3, :4] = (7, 7, 7)
        Image.fromarray(pixels).save(target)
    elif corruption == "not_image":
        image.write_bytes(b"this is not a picture\n")
    with pytest.raises(DataError, match=message):
        load_msrc_v2(root, "train")
    # the same mistake through the CLI: one line on stderr, exit status 2
    with pytest.raises(SystemExit) as exit_info:
        i2dl_main(
            [
                "segmentation",
                "fit",
                "-c",
                str(REPO / "configs/segmentation/unet_mobilenet_v2_msrc.yaml"),
                "--data.data_dir",
                str(tmp_path),
                "--model.weights_backbone",
                "null",
                "--trainer.max_epochs",
                "1",
                "--trainer.enable_progress_bar",
                "false",
            ]
        )
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("i2dl: error: ") and "Traceback" not in err[0]


def test_camvid_pairs_by_stem_and_ignores_unlabelled(shared_data, tmp_path):
    root = make_camvid(shared_data, tmp_path / "camvid")
    samples = load_camvid(root, "val")
    stems = sorted(p.stem for p in (root / "val").iterdir())
    raw = np.asarray(Image.open(root / "valannot" / f"{stems[0]}.png"))
    image, mask = samples[0]
    assert image.shape == (3, 360, 480) and mask.shape == (360, 480)
    assert (mask.numpy() == np.where(raw == 11, IGNORE_INDEX, raw)).all()
    assert set(np.unique(mask.numpy())) <= set(range(11)) | {IGNORE_INDEX}


def test_camvid_bad_input(shared_data, tmp_path):
    root = make_camvid(shared_data, tmp_path / "camvid")
    label = sorted((root / "trainannot").iterdir())[0]
    pixels = np.asarray(Image.open(label)).copy()
    pixels[0, :5] = 40
    Image.fromarray(pixels).save(label)
    with pytest.raises(DataError, match=rf"{label.name}: 5 pixels hold labels above 11"):
        load_camvid(root, "train")
    label.unlink()
    with pytest.raises(DataError, match=rf"{label.stem}.webp: no label image with stem '{label.stem}'"):
        load_camvid(root, "train")


def test_joint_transform_keeps_mask_labels_and_alignment():
    """Mask values are never interpolated; image and mask receive the same crop and flip."""
    torch.manual_seed(0)
    mask = torch.zeros(96, 128, dtype=torch.uint8)
    mask[:, 40:90] = 3
    mask[30:60, :] = 7
    mask[70:, 100:] = IGNORE_INDEX
    image = (mask.float() * 20).clamp(max=255).to(torch.uint8).expand(3, -1, -1).clone()  # grey level = class * 20
    dataset = SegmentationDataset([(image, mask)], train_transform((48, 64), scale=(0.2, 1.0), color_jitter=0.0))
    for _ in range(20):
        x, y = dataset[0]
        assert x.shape == (3, 48, 64) and x.dtype == torch.float32 and y.shape == (48, 64) and y.dtype == torch.long
        assert set(y.unique().tolist()) <= {0, 3, 7, IGNORE_INDEX}
        for label in (0, 3, 7):
            inside = y == label
            if inside.sum() > 20:  # the image agrees with the mask (bilinear blur only at edges)
                assert (x[0][inside] * 255 - label * 20).abs().median() < 1.0
    # colour jitter changes the image only
    jitter = v2.ColorJitter(brightness=0.5)
    out_image, out_mask = jitter(tv_tensors.Image(image), tv_tensors.Mask(mask))
    assert torch.equal(out_mask, mask)


def test_pad_collate_pads_masks_with_ignore():
    a = (torch.rand(3, 4, 6), torch.ones(4, 6, dtype=torch.long))
    b = (torch.rand(3, 6, 4), torch.full((6, 4), 2, dtype=torch.long))
    images, masks = pad_collate([a, b])
    assert images.shape == (2, 3, 6, 6) and masks.shape == (2, 6, 6)
    assert torch.equal(images[0, :, :4, :6], a[0]) and (images[0, :, 4:] == 0).all()
    assert (masks[0, 4:] == IGNORE_INDEX).all() and (masks[1, :, 4:] == IGNORE_INDEX).all()
    assert (masks[1, :6, :4] == 2).all()


def test_trainval_trains_on_both_splits(shared_data, tmp_path):
    from i2dl.segmentation.data import SegmentationDataModule

    make_msrc(
        shared_data, tmp_path / "msrc_v2", {"train": ["1_23_s", "10_10_s"], "val": ["10_12_s"], "test": ["10_11_s"]}
    )
    only_train = SegmentationDataModule("msrc_v2", data_dir=str(tmp_path), batch_size=1)
    both = SegmentationDataModule("msrc_v2", data_dir=str(tmp_path), batch_size=1, train_on="trainval")
    assert len(only_train.train_dataloader().dataset) == 2 and len(both.train_dataloader().dataset) == 3
    assert both.class_pixel_counts().sum() > only_train.class_pixel_counts().sum()
