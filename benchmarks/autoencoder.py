"""Few-label MNIST (issue 13): does pretraining on the unlabeled images pay off, and how far does it go?

    python benchmarks/autoencoder.py grid  [--seeds 0 1 2] [--num_labels 100]
        The comparison grid, same network and same fine-tuning budget in each column: pretraining {none, the lab's
        autoencoder, contrastive (SimCLR)} x fine-tuning {labels only, labels + unlabeled images (FixMatch)}, every
        cell over the seeds (mean ± sd, every seed's accuracy), with the targets checked: best cell >= 99.0% with
        no seed below 98.5%; in the same fine-tuning column the best pretrained row beats from-scratch by >= 2
        points and by more than twice the larger seed sd. Encoders are pretrained once per objective (cached).
        `--finetune fixmatch_long` is a third column (FixMatch for 6,000 steps instead of 2,000, EMA weights).
    python benchmarks/autoencoder.py sweep [--num_labels 10 100 1000 all] [--seeds 0]
        The best row, the lab's row and from-scratch over N, in one figure (accuracy_vs_labels.png); the grid's
        N = 100 cells of the same seeds are reused.
    python benchmarks/autoencoder.py time [--dataset mnist] [--pretrain P] [--finetune F] [--no_baseline]
        `i2dl autoencoder run --num_labels 100` with the best recipe in a fresh process and a fresh encoder cache
        (pretraining included), then again with the encoder cached; wall times with the CPU beside them.

Results go to runs/bench/autoencoder/ (cells already there are not trained again: delete a cell's folder, or the
CSV, to redo it). Run it on a quiet machine for the times; accuracies do not depend on the load. Two processes may
fill one grid side by side (say `OMP_NUM_THREADS=1`, one per core, on different --pretrain/--finetune cells).
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "runs" / "bench" / "autoencoder"
PRETRAININGS = ("none", "autoencoder", "contrastive")
FINETUNINGS = ("labels", "fixmatch")  # the grid's columns; "fixmatch_long" is a third, asked for by name
LONGER = {"fixmatch_long": ("fixmatch", "finetune_fixmatch_long_conv.yaml")}  # 6,000 steps, EMA weights


def recipe(finetune: str) -> tuple[str, str | None]:
    """A grid column as the story's fine-tuning method and its config (None: the method's own)."""
    return LONGER.get(finetune, (finetune, None))


BEST = ("autoencoder", "fixmatch")  # the grid's best cell at N = 100 (docs/benchmarks.md, 2026-12-07)
NAMES = {
    "none": "none (from scratch)",
    "autoencoder": "the lab's autoencoder",
    "contrastive": "contrastive (SimCLR)",
    "labels": "labels only",
    "fixmatch": "labels + unlabeled (FixMatch)",
    "fixmatch_long": "FixMatch, 3x steps + EMA",
}


def _data_env() -> None:
    shared = REPO.parent / "shared" / "data"
    if not os.environ.get("I2DL_DATA") and (shared / "mnist").is_dir():
        os.environ["I2DL_DATA"] = str(shared)  # as the Makefile does: the offline copy of the real data


def machine_line() -> str:
    from i2dl.hardware import describe

    return f"{describe()}; load average {os.getloadavg()[0]:.1f}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"


def read_rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def append_rows(path: Path, new: list[dict]) -> list[dict]:
    """Add rows to a results CSV under a lock and return all of them, so that two benchmark processes (say one per
    core, each on its own cells) can fill the same grid."""
    import fcntl

    from i2dl.autoencoder.story import write_csv

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        rows = read_rows(path) + new
        write_csv(rows, path)
    return rows


def cell_rows(pretrain: str, finetune: str, num_labels, seed: int, dataset: str, out: Path) -> list[dict]:
    """One cell of the grid for one seed (the story without its baseline; 'none' is the from-scratch row)."""
    from i2dl.autoencoder.story import Story, story_rows

    method, config = recipe(finetune)
    story = Story(
        dataset=dataset,
        num_labels=num_labels,
        seed=seed,
        pretrain=pretrain,
        finetune=method,
        finetune_config=config,
        encoder_cache=str(out / "encoders"),
    )
    start = time.perf_counter()
    rows = story_rows(story, out / f"{dataset}_{pretrain}_{finetune}", with_baseline=False)
    for row in rows:
        row.update(cell_pretrain=pretrain, cell_finetune=finetune, cell_seconds=round(time.perf_counter() - start, 1))
    return rows


def _accs(rows: list[dict], pretrain: str, finetune: str, num_labels) -> list[float]:
    """The cell's test accuracies in %, in seed order."""
    cell = [
        r
        for r in rows
        if r["cell_pretrain"] == pretrain and r["cell_finetune"] == finetune and str(r["num_labels"]) == str(num_labels)
    ]
    return [100 * float(r["test_acc"]) for r in sorted(cell, key=lambda r: int(r["seed"]))]


