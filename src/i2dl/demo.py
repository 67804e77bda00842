"""`make demo`: train the lab's CNN on MNIST for two epochs (about a minute on 2 CPU cores) and show the results."""

from __future__ import annotations

import json
import time
from pathlib import Path

from i2dl.cli import main as i2dl_main
from i2dl.runs import runs_root


def main() -> None:
    run_dir = runs_root() / "demo" / "digits"
    start = time.perf_counter()
    i2dl_main(
        ["digits", "fit", "-c", "configs/digits/cnn.yaml", "--trainer.max_epochs", "2", "--run_dir", str(run_dir)]
    )
    results = json.loads((run_dir / "results.json").read_text())
    figures = sorted(Path(run_dir, "figures").glob("*.png"))
    print(f"\n== i2dl demo: the MIT 6.S191 Lab 2 CNN, 2 epochs on MNIST, {time.perf_counter() - start:.0f} s ==")
    print(f"test accuracy: {results['metrics']['test/acc']:.2%} on the 10,000 MNIST test images")
    print("figures:\n" + "\n".join(f"  {p}" for p in figures))
    print(
        f"checkpoints: {run_dir / 'checkpoints'}  (try: i2dl digits predict --ckpt_path "
        f"{run_dir / 'checkpoints' / 'best.ckpt'} <your digit photo>)"
    )


if __name__ == "__main__":
    main()
