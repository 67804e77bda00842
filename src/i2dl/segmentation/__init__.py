"""I2DL semantic segmentation: a pretrained model with a new last layer, and a pretrained backbone with our decoder."""
