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
