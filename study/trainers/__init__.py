"""Trainers behind one seam; see `base.py`. TensorFlow is imported only inside them."""

from __future__ import annotations

from typing import TYPE_CHECKING

from study.errors import SpecError
from study.spec import Spec
from study.trainers.base import Monitor, Trainer, TrialConfig, TrialResult, no_monitor

if TYPE_CHECKING:
    from study.data import Dataset

__all__ = ["Monitor", "Trainer", "TrialConfig", "TrialResult", "choose_trainer", "get_trainer",
           "no_monitor"]

NAMES = ("auto", "keras", "population")


def choose_trainer(name: str, spec: Spec, data: Dataset | None = None
                   ) -> tuple[Trainer, str | None]:
    """The trainer called `name`, and why it is not the one asked for (None when it is).

    "auto" and "population" give the population trainer (many trials in one compiled
    program) when it supports the spec. When it does not, they give the keras reference
    trainer, with the reason as one sentence for the caller to show: a spec is never
    trained by a trainer that would get it wrong. A builder's model is read for `data`
    (its input shape and outputs): without the data it trains with the keras trainer.
    "module:function" is a trainer of your own (user.py), which never loads TensorFlow.
    """
    from study.trainers.user import is_own

    if is_own(name):
        from study.trainers.user import user_trainer

        return user_trainer(spec), None
    from study.trainers.keras import KerasTrainer

    if name == "keras":
        return KerasTrainer(), None
    if name in ("auto", "population"):
        from study.trainers.population import PopulationTrainer, unsupported

        reason = unsupported(spec, data)
        if reason is None:
            return PopulationTrainer.for_spec(spec), None
        return KerasTrainer(), (f"the population trainer does not support {reason}; "
                                "training with the keras trainer")
    raise SpecError(f"--trainer: unknown trainer {name!r} (expected one of: {', '.join(NAMES)}, "
                    "or 'module:function' naming a trainer of your own)")


def get_trainer(name: str, spec: Spec, data: Dataset | None = None) -> Trainer:
    """`choose_trainer` without the reason."""
    return choose_trainer(name, spec, data)[0]
