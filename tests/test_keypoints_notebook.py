"""notebooks/keypoints.ipynb runs top to bottom with tiny settings and draws its figures."""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbclient import NotebookClient

REPO = Path(__file__).resolve().parents[1]


def test_keypoints_notebook_runs(shared_data, tmp_path, monkeypatch):
    monkeypatch.setenv("I2DL_NOTEBOOK_SMOKE", "1")
    monkeypatch.setenv("I2DL_DATA", str(shared_data))
    nb = nbformat.read(REPO / "notebooks" / "keypoints.ipynb", as_version=4)
    assert all(not cell.get("outputs") for cell in nb.cells if cell.cell_type == "code")
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(REPO)}}).execute()
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "smoke: True" in text and "train 64 faces, val 385 faces" in text
    assert "val/score" in text and "val/rmse_px" in text
    for name in ("faces.png", "augmented.png", "predictions.png"):
        assert (tmp_path / "runs" / "keypoints" / "notebook" / name).is_file(), name
