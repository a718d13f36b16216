"""Stored trials -> `TrialRecord`s: the one adapter between the database and analysis.

`record` builds a `TrialRecord` from a trial's stored parts, whoever read them: the
report reads them through Optuna (`to_record`), `study query` through SQL; both go
through `record`, so they cannot disagree. This module also names every user attribute
the runner and the trainers write (the one registry of those names), so the writers and
the readers agree.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
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
# The trials one `Trainer.train` call trained together (the runner's claim; the
# population trainer fuses them into one program): the call's wall time and how many
# trials it held. SECONDS is the trainer's measure of the trial's own time (for fused
# trials a share of GROUP_SECONDS); Optuna's datetime_start and datetime_complete are
# when the runner claimed and told the trial, so for fused trials they span the group.
GROUP_SECONDS = "group_seconds"
GROUP_SIZE = "group_size"
# Classification losses only (absent for mse): the last epoch's training accuracy (as
# model.fit reports it: the share of the epoch's rows its batches got right), the
# validation accuracy after training, and both per epoch.
TRAIN_ACCURACY = "train_accuracy"
VAL_ACCURACY = "val_accuracy"
TRAIN_ACCURACY_CURVE = "train_accuracy_curve"
VAL_ACCURACY_CURVE = "val_accuracy_curve"

# The training loss every `analysis.curve_every` steps: {"every": k, "loss": [...]}, the
# i-th value the mean batch loss of steps i*k+1 .. (i+1)*k (null where not finite).
STEP_CURVE = "step_curve"

CORE_ATTRS = {STEP_CURVE, STATUS, SEED_ATTR, TRAIN_LOSS, VAL_LOSS, FULL_TRAIN_LOSS, STEPS, SECONDS,
              TRAIN_CURVE, VAL_CURVE, DIVERGED_EPOCH, ERROR, TRAINER, TRAIN_ACCURACY,
              VAL_ACCURACY, TRAIN_ACCURACY_CURVE, VAL_ACCURACY_CURVE, GROUP_SECONDS, GROUP_SIZE}
# Per-epoch lists: only the curves query reads them, so the other readers may skip them.
CURVES = (TRAIN_CURVE, VAL_CURVE, TRAIN_ACCURACY_CURVE, VAL_ACCURACY_CURVE, STEP_CURVE)

# Measurements the trainers take when the spec's [analysis] section asks for them. Every
# numeric attribute outside CORE_ATTRS lands in `TrialRecord.extras`, these among them;
# a study without them simply shows no noise scale or sharpness.
NOISE_SCALE = "noise_scale"  # B_simple of the trial, pooled over its measured epochs
NOISE_GRAD_SQ = "noise_grad_sq"  # |G|^2, unbiased two-batch estimate
NOISE_TRACE_SIGMA = "noise_trace_sigma"  # tr(Sigma), unbiased two-batch estimate
SHARPNESS = "sharpness"  # top Hessian eigenvalue of the training loss after training


def at_epoch(name: str, epoch: int) -> str:
    """The attribute of one epoch's own measurement: `noise_scale_epoch_3`."""
    return f"{name}_epoch_{epoch}"


# Study user attributes `study run` writes: the spec it ran (read back only through
# `spec.from_stored`) and its provenance.
STUDY_SPEC = "spec"
STUDY_VERSIONS = "versions"
STUDY_GIT_REVISION = "git_revision"
STUDY_CREATED = "created"

# A trial without our status attribute (not run by `study`, or not finished) gets the
# outcome its Optuna state implies.
DEFAULT_STATUS = {"COMPLETE": "complete", "PRUNED": "pruned", "RUNNING": "running",
                  "WAITING": "waiting"}


def finite_or_none(x: float | None) -> float | None:
    """JSON (and the dashboard's JavaScript) has no NaN: store non-finite as null."""
    return None if x is None or not math.isfinite(x) else float(x)


def _num(attrs: Mapping[str, Any], key: str) -> float | None:
    v = attrs.get(key)
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def step_curve(attrs: Mapping[str, Any]) -> tuple[int | None, tuple[float, ...]]:
    """A trial's STEP_CURVE attribute as (every, losses); (None, ()) without a usable one."""
    curve = attrs.get(STEP_CURVE)
    if not isinstance(curve, Mapping):
        return None, ()
    every, losses = curve.get("every"), curve.get("loss")
    if not isinstance(every, int) or isinstance(every, bool) or every < 1 \
            or not isinstance(losses, list):
        return None, ()
    return every, tuple(float(v) if isinstance(v, int | float) and not isinstance(v, bool)
                        else math.nan for v in losses)


def status_of(state: str, attrs: Mapping[str, Any]) -> str:
    """A trial's outcome: our status attribute, or the one its Optuna state implies."""
    return str(attrs.get(STATUS, DEFAULT_STATUS.get(state, "error")))


def record(number: int, state: str, params: Mapping[str, object], value: float | None,
           attrs: Mapping[str, Any]) -> TrialRecord:
    """One trial from its stored parts: number, Optuna state name (COMPLETE, FAIL, ...),
    parameters (external values), objective value, and user attributes (decoded JSON)."""
    seed = params.get(SEED, attrs.get(SEED_ATTR))
    extras = {k: float(v) for k, v in attrs.items()
              if k not in CORE_ATTRS and isinstance(v, int | float) and not isinstance(v, bool)}
    bs = params.get(BATCH_SIZE)
    lr = params.get(LEARNING_RATE)
    every, losses = step_curve(attrs)
    return TrialRecord(
        number=number,
        state=state,
        batch_size=int(bs) if isinstance(bs, int | float) else None,
        learning_rate=float(lr) if isinstance(lr, int | float) else None,
        seed=int(seed) if isinstance(seed, int | float) else None,
        value=value if state == "COMPLETE" else None,
        status=status_of(state, attrs),
        train_loss=_num(attrs, TRAIN_LOSS),
        val_loss=_num(attrs, VAL_LOSS),
        full_train_loss=_num(attrs, FULL_TRAIN_LOSS),
        seconds=_num(attrs, SECONDS),
        train_accuracy=_num(attrs, TRAIN_ACCURACY),
        val_accuracy=_num(attrs, VAL_ACCURACY),
        extras=extras,
        step_every=every,
        step_losses=losses,
    )


def to_record(t: FrozenTrial) -> TrialRecord:
    return record(t.number, t.state.name, t.params, t.value, t.user_attrs)


def to_records(trials: Iterable[FrozenTrial]) -> list[TrialRecord]:
    return [to_record(t) for t in trials]
