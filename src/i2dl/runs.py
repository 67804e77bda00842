"""The run folder every lab writes, RL included: its name, a lock that keeps a second process out, and
`results.json` in one schema for every lab; `i2dl runs` lists them.

A run folder (`runs/<lab>/<config name>` or `--run_dir`) holds `results.json`, `config.yaml`, `checkpoints/`, logs
and `figures/`. `results.json` always has the keys of `RESULT_KEYS`:

    schema    "i2dl.results/1"
    lab       digits, autoencoder, keypoints, segmentation or rl
    config    the config's name (the YAML file's stem), or what the command trained
    status    running, finished, stopped (interrupted with Ctrl-C, resumable) or failed (a run whose process died
              reads "running" with no lock held: failed)
    headline  {"metric": name, "value": number or null, "higher_is_better": bool}
    metrics   every final number, by its logged name ("test/acc", "eval/mean_return", ...)
    wall_time seconds of training, summed over the sessions of a resumed run
    steps     optimiser steps (supervised labs) or environment steps (RL)
    epochs    finished epochs (null for RL)
    started, updated   ISO 8601 UTC times
    command   the command line that wrote it
    versions  i2dl, python, torch and the lab's main libraries
    machine   CPU model and flags, threads, accelerator
    error     the one-line message of a failed or stopped run, else null
"""

from __future__ import annotations

import datetime as dt
import errno
import fcntl
import json
import os
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from i2dl.errors import I2DLError
from i2dl.files import write_json

SCHEMA = "i2dl.results/1"
RESULT_KEYS = (
    "schema",
    "lab",
    "config",
    "status",
    "headline",
    "metrics",
    "wall_time",
    "steps",
    "epochs",
    "started",
    "updated",
    "command",
    "versions",
    "machine",
    "error",
)
LOCK_NAME = ".lock"
RESULTS_NAME = "results.json"


def runs_root() -> Path:
    """`$I2DL_RUNS`, else `runs` in the working directory."""
    return Path(os.environ.get("I2DL_RUNS", "runs"))


def default_run_dir(lab: str, config_name: str) -> Path:
    return runs_root() / lab / config_name


def is_main_process() -> bool:
    """False in the extra processes a multi-process (DDP) run starts; only the first one owns the run folder."""
    return all(os.environ.get(var, "0") == "0" for var in ("LOCAL_RANK", "NODE_RANK", "RANK"))


