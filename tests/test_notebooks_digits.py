"""The digits notebook runs top to bottom with tiny settings."""

from __future__ import annotations

from conftest import execute_notebook


def test_digits_notebook_executes(tmp_path, monkeypatch, shared_data):
    _, outputs = execute_notebook("digits", monkeypatch, cwd=tmp_path)
    assert "test accuracy:" in outputs and "predicted:" in outputs
    accuracy = float(outputs.split("test accuracy: ")[1].split("%")[0])
    assert accuracy > 50  # one epoch on 2,000 images is far above chance (10%)
    assert (tmp_path / "runs" / "notebook-digits" / "figures" / "confusion_matrix.png").is_file()
