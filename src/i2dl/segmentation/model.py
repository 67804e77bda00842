"""The lab's two segmentation networks as plain `nn.Module`s taking images in [0, 1], shape (B, 3, H, W), and
returning logits (B, C, H, W) at the input size.

(a) `TorchvisionSegmenter`: a ready-made torchvision model (LR-ASPP, DeepLabV3, FCN) whose final classifier layer
    (and auxiliary one) is new, sized for our classes; everything else can come from pretrained weights: torchvision's
    own (downloaded) or a local file, a torchvision state dict or a segmentation checkpoint of ours.
(b) `BackboneDecoderSegmenter`: a torchvision classification network cut into a multi-scale feature extractor
    (`create_feature_extractor`) with our U-Net style decoder (skip connections, upsampling to the input size).

`load_matching_weights` loads what fits and returns a `LoadReport` saying which tensors were loaded and which are new.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torchvision.models import segmentation as tv_segmentation
from torchvision.models.feature_extraction import create_feature_extractor

from i2dl import checkpoints
from i2dl.errors import CheckpointError

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class ImageNetNormalize(nn.Module):
    """(x - mean) / std inside the model, so exported models take raw [0, 1] RGB pixels."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


# --- weights: reading and partial loading --------------------------------------------------------------------
@dataclass
class LoadReport:
    """Which tensors of a model came from `source` and which were left as initialised (the new layers)."""

    source: str
    loaded: list[str] = field(default_factory=list)
    new: list[str] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)  # tensors in the file the model has no place for

    def summary(self) -> str:
        total = len(self.loaded) + len(self.new)
        new = ", ".join(self.new[:6]) + (" ..." if len(self.new) > 6 else "")
        return f"loaded {len(self.loaded)}/{total} tensors from {self.source}; new: {new or 'none'}" + (
            f"; {len(self.unused)} tensors of the file unused" if self.unused else ""
        )


def is_local_weights(value: str | None) -> bool:
    """A weights argument naming a file (rather than a torchvision weights name such as "DEFAULT")."""
    return bool(value) and (
        Path(value).suffix in {".pth", ".pt", ".ckpt", ".bin"} or "/" in value or Path(value).exists()
    )


def read_state_dict(path: str | Path, strip_prefixes: Sequence[str] = ()) -> dict[str, torch.Tensor]:
    """Tensors of a local weights file: a plain state dict, or an i2dl/Lightning checkpoint (its `state_dict`,
    with the LightningModule's `model.` prefix removed). Unreadable files are a one-line CheckpointError."""
    path = Path(path)
    obj = checkpoints.load(path, "weights file")
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        # the network's tensors only (a LightningModule's own buffers, such as class weights, are not weights)
        obj = {k.removeprefix("model."): v for k, v in obj["state_dict"].items() if k.startswith("model.")}
    elif isinstance(obj, dict) and isinstance(obj.get("model"), dict):  # torchvision reference-script checkpoints
        obj = obj["model"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()) or not obj:
        raise CheckpointError(f"{path}: holds no state dict (a dict of tensors)")
    for prefix in strip_prefixes:
        if obj and all(k.startswith(prefix) for k in obj):
            obj = {k.removeprefix(prefix): v for k, v in obj.items()}
    return obj


def load_matching_weights(
    model: nn.Module,
    state: dict[str, torch.Tensor],
    source: str,
    new_prefixes: Sequence[str] = (),
    optional_prefixes: Sequence[str] = (),
) -> LoadReport:
    """Load every tensor of `model` from `state` except those under `new_prefixes` (the replaced layers).

    Tensors under `optional_prefixes` (e.g. an auxiliary head the source lacked) may be absent and stay new. Any
    other absent tensor, or one of another shape, means the file is for another architecture: CheckpointError.
    """
    report = LoadReport(source)
    own = model.state_dict()
    chosen = {}
    for key, tensor in own.items():
        if key.startswith(tuple(new_prefixes)):
            report.new.append(key)
        elif key in state:
            if tuple(state[key].shape) != tuple(tensor.shape):
                raise CheckpointError(
                    f"{source} does not fit this model: {key} has shape {tuple(state[key].shape)}, "
                    f"the model expects {tuple(tensor.shape)}"
                )
            chosen[key] = state[key]
            report.loaded.append(key)
        elif key.startswith(tuple(optional_prefixes)):
            report.new.append(key)
        else:
            missing = [
                k for k in own if k not in state and not k.startswith(tuple(new_prefixes) + tuple(optional_prefixes))
            ]
            raise CheckpointError(
                f"{source} does not fit this model (missing {key}; {len(missing)} tensors missing, "
                f"{sum(k in own for k in state)} of the file's {len(state)} match)"
            )
    model.load_state_dict(chosen, strict=False)
    report.unused = [k for k in state if k not in own]
    return report


