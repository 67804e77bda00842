"""MIT 6.S191 Lab 2: MNIST digit classification, a fully connected baseline and CNNs.

`model.py` the networks (the lab's FC and CNN, our DigitNet), `data.py` the in-memory datamodule, `module.py` the
LightningModule, `predict.py` turns any photo of a digit into an MNIST-style input, `cli.py` is `i2dl digits ...`.
Figures come from `i2dl.training.ClassificationFigures`.
"""
