"""Models: the MLP shorthand of the spec's `[model]` section, or a user's builder.

A builder is a function `(input_shape, outputs) -> keras.Model`: `input_shape` is the
shape of one input row (a tuple, `(features,)` or `(h, w, c)`), `outputs` the width of
the last layer (one unit per regression target, one logit for a binary task, one logit
per class for a multi-class one). It returns the model uncompiled; `study` compiles it
with the spec's optimizer, loss and schedule. Its output layer has no activation (the
losses take logits), except a sigmoid on a binary output or a softmax over the classes,
which the trainers take as probabilities (`check_output`). It is named in the spec as
`model.builder = "module:function"`.

Its identity is what it builds (`identify`): the model's Keras config, made canonical,
and a fingerprint of its initial weights drawn at a fixed seed. Both are stored with
the study (spec.BUILDER_IDENTITY), and resuming with a builder that builds another model
is refused (runner.py); a comment or any edit that builds the same model resumes. What
it builds, not the bytes of its file, because a builder defined in a notebook or a
script has no file of its own, and one in a module shares its file with code that
changes nothing.

From Python, `study.run(model=fn)` takes the function itself (`register`): it is kept
in this process under its `module:qualname`, which is what the spec stores. Workers in
other processes import that name when they can (a function at the top level of an
importable module); a function they cannot import (defined in `__main__`, a notebook,
or inside another function) reaches them as its model's Keras config
(`export_builder`), which they rebuild with `keras.models.model_from_json`.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from study.errors import SpecError, UsageError
from study.spec import ModelSpec
from study.trainers._tf import tensorflow
from study.user_code import cwd_on_path, first_line, import_root, load_function

if TYPE_CHECKING:
    from study.spec import TrainSpec


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
        return _from_builder(model.builder, _function(model.builder), shape, outputs)
    layers: list[Any] = [keras.Input(shape=shape)]
    if len(shape) > 1:
        layers.append(keras.layers.Flatten())
    for width in model.hidden:
        layers.append(keras.layers.Dense(width, activation=model.activation))
        if model.dropout:
            layers.append(keras.layers.Dropout(model.dropout))
    layers.append(keras.layers.Dense(outputs))
    return keras.Sequential(layers)


def _function(ref: str) -> Callable[..., Any]:
    registered = _REGISTERED.get(ref)
    return registered.fn if registered is not None else load_function(ref, "model.builder",
                                                                       SpecError)


def _from_builder(ref: str, fn: Callable[..., Any], shape: tuple[int, ...], outputs: int) -> Any:
    import keras

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


# --------------------------------------------------------------------------- guards


# Layers that are a non-linearity by their class, with no `activation` attribute the
# trainers could read (trainers/keras.py, `output_activation`).
_ACTIVATION_LAYERS = {"Softmax": "softmax", "ReLU": "relu", "LeakyReLU": "leaky_relu",
                      "ELU": "elu", "PReLU": "prelu"}
# The probabilities a loss takes in place of logits: the trainers hand the logits under
# the activation to the loss (trainers/keras.py `make_loss`, population `with_loss`).
_PROBABILITIES = {"cross_entropy": "sigmoid", "sparse_cross_entropy": "softmax"}
_OUTPUTS = {"mse": "a regression output (train.loss = 'mse') takes no activation",
            "cross_entropy": "a binary output (train.loss = 'cross_entropy') is a logit "
                             "(no activation) or a sigmoid probability",
            "sparse_cross_entropy": "a multi-class output (train.loss = "
                                    "'sparse_cross_entropy') is one logit per class (no "
                                    "activation) or a softmax over them"}


def check_output(model: Any, named: str, outputs: int, train: TrainSpec | None = None) -> None:
    """Refuse, as one `SpecError` line naming the layer and the fix, a built model the
    study would train as something else than it is: a compiled one (its optimizer and
    loss would be ignored), or one whose last layer's activation does not fit the loss.

    Linear (logits) always fits; so do a sigmoid under binary cross-entropy and a
    softmax over two or more classes under sparse cross-entropy, taken as probabilities.
    Without `train` (its loss), only what no loss accepts is refused: a softmax over one
    unit (always 1.0, trained to chance), any other non-linearity.
    """
    if getattr(model, "compiled", False) or getattr(model, "optimizer", None) is not None:
        how = ("train.optimizer at each trial's learning rate and train.loss" if train is None
               else f"train.optimizer = {train.optimizer!r} at each trial's learning rate and "
                    f"train.loss = {train.loss!r}")
        raise SpecError(f"{named} returned a compiled model: return it uncompiled; the study "
                        f"compiles it with {how}, so the optimizer and loss it was compiled "
                        "with would be ignored")
    loss = train.loss if train is not None and train.loss in _OUTPUTS else None
    layer, nested = _last_layer(model)
    act, visible = _activation(layer)
    if act is None:
        return
    where = f"{named}: its last layer {layer.name!r} ({type(layer).__name__})"
    if act == "softmax" and outputs == 1:
        raise SpecError(f"{where} is a softmax over one unit, which is 1.0 whatever the input "
                        "(a binary task trains to chance): drop the activation (one logit) or "
                        "use activation='sigmoid'")
    if act in ("sigmoid", "softmax") if loss is None else _PROBABILITIES.get(loss) == act:
        if nested is not None or not visible:
            inside = f" inside {nested.name!r}" if nested is not None else ""
            raise SpecError(f"{where}{inside} is a {act} the trainers do not see, so they would "
                            "take its probabilities for logits: end the model itself in a "
                            f"layer with activation={act!r}, or drop the {act}")
        return
    fix = _OUTPUTS[loss] if loss is not None else ("an output is logits (no activation), or a "
                                                   "sigmoid (binary) or softmax (multi-class) "
                                                   "probability")
    shown = "a custom function" if act == "?" else repr(act)
    raise SpecError(f"{where} has activation {shown}; {fix}: drop it")


def _last_layer(model: Any) -> tuple[Any, Any]:
    """The layer that makes the model's output (inside nested models), and the nested
    model it is in (None: the model's own)."""
    import keras

    layer, nested = model, None
    while isinstance(layer, keras.Model) and layer.layers:
        if layer is not model:
            nested = layer
        layer = layer.layers[-1]
    return layer, nested


def _activation(layer: Any) -> tuple[str | None, bool]:
    """The non-linearity a layer ends in (None: none; "?": a function Keras does not
    name), and whether the trainers read it (a layer's `activation`)."""
    from study.trainers.keras import activation_name

    fn = getattr(layer, "activation", None)
    if callable(fn):
        name = activation_name(fn)
        return (None if name == "linear" else name or "?"), True
    return _ACTIVATION_LAYERS.get(type(layer).__name__), False


# --------------------------------------------------------------------------- identity


@dataclass(frozen=True)
class Builder:
    """A builder handed over as a Python callable (`register`)."""

    ref: str  # "module:qualname": what `model.builder` stores
    fn: Callable[..., Any]
    # The sys.path entry a fresh process imports `ref` from; None when it cannot (a
    # function of `__main__`, a notebook, a closure).
    import_root: str | None
    # Its identity as the pool's parent computed it (`import_builder`); None: computed
    # here, by building it (`identify`).
    identity: str | None = None


# Callables handed to `study.run(model=...)` in this process, by `Builder.ref`; looked up
# before importing, so a builder no other process can import still builds here.
_REGISTERED: dict[str, Builder] = {}


def register(fn: object) -> Builder:
    """Keep `fn` (a builder) in this process under its `module:qualname`. `UsageError`
    when it is not callable."""
    if not callable(fn) or isinstance(fn, type):
        raise UsageError(f"model: expected a function (input_shape, outputs) -> keras.Model or "
                         f"a 'module:function' string, got {type(fn).__name__}")
    module = str(getattr(fn, "__module__", None) or "__main__")
    qualname = str(getattr(fn, "__qualname__", None) or type(fn).__qualname__)
    builder = Builder(f"{module}:{qualname}", fn, import_root(fn, module, qualname))
    _REGISTERED[builder.ref] = builder
    return builder


def _check_reachable(ref: str) -> None:
    if ref in _REGISTERED:
        return
    module, _, qualname = ref.partition(":")
    if module.strip() == "__main__" or "<" in qualname:
        # A function study.run was handed, stored by its name: only that process (and
        # the workers it started) has it.
        raise SpecError(f"model.builder: {ref!r} was a function of the script or notebook "
                        "that called study.run, which only its own workers can rebuild; "
                        "elsewhere use model.builder = 'module:function' in an importable "
                        "module")


def check_builder(model: ModelSpec, input_shape: Sequence[int], outputs: int,
                  train: TrainSpec | None = None) -> str | None:
    """Build the spec's model once, before any database is touched, so a builder that
    does not import, raises or returns the wrong model (`check_output`, the loss taken
    from `train`) is one `SpecError` line that writes nothing; returns the builder's
    identity (`identify`; None for the MLP shorthand, which the spec alone describes)."""
    if not model.builder:
        return None
    _check_reachable(model.builder)  # before paying for TensorFlow
    # Before the import: a builder module that imports keras would load TensorFlow
    # without our quieting of its start-up lines.
    tensorflow()
    import keras

    registered = _REGISTERED.get(model.builder)
    if registered is not None and registered.identity is not None:
        # A pool's worker: its model is the config the parent checked and identified.
        return registered.identity
    fn = _function(model.builder)  # imported before the seed is set
    try:
        built, identity = _identified(model.builder, fn, tuple(input_shape), outputs)
        check_output(built, f"model.builder: {model.builder!r}", outputs, train)
    finally:
        keras.backend.clear_session()  # the check's model is not kept
    return identity


# The seed the identity's initial weights are drawn at.
IDENTITY_SEED = 0


def _identified(ref: str, fn: Callable[..., Any], shape: tuple[int, ...], outputs: int
                ) -> tuple[Any, str]:
    """The builder's model, built at `IDENTITY_SEED` on the CPU (the same weights on any
    machine), and its identity. Python's and NumPy's random states are restored after:
    the caller's own draws do not depend on whether a model was checked."""
    import numpy as np

    tf = tensorflow()
    import keras

    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        with tf.device("/CPU:0"):
            keras.utils.set_random_seed(IDENTITY_SEED)
            model = _from_builder(ref, fn, shape, outputs)
            return model, identify(model)
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)


