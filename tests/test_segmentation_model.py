"""(a) torchvision models with new last layers and partial weight loading; (b) backbone + our decoder; metrics."""

from __future__ import annotations

import pytest
import torch
from torchvision.models import segmentation as tv_segmentation

from i2dl.errors import CheckpointError
from i2dl.segmentation.model import (
    BACKBONES,
    BackboneDecoderSegmenter,
    TorchvisionSegmenter,
    UNetDecoder,
    read_state_dict,
)
from i2dl.segmentation.module import PerImageAccuracy, iou_from_confusion

HEAD = {
    "lraspp_mobilenet_v3_large": ["net.classifier.low_classifier", "net.classifier.high_classifier"],
    "deeplabv3_mobilenet_v3_large": ["net.classifier.4", "net.aux_classifier.4"],
    "fcn_resnet50": ["net.classifier.4", "net.aux_classifier.4"],
    "deeplabv3_resnet50": ["net.classifier.4", "net.aux_classifier.4"],
}


@pytest.mark.parametrize("arch", list(HEAD))
def test_torchvision_builders_have_new_last_layers_for_our_classes(arch):
    torch.manual_seed(0)
    model = TorchvisionSegmenter(arch, num_classes=5, weights=None, weights_backbone=None).eval()
    assert model.load_pretrained() is None  # nothing to load, nothing fetched
    for layer in HEAD[arch]:
        conv = model.get_submodule(layer)
        assert conv.out_channels == 5
    x = torch.rand(1, 3, 72, 88)
    with torch.no_grad():
        out, aux = model.forward_train(x)
        assert model(x).shape == (1, 5, 72, 88)
    assert out.shape == (1, 5, 72, 88)
    assert (aux is None) == (arch == "lraspp_mobilenet_v3_large")


@pytest.mark.parametrize("arch", ["lraspp_mobilenet_v3_large", "deeplabv3_mobilenet_v3_large"])
def test_local_torchvision_state_dict_loads_everything_but_the_new_head(arch, tmp_path):
    """A torchvision state dict for 21 classes (as COCO/VOC weights are) -> our 11-class model: all tensors but the
    final classifier layers come from the file."""
    torch.manual_seed(1)
    kwargs = {} if arch.startswith("lraspp") else {"aux_loss": True}
    source = getattr(tv_segmentation, arch)(weights=None, weights_backbone=None, num_classes=21, **kwargs)
    path = tmp_path / "torchvision_weights.pth"
    torch.save(source.state_dict(), path)
    torch.manual_seed(2)
    model = TorchvisionSegmenter(arch, num_classes=11, weights=str(path))
    report = model.load_pretrained()
    head = tuple(layer.removeprefix("net.") + "." for layer in HEAD[arch])
    expected_new = [k for k in source.state_dict() if k.startswith(head)]
    assert sorted(report.new) == sorted(expected_new) and report.new
    assert sorted(report.loaded) == sorted(k for k in source.state_dict() if not k.startswith(head))
    own = model.net.state_dict()
    for key in report.loaded:
        assert torch.equal(own[key], source.state_dict()[key]), key
    for key in report.new:  # the new head is sized for our classes and not copied
        assert own[key].shape[0] == 11 and source.state_dict()[key].shape[0] == 21
    assert "loaded" in report.summary() and f"{len(report.loaded)}/{len(own)}" in report.summary()


def test_our_checkpoint_of_another_dataset_fine_tunes_with_a_new_head(tmp_path):
    """A segmentation checkpoint of ours (Lightning layout, `model.net.` keys, CamVid's 11 classes) -> MSRC's 23."""
    torch.manual_seed(3)
    camvid = TorchvisionSegmenter("lraspp_mobilenet_v3_large", num_classes=11)
    path = tmp_path / "camvid.ckpt"
    state = {f"model.{k}": v for k, v in camvid.state_dict().items()} | {"class_weights": torch.ones(11)}
    torch.save({"state_dict": state, "hyper_parameters": {"dataset": "camvid"}}, path)
    msrc = TorchvisionSegmenter("lraspp_mobilenet_v3_large", num_classes=23, weights=str(path))
    report = msrc.load_pretrained()
    assert len(report.new) == 4 and not report.unused  # low/high classifier weight + bias
    backbone_key = "backbone.0.0.weight"
    assert torch.equal(msrc.net.state_dict()[backbone_key], camvid.net.state_dict()[backbone_key])


