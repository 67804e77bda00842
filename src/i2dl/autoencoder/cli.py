"""`i2dl autoencoder pretrain|contrastive|finetune fit|validate|test` (LightningCLI, one stage from a config),
`run` (the whole story for one N) and `sweep` (several N: CSV and accuracy-vs-labels plot), both built on the
pipeline in `i2dl.autoencoder.story`."""

from __future__ import annotations

import argparse
import time
from dataclasses import fields
from pathlib import Path

from i2dl.autoencoder.data import AutoencoderDataModule
from i2dl.autoencoder.figures import AutoencoderFigures, plot_accuracy_vs_labels
from i2dl.autoencoder.module import AutoencoderModule, ContrastiveModule, EncoderClassifier
from i2dl.autoencoder.story import Story, check_request, markdown_table, story_rows, write_csv, write_tables
from i2dl.cli import dispatch
from i2dl.errors import I2DLError
from i2dl.runs import Run, runs_root
from i2dl.training import ClassificationFigures, LabCLI

HELP = """usage: i2dl autoencoder {pretrain,contrastive,finetune,run,sweep} ...

  pretrain fit|validate|test      stage 1, the lab's autoencoder on the unlabeled images (LightningCLI), e.g.
                                  i2dl autoencoder pretrain fit -c configs/autoencoder/pretrain_conv.yaml
  contrastive fit|validate|test   stage 1, contrastive (SimCLR) pretraining of the same encoder, e.g.
                                  i2dl autoencoder contrastive fit -c configs/autoencoder/pretrain_contrastive_conv.yaml
  finetune fit|validate|test      stage 2, encoder + head on the few labels (LightningCLI), e.g.
                                  i2dl autoencoder finetune fit -c configs/autoencoder/finetune_conv.yaml \\
                                      --model.encoder_ckpt runs/autoencoder/pretrain_conv/checkpoints/best.ckpt
                                  (without --model.encoder_ckpt: the from-scratch baseline;
                                  configs/autoencoder/finetune_fixmatch_conv.yaml: FixMatch on the unlabeled images)
  run                             the whole story for one N: pretrain (cached), fine-tune, baseline, table
                                  i2dl autoencoder run --num_labels 100 [--finetune fixmatch] [--pretrain contrastive]
  sweep                           several N, both methods: CSV and accuracy-vs-labels plot
                                  i2dl autoencoder sweep --num_labels 10 100 1000 all
"""


class StageCLI(LabCLI):
    """A stage's LightningCLI: the datamodule serves the stage's images unless a config says otherwise."""

    stage = "finetune"

    def add_arguments_to_parser(self, parser) -> None:
        super().add_arguments_to_parser(parser)
        parser.set_defaults({"data.stage": self.stage})


class PretrainCLI(StageCLI):
    stage = "pretrain"


class FinetuneCLI(StageCLI):
    stage = "finetune"


def _encoder_figures(kind: str):
    def figures(cli: LabCLI) -> list:
        hp = cli.model.hparams
        return [AutoencoderFigures(cli.run_dir(), cli.datamodule.classes, f"{hp.arch} {kind}, latent {hp.latent_dim}")]

    return figures


def pretrain(argv: list[str]) -> PretrainCLI:
    return PretrainCLI(
        "autoencoder",
        AutoencoderModule,
        AutoencoderDataModule,
        monitor="val/loss",
        mode="min",
        headline="test/loss",
        higher_is_better=False,
        figures=_encoder_figures("autoencoder"),
        args=argv,
    )


def contrastive(argv: list[str]) -> PretrainCLI:
    return PretrainCLI(
        "autoencoder",
        ContrastiveModule,
        AutoencoderDataModule,
        monitor="val/loss",
        mode="min",
        headline="test/loss",
        higher_is_better=False,
        figures=_encoder_figures("contrastive encoder"),
        args=argv,
    )


