"""Autoencoder lab targets: N=100 MNIST test accuracy of the pretrained classifier (>= 95%, mean and spread over
seeds, from-scratch baseline beside it) and the wall time of the whole story for N=100 (<= 15 min).

    nice -n 10 .venv/bin/python benchmarks/autoencoder.py --seeds 0 1 2
    .venv/bin/python benchmarks/autoencoder.py --seeds 0 1 2 --reuse_encoder --extra --pseudo_labels 0.5

Each seed runs `i2dl autoencoder run` as a user would (pretraining, fine-tuning, baseline) in a fresh process and
times it. `--reuse_encoder` pretrains only for the first seed and fine-tunes the later seeds from that encoder (the
spread then covers the labeled set, the initialisation and the augmentation, not the autoencoder).
Prints a markdown table for docs/benchmarks.md.

`--plain` runs the stop-8 recipe (no linear probe, 1,000 fine-tuning steps) as a plain PyTorch loop instead (no
Lightning, no run folders; the pretraining draws random batches with replacement and every fine-tuning step sees all
N labels, augmented): the reference used to choose that recipe, and a check that the Lightning stages add no accuracy
loss of their own. The probe and step variants of the current recipe: benchmarks/autoencoder_finetune.py.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def plain(seed: int, num_labels: int, latent: int = 32, width: int = 16, epochs: float = 8.0,
          clean_target: bool = True, steps: int = 1000, ratio: float = 1.0, lr: float = 1e-3) -> dict:
    """The story in a plain PyTorch loop: test accuracy of pretrained and from-scratch, and the seconds each took."""
    import torch
    import torch.nn.functional as F

    from i2dl.autoencoder.data import split_indices
    from i2dl.autoencoder.model import Autoencoder, Classifier
    from i2dl.data.augment import RandomAffine
    from i2dl.data.idx import load_split

    X, Y = load_split("mnist", "train")
    Xt, Yt = load_split("mnist", "test")
    labeled, _, unlabeled = split_indices(Y, num_labels, 100, seed, 10)
    g = torch.Generator().manual_seed(seed)
    aug = RandomAffine(15, 0.15, 0.12)
    xt = Xt.unsqueeze(1).float() / 255

    def accuracy(model) -> float:
        model.eval()
        with torch.no_grad():
            correct = sum(int((model(xt[i:i + 2000]).argmax(1) == Yt[i:i + 2000]).sum()) for i in range(0, 10000, 2000))
        return correct / 10000

    result = {}
    start = time.time()
    torch.manual_seed(seed)  # the autoencoder's initial weights too, so that a row can be reproduced bit for bit
    ae = Autoencoder("conv", latent, width)
    opt = torch.optim.Adam(ae.parameters(), 2e-3)
    total = int(epochs * len(unlabeled) / 128)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 2e-3, total_steps=total, pct_start=0.1)
    for _ in range(total):
        clean = X[unlabeled[torch.randint(len(unlabeled), (128,), generator=g)]].unsqueeze(1).float() / 255
        x = aug(clean, g)  # the configs' recipe: augmented input, and the unaugmented image as the target
        loss = F.mse_loss(ae(x), clean if clean_target else x)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    result["pretrain_seconds"] = time.time() - start
    xl, yl = X[labeled].unsqueeze(1).float() / 255, Y[labeled]
    for method in ("pretrained", "from scratch"):
        start = time.time()
        torch.manual_seed(seed)
        clf = Classifier("conv", latent, width=width)
        encoder_lr = lr
        if method == "pretrained":
            clf.encoder.load_state_dict(ae.encoder.state_dict())
            encoder_lr = lr * ratio
        opt = torch.optim.AdamW([{"params": clf.encoder.parameters(), "lr": encoder_lr},
                                 {"params": clf.head.parameters(), "lr": lr}], weight_decay=1e-4)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, [encoder_lr, lr], total_steps=steps, pct_start=0.1)
        for _ in range(steps):
            loss = F.cross_entropy(clf(aug(xl, g)), yl, label_smoothing=0.1)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        result[method] = accuracy(clf)
        result[f"{method} seconds"] = time.time() - start
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--num_labels", default="100")
    parser.add_argument("--arch", default="conv", choices=["conv", "fc"])
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--reuse_encoder", action="store_true")
    parser.add_argument("--out", default="runs/autoencoder/benchmark")
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="passed on to `i2dl autoencoder run`")
    parser.add_argument("--plain", action="store_true", help="the same recipe in a plain PyTorch loop")
    args = parser.parse_args()
    out = Path(args.out)
    if args.plain:
        print("| seed | pretrain (s) | fine-tune (s) | from scratch (s) | pretrained acc | from-scratch acc |")
        print("|---:|---:|---:|---:|---:|---:|")
        for seed in args.seeds:
            r = plain(seed, int(args.num_labels))
            print(f"| {seed} | {r['pretrain_seconds']:.0f} | {r['pretrained seconds']:.0f} | "
                  f"{r['from scratch seconds']:.0f} | {r['pretrained']:.2%} | {r['from scratch']:.2%} |", flush=True)
        return
    shared = REPO.parent / "shared" / "data"
    if not os.environ.get("I2DL_DATA") and (shared / "mnist").is_dir():
        os.environ["I2DL_DATA"] = str(shared)  # as the Makefile does: the offline copy of the real data
    rows, walls = [], {}
    encoder = None
    for seed in args.seeds:
        run_dir = out / f"{args.arch}_n{args.num_labels}_seed{seed}"
        cmd = [sys.executable, "-m", "i2dl", "autoencoder", "run", "--dataset", args.dataset, "--arch", args.arch,
               "--num_labels", args.num_labels, "--seed", str(seed), "--run_dir", str(run_dir), *args.extra]
        if encoder is not None:
            cmd += ["--encoder_ckpt", str(encoder)]
        print("$", " ".join(cmd[1:]), flush=True)
        start = time.time()
        proc = subprocess.run(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        walls[seed] = time.time() - start
        if proc.returncode != 0:
            print(proc.stdout[-3000:])
            sys.exit(f"seed {seed}: `i2dl autoencoder run` failed with exit status {proc.returncode}")
        with open(run_dir / "results.csv") as fh:
            seed_rows = list(csv.DictReader(fh))
        rows += seed_rows
        print(f"seed {seed}: " + ", ".join(f"{r['method']} {float(r['test_acc']):.2%}" for r in seed_rows)
              + f", wall {walls[seed] / 60:.1f} min", flush=True)
        if args.reuse_encoder and encoder is None:
            encoder = run_dir / "pretrain" / "checkpoints" / "best.ckpt"

    print(f"\n{args.dataset}, {args.arch} encoder, N={args.num_labels} labels; machine: {os.cpu_count()}-core CPU "
          f"({platform.processor() or platform.machine()}); {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n")
    pseudo = "pretrained + pseudo-labels"
    has_pseudo = any(r["method"] == pseudo for r in rows)
    print("| seed | pretrain (s) | fine-tune (s) | from scratch (s) | " + ("pseudo-label stage (s) | " * has_pseudo)
          + "story wall (min) | pretrained acc | from-scratch acc |" + (" + pseudo-labels acc |" * has_pseudo))
    print("|---:" * (7 + 2 * has_pseudo) + "|")
    for seed in args.seeds:
        mine = {r["method"]: r for r in rows if int(r["seed"]) == seed}
        pre, scratch = mine["pretrained"], mine["from scratch"]
        print(f"| {seed} | {float(pre['pretrain_seconds']):.0f} | {float(pre['seconds']):.0f} | "
              f"{float(scratch['seconds']):.0f} | "
              + (f"{float(mine[pseudo]['seconds']):.0f} | " if has_pseudo else "")
              + f"{walls[seed] / 60:.1f} | {float(pre['test_acc']):.2%} | {float(scratch['test_acc']):.2%} |"
              + (f" {float(mine[pseudo]['test_acc']):.2%} |" if has_pseudo else ""))
    for method in ("pretrained", "from scratch") + ((pseudo,) if has_pseudo else ()):
        accs = [100 * float(r["test_acc"]) for r in rows if r["method"] == method]
        sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
        print(f"\n{method}: mean {statistics.mean(accs):.2f}% ± {sd:.2f} (sd over {len(accs)} seeds), "
              f"min {min(accs):.2f}%, max {max(accs):.2f}%", end="")
    print(f"\nstory wall time per seed: " + ", ".join(f"{w / 60:.1f} min" for w in walls.values()))


if __name__ == "__main__":
    main()
