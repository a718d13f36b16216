"""Tiny model builders for the tests, importable as "tests.builders:NAME".

Each is `(input_shape, outputs) -> keras.Model`, uncompiled, as `model.builder` expects.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def _keras() -> Any:
    from study.trainers._tf import tensorflow

    tensorflow()
    import keras

    return keras


def mixed_activations(shape: Sequence[int], outputs: int) -> Any:
    """Every fused activation in one chain, a Dense without bias, an Activation layer."""
    keras = _keras()
    layers = keras.layers
    return keras.Sequential([
        keras.Input(shape=tuple(shape)),
        layers.Dense(12, activation="relu"),
        layers.Dense(10, activation="tanh"),
        layers.Dense(10, activation="sigmoid", use_bias=False),
        layers.Dense(8, activation="gelu"),
        layers.Dense(8),
        layers.Activation("tanh"),
        layers.Dense(outputs, activation="linear"),
    ])


def softmax_output(shape: Sequence[int], outputs: int) -> Any:
    """A multi-class model that outputs probabilities."""
    keras = _keras()
    return keras.Sequential([keras.Input(shape=tuple(shape)),
                             keras.layers.Dense(16, activation="relu"),
                             keras.layers.Dense(outputs, activation="softmax")])


def sigmoid_output(shape: Sequence[int], outputs: int) -> Any:
    """A binary model that outputs a probability (a functional chain)."""
    keras = _keras()
    inputs = keras.Input(shape=tuple(shape))
    h = keras.layers.Dense(16, activation="gelu")(inputs)
    return keras.Model(inputs, keras.layers.Dense(outputs, activation="sigmoid")(h))


def reshaped_images(shape: Sequence[int], outputs: int) -> Any:
    """Image rows through Reshape and Flatten."""
    keras = _keras()
    layers = keras.layers
    n = 1
    for d in shape:
        n *= int(d)
    return keras.Sequential([keras.Input(shape=tuple(shape)), layers.Reshape((n,)),
                             layers.Dense(8, activation="relu"), layers.Reshape((2, 4)),
                             layers.Flatten(), layers.Dense(outputs)])


def layernorm(shape: Sequence[int], outputs: int) -> Any:
    """LayerNormalization with Keras' defaults, and one without center."""
    keras = _keras()
    layers = keras.layers
    return keras.Sequential([keras.Input(shape=tuple(shape)), layers.LayerNormalization(),
                             layers.Dense(16, activation="relu"), layers.LayerNormalization(),
                             layers.Dense(8, activation="tanh"),
                             layers.LayerNormalization(center=False, epsilon=1e-5),
                             layers.Dense(outputs)])


def mlp_dropout_layernorm(shape: Sequence[int], outputs: int) -> Any:
    """Dense + Dropout + LayerNormalization: the population trainer fuses all three."""
    keras = _keras()
    layers = keras.layers
    return keras.Sequential([keras.Input(shape=tuple(shape)), layers.Flatten(),
                             layers.Dense(32, activation="relu"), layers.Dropout(0.2),
                             layers.LayerNormalization(),
                             layers.Dense(16, activation="relu"), layers.Dropout(0.1),
                             layers.Dense(outputs)])


def small_cnn(shape: Sequence[int], outputs: int) -> Any:
    """A convolution: not fused; the keras trainer trains it."""
    keras = _keras()
    layers = keras.layers
    return keras.Sequential([keras.Input(shape=tuple(shape)),
                             layers.Conv2D(4, 3, activation="relu"), layers.Flatten(),
                             layers.Dense(outputs)])


def batchnorm(shape: Sequence[int], outputs: int) -> Any:
    keras = _keras()
    return keras.Sequential([keras.Input(shape=tuple(shape)), keras.layers.Dense(8),
                             keras.layers.BatchNormalization(), keras.layers.Dense(outputs)])


def residual(shape: Sequence[int], outputs: int) -> Any:
    """A functional model that is not a chain (a skip connection)."""
    keras = _keras()
    inputs = keras.Input(shape=tuple(shape))
    h = keras.layers.Dense(int(shape[-1]))(inputs)
    h = keras.layers.Add()([inputs, h])
    return keras.Model(inputs, keras.layers.Dense(outputs)(h))


def regularized(shape: Sequence[int], outputs: int) -> Any:
    keras = _keras()
    return keras.Sequential([keras.Input(shape=tuple(shape)),
                             keras.layers.Dense(8, kernel_regularizer="l2"),
                             keras.layers.Dense(outputs)])


def dense_on_images(shape: Sequence[int], outputs: int) -> Any:
    """A Dense on an image's last axis (channels), before the Flatten."""
    keras = _keras()
    return keras.Sequential([keras.Input(shape=tuple(shape)), keras.layers.Dense(3),
                             keras.layers.Flatten(), keras.layers.Dense(outputs)])


def selu(shape: Sequence[int], outputs: int) -> Any:
    keras = _keras()
    return keras.Sequential([keras.Input(shape=tuple(shape)),
                             keras.layers.Dense(8, activation="selu"),
                             keras.layers.Dense(outputs)])


# The twins of softmax_output and sigmoid_output with logit outputs: the same layers in
# the same order, so the same initial weights at the same seed.
def softmax_logits(shape: Sequence[int], outputs: int) -> Any:
    keras = _keras()
    return keras.Sequential([keras.Input(shape=tuple(shape)),
                             keras.layers.Dense(16, activation="relu"),
                             keras.layers.Dense(outputs)])


def sigmoid_logits(shape: Sequence[int], outputs: int) -> Any:
    keras = _keras()
    inputs = keras.Input(shape=tuple(shape))
    h = keras.layers.Dense(16, activation="gelu")(inputs)
    return keras.Model(inputs, keras.layers.Dense(outputs)(h))


# Outputs the guards refuse (models.py, `check_output`).
def compiled(shape: Sequence[int], outputs: int) -> Any:
    """Compiled with its own optimizer and loss, which the study would ignore."""
    keras = _keras()
    model = keras.Sequential([keras.Input(shape=tuple(shape)), keras.layers.Dense(outputs)])
    model.compile(optimizer="rmsprop", loss="mae")
    return model


def relu_output(shape: Sequence[int], outputs: int) -> Any:
    keras = _keras()
    return keras.Sequential([keras.Input(shape=tuple(shape)),
                             keras.layers.Dense(8, activation="tanh"),
                             keras.layers.Dense(outputs, activation="relu")])


def softmax_layer_output(shape: Sequence[int], outputs: int) -> Any:
    """A Softmax layer, which has no `activation` the trainers could read."""
    keras = _keras()
    return keras.Sequential([keras.Input(shape=tuple(shape)), keras.layers.Dense(outputs),
                             keras.layers.Softmax()])


def nested_sigmoid(shape: Sequence[int], outputs: int) -> Any:
    """A sigmoid at the end of a nested model, out of the trainers' sight."""
    keras = _keras()
    head = keras.Sequential([keras.Input(shape=(8,)),
                             keras.layers.Dense(outputs, activation="sigmoid")], name="head")
    return keras.Sequential([keras.Input(shape=tuple(shape)), keras.layers.Dense(8), head])


def custom_activation(shape: Sequence[int], outputs: int) -> Any:
    keras = _keras()
    return keras.Sequential([keras.Input(shape=tuple(shape)),
                             keras.layers.Dense(outputs, activation=lambda t: t * t)])