# Config keys a layer's summary shows, in this order, so that a refused resume can say
# what changed (spec.builder_diff); any other change shows as the summary's hash.
_SUMMARY_KEYS = ("units", "filters", "kernel_size", "strides", "activation", "rate",
                 "pool_size", "target_shape")


def identify(model: Any) -> str:
    """The identity of a built model: a JSON object of its architecture (the sha256 of
    its Keras config, canonical: sorted keys, its compile settings dropped and its
    layers' names replaced by their order, so two builds in one process, `dense` then
    `dense_1`, agree), its weights (the sha256 of their dtypes, shapes and bytes: the
    initial weights when built at `IDENTITY_SEED`), and one line per layer, a summary
    and a hash of its config, from which `spec.builder_diff` says what changed."""
    import keras
    import numpy as np

    layers = _flat_layers(model)
    try:
        config: Any = keras.saving.serialize_keras_object(model)
    except Exception:
        # A subclassed model without a config: its layers' configs stand for it.
        config = {"class_name": type(model).__name__,
                  "layers": [_layer_config(layer) for layer in layers]}
    if isinstance(config, dict):
        config.pop("compile_config", None)
    labels: dict[str, str] = {}
    _collect_names(config, labels)
    for layer in layers:  # a config without names (the fallback) still relabels them
        labels.setdefault(layer.name, f"#{len(labels)}")
    weights = hashlib.sha256()
    for w in model.get_weights():
        arr = np.ascontiguousarray(w)
        weights.update(f"{arr.dtype.str}{arr.shape};".encode())
        weights.update(arr.tobytes())
    summaries = []
    for layer in layers:
        own = _relabel(_layer_config(layer), labels)
        settings = own.get("config", own) if isinstance(own, dict) else own
        summaries.append(f"{_summary(layer, settings)} #{_sha256(own)[:8]}")
    return json.dumps({"architecture": "sha256:" + _sha256(_relabel(config, labels)),
                       "weights": "sha256:" + weights.hexdigest(), "layers": summaries},
                      sort_keys=True, separators=(",", ":"))


