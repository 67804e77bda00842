"""Digits lab targets: test accuracy and wall time per config, and Lightning's overhead over a plain loop.

    python benchmarks/digits.py                     # everything (about 30 minutes on a 2-core CPU)
    python benchmarks/digits.py --only best fashion # some of it

Each config is trained as a user would train it (`i2dl digits fit -c configs/digits/<name>.yaml`, a fresh
process, test after fit); wall time is the whole command. The overhead check trains the same model, data, batch
size and epochs once through Lightning (our CLI, as configured for users) and once in a plain PyTorch loop in
this process, alternating, and compares the faster of each.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
RUNS = REPO / "runs" / "bench" / "digits"

RUNS_SPEC = {  # name: (config, extra CLI arguments, target test accuracy)
    "best": ("best", [], 0.995),
    "cnn": ("cnn", [], 0.990),
    "fc": ("fc", [], 0.975),
    "fashion": ("fashion", [], 0.925),
}


def train_config(name: str) -> dict:
    config, extra, target = RUNS_SPEC[name]
    run_dir = RUNS / name
    if (run_dir / "results.json").exists():
        (run_dir / "results.json").unlink()
    cmd = [
        sys.executable,
        "-m",
        "i2dl",
        "digits",
        "fit",
        "-c",
        f"configs/digits/{config}.yaml",
        "--run_dir",
        str(run_dir),
        "--trainer.enable_progress_bar",
        "false",
        *extra,
    ]
    start = time.perf_counter()
    subprocess.run(cmd, cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    results = json.loads((run_dir / "results.json").read_text())
    return {
        "name": name,
        "command": "i2dl digits fit -c configs/digits/" + config + ".yaml " + " ".join(extra),
        "test_acc": results["metrics"]["test/acc"],
        "target": target,
        "wall_s": round(wall, 1),
        "fit_s": results["wall_time"],
        "epochs": results["epochs"],
    }


def lightning_fit_seconds(config: str, epochs: int) -> float:
    from i2dl.digits.data import DigitsDataModule
    from i2dl.digits.module import DigitClassifier
    from i2dl.training import LabCLI

    run_dir = RUNS / "overhead-lightning"
    LabCLI(
        "digits",
        DigitClassifier,
        DigitsDataModule,
        monitor="val/acc",
        args=[
            "fit",
            "-c",
            f"configs/digits/{config}.yaml",
            "--trainer.max_epochs",
            str(epochs),
            "--run_dir",
            str(run_dir),
            "--test_after_fit",
            "false",
            "--trainer.enable_progress_bar",
            "false",
        ],
    )
    return json.loads((run_dir / "results.json").read_text())["wall_time"]


def plain_fit_seconds(config: str, epochs: int) -> float:
    """The same model, data pipeline (augmentation included), batch size, optimiser, LR schedule, loss and
    epochs, with validation each epoch, in a plain PyTorch loop."""
    import yaml

    from i2dl.digits.data import DigitsDataModule
    from i2dl.digits.module import DigitClassifier, build_optimizer

    cfg = yaml.safe_load((REPO / "configs" / "digits" / f"{config}.yaml").read_text())
    torch.manual_seed(cfg.get("seed_everything", 0))
    data = DigitsDataModule(**cfg.get("data", {}))
    module = DigitClassifier(**cfg.get("model", {}))
    start = time.perf_counter()
    data.setup("fit")
    train, val = data.train_dataloader(), data.val_dataloader()
    optimizer, scheduler = build_optimizer(module, epochs * len(train))
    for _ in range(epochs):
        module.train()
        for x, y in train:
            loss = F.cross_entropy(module(x), y, label_smoothing=module.hparams.label_smoothing)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
        module.eval()
        correct = 0
        with torch.no_grad():
            for x, y in val:
                correct += int((module(x).argmax(-1) == y).sum())
    return time.perf_counter() - start


def overhead(config: str = "best", epochs: int = 2, repeats: int = 2) -> dict:
    lightning, plain = [], []
    for _ in range(repeats):
        plain.append(plain_fit_seconds(config, epochs))
        lightning.append(lightning_fit_seconds(config, epochs))
    ratio = min(lightning) / min(plain)
    return {
        "config": config,
        "epochs": epochs,
        "plain_s": [round(t, 1) for t in plain],
        "lightning_s": [round(t, 1) for t in lightning],
        "ratio": round(ratio, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", choices=[*RUNS_SPEC, "overhead"], default=[*RUNS_SPEC, "overhead"])
    args = parser.parse_args()
    os.environ.setdefault("I2DL_DATA", str(REPO.parent / "shared" / "data"))
    from i2dl.hardware import describe

    machine = describe()
    print(f"machine: {machine}; load average {os.getloadavg()[0]:.1f}; date: {time.strftime('%Y-%m-%d %H:%M')}")
    rows = []
    for name in args.only:
        if name == "overhead":
            continue
        row = train_config(name)
        rows.append(row)
        ok = "yes" if row["test_acc"] >= row["target"] else "NO"
        print(
            f"| {name} | `{row['command'].strip()}` | {row['test_acc']:.2%} | >= {row['target']:.1%} ({ok}) "
            f"| {row['epochs']} | {row['wall_s']:.0f} s |",
            flush=True,
        )
    result = {"machine": machine, "runs": rows}
    if "overhead" in args.only:
        result["overhead"] = ov = overhead()
        print(
            f"Lightning / plain loop (config {ov['config']}, {ov['epochs']} epochs): plain {ov['plain_s']} s, "
            f"Lightning {ov['lightning_s']} s, ratio {ov['ratio']:.3f}",
            flush=True,
        )
    RUNS.mkdir(parents=True, exist_ok=True)
    (RUNS / "results.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
