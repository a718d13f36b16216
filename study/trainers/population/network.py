"""The network a population trains: the spec's model read into a chain of fusable ops.

The MLP shorthand is read from the spec alone; a builder's model is built once (for
the data's input shape) and read layer by layer. A model the population trainer cannot
fuse gets a reason naming the first layer it cannot, and trains with the keras trainer.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from study.spec import ModelSpec
from study.trainers.population.batchnorm import BatchNorm
from study.trainers.population.layers import (
    ACTIVATIONS,
    OUTPUT_ACTIVATIONS,
    Activation,
    Dense,
    Dropout,
    LayerNorm,
    Op,
)
from study.trainers.population.layout import Layout

Weights = list[npt.NDArray[np.float32]]


@dataclass(frozen=True)
class Net:
    """A chain of ops from flat input rows of `n_features` to the model's output.

    `output` is the output layer's softmax or sigmoid when it has one: the model outputs
    probabilities, and the loss is taken on the logits before it (see losses.py).
    """

    ops: tuple[Op, ...]
    n_features: int
    output: str | None = None

    @property
    def layout(self) -> Layout:
        widths = [self.n_features, *(op.units for op in self.ops if isinstance(op, Dense))]
        statistics, at = [], 0
        for op in self.ops:
            if isinstance(op, BatchNorm):
                statistics += [at + op.trainable, at + op.trainable + 1]
            at += len(op.shapes)
        return Layout(tuple(s for op in self.ops for s in op.shapes), tuple(widths),
                      tuple(statistics))

    @property
    def dropout(self) -> bool:
        return any(isinstance(op, Dropout) for op in self.ops)

    @property
    def batch_statistics(self) -> bool:
        """Whether it normalizes by batch statistics (BatchNormalization) while training."""
        return any(isinstance(op, BatchNorm) for op in self.ops)


def shorthand_net(model: ModelSpec, n_features: int, n_outputs: int = 1) -> Net | str:
    """The shorthand MLP (study/models.py `build_model`) as a Net, or why it cannot be one."""
    if model.activation not in ACTIVATIONS:
        return f"model.activation = {model.activation!r}"
    ops: list[Op] = []
    width = n_features
    for i, units in enumerate(model.hidden):
        ops.append(Dense(width, units))
        if model.activation != "linear":
            ops.append(Activation(model.activation))
        if model.dropout:
            ops.append(Dropout(model.dropout, units, i))
        width = units
    ops.append(Dense(width, n_outputs))
    return Net(tuple(ops), n_features)


def net_of(model: ModelSpec, input_shape: Sequence[int], n_outputs: int) -> Net | str:
    """The Net of the spec's model for inputs of `input_shape` (one row's), or why none."""
    shape = tuple(int(d) for d in input_shape)
    if not model.builder:
        return shorthand_net(model, math.prod(shape), n_outputs)
    return _builder_net(model, shape, n_outputs)


@functools.cache
def _builder_net(model: ModelSpec, shape: tuple[int, ...], n_outputs: int) -> Net | str:
    # Cached: building a user's model costs a Keras graph and the user's code, once.
    net = read_model(_build(model, shape, n_outputs), shape)
    if isinstance(net, Net) and net.batch_statistics:
        _BATCH_STATISTICS.add(model)
    return net


# The builder models read so far (`_builder_net`) that normalize by batch statistics.
_BATCH_STATISTICS: set[ModelSpec] = set()


def batch_statistics(model: ModelSpec) -> bool:
    """Whether the spec's model normalizes by batch statistics while training, so that
    each of its batches must be one micro-batch (`plan_groups`' `whole`).

    The shorthand never does; a builder's model is known once it was read for its data
    (`net_of`): `unsupported` reads it before the runner makes a population trainer,
    and `train_population` before it groups configs. A model not read yet answers False.
    """
    return bool(model.builder) and model in _BATCH_STATISTICS


def initial_weights(model: ModelSpec, shape: Sequence[int], n_outputs: int, seed: int
                    ) -> Weights:
    """A builder model's initial weights for `seed`, drawn as the keras trainer draws
    them (`fit_trial`: clear_session, set_random_seed(seed), build): the two trainers
    start from the same weights, draw for draw."""
    return list(_initial_weights(model, tuple(int(d) for d in shape), n_outputs, seed))


@functools.lru_cache(maxsize=4096)
def _initial_weights(model: ModelSpec, shape: tuple[int, ...], n_outputs: int, seed: int
                     ) -> tuple[npt.NDArray[np.float32], ...]:
    # Cached, read-only: a grid's trials share their seeds (the article's 20 cells x 5
    # seeds draw 5 sets), and each draw builds the user's model (about 0.1 s).
    built = _build(model, shape, n_outputs, seed)
    weights = tuple(np.array(w, np.float32) for w in built.get_weights())
    for w in weights:
        w.flags.writeable = False
    return weights


def _build(model: ModelSpec, shape: tuple[int, ...], n_outputs: int, seed: int | None = None
           ) -> Any:
    from study.models import build_model
    from study.trainers._tf import tensorflow

    tensorflow()
    import keras

    # A fresh session, as the keras trainer builds every trial's model: layer names
    # (which the reasons quote) start from their defaults.
    keras.backend.clear_session()
    if seed is not None:
        keras.utils.set_random_seed(seed)
    return build_model(model, shape, n_outputs)


def read_model(model: Any, input_shape: tuple[int, ...]) -> Net | str:
    """A Keras model as a Net, or a reason naming the first layer that cannot be fused."""
    import keras

    from study.trainers.keras import activation_name

    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    if type(model) is not keras.Sequential:
        if type(model).__name__ != "Functional":
            return f"model class {type(model).__name__!r} (only Sequential and functional " \
                   "chains are fused)"
        if not _is_chain(model, layers):
            return "a model that is not a chain of layers"
    shape = input_shape
    ops: list[Op] = []
    dropouts = 0
    for layer in layers:
        named = f"layer {layer.name!r} ({type(layer).__name__})"
        if (why := _plain(layer)) is not None:
            return f"{named} with {why}"
        kind = type(layer)
        out_shape = tuple(int(d) for d in layer.compute_output_shape((None, *shape))[1:])
        width = shape[-1] if shape else 0
        if kind in (keras.layers.Flatten, keras.layers.Reshape):
            pass
        elif kind in (keras.layers.Dense, keras.layers.Activation):
            # A Dense layer's activation is fused as a layer of its own after it.
            if kind is keras.layers.Dense:
                if len(shape) != 1:
                    return f"{named} on a {len(shape)}-d input {shape}"
                if layer.lora_enabled:
                    return f"{named} with LoRA"
                ops.append(Dense(width, int(layer.units), bool(layer.use_bias)))
            act = activation_name(layer.activation)
            if act is None or act not in (*ACTIVATIONS, *OUTPUT_ACTIVATIONS):
                return f"{named} with activation {_label(act, layer.activation)}"
            if act != "linear":
                ops.append(Activation(act))
        elif kind is keras.layers.Dropout:
            if layer.noise_shape is not None:
                return f"{named} with a noise_shape"
            if layer.rate > 0:
                ops.append(Dropout(float(layer.rate), math.prod(shape), dropouts))
                dropouts += 1
        elif kind is keras.layers.BatchNormalization:
            if len(shape) != 1 or layer.axis not in (-1, 1):
                return f"{named} over axis {layer.axis} of a {len(shape)}-d input"
            for flag in ("renorm", "synchronized", "virtual_batch_size"):
                if getattr(layer, flag, None):
                    return f"{named} with {flag}"
            ops.append(BatchNorm(width, float(layer.epsilon), float(layer.momentum),
                                 bool(layer.center), bool(layer.scale)))
        elif kind is keras.layers.LayerNormalization:
            axes = layer.axis if isinstance(layer.axis, (list, tuple)) else [layer.axis]
            if len(shape) != 1 or [a % len(shape) for a in axes] != [0]:
                return f"{named} over axes {layer.axis} of a {len(shape)}-d input"
            if layer.rms_scaling:
                return f"{named} with rms_scaling"
            ops.append(LayerNorm(width, float(layer.epsilon), bool(layer.center),
                                 bool(layer.scale)))
        else:
            return named
        shape = out_shape
        if any(isinstance(op, Activation) and op.name == "softmax" for op in ops[:-1]):
            return f"{named} after a softmax (fused on the output layer only)"
    return Net(tuple(ops), math.prod(input_shape))


def with_loss(net: Net, loss: str) -> Net | str:
    """The Net under `loss`: an output softmax (sparse cross-entropy) or sigmoid (binary
    cross-entropy) leaves the chain, the loss taking the logits before it, as Keras' own
    cross-entropies do for such a model (see losses.py); or why the pair cannot train."""
    last = net.ops[-1] if net.ops else None
    if not isinstance(last, Activation) or last.name not in OUTPUT_ACTIVATIONS:
        return net
    if (last.name, loss) in (("softmax", "sparse_cross_entropy"), ("sigmoid", "cross_entropy")):
        return Net(net.ops[:-1], net.n_features, last.name)
    if last.name == "sigmoid" and loss == "mse":
        return net  # a squashed regression output: the sigmoid is an ordinary activation
    return f"a {last.name} output layer under train.loss = {loss!r}"


def _label(name: str | None, fn: Any) -> str:
    return repr(name) if name else repr(getattr(fn, "__name__", "a custom function"))


def _plain(layer: Any) -> str | None:
    """What keeps a layer from being plain float32 trainable math, or None."""
    if layer.dtype_policy.name != "float32":
        return f"dtype policy {layer.dtype_policy.name!r}"
    if not layer.trainable and layer.weights:
        return "frozen weights (trainable=False)"
    if getattr(layer, "activity_regularizer", None) is not None:
        return "an activity_regularizer"
    for attr in ("kernel", "bias", "gamma", "beta"):
        if getattr(layer, f"{attr}_regularizer", None) is not None:
            return f"a {attr}_regularizer"
        if getattr(layer, f"{attr}_constraint", None) is not None:
            return f"a {attr}_constraint"
    return None


def _is_chain(model: Any, layers: Sequence[Any]) -> bool:
    """Whether a functional model feeds each layer the previous one's output alone."""
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        return False
    at = model.inputs[0]
    try:
        for layer in layers:
            if layer.input is not at:
                return False
            at = layer.output
    except (AttributeError, ValueError):  # a layer called more than once has no one input
        return False
    return model.outputs[0] is at


def layout_of(model: ModelSpec, n_features: int, n_outputs: int = 1) -> Layout:
    """The shorthand MLP's layout."""
    net = shorthand_net(model, n_features, n_outputs)
    if isinstance(net, str):
        raise ValueError(f"the population trainer does not support {net}")
    return net.layout
