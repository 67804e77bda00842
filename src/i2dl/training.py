"""The thin Lightning layer of the four supervised labs, on top of the Lightning-free core (`i2dl.runs`,
`i2dl.checkpoints`, `i2dl.schedules`, `i2dl.hardware`):

- `LabCLI`: `i2dl <lab> fit|validate|test` with one run folder per run (locked while it runs, `results.json` in
  the shared schema, best/last checkpoints, config, CSV and TensorBoard logs, figures drawn by the lab's callbacks);
- `LabTrainer`: a Trainer whose `precision="auto"` (every config's default) picks bf16 only where the hardware has it;
- `SafeCheckpointIO`: Lightning's checkpoints written atomically and read with the safe unpickler;
- `load_module`, `CompatibleCheckpoints`, `CrossEntropySteps`, `make_optimizer`: what the lab modules share.
"""

from __future__ import annotations

import json
import math
import sys
import warnings
from pathlib import Path
from typing import Any, Callable

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.cli import LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO

from i2dl import checkpoints, configs
from i2dl.checkpoints import check_state_dict_compatible
from i2dl.errors import CheckpointError
from i2dl.hardware import cpu_info, resolve_precision
from i2dl.runs import Run, default_run_dir, is_main_process
from i2dl.schedules import onecycle


class SafeCheckpointIO(TorchCheckpointIO):
    """Checkpoints written to a temporary file and renamed (a kill never leaves half a file), and read with torch's
    safe unpickler (`i2dl.checkpoints.load`) whatever Lightning asks for: resuming, testing or validating a
    checkpoint can never run code from it."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        checkpoints.save(checkpoint, path)

    def load_checkpoint(self, path, map_location=None, weights_only=None) -> dict:
        return checkpoints.load(path)


class LabTrainer(L.Trainer):
    """A Lightning Trainer whose `precision` may be "auto": bf16 autocast where the GPU or CPU computes bf16
    natively (CPUs with AVX512-BF16 or AMX), float32 elsewhere (on an AVX2-only CPU bf16 autocast was 5-8x slower)."""

    def __init__(self, *args: Any, precision: str | int | None = "auto", **kwargs: Any) -> None:
        resolved = resolve_precision(precision, str(kwargs.get("accelerator", "auto")))
        if precision in ("auto", None) and is_main_process():
            why = "native bf16" if cpu_info().native_bf16 else "no native bf16"
            print(f"precision auto -> {resolved} ({cpu_info().model}: {why})")
        self.requested_precision = precision
        super().__init__(*args, precision=resolved, **kwargs)


def load_module(module_class: type[L.LightningModule], path: str | Path) -> L.LightningModule:
    """Rebuild a LightningModule from its checkpoint (hyper-parameters and weights) in eval mode."""
    checkpoint = checkpoints.load(path)
    if not isinstance(checkpoint, dict) or "hyper_parameters" not in checkpoint or "state_dict" not in checkpoint:
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


class CompatibleCheckpoints:
    """LightningModule mix-in: an incompatible checkpoint is a clear error, not a state-dict traceback."""

    def on_load_checkpoint(self, checkpoint: dict) -> None:  # called before the weights are loaded
        check_state_dict_compatible(self.state_dict(), checkpoint.get("state_dict", {}), "the checkpoint")


# --- optimisation -------------------------------------------------------------------------------------------------
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
    return max(1, int(total)) if total != math.inf else 1


def make_optimizer(
    params, name: str, lr: float, weight_decay: float, schedule: str, total_steps: int, pct_start: float
):
    """An "adam", "adamw" or "sgd" (Nesterov momentum 0.9) optimiser over `params` (parameters, or param groups
    with their own "lr"), and for `schedule="onecycle"` the per-step one-cycle schedule (`i2dl.schedules`) that
    warms each group up to its learning rate over `pct_start` of `total_steps` and anneals to ~0 (None for
    `schedule="constant"`)."""
    if name == "sgd":
        optimizer = torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=True, weight_decay=weight_decay)
    else:
        cls = torch.optim.AdamW if name == "adamw" else torch.optim.Adam
        optimizer = cls(params, lr=lr, weight_decay=weight_decay)
    if schedule == "constant":
        return optimizer, None
    return optimizer, onecycle(optimizer, total_steps, pct_start)


def lightning_optimizers(optimizer: torch.optim.Optimizer, scheduler=None):
    """What `configure_optimizers` returns for an optimiser and an optional per-step LR schedule."""
    if scheduler is None:
        return optimizer
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


class CrossEntropySteps:
    """LightningModule mix-in for a classifier trained with cross-entropy (`hparams.label_smoothing`): logs
    `train/loss`, `val/loss`, `val/acc`, `test/loss`, `test/acc`. The module makes `val_acc` and `test_acc`
    (MulticlassAccuracy). `test_step` returns the batch's images, labels and probabilities for figure callbacks."""

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
        self.log("test/loss", F.cross_entropy(logits, y), sync_dist=True)
        self.log("test/acc", self.test_acc)
        return {"images": x, "labels": y, "probs": logits.float().softmax(-1)}


