"""`i2dl autoencoder pretrain|finetune fit|validate|test` (LightningCLI), `run` (the whole story for one N) and
`sweep` (several N: CSV and accuracy-vs-labels plot)."""

from __future__ import annotations

import argparse
import csv
import statistics
import time
from pathlib import Path

import torch

from i2dl.autoencoder.data import AutoencoderDataModule, save_pseudo_labels, split_indices, split_key
from i2dl.autoencoder.figures import AutoencoderFigures, plot_accuracy_vs_labels
from i2dl.autoencoder.module import AutoencoderModule, EncoderClassifier
from i2dl.data.idx import DATASETS, load_split
from i2dl.errors import I2DLError
from i2dl import configs
from i2dl.cli import dispatch
from i2dl.runs import runs_root
from i2dl.training import ClassificationFigures, LabCLI, load_module

HELP = """usage: i2dl autoencoder {pretrain,finetune,run,sweep} ...

  pretrain fit|validate|test   stage 1, the autoencoder on the unlabeled images (LightningCLI), e.g.
                               i2dl autoencoder pretrain fit -c configs/autoencoder/pretrain_conv.yaml
  finetune fit|validate|test   stage 2, encoder + head on the few labels (LightningCLI), e.g.
                               i2dl autoencoder finetune fit -c configs/autoencoder/finetune_conv.yaml \\
                                   --model.encoder_ckpt runs/autoencoder/pretrain_conv/checkpoints/best.ckpt
                               (without --model.encoder_ckpt: the from-scratch baseline)
  run                          the whole story for one N: pretrain, fine-tune, baseline, table
                               i2dl autoencoder run --num_labels 100 [--pseudo_labels 0.5]
  sweep                        several N, both methods: CSV and accuracy-vs-labels plot
                               i2dl autoencoder sweep --num_labels 10 100 1000 all
"""

SMOKE_ARGS = ["--trainer.max_epochs", "1", "--trainer.max_steps", "2", "--trainer.limit_train_batches", "2",
              "--trainer.limit_val_batches", "1", "--trainer.limit_test_batches", "1",
              "--trainer.enable_progress_bar", "false", "--data.unlabeled_limit", "512"]


class PretrainCLI(LabCLI):
    """Stage 1: the datamodule serves the unlabeled images unless a config says otherwise."""

    def add_arguments_to_parser(self, parser) -> None:
        super().add_arguments_to_parser(parser)
        parser.set_defaults({"data.stage": "pretrain"})


class FinetuneCLI(LabCLI):
    """Stage 2: the datamodule serves the labeled images unless a config says otherwise."""

    def add_arguments_to_parser(self, parser) -> None:
        super().add_arguments_to_parser(parser)
        parser.set_defaults({"data.stage": "finetune"})


def pretrain(argv: list[str]) -> PretrainCLI:
    def figures(cli: LabCLI) -> list:
        hp = cli.model.hparams
        return [AutoencoderFigures(cli.run_dir(), cli.datamodule.classes,
                                   f"{hp.arch} autoencoder, latent {hp.latent_dim}")]

    return PretrainCLI("autoencoder", AutoencoderModule, AutoencoderDataModule, monitor="val/loss", mode="min",
                       headline="test/loss", higher_is_better=False, figures=figures, args=argv)


def finetune(argv: list[str]) -> FinetuneCLI:
    # No checkpoint selection by validation here: with ~100 labeled validation images `val/acc` moves in steps of 1%
    # and ties keep the earliest epoch, so "best" was mostly noise (an undertrained epoch). The stage trains for a fixed
    # step budget on an annealed schedule and `checkpoints/best.ckpt` holds the final weights, which are tested.
    def figures(cli: LabCLI) -> list:
        start = "pretrained" if cli.model.hparams.encoder_ckpt else "from scratch"
        return [ClassificationFigures(cli.run_dir(), cli.datamodule.classes, start, grid=False)]

    return FinetuneCLI("autoencoder", EncoderClassifier, AutoencoderDataModule, monitor=None, mode="max",
                       headline="test/acc", figures=figures, args=argv)


def _config(name: str) -> Path:
    """A shipped config (`configs/autoencoder/<name>`), found through the installed package."""
    try:
        return configs.find("autoencoder", name)
    except FileNotFoundError as err:
        raise I2DLError(str(err)) from None


