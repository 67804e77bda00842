"""Autoencoder lab: splits, models, encoder transfer, checkpoint checks, the CLI stages and the whole story."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from conftest import REPO, execute_notebook, run_cli

from i2dl.autoencoder.data import UNKNOWN_LABEL, AutoencoderDataModule, balanced_quotas, split_indices
from i2dl.autoencoder.figures import pca_2d
from i2dl.autoencoder.model import Autoencoder, Classifier
from i2dl.autoencoder.module import AutoencoderModule, EncoderClassifier, load_pretrained_encoder
from i2dl.errors import CheckpointError, I2DLError


# --- splits ------------------------------------------------------------------------------------------------------
def test_balanced_quotas_fill_short_classes_from_the_others():
    g = torch.Generator().manual_seed(0)
    assert balanced_quotas([50] * 10, 100, g) == [10] * 10
    quotas = balanced_quotas([3, 100, 100], 30, g)
    assert quotas[0] == 3 and sum(quotas) == 30 and sorted(quotas[1:]) == [13, 14]
    assert sum(balanced_quotas([5] * 10, 23, g)) == 23


def test_split_is_seeded_class_balanced_and_disjoint(shared_data):
    from i2dl.data.idx import load_split

    _, labels = load_split("mnist", "train", shared_data)
    labeled, val, unlabeled = split_indices(labels, 100, 100, seed=3, num_classes=10)
    assert len(labeled) == 100 and len(val) == 100 and len(unlabeled) == 60000 - 200
    assert torch.bincount(labels[labeled], minlength=10).tolist() == [10] * 10
    assert torch.bincount(labels[val], minlength=10).tolist() == [10] * 10
    everything = torch.cat([labeled, val, unlabeled])
    assert len(everything.unique()) == 60000
    again = split_indices(labels, 100, 100, seed=3, num_classes=10)
    assert torch.equal(again[0], labeled) and torch.equal(again[1], val)
    other = split_indices(labels, 100, 100, seed=4, num_classes=10)
    assert not torch.equal(other[0].sort().values, labeled.sort().values)
    # the validation set does not depend on N, and a larger labeled set contains the smaller one
    bigger = split_indices(labels, 1000, 100, seed=3, num_classes=10)
    assert torch.equal(bigger[1], val) and set(labeled.tolist()) <= set(bigger[0].tolist())
    # 'all': every non-validation image, as balanced as MNIST allows
    whole = split_indices(labels, 59900, 100, seed=3, num_classes=10)
    assert len(whole[0]) == 59900 and len(whole[2]) == 0


@pytest.mark.parametrize(
    "num_labels, val_size, message",
    [
        (5, 100, "num_labels=5: need at least one labeled image per class (10)"),
        (-1, 100, "must not be negative"),
        (59950, 100, "num_labels=59950: only 59900 training images are left"),
        (100, 3, "val_size=3"),
    ],
)
def test_impossible_splits_are_one_line_errors(num_labels, val_size, message):
    labels = torch.arange(60000) % 10
    with pytest.raises(I2DLError, match=message.replace("(", r"\(").replace(")", r"\)")):
        split_indices(labels, num_labels, val_size, seed=0, num_classes=10)


def test_datamodule_loaders(shared_data):
    dm = AutoencoderDataModule(
        data_dir=str(shared_data),
        stage="finetune",
        num_labels=20,
        val_size=30,
        batch_size=16,
        samples_per_epoch=64,
        unlabeled_limit=100,
    )
    dm.setup("fit")
    loader = dm.train_dataloader()
    assert len(loader) == 80 // 16  # 20 labels repeated 4 times to reach 64 images per epoch
    x, y = next(iter(loader))
    assert x.shape == (16, 1, 28, 28) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    assert set(y.tolist()) <= set(range(10))
    dm.hparams.stage = "pretrain"
    x, y = next(iter(dm.train_dataloader()))
    assert (y == UNKNOWN_LABEL).all()  # the unlabeled images' labels never reach the autoencoder
    assert len(dm.unlabeled[0]) == 100
    x, y = next(iter(dm.val_dataloader()))
    assert len(x) == 30 and torch.bincount(y, minlength=10).tolist() == [3] * 10
    dm.setup("test")
    assert len(dm.test[0]) == 10000


def test_clean_target_pretraining_reconstructs_the_unaugmented_image(shared_data):
    """pretrain_target=clean: the input is augmented, the target is the same image untouched, and the module's
    loss compares the reconstruction with that target (not with the input)."""
    dm = AutoencoderDataModule(
        data_dir=str(shared_data),
        stage="pretrain",
        num_labels=20,
        val_size=30,
        batch_size=16,
        unlabeled_limit=64,
        pretrain_target="clean",
    )
    dm.setup("fit")
    x, target = next(iter(dm.train_dataloader()))
    assert x.shape == target.shape == (16, 1, 28, 28)
    originals = dm.unlabeled[0].float().div(255)
    assert all(any(torch.equal(t[0], o) for o in originals) for t in target)  # targets are untouched images
    assert not torch.equal(x, target)  # inputs are augmented
    module = AutoencoderModule(arch="conv", latent_dim=8)
    module.log = lambda *a, **k: None
    with torch.no_grad():
        expected = torch.nn.functional.mse_loss(module(x), target)
        assert torch.isclose(module.training_step((x, target), 0), expected)
        assert not torch.isclose(module.training_step((x, target), 0), torch.nn.functional.mse_loss(module(x), x))
    with pytest.raises(I2DLError, match="needs augment=true"):
        AutoencoderDataModule(pretrain_target="clean", augment=False)


def test_pseudo_label_files_are_checked_against_the_split(shared_data, tmp_path):
    from i2dl.autoencoder.data import save_pseudo_labels, split_key

    def data(path, **kw):
        dm = AutoencoderDataModule(
            data_dir=str(shared_data),
            num_labels=20,
            val_size=30,
            batch_size=16,
            unlabeled_limit=100,
            pseudo_labels=str(path),
            **kw,
        )
        dm.setup("fit")
        return dm

    unlabeled = AutoencoderDataModule(data_dir=str(shared_data), num_labels=20, val_size=30, unlabeled_limit=100)
    unlabeled.setup("fit")
    free = unlabeled.unlabeled_indices
    good = tmp_path / "good.pt"
    save_pseudo_labels(good, split_key("mnist", 20, 30, 0), free[:60], torch.arange(60) % 10, torch.ones(60))
    dm = data(good)
    images, labels = dm.pseudo
    assert len(images) == 60 and torch.equal(labels, torch.arange(60) % 10)
    # 20 labels repeated until they are ~40% of the set (60 * 0.4 / 0.6 = 40 -> 2 copies, but 2000 per epoch wins)
    loader = dm.train_dataloader()
    assert len(loader) * 16 <= 20 * 100 + 60 < (len(loader) + 1) * 16

    other = tmp_path / "other.pt"
    save_pseudo_labels(other, split_key("mnist", 20, 30, 1), free[:5], torch.zeros(5), torch.ones(5))
    with pytest.raises(I2DLError, match="this run's split"):
        data(other)
    taken = tmp_path / "taken.pt"
    not_unlabeled = torch.tensor([i for i in range(1000) if i not in set(free.tolist())][:3])  # labeled, val, unused
    save_pseudo_labels(taken, split_key("mnist", 20, 30, 0), not_unlabeled, torch.zeros(3), torch.ones(3))
    with pytest.raises(I2DLError, match="unlabeled images of this split"):
        data(taken)
    with pytest.raises(I2DLError, match="not found"):
        data(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_text("junk")
    with pytest.raises(I2DLError, match="not a pseudo-label file"):
        data(tmp_path / "junk.pt")


# --- models ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch, latent", [("fc", 20), ("conv", 64), ("conv", 8)])
def test_autoencoder_and_classifier_shapes(arch, latent):
    x = torch.rand(4, 1, 28, 28)
    ae = Autoencoder(arch, latent)
    assert ae.encoder(x).shape == (4, latent)
    out = ae(x)
    assert out.shape == x.shape and 0 <= out.min() and out.max() <= 1
    assert Classifier(arch, latent).eval()(x).shape == (4, 10)


def test_fc_encoder_is_fully_connected_only():
    ae = Autoencoder("fc", 20)
    kinds = {type(m).__name__ for m in ae.modules()}
    assert "Linear" in kinds and not any("Conv" in k for k in kinds)
    assert ae.encoder[-1].out_features == 20 and ae.encoder[2].in_features == 784


def test_pca_finds_the_main_direction():
    t = torch.linspace(-1, 1, 200)
    codes = torch.stack([3 * t, -3 * t, 0.01 * torch.randn(200, generator=torch.Generator().manual_seed(0))], 1)
    points, share = pca_2d(codes)
    assert points.shape == (200, 2) and share[0] > 0.99
    assert torch.allclose(points[:, 0].abs(), (3 * 2**0.5 * t).abs(), atol=1e-2)


# --- encoder transfer and checkpoint checks ----------------------------------------------------------------------
def _autoencoder_checkpoint(path: Path, arch: str, latent: int) -> AutoencoderModule:  # noqa: D103
    module = AutoencoderModule(arch=arch, latent_dim=latent)
    torch.save({"hyper_parameters": dict(module.hparams), "state_dict": module.state_dict()}, path)
    return module


def test_pretrained_encoder_is_loaded_and_modes_set_learning_rates(tmp_path, monkeypatch):
    ae = _autoencoder_checkpoint(tmp_path / "ae.ckpt", "conv", 32)
    clf = EncoderClassifier(arch="conv", latent_dim=32, encoder_ckpt=str(tmp_path / "ae.ckpt"))
    first = "1.0.weight"  # the first convolution (after Normalize)
    assert not torch.equal(clf.model.encoder.state_dict()[first], ae.model.encoder.state_dict()[first])
    clf.setup("fit")
    for key, value in ae.model.encoder.state_dict().items():
        assert torch.equal(clf.model.encoder.state_dict()[key], value), key

    class FakeTrainer:
        pass

    monkeypatch.setattr("i2dl.autoencoder.module.total_training_steps", lambda trainer: 10)

    clf._trainer = FakeTrainer()
    groups = clf.configure_optimizers()["optimizer"].param_groups
    assert [g["initial_lr"] for g in groups] == pytest.approx([1e-4, 1e-3])  # encoder at lr * 0.1
    frozen = EncoderClassifier(
        arch="conv", latent_dim=32, encoder_ckpt=str(tmp_path / "ae.ckpt"), encoder_mode="frozen"
    )
    frozen._trainer = FakeTrainer()
    assert not any(p.requires_grad for p in frozen.model.encoder.parameters())
    assert len(frozen.configure_optimizers()["optimizer"].param_groups) == 1
    scratch = EncoderClassifier(arch="conv", latent_dim=32)  # baseline: every weight at the same lr
    scratch._trainer = FakeTrainer()
    assert [g["initial_lr"] for g in scratch.configure_optimizers()["optimizer"].param_groups] == [1e-3, 1e-3]


@pytest.mark.parametrize(
    "arch, latent, width, named",
    [("fc", 20, None, "arch='fc'"), ("conv", 64, None, "latent_dim=64"), ("conv", 32, 8, "width=8")],
)
def test_encoder_of_another_architecture_is_refused(tmp_path, arch, latent, width, named):
    module = AutoencoderModule(arch=arch, latent_dim=latent, width=width)
    torch.save({"hyper_parameters": dict(module.hparams), "state_dict": module.state_dict()}, tmp_path / "x.ckpt")
    with pytest.raises(CheckpointError, match=named):
        load_pretrained_encoder(tmp_path / "x.ckpt", "conv", 32)


def test_not_an_autoencoder_checkpoint(tmp_path):
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_pretrained_encoder(tmp_path / "junk.ckpt", "conv", 64)
    torch.save({"state_dict": {}}, tmp_path / "other.ckpt")
    with pytest.raises(CheckpointError, match="not an autoencoder checkpoint"):
        load_pretrained_encoder(tmp_path / "other.ckpt", "conv", 64)


# --- the CLI -----------------------------------------------------------------------------------------------------
def _one_error_line(proc) -> str:
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.strip().splitlines() if line.startswith("i2dl: error:")]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    return lines[0]


@pytest.mark.parametrize(
    "value, message",
    [
        ("5", "num_labels=5: need at least one labeled image per class"),
        ("-4", "num_labels=-4: must not be negative"),
        ("60000", "num_labels=60000: only 59900 training images"),
    ],
)
def test_run_refuses_impossible_n(value, message, shared_data, capsys):
    from i2dl.cli import main

    with pytest.raises(SystemExit) as exit_info:  # in-process: the same path as `i2dl autoencoder run ...`
        main(["autoencoder", "run", "--num_labels", value, "--smoke", "--data_dir", str(shared_data)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("i2dl: error: ") and message in err[0]


def test_whole_story_fc_and_encoder_mismatch(tmp_path):
    """`run --arch fc` covers pretrain_fc.yaml and finetune_fc.yaml; its encoder is then refused by the conv
    classifier, through the LightningCLI stage."""
    proc = run_cli(
        "autoencoder", "run", "--arch", "fc", "--smoke", "--run_dir", str(tmp_path / "story"), "--pseudo_labels", "0"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| 100 | pretrained |" in proc.stdout and "| 100 | from scratch |" in proc.stdout
    assert "| 100 | pretrained + pseudo-labels |" in proc.stdout
    story = tmp_path / "story"
    with open(story / "results.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["method"] for r in rows] == ["pretrained", "from scratch", "pretrained + pseudo-labels"]
    # the optional stage: every one of the 512 smoke unlabeled images pseudo-labeled (threshold 0), training went
    # on from the fine-tuned classifier with them
    pseudo = torch.load(story / "pseudo_labels" / "n100_seed0" / "pseudo_labels.pt")
    assert len(pseudo["indices"]) == 512 and pseudo["split"]["num_labels"] == 100
    assert 0 <= pseudo["labels"].min() and pseudo["labels"].max() < 10
    config = (story / "pseudo_labels" / "n100_seed0" / "config.yaml").read_text()
    assert "init_ckpt: " + str(story / "pretrained" / "n100_seed0" / "checkpoints" / "best.ckpt") in config
    assert all(0 <= float(r["test_acc"]) <= 1 for r in rows)
    for name in ("reconstructions.png", "latent_pca.png"):
        assert (story / "pretrain" / "figures" / name).stat().st_size > 1000
    assert list((story / "pretrain" / "tensorboard").rglob("events.out.tfevents.*"))
    assert (story / "pretrained" / "n100_seed0" / "checkpoints" / "best.ckpt").is_file()
    assert (story / "scratch" / "n100_seed0" / "figures" / "confusion_matrix.png").is_file()
    config = (story / "pretrained" / "n100_seed0" / "config.yaml").read_text()
    assert "encoder_ckpt: " + str(story / "pretrain" / "checkpoints" / "best.ckpt") in config

    proc = run_cli(
        "autoencoder",
        "finetune",
        "fit",
        "-c",
        "configs/autoencoder/finetune_conv.yaml",
        "--run_dir",
        str(tmp_path / "bad"),
        "--trainer.max_steps",
        "1",
        "--model.encoder_ckpt",
        str(story / "pretrain" / "checkpoints" / "best.ckpt"),
    )
    line = _one_error_line(proc)
    assert "arch='fc', latent_dim=20" in line and "arch='conv', latent_dim=32" in line


def test_sweep_conv_reuses_one_encoder(tmp_path, shared_data, capsys):
    """`sweep` covers pretrain_conv.yaml and finetune_conv.yaml: one pretraining, both methods per N
    (in-process, as the notebook calls it); with --linear_probe the head first learns on the fixed encoder."""
    from i2dl.autoencoder.cli import main

    sweep = tmp_path / "sw"
    main(
        [
            "sweep",
            "--smoke",
            "--num_labels",
            "20",
            "10",
            "--run_dir",
            str(sweep),
            "--data_dir",
            str(shared_data),
            "--linear_probe",
            "3",
        ]
    )
    with open(sweep / "results.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["num_labels"], r["method"]) for r in rows] == [
        ("10", "pretrained"),
        ("10", "from scratch"),
        ("20", "pretrained"),
        ("20", "from scratch"),
    ]
    assert (sweep / "accuracy_vs_labels.png").stat().st_size > 1000
    assert len(list(sweep.glob("*/checkpoints/best.ckpt"))) == 1  # one autoencoder for every N
    results = json.loads((sweep / "pretrain" / "results.json").read_text())
    assert 0 < results["metrics"]["test/loss"] < 1
    assert "| 20 | from scratch |" in capsys.readouterr().out
    # the linear probe trained the head only (encoder weights as pretrained), and fine-tuning started from it
    encoder = sweep / "pretrain" / "checkpoints" / "best.ckpt"
    probe = sweep / "linear_probe" / "n10_seed0" / "checkpoints" / "best.ckpt"
    probed = torch.load(probe, weights_only=True)["state_dict"]
    pretrained = torch.load(encoder, weights_only=True)["state_dict"]
    head = torch.load(sweep / "scratch" / "n10_seed0" / "checkpoints" / "best.ckpt", weights_only=True)["state_dict"]
    weights = [k for k in pretrained if k.startswith("model.encoder.") and k.endswith("weight")]
    assert weights and all(torch.equal(probed[k], pretrained[k]) for k in weights)
    assert any(k.startswith("model.head.") for k in probed) and set(probed) == set(head)
    probe_config = (sweep / "linear_probe" / "n10_seed0" / "config.yaml").read_text()
    assert "encoder_mode: frozen" in probe_config and "schedule: constant" in probe_config
    assert f"init_ckpt: {probe}" in (sweep / "pretrained" / "n10_seed0" / "config.yaml").read_text()
    assert "init_ckpt: null" in (sweep / "scratch" / "n10_seed0" / "config.yaml").read_text()
    # the pretrained checkpoint is reusable by the stage alone, with `test`
    main(
        [
            "pretrain",
            "test",
            "-c",
            str(REPO / "configs/autoencoder/pretrain_conv.yaml"),
            "--run_dir",
            str(tmp_path / "again"),
            "--trainer.limit_test_batches",
            "1",
            "--trainer.enable_progress_bar",
            "false",
            "--data.data_dir",
            str(shared_data),
            "--ckpt_path",
            str(sweep / "pretrain" / "checkpoints" / "best.ckpt"),
        ]
    )
    assert "test/loss" in capsys.readouterr().out
    assert (tmp_path / "again" / "figures" / "latent_pca.png").is_file()


def test_notebook_runs_with_tiny_settings(tmp_path, monkeypatch):
    _, text = execute_notebook("autoencoder", monkeypatch)
    runs = tmp_path / "runs" / "autoencoder"
    assert (runs / "notebook_smoke" / "results.csv").is_file()
    assert (runs / "notebook_smoke_sweep" / "accuracy_vs_labels.png").is_file()
    assert "test accuracy" in text


def test_every_config_is_covered_by_a_test():
    names = {p.name for p in (REPO / "configs" / "autoencoder").glob("*.yaml")}
    assert names == {
        "pretrain_conv.yaml",
        "pretrain_fc.yaml",
        "finetune_conv.yaml",
        "finetune_fc.yaml",
        "pretrain_contrastive_conv.yaml",
        "finetune_fixmatch_conv.yaml",
        "finetune_fixmatch_long_conv.yaml",  # test_autoencoder_semi.py
    }


def test_fashion_mnist_uses_the_same_splits():
    if not list(__import__("pathlib").Path("/usr/share/datasets/fashion-mnist").glob("*idx*")):
        pytest.skip("Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
    dm = AutoencoderDataModule(dataset="fashion-mnist", num_labels=30, val_size=20, download=False)
    dm.setup("fit")
    assert dm.classes[0] == "T-shirt/top" and len(dm.labeled[0]) == 30
    assert torch.bincount(dm.labeled[1], minlength=10).tolist() == [3] * 10
