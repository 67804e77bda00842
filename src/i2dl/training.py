"""What every supervised lab shares: the `LightningCLI` with one folder per run, atomic checkpoints,
checkpoint/model compatibility checks, and the headline a finished command prints."""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO

from i2dl.errors import CheckpointError

RUNS_ROOT = Path(os.environ.get("I2DL_RUNS", "runs"))


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint to a temporary file beside it, then renames: a kill never leaves half a file."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                torch.save(checkpoint, fh)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)


def check_state_dict_compatible(expected: dict[str, torch.Tensor], found: dict[str, Any], source: str) -> None:
    """Raise a one-line CheckpointError naming the first key or shape that differs."""
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    if missing or unexpected:
        detail = f"missing {missing[0]}" if missing else f"unexpected {unexpected[0]}"
        raise CheckpointError(f"{source} does not fit this model ({detail}; "
                              f"{len(missing)} missing, {len(unexpected)} unexpected keys)")
    for key, tensor in expected.items():
        other = found[key]
        if hasattr(other, "shape") and tuple(other.shape) != tuple(tensor.shape):
            raise CheckpointError(f"{source} does not fit this model: {key} has shape {tuple(other.shape)}, "
                                  f"the model expects {tuple(tensor.shape)}")


class CompatibleCheckpoints:
    """LightningModule mix-in: an incompatible checkpoint is a clear error, not a state-dict traceback."""

    def on_load_checkpoint(self, checkpoint: dict) -> None:  # called before the weights are loaded
        check_state_dict_compatible(self.state_dict(), checkpoint.get("state_dict", {}), "the checkpoint")


def total_training_steps(trainer: L.Trainer) -> int:
    """The optimiser steps a `fit` will take, for LR schedules (what `trainer.estimated_stepping_batches` gives).

    Lightning's property builds the fit loop's train loader when `configure_optimizers` runs, which is before a
    checkpoint is restored; that loader then never receives its saved state, so a run resumed mid-epoch would
    start the epoch over. Counting the batches from a fresh loader leaves the fit loop alone.
    """
    source = trainer.datamodule if trainer.datamodule is not None else trainer.lightning_module
    loader = source.train_dataloader()
    try:
        batches = len(loader)
    except TypeError:
        return int(trainer.estimated_stepping_batches)
    if isinstance(loader, torch.utils.data.DataLoader) and trainer.world_size > 1:
        batches = math.ceil(batches / trainer.world_size)  # Lightning adds a DistributedSampler
    limit = trainer.limit_train_batches
    batches = min(batches, limit) if isinstance(limit, int) else int(batches * limit)
    per_epoch = math.ceil(batches / trainer.accumulate_grad_batches)
    total = per_epoch * trainer.max_epochs if trainer.max_epochs not in (None, -1) else math.inf
    if trainer.max_steps is not None and trainer.max_steps > 0:
        total = min(total, trainer.max_steps)
    return max(1, int(total))


def make_optimizer(params, name: str, lr: float, weight_decay: float, schedule: str, total_steps: int,
                   pct_start: float):
    """An "adam", "adamw" or "sgd" (Nesterov momentum 0.9) optimiser over `params` (parameters, or param groups
    with their own "lr"), and for `schedule="onecycle"` a per-step OneCycleLR that warms each group up to its
    learning rate over `pct_start` of `total_steps` and anneals to ~0 (None for `schedule="constant"`)."""
    if name == "sgd":
        optimizer = torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=True, weight_decay=weight_decay)
    else:
        cls = torch.optim.AdamW if name == "adamw" else torch.optim.Adam
        optimizer = cls(params, lr=lr, weight_decay=weight_decay)
    if schedule == "constant":
        return optimizer, None
    max_lr = [group["lr"] for group in optimizer.param_groups]
    return optimizer, torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=max_lr, total_steps=int(total_steps),
                                                          pct_start=pct_start)


def lightning_optimizers(optimizer: torch.optim.Optimizer, scheduler=None):
    """What `configure_optimizers` returns for an optimiser and an optional per-step LR schedule."""
    if scheduler is None:
        return optimizer
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


