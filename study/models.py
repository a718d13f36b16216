"""Models: the MLP shorthand of the spec's `[model]` section, or a user's builder.

A builder is a function `(input_shape, outputs) -> keras.Model`: `input_shape` is the
shape of one input row (a tuple, `(features,)` or `(h, w, c)`), `outputs` the width of
the last layer (one unit per regression target, one logit for a binary task, one logit
per class for a multi-class one). It returns the model uncompiled, its output layer
without an activation (the losses take logits); `study` compiles it with the spec's
optimizer, loss and schedule. It is named in the spec as `model.builder =
"module:function"`.

Its identity is that string and the sha256 of the file its source is in
(`builder_identity`), both stored with the study: resuming after the file changed is
refused (runner.py). The file, not the function's text, because a builder calls
whatever else its module defines.

From Python, `study.run(model=fn)` takes the function itself (`register`): it is kept
in this process under its `module:qualname`, which is what the spec stores. Workers in
other processes import that name when they can (a function at the top level of an
importable module); a function they cannot import (defined in `__main__`, a notebook,
or inside another function) reaches them as its model's Keras config
(`export_builder`), which they rebuild with `keras.models.model_from_json`.
"""

from __future__ import annotations

import hashlib
import inspect
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from study.errors import SpecError, UsageError
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

    registered = _REGISTERED.get(ref)
    fn = registered.fn if registered is not None else load_function(ref, "model.builder",
                                                                     SpecError)
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


# --------------------------------------------------------------------------- identity


@dataclass(frozen=True)
class Builder:
    """A builder handed over as a Python callable (`register`)."""

    ref: str  # "module:qualname": what `model.builder` stores
    fn: Callable[..., Any]
    sha256: str | None  # of its source file (None: no source to read)
    # The sys.path entry a fresh process imports `ref` from; None when it cannot (a
    # function of `__main__`, a notebook, a closure).
    import_root: str | None


# Callables handed to `study.run(model=...)` in this process, by `Builder.ref`; looked up
# before importing, so a builder no other process can import still builds here.
_REGISTERED: dict[str, Builder] = {}


def register(fn: object) -> Builder:
    """Keep `fn` (a builder) in this process under its `module:qualname`, with its
    identity. `UsageError` when it is not callable."""
    if not callable(fn) or isinstance(fn, type):
        raise UsageError(f"model: expected a function (input_shape, outputs) -> keras.Model or "
                         f"a 'module:function' string, got {type(fn).__name__}")
    module = str(getattr(fn, "__module__", None) or "__main__")
    qualname = str(getattr(fn, "__qualname__", None) or type(fn).__qualname__)
    builder = Builder(f"{module}:{qualname}", fn, _source_sha256(fn), _import_root(fn, module,
                                                                                   qualname))
    _REGISTERED[builder.ref] = builder
    return builder


def builder_identity(ref: str) -> str | None:
    """The sha256 ("sha256:HEX") of the source file of the builder `ref` names (a
    registered callable's, else the imported function's); None when it has no source
    to read. `SpecError` when `ref` does not import."""
    registered = _REGISTERED.get(ref)
    if registered is not None:
        return registered.sha256
    _check_reachable(ref)
    return _source_sha256(load_function(ref, "model.builder", SpecError))


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


def check_builder(model: ModelSpec, input_shape: Sequence[int], outputs: int) -> str | None:
    """Build the spec's model once, before any database is touched, so a builder that
    does not import, raises or returns the wrong thing is one `SpecError` line that
    writes nothing; returns the builder's identity (None for the MLP shorthand, which
    has no source of its own)."""
    if not model.builder:
        return None
    _check_reachable(model.builder)  # before paying for TensorFlow
    # Before the import: a builder module that imports keras would load TensorFlow
    # without our quieting of its start-up lines.
    tensorflow()
    import keras

    sha = builder_identity(model.builder)
    build_model(model, input_shape, outputs)
    keras.backend.clear_session()  # the check's model is not kept
    return sha


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
    config = build_model(model, input_shape, outputs).to_json()
    try:
        keras.models.model_from_json(config)
    except Exception as e:
        raise UsageError(
            f"model: {registered.ref!r} is defined where worker processes cannot import it, "
            f"and Keras cannot rebuild its model from its config ({type(e).__name__}: "
            f"{first_line(e)}); define it in an importable module, or use workers=1"
        ) from None
    finally:
        keras.backend.clear_session()
    return {"ref": registered.ref, "sha256": registered.sha256, "config": config}


def import_builder(payload: Mapping[str, Any]) -> None:
    """Register the builder `export_builder` described, in a worker: it rebuilds the
    model from its Keras config (fresh weights, drawn under the trial's seed)."""
    config = str(payload["config"])

    def rebuild(input_shape: Sequence[int], outputs: int) -> Any:
        import keras

        return keras.models.model_from_json(config)

    ref = str(payload["ref"])
    sha = payload.get("sha256")
    _REGISTERED[ref] = Builder(ref, rebuild, None if sha is None else str(sha), None)


def _source_sha256(fn: Callable[..., Any]) -> str | None:
    target: Any = inspect.unwrap(fn)
    if not (inspect.isfunction(target) or inspect.ismethod(target)):
        target = type(target)  # a callable object: its class's source
    try:
        path = inspect.getsourcefile(target)
    except TypeError:
        path = None
    if path is None:
        module = sys.modules.get(getattr(fn, "__module__", "") or "")
        path = getattr(module, "__file__", None)
    if path and os.path.isfile(path):
        return "sha256:" + hashlib.sha256(Path(path).read_bytes()).hexdigest()
    try:
        # A notebook cell has no file, but its text is in linecache.
        return "sha256:" + hashlib.sha256(inspect.getsource(target).encode()).hexdigest()
    except (OSError, TypeError):
        return None


def _import_root(fn: Callable[..., Any], module: str, qualname: str) -> str | None:
    """The directory a fresh process needs on sys.path to import `module:qualname` and
    find `fn` itself there; None when it cannot."""
    if module == "__main__" or "<" in qualname or "." in qualname:
        return None
    loaded = sys.modules.get(module)
    file = getattr(loaded, "__file__", None)
    if loaded is None or file is None or getattr(loaded, qualname, None) is not fn:
        return None
    root = Path(file).resolve().parent
    if Path(file).name == "__init__.py":
        root = root.parent
    for _ in range(module.count(".")):
        root = root.parent
    return str(root)
