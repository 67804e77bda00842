"""I2DL autoencoder lab: unsupervised pretraining on MNIST, encoder transfer, few-label fine-tuning."""