def finetune(argv: list[str]) -> FinetuneCLI:
    # No checkpoint selection by validation (see `story.run_finetune`): best.ckpt holds the final weights.
    def figures(cli: LabCLI) -> list:
        start = "pretrained" if cli.model.hparams.encoder_ckpt else "from scratch"
        return [ClassificationFigures(cli.run_dir(), cli.datamodule.classes, start, grid=False)]

    return FinetuneCLI(
        "autoencoder",
        EncoderClassifier,
        AutoencoderDataModule,
        monitor=None,
        mode="max",
        headline="test/acc",
        figures=figures,
        args=argv,
    )


# --- run and sweep ---------------------------------------------------------------------------------------------------
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
    parser.add_argument(
        "--arch",
        default="conv",
        choices=["conv", "fc"],
        help="encoder: ours (conv) or the course's fully connected one (fc)",
    )
    parser.add_argument(
        "--pretrain",
        default="autoencoder",
        choices=["autoencoder", "contrastive", "none"],
        help="objective on the unlabeled images: the lab's autoencoder (default), contrastive "
        "(SimCLR), or none (only the from-scratch classifier)",
    )
    parser.add_argument(
        "--finetune",
        default="labels",
        choices=["labels", "fixmatch"],
        help="labels only (the lab's, default) or FixMatch: the unlabeled images too",
    )
    parser.add_argument(
        "--pretrain_config",
        default=None,
        help="default: configs/autoencoder/pretrain_<arch>.yaml (pretrain_contrastive_<arch>.yaml)",
    )
    parser.add_argument(
        "--finetune_config",
        default=None,
        help="default: configs/autoencoder/finetune_<arch>.yaml (finetune_fixmatch_<arch>.yaml)",
    )
    parser.add_argument("--val_size", type=int, default=100, help="labeled validation images (default 100)")
    parser.add_argument(
        "--encoder_ckpt", default=None, help="use this pretrained encoder checkpoint instead of the cached one"
    )
    parser.add_argument(
        "--encoder_cache",
        default=None,
        help="folder of pretrained encoders, kept by their settings (default <runs>/autoencoder/"
        "encoders): a second run with the same pretraining settings reuses its encoder",
    )
    parser.add_argument("--pretrain_epochs", type=int, default=None, help="default: the config's")
    parser.add_argument("--finetune_steps", type=int, default=None, help="default: the config's")
    parser.add_argument(
        "--encoder_mode",
        default=None,
        choices=["full", "lower_lr", "frozen"],
        help="how the pretrained encoder is fine-tuned (default: the config's)",
    )
    parser.add_argument(
        "--linear_probe",
        type=int,
        default=300,
        metavar="STEPS",
        help="before fine-tuning the pretrained encoder, train the head alone on it for STEPS steps "
        "(encoder fixed, constant lr; LP-FT); 0: fine-tune straight away (default 300)",
    )
    parser.add_argument("--no_baseline", action="store_true", help="skip the from-scratch classifier")
    parser.add_argument("--run_dir", default=None)
    parser.add_argument("--smoke", action="store_true", help="tiny limits (tests, notebooks): checks the plumbing only")
    return parser


def _story(args, num_labels, seed: int) -> Story:
    known = {f.name for f in fields(Story)}
    values = {k: v for k, v in vars(args).items() if k in known and v is not None}
    story = Story(**{**values, "num_labels": num_labels, "seed": seed})
    if story.arch == "fc" and (
        story.pretrain == "contrastive"
        and not story.pretrain_config
        or story.finetune == "fixmatch"
        and not story.finetune_config
    ):
        raise I2DLError(
            "contrastive pretraining and FixMatch are configured for the conv encoder; use --arch conv "
            "or give --pretrain_config/--finetune_config"
        )
    return story


def _cell_name(args) -> str:
    parts = [args.arch]
    if args.pretrain != "autoencoder":
        parts.append(args.pretrain)
    if args.finetune != "labels":
        parts.append(args.finetune)
    return "_".join(parts)