def _cell(rows: list[dict], pretrain: str, finetune: str) -> list[dict]:
    return [r for r in rows if r["cell_pretrain"] == pretrain and r["cell_finetune"] == finetune]


def _stats(accs: list[float]) -> tuple[float, float]:
    return statistics.mean(accs), (statistics.stdev(accs) if len(accs) > 1 else 0.0)


def grid(args) -> None:
    out = OUT
    path = out / f"grid_{args.dataset}_n{args.num_labels}.csv"
    rows = read_rows(path)
    done = {(r["cell_pretrain"], r["cell_finetune"], r["seed"]) for r in rows}
    for finetune in [] if args.report else args.finetune:
        for pretrain in args.pretrain:
            for seed in args.seeds:
                if (pretrain, finetune, str(seed)) in done:
                    continue
                print(f"== {pretrain} + {finetune}, seed {seed}", flush=True)
                rows = append_rows(path, cell_rows(pretrain, finetune, args.num_labels, seed, args.dataset, out))
    print(f"\n{args.dataset}, N = {args.num_labels}; machine: {machine_line()}\n")
    print("| pretraining \\ fine-tuning | " + " | ".join(NAMES[f] for f in args.finetune) + " |")
    print("|---|" + "---:|" * len(args.finetune))
    best, cells = None, {}
    for pretrain in args.pretrain:
        shown = []
        for finetune in args.finetune:
            accs = _accs(rows, pretrain, finetune, args.num_labels)
            if not accs:
                shown.append("-")
                continue
            mean, sd = _stats(accs)
            cells[(pretrain, finetune)] = (mean, sd, accs)
            shown.append(f"**{mean:.2f}** ± {sd:.2f} ({', '.join(f'{a:.2f}' for a in accs)})")
            if best is None or mean > cells[best][0]:
                best = (pretrain, finetune)
        print(f"| {NAMES[pretrain]} | " + " | ".join(shown) + " |")
    if best is None:
        return
    mean, sd, accs = cells[best]
    print(f"\nbest cell: {NAMES[best[0]]} + {NAMES[best[1]]}: {mean:.2f}% ± {sd:.2f} over {len(accs)} seeds, ", end="")
    targeted = (args.dataset, args.num_labels) == ("mnist", 100)  # issue 13's targets are for MNIST at N = 100
    if targeted:
        print(
            f"lowest seed {min(accs):.2f}%: target >= 99.0% with no seed < 98.5%: "
            f"{'met' if mean >= 99.0 and min(accs) >= 98.5 else 'NOT met'}"
        )
    else:
        print(f"lowest seed {min(accs):.2f}% (the targets are for MNIST at N = 100)")
    for finetune in args.finetune:
        scratch = cells.get(("none", finetune))
        pretrained = [(cells[(p, finetune)], p) for p in args.pretrain if p != "none" and (p, finetune) in cells]
        if not scratch or not pretrained:
            continue
        (p_mean, p_sd, _), p_name = max(pretrained)
        gain = p_mean - scratch[0]
        bar = 2 * max(p_sd, scratch[1])
        verdict = f": gain >= 2 and > 2 sd: {'met' if gain >= 2 and gain > bar else 'NOT met'}"
        print(
            f"{NAMES[finetune]}: best pretrained ({NAMES[p_name]}) - from scratch = {gain:+.2f} points "
            f"(2 x larger sd = {bar:.2f})" + (verdict if targeted else "")
        )
    print(
        "\nseconds per cell (fine-tuning incl. probe; pretraining once per objective, cached): "
        + ", ".join(
            f"{NAMES[p]}+{f} {statistics.mean(float(r['seconds']) for r in _cell(rows, p, f)):.0f}" for p, f in cells
        )
    )
    pre = {r["cell_pretrain"]: float(r["pretrain_seconds"]) for r in rows if float(r["pretrain_seconds"]) > 0}
    print("pretraining seconds (first use): " + ", ".join(f"{NAMES[k]} {v:.0f}" for k, v in pre.items()))


