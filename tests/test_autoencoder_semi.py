"""The objectives on unlabeled images beyond reconstruction: contrastive pretraining (SimCLR), FixMatch fine-tuning,
their batches and views, and the encoder cache of the story pipeline."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from conftest import run_main

from i2dl.autoencoder.data import AutoencoderDataModule, WithUnlabeled
from i2dl.autoencoder.module import ContrastiveModule, EncoderClassifier, load_pretrained_encoder, step_generator
from i2dl.autoencoder.semi import cutout, fixmatch_loss, nt_xent, strong_augment, weak_augment
from i2dl.data.memory import InMemoryBatches


def digits(n: int = 8) -> torch.Tensor:
    x = torch.zeros(n, 1, 28, 28)
    x[:, :, 6:22, 12:16] = 1.0  # a "1" in the middle
    return x


# --- views and losses ---------------------------------------------------------------------------------------------
def test_views_are_seeded_in_range_and_distorted():
    x = digits()
    a = strong_augment(x, torch.Generator().manual_seed(3))
    b = strong_augment(x, torch.Generator().manual_seed(3))
    c = strong_augment(x, torch.Generator().manual_seed(4))
    assert a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, c)
    assert a.min() >= 0 and a.max() <= 1
    assert (a - x).abs().mean() > 0.05  # strong: far from the input
    weak = weak_augment(x, torch.Generator().manual_seed(0))
    assert (weak - x).abs().sum((1, 2, 3)).max() <= 2 * (16 * 2 + 4 * 2) + 1e-4  # a 16x4 bar moved <= 2 pixels
    assert float(weak.sum()) == pytest.approx(float(x.sum()), rel=0.05)  # nothing cut off


def test_cutout_erases_one_square_per_image():
    ones = torch.ones(16, 1, 28, 28)
    out = cutout(ones, torch.Generator().manual_seed(0), min_size=6, max_size=6)
    erased = (out == 0).sum((1, 2, 3))
    assert ((erased > 0) & (erased <= 7 * 7)).all()


def test_nt_xent_rewards_matching_views():
    torch.manual_seed(0)
    z = torch.randn(32, 16)
    noisy = z + 0.01 * torch.randn_like(z)
    shuffled = z[torch.randperm(32)]
    assert nt_xent(z, noisy) < nt_xent(z, shuffled) - 1.5  # chance level is log(63) = 4.1
    assert nt_xent(z, noisy, temperature=0.1) < 0.5 < nt_xent(z, shuffled, temperature=0.1)


def test_fixmatch_loss_counts_only_confident_pseudo_labels():
    weak = torch.tensor([[10.0, 0, 0], [0.1, 0, 0], [0, 0, 10.0]])
    strong = torch.tensor([[0.0, 5, 0], [0, 0, 0], [0, 0, 10.0]])
    loss, confident, pseudo = fixmatch_loss(weak, strong, threshold=0.95)
    assert confident == pytest.approx(2 / 3) and pseudo.tolist() == [0, 0, 2]
    expected = torch.nn.functional.cross_entropy(strong[[0, 2]], torch.tensor([0, 2]), reduction="sum") / 3
    assert loss == pytest.approx(float(expected), rel=1e-5)
    none, rate, _ = fixmatch_loss(torch.zeros(4, 3), torch.randn(4, 3), threshold=0.95)
    assert none == 0 and rate == 0


# --- batches ---------------------------------------------------------------------------------------------------------
def _paired(seed: int = 0) -> WithUnlabeled:
    g = torch.Generator().manual_seed(123)
    labeled = InMemoryBatches(
        torch.randint(0, 255, (40, 28, 28), dtype=torch.uint8, generator=g),
        torch.arange(40) % 10,
        batch_size=8,
        shuffle=True,
        seed=seed,
        drop_last=True,
    )
    unlabeled = InMemoryBatches(
        torch.randint(0, 255, (50, 28, 28), dtype=torch.uint8, generator=g),
        torch.full((50,), -1),
        batch_size=16,
        shuffle=True,
        seed=seed + 1,
        drop_last=True,
    )
    return WithUnlabeled(labeled, unlabeled)


def test_fixmatch_batches_cycle_the_unlabeled_images_and_resume_mid_epoch():
    straight = _paired()
    batches = [b for _ in range(3) for b in straight]  # 3 labeled epochs of 5 batches; the unlabeled set has 3
    assert len(straight) == 5 and len(batches) == 15
    x, y, u = batches[0]
    assert x.shape == (8, 1, 28, 28) and y.shape == (8,) and u.shape == (16, 1, 28, 28) and u.max() <= 1
    interrupted = _paired()
    for _ in range(2):
        list(interrupted)  # two whole labeled epochs
    it = iter(interrupted)
    next(it), next(it)  # two batches into the third; the unlabeled set has just finished its fourth epoch
    resumed = _paired()
    resumed.load_state_dict(interrupted.state_dict())
    rest, expected = list(resumed), batches[12:15]
    assert len(rest) == 3
    for (x1, y1, u1), (x2, y2, u2) in zip(rest, expected):
        assert torch.equal(x1, x2) and torch.equal(y1, y2) and torch.equal(u1, u2)


def test_datamodule_serves_unlabeled_images_with_each_labeled_batch(shared_data):
    dm = AutoencoderDataModule(
        num_labels=20,
        val_size=20,
        batch_size=10,
        unlabeled_ratio=3,
        samples_per_epoch=40,
        unlabeled_limit=300,
        data_dir=str(shared_data),
    )
    dm.setup("fit")
    loader = dm.train_dataloader()
    x, y, u = next(iter(loader))
    assert x.shape == (10, 1, 28, 28) and u.shape == (30, 1, 28, 28) and len(loader) == 4
    pre = AutoencoderDataModule(
        stage="pretrain", pretrain_on="train", num_labels=20, val_size=20, data_dir=str(shared_data), augment=False
    )
    pre.setup("fit")
    assert len(pre.pretrain[0]) == 60000  # every training image, no label
    assert (pre.pretrain[1] == -1).all()


# --- modules ---------------------------------------------------------------------------------------------------------
def test_contrastive_encoder_starts_a_classifier_and_fixmatch_steps_log(tmp_path):
    module = ContrastiveModule(arch="conv", latent_dim=16, width=8)
    loss = module.contrastive_loss(digits(8), step_generator(0, 0))
    assert loss.ndim == 0 and loss > 0
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, tmp_path / "c.ckpt")
    weights = load_pretrained_encoder(tmp_path / "c.ckpt", "conv", 16, 8)
    assert set(weights) == set(module.model.encoder.state_dict())
    clf = EncoderClassifier(arch="conv", latent_dim=16, width=8, encoder_ckpt=str(tmp_path / "c.ckpt"))
    clf.setup("fit")
    assert torch.equal(clf.model.encoder.state_dict()["1.0.weight"], module.model.encoder.state_dict()["1.0.weight"])
    logged = {}
    clf.log = lambda name, value, **kw: logged.__setitem__(name, value)
    clf.log_dict = lambda values, **kw: logged.update(values)
    loss = clf.training_step((digits(4), torch.tensor([1, 1, 1, 1]), digits(12)), 0)
    assert loss.ndim == 0 and {"train/loss", "train/loss_labeled", "train/loss_unlabeled", "train/confident"} <= set(
        logged
    )
    assert 0 <= float(logged["train/confident"]) <= 1


# --- the pipeline ----------------------------------------------------------------------------------------------------
def test_contrastive_fixmatch_story_and_the_encoder_cache(tmp_path, shared_data):
    """`run --pretrain contrastive --finetune fixmatch` (covers both configs); a second seed reuses the cached
    encoder instead of pretraining again."""
    cache = tmp_path / "encoders"
    common = [
        "autoencoder",
        "run",
        "--smoke",
        "--pretrain",
        "contrastive",
        "--finetune",
        "fixmatch",
        "--linear_probe",
        "2",
        "--encoder_cache",
        str(cache),
        "--data_dir",
        str(shared_data),
    ]
    code, out, err = run_main(*common, "--run_dir", str(tmp_path / "a"))
    assert code == 0, err[-3000:]
    assert "| 100 | pretrained (contrastive) | labels + unlabeled (FixMatch) |" in out
    assert "| 100 | from scratch | labels + unlabeled (FixMatch) |" in out
    encoders = list(cache.iterdir())
    assert len(encoders) == 1 and encoders[0].name.startswith("contrastive-conv-")
    assert (tmp_path / "a" / "pretrain").resolve() == encoders[0].resolve()
    config = (tmp_path / "a" / "pretrained" / "n100_seed0" / "config.yaml").read_text()
    assert "unlabeled_ratio: 7" in config and "threshold: 0.95" in config
    code, out, err = run_main(*common, "--seed", "1", "--run_dir", str(tmp_path / "b"))
    assert code == 0, err[-3000:]
    assert "pretrained encoder (cached)" in out and len(list(cache.iterdir())) == 1
    with open(tmp_path / "b" / "results.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [float(r["pretrain_seconds"]) for r in rows] == [0.0, 0.0]
    results = json.loads((tmp_path / "b" / "results.json").read_text())
    assert results["lab"] == "autoencoder" and results["status"] == "finished"
    assert 0 <= results["headline"]["value"] <= 1


def test_distribution_alignment_pulls_an_over_predicted_class_back():
    from i2dl.autoencoder.semi import align_distribution

    probs = torch.tensor([[0.6, 0.4, 0.0], [0.5, 0.5, 0.0]]) + 1e-3
    running = torch.tensor([0.6, 0.2, 0.2])  # class 0 predicted three times too often
    aligned = align_distribution(probs / probs.sum(1, keepdim=True), running)
    assert torch.allclose(aligned.sum(1), torch.ones(2)) and (aligned.argmax(1) == 1).all()


def test_stage_configs_may_name_callbacks_as_lightningcli_does():
    from lightning.pytorch.callbacks import EMAWeightAveraging

    from i2dl.autoencoder.story import config_callbacks

    args, made = config_callbacks(
        {
            "max_steps": 10,
            "callbacks": [
                {"class_path": "lightning.pytorch.callbacks.EMAWeightAveraging", "init_args": {"decay": 0.99}}
            ],
        }
    )
    assert args == {"max_steps": 10} and len(made) == 1 and isinstance(made[0], EMAWeightAveraging)


def test_the_longer_fixmatch_config_is_fixmatch_three_times_as_long_with_ema_weights(tmp_path, shared_data):
    """finetune_fixmatch_long_conv.yaml (the grid's third column) differs from FixMatch's config only in its budget
    and the EMA callback, and the story trains with that callback (its state is saved in the checkpoint)."""
    from lightning.pytorch.callbacks import EMAWeightAveraging

    from i2dl.autoencoder.story import config_callbacks, stage_config

    short, long = stage_config("finetune_fixmatch_conv.yaml"), stage_config("finetune_fixmatch_long_conv.yaml")
    assert (long["model"], long["data"]) == (short["model"], short["data"])
    args, made = config_callbacks(long["trainer"])
    assert args == {**short["trainer"], "max_steps": 3 * short["trainer"]["max_steps"]}
    assert len(made) == 1 and isinstance(made[0], EMAWeightAveraging)
    code, out, err = run_main(
        "autoencoder", "run", "--smoke", "--pretrain", "none", "--finetune", "fixmatch",
        "--finetune_config", "finetune_fixmatch_long_conv.yaml", "--data_dir", str(shared_data),
        "--run_dir", str(tmp_path / "long"),
    )  # fmt: skip
    assert code == 0, err[-3000:]
    assert "| 100 | from scratch | labels + unlabeled (FixMatch) |" in out
    ckpt = torch.load(tmp_path / "long" / "scratch" / "n100_seed0" / "checkpoints" / "last.ckpt", weights_only=True)
    assert any("EMAWeightAveraging" in key for key in ckpt.get("callbacks", {}))