def run(argv: list[str]) -> None:
    parser = _story_parser(
        "i2dl autoencoder run",
        "The whole story for one N: pretrain an encoder on the unlabeled "
        "images (or reuse the cached one), fine-tune it on N labels, train the same classifier "
        "from scratch on the same labels, and compare test accuracy.",
    )
    parser.add_argument("--num_labels", type=_num_labels, default=100, help="labeled training images (or 'all')")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--pseudo_labels",
        type=float,
        default=None,
        metavar="T",
        help="optional further stage (off by default): pseudo-label the unlabeled images with the "
        "fine-tuned classifier, keep those with probability >= T, train on with them",
    )
    parser.add_argument(
        "--pseudo_batch_size",
        type=int,
        default=256,
        help="batch size of the pseudo-label stage (labeled and pseudo-labeled images mixed)",
    )
    args = parser.parse_args(argv)
    if args.pseudo_labels is not None and not 0 <= args.pseudo_labels < 1:
        parser.error(f"--pseudo_labels {args.pseudo_labels}: a probability threshold in [0, 1)")
    story = _story(args, args.num_labels, args.seed)
    check_request(story)
    name = f"run_{_cell_name(args)}_n{args.num_labels}_seed{args.seed}"
    run_dir = Path(args.run_dir or runs_root() / "autoencoder" / name)
    record = Run(
        run_dir, "autoencoder", name, "test/acc/" + ("pretrained" if story.pretrain != "none" else "from scratch")
    )
    with record.session():
        start = time.perf_counter()
        rows = story_rows(story, run_dir, with_baseline=not args.no_baseline)
        total = time.perf_counter() - start
        table = write_tables(rows, run_dir)
        record.finish(
            {
                f"test/acc/{'pretrained' if r['pretrain'] != 'none' else 'from scratch'}"
                + ("" if r["method"] != "pretrained + pseudo-labels" else " + pseudo-labels"): r["test_acc"]
                for r in rows
            }
            | {"pretrain_seconds": max(r["pretrain_seconds"] for r in rows)},
            wall_time=round(total, 2),
        )
    print(
        f"\n{args.dataset}, {args.arch} encoder, pretraining {story.pretrain}, fine-tuning {story.finetune}, "
        f"{args.num_labels} labels, seed {args.seed} (wall time {total / 60:.1f} min)\n{table}"
    )
    print(f"run folder: {run_dir}  (results.csv, pretrain/ -> the encoder used, pretrained/, scratch/)")


def sweep(argv: list[str]) -> None:
    parser = _story_parser(
        "i2dl autoencoder sweep",
        "Pretrain once (or reuse the cached encoder), then fine-tune "
        "and train from scratch for each N; writes results.csv and accuracy_vs_labels.png.",
    )
    parser.add_argument("--num_labels", type=_num_labels, nargs="+", default=[10, 100, 1000, "all"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    args = parser.parse_args(argv)
    stories = {(n, seed): _story(args, n, seed) for seed in args.seeds for n in args.num_labels}
    for story in stories.values():
        check_request(story)
    sizes = sorted(args.num_labels, key=lambda n: float("inf") if n == "all" else n)
    run_dir = Path(args.run_dir or runs_root() / "autoencoder" / f"sweep_{_cell_name(args)}")
    record = Run(run_dir, "autoencoder", run_dir.name, "test/acc")
    rows: list[dict] = []
    with record.session():
        for seed in args.seeds:
            for n in sizes:
                rows += story_rows(stories[(n, seed)], run_dir, with_baseline=not args.no_baseline)
                write_csv(rows, run_dir / "results.csv")
        record.finish({f"test/acc/{r['method']}/n{r['num_labels']}/seed{r['seed']}": r["test_acc"] for r in rows})
    val_size = args.val_size
    plot = plot_accuracy_vs_labels(
        [{**r, "num_labels": 60000 - val_size if r["num_labels"] == "all" else r["num_labels"]} for r in rows],
        run_dir / "accuracy_vs_labels.png",
        title=f"{args.dataset}: {args.arch} encoder, {args.pretrain} pretraining vs from scratch",
    )
    print("\n" + markdown_table(rows))
    print(f"wrote {run_dir / 'results.csv'} and {plot}")


def main(argv: list[str]) -> None:
    dispatch(
        argv, HELP, {"pretrain": pretrain, "contrastive": contrastive, "finetune": finetune, "run": run, "sweep": sweep}
    )
