"""I2DL autoencoder lab: unsupervised pretraining on MNIST, encoder transfer, few-label fine-tuning.

`model.py` holds the plain networks (encoders, decoders, the autoencoder, SimCLR's projection net, the classifier);
`semi.py` the objectives on unlabeled images as functions (views, NT-Xent, FixMatch's loss); `data.py` the
class-balanced label splits and the in-memory batches of each stage; `module.py` the LightningModules
(`AutoencoderModule`, `ContrastiveModule`, `EncoderClassifier`); `story.py` the pipeline that chains the stages
(with the encoder cache); `figures.py` the figures and their callback; `cli.py` is `i2dl autoencoder ...`.
"""