def _sha256(obj: Any) -> str:
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=repr)
    return hashlib.sha256(text.encode()).hexdigest()


def _flat_layers(model: Any) -> list[Any]:
    """The model's layers in order, a nested model's in its place; no InputLayer (a
    functional model lists it, a Sequential does not: its shape is in the config)."""
    import keras

    out: list[Any] = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            out.extend(_flat_layers(layer))
        elif not isinstance(layer, keras.layers.InputLayer):
            out.append(layer)
    return out


def _layer_config(layer: Any) -> Any:
    """The layer's Keras config (its build config too: the shape it takes)."""
    import keras

    try:
        return keras.saving.serialize_keras_object(layer)
    except Exception:
        # A custom layer without a config: its class and its weights' shapes.
        return {"class_name": type(layer).__name__, "name": layer.name,
                "weights": [list(w.shape) for w in layer.weights]}


def _collect_names(obj: Any, labels: dict[str, str]) -> None:
    """Label each layer or model name in a serialized config `#0`, `#1`... in order of
    first appearance (keys sorted): names Keras numbers per process are not identity."""
    if isinstance(obj, Mapping):
        config = obj.get("config")
        name = config.get("name") if isinstance(config, Mapping) else None
        if (isinstance(name, str) and "class_name" in obj
                and not str(obj["class_name"]).endswith("Policy")):
            labels.setdefault(name, f"#{len(labels)}")
        if isinstance(obj.get("name"), str) and "class_name" not in obj:
            labels.setdefault(obj["name"], f"#{len(labels)}")  # a Model's own config
        for key in sorted(obj):
            _collect_names(obj[key], labels)
    elif isinstance(obj, list | tuple):
        for item in obj:
            _collect_names(item, labels)


