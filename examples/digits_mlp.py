"""An MLP builder with dropout for scikit-learn's digits (examples/digits_mlp.toml).

The builder contract (study/models.py): called with the shape of one input row (here
(8, 8, 1): the digits are 8x8 grey images) and the number of outputs (10: one logit
per class), it returns an uncompiled keras.Model whose last layer has no activation.
`study` compiles it with the spec's optimizer, loss and schedule, once per trial.

Every layer here is one the population trainer fuses (Flatten, Dense, Dropout), so
the whole grid trains as one compiled program. Run from the repository root:

    study run --spec examples/digits_mlp.toml
"""

from __future__ import annotations

from typing import Any


def build(input_shape: tuple[int, ...], outputs: int) -> Any:
    import keras

    return keras.Sequential([
        keras.Input(shape=input_shape),
        keras.layers.Flatten(),
        keras.layers.Dense(64, activation="relu"),
        keras.layers.Dropout(0.1),
        keras.layers.Dense(32, activation="relu"),
        keras.layers.Dropout(0.1),
        keras.layers.Dense(outputs),  # logits: the loss applies the softmax
    ])
