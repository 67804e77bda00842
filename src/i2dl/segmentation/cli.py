"""`i2dl segmentation fit|validate|test` (LightningCLI), `predict` (colour mask + overlay PNGs) and `export` (ONNX)."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from i2dl.cli import dispatch
from i2dl.export import export_onnx
from i2dl.files import write_with
from i2dl.segmentation.data import SegmentationDataModule
from i2dl.segmentation.datasets import read_rgb
from i2dl.segmentation.module import SegmentationModule
from i2dl.segmentation.viz import SegmentationFigures, colourise, overlay
from i2dl.training import LabCLI, load_module

HELP = """usage: i2dl segmentation {fit,validate,test,predict,export} ...

  fit|validate|test   LightningCLI, e.g. i2dl segmentation fit -c configs/segmentation/unet_mobilenet_v2_msrc.yaml
                      (add --ckpt_path last to resume a stopped run)
  predict             i2dl segmentation predict --ckpt_path runs/segmentation/<run>/checkpoints/best.ckpt photo.jpg
  export              i2dl segmentation export --ckpt_path ... --output model.onnx
"""


class SegmentationCLI(LabCLI):
    """LabCLI whose model learns the dataset (classes, colours) from `--data.dataset`, and its class weights from
    the training split's pixel counts before `fit`."""

    def add_arguments_to_parser(self, parser) -> None:
        super().add_arguments_to_parser(parser)
        parser.link_arguments("data.dataset", "model.dataset")

    def before_fit(self) -> None:
        super().before_fit()
        if self.model.hparams.class_weighting != "none" and self.config[self.subcommand].get("ckpt_path") is None:
            self.model.set_class_weights(self.datamodule.class_pixel_counts())  # a resumed run has them saved


def figures(cli: LabCLI) -> list:
    hp, info = cli.model.hparams, cli.model.info
    title = f"{hp.approach} {hp.arch if hp.approach == 'torchvision' else hp.backbone}"
    return [SegmentationFigures(cli.run_dir(), info.name, info.classes, info.palette, title)]


def predict(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(
        prog="i2dl segmentation predict",
        description="Segment image files; writes <name>_mask.png (class colours) and "
        "<name>_overlay.png (mask over the photo).",
    )
    parser.add_argument("--ckpt_path", required=True, help="a checkpoint written by `i2dl segmentation fit`")
    parser.add_argument("--output_dir", default=None, help="default: <run folder>/predictions")
    parser.add_argument(
        "--tta",
        choices=["none", "flip"],
        default=None,
        help="test-time augmentation (default: the checkpoint's setting); flip: also segment the "
        "mirror image and average (about twice the time)",
    )
    parser.add_argument("images", nargs="+", help="image files (PNG, JPEG, WebP, BMP, ...)")
    args = parser.parse_args(argv)
    module = load_module(SegmentationModule, args.ckpt_path)
    if args.tta is not None:
        module.hparams.tta = args.tta
    output_dir = Path(args.output_dir or Path(args.ckpt_path).parent.parent / "predictions")
    output_dir.mkdir(parents=True, exist_ok=True)
    names, palette = module.class_names, module.info.palette
    for path in args.images:
        image = read_rgb(Path(path))
        x = torch.from_numpy(image.copy()).permute(2, 0, 1).float().div(255).unsqueeze(0)
        with torch.no_grad():
            pred = module.predict_logits(x).argmax(1)[0].numpy()
        colour = colourise(pred, palette)
        stem = Path(path).stem
        write_with(output_dir / f"{stem}_mask.png", lambda tmp: Image.fromarray(colour).save(tmp, format="PNG"))
        write_with(
            output_dir / f"{stem}_overlay.png",
            lambda tmp: Image.fromarray(overlay(image, colour)).save(tmp, format="PNG"),
        )
        ids, counts = np.unique(pred, return_counts=True)
        top = ", ".join(f"{names[i]} {c / pred.size:.0%}" for i, c in sorted(zip(ids, counts), key=lambda t: -t[1])[:5])
        print(f"{path}: {top}  -> {output_dir / (stem + '_mask.png')}, {output_dir / (stem + '_overlay.png')}")


def export(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="i2dl segmentation export", description="Export a checkpoint to ONNX.")
    parser.add_argument("--ckpt_path", required=True)
    parser.add_argument("--output", default=None, help="default: <checkpoint folder>/../model.onnx")
    parser.add_argument("--height", type=int, default=224, help="input height the ONNX model is traced for")
    parser.add_argument("--width", type=int, default=224, help="input width the ONNX model is traced for")
    args = parser.parse_args(argv)
    module = load_module(SegmentationModule, args.ckpt_path)
    output = Path(args.output or Path(args.ckpt_path).parent.parent / "model.onnx")
    example = torch.rand(2, 3, args.height, args.width)
    diff = export_onnx(module.model, example, output, output_name="logits", max_diff=1e-3)
    print(
        f"wrote {output} (input: float32 (batch, 3, {args.height}, {args.width}) RGB in [0, 1]; output: logits "
        f"(batch, {module.info.num_classes}, {args.height}, {args.width}); onnxruntime vs PyTorch max |diff| "
        f"{diff:.2e})"
    )


def main(argv: list[str]) -> None:
    dispatch(
        argv,
        HELP,
        {"predict": predict, "export": export},
        lambda args: SegmentationCLI(
            "segmentation",
            SegmentationModule,
            SegmentationDataModule,
            monitor="val/miou",
            mode="max",
            headline="test/miou",
            figures=figures,
            args=args,
            checkpoint_every_n_steps=50,
        ),
    )
