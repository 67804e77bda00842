"""`i2dl app [--runs DIR] [--host 127.0.0.1] [--port 7860]`: serve every lab in the browser."""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import time
from pathlib import Path

from i2dl.errors import I2DLError


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(
        prog="i2dl app",
        description="Serve the labs as one web page (Gradio): draw digits, reconstruct them, find face keypoints, "
        "segment photos, watch agents play, compare runs. Offline; binds 127.0.0.1 unless told.",
    )
    parser.add_argument(
        "--runs", default=None, help="run folder to take checkpoints from (default: $I2DL_RUNS, else ./runs)"
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0 serves your network)")
    parser.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    parser.add_argument(
        "--data_dir",
        default=None,
        help="datasets folder for the test digits (default: $I2DL_DATA, else ~/.cache/i2dl); never downloaded",
    )
    args = parser.parse_args(argv)
    started = time.perf_counter()
    runs = Path(args.runs) if args.runs else Path(os.environ.get("I2DL_RUNS", "runs"))
    if args.runs and not runs.is_dir():
        raise I2DLError(f"--runs {runs}: no such folder")
    if not 0 < args.port < 65536:
        raise I2DLError(f"--port {args.port}: choose 1 to 65535")
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise I2DLError("the app needs Gradio: pip install 'i2dl[app]' (or make install)") from None
    from i2dl.app.server import launch

    data_dir = Path(args.data_dir) if args.data_dir else None
    try:
        page, url, work_dir = launch(runs, host=args.host, port=args.port, data_dir=data_dir, block=False, quiet=True)
    except OSError as err:  # Gradio: "Cannot find empty port ..."
        raise I2DLError(
            f"cannot serve on {args.host}:{args.port} ({str(err).splitlines()[0]}); give another "
            f"--port, or stop what uses it"
        ) from None
    print(
        f"i2dl app: {url} (runs from {runs}, ready in {time.perf_counter() - started:.1f} s; Ctrl-C stops it)",
        flush=True,
    )

    def stop(signum, frame):  # `kill` (SIGTERM) stops the server as Ctrl-C does
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    page.block_thread()
    shutil.rmtree(work_dir, ignore_errors=True)
    sys.stdout.flush()
    os._exit(0)  # the server is closed and its files are gone; skip seconds of interpreter teardown
