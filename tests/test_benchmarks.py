"""The few-label benchmark's bookkeeping (benchmarks/autoencoder.py): which story a grid column runs, and the
verdicts it prints against issue 13's targets, on a results CSV written here (no training)."""

from __future__ import annotations

import argparse
import csv
import importlib.util

import pytest
from conftest import REPO


@pytest.fixture
def bench(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("bench_autoencoder", REPO / "benchmarks" / "autoencoder.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "OUT", tmp_path)
    return module


def _write(path, cells):
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, ["cell_pretrain", "cell_finetune", "seed", "num_labels", "test_acc", "seconds",
                                     "pretrain_seconds"])  # fmt: skip
        writer.writeheader()
        for (pretrain, finetune), accs in cells.items():
            for seed, acc in reversed(list(enumerate(accs))):  # as two processes may append them
                writer.writerow(dict(cell_pretrain=pretrain, cell_finetune=finetune, seed=seed, num_labels=100,
                                     test_acc=acc, seconds=60, pretrain_seconds=0))  # fmt: skip


def _grid(bench, dataset="mnist", finetune=("fixmatch_long",)):
    args = argparse.Namespace(report=True, dataset=dataset, num_labels=100, pretrain=["none", "autoencoder"],
                              finetune=list(finetune), seeds=[0, 1, 2])  # fmt: skip
    bench.grid(args)


def test_the_longer_column_runs_fixmatch_with_its_own_config(bench, monkeypatch):
    import i2dl.autoencoder.story as story

    seen = []
    monkeypatch.setattr(story, "story_rows", lambda s, run_dir, with_baseline: seen.append((s, run_dir)) or [{}])
    bench.cell_rows("autoencoder", "fixmatch_long", 100, 2, "mnist", bench.OUT)
    bench.cell_rows("none", "fixmatch", 100, 2, "mnist", bench.OUT)
    (long, long_dir), (short, short_dir) = seen
    assert (long.finetune, long.finetune_config, long.seed) == ("fixmatch", "finetune_fixmatch_long_conv.yaml", 2)
    assert (short.finetune, short.finetune_config, short.pretrain) == ("fixmatch", None, "none")
    assert long_dir.name == "mnist_autoencoder_fixmatch_long" and short_dir.name == "mnist_none_fixmatch"


def test_grid_verdicts_follow_the_numbers(bench, capsys):
    _write(bench.OUT / "grid_mnist_n100.csv", {
        ("none", "fixmatch_long"): [0.9800, 0.9810, 0.9790],
        ("autoencoder", "fixmatch_long"): [0.9905, 0.9910, 0.9890],
    })  # fmt: skip
    _grid(bench)
    out = capsys.readouterr().out
    assert "| the lab's autoencoder | **99.02** ± 0.10 (99.05, 99.10, 98.90) |" in out  # in seed order
    assert "best cell: the lab's autoencoder + FixMatch, 3x steps + EMA: 99.02%" in out
    assert "no seed < 98.5%: met" in out
    assert "from scratch = +1.02 points (2 x larger sd = 0.21): gain >= 2 and > 2 sd: NOT met" in out

    _write(bench.OUT / "grid_mnist_n100.csv", {("autoencoder", "fixmatch_long"): [0.9950, 0.9960, 0.9840]})
    _grid(bench)
    assert "no seed < 98.5%: NOT met" in capsys.readouterr().out  # mean 99.17, but one seed below 98.5


def test_fashion_mnist_gets_no_mnist_verdicts(bench, capsys):
    _write(
        bench.OUT / "grid_fashion-mnist_n100.csv", {("none", "fixmatch"): [0.69], ("autoencoder", "fixmatch"): [0.70]}
    )
    _grid(bench, "fashion-mnist", ("fixmatch",))
    out = capsys.readouterr().out
    assert "70.00%" in out and "the targets are for MNIST at N = 100" in out
    assert "met" not in out
