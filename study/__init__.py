"""study: how batch size and learning rate interact when a neural network trains.

The Python API (`study.api`): `study.run(...)` creates or resumes a study and returns its
`Results`; `study.load(storage)` opens an existing one. They are imported on first use,
so `import study` stays fast and never loads TensorFlow.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from study import errors
    from study.api import Best, Results, delete, join, load, run
    from study.data import Dataset
    from study.query import Table
    from study.spec import Spec
    from study.trainers.base import TrialConfig

__version__ = "0.1.0"
__all__ = ["Best", "Dataset", "Results", "Spec", "Table", "TrialConfig", "__version__", "delete",
           "errors", "join", "load", "run"]

_LAZY = {"run": "study.api", "load": "study.api", "Results": "study.api", "Best": "study.api",
         "delete": "study.api", "join": "study.api",
         "Table": "study.query", "Spec": "study.spec", "Dataset": "study.data",
         "TrialConfig": "study.trainers.base"}


def __getattr__(name: str) -> object:
    if name == "errors":  # `except study.errors.SpecError` after a bare `import study`
        return importlib.import_module("study.errors")
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module 'study' has no attribute {name!r}")