# --- the run folder -----------------------------------------------------------------------------------------------
class RunConfigSaver(SaveConfigCallback):
    """Saves the resolved config as `<run_dir>/config.yaml` (Lightning's default is inside a logger's folder)."""

    def __init__(self, *args, run_dir: Path | None = None, **kwargs) -> None:
        kwargs["save_to_log_dir"] = False
        super().__init__(*args, **kwargs)
        self.run_dir = run_dir

    def save_config(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if trainer.is_global_zero and self.run_dir is not None:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self.parser.save(
                self.config, self.run_dir / "config.yaml", skip_none=False, overwrite=True, multifile=False
            )


def csv_metric_files(run_dir: str | Path) -> list[Path]:
    """Every CSV log of a run, oldest first (a resumed run adds a version)."""
    files = list(Path(run_dir).glob("csv/version_*/metrics.csv"))
    return sorted(files, key=lambda p: int(p.parent.name.split("_")[-1]))


class FigureCallback(Callback):
    """Base of the labs' figure callbacks: drawn once a test ends, on the main process, into `folder`, from what
    the callback collected and what it was given (class names, colours); never from the trainer's datamodule."""

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.folder = self.run_dir / "figures"

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
            self.draw(metrics, pl_module)

    def draw(self, metrics: dict[str, float], pl_module: L.LightningModule) -> None:
        raise NotImplementedError

    def curves(self, title: str) -> None:
        from i2dl.viz import plot_curves

        plot_curves(csv_metric_files(self.run_dir), self.folder / "curves.png", title=title)


FigureFactory = Callable[["LabCLI"], list[Callback]]


def run_folder_loggers(run_dir: Path) -> list:
    """TensorBoard and CSV logs in the run folder (a resumed run adds a version to each)."""
    return [TensorBoardLogger(run_dir, name="tensorboard"), CSVLogger(run_dir, name="csv", flush_logs_every_n_steps=50)]


def run_folder_checkpoints(run_dir: Path, monitor: str | None, mode: str, every_n_steps: int) -> list[Callback]:
    """`checkpoints/best.ckpt` (by `monitor`; the last weights when None) and `checkpoints/last.ckpt`, refreshed
    every `every_n_steps` optimiser steps too, so a killed run loses little."""
    return [
        ModelCheckpoint(
            dirpath=run_dir / "checkpoints",
            filename="best",
            monitor=monitor,
            mode=mode,
            save_top_k=1,
            save_last=True,
            auto_insert_metric_name=False,
            enable_version_counter=False,
        ),
        ModelCheckpoint(
            dirpath=run_dir / "checkpoints",
            filename="last-step",
            save_last=True,
            save_top_k=0,
            every_n_train_steps=every_n_steps,
            enable_version_counter=False,
        ),
    ]


def fit_in_run_folder(
    run_dir: str | Path,
    lab: str,
    config_name: str,
    module: L.LightningModule,
    datamodule: L.LightningDataModule,
    trainer_args: dict[str, Any],
    seed: int = 0,
    monitor: str | None = None,
    mode: str = "max",
    headline: str = "test/acc",
    higher_is_better: bool = True,
    callbacks: list[Callback] = (),
    test: bool = True,
    checkpoint_every_n_steps: int = 200,
) -> dict[str, float]:
    """What `i2dl <lab> fit` does, from Python objects: in a locked run folder, fit `module` on `datamodule` with a
    LabTrainer made of `trainer_args`, test the best checkpoint, write config.yaml and results.json; returns the
    final metrics."""
    import yaml

    from i2dl.files import write_text

    run_dir = Path(run_dir)
    L.seed_everything(seed, verbose=False)
    run = Run(
        run_dir,
        lab,
        config_name,
        headline,
        higher_is_better,
        extra_versions=("lightning", "torchvision", "torchmetrics"),
    )
    run.lock()
    try:
        config = {
            "seed_everything": seed,
            "trainer": dict(trainer_args),
            "model": dict(module.hparams),
            "data": dict(datamodule.hparams),
        }
        config = json.loads(json.dumps(config, default=str))  # plain YAML: tuples as lists, paths as strings
        write_text(run_dir / "config.yaml", yaml.safe_dump(config, sort_keys=False))
        trainer = LabTrainer(
            default_root_dir=str(run_dir),
            logger=run_folder_loggers(run_dir),
            plugins=[SafeCheckpointIO()],
            enable_model_summary=False,
            log_every_n_steps=50,
            callbacks=[*run_folder_checkpoints(run_dir, monitor, mode, checkpoint_every_n_steps), *callbacks],
            **{"accelerator": "auto", "devices": 1, **trainer_args},
        )
        run.start(accelerator=trainer.strategy.root_device.type, precision=str(trainer.precision))
        trainer.fit(module, datamodule=datamodule)
        run.stop_clock()
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        if test:
            trainer.test(module, datamodule=datamodule, ckpt_path=best or None, verbose=False)
        metrics = {
            k: float(v)
            for k, v in trainer.callback_metrics.items()
            if "/" in k and v.numel() == 1 and not k.endswith("_step")
        }
        run.finish(metrics, steps=trainer.global_step, epochs=trainer.current_epoch)
    except BaseException as err:
        run.fail(err)
        raise
    finally:
        run.unlock()
    shown = "  ".join(f"{k} {v:.4f}" for k, v in sorted(metrics.items()) if k.count("/") == 1 and k.startswith("test"))
    print(f"{run_dir}: {shown}", flush=True)
    return metrics


class LabCLI(LightningCLI):
    """`i2dl <lab> fit|validate|test` with one folder per run.

    `<run_dir>` (default `runs/<lab>/<config name>`) holds `checkpoints/best.ckpt` and `last.ckpt`, `config.yaml`,
    `results.json`, `csv/` and `tensorboard/` logs and `figures/`. Running the same command again with
    `--ckpt_path last` resumes where the run stopped. `figures(cli)` makes the lab's figure callbacks, given what
    they need from the datamodule; `headline` is the metric `results.json` and `i2dl runs` show first.
    """

    def __init__(
        self,
        lab: str,
        model_class,
        datamodule_class,
        monitor: str | None,
        mode: str = "max",
        args: list[str] | None = None,
        checkpoint_every_n_steps: int = 200,
        headline: str = "test/acc",
        higher_is_better: bool = True,
        figures: FigureFactory | None = None,
        **kwargs: Any,
    ) -> None:
        self.lab, self.monitor, self.mode = lab, monitor, mode
        self.headline, self.higher_is_better, self.figures = headline, higher_is_better, figures
        self.checkpoint_every_n_steps = checkpoint_every_n_steps
        self.run: Run | None = None
        warnings.filterwarnings("ignore", message=".*args parameter is intended to run from within Python.*")
        warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\)` is deprecated.*")
        trainer_defaults = {"accelerator": "auto", "devices": 1, "log_every_n_steps": 50, "enable_model_summary": False}
        trainer_defaults.update(kwargs.pop("trainer_defaults", {}))
        args = configs.resolve_config_args(lab, list(sys.argv[1:] if args is None else args))
        super().__init__(
            model_class,
            datamodule_class,
            args=args,
            seed_everything_default=0,
            trainer_class=LabTrainer,
            save_config_callback=RunConfigSaver,
            save_config_kwargs={"overwrite": True},
            trainer_defaults=trainer_defaults,
            parser_kwargs={"prog": f"i2dl {lab}"},
            auto_configure_optimizers=False,
            **kwargs,
        )

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument(
            "--run_dir",
            type=str | None,
            default=None,
            help="Folder for this run's checkpoints, logs, config and figures (default: runs/<lab>/<config file name>)",
        )
        parser.add_argument(
            "--test_after_fit",
            type=bool,
            default=True,
            help="After `fit`, evaluate the best checkpoint on the test split and draw the figures",
        )
        parser.add_argument(
            "--checkpoint_every_n_steps",
            type=int,
            default=self.checkpoint_every_n_steps,
            help="Also refresh checkpoints/last.ckpt every this many optimiser steps (mid-epoch)",
        )

    def _parse_ckpt_path(self) -> None:
        # LightningCLI reads the checkpoint's hyper-parameters into the config before anything else; a file the safe
        # loader refuses (or cannot read) is a one-line error here, not an unpickling traceback
        ckpt_path = self.config[self.config.subcommand].get("ckpt_path") if self.config.get("subcommand") else None
        # ... where its values win over the command line's. Settings that only change how a trained network is
        # evaluated (a module's TEST_TIME_SETTINGS, e.g. test-time flips) are the command's to choose:
        # `test --model.tta_mirror [...] --ckpt_path best.ckpt` must not silently test without them
        chosen = {}
        if ckpt_path and Path(ckpt_path).is_file():
            checkpoints.load(ckpt_path)
            model_config = self.config[self.config.subcommand]["model"]
            chosen = {key: model_config.get(key) for key in getattr(self.model_class, "TEST_TIME_SETTINGS", ())}
        super()._parse_ckpt_path()
        for key, value in chosen.items():
            self.config[self.config.subcommand]["model"][key] = value

    def config_name(self) -> str:
        configs_given = self.config[self.subcommand].get("config") or []
        return Path(str(configs_given[-1])).stem if configs_given else "default"

    def run_dir(self) -> Path:
        config = self.config[self.subcommand]
        return Path(config.run_dir) if config.get("run_dir") else default_run_dir(self.lab, self.config_name())

    def instantiate_trainer(self, **kwargs: Any) -> L.Trainer:
        run_dir = self.run_dir()
        self.run = Run(
            run_dir,
            self.lab,
            self.config_name(),
            self.headline,
            self.higher_is_better,
            extra_versions=("lightning", "torchvision", "torchmetrics"),
        ).lock()
        self.save_config_kwargs["run_dir"] = run_dir
        trainer_config = self._get(self.config_init, "trainer", default={})
        kwargs["default_root_dir"] = str(run_dir)
        if trainer_config.get("logger") in (None, True):
            kwargs["logger"] = run_folder_loggers(run_dir)
        if not trainer_config.get("plugins"):
            kwargs["plugins"] = [SafeCheckpointIO()]
        every = self.config[self.subcommand].checkpoint_every_n_steps
        self.trainer_defaults["callbacks"] = [
            *run_folder_checkpoints(run_dir, self.monitor, self.mode, every),
            *(self.figures(self) if self.figures else []),
        ]
        return super().instantiate_trainer(**kwargs)

    def _run_subcommand(self, subcommand: str) -> None:
        try:
            super()._run_subcommand(subcommand)
        except BaseException as err:
            if self.run is not None:
                self.run.fail(err)
            raise
        finally:
            if self.run is not None:
                self.run.unlock()

    # --- results.json and what a finished command prints -------------------------------------------------------
    def _start(self, resume: bool) -> None:
        self.run.start(
            resume=resume, accelerator=self.trainer.strategy.root_device.type, precision=str(self.trainer.precision)
        )

    def _metrics(self) -> dict[str, float]:
        return {
            k: float(v)
            for k, v in self.trainer.callback_metrics.items()
            if "/" in k and v.numel() == 1 and not k.endswith("_step")
        }

    def _headline(self, title: str, training: bool) -> None:
        """Print the final metrics and merge them into `<run_dir>/results.json`."""
        if not self.trainer.is_global_zero:
            return
        metrics = self._metrics()
        shown = "  ".join(f"{k} {v:.4f}" for k, v in sorted(metrics.items()) if k.count("/") == 1)
        print(f"\n{title}: {shown}")
        print(f"run folder: {self.run.run_dir}")
        self.run.finish(metrics, steps=self.trainer.global_step, epochs=self.trainer.current_epoch, count_time=training)

    def before_fit(self) -> None:
        resume = self.config[self.subcommand].get("ckpt_path") is not None
        self._start(resume)

    def after_fit(self) -> None:
        self.run.stop_clock()  # the run's time is its training; the test after it is not counted
        best = self.trainer.checkpoint_callback.best_model_path if self.trainer.checkpoint_callback else ""
        if self.config[self.subcommand].get("test_after_fit") and self.datamodule is not None:
            # the best checkpoint when validation chose one, else the weights as they are
            self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=best or None, verbose=False)
        self._headline("fit finished", training=True)
        if best and self.trainer.is_global_zero:
            print(f"best checkpoint: {best}")

    def before_validate(self) -> None:
        self._start(resume=True)

    def after_validate(self) -> None:
        self._headline("validation", training=False)

    def before_test(self) -> None:
        self._start(resume=True)

    def after_test(self) -> None:
        self._headline("test", training=False)


class ClassificationFigures(FigureCallback):
    """After a test: `test_predictions.png` (the first test images, then misclassified ones, with prediction and
    confidence; wrong ones in red; with `grid`), `confusion_matrix.png` and `curves.png`. Collects what
    `CrossEntropySteps.test_step` returns."""

    def __init__(
        self,
        run_dir: str | Path,
        class_names: list[str],
        title: str,
        grid: bool = True,
        grid_images: int = 40,
        grid_wrong: int = 8,
    ) -> None:
        super().__init__(run_dir)
        self.class_names, self.title, self.grid = list(class_names), title, grid
        self.grid_images, self.grid_wrong = grid_images, grid_wrong
        self._reset()

    def _reset(self) -> None:
        self.examples: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self.confusion = torch.zeros(len(self.class_names), len(self.class_names), dtype=torch.long)

    def on_test_epoch_start(self, trainer, pl_module) -> None:
        self._reset()

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        x, y, probs = outputs["images"].cpu(), outputs["labels"].cpu(), outputs["probs"].detach().cpu()
        pred = probs.argmax(-1)
        n = len(self.class_names)
        self.confusion += torch.bincount(y * n + pred, minlength=n * n).view(n, n)
        if not self.grid:
            return
        keep = torch.zeros(len(x), dtype=torch.bool)
        if batch_idx == 0:
            keep[: self.grid_images - self.grid_wrong] = True
        wrong = (pred != y) & ~keep
        room = self.grid_images - sum(len(part[0]) for part in self.examples) - int(keep.sum())
        keep[wrong.nonzero().flatten()[: max(room, 0)]] = True
        if keep.any():
            self.examples.append((x[keep], y[keep], probs[keep]))

    def on_test_epoch_end(self, trainer, pl_module) -> None:
        if trainer.world_size > 1:  # every process saw a share of the test set
            self.confusion = pl_module.all_gather(self.confusion.to(pl_module.device)).sum(0).cpu()

    def draw(self, metrics: dict[str, float], pl_module) -> None:
        from i2dl.viz import plot_confusion_matrix, plot_image_grid

        names, matrix = self.class_names, self.confusion
        if self.examples:
            x, y, probs = (torch.cat(parts) for parts in zip(*self.examples))
            conf, pred = probs.max(-1)
            titles = [
                f"{names[p]} {c:.0%}" + ("" if p == t else f"\n(true {names[t]})")
                for p, c, t in zip(pred.tolist(), conf.tolist(), y.tolist())
            ]
            plot_image_grid(
                x,
                titles,
                self.folder / "test_predictions.png",
                wrong=(pred != y).tolist(),
                title="test images: predicted class, confidence (wrong ones in red)",
            )
        plot_confusion_matrix(
            matrix,
            names,
            self.folder / "confusion_matrix.png",
            title=f"{self.title}: {int(matrix.trace())}/{int(matrix.sum())} test images correct",
        )
        self.curves(self.title)
