"""A small convolutional network for scikit-learn's digits (examples/digits_cnn.toml).

The population trainer does not fuse convolutions, so `study` trains this model with
the keras trainer and says so in one line naming the layer (Conv2D). `--workers N`
runs N trials at a time in N processes. Run from the repository root:

    study run --spec examples/digits_cnn.toml --workers 2
"""

from __future__ import annotations

from typing import Any


def build(input_shape: tuple[int, ...], outputs: int) -> Any:
    import keras

    return keras.Sequential([
        keras.Input(shape=input_shape),  # (8, 8, 1)
        keras.layers.Conv2D(8, 3, activation="relu", padding="same"),
        keras.layers.MaxPooling2D(2),
        keras.layers.Conv2D(16, 3, activation="relu", padding="same"),
        keras.layers.Flatten(),
        keras.layers.Dense(outputs),  # logits
    ])
