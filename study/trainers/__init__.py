"""Trainers behind one seam; see `base.py`. TensorFlow is imported only inside them."""

from __future__ import annotations

import sys

from study.errors import SpecError
from study.spec import Spec
from study.trainers.base import Monitor, Trainer, TrialConfig, TrialResult, no_monitor

__all__ = ["Monitor", "Trainer", "TrialConfig", "TrialResult", "get_trainer", "no_monitor"]

NAMES = ("auto", "keras", "population")


def get_trainer(name: str, spec: Spec) -> Trainer:
    """The trainer called `name`.

    "auto" and "population" give the population trainer (many trials in one compiled
    program) when it supports the spec. When it does not, they give the keras reference
    trainer and say so in one line on stderr: a spec is never trained by a trainer that
    would get it wrong.
    """
    from study.trainers.keras import KerasTrainer

    if name == "keras":
        return KerasTrainer()
    if name in ("auto", "population"):
        from study.trainers.population import PopulationTrainer, unsupported

        reason = unsupported(spec)
        if reason is None:
            return PopulationTrainer.for_spec(spec)
        print(f"study: the population trainer does not support {reason}; "
              "training with the keras trainer", file=sys.stderr)
        return KerasTrainer()
    raise SpecError(f"--trainer: unknown trainer {name!r} (expected one of: {', '.join(NAMES)})")