class CrossEntropySteps:
    """LightningModule mix-in for a classifier trained with cross-entropy (`hparams.label_smoothing`): logs
    `train/loss`, `val/loss`, `val/acc`, `test/loss`, `test/acc` and fills the test confusion matrix. The module
    makes `val_acc`, `test_acc` (MulticlassAccuracy) and `test_confusion` (MulticlassConfusionMatrix)."""

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self(x), y, label_smoothing=self.hparams.label_smoothing)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        self.val_acc(logits, y)
        self.log("val/loss", F.cross_entropy(logits, y), sync_dist=True)
        self.log("val/acc", self.val_acc, prog_bar=True)

    def test_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        self.test_acc(logits, y)
        self.test_confusion.update(logits, y)
        self.log("test/loss", F.cross_entropy(logits, y), sync_dist=True)
        self.log("test/acc", self.test_acc)
        self.keep_test_examples(x, y, logits, batch_idx)

    def keep_test_examples(self, x: torch.Tensor, y: torch.Tensor, logits: torch.Tensor, batch_idx: int) -> None:
        """Called with each scored test batch (for figures); nothing by default."""


def load_checkpoint(path: str | Path) -> dict:
    """Read a checkpoint file; a missing or unreadable one is a one-line error."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # pickle/zip errors come in many types
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(err).__name__}: {err})") from None


def load_module(module_class: type[L.LightningModule], path: str | Path) -> L.LightningModule:
    """Rebuild a LightningModule from its checkpoint (hyper-parameters and weights) in eval mode."""
    checkpoint = load_checkpoint(path)
    if "hyper_parameters" not in checkpoint or "state_dict" not in checkpoint:
        raise CheckpointError(f"{path}: not a Lightning checkpoint of i2dl (no hyper_parameters/state_dict)")
    hparams = {k: v for k, v in checkpoint["hyper_parameters"].items() if not k.startswith("_")}
    try:
        module = module_class(**hparams)
    except TypeError as err:
        raise CheckpointError(f"{path}: was not written by {module_class.__name__} ({err})") from None
    check_state_dict_compatible(module.state_dict(), checkpoint["state_dict"], str(path))
    module.load_state_dict(checkpoint["state_dict"])
    module.extra_checkpoint = {k: v for k, v in checkpoint.items() if k not in {"state_dict", "optimizer_states"}}
    return module.eval()


class RunConfigSaver(SaveConfigCallback):
    """Saves the resolved config as `<run_dir>/config.yaml` (Lightning's default is inside a logger's folder)."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs["save_to_log_dir"] = False
        super().__init__(*args, **kwargs)

    def save_config(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if trainer.is_global_zero:
            run_dir = Path(trainer.default_root_dir)
            run_dir.mkdir(parents=True, exist_ok=True)
            self.parser.save(self.config, run_dir / "config.yaml", skip_none=False, overwrite=True,
                             multifile=False)


def csv_metric_files(run_dir: str | Path) -> list[Path]:
    """Every CSV log of a run, oldest first (a resumed run adds a version)."""
    files = list(Path(run_dir).glob("csv/version_*/metrics.csv"))
    return sorted(files, key=lambda p: int(p.parent.name.split("_")[-1]))


class LabCLI(LightningCLI):
    """`i2dl <lab> fit|validate|test` with one folder per run.

    `<run_dir>` (default `runs/<lab>/<config name>`) holds `checkpoints/best.ckpt` and `last.ckpt`, `config.yaml`,
    `csv/` and `tensorboard/` logs and `figures/`. Running the same command again with `--ckpt_path last`
    resumes where the run stopped.
    """

    def __init__(self, lab: str, model_class, datamodule_class, monitor: str | None, mode: str = "max",
                 args: list[str] | None = None, checkpoint_every_n_steps: int = 200, **kwargs: Any) -> None:
        self.lab, self.monitor, self.mode = lab, monitor, mode
        self.checkpoint_every_n_steps = checkpoint_every_n_steps
        warnings.filterwarnings("ignore", message=".*args parameter is intended to run from within Python.*")
        warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\)` is deprecated.*")
        trainer_defaults = {"accelerator": "auto", "devices": 1, "log_every_n_steps": 50,
                            "enable_model_summary": False}
        trainer_defaults.update(kwargs.pop("trainer_defaults", {}))
        super().__init__(model_class, datamodule_class, args=args, seed_everything_default=0,
                         save_config_callback=RunConfigSaver, save_config_kwargs={"overwrite": True},
                         trainer_defaults=trainer_defaults, parser_kwargs={"prog": f"i2dl {lab}"},
                         auto_configure_optimizers=False, **kwargs)

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument("--run_dir", type=str | None, default=None,
                            help="Folder for this run's checkpoints, logs, config and figures "
                                 "(default: runs/<lab>/<config file name>)")
        parser.add_argument("--test_after_fit", type=bool, default=True,
                            help="After `fit`, evaluate the best checkpoint on the test split and draw the figures")
        parser.add_argument("--checkpoint_every_n_steps", type=int, default=self.checkpoint_every_n_steps,
                            help="Also refresh checkpoints/last.ckpt every this many optimiser steps (mid-epoch)")

    def run_dir(self) -> Path:
        config = self.config[self.subcommand]
        if config.get("run_dir"):
            return Path(config.run_dir)
        configs = config.get("config") or []
        name = Path(str(configs[-1])).stem if configs else "default"
        return RUNS_ROOT / self.lab / name

    def instantiate_trainer(self, **kwargs: Any) -> L.Trainer:
        run_dir = self.run_dir()
        trainer_config = self._get(self.config_init, "trainer", default={})
        kwargs["default_root_dir"] = str(run_dir)
        if trainer_config.get("logger") in (None, True):
            kwargs["logger"] = [TensorBoardLogger(run_dir, name="tensorboard"), CSVLogger(run_dir, name="csv", flush_logs_every_n_steps=50)]
        if not trainer_config.get("plugins"):
            kwargs["plugins"] = [AtomicCheckpointIO()]
        self.trainer_defaults["callbacks"] = [
            ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="best", monitor=self.monitor,
                            mode=self.mode, save_top_k=1, save_last=True, auto_insert_metric_name=False,
                            enable_version_counter=False),
            ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="last-step", save_last=True, save_top_k=0,
                            every_n_train_steps=self.config[self.subcommand].checkpoint_every_n_steps,
                            enable_version_counter=False),
        ]
        return super().instantiate_trainer(**kwargs)

    # --- what a finished command prints -------------------------------------------------------------
    def _headline(self, title: str) -> None:
        """Print the final metrics and write them to `<run_dir>/results.json` (merged with earlier stages)."""
        if not self.trainer.is_global_zero:
            return
        metrics = {k: float(v) for k, v in self.trainer.callback_metrics.items()
                   if "/" in k and v.numel() == 1 and not k.endswith("_step")}
        shown = "  ".join(f"{k} {v:.4f}" for k, v in sorted(metrics.items()))
        print(f"\n{title}: {shown}")
        print(f"run folder: {self.trainer.default_root_dir}")
        results_path = Path(self.trainer.default_root_dir) / "results.json"
        results = json.loads(results_path.read_text()) if results_path.is_file() else {}
        results.update(metrics)
        results.update({"epochs": self.trainer.current_epoch, "global_step": self.trainer.global_step})
        if self._fit_seconds is not None:
            results["fit_seconds"] = round(self._fit_seconds, 2)
        results_path.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")

    _fit_seconds: float | None = None

    def before_fit(self) -> None:
        self._fit_started = time.perf_counter()

    def after_fit(self) -> None:
        self._fit_seconds = time.perf_counter() - self._fit_started
        best = self.trainer.checkpoint_callback.best_model_path if self.trainer.checkpoint_callback else ""
        if self.config[self.subcommand].get("test_after_fit") and self.datamodule is not None:
            # the best checkpoint when validation chose one, else the weights as they are
            self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=best or None, verbose=False)
        self._headline("fit finished")
        if best and self.trainer.is_global_zero:
            print(f"best checkpoint: {best}")

    def after_validate(self) -> None:
        self._headline("validation")

    def after_test(self) -> None:
        self._headline("test")


def dispatch(argv: list[str], usage: str, commands: dict[str, Callable[[list[str]], None]],
             default: Callable[[list[str]], None] | None = None) -> None:
    """A lab's `main`: `-h` prints `usage`, `commands[argv[0]]` runs with the rest, anything else goes to
    `default` (the lab's LightningCLI) or is an unknown-command error with exit status 2."""
    if not argv or argv[0] in {"-h", "--help"}:
        print(usage)
        sys.exit(0 if argv else 2)
    if argv[0] in commands:
        return commands[argv[0]](argv[1:])
    if default is None:
        print(f"{usage.splitlines()[0]}\nerror: unknown command {argv[0]!r}; choose from {', '.join(commands)}",
              file=sys.stderr)
        sys.exit(2)
    return default(argv)
