"""Shared test fixtures: the real data in ../shared/data, a private runs folder, the CLI as a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("I2DL_DATA") or REPO.parent / "shared" / "data")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The read-only real datasets (MNIST, faces, MSRC-v2, CamVid, MobileNetV2 weights)."""
    if not (SHARED_DATA / "mnist").is_dir():
        pytest.fail(f"real data not found at {SHARED_DATA}: set I2DL_DATA to the shared data folder")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _isolated_runs(tmp_path, monkeypatch):
    """Each test writes its run folders under its own tmp dir, never into the repo."""
    monkeypatch.setenv("I2DL_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("I2DL_DATA", str(SHARED_DATA))
    monkeypatch.setattr("i2dl.training.RUNS_ROOT", tmp_path / "runs", raising=False)


def run_cli(
    *args: str, env: dict | None = None, timeout: float = 600, cwd: Path | None = None
) -> subprocess.CompletedProcess:
    """Run `python -m i2dl ...` as a user would; returns the finished process (output captured as text)."""
    full_env = {**os.environ, "I2DL_DATA": str(SHARED_DATA), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "i2dl", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
        cwd=cwd or REPO,
    )


def run_main(*args: str) -> tuple[int, str, str]:
    """Run `i2dl ...` in this process (no interpreter start-up); returns (exit status, stdout, stderr)."""
    import contextlib
    import io

    from i2dl.cli import main

    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(list(args))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return code, out.getvalue(), err.getvalue()


def execute_notebook(name: str, monkeypatch, cwd: Path = REPO):
    """Run notebooks/<name>.ipynb top to bottom with its tiny settings (I2DL_NOTEBOOK_SMOKE=1) in a fresh kernel
    working in `cwd`, after checking it is committed without outputs. Returns the executed notebook and the text
    its code cells printed."""
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("I2DL_NOTEBOOK_SMOKE", "1")
    nb = nbformat.read(REPO / "notebooks" / f"{name}.ipynb", as_version=4)
    assert all(not cell.get("outputs") for cell in nb.cells if cell.cell_type == "code"), (
        f"{name}.ipynb is committed with outputs"
    )
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}).execute()
    text = "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    return nb, text
