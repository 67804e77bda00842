"""Fine-tuning variants on one fixed pretrained encoder, 3 labeled sets (seeds 0, 1, 2; N=100): a plain PyTorch loop,
the same recipe as `benchmarks/autoencoder.py --plain` (AdamW, one-cycle, label smoothing 0.1, RandomAffine), with
one thing changed per row of the fine-tuning table in docs/benchmarks.md. The encoder is the benchmark's
(`runs/autoencoder/benchmark_encoder/best.ckpt`, written by `benchmarks/autoencoder.py`). Rows, as run:

    python benchmarks/autoencoder_finetune.py                           # the configs' recipe: 1,000 steps
    python benchmarks/autoencoder_finetune.py --elastic 0.04 --seeds 0 1   # + elastic deformation (stopped after 2)
    python benchmarks/autoencoder_finetune.py --linear_probe 300 --methods pretrained   # LP-FT
    python benchmarks/autoencoder_finetune.py --steps 2000

(torch on 1 thread: OMP_NUM_THREADS=1; about 50-170 s per fine-tuning on this CPU, depending on the load).
`--linear_probe K` trains the head alone for K steps first (encoder weights fixed, batch-norm in eval mode, AdamW at
the head's lr), then fine-tunes everything as usual (LP-FT, Kumar et al., ICLR 2022). `--ema D` tests an
exponential moving average of the weights (decay D) instead of the final weights.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("I2DL_DATA", str(REPO.parent / "shared" / "data"))

from i2dl.autoencoder.data import split_indices
from i2dl.autoencoder.model import Classifier
from i2dl.autoencoder.module import load_pretrained_encoder
from i2dl.data.augment import RandomAffine
from i2dl.data.idx import load_split


def elastic(x: torch.Tensor, strength: float, grid: int, generator: torch.Generator) -> torch.Tensor:
    """Smooth random displacement (std `strength` of the image size, a `grid` x `grid` field upsampled bicubically)."""
    n = x.shape[0]
    field = torch.randn(n, 2, grid, grid, generator=generator) * strength * 2
    field = F.interpolate(field, size=x.shape[-2:], mode="bicubic", align_corners=False).permute(0, 2, 3, 1)
    identity = F.affine_grid(torch.eye(2, 3).expand(n, 2, 3), list(x.shape), align_corners=False)
    return F.grid_sample(x, identity + field, mode="bilinear", padding_mode="zeros", align_corners=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--encoder_ckpt", default=str(REPO / "runs/autoencoder/benchmark_encoder/best.ckpt"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--methods", nargs="+", default=["pretrained", "from scratch"], choices=["pretrained", "from scratch"]
    )
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--linear_probe", type=int, default=0, help="head-only steps before fine-tuning")
    parser.add_argument("--ema", type=float, default=0.0, help="test an EMA of the weights with this decay")
    parser.add_argument("--elastic", type=float, default=0.0, help="elastic deformation strength (0 = none)")
    parser.add_argument("--elastic_grid", type=int, default=4)
    args = parser.parse_args()

    X, Y = load_split("mnist", "train")
    Xt, Yt = load_split("mnist", "test")
    xt = Xt.unsqueeze(1).float() / 255
    encoder = load_pretrained_encoder(args.encoder_ckpt, "conv", 32, None)
    affine = RandomAffine(15, 0.15, 0.12)

    def augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        x = affine(x, g)
        return elastic(x, args.elastic, args.elastic_grid, g) if args.elastic else x

    @torch.no_grad()
    def accuracy(model: torch.nn.Module) -> float:
        model.eval()
        return (
            sum(int((model(xt[i : i + 2000]).argmax(1) == Yt[i : i + 2000]).sum()) for i in range(0, 10000, 2000)) / 1e4
        )

    def step(model, optimizer, xl, yl, g) -> None:
        loss = F.cross_entropy(model(augment(xl, g)), yl, label_smoothing=0.1)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    results: dict[str, list[float]] = {}
    for seed in args.seeds:
        labeled, _, _ = split_indices(Y, 100, 100, seed, 10)
        xl, yl = X[labeled].unsqueeze(1).float() / 255, Y[labeled]
        for method in args.methods:
            start = time.time()
            torch.manual_seed(seed)
            g = torch.Generator().manual_seed(seed)
            model = Classifier("conv", 32, dropout=0.3)
            if method == "pretrained":
                model.encoder.load_state_dict(encoder)
                head_optimizer = torch.optim.AdamW(model.head.parameters(), args.lr, weight_decay=1e-4)
                for _ in range(args.linear_probe):
                    model.train()
                    model.encoder.eval()
                    step(model, head_optimizer, xl, yl, g)
            optimizer = torch.optim.AdamW(model.parameters(), args.lr, weight_decay=1e-4)
            schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, args.lr, total_steps=args.steps, pct_start=0.1)
            ema = (
                torch.optim.swa_utils.AveragedModel(
                    model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(args.ema), use_buffers=True
                )
                if args.ema
                else None
            )
            for _ in range(args.steps):
                model.train()
                step(model, optimizer, xl, yl, g)
                schedule.step()
                if ema is not None:
                    ema.update_parameters(model)
            acc = accuracy(ema.module if ema is not None else model)
            results.setdefault(method, []).append(acc)
            print(f"seed {seed} {method}: test accuracy {acc:.4f} ({time.time() - start:.0f} s)", flush=True)
    for method, accs in results.items():
        spread = f" ± {statistics.stdev(accs) * 100:.2f}" if len(accs) > 1 else ""
        print(
            f"{method}: {statistics.mean(accs) * 100:.2f}%{spread} ({', '.join(f'{a * 100:.2f}' for a in accs)})",
            flush=True,
        )


if __name__ == "__main__":
    main()
