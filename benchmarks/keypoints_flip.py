"""Is a horizontal flip label-consistent on this data? Measures the data's mirror constant C in x -> C - x.

torchvision mirrors keypoints as x -> W - 1 - x (C = 95 for 96x96 faces), which is right when the labels are
mirror-consistent with the pixels. To measure C, train a model WITHOUT flips, e.g.

    OMP_NUM_THREADS=1 I2DL_DATA=../shared/data python -m i2dl keypoints fit -c configs/keypoints/keypointnet.yaml \
        --data.hflip false --run_dir runs/keypoints/noflip
    OMP_NUM_THREADS=1 I2DL_DATA=../shared/data python benchmarks/keypoints_flip.py \
        runs/keypoints/noflip/checkpoints/best.ckpt

then, on the validation split (never the test split), predict every face and its mirror image. On the mirror, the
subject's keypoint k sits at C - x_k; mapping the predictions back (relabelled left <-> right) and subtracting the
model's own x bias on unflipped faces gives C per keypoint. `--data.hflip_offset` is then mean(C) - (W - 1).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from i2dl.keypoints.data import FLIP_PERMUTATION, IMAGE_SIZE, FacialKeypointsDataModule
from i2dl.keypoints.kaggle_csv import KEYPOINT_NAMES
from i2dl.keypoints.module import FacialKeypointsRegressor
from i2dl.keypoints.predict import predict_pixels
from i2dl.training import load_module


@torch.no_grad()
def mirror_constants(model: torch.nn.Module, images: torch.Tensor, keypoints: torch.Tensor) -> torch.Tensor:
    """Per keypoint, the C in x -> C - x that maps its labels on `images` (N, 1, H, W) to their mirror images."""
    pred = predict_pixels(model, images)
    on_mirror = predict_pixels(model, torch.flip(images, dims=[-1]))[..., list(FLIP_PERMUTATION), :]
    bias = (pred - keypoints)[..., 0].mean(0)  # the model's own x error on unflipped faces, per keypoint
    # on_mirror[:, k] estimates C - x_k + bias of keypoint perm(k) (it was predicted as that keypoint)
    return (on_mirror[..., 0] + keypoints[..., 0]).mean(0) - bias[list(FLIP_PERMUTATION)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="a keypoints checkpoint trained with --data.hflip false")
    parser.add_argument("--data_dir", default=None)
    args = parser.parse_args()
    model = load_module(FacialKeypointsRegressor, args.checkpoint).eval()
    data = FacialKeypointsDataModule(data_dir=args.data_dir)
    data.setup("fit")
    faces = data.val
    images = faces.images.unsqueeze(1).float() / 255
    constants = mirror_constants(model, images, faces.keypoints.float())
    for name, c in zip(KEYPOINT_NAMES, constants.tolist()):
        print(f"{name:28s} C = {c:6.2f}")
    mean = constants.mean().item()
    print(
        f"mean C = {mean:.2f} over {len(faces)} validation faces; torchvision's mirror is {IMAGE_SIZE - 1}: "
        f"--data.hflip_offset {mean - (IMAGE_SIZE - 1):.1f}"
    )


if __name__ == "__main__":
    main()
