"""Models: the MLP shorthand of the spec's `[model]` section, or a user's builder.

A builder is a function `(input_shape, outputs) -> keras.Model`: `input_shape` is the
shape of one input row (a tuple, `(features,)` or `(h, w, c)`), `outputs` the width of
the last layer (one unit per regression target, one logit for a binary task, one logit
per class for a multi-class one). It returns the model uncompiled, its output layer
without an activation (the losses take logits); `study` compiles it with the spec's
optimizer, loss and schedule. It is named in the spec as `model.builder =
"module:function"`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from study.errors import SpecError
from study.spec import ModelSpec
from study.trainers._tf import tensorflow
from study.user_code import cwd_on_path, first_line, load_function


def build_model(model: ModelSpec, input_shape: int | Sequence[int], outputs: int = 1) -> Any:
    """The Keras model `model` describes, built for `input_shape` and `outputs`.

    The shorthand: Dense(h, activation) per hidden width, each followed by
    Dropout(dropout) when that is above zero, then Dense(outputs). With no hidden
    layers, Dense(outputs) alone: a linear model. Inputs of more than one dimension
    (images) pass through a Flatten first: an MLP sees a row of features.
    """
    tensorflow()
    import keras

    shape = (input_shape,) if isinstance(input_shape, int) else tuple(input_shape)
    if model.builder:
        return _from_builder(model.builder, shape, outputs)
    layers: list[Any] = [keras.Input(shape=shape)]
    if len(shape) > 1:
        layers.append(keras.layers.Flatten())
    for width in model.hidden:
        layers.append(keras.layers.Dense(width, activation=model.activation))
        if model.dropout:
            layers.append(keras.layers.Dropout(model.dropout))
    layers.append(keras.layers.Dense(outputs))
    return keras.Sequential(layers)


def _from_builder(ref: str, shape: tuple[int, ...], outputs: int) -> Any:
    import keras

    fn = load_function(ref, "model.builder", SpecError)
    named = f"model.builder: {ref!r}"
    # The builder is foreign code: whatever its call raises becomes one line naming it.
    try:
        with cwd_on_path():
            model = fn(shape, outputs)
    except (Exception, SystemExit) as e:
        raise SpecError(f"{named} raised {type(e).__name__}: {first_line(e)}") from None
    if not isinstance(model, keras.Model):
        raise SpecError(f"{named} returned a {type(model).__name__}; expected a keras.Model")
    if not model.built:
        model.build((None, *shape))
    got = tuple(model.output_shape) if hasattr(model, "output_shape") else None
    if got is not None and (len(got) != 2 or got[-1] != outputs):
        raise SpecError(f"{named} returned a model whose output shape is {got}; "
                        f"expected (None, {outputs})")
    return model
