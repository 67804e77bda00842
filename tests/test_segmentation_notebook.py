"""notebooks/segmentation.ipynb runs top to bottom with tiny settings and draws its figures."""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbclient import NotebookClient

REPO = Path(__file__).resolve().parents[1]


def test_segmentation_notebook_runs(shared_data, tmp_path, monkeypatch):
    monkeypatch.setenv("I2DL_NOTEBOOK_SMOKE", "1")
    monkeypatch.setenv("I2DL_DATA", str(shared_data))
    nb = nbformat.read(REPO / "notebooks" / "segmentation.ipynb", as_version=4)
    assert all(not cell.get("outputs") for cell in nb.cells if cell.cell_type == "code")
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(REPO)}}).execute()
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "smoke run: True" in text
    assert "loaded 312/312 tensors from" in text  # the ImageNet MobileNetV2 backbone, every tensor
    assert "new layers: ['classifier.low_classifier.weight'" in text
    assert "'test/acc'" in text and "'test/miou'" in text
    for name in ("test_predictions.png", "per_class_iou.png"):
        assert (tmp_path / "runs" / "segmentation" / "notebook" / "figures" / name).is_file(), name
