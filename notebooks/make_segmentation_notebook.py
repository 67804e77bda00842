"""Writes notebooks/segmentation.ipynb (outputs empty). Run: python notebooks/make_segmentation_notebook.py"""

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

cells = [
    new_markdown_cell("""# Semantic segmentation (I2DL): MSRC-v2 and CamVid

Two ways to reuse pretrained networks for per-pixel classification:

* **(a)** a ready-made torchvision segmentation model (LR-ASPP, DeepLabV3, FCN) with its **last layer replaced** for our
  classes, loaded from torchvision's weights, a local state dict, or a checkpoint of ours trained on another dataset;
* **(b)** an ImageNet **classification backbone** (MobileNetV2) cut into a multi-scale feature extractor, plus **our
  U-Net decoder** with skip connections.

Set `I2DL_NOTEBOOK_SMOKE=1` for a run of a few seconds (the tests do); without it the training cell runs a few real
epochs (about an hour on a 2-core CPU). The full runs are `i2dl segmentation fit -c configs/segmentation/<config>.yaml`."""),
    new_code_cell("""import os
from pathlib import Path

import lightning as L
import matplotlib.pyplot as plt
import numpy as np
import torch

from i2dl.data import resolve_data_dir
from i2dl.segmentation.datasets import DATASETS, IGNORE_INDEX, load_msrc_v2
from i2dl.segmentation.data import SegmentationDataModule
from i2dl.segmentation.model import BackboneDecoderSegmenter, TorchvisionSegmenter
from i2dl.segmentation.module import SegmentationModule
from i2dl.segmentation.viz import colourise

SMOKE = os.environ.get("I2DL_NOTEBOOK_SMOKE") == "1"
DATA = resolve_data_dir(None)
WEIGHTS = DATA / "weights" / "mobilenet_v2_imagenet.pth"
print("data:", DATA, "| smoke run:", SMOKE)"""),
    new_markdown_cell("""## The data

MSRC-v2 targets are colour-coded: each colour of the official palette is a class, black is void. The loader decodes
the colours into class ids (void = 255, ignored by the loss and the metrics) and, as in I2DL, turns the rare classes
horse and mountain into void."""),
    new_code_cell("""info = DATASETS["msrc_v2"]
samples = load_msrc_v2(DATA / "msrc_v2", "train", limit=4)
fig, axes = plt.subplots(2, 4, figsize=(12, 5))
for k, (image, mask) in enumerate(samples):
    axes[0, k].imshow(image.permute(1, 2, 0)); axes[0, k].axis("off")
    axes[1, k].imshow(colourise(mask, info.palette)); axes[1, k].axis("off")
    present = [info.classes[c] for c in mask.unique().tolist() if c != IGNORE_INDEX]
    axes[1, k].set_title(", ".join(present), fontsize=8)
plt.show()"""),
    new_markdown_cell("""## Joint augmentation

`torchvision.transforms.v2` transforms an image and its `tv_tensors.Mask` together: the same random crop and flip, and
the mask is resampled with nearest neighbours, so no label is ever interpolated into a class that was not there."""),
    new_code_cell("""data = SegmentationDataModule("msrc_v2", train_size=(160, 160), train_subset=4)
loader = data.train_dataloader()
images, masks = next(iter(loader))
print(images.shape, masks.shape, "labels in the batch:", sorted(masks.unique().tolist()))
fig, axes = plt.subplots(2, 4, figsize=(12, 5))
for k in range(4):
    axes[0, k].imshow(images[k].permute(1, 2, 0)); axes[0, k].axis("off")
    axes[1, k].imshow(colourise(masks[k], info.palette)); axes[1, k].axis("off")
plt.show()"""),
    new_markdown_cell("""## (b) ImageNet MobileNetV2 + our decoder

The classification network is cut at five depths (strides 2 to 32) with `create_feature_extractor`; the decoder
upsamples from the coarsest features and fuses each finer one. `load_pretrained` reports what came from the file."""),
    new_code_cell("""model = BackboneDecoderSegmenter("mobilenet_v2", num_classes=info.num_classes, backbone_weights=str(WEIGHTS))
print(model.load_pretrained().summary())
print("feature channels:", [s[0][0].in_channels for s in model.decoder.stages])
with torch.no_grad():
    print("logits:", tuple(model.eval()(images[:1]).shape))"""),
    new_markdown_cell("""## (a) A torchvision model with a new last layer

Offline, torchvision cannot download its COCO weights, so here a state dict saved to disk stands in for them (on a
machine with internet use `weights="DEFAULT"`). Everything but the final classifier layers is loaded."""),
    new_code_cell("""import tempfile
from torchvision.models.segmentation import lraspp_mobilenet_v3_large

coco_like = lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=21)
path = Path(tempfile.mkdtemp()) / "lraspp_21_classes.pth"
torch.save(coco_like.state_dict(), path)
model_a = TorchvisionSegmenter("lraspp_mobilenet_v3_large", num_classes=info.num_classes, weights=str(path))
report = model_a.load_pretrained()
print(report.summary())
print("new layers:", report.new)"""),
    new_markdown_cell("""## Training (b) with Lightning

The course's accuracy (`acc`: per image, the share of non-void pixels right, averaged over images), the pixel accuracy
and the mean IoU are logged for validation and test."""),
    new_code_cell("""from lightning.pytorch.loggers import CSVLogger

from i2dl.segmentation.viz import SegmentationFigures

L.seed_everything(0)
if SMOKE:
    data = SegmentationDataModule("msrc_v2", batch_size=2, train_size=(64, 64), eval_size=(64, 96), train_subset=4,
                                  eval_subset=4)
    trainer_args = dict(max_epochs=1, limit_train_batches=2, limit_val_batches=1, limit_test_batches=1)
else:
    data = SegmentationDataModule("msrc_v2", batch_size=8, train_size=(224, 224))
    trainer_args = dict(max_epochs=6)
module = SegmentationModule(dataset="msrc_v2", approach="backbone_decoder", backbone="mobilenet_v2",
                            weights_backbone=str(WEIGHTS), lr=2e-3, backbone_lr_factor=0.5, freeze_backbone_epochs=1)
run_dir = Path(os.environ.get("I2DL_RUNS", "runs")) / "segmentation" / "notebook"
# figures are drawn by a callback, given the classes and colours it needs
figures = SegmentationFigures(run_dir, data.info.name, data.info.classes, data.info.palette, "MobileNetV2 + U-Net")
trainer = L.Trainer(default_root_dir=run_dir, enable_progress_bar=not SMOKE, enable_model_summary=False,
                    logger=CSVLogger(run_dir, name="csv"), callbacks=[figures], **trainer_args)
trainer.fit(module, data)
results = trainer.test(module, data, verbose=False)[0]
print({k: round(v, 4) for k, v in results.items()})"""),
    new_markdown_cell("""## Predictions and per-class IoU

The test run wrote figures: rows of image / ground truth / prediction in the dataset's colours, and the IoU of each
class."""),
    new_code_cell("""from IPython.display import Image as Show, display

for name in ("test_predictions.png", "per_class_iou.png"):
    figure = run_dir / "figures" / name
    print(figure, figure.is_file())
    display(Show(filename=str(figure), width=600))"""),
]

notebook = new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                              "language": "python"}})
path = Path(__file__).resolve().parent / "segmentation.ipynb"
nbformat.write(notebook, path)
print("wrote", path)
