"""The few-labels story as a pipeline of Python objects: pretrain an encoder on unlabeled images (cached by its
settings), fine-tune encoder + head on N labels (labels only, or FixMatch on the unlabeled images too), and train
the same classifier from scratch beside it.

Every stage is a packaged config (`configs/autoencoder/*.yaml`, found through `i2dl.configs`) turned into a
datamodule, a module and a `LabTrainer` in its own run folder (`i2dl.training.fit_in_run_folder`), exactly what the
stage's LightningCLI (`i2dl autoencoder pretrain|contrastive|finetune fit -c ...`) builds from the same file.

Pretraining objectives (`Story.pretrain`): "autoencoder" (the lab's route: reconstruction, denoising of geometric
distortions), "contrastive" (SimCLR) or "none". Fine-tuning (`Story.finetune`): "labels" (the lab's) or "fixmatch".
Pretrained encoders live in `<runs>/autoencoder/encoders/<objective>-<arch>-<hash of the settings>/`; a story's run
folder links to the one it used as `pretrain/`. They are trained on every training image with its label unused, so
one encoder serves every N and every seed.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import yaml

from i2dl import configs
from i2dl.autoencoder.data import AutoencoderDataModule, save_pseudo_labels, split_indices, split_key
from i2dl.autoencoder.figures import AutoencoderFigures
from i2dl.autoencoder.module import AutoencoderModule, ContrastiveModule, EncoderClassifier
from i2dl.data.idx import DATASETS, load_split
from i2dl.errors import I2DLError
from i2dl.files import atomic_open, write_text
from i2dl.runs import read_results, runs_root
from i2dl.training import ClassificationFigures, fit_in_run_folder, load_module

PRETRAIN_CONFIGS = {"autoencoder": "pretrain_{arch}.yaml", "contrastive": "pretrain_contrastive_{arch}.yaml"}
FINETUNE_CONFIGS = {"labels": "finetune_{arch}.yaml", "fixmatch": "finetune_fixmatch_{arch}.yaml"}
PRETRAIN_MODULES = {"autoencoder": AutoencoderModule, "contrastive": ContrastiveModule}
METHOD_NAMES = {"autoencoder": "pretrained", "contrastive": "pretrained (contrastive)", "none": "from scratch"}

# tiny limits of `--smoke` (tests, notebooks): they check the plumbing only
SMOKE_TRAINER = {
    "max_epochs": 1,
    "max_steps": 2,
    "limit_train_batches": 2,
    "limit_val_batches": 1,
    "limit_test_batches": 1,
    "enable_progress_bar": False,
}
SMOKE_DATA = {"unlabeled_limit": 512}


@dataclass
class Story:
    """What one story (or one cell of the comparison grid) is: the data split, the two stages and their budgets."""

    dataset: Literal["mnist", "fashion-mnist"] = "mnist"
    data_dir: str | None = None
    arch: Literal["conv", "fc"] = "conv"
    num_labels: int | Literal["all"] = 100
    seed: int = 0
    val_size: int = 100
    pretrain: Literal["autoencoder", "contrastive", "none"] = "autoencoder"
    finetune: Literal["labels", "fixmatch"] = "labels"
    pretrain_epochs: int | None = None
    """default: the pretraining config's"""
    finetune_steps: int | None = None
    """default: the fine-tuning config's"""
    encoder_mode: Literal["full", "lower_lr", "frozen"] | None = None
    linear_probe: int = 300
    """steps of the head alone on the fixed pretrained encoder before fine-tuning (0: none)"""
    encoder_ckpt: str | None = None
    """use this pretrained encoder instead of the cached one"""
    pretrain_config: str | None = None
    finetune_config: str | None = None
    pseudo_labels: float | None = None
    pseudo_batch_size: int = 256
    encoder_cache: str | None = None
    """folder of cached encoders (default <runs>/autoencoder/encoders)"""
    smoke: bool = False
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    """extra settings per stage section, e.g. {"finetune.model": {"threshold": 0.9}}"""

    @property
    def labels_count(self) -> int | str:
        return self.num_labels

    def cell(self) -> str:
        return f"{self.pretrain}+{self.finetune}"


# --- configs -------------------------------------------------------------------------------------------------------
def stage_config(name: str) -> dict[str, Any]:
    """A stage config (shipped, or a file) as a dict with `trainer`, `model` and `data` sections."""
    try:
        path = configs.find("autoencoder", name)
    except FileNotFoundError as err:
        raise I2DLError(str(err)) from None
    values = yaml.safe_load(path.read_text()) or {}
    return {
        "path": str(path),
        "seed_everything": values.get("seed_everything", 0),
        **{k: dict(values.get(k) or {}) for k in ("trainer", "model", "data")},
    }