def _torchvision_weights(builder_name: str, value: str):
    """A torchvision weights enum member from "DEFAULT" or a member name such as "COCO_WITH_VOC_LABELS_V1"."""
    enum = torchvision.models.get_model_weights(builder_name)
    try:
        return enum.DEFAULT if value.upper() == "DEFAULT" else enum[value]
    except KeyError:
        raise CheckpointError(
            f"unknown weights {value!r} for {builder_name}; choose DEFAULT, "
            f"{', '.join(m.name for m in enum)} or a local .pth/.ckpt file"
        ) from None


def _download_state_dict(weights) -> dict[str, torch.Tensor]:
    try:
        return weights.get_state_dict(progress=True, check_hash=True)
    except (OSError, RuntimeError) as err:  # URLError is an OSError
        raise CheckpointError(
            f"could not fetch torchvision weights {weights} ({type(err).__name__}: {err}); "
            f"offline, pass a local file (a state dict or an i2dl checkpoint) or null"
        ) from None


# --- (a) torchvision segmentation models with a new last layer ---------------------------------------------------
# builder -> (names of the final classifier layers that get replaced, whether it has an auxiliary head)
TORCHVISION_MODELS: dict[str, tuple[tuple[str, ...], bool]] = {
    "lraspp_mobilenet_v3_large": (("classifier.low_classifier.", "classifier.high_classifier."), False),
    "deeplabv3_mobilenet_v3_large": (("classifier.4.", "aux_classifier.4."), True),
    "fcn_resnet50": (("classifier.4.", "aux_classifier.4."), True),
    "deeplabv3_resnet50": (("classifier.4.", "aux_classifier.4."), True),
}


