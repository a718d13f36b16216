"""study: how batch size and learning rate interact when a neural network trains."""

__version__ = "0.1.0"