def _apply(config: dict, stage: str, story: Story) -> dict:
    for key, values in story.overrides.items():
        name, _, section = key.partition(".")
        if name == stage and section in config:
            config[section].update(values)
    if story.smoke:
        config["trainer"].update(SMOKE_TRAINER)
        config["data"].update(SMOKE_DATA)
    return config


def pretrain_stage(story: Story) -> dict:
    config = copy.deepcopy(
        stage_config(story.pretrain_config or PRETRAIN_CONFIGS[story.pretrain].format(arch=story.arch))
    )
    config["data"].update(
        dataset=story.dataset, data_dir=story.data_dir, stage="pretrain", pretrain_on="train", val_size=story.val_size
    )
    if story.pretrain_epochs is not None:
        config["trainer"]["max_epochs"] = story.pretrain_epochs
    return _apply(config, "pretrain", story)


def encoder_key(story: Story, config: dict) -> str:
    """What a pretrained encoder depends on: objective, dataset, model/trainer/data settings (not N, not the seed
    of the label split: pretraining sees every training image, no label)."""
    data = {k: v for k, v in config["data"].items() if k not in ("data_dir", "num_labels", "seed", "val_size")}
    blob = json.dumps(
        {
            "objective": story.pretrain,
            "model": config["model"],
            "trainer": config["trainer"],
            "data": data,
            "seed": config["seed_everything"],
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:10]


# --- stages --------------------------------------------------------------------------------------------------------
def pretrained_encoder(story: Story) -> tuple[Path | None, float]:
    """The pretrained encoder checkpoint for this story (trained now, or found in the cache) and the seconds spent
    training it now (0 when cached)."""
    if story.pretrain == "none":
        return None, 0.0
    if story.encoder_ckpt:
        return Path(story.encoder_ckpt), 0.0
    config = pretrain_stage(story)
    cache = Path(story.encoder_cache) if story.encoder_cache else runs_root() / "autoencoder" / "encoders"
    run_dir = cache / f"{story.pretrain}-{story.arch}-{encoder_key(story, config)}"
    best = run_dir / "checkpoints" / "best.ckpt"
    results = read_results(run_dir)
    if best.is_file() and results and results.get("status") == "finished":
        print(f"pretrained encoder (cached): {best}", flush=True)
        return best, 0.0
    module_class = PRETRAIN_MODULES[story.pretrain]
    model_args = dict(config["model"])
    if story.pretrain == "contrastive":
        model_args.setdefault("seed", config["seed_everything"])
    module = module_class(**model_args)
    data = AutoencoderDataModule(**config["data"])
    title = (
        f"{story.arch} {'autoencoder' if story.pretrain == 'autoencoder' else 'contrastive encoder'}, "
        f"latent {module.hparams.latent_dim}"
    )
    start = time.perf_counter()
    fit_in_run_folder(
        run_dir,
        "autoencoder",
        Path(config["path"]).stem,
        module,
        data,
        config["trainer"],
        seed=config["seed_everything"],
        monitor="val/loss",
        mode="min",
        headline="test/loss",
        higher_is_better=False,
        callbacks=[AutoencoderFigures(run_dir, data.classes, title)],
    )
    return best, time.perf_counter() - start


def finetune_config(story: Story, encoder: Path | None, probe_steps: int = 0) -> dict:
    config = copy.deepcopy(
        stage_config(story.finetune_config or FINETUNE_CONFIGS[story.finetune].format(arch=story.arch))
    )
    config["data"].update(
        dataset=story.dataset,
        data_dir=story.data_dir,
        stage="finetune",
        num_labels=story.num_labels,
        val_size=story.val_size,
        seed=story.seed,
    )
    config["model"]["encoder_ckpt"] = str(encoder) if encoder else None
    config["model"].setdefault("seed", story.seed)
    config["seed_everything"] = story.seed
    if story.finetune_steps is not None:
        config["trainer"]["max_steps"] = story.finetune_steps
    if story.encoder_mode is not None and encoder:
        config["model"]["encoder_mode"] = story.encoder_mode
    if probe_steps:  # the head alone, on the fixed pretrained encoder, at a constant learning rate, labels only
        config["trainer"]["max_steps"] = probe_steps
        config["trainer"].pop("callbacks", None)
        config["model"].update(encoder_mode="frozen", schedule="constant")
        config["data"]["unlabeled_ratio"] = 0
    return _apply(config, "finetune", story)


def config_callbacks(trainer_args: dict) -> tuple[dict, list]:
    """The trainer settings without `callbacks`, and those callbacks instantiated from the config's
    `{class_path, init_args}` entries (as LightningCLI reads them), e.g. Lightning's EMAWeightAveraging."""
    import importlib

    trainer_args = dict(trainer_args)
    made = []
    for entry in trainer_args.pop("callbacks", None) or []:
        module_name, _, name = entry["class_path"].rpartition(".")
        made.append(getattr(importlib.import_module(module_name), name)(**(entry.get("init_args") or {})))
    return trainer_args, made


def run_finetune(story: Story, run_dir: Path, config: dict, title: str) -> dict[str, float]:
    module = EncoderClassifier(**config["model"])
    data = AutoencoderDataModule(**config["data"])
    trainer_args, extra = config_callbacks(config["trainer"])
    start = time.perf_counter()
    # no checkpoint selection by validation: with ~100 labeled validation images val/acc moves in steps of 1% and
    # ties keep the earliest epoch; the stage trains for a fixed step budget and best.ckpt holds the final weights
    metrics = fit_in_run_folder(
        run_dir,
        "autoencoder",
        Path(config["path"]).stem,
        module,
        data,
        trainer_args,
        seed=config["seed_everything"],
        monitor=None,
        mode="max",
        headline="test/acc",
        callbacks=[*extra, ClassificationFigures(run_dir, data.classes, title, grid=False)],
    )
    return {
        "test_acc": metrics.get("test/acc", float("nan")),
        "val_acc": metrics.get("val/acc", float("nan")),
        "seconds": time.perf_counter() - start,
    }


def classifier(story: Story, run_dir: Path, encoder: Path | None, method: str) -> dict[str, float]:
    """Fine-tune (after a linear probe when asked) or train from scratch; one row's numbers."""
    tag = f"n{story.num_labels}_seed{story.seed}"
    probe_seconds, start_from = 0.0, None
    if encoder and story.linear_probe:
        probe_dir = run_dir / "linear_probe" / tag
        probe = run_finetune(
            story, probe_dir, finetune_config(story, encoder, story.linear_probe), f"{method}: linear probe"
        )
        probe_seconds = probe["seconds"]
        start_from = probe_dir / "checkpoints" / "best.ckpt"  # encoder + probed head
    config = finetune_config(story, encoder)
    if start_from is not None:
        config["model"]["init_ckpt"] = str(start_from)
    folder = run_dir / ("pretrained" if encoder else "scratch") / tag
    result = run_finetune(story, folder, config, method)
    result["seconds"] += probe_seconds
    return result


@torch.no_grad()
def make_pseudo_labels(story: Story, classifier_ckpt: Path, threshold: float, path: Path) -> int:
    """Label this split's unlabeled images with a fine-tuned classifier, keep those whose top softmax probability
    is at least `threshold`, write them to `path`; returns how many were kept."""
    module = load_module(EncoderClassifier, classifier_ckpt)
    data = AutoencoderDataModule(
        dataset=story.dataset,
        data_dir=story.data_dir,
        num_labels=story.num_labels,
        val_size=story.val_size,
        seed=story.seed,
        unlabeled_limit=SMOKE_DATA["unlabeled_limit"] if story.smoke else None,
    )
    data.setup("fit")
    images = data.unlabeled[0]
    probs = torch.cat(
        [module(images[i : i + 4096].unsqueeze(1).float() / 255).softmax(1) for i in range(0, len(images), 4096)]
    )
    confidence, labels = probs.max(1)
    keep = confidence >= threshold
    save_pseudo_labels(
        path,
        split_key(story.dataset, story.num_labels, story.val_size, story.seed),
        data.unlabeled_indices[keep],
        labels[keep],
        confidence[keep],
    )
    return int(keep.sum())


def link_encoder(run_dir: Path, encoder: Path) -> None:
    """`<run_dir>/pretrain` -> the encoder's run folder (a story folder shows which encoder it used)."""
    link, target = run_dir / "pretrain", encoder.parent.parent
    run_dir.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() or link.exists():
        if link.is_symlink() and Path(os.readlink(link)) == Path(os.path.relpath(target, run_dir)):
            return
        if not link.is_symlink():
            return  # a folder of an older layout: leave it
        link.unlink()
    link.symlink_to(os.path.relpath(target, run_dir), target_is_directory=True)


def story_rows(story: Story, run_dir: Path, with_baseline: bool = True) -> list[dict]:
    """Pretrain (or reuse the cached encoder), fine-tune, and train the baseline; one row per method. With
    `pseudo_labels`, the optional further stage goes on from the fine-tuned classifier with pseudo-labels."""
    encoder, pretrain_seconds = pretrained_encoder(story)
    if encoder is not None and encoder.is_file() and not story.encoder_ckpt:
        link_encoder(run_dir, encoder)
        encoder = run_dir / "pretrain" / "checkpoints" / "best.ckpt"  # through the link, as the configs show it
    base = {
        "dataset": story.dataset,
        "arch": story.arch,
        "num_labels": story.num_labels,
        "seed": story.seed,
        "finetune": story.finetune,
    }
    rows = []
    starts = [(METHOD_NAMES[story.pretrain], encoder)] if encoder is not None else []
    if with_baseline or encoder is None:
        starts.append(("from scratch", None))
    for method, ckpt in starts:
        result = classifier(story, run_dir, ckpt, method)
        rows.append(
            {
                **base,
                "method": method,
                "pretrain": story.pretrain if ckpt else "none",
                **result,
                "pretrain_seconds": pretrain_seconds if ckpt else 0.0,
            }
        )
    if story.pseudo_labels is not None and encoder is not None:
        tag = f"n{story.num_labels}_seed{story.seed}"
        fine_tuned = run_dir / "pretrained" / tag / "checkpoints" / "best.ckpt"
        folder = run_dir / "pseudo_labels" / tag
        start = time.perf_counter()
        kept = make_pseudo_labels(story, fine_tuned, story.pseudo_labels, folder / "pseudo_labels.pt")
        print(
            f"pseudo-labels: {kept} unlabeled images with probability >= {story.pseudo_labels} -> "
            f"{folder / 'pseudo_labels.pt'}",
            flush=True,
        )
        config = finetune_config(story, None)
        config["model"]["init_ckpt"] = str(fine_tuned)
        config["data"].update(
            pseudo_labels=str(folder / "pseudo_labels.pt"), batch_size=story.pseudo_batch_size, unlabeled_ratio=0
        )
        result = run_finetune(story, folder, config, "pretrained + pseudo-labels")
        result["seconds"] = time.perf_counter() - start
        rows.append(
            {
                **base,
                "method": "pretrained + pseudo-labels",
                "pretrain": story.pretrain,
                **result,
                "pretrain_seconds": pretrain_seconds,
            }
        )
    return rows


def check_request(story: Story) -> None:
    """Fail in one line before any training if N cannot be served (the same check the datamodule makes)."""
    n = story.num_labels
    if n != "all" and n < 0:
        raise I2DLError(f"num_labels={n}: must not be negative")
    _, labels = load_split(story.dataset, "train", story.data_dir)
    count = len(labels) - story.val_size if n == "all" else n
    split_indices(labels, count, story.val_size, 0, len(DATASETS[story.dataset].classes))


# --- tables ---------------------------------------------------------------------------------------------------------
def write_csv(rows: list[dict], path: Path) -> Path:
    import csv

    fields = list(dict.fromkeys(k for row in rows for k in row))
    with atomic_open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return path


def markdown_table(rows: list[dict]) -> str:
    """One line per (N, method, fine-tuning): test accuracy (mean ± sd over seeds when several)."""
    lines = ["| labels | method | fine-tuning | test accuracy | seeds |", "|---:|---|---|---:|---:|"]
    keys = list(dict.fromkeys((r["num_labels"], r["method"], r.get("finetune", "labels")) for r in rows))
    for n, method, tune in keys:
        accs = [
            100 * float(r["test_acc"])
            for r in rows
            if r["num_labels"] == n and r["method"] == method and r.get("finetune", "labels") == tune
        ]
        accs = [a for a in accs if not math.isnan(a)]
        shown = (
            "-"
            if not accs
            else f"{statistics.mean(accs):.2f}%" + (f" ± {statistics.stdev(accs):.2f}" if len(accs) > 1 else "")
        )
        lines.append(
            f"| {n} | {method} | {'labels + unlabeled (FixMatch)' if tune == 'fixmatch' else 'labels only'}"
            f" | {shown} | {len(accs)} |"
        )
    return "\n".join(lines)


def write_tables(rows: list[dict], run_dir: Path) -> str:
    write_csv(rows, run_dir / "results.csv")
    table = markdown_table(rows)
    write_text(run_dir / "results.md", table + "\n")
    return table


def story_settings(story: Story) -> dict:
    return {k: v for k, v in asdict(story).items() if k not in ("data_dir", "overrides")}
