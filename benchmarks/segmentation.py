"""Segmentation targets: MSRC-v2 course accuracy (approach (b), ImageNet MobileNetV2), CamVid mIoU at 360x480,
approach (a) on MSRC-v2 from a CamVid-pretrained checkpoint next to the same model from scratch.

Each run is an ordinary `i2dl segmentation fit` in `runs/segmentation/bench/<name>`; running the script again
continues a stopped run from its last checkpoint (`--ckpt_path last`), and the wall time of every session is added
up in `<run>/wall_time.json`. The report evaluates each run's best checkpoint (chosen on the validation split) on the
test split at full resolution, in a plain PyTorch loop, and prints a markdown table.

    nice -n 10 python benchmarks/segmentation.py run msrc_unet_mobilenet_v2      # one run (resumes)
    nohup nice -n 10 python benchmarks/segmentation.py run all > bench.log &     # every run, in order
    python benchmarks/segmentation.py report                                     # the table, as far as runs got
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
BENCH = Path(os.environ.get("I2DL_RUNS", REPO / "runs")) / "segmentation" / "bench"
CONFIGS = REPO / "configs" / "segmentation"

# name -> (config, epochs, extra CLI arguments, what it measures)
RUNS: dict[str, tuple[str, int, list[str], str]] = {
    "msrc_unet_mobilenet_v2": (
        "unet_mobilenet_v2_msrc.yaml",
        40,
        [],
        "(b) ImageNet MobileNetV2 + U-Net decoder, MSRC-v2; target course acc >= 85%",
    ),
    "camvid_unet_mobilenet_v2": (
        "unet_mobilenet_v2_camvid.yaml",
        40,
        [],
        "(b) ImageNet MobileNetV2 + U-Net decoder, CamVid; target mIoU >= 55 at 360x480",
    ),
    "camvid_lraspp": (
        "lraspp_camvid.yaml",
        12,
        ["--model.weights", "null", "--model.weights_backbone", "null"],
        "(a) LR-ASPP MobileNetV3, CamVid from scratch (offline: no torchvision weights)",
    ),
    "msrc_lraspp_from_camvid": (
        "lraspp_msrc.yaml",
        12,
        ["--model.weights", str(BENCH / "camvid_lraspp" / "checkpoints" / "best.ckpt")],
        "(a) LR-ASPP MobileNetV3, MSRC-v2, from the CamVid run's checkpoint, new last layer",
    ),
    "msrc_lraspp_scratch": (
        "lraspp_msrc.yaml",
        12,
        ["--model.weights", "null", "--model.weights_backbone", "null"],
        "(a) LR-ASPP MobileNetV3, MSRC-v2 from scratch",
    ),
}
METRICS = ("acc", "pixel_acc", "miou")


class WallClock:
    """Adds this session's wall time to `<run>/wall_time.json` every 15 s, so a killed session still counts."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / "wall_time.json"
        previous = json.loads(self.path.read_text()) if self.path.is_file() else {"seconds": 0.0, "sessions": 0}
        self.before, self.sessions = previous["seconds"], previous["sessions"] + 1
        self.start = time.time()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(
            json.dumps({"seconds": round(self.before + time.time() - self.start, 1), "sessions": self.sessions})
        )
        os.replace(tmp, self.path)

    def _loop(self) -> None:
        while not self.stop.wait(15):
            self._write()

    def __enter__(self):
        self._write()
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self._write()


def run(name: str, epochs: int | None = None) -> int:
    config, default_epochs, extra, _ = RUNS[name]
    run_dir = BENCH / name
    if (run_dir / "fit_done").is_file():
        print(f"{name}: finished earlier ({run_dir})")
        return 0
    resume = (run_dir / "checkpoints" / "last.ckpt").is_file()
    cmd = [
        sys.executable,
        "-m",
        "i2dl",
        "segmentation",
        "fit",
        "-c",
        str(CONFIGS / config),
        "--run_dir",
        str(run_dir),
        "--trainer.max_epochs",
        str(epochs or default_epochs),
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.log_every_n_steps",
        "10",
        "--test_after_fit",
        "false",
        *extra,
    ] + (["--ckpt_path", "last"] if resume else [])
    print(("resuming " if resume else "starting ") + " ".join(cmd), flush=True)
    with WallClock(run_dir):
        code = subprocess.call(cmd, cwd=REPO)
    if code == 0:
        (run_dir / "fit_done").write_text("ok\n")
    return code