def test_weights_of_another_architecture_are_a_one_line_error(tmp_path):
    path = tmp_path / "resnet.pth"
    torch.save(tv_segmentation.fcn_resnet50(weights=None, weights_backbone=None, aux_loss=True).state_dict(), path)
    model = TorchvisionSegmenter("lraspp_mobilenet_v3_large", num_classes=5, weights=str(path))
    with pytest.raises(CheckpointError, match=r"resnet.pth does not fit this model"):
        model.load_pretrained()
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pth: not a readable weights file"):
        read_state_dict(tmp_path / "junk.pth")
    with pytest.raises(CheckpointError, match="unknown weights 'NOPE'"):
        TorchvisionSegmenter("lraspp_mobilenet_v3_large", num_classes=5, weights="NOPE").load_pretrained()


def test_backbone_decoder_loads_real_imagenet_mobilenet_v2(shared_data):
    path = shared_data / "weights" / "mobilenet_v2_imagenet.pth"
    model = BackboneDecoderSegmenter("mobilenet_v2", num_classes=23, backbone_weights=str(path))
    report = model.load_pretrained()
    state = torch.load(path, map_location="cpu")
    backbone = model.backbone.state_dict()
    assert sorted(report.loaded) == sorted(backbone) and not report.new
    assert report.unused == ["classifier.1.weight", "classifier.1.bias"]
    assert all(torch.equal(backbone[k], state[k]) for k in backbone)
    x = torch.rand(2, 3, 75, 101)  # any size: skips are resized to each other, logits to the input
    with torch.no_grad():
        assert model.eval()(x).shape == (2, 23, 75, 101)


@pytest.mark.parametrize("backbone", ["resnet18", "mobilenet_v3_large", "efficientnet_b0"])
def test_decoder_works_with_several_backbones(backbone):
    model = BackboneDecoderSegmenter(backbone, num_classes=4, decoder_channels=(32, 16, 16, 8)).eval()
    assert len(model.decoder.stages) == len(BACKBONES[backbone]) - 1
    with torch.no_grad():
        assert model(torch.rand(1, 3, 64, 80)).shape == (1, 4, 64, 80)


def test_unet_decoder_needs_one_width_per_fusion():
    with pytest.raises(ValueError, match="decoder needs 2 channel sizes"):
        UNetDecoder([8, 16, 32], [8], num_classes=3)


def test_course_accuracy_is_per_image_mean_and_iou_ignores_void():
    target = torch.tensor([[[0, 0, 1, 255]], [[2, 2, 2, 2]]])
    preds = torch.tensor([[[0, 1, 1, 0]], [[2, 2, 0, 0]]])
    metric = PerImageAccuracy()
    metric.update(preds, target)
    # image 1: 2 of 3 labelled pixels right; image 2: 2 of 4 -> (2/3 + 1/2) / 2; global pixel accuracy would be 4/7
    assert metric.compute().item() == pytest.approx((2 / 3 + 0.5) / 2)
    metric.update(torch.zeros(1, 1, 2, dtype=torch.long), torch.full((1, 1, 2), 255))  # all void: no vote
    assert metric.compute().item() == pytest.approx((2 / 3 + 0.5) / 2)
    confusion = torch.tensor([[1, 1, 0, 0], [0, 1, 0, 0], [2, 0, 2, 0], [0, 0, 0, 0]])  # class 3 absent
    iou = iou_from_confusion(confusion)
    assert iou[:3].tolist() == pytest.approx([1 / 4, 1 / 2, 2 / 4]) and torch.isnan(iou[3])


