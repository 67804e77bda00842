"""MIT 6.S191 Lab 2: MNIST digit classification, a fully connected baseline and CNNs."""
