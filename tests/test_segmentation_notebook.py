"""notebooks/segmentation.ipynb runs top to bottom with tiny settings and draws its figures."""

from __future__ import annotations

from conftest import execute_notebook


def test_segmentation_notebook_runs(shared_data, tmp_path, monkeypatch):
    _, text = execute_notebook("segmentation", monkeypatch)
    assert "smoke run: True" in text
    assert "loaded 312/312 tensors from" in text  # the ImageNet MobileNetV2 backbone, every tensor
    assert "new layers: ['classifier.low_classifier.weight'" in text
    assert "'test/acc'" in text and "'test/miou'" in text
    for name in ("test_predictions.png", "per_class_iou.png"):
        assert (tmp_path / "runs" / "segmentation" / "notebook" / "figures" / name).is_file(), name