def sweep(args) -> None:
    from i2dl.autoencoder.figures import plot_accuracy_vs_labels

    path = OUT / f"sweep_{args.dataset}.csv"
    cells = [BEST, ("contrastive", "labels"), ("autoencoder", "labels"), ("none", "labels"), ("none", "fixmatch")]
    # the grid's cells at N = 100 are the same trainings (same seeds and settings): reused, not trained again
    from_grid = [
        r
        for r in read_rows(OUT / f"grid_{args.dataset}_n100.csv")
        if (r["cell_pretrain"], r["cell_finetune"]) in cells and int(r["seed"]) in args.seeds
    ]
    rows = read_rows(path) + from_grid
    done = {(r["cell_pretrain"], r["cell_finetune"], r["num_labels"], r["seed"]) for r in rows}
    for n in args.num_labels:
        for pretrain, finetune in cells:
            if n == "all" and finetune == "fixmatch":
                continue  # every training image is labeled: no unlabeled images for FixMatch to learn from
            for seed in args.seeds:
                if (pretrain, finetune, str(n), str(seed)) in done:
                    continue
                print(f"== N={n}: {pretrain} + {finetune}, seed {seed}", flush=True)
                rows = append_rows(path, cell_rows(pretrain, finetune, n, seed, args.dataset, OUT)) + from_grid
    total = 60000 - 100
    labelled = [
        {
            **r,
            "num_labels": total if r["num_labels"] == "all" else int(r["num_labels"]),
            "method": f"{NAMES[r['cell_pretrain']]}, {NAMES[r['cell_finetune']]}",
        }
        for r in rows
    ]
    plot = plot_accuracy_vs_labels(
        labelled, OUT / f"accuracy_vs_labels_{args.dataset}.png", title=f"{args.dataset}: test accuracy against labels"
    )
    print(f"\nmachine: {machine_line()}\n")
    print("| N | " + " | ".join(f"{NAMES[p]}, {NAMES[f]}" for p, f in cells) + " |")
    print("|---:|" + "---:|" * len(cells))
    for n in args.num_labels:
        shown = []
        for p, f in cells:
            accs = _accs(rows, p, f, n)
            shown.append(
                "-" if not accs else f"{_stats(accs)[0]:.2f}" + (f" ± {_stats(accs)[1]:.2f}" if len(accs) > 1 else "")
            )
        print(f"| {n} | " + " | ".join(shown) + " |")
    print(f"\nfigure: {plot}")


def timed(args) -> None:
    import shutil

    cache = OUT / "timed_encoders"
    shutil.rmtree(cache, ignore_errors=True)
    print(f"machine: {machine_line()}")
    method, config = recipe(args.finetune)
    walls = []
    for attempt in ("fresh encoder cache (pretraining included)", "encoder cached"):
        run_dir = OUT / f"timed_{args.dataset}_{len(walls)}"
        shutil.rmtree(run_dir, ignore_errors=True)
        cmd = [
            sys.executable,
            "-m",
            "i2dl",
            "autoencoder",
            "run",
            "--num_labels",
            "100",
            "--dataset",
            args.dataset,
            "--pretrain",
            args.pretrain,
            "--finetune",
            method,
            *(["--finetune_config", config] if config else []),
            *(["--no_baseline"] if args.no_baseline else []),
            "--encoder_cache",
            str(cache),
            "--run_dir",
            str(run_dir),
        ]
        print("$", " ".join(cmd[1:]), flush=True)
        start = time.perf_counter()
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            sys.exit(proc.stderr[-3000:])
        rows = read_rows(run_dir / "results.csv")
        walls.append(wall)
        print(
            f"{attempt}: {wall / 60:.1f} min wall; pretraining {float(rows[0]['pretrain_seconds']) / 60:.1f} min; "
            + ", ".join(
                f"{r['method']} {100 * float(r['test_acc']):.2f}% ({float(r['seconds']) / 60:.1f} min)" for r in rows
            ),
            flush=True,
        )
    print(f"machine after: {machine_line()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    g = sub.add_parser("grid")
    g.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    g.add_argument("--num_labels", default=100, type=lambda v: v if v == "all" else int(v))
    g.add_argument("--pretrain", nargs="+", default=list(PRETRAININGS), choices=PRETRAININGS)
    g.add_argument("--finetune", nargs="+", default=list(FINETUNINGS), choices=[*FINETUNINGS, *LONGER])
    g.add_argument("--dataset", default="mnist", choices=["mnist", "fashion-mnist"])
    g.add_argument("--report", action="store_true", help="print the table of the cells done so far, train nothing")
    s = sub.add_parser("sweep")
    s.add_argument(
        "--num_labels", nargs="+", default=[10, 100, 1000, "all"], type=lambda v: v if v == "all" else int(v)
    )
    s.add_argument("--seeds", type=int, nargs="+", default=[0])
    s.add_argument("--dataset", default="mnist", choices=["mnist", "fashion-mnist"])
    t = sub.add_parser("time")
    t.add_argument("--dataset", default="mnist", choices=["mnist", "fashion-mnist"])
    t.add_argument("--pretrain", default=BEST[0], choices=PRETRAININGS, help=f"default: the best cell's, {BEST[0]}")
    t.add_argument(
        "--finetune", default=BEST[1], choices=[*FINETUNINGS, *LONGER], help=f"default: the best cell's, {BEST[1]}"
    )
    t.add_argument("--no_baseline", action="store_true", help="without the from-scratch classifier beside it")
    args = parser.parse_args()
    _data_env()
    {"grid": grid, "sweep": sweep, "time": timed}[args.command](args)


if __name__ == "__main__":
    main()
