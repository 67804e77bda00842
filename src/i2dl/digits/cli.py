"""`i2dl digits fit|validate|test` (LightningCLI), `predict` (image files) and `export` (ONNX)."""

from __future__ import annotations

import argparse

import torch

from i2dl.cli import dispatch
from i2dl.digits.data import DigitsDataModule
from i2dl.digits.module import DigitClassifier
from i2dl.digits.predict import load_image_gray, to_mnist_format
from i2dl.export import export_command
from i2dl.training import ClassificationFigures, LabCLI, load_module

HELP = """usage: i2dl digits {fit,validate,test,predict,export} ...

  fit|validate|test   LightningCLI, e.g. i2dl digits fit -c configs/digits/cnn.yaml --trainer.max_epochs 3
  predict             i2dl digits predict --ckpt_path runs/digits/cnn/checkpoints/best.ckpt photo.jpg ...
  export              i2dl digits export --ckpt_path ... --output model.onnx
"""


def predict(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(
        prog="i2dl digits predict", description="Classify image files of hand-written digits (any size or colour)."
    )
    parser.add_argument("--ckpt_path", required=True, help="a checkpoint written by `i2dl digits fit`")
    parser.add_argument("images", nargs="+", help="image files (PNG, JPEG, ...)")
    args = parser.parse_args(argv)
    module = load_module(DigitClassifier, args.ckpt_path)
    names = module.extra_checkpoint.get("class_names") or module.class_names
    batch = torch.stack([to_mnist_format(load_image_gray(p)) for p in args.images])
    with torch.no_grad():
        probs = module(batch).softmax(-1)
    for path, p in zip(args.images, probs):
        top = int(p.argmax())
        ranked = ", ".join(f"{names[i]}: {float(p[i]):.3f}" for i in p.argsort(descending=True)[:3].tolist())
        print(f"{path}: {names[top]} ({float(p[top]):.1%})   top-3 {ranked}")
        print("  probabilities: " + " ".join(f"{float(v):.4f}" for v in p))


def export(argv: list[str]) -> None:
    export_command(
        argv, "digits", DigitClassifier, (1, 28, 28), "input: float32 (batch, 1, 28, 28) in [0, 1]", max_diff=1e-4
    )


class DigitsCLI(LabCLI):
    """LabCLI whose model names its classes after `--data.dataset`."""

    def add_arguments_to_parser(self, parser) -> None:
        super().add_arguments_to_parser(parser)
        parser.link_arguments("data.dataset", "model.dataset")


def figures(cli: LabCLI) -> list:
    return [ClassificationFigures(cli.run_dir(), cli.datamodule.classes, title=cli.model.hparams.arch)]


def main(argv: list[str]) -> None:
    dispatch(
        argv,
        HELP,
        {"predict": predict, "export": export},
        lambda args: DigitsCLI(
            "digits",
            DigitClassifier,
            DigitsDataModule,
            monitor="val/acc",
            mode="max",
            headline="test/acc",
            figures=figures,
            args=args,
        ),
    )
