"""ONNX export with a numerical check against PyTorch in onnxruntime; files written atomically; the labs'
`export` command."""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from i2dl.errors import I2DLError
from i2dl.files import atomic_path


def export_onnx(
    model: nn.Module,
    example: torch.Tensor,
    path: str | Path,
    input_name: str = "input",
    output_name: str = "output",
    max_diff: float = 1e-3,
) -> float:
    """Export `model` (eval mode) with a dynamic batch dimension to `path` and return onnxruntime's largest absolute
    difference from PyTorch on `example`. The file is checked before it replaces `path`: an export that disagrees by
    more than `max_diff` (or gives NaN) is an I2DLError and leaves an existing file at `path` untouched."""
    path = Path(path)
    model = model.eval().cpu()
    with atomic_path(path) as tmp:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model,
                (example,),
                tmp,
                input_names=[input_name],
                output_names=[output_name],
                dynamic_axes={input_name: {0: "batch"}, output_name: {0: "batch"}},
                opset_version=17,
                dynamo=False,
            )
        diff = onnx_max_abs_diff(tmp, model, example)
        if not diff <= max_diff:
            raise I2DLError(
                f"{path}: onnxruntime's outputs differ from PyTorch's by {diff:.2e} (more than "
                f"{max_diff:g}); the export is wrong and was not written"
            )
    return diff


def onnx_max_abs_diff(path: str | Path, model: nn.Module, example: torch.Tensor) -> float:
    """Largest absolute difference between onnxruntime's and PyTorch's outputs on `example`."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (onnx_out,) = session.run(None, {session.get_inputs()[0].name: example.numpy()})
    with torch.no_grad():
        torch_out = model.eval().cpu()(example).numpy()
    return float(np.abs(onnx_out - torch_out).max())


def export_command(
    argv: list[str], lab: str, module_class: type, input_shape: tuple[int, ...], signature: str, max_diff: float = 1e-3
) -> None:
    """`i2dl <lab> export --ckpt_path ... [--output ...]`: a checkpoint's network to ONNX (a batch of 4 random
    `input_shape` inputs traced), checked in onnxruntime (a larger difference than `max_diff` is an I2DLError).
    `signature` describes the inputs and outputs in the line printed."""
    from i2dl.training import load_module

    parser = argparse.ArgumentParser(prog=f"i2dl {lab} export", description="Export a checkpoint to ONNX.")
    parser.add_argument("--ckpt_path", required=True)
    parser.add_argument("--output", default=None, help="default: <checkpoint folder>/../model.onnx")
    args = parser.parse_args(argv)
    module = load_module(module_class, args.ckpt_path)
    output = Path(args.output or Path(args.ckpt_path).parent.parent / "model.onnx")
    example = torch.rand(4, *input_shape)
    diff = export_onnx(module.model, example, output, max_diff=max_diff)
    print(f"wrote {output} ({signature}; onnxruntime vs PyTorch max |diff| {diff:.2e})")