def _relabel(obj: Any, labels: Mapping[str, str]) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _relabel(v, labels) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_relabel(item, labels) for item in obj]
    if isinstance(obj, str):
        return labels.get(obj, obj)
    return obj


def _summary(layer: Any, config: Any) -> str:
    """`Dense(units=8, activation='relu')`: the class and the settings people change."""
    parts = []
    if isinstance(config, Mapping):
        for key in _SUMMARY_KEYS:
            value = config.get(key)
            if value is None or (key == "activation" and value == "linear"):
                continue
            if isinstance(value, list):
                value = tuple(value)
            parts.append(f"{key}={value!r}")
    return f"{type(layer).__name__}({', '.join(parts)})"


def importable(ref: str) -> str | None:
    """The sys.path entry a fresh process imports the builder `ref` from: None when it
    cannot (see `Builder.import_root`), or "" for a string builder (found as this
    process found it: on the path, or in the current directory)."""
    registered = _REGISTERED.get(ref)
    return "" if registered is None else registered.import_root


def export_builder(model: ModelSpec, input_shape: Sequence[int], outputs: int) -> dict[str, Any]:
    """What a worker needs to rebuild a registered builder it cannot import: the model's
    Keras config, its `ref` and identity. `UsageError` when Keras cannot rebuild the
    model from its config (a custom layer, a Lambda)."""
    tensorflow()
    import keras

    registered = _REGISTERED[model.builder]
    try:
        built, identity = _identified(registered.ref, registered.fn, tuple(input_shape), outputs)
        config = built.to_json()
        keras.models.model_from_json(config)
    except SpecError:
        raise
    except Exception as e:
        raise UsageError(
            f"model: {registered.ref!r} is defined where worker processes cannot import it, "
            f"and Keras cannot rebuild its model from its config ({type(e).__name__}: "
            f"{first_line(e)}); define it in an importable module, or use workers=1"
        ) from None
    finally:
        keras.backend.clear_session()
    return {"ref": registered.ref, "identity": identity, "config": config}


def import_builder(payload: Mapping[str, Any]) -> None:
    """Register the builder `export_builder` described, in a worker: it rebuilds the
    model from its Keras config (fresh weights, drawn under the trial's seed)."""
    config = str(payload["config"])

    def rebuild(input_shape: Sequence[int], outputs: int) -> Any:
        import keras

        return keras.models.model_from_json(config)

    ref = str(payload["ref"])
    identity = payload.get("identity")
    _REGISTERED[ref] = Builder(ref, rebuild, None, None if identity is None else str(identity))
