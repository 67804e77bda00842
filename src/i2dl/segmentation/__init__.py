"""I2DL semantic segmentation: a pretrained model with a new last layer, and a pretrained backbone with our decoder.

`datasets.py` reads MSRC-v2 and CamVid (palettes, void, joint augmentation), `data.py` the datamodule, `model.py`
the two approaches and the weight loading (torchvision names or local files), `module.py` the LightningModule and
the course's metrics, `viz.py` masks, overlays, figures and their callback, `cli.py` is `i2dl segmentation ...`.
"""
