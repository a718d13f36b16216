"""The quickstart's model: a builder, a function (input_shape, outputs) -> keras.Model.

`study` calls it once per trial (after seeding Keras with the trial's seed) and compiles
what it returns with the spec's optimizer at the trial's learning rate and the task's
loss, so it returns the model uncompiled. Its last layer is linear: a regression output,
or logits for classification (the losses apply the sigmoid or softmax themselves).
"""

from __future__ import annotations

from typing import Any


def build(input_shape: tuple[int, ...], outputs: int) -> Any:
    import keras

    return keras.Sequential([
        keras.Input(shape=input_shape),
        keras.layers.Dense(32, activation="relu"),
        keras.layers.Dense(16, activation="relu"),
        keras.layers.Dense(outputs),  # linear: one unit per target, or one logit per class
    ])
