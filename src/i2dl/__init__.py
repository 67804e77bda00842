"""i2dl: tested reference implementations of classic deep-learning labs (TUM I2DL, MIT 6.S191)."""

__version__ = "0.1.0"
