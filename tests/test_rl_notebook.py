"""notebooks/rl.ipynb runs end to end with tiny settings (I2DL_NOTEBOOK_SMOKE=1)."""

from __future__ import annotations

from conftest import execute_notebook


def test_rl_notebook_executes(monkeypatch, tmp_path):
    nb, outputs = execute_notebook("rl", monkeypatch)
    assert "smoke settings" in outputs and "greedy evaluation: mean" in outputs
    assert "values of the difference: [" in outputs
    assert "(4, 84, 84) uint8" in outputs
    runs = tmp_path / "runs" / "rl" / "notebook"
    assert (runs / "ppo_cartpole" / "checkpoints" / "last.pt").exists()
    assert (runs / "cartpole.gif").stat().st_size > 1000
    assert any(
        o.get("output_type") == "display_data" and "image/png" in o.get("data", {})
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
    )
