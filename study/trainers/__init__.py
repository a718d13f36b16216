"""Trainers behind one seam; see `base.py`. TensorFlow is imported only inside them."""

from __future__ import annotations

from study.errors import SpecError
from study.spec import Spec
from study.trainers.base import Monitor, Trainer, TrialConfig, TrialResult, no_monitor

__all__ = ["Monitor", "Trainer", "TrialConfig", "TrialResult", "get_trainer", "no_monitor"]


def get_trainer(name: str, spec: Spec) -> Trainer:
    """The trainer called `name` ("auto" picks the fastest that supports the spec)."""
    if name in ("auto", "keras"):
        from study.trainers.keras import KerasTrainer

        return KerasTrainer()
    raise SpecError(f"--trainer: unknown trainer {name!r} (expected one of: auto, keras)")