# --- the lock -----------------------------------------------------------------------------------------------------
class RunLock:
    """An exclusive `flock` on `<run_dir>/.lock`, held while a process writes the run; the operating system
    releases it when the process ends, however it ends."""

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir, self.path = Path(run_dir), Path(run_dir) / LOCK_NAME
        self._fh = None

    def acquire(self, wait: float = 1.0) -> RunLock:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        fh = open(self.path, "a+")
        deadline = time.monotonic() + wait  # `i2dl runs` probes the lock for an instant: do not fail on that
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as err:
                if err.errno not in (errno.EAGAIN, errno.EACCES) or time.monotonic() > deadline:
                    fh.seek(0)
                    owner = fh.read().strip() or "?"
                    fh.close()
                    raise I2DLError(
                        f"{self.run_dir} is in use by another i2dl process (pid {owner}); wait for it "
                        f"to finish or give another --run_dir"
                    ) from None
                time.sleep(0.05)
        fh.seek(0)
        fh.truncate()
        fh.write(f"{os.getpid()}\n")
        fh.flush()
        self._fh = fh
        return self

    def release(self) -> None:
        if self._fh is not None:
            fcntl.flock(self._fh, fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def is_locked(run_dir: str | Path) -> bool:
    """Whether a live process holds the run folder's lock (a shared lock that cannot be taken means yes)."""
    path = Path(run_dir) / LOCK_NAME
    if not path.exists():
        return False
    with open(path) as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.flock(fh, fcntl.LOCK_UN)
        return False


# --- results.json -------------------------------------------------------------------------------------------------
def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def versions(*extra: str) -> dict[str, str]:
    """Versions of i2dl, Python, torch and the named distributions that are installed."""
    from importlib import metadata

    import i2dl

    found = {"i2dl": i2dl.__version__, "python": sys.version.split()[0]}
    for name in ("torch", *extra):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return found


def machine(accelerator: str = "cpu", precision: str | None = None) -> dict[str, Any]:
    import torch

    from i2dl.hardware import cpu_info

    cpu = cpu_info()
    return {
        "cpu": cpu.model,
        "cores": cpu.cores,
        "cpu_flags": sorted(f for f in cpu.flags if f.startswith(("avx", "amx", "fma"))),
        "threads": torch.get_num_threads(),
        "accelerator": accelerator,
        "precision": precision,
    }


def read_results(run_dir: str | Path) -> dict[str, Any] | None:
    """The run's results.json, or None when there is none or it is not valid JSON of this schema."""
    path = Path(run_dir) / RESULTS_NAME
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("schema") == SCHEMA else None


@dataclass
class Run:
    """One run folder as a lab writes it: `start` when training begins, `finish` or `fail` at the end."""

    run_dir: Path
    lab: str
    config: str
    headline: str
    higher_is_better: bool = True
    extra_versions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self.run_dir = Path(self.run_dir)
        self._lock = RunLock(self.run_dir)
        self._session_start = time.perf_counter()
        self._wall_before = 0.0
        self._stopped_at: float | None = None
        self._results: dict[str, Any] | None = None

    @property
    def path(self) -> Path:
        return self.run_dir / RESULTS_NAME

    def lock(self) -> Run:
        """Take the run folder's lock (a second process on it stops with one line, exit status 2)."""
        if is_main_process():
            self._lock.acquire()
        return self

    def unlock(self) -> None:
        self._lock.release()

    def start(
        self, resume: bool = False, accelerator: str = "cpu", precision: str | None = None, **fields: Any
    ) -> dict[str, Any]:
        """Write results.json with status "running". A resumed run keeps its metrics and adds to its wall time."""
        earlier = read_results(self.run_dir) if resume else None
        self._wall_before = float(earlier.get("wall_time") or 0.0) if earlier else 0.0
        self._session_start, self._stopped_at = time.perf_counter(), None
        results = {key: None for key in RESULT_KEYS}
        results.update(
            {
                "schema": SCHEMA,
                "lab": self.lab,
                "config": self.config,
                "status": "running",
                "headline": {"metric": self.headline, "value": None, "higher_is_better": self.higher_is_better},
                "metrics": dict(earlier.get("metrics") or {}) if earlier else {},
                "wall_time": self._wall_before,
                "steps": 0,
                "started": (earlier or {}).get("started") or _now(),
                "updated": _now(),
                "command": " ".join(["i2dl", *sys.argv[1:]]) if sys.argv else "",
                "versions": versions(*self.extra_versions),
                "machine": machine(accelerator, precision),
            }
        )
        results.update(fields)
        self._results = results
        if is_main_process():
            self.run_dir.mkdir(parents=True, exist_ok=True)
            write_json(self.path, results)
        return results

    def wall_time(self) -> float:
        """Seconds of this run: earlier sessions' (when resumed) plus this one's up to now or `stop_clock`."""
        end = self._stopped_at if self._stopped_at is not None else time.perf_counter()
        return self._wall_before + end - self._session_start

    def stop_clock(self) -> None:
        """Training is over: what follows (a test, figures) does not count as the run's time."""
        self._stopped_at = time.perf_counter()

    def update(
        self, metrics: dict[str, float] | None = None, status: str | None = None, **fields: Any
    ) -> dict[str, Any]:
        """Merge `metrics` and other fields into results.json (and the headline value, when it is among them)."""
        results = self._results if self._results is not None else (read_results(self.run_dir) or self.start())
        if metrics:
            results["metrics"].update({k: _number(v) for k, v in metrics.items()})
        value = results["metrics"].get(self.headline)
        results["headline"] = {"metric": self.headline, "value": value, "higher_is_better": self.higher_is_better}
        results.update(fields)
        if status:
            results["status"] = status
        results["updated"] = _now()
        self._results = results
        if is_main_process():
            write_json(self.path, results)
        return results

    def finish(self, metrics: dict[str, float] | None = None, count_time: bool = True, **fields: Any) -> dict[str, Any]:
        """Status "finished", with `metrics` merged in; `count_time=False` (an evaluation of a finished run) keeps
        the run's wall time as it was."""
        fields.setdefault("wall_time", round(self.wall_time() if count_time else self._wall_before, 2))
        return self.update(metrics, status="finished", error=None, **fields)

    def fail(self, error: BaseException | str) -> dict[str, Any]:
        """Status "failed" with the error's first line; a KeyboardInterrupt (Ctrl-C) is "stopped" instead: the
        user ended it, and its last checkpoint resumes it."""
        if isinstance(error, KeyboardInterrupt):
            status = "stopped"
            message = "interrupted (Ctrl-C); resume from the last checkpoint (--ckpt_path last; RL: --resume)"
        else:
            status = "failed"
            message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return self.update(status=status, error=message, wall_time=round(self.wall_time(), 2))

    @contextmanager
    def session(self, resume: bool = False, **start_fields: Any) -> Iterator[Run]:
        """Lock, `start`, and on the way out `fail` if the block raised (the lock is released either way)."""
        self.lock()
        try:
            self.start(resume=resume, **start_fields)
            try:
                yield self
            except BaseException as err:
                self.fail(err)
                raise
        finally:
            self.unlock()


def _number(value: Any) -> Any:
    try:
        return float(value.item() if hasattr(value, "item") else value)
    except (TypeError, ValueError):
        return value


# --- `i2dl runs` ----------------------------------------------------------------------------------------------------
@dataclass
class RunInfo:
    run_dir: Path
    lab: str
    config: str
    status: str
    headline_metric: str | None
    headline_value: float | None
    wall_time: float | None
    steps: int | None
    updated: str | None
    error: str | None
    started: str | None = None

    def elapsed(self) -> float | None:
        """The run's recorded wall time; for a running run in its first session, the time since it started."""
        if self.status != "running" or not self.started or self.wall_time:
            return self.wall_time
        try:
            since = (dt.datetime.now(dt.timezone.utc) - dt.datetime.fromisoformat(self.started)).total_seconds()
        except ValueError:
            return self.wall_time
        return max(self.wall_time or 0.0, since)

    def as_row(self) -> dict[str, Any]:
        return {
            "run": str(self.run_dir),
            "lab": self.lab,
            "config": self.config,
            "status": self.status,
            "metric": self.headline_metric or "",
            "value": self.headline_value,
            "wall_time": self.wall_time,
            "steps": self.steps,
            "updated": self.updated or "",
            "error": self.error or "",
        }


def run_status(run_dir: Path, results: dict[str, Any] | None) -> str:
    if is_locked(run_dir):
        return "running"
    if results is None:
        return "failed"
    status = results.get("status")
    return "failed" if status == "running" else str(status)  # "running" with no lock held: the process died


def list_runs(root: str | Path | None = None, max_depth: int = 5) -> list[RunInfo]:
    """Every run folder under `root` (a folder holding results.json or a lock), newest first."""
    root = Path(root) if root is not None else runs_root()
    if not root.is_dir():
        return []
    found: list[RunInfo] = []
    for dirpath, dirnames, filenames in os.walk(root):
        depth = len(Path(dirpath).relative_to(root).parts)
        dirnames[:] = sorted(
            d
            for d in dirnames
            if not d.startswith(".") and depth < max_depth and d not in {"checkpoints", "tensorboard", "csv", "figures"}
        )
        if RESULTS_NAME not in filenames and LOCK_NAME not in filenames:
            continue
        run_dir = Path(dirpath)
        results = read_results(run_dir)
        headline = (results or {}).get("headline") or {}
        found.append(
            RunInfo(
                run_dir=run_dir,
                lab=(results or {}).get("lab") or _guess_lab(run_dir, root),
                config=(results or {}).get("config") or run_dir.name,
                status=run_status(run_dir, results),
                headline_metric=headline.get("metric"),
                headline_value=headline.get("value"),
                wall_time=(results or {}).get("wall_time"),
                steps=(results or {}).get("steps"),
                updated=(results or {}).get("updated"),
                started=(results or {}).get("started"),
                error=(results or {}).get("error") or (None if results else "no readable results.json"),
            )
        )
    return sorted(found, key=lambda r: (r.updated or "", str(r.run_dir)), reverse=True)


def _guess_lab(run_dir: Path, root: Path) -> str:
    parts = run_dir.relative_to(root).parts
    return parts[0] if len(parts) > 1 else "?"


def format_table(runs: list[RunInfo]) -> str:
    """A plain-text table of runs for the terminal."""
    if not runs:
        return "no runs found"
    header = ["status", "lab", "config", "headline", "time", "steps", "updated", "run folder"]
    rows = []
    for r in runs:
        value = "-" if r.headline_value is None else f"{r.headline_value:.4g}"
        headline = f"{r.headline_metric} {value}" if r.headline_metric else "-"
        elapsed = r.elapsed()
        time_text = "-" if elapsed is None else _duration(elapsed)
        rows.append(
            [
                r.status,
                r.lab,
                r.config,
                headline,
                time_text,
                "-" if r.steps is None else str(r.steps),
                (r.updated or "-")[:19].replace("T", " "),
                str(r.run_dir),
            ]
        )
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in rows]
    return "\n".join(line.rstrip() for line in lines)


def _duration(seconds: float) -> str:
    seconds = float(seconds)
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


def main(argv: list[str]) -> None:
    """`i2dl runs [--runs DIR] [--lab LAB] [--json]`."""
    import argparse

    parser = argparse.ArgumentParser(prog="i2dl runs", description="List run folders with their headline result.")
    parser.add_argument("--runs", default=None, help="folder to list (default: $I2DL_RUNS, else ./runs)")
    parser.add_argument("--lab", default=None, help="only this lab's runs")
    parser.add_argument("--status", default=None, choices=["running", "finished", "stopped", "failed"])
    parser.add_argument("--json", action="store_true", help="one JSON list instead of a table")
    args = parser.parse_args(argv)
    root = Path(args.runs) if args.runs else runs_root()
    if args.runs and not root.is_dir():
        raise I2DLError(f"{root}: no such folder")
    runs = [r for r in list_runs(root) if (args.lab in (None, r.lab)) and (args.status in (None, r.status))]
    if args.json:
        print(json.dumps([r.as_row() for r in runs], indent=2))
    else:
        print(format_table(runs))