class TorchvisionSegmenter(nn.Module):
    """A torchvision segmentation model (`self.net`) for `num_classes`, with its last layer(s) new.

    Args:
        arch: one of TORCHVISION_MODELS.
        weights: None (random), "DEFAULT" or a torchvision weights name (downloaded), or a local file: a
            torchvision state dict or an i2dl segmentation checkpoint of the same architecture (any classes).
        weights_backbone: None, "DEFAULT"/a name (downloaded ImageNet weights) or a local classification state dict
            of the backbone network (`mobilenet_v3_large` / `resnet50`). Ignored when `weights` is given.
        aux_loss: keep the auxiliary FCN head (DeepLabV3, FCN); it is used for training only.
    """

    def __init__(
        self,
        arch: str,
        num_classes: int,
        weights: str | None = None,
        weights_backbone: str | None = None,
        aux_loss: bool = True,
    ) -> None:
        super().__init__()
        if arch not in TORCHVISION_MODELS:
            raise CheckpointError(
                f"unknown torchvision segmentation model {arch!r}; choose from {', '.join(TORCHVISION_MODELS)}"
            )
        self.arch = arch
        self.head_prefixes, has_aux = TORCHVISION_MODELS[arch]
        self.aux_loss = aux_loss and has_aux
        self.weights, self.weights_backbone = weights, weights_backbone
        builder = getattr(tv_segmentation, arch)
        kwargs = {"aux_loss": self.aux_loss} if has_aux else {}
        backbone = None
        if weights is None and weights_backbone and not is_local_weights(weights_backbone):
            enum = "MobileNet_V3_Large_Weights" if "mobilenet" in arch else "ResNet50_Weights"
            try:
                backbone = torchvision.models.get_weight(f"{enum}.{weights_backbone}")
            except (KeyError, ValueError):
                raise CheckpointError(
                    f"unknown backbone weights {weights_backbone!r}; choose DEFAULT, a name of "
                    f"{enum} or a local state dict"
                ) from None
        try:
            self.net = builder(weights=None, weights_backbone=backbone, num_classes=num_classes, **kwargs)
        except (OSError, RuntimeError) as err:
            raise CheckpointError(
                f"could not fetch backbone weights {weights_backbone!r} "
                f"({type(err).__name__}: {err}); offline, pass a local state dict or null"
            ) from None
        self.normalize = ImageNetNormalize()
        self.num_classes = num_classes
        self.load_report: LoadReport | None = None

    @property
    def backbone(self) -> nn.Module:
        return self.net.backbone

    def load_pretrained(self) -> LoadReport | None:
        """Load `weights` (everything but the new last layers) or else a local `weights_backbone`."""
        if self.weights:
            if is_local_weights(self.weights):
                state = read_state_dict(self.weights, strip_prefixes=("net.",))
                source = str(self.weights)
            else:
                weights = _torchvision_weights(self.arch, self.weights)
                state, source = _download_state_dict(weights), f"torchvision {weights}"
            optional = ("aux_classifier.",) if self.aux_loss else ()
            state = {k: v for k, v in state.items() if self.aux_loss or not k.startswith("aux_classifier.")}
            self.load_report = load_matching_weights(
                self.net, state, source, new_prefixes=self.head_prefixes, optional_prefixes=optional
            )
        elif self.weights_backbone and is_local_weights(self.weights_backbone):
            self.load_report = load_backbone_weights(self.net.backbone, self.weights_backbone)
        return self.load_report

    def forward_train(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Main and auxiliary logits (the auxiliary ones are None without an aux head)."""
        out = self.net(self.normalize(x))
        return out["out"], out.get("aux")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalize(x))["out"]


def load_backbone_weights(backbone: nn.Module, path: str) -> LoadReport:
    """A classification state dict (e.g. torchvision `mobilenet_v3_large`, `resnet50`) into a segmentation
    model's backbone: `features.N.*` / `layerN.*` keys map onto the backbone's own; the classifier is unused."""
    state = read_state_dict(path)
    own = backbone.state_dict()
    mapped = {}
    for key, value in state.items():
        for candidate in (key, key.removeprefix("features.")):
            if candidate in own:
                mapped[candidate] = value
                break
    report = load_matching_weights(backbone, mapped, str(path))
    report.unused = [k for k in state if k not in mapped and k.removeprefix("features.") not in mapped]
    return report


# --- (b) pretrained classification backbone + our decoder --------------------------------------------------------
# backbone -> feature nodes from fine (stride 2) to coarse (stride 32)
BACKBONES: dict[str, tuple[str, ...]] = {
    "mobilenet_v2": ("features.1", "features.3", "features.6", "features.13", "features.18"),
    "mobilenet_v3_large": ("features.1", "features.3", "features.6", "features.12", "features.16"),
    "resnet18": ("relu", "layer1", "layer2", "layer3", "layer4"),
    "resnet50": ("relu", "layer1", "layer2", "layer3", "layer4"),
    "efficientnet_b0": ("features.1", "features.2", "features.3", "features.5", "features.8"),
}


def conv_bn_relu(cin: int, cout: int, kernel: int = 3) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


class ASPP(nn.Module):
    """DeepLabV3's atrous spatial pyramid pooling, made light for a CPU: the coarse features reduced by a 1x1 conv,
    then parallel 3x3 convolutions at several dilation rates and a global-average branch, concatenated and fused
    by a 1x1 conv. Context from far across the image for every position (Chen et al. 2017/2018)."""

    def __init__(self, cin: int, cout: int, rates: Sequence[int] = (1, 3, 6), mid: int = 256) -> None:
        super().__init__()
        self.reduce = conv_bn_relu(cin, mid, kernel=1)
        self.branches = nn.ModuleList(
            [conv_bn_relu(mid, cout, kernel=1)]
            + [
                nn.Sequential(
                    nn.Conv2d(mid, cout, 3, padding=r, dilation=r, bias=False),
                    nn.BatchNorm2d(cout),
                    nn.ReLU(inplace=True),
                )
                for r in rates
                if r > 1
            ]
        )
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(mid, cout, 1, bias=False), nn.ReLU(inplace=True))
        self.project = conv_bn_relu(cout * (len(self.branches) + 1), cout, kernel=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.reduce(x)
        pooled = self.pool(x).expand(-1, -1, *x.shape[-2:])
        return self.project(torch.cat([branch(x) for branch in self.branches] + [pooled], dim=1))


class PoolGate(nn.Module):
    """LR-ASPP's context (MobileNetV3, Howard et al. 2019): the 1x1-reduced coarse features gated, channel by
    channel, by a sigmoid of the whole image's average features. Nearly free."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.reduce = conv_bn_relu(cin, cout, kernel=1)
        self.gate = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(cin, cout, 1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.reduce(x) * self.gate(x)


class UNetDecoder(nn.Module):
    """Generic U-Net/FPN-style decoder: start at the coarsest features, and at each finer scale upsample,
    concatenate the skip features and fuse with 3x3 conv-BN-ReLU blocks; a 1x1 classifier at the finest scale.

    Args:
        in_channels: channels of the backbone features, fine to coarse (any number of scales >= 2).
        channels: output channels of each fusion stage, coarse to fine (len(in_channels) - 1 of them).
        context: what the coarsest features go through first: "none" (a 1x1 conv), "aspp" (`ASPP`) or "pool"
            (`PoolGate`, LR-ASPP's gating).
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        channels: Sequence[int],
        num_classes: int,
        dropout: float = 0.1,
        context: str = "none",
    ) -> None:
        super().__init__()
        if len(channels) != len(in_channels) - 1:
            raise ValueError(f"decoder needs {len(in_channels) - 1} channel sizes, got {len(channels)}")
        if context == "aspp":
            self.reduce = ASPP(in_channels[-1], channels[0])
        elif context == "pool":
            self.reduce = PoolGate(in_channels[-1], channels[0])
        elif context == "none":
            self.reduce = conv_bn_relu(in_channels[-1], channels[0], kernel=1)
        else:
            raise CheckpointError(f"unknown decoder context {context!r}; choose none, aspp or pool")
        self.stages = nn.ModuleList()
        previous = channels[0]
        for skip, out in zip(reversed(in_channels[:-1]), channels):
            self.stages.append(nn.Sequential(conv_bn_relu(previous + skip, out), conv_bn_relu(out, out)))
            previous = out
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(previous, num_classes, 1)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        x = self.reduce(features[-1])
        for stage, skip in zip(self.stages, reversed(features[:-1])):
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = stage(torch.cat([x, skip], dim=1))
        return self.classifier(self.dropout(x))


class BackboneDecoderSegmenter(nn.Module):
    """A torchvision classification network as a multi-scale feature extractor + `UNetDecoder`.

    Args:
        backbone: one of BACKBONES.
        backbone_weights: None (random), "DEFAULT"/a torchvision weights name (downloaded) or a local classification
            state dict (e.g. ../shared/data/weights/mobilenet_v2_imagenet.pth), loaded strictly by `load_pretrained`.
        decoder_channels: fusion-stage widths, coarse to fine (4 for the 5 feature scales).
        decoder_context: "none", "aspp" or "pool" (see `UNetDecoder`).
    """

    def __init__(
        self,
        backbone: str = "mobilenet_v2",
        num_classes: int = 23,
        backbone_weights: str | None = None,
        decoder_channels: Sequence[int] = (128, 64, 32, 16),
        dropout: float = 0.1,
        decoder_context: str = "none",
    ) -> None:
        super().__init__()
        if backbone not in BACKBONES:
            raise CheckpointError(f"unknown backbone {backbone!r}; choose from {', '.join(BACKBONES)}")
        self.backbone_name, self.backbone_weights = backbone, backbone_weights
        classifier = getattr(torchvision.models, backbone)(weights=None)
        self.nodes = BACKBONES[backbone]
        self.backbone = create_feature_extractor(classifier, return_nodes={n: str(i) for i, n in enumerate(self.nodes)})
        self.normalize = ImageNetNormalize()
        with torch.no_grad():
            feats = self.backbone.eval()(torch.zeros(1, 3, 64, 64))
        self.backbone.train()
        self.decoder = UNetDecoder(
            [f.shape[1] for f in feats.values()], list(decoder_channels), num_classes, dropout, decoder_context
        )
        self.num_classes = num_classes
        self.load_report: LoadReport | None = None

    def load_pretrained(self) -> LoadReport | None:
        """Load the ImageNet classification weights into the backbone (its classifier layer is unused)."""
        if not self.backbone_weights:
            return None
        if is_local_weights(self.backbone_weights):
            state, source = read_state_dict(self.backbone_weights), str(self.backbone_weights)
        else:
            weights = _torchvision_weights(self.backbone_name, self.backbone_weights)
            state, source = _download_state_dict(weights), f"torchvision {weights}"
        self.load_report = load_matching_weights(self.backbone, state, source)
        return self.load_report

    def forward_train(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        return self.forward(x), None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = list(self.backbone(self.normalize(x)).values())
        logits = self.decoder(features)
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


def build_segmenter(
    approach: str,
    num_classes: int,
    arch: str = "lraspp_mobilenet_v3_large",
    weights: str | None = None,
    weights_backbone: str | None = None,
    aux_loss: bool = True,
    backbone: str = "mobilenet_v2",
    decoder_channels: Sequence[int] = (128, 64, 32, 16),
    dropout: float = 0.1,
    decoder_context: str = "none",
) -> nn.Module:
    """approach "torchvision" -> (a) `TorchvisionSegmenter(arch)`; "backbone_decoder" -> (b) with `backbone`,
    taking `weights_backbone` as the classification weights."""
    if approach == "torchvision":
        return TorchvisionSegmenter(arch, num_classes, weights, weights_backbone, aux_loss)
    if approach == "backbone_decoder":
        return BackboneDecoderSegmenter(
            backbone, num_classes, weights_backbone, decoder_channels, dropout, decoder_context
        )
    raise CheckpointError(f"unknown approach {approach!r}; choose torchvision or backbone_decoder")
