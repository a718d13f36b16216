"""Import TensorFlow quietly.

TensorFlow's C++ side prints oneDNN, CUDA-not-found and CPU-feature lines to file
descriptor 2 before its logging is configured, so `TF_CPP_MIN_LOG_LEVEL` does not
reach them. Unless `STUDY_VERBOSE` is set we point fd 2 at a temporary file while
TensorFlow loads and finds its devices, and replay that file only if loading fails.
"""

from __future__ import annotations

import gc
import os
import sys
import tempfile
from types import ModuleType
from typing import cast

_tf: ModuleType | None = None
# Whether to load TensorFlow without what this process will never use (see `lean`).
_lean = False

# Modules `import tensorflow` loads only for features `study` does not use: Keras (which
# TensorFlow loads for `tf.keras`) imports scikit-learn, when it is installed, for its
# scikit-learn wrappers, about 1 s of every process's start on a 2-core machine. Keras
# treats a scikit-learn it cannot import as absent.
UNUSED = ("sklearn",)


def lean() -> None:
    """Have this process load TensorFlow without the modules in `UNUSED` (unless already
    imported). For the command line, whose processes never call what needs them: in a
    notebook, Keras' scikit-learn wrappers must keep working, so the library leaves
    TensorFlow's import as it is. Modules hidden this way import normally afterwards;
    only Keras' wrappers keep seeing them as absent."""
    global _lean
    _lean = True


def verbose() -> bool:
    return os.environ.get("STUDY_VERBOSE", "") not in ("", "0")


def tensorflow() -> ModuleType:
    global _tf
    if _tf is None:
        _tf = _import()
        # TensorFlow's import leaves a few hundred thousand long-lived objects that every
        # full garbage collection would walk again, including the ones at interpreter
        # exit (~0.5 s here). Freezing them moves them out of the collector's sight;
        # they live as long as the process anyway.
        gc.freeze()
    return _tf


def _import() -> ModuleType:
    # XLA reads its flags when TensorFlow loads: compiled programs are kept across
    # processes (compile_cache.py) only if the cache is set up before that.
    from study.trainers.compile_cache import use_compile_cache

    use_compile_cache()
    hidden = [name for name in UNUSED if _lean and name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None  # type: ignore[assignment]  # import raises ImportError
    try:
        return _load()
    finally:
        for name in hidden:
            if sys.modules.get(name, ...) is None:
                del sys.modules[name]


def _load() -> ModuleType:
    if verbose():
        import tensorflow as tf

        return cast(ModuleType, tf)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            import tensorflow as tf

            tf.get_logger().setLevel("ERROR")
            tf.config.list_physical_devices()  # device discovery prints too
        except BaseException:
            os.dup2(saved, 2)
            sink.seek(0)
            sys.stderr.write(sink.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
    return cast(ModuleType, tf)
