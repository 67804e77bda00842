"""notebooks/keypoints.ipynb runs top to bottom with tiny settings and draws its figures."""

from __future__ import annotations

from conftest import execute_notebook


def test_keypoints_notebook_runs(shared_data, tmp_path, monkeypatch):
    _, text = execute_notebook("keypoints", monkeypatch)
    assert "smoke: True" in text and "train 64 faces, val 385 faces" in text
    assert "val/score" in text and "val/rmse_px" in text
    for name in ("faces.png", "augmented.png", "predictions.png"):
        assert (tmp_path / "runs" / "keypoints" / "notebook" / name).is_file(), name
