"""`i2dl keypoints fit|validate|test` (LightningCLI), `predict` (image files or a Kaggle submission), `export`."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from i2dl.cli import dispatch
from i2dl.export import export_command
from i2dl.keypoints.data import FacialKeypointsDataModule
from i2dl.keypoints.faces import predict_photos
from i2dl.keypoints.figures import KeypointFigures
from i2dl.keypoints.kaggle_csv import IMAGE_SIZE, read_id_lookup_table, read_test_csv
from i2dl.keypoints.module import FacialKeypointsRegressor
from i2dl.keypoints.predict import (
    draw_overlay,
    keypoints_json,
    load_image,
    predict_pixels,
    to_face_input,
    write_json,
    write_submission,
)
from i2dl.training import LabCLI, load_module

HELP = """usage: i2dl keypoints {fit,validate,test,predict,export} ...

  fit|validate|test   LightningCLI, e.g. i2dl keypoints fit -c configs/keypoints/keypointnet.yaml
  predict             i2dl keypoints predict --ckpt_path runs/keypoints/keypointnet/checkpoints/best.ckpt face.jpg ...
                      i2dl keypoints predict --ckpt_path ... --kaggle_test test.csv --id_lookup IdLookupTable.csv
  export              i2dl keypoints export --ckpt_path ... --output model.onnx
"""


def predict(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(
        prog="i2dl keypoints predict",
        description="Find the 15 facial keypoints on image files of any size or colour (written as an overlay PNG "
        "and JSON in the original image's pixels), or write a Kaggle submission from test.csv.",
    )
    parser.add_argument("--ckpt_path", required=True, help="a checkpoint written by `i2dl keypoints fit`")
    parser.add_argument("--output_dir", default="predictions", help="folder for the overlay PNGs and JSON files")
    parser.add_argument("--kaggle_test", default=None, help="Kaggle's test.csv (ImageId,Image)")
    parser.add_argument("--id_lookup", default=None, help="Kaggle's IdLookupTable.csv")
    parser.add_argument("--submission", default=None, help="submission CSV (default: <output_dir>/submission.csv)")
    parser.add_argument(
        "--no_detect",
        action="store_true",
        help="take each image as one ready-made face crop; by default the faces in each photo are "
        "found (OpenCV's Haar cascade) and cropped like the training faces, 15 keypoints each",
    )
    parser.add_argument("images", nargs="*", help="image files (PNG, JPEG, ...): photos with faces, or face crops")
    args = parser.parse_args(argv)
    if not args.images and not args.kaggle_test:
        parser.error("give image files, or --kaggle_test with --id_lookup")
    if bool(args.kaggle_test) != bool(args.id_lookup):
        parser.error("--kaggle_test and --id_lookup go together")
    module = load_module(FacialKeypointsRegressor, args.ckpt_path)
    out_dir = Path(args.output_dir)
    if args.images:
        loaded = [load_image(p) for p in args.images]  # every file checked before any output is written
        if args.no_detect:
            inputs = [to_face_input(img) for img in loaded]
            points96 = predict_pixels(module.predict_normalised, torch.stack([x for x, _ in inputs]))
            for path, image, (_, box), points in zip(args.images, loaded, inputs, points96):
                original = box.to_original(points)
                stem = Path(path).stem
                overlay = draw_overlay(image, original, out_dir / f"{stem}_keypoints.png")
                data = write_json(keypoints_json(path, box, original), out_dir / f"{stem}_keypoints.json")
                x, y = original[0].tolist()
                print(f"{path}: {box.width}x{box.height}, left eye centre at ({x:.1f}, {y:.1f}) -> {overlay}, {data}")
        else:  # whole photos: every face found, cropped and given its keypoints
            for path, faces, overlay, data in predict_photos(module.predict_normalised, args.images, loaded, out_dir):
                print(f"{path}: {faces} face{'s' if faces != 1 else ''} -> {overlay}, {data}")
    if args.kaggle_test:
        ids, images = read_test_csv(args.kaggle_test)
        table = read_id_lookup_table(args.id_lookup)
        points96 = predict_pixels(module.predict_normalised, images.unsqueeze(1).float() / 255.0)
        target = Path(args.submission or out_dir / "submission.csv")
        rows = write_submission(ids, points96, table, target, args.id_lookup)
        print(f"wrote {target}: {rows} rows (RowId,Location) for {len(ids)} test images")


def export(argv: list[str]) -> None:
    export_command(
        argv,
        "keypoints",
        FacialKeypointsRegressor,
        (1, IMAGE_SIZE, IMAGE_SIZE),
        "input: float32 (batch, 1, 96, 96) grey in [0, 1]; output: (batch, 30) keypoints (x, y) in (pixel - 48) / 48",
    )


def main(argv: list[str]) -> None:
    dispatch(
        argv,
        HELP,
        {"predict": predict, "export": export},
        lambda args: LabCLI(
            "keypoints",
            FacialKeypointsRegressor,
            FacialKeypointsDataModule,
            monitor="val/score",
            mode="max",
            headline="test/rmse_px",
            higher_is_better=False,
            figures=lambda cli: [KeypointFigures(cli.run_dir(), cli.model.hparams.arch)],
            args=args,
        ),
    )