@pytest.mark.parametrize("frozen_bn", [True, False])
def test_frozen_bn_keeps_the_backbone_statistics_once_unfrozen(frozen_bn):
    """The shared MobileNetV2 has BatchNorm folded into its convolutions (mean 0, variance 1): batch statistics in
    train mode would replace them. With frozen_bn the backbone's BatchNorm stays in eval mode after unfreezing, while
    the decoder's BatchNorm (new layers) keeps training."""
    from i2dl.segmentation.module import SegmentationModule

    module = SegmentationModule(
        approach="backbone_decoder",
        backbone="mobilenet_v2",
        decoder_channels=(16, 8, 8, 8),
        freeze_backbone_epochs=0,
        frozen_bn=frozen_bn,
    )
    module.train()  # as Lightning does after each validation; epoch 0 >= freeze_backbone_epochs: backbone trainable
    backbone_bn = [m for m in module.model.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    decoder_bn = [m for m in module.model.decoder.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert backbone_bn and decoder_bn
    assert all(not m.training for m in backbone_bn) == frozen_bn
    assert all(m.training for m in decoder_bn)
    before = backbone_bn[0].running_mean.clone()
    module.model.forward_train(torch.rand(2, 3, 64, 64))
    assert torch.equal(backbone_bn[0].running_mean, before) == frozen_bn


def test_channels_last_changes_the_layout_not_the_results():
    """The default NHWC layout (faster on CPU) gives the same logits, loss and gradients as the plain layout."""
    from i2dl.segmentation.module import SegmentationModule

    torch.manual_seed(0)
    nhwc = SegmentationModule(approach="backbone_decoder", decoder_channels=(16, 8, 8, 8), channels_last=True)
    nchw = SegmentationModule(approach="backbone_decoder", decoder_channels=(16, 8, 8, 8), channels_last=False)
    nchw.load_state_dict(nhwc.state_dict())
    conv = next(m for m in nhwc.model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    n = nhwc.info.num_classes
    x, y = torch.rand(2, 3, 64, 96), torch.randint(0, n, (2, 64, 96))
    losses = []
    for module in (nhwc, nchw):
        module.eval()
        logits = module(x)
        assert logits.shape == (2, n, 64, 96)
        loss = module.loss(logits, y)
        loss.backward()
        losses.append((logits, loss, conv_grad(module)))
    torch.testing.assert_close(losses[0][0], losses[1][0], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(losses[0][1], losses[1][1], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(losses[0][2], losses[1][2], rtol=1e-3, atol=1e-5)


def conv_grad(module) -> torch.Tensor:
    return next(m for m in module.model.modules() if isinstance(m, torch.nn.Conv2d)).weight.grad.contiguous()


def test_decoder_context_ohem_and_flip_tta():
    """The issue-17 recipe options: ASPP / pool-gate context, hard-pixel loss, mirror averaging at test time."""
    from i2dl.segmentation.module import SegmentationModule

    x = torch.rand(2, 3, 64, 96)
    for context in ("aspp", "pool"):
        module = SegmentationModule(
            dataset="camvid", approach="backbone_decoder", decoder_context=context, channels_last=False
        ).eval()
        assert module(x).shape == (2, 11, 64, 96)
    module = SegmentationModule(
        dataset="camvid", approach="backbone_decoder", loss="ohem", ohem_fraction=0.25, tta="flip", channels_last=False
    ).eval()
    logits = torch.randn(2, 11, 8, 8)
    target = torch.randint(0, 11, (2, 8, 8))
    target[0, 0] = 255  # void pixels never count
    per_pixel = torch.nn.functional.cross_entropy(logits, target, ignore_index=255, reduction="none")
    hardest = per_pixel[target != 255].sort(descending=True).values
    assert module.loss(logits, target, hard_mining=True) == pytest.approx(float(hardest[: len(hardest) // 4].mean()))
    assert module.loss(logits, target) == pytest.approx(float(per_pixel[target != 255].mean()), rel=1e-5)
    with torch.no_grad():
        plain, both = module(x), module.predict_logits(x)
        mirrored = module(x.flip(-1)).flip(-1)
    assert torch.allclose(both, (plain + mirrored) / 2, atol=1e-5)