@torch.no_grad()
def evaluate(ckpt: Path, split: str = "test") -> dict[str, float]:
    """Course accuracy, pixel accuracy, mIoU and per-class IoU of a checkpoint on a split at full resolution."""
    from torchmetrics.classification import MulticlassConfusionMatrix

    from i2dl.segmentation.data import SegmentationDataModule
    from i2dl.segmentation.datasets import IGNORE_INDEX
    from i2dl.segmentation.module import PerImageAccuracy, SegmentationModule, iou_from_confusion
    from i2dl.training import load_module

    module = load_module(SegmentationModule, ckpt)
    data = SegmentationDataModule(dataset=module.hparams.dataset, eval_batch_size=4)
    accuracy = PerImageAccuracy()
    confusion = MulticlassConfusionMatrix(module.info.num_classes, ignore_index=IGNORE_INDEX)
    start = time.time()
    for x, y in data._eval_loader(split):
        preds = module(x).argmax(1)
        accuracy.update(preds, y)
        confusion.update(preds, y)
    matrix = confusion.compute()
    iou = iou_from_confusion(matrix)
    return {
        "acc": float(accuracy.compute()),
        "pixel_acc": float(matrix.diag().sum() / matrix.sum()),
        "miou": float(iou.nanmean()),
        "iou": dict(zip(module.class_names, iou.tolist())),
        "eval_seconds": time.time() - start,
        "epoch": int(module.extra_checkpoint.get("epoch", -1)) + 1,
    }


def report() -> None:
    from i2dl.hardware import describe

    print(f"machine: {describe()}; load average {os.getloadavg()[0]:.1f}\n")
    print("| run | what | epochs (best) / planned | test course acc | test pixel acc | test mIoU | train wall time |")
    print("|---|---|---|---|---|---|---|")
    details = []
    for name, (_, epochs, _, what) in RUNS.items():
        run_dir = BENCH / name
        ckpt = run_dir / "checkpoints" / "best.ckpt"
        if not ckpt.is_file():
            print(f"| {name} | {what} | not run | | | | |")
            continue
        result = evaluate(ckpt)
        wall = (
            json.loads((run_dir / "wall_time.json").read_text())["seconds"]
            if (run_dir / "wall_time.json").is_file()
            else float("nan")
        )
        last = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
        done = "" if (run_dir / "fit_done").is_file() else " (stopped)"
        print(
            f"| {name} | {what} | {last['epoch'] + 1}{done} ({result['epoch']}) / {epochs} | {result['acc']:.2%} | "
            f"{result['pixel_acc']:.2%} | {result['miou']:.2%} | {wall / 60:.0f} min |"
        )
        details.append((name, result))
        (run_dir / "test_report.json").write_text(json.dumps(result, indent=2))
    for name, result in details:
        print(f"\n{name} per-class test IoU: " + ", ".join(f"{c} {v:.2f}" for c, v in result["iou"].items() if v == v))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["run", "report"])
    parser.add_argument("names", nargs="*", help=f"runs ({', '.join(RUNS)}) or 'all'")
    parser.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="override the planned epochs (keep it fixed across resumed sessions: the schedule depends on it)",
    )
    args = parser.parse_args()
    os.environ.setdefault("I2DL_DATA", str(REPO.parent / "shared" / "data"))
    if args.command == "report":
        return report()
    names = list(RUNS) if args.names in ([], ["all"]) else args.names
    for name in names:
        if name not in RUNS:
            parser.error(f"unknown run {name!r}; choose from {', '.join(RUNS)}")
        if run(name, args.epochs) != 0:
            sys.exit(f"{name}: fit failed")


if __name__ == "__main__":
    main()