def _num_labels(text: str) -> int | str:
    if text == "all":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number or 'all'") from None


def _story_parser(prog: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--dataset", default="mnist", choices=["mnist", "fashion-mnist"])
    parser.add_argument("--data_dir", default=None, help="default: $I2DL_DATA, else ~/.cache/i2dl")
    parser.add_argument("--arch", default="conv", choices=["conv", "fc"],
                        help="encoder: ours (conv) or the course's fully connected one (fc); picks "
                             "configs/autoencoder/{pretrain,finetune}_<arch>.yaml")
    parser.add_argument("--pretrain_config", default=None, help="default: configs/autoencoder/pretrain_<arch>.yaml")
    parser.add_argument("--finetune_config", default=None, help="default: configs/autoencoder/finetune_<arch>.yaml")
    parser.add_argument("--val_size", type=int, default=100, help="labeled validation images (default 100)")
    parser.add_argument("--encoder_ckpt", default=None,
                        help="reuse this pretrained autoencoder checkpoint instead of pretraining again")
    parser.add_argument("--pretrain_epochs", type=int, default=None, help="default: the config's")
    parser.add_argument("--finetune_steps", type=int, default=None, help="default: the config's")
    parser.add_argument("--encoder_mode", default=None, choices=["full", "lower_lr", "frozen"],
                        help="how the pretrained encoder is fine-tuned (default: the config's)")
    parser.add_argument("--linear_probe", type=int, default=300, metavar="STEPS",
                        help="before fine-tuning the pretrained encoder, train the head alone on it for STEPS steps "
                             "(encoder fixed, constant lr; LP-FT); 0: fine-tune straight away (default 300)")
    parser.add_argument("--run_dir", default=None)
    parser.add_argument("--smoke", action="store_true", help="tiny limits (tests, notebooks): checks the plumbing only")
    return parser


def _common(args, num_labels, seed: int) -> list[str]:
    common = ["--data.dataset", args.dataset, "--data.num_labels", str(num_labels),
              "--data.val_size", str(args.val_size), "--data.seed", str(seed), "--seed_everything", str(seed)]
    if args.data_dir:
        common += ["--data.data_dir", args.data_dir]
    return common + (SMOKE_ARGS if args.smoke else [])


def _check_request(args, num_labels) -> None:
    """Fail in one line before any training if N cannot be served (the same check the datamodule makes)."""
    if num_labels != "all" and num_labels < 0:
        raise I2DLError(f"num_labels={num_labels}: must not be negative")
    _, labels = load_split(args.dataset, "train", args.data_dir)
    n = len(labels) - args.val_size if num_labels == "all" else num_labels
    split_indices(labels, n, args.val_size, 0, len(DATASETS[args.dataset].classes))


def run_pretrain(args, run_dir: Path, num_labels, seed: int) -> tuple[Path, dict]:
    config = args.pretrain_config or _config(f"pretrain_{args.arch}.yaml")
    argv = ["fit", "-c", str(config), "--run_dir", str(run_dir), *_common(args, num_labels, seed)]
    if args.pretrain_epochs is not None and not args.smoke:
        argv += ["--trainer.max_epochs", str(args.pretrain_epochs)]
    cli = pretrain(argv)
    best = Path(cli.trainer.checkpoint_callback.best_model_path)
    return best, {k: float(v) for k, v in cli.trainer.callback_metrics.items() if v.numel() == 1}


def run_finetune(args, run_dir: Path, num_labels, seed: int, encoder_ckpt: Path | None,
                 extra: list[str] = (), linear_probe: int = 0) -> dict:
    """Stage 2 (or, with `linear_probe` steps, the head-only probe before it) through the finetune CLI."""
    config = args.finetune_config or _config(f"finetune_{args.arch}.yaml")
    argv = ["fit", "-c", str(config), "--run_dir", str(run_dir), *_common(args, num_labels, seed),
            "--model.encoder_ckpt", str(encoder_ckpt) if encoder_ckpt else "null", *extra]
    steps = linear_probe or args.finetune_steps
    if steps is not None and not args.smoke:
        argv += ["--trainer.max_steps", str(steps)]
    mode = "frozen" if linear_probe else args.encoder_mode
    if mode is not None and encoder_ckpt:
        argv += ["--model.encoder_mode", mode]
    if linear_probe:
        argv += ["--model.schedule", "constant"]
    start = time.time()
    cli = finetune(argv)
    metrics = {k: float(v) for k, v in cli.trainer.callback_metrics.items() if v.numel() == 1}
    return {"test_acc": metrics.get("test/acc", float("nan")), "val_acc": metrics.get("val/acc", float("nan")),
            "seconds": time.time() - start}


@torch.no_grad()
def make_pseudo_labels(args, classifier_ckpt: Path, num_labels, seed: int, threshold: float, path: Path) -> int:
    """Label this split's unlabeled images with a fine-tuned classifier, keep those whose top softmax probability
    is at least `threshold`, write them to `path`; returns how many were kept."""
    module = load_module(EncoderClassifier, classifier_ckpt)
    data = AutoencoderDataModule(dataset=args.dataset, data_dir=args.data_dir, num_labels=num_labels,
                                 val_size=args.val_size, seed=seed, unlabeled_limit=512 if args.smoke else None)
    data.setup("fit")
    images = data.unlabeled[0]
    probs = torch.cat([module(images[i:i + 4096].unsqueeze(1).float() / 255).softmax(1)
                       for i in range(0, len(images), 4096)])
    confidence, labels = probs.max(1)
    keep = confidence >= threshold
    save_pseudo_labels(path, split_key(args.dataset, num_labels, args.val_size, seed), data.unlabeled_indices[keep],
                       labels[keep], confidence[keep])
    return int(keep.sum())


def story(args, run_dir: Path, num_labels, seed: int, encoder_ckpt: Path | None = None) -> list[dict]:
    """Pretrain (unless given an encoder), fine-tune it (after a head-only probe with `--linear_probe`), train the
    baseline; one row per method. With `--pseudo_labels T`, the optional further stage: the fine-tuned classifier
    labels the unlabeled images, those it gives a probability >= T join the labeled ones, and training goes on from
    it for the same number of steps."""
    rows = []
    pretrain_seconds = 0.0
    if encoder_ckpt is None:
        start = time.time()
        encoder_ckpt, _ = run_pretrain(args, run_dir / "pretrain", num_labels, seed)
        pretrain_seconds = time.time() - start
    for method, ckpt in (("pretrained", encoder_ckpt), ("from scratch", None)):
        folder = run_dir / ("pretrained" if ckpt else "scratch") / f"n{num_labels}_seed{seed}"
        extra, probe_seconds = [], 0.0
        if ckpt and args.linear_probe:
            probe = run_dir / "linear_probe" / f"n{num_labels}_seed{seed}"
            probe_seconds = run_finetune(args, probe, num_labels, seed, ckpt, linear_probe=args.linear_probe)["seconds"]
            extra = ["--model.init_ckpt", str(probe / "checkpoints" / "best.ckpt")]  # encoder + probed head
        result = run_finetune(args, folder, num_labels, seed, ckpt, extra)
        result["seconds"] += probe_seconds
        rows.append({"dataset": args.dataset, "arch": args.arch, "num_labels": num_labels, "seed": seed,
                     "method": method, **result,
                     "pretrain_seconds": pretrain_seconds if ckpt else 0.0})
    threshold = getattr(args, "pseudo_labels", None)
    if threshold is not None:
        fine_tuned = run_dir / "pretrained" / f"n{num_labels}_seed{seed}" / "checkpoints" / "best.ckpt"
        folder = run_dir / "pseudo_labels" / f"n{num_labels}_seed{seed}"
        start = time.time()
        kept = make_pseudo_labels(args, fine_tuned, num_labels, seed, threshold, folder / "pseudo_labels.pt")
        print(f"pseudo-labels: {kept} unlabeled images with probability >= {threshold} -> "
              f"{folder / 'pseudo_labels.pt'}", flush=True)
        result = run_finetune(args, folder, num_labels, seed, None,
                              ["--model.init_ckpt", str(fine_tuned), "--data.pseudo_labels",
                               str(folder / "pseudo_labels.pt"), "--data.batch_size", str(args.pseudo_batch_size)])
        result["seconds"] = time.time() - start
        rows.append({"dataset": args.dataset, "arch": args.arch, "num_labels": num_labels, "seed": seed,
                     "method": "pretrained + pseudo-labels", **result, "pretrain_seconds": pretrain_seconds})
    return rows


def write_csv(rows: list[dict], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def markdown_table(rows: list[dict]) -> str:
    """One line per (N, method): test accuracy (mean ± sd over seeds when several)."""
    lines = ["| labels | method | test accuracy | seeds |", "|---:|---|---:|---:|"]
    keys = list(dict.fromkeys((r["num_labels"], r["method"]) for r in rows))
    for n, method in keys:
        accs = [100 * r["test_acc"] for r in rows if r["num_labels"] == n and r["method"] == method]
        spread = f" ± {statistics.stdev(accs):.2f}" if len(accs) > 1 else ""
        lines.append(f"| {n} | {method} | {statistics.mean(accs):.2f}%{spread} | {len(accs)} |")
    return "\n".join(lines)


def run(argv: list[str]) -> None:
    parser = _story_parser("i2dl autoencoder run", "The whole story for one N: pretrain the autoencoder on the "
                           "unlabeled images, fine-tune its encoder on N labels, train the same classifier from "
                           "scratch on the same labels, and compare test accuracy.")
    parser.add_argument("--num_labels", type=_num_labels, default=100, help="labeled training images (or 'all')")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pseudo_labels", type=float, default=None, metavar="T",
                        help="optional further stage (off by default): pseudo-label the unlabeled images with the "
                             "fine-tuned classifier, keep those with probability >= T, train on with them")
    parser.add_argument("--pseudo_batch_size", type=int, default=256,
                        help="batch size of the pseudo-label stage (labeled and pseudo-labeled images mixed)")
    args = parser.parse_args(argv)
    if args.pseudo_labels is not None and not 0 <= args.pseudo_labels < 1:
        parser.error(f"--pseudo_labels {args.pseudo_labels}: a probability threshold in [0, 1)")
    _check_request(args, args.num_labels)
    run_dir = Path(args.run_dir or runs_root() / "autoencoder" / f"run_{args.arch}_n{args.num_labels}_seed{args.seed}")
    start = time.time()
    encoder = Path(args.encoder_ckpt) if args.encoder_ckpt else None
    rows = story(args, run_dir, args.num_labels, args.seed, encoder)
    total = time.time() - start
    write_csv(rows, run_dir / "results.csv")
    table = markdown_table(rows)
    (run_dir / "results.md").write_text(table + "\n")
    print(f"\n{args.dataset}, {args.arch} encoder, {args.num_labels} labels, seed {args.seed} "
          f"(wall time {total / 60:.1f} min)\n{table}")
    print(f"run folder: {run_dir}  (results.csv, pretrain/figures/, pretrained/, scratch/)")


def sweep(argv: list[str]) -> None:
    parser = _story_parser("i2dl autoencoder sweep", "Pretrain once, then fine-tune and train from scratch for "
                           "each N; writes results.csv and accuracy_vs_labels.png.")
    parser.add_argument("--num_labels", type=_num_labels, nargs="+", default=[10, 100, 1000, "all"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    args = parser.parse_args(argv)
    for n in args.num_labels:
        _check_request(args, n)
    sizes = sorted(args.num_labels, key=lambda n: float("inf") if n == "all" else n)
    run_dir = Path(args.run_dir or runs_root() / "autoencoder" / f"sweep_{args.arch}")
    encoder = Path(args.encoder_ckpt) if args.encoder_ckpt else None
    if encoder is None:  # one autoencoder for all N: trained on the images left unlabeled at the smallest N
        encoder, _ = run_pretrain(args, run_dir / "pretrain", sizes[0], args.seeds[0])
    rows = []
    for seed in args.seeds:
        for n in sizes:
            rows += story(args, run_dir, n, seed, encoder)
            write_csv(rows, run_dir / "results.csv")
    plot = plot_accuracy_vs_labels(
        [{**r, "num_labels": 60000 - args.val_size if r["num_labels"] == "all" else r["num_labels"]} for r in rows],
        run_dir / "accuracy_vs_labels.png", title=f"{args.dataset}: {args.arch} encoder, pretrained vs from scratch")
    print("\n" + markdown_table(rows))
    print(f"wrote {run_dir / 'results.csv'} and {plot}")


def main(argv: list[str]) -> None:
    dispatch(argv, HELP, {"pretrain": pretrain, "finetune": finetune, "run": run, "sweep": sweep})
