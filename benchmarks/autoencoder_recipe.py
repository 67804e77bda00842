"""How the autoencoder recipe was chosen: a plain PyTorch loop (seed 0, N=100) over pretraining variants and
encoder learning-rate ratios, with an optional pseudo-label round; the exploration table in docs/benchmarks.md.

Pretrained autoencoders are cached in runs/autoencoder/recipe_cache (a cached run skips pretraining, which changes
the shared random stream of the fine-tuning that follows). The table's rows, in the order they were run (fresh cache):

    python benchmarks/autoencoder_recipe.py --scratch                          # input target, 2 epochs: 0.1/0.3/1.0
    python benchmarks/autoencoder_recipe.py --invariant --ratios 0.3 1.0       # original from augmented, 2 epochs
    python benchmarks/autoencoder_recipe.py --invariant --mask 0.25 --latent 64 --ratios 0.3 1.0
    python benchmarks/autoencoder_recipe.py --invariant --epochs 8 --ratios 0 1.0
    python benchmarks/autoencoder_recipe.py --invariant --epochs 8 --ratios 1.0 --pseudo 0.95 --rounds 2
    python benchmarks/autoencoder_recipe.py --invariant --epochs 8 --ratios 1.0 --pseudo 0.5

(torch on 1 thread: OMP_NUM_THREADS=1). Ratio 0 = encoder learning rate 0 (its BatchNorm statistics still adapt).
The pseudo-label accuracy printed uses the unlabeled images' true labels, as a diagnostic only.
"""

import argparse
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / "runs" / "autoencoder" / "recipe_cache"
os.environ.setdefault("I2DL_DATA", str(REPO.parent / "shared" / "data"))
from i2dl.autoencoder.data import split_indices
from i2dl.autoencoder.model import Autoencoder, Classifier
from i2dl.data.augment import RandomAffine
from i2dl.data.idx import load_split

p = argparse.ArgumentParser()
p.add_argument("--latent", type=int, default=32)
p.add_argument("--width", type=int, default=16)
p.add_argument("--epochs", type=float, default=2)
p.add_argument("--mask", type=float, default=0.0)
p.add_argument("--ratios", type=float, nargs="+", default=[0.1, 0.3, 1.0])
p.add_argument("--steps", type=int, default=1000)
p.add_argument("--scratch", action="store_true")
p.add_argument("--seed", type=int, default=0)
p.add_argument("--lr", type=float, default=1e-3)
p.add_argument("--bce", action="store_true")
p.add_argument("--invariant", action="store_true")
p.add_argument("--pseudo", type=float, default=0)
p.add_argument("--rounds", type=int, default=1)
a = p.parse_args()
torch.manual_seed(a.seed)
X, Y = load_split("mnist", "train")
Xt, Yt = load_split("mnist", "test")
labeled, _, unlabeled = split_indices(Y, 100, 100, a.seed, 10)
g = torch.Generator().manual_seed(a.seed)
aug = RandomAffine(15, 0.15, 0.12)
xt = Xt.unsqueeze(1).float() / 255


def accuracy(model):
    model.eval()
    with torch.no_grad():
        return (
            sum(int((model(xt[i : i + 2000]).argmax(1) == Yt[i : i + 2000]).sum()) for i in range(0, 10000, 2000))
            / 10000
        )


key = (
    f"l{a.latent}_w{a.width}_e{a.epochs}_m{a.mask}_{'bce' if a.bce else 'mse'}{'_inv' if a.invariant else ''}_s{a.seed}"
)
CACHE.mkdir(parents=True, exist_ok=True)
path = CACHE / f"{key}.pt"
ae = Autoencoder("conv", a.latent, a.width)
try:
    ae.load_state_dict(torch.load(path))
    print(key, "cached", flush=True)
except FileNotFoundError:
    t = time.time()
    opt = torch.optim.Adam(ae.parameters(), 2e-3)
    total = int(a.epochs * len(unlabeled) / 128)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 2e-3, total_steps=total, pct_start=0.1)
    for i in range(total):
        clean = X[unlabeled[torch.randint(len(unlabeled), (128,), generator=g)]].unsqueeze(1).float() / 255
        x = aug(clean, g)
        inp = x
        if a.invariant:
            x = clean
        if a.mask:
            # mask random 4x4 patches
            m = (torch.rand(x.shape[0], 1, 7, 7, generator=g) > a.mask).float()
            inp = x * F.interpolate(m, size=28, mode="nearest")
        out = ae(inp)
        loss = F.binary_cross_entropy(out, x) if a.bce else F.mse_loss(out, x)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    torch.save(ae.state_dict(), path)
    print(key, f"pretrain {time.time() - t:.0f}s loss {loss.item():.4f}", flush=True)
xl, yl = X[labeled].unsqueeze(1).float() / 255, Y[labeled]
runs = [("scratch", None)] if a.scratch else []
runs += [("pre", r) for r in a.ratios]
for method, ratio in runs:
    t = time.time()
    torch.manual_seed(a.seed)
    clf = Classifier("conv", a.latent, width=a.width)
    elr = a.lr
    if method == "pre":
        clf.encoder.load_state_dict(ae.encoder.state_dict())
        elr = a.lr * ratio
    opt = torch.optim.AdamW(
        [{"params": clf.encoder.parameters(), "lr": elr}, {"params": clf.head.parameters(), "lr": a.lr}],
        weight_decay=1e-4,
    )
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, [elr, a.lr], total_steps=a.steps, pct_start=0.1)
    for _ in range(a.steps):
        clf.train()
        loss = F.cross_entropy(clf(aug(xl, g)), yl, label_smoothing=0.1)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    print(key, method, ratio, a.steps, f"acc {accuracy(clf):.4f} {time.time() - t:.0f}s", flush=True)

    if a.pseudo and method == "pre":
        xu = X[unlabeled].unsqueeze(1).float() / 255
        for rnd in range(a.rounds):
            clf.eval()
            with torch.no_grad():
                probs = torch.cat([clf(xu[i : i + 4000]).softmax(1) for i in range(0, len(xu), 4000)])
            conf, pl = probs.max(1)
            keep = conf >= a.pseudo
            true = Y[unlabeled]
            print(
                f"round {rnd}: pseudo {int(keep.sum())} kept, "
                f"their accuracy {(pl[keep] == true[keep]).float().mean():.4f}",
                flush=True,
            )
            xp, yp = xu[keep], pl[keep]
            t = time.time()
            opt = torch.optim.AdamW(clf.parameters(), lr=a.lr, weight_decay=1e-4)
            sched = torch.optim.lr_scheduler.OneCycleLR(opt, a.lr, total_steps=a.steps, pct_start=0.1)
            for _ in range(a.steps):
                clf.train()
                j = torch.randint(len(xp), (156,), generator=g)
                xb = torch.cat([xl, xp[j]])
                yb = torch.cat([yl, yp[j]])
                loss = F.cross_entropy(clf(aug(xb, g)), yb, label_smoothing=0.1)
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
            print(key, "pseudo", rnd, a.pseudo, f"acc {accuracy(clf):.4f} {time.time() - t:.0f}s", flush=True)
