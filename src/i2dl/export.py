"""ONNX export with a numerical check against PyTorch in onnxruntime; files written atomically."""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn


def export_onnx(model: nn.Module, example: torch.Tensor, path: str | Path, input_name: str = "input",
                output_name: str = "output") -> Path:
    """Export `model` (eval mode) with a dynamic batch dimension; returns the written path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval().cpu()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (example,), tmp, input_names=[input_name], output_names=[output_name],
                              dynamic_axes={input_name: {0: "batch"}, output_name: {0: "batch"}},
                              opset_version=17, dynamo=False)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def onnx_max_abs_diff(path: str | Path, model: nn.Module, example: torch.Tensor) -> float:
    """Largest absolute difference between onnxruntime's and PyTorch's outputs on `example`."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (onnx_out,) = session.run(None, {session.get_inputs()[0].name: example.numpy()})
    with torch.no_grad():
        torch_out = model.eval().cpu()(example).numpy()
    return float(np.abs(onnx_out - torch_out).max())
