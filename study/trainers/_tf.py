"""Import TensorFlow quietly.

TensorFlow's C++ side prints oneDNN, CUDA-not-found and CPU-feature lines to file
descriptor 2 before its logging is configured, so `TF_CPP_MIN_LOG_LEVEL` does not
reach them. Unless `STUDY_VERBOSE` is set we point fd 2 at a temporary file while
TensorFlow loads and finds its devices, and replay that file only if loading fails.
"""

from __future__ import annotations

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
    if _tf is not None:
        return _tf
    if verbose():
        import tensorflow as tf

        _tf = cast(ModuleType, tf)
        return _tf
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
    _tf = cast(ModuleType, tf)
    return _tf
