"""Facial keypoints benchmark: train `configs/keypoints/keypointnet.yaml` once per seed (model selection on val
only), then report the test split's course score, RMSE in pixels and per-keypoint RMSE, mean and spread.

    nice -n 10 env OMP_NUM_THREADS=1 I2DL_DATA=../shared/data python benchmarks/keypoints.py --seeds 0 1 2

Targets (issue 4): test score >= 100 (floor), RMSE <= 1.5 px (goal), each training run <= 30 min wall.
Prints a markdown table; `--report_only` rebuilds it from finished runs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from i2dl.keypoints.kaggle_csv import KEYPOINT_NAMES  # noqa: E402


def mean_sd(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(REPO / "configs/keypoints/keypointnet.yaml"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", default=str(REPO / "runs/keypoints/benchmark"))
    parser.add_argument("--report_only", action="store_true")
    parser.add_argument("extra", nargs="*", help="more LightningCLI options, e.g. --trainer.max_epochs=30")
    args = parser.parse_args()
    out = Path(args.out)
    for seed in args.seeds:
        run_dir = out / f"seed{seed}"
        if args.report_only or (run_dir / "wall_s.json").is_file():
            continue
        command = [
            sys.executable,
            "-m",
            "i2dl",
            "keypoints",
            "fit",
            "-c",
            args.config,
            "--seed_everything",
            str(seed),
            "--data.seed",
            str(seed),
            "--trainer.enable_progress_bar",
            "false",
            "--run_dir",
            str(run_dir),
            *args.extra,
        ]
        print("$", " ".join(command), flush=True)
        start = time.time()
        subprocess.run(command, check=True, cwd=REPO)
        wall = time.time() - start
        (run_dir / "wall_s.json").write_text(json.dumps({"wall_s": wall, "command": command}) + "\n")
        print(f"seed {seed}: {wall / 60:.1f} min", flush=True)
    results = []
    for seed in args.seeds:
        run_dir = out / f"seed{seed}"
        metrics, wall = run_dir / "results.json", run_dir / "wall_s.json"
        if metrics.is_file() and wall.is_file():
            found = json.loads(metrics.read_text())["metrics"]
            summary = {
                "score": found["test/score"],
                "rmse_px": found["test/rmse_px"],
                "rmse_px_per_keypoint": {
                    k.split("/")[-1]: v for k, v in found.items() if k.startswith("test/rmse_px/")
                },
            }
            results.append((seed, summary, json.loads(wall.read_text())["wall_s"]))
    if not results:
        sys.exit("no finished runs")
    from i2dl.hardware import describe

    print(f"\nmachine: {describe()}; load average {os.getloadavg()[0]:.1f}")
    print("\n| seed | test score | test RMSE (px) | train+test wall (min) |\n|---|---|---|---|")
    for seed, m, wall in results:
        print(f"| {seed} | {m['score']:.1f} | {m['rmse_px']:.3f} | {wall / 60:.1f} |")
    scores = [m["score"] for _, m, _ in results]
    rmses = [m["rmse_px"] for _, m, _ in results]
    walls = [w / 60 for _, _, w in results]
    print(
        f"| mean ± sd ({len(results)} seed{'s' * (len(results) > 1)}) | {mean_sd(scores)} | {mean_sd(rmses)} "
        f"| {mean_sd(walls)} |"
    )
    print("\n| keypoint | test RMSE (px), mean ± sd over seeds |\n|---|---|")
    for name in KEYPOINT_NAMES:
        print(f"| {name} | {mean_sd([m['rmse_px_per_keypoint'][name] for _, m, _ in results])} |")
    print(
        f"\ntargets: score >= 100 {'met' if min(scores) >= 100 else 'NOT met'}; "
        f"RMSE <= 1.5 px {'met' if statistics.mean(rmses) <= 1.5 else 'NOT met'} "
        f"(mean {statistics.mean(rmses):.3f}); wall <= 30 min {'met' if max(walls) <= 30 else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
