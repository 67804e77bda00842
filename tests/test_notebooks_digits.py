"""The digits notebook runs top to bottom with tiny settings."""

from __future__ import annotations

import os

import nbformat
from nbclient import NotebookClient

from conftest import REPO


def test_digits_notebook_executes(tmp_path, monkeypatch, shared_data):
    monkeypatch.setenv("I2DL_NOTEBOOK_SMOKE", "1")
    monkeypatch.setenv("I2DL_DATA", str(shared_data))
    nb = nbformat.read(REPO / "notebooks" / "digits.ipynb", as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = "".join(o.get("text", "") for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs)
    assert "test accuracy:" in outputs and "predicted:" in outputs
    accuracy = float(outputs.split("test accuracy: ")[1].split("%")[0])
    assert accuracy > 50  # one epoch on 2,000 images is far above chance (10%)
    assert (tmp_path / "runs" / "notebook-digits" / "figures" / "confusion_matrix.png").is_file()
