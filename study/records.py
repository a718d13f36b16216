"""Optuna trials -> `TrialRecord`s: the one adapter between Optuna objects and analysis.

It also names the user attributes every trial carries, so the runner that writes them
and the readers that read them agree.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from study.analysis import TrialRecord
from study.space import BATCH_SIZE, LEARNING_RATE, SEED

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial

# Trial user attributes written by the runner (see README, "Where results go").
STATUS = "status"  # complete | diverged | pruned | interrupted | abandoned | error
SEED_ATTR = "seed"
TRAIN_LOSS = "train_loss"  # last epoch's mean training loss (the article's metric)
VAL_LOSS = "val_loss"  # held-out loss after training
FULL_TRAIN_LOSS = "full_train_loss"  # whole training set, after training
STEPS = "steps"
SECONDS = "seconds"
TRAIN_CURVE = "train_curve"
VAL_CURVE = "val_curve"
DIVERGED_EPOCH = "diverged_epoch"
ERROR = "error"
TRAINER = "trainer"

CORE_ATTRS = {STATUS, SEED_ATTR, TRAIN_LOSS, VAL_LOSS, FULL_TRAIN_LOSS, STEPS, SECONDS,
              TRAIN_CURVE, VAL_CURVE, DIVERGED_EPOCH, ERROR, TRAINER}


def finite_or_none(x: float | None) -> float | None:
    """JSON (and the dashboard's JavaScript) has no NaN: store non-finite as null."""
    return None if x is None or not math.isfinite(x) else float(x)


def _num(attrs: dict[str, Any], key: str) -> float | None:
    v = attrs.get(key)
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def to_record(t: FrozenTrial) -> TrialRecord:
    state = t.state.name
    attrs = t.user_attrs
    default_status = {"COMPLETE": "complete", "PRUNED": "pruned", "RUNNING": "running",
                      "WAITING": "waiting"}.get(state, "error")
    seed = t.params.get(SEED, attrs.get(SEED_ATTR))
    extras = {k: float(v) for k, v in attrs.items()
              if k not in CORE_ATTRS and isinstance(v, int | float) and not isinstance(v, bool)}
    bs = t.params.get(BATCH_SIZE)
    lr = t.params.get(LEARNING_RATE)
    return TrialRecord(
        number=t.number,
        state=state,
        batch_size=int(bs) if bs is not None else None,
        learning_rate=float(lr) if lr is not None else None,
        seed=int(seed) if seed is not None else None,
        value=t.value if state == "COMPLETE" else None,
        status=str(attrs.get(STATUS, default_status)),
        train_loss=_num(attrs, TRAIN_LOSS),
        val_loss=_num(attrs, VAL_LOSS),
        full_train_loss=_num(attrs, FULL_TRAIN_LOSS),
        seconds=_num(attrs, SECONDS),
        extras=extras,
    )


def to_records(trials: Iterable[FrozenTrial]) -> list[TrialRecord]:
    return [to_record(t) for t in trials]
