"""The seam between the runner and the trainers: `train(configs, data, monitor) -> results`.

Many trial configs go in, one result per config comes out, in the same order. The
runner never knows how training is done; a trainer never touches Optuna or storage.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

import numpy as np

from study.data import Dataset
from study.spec import AnalysisSpec, ModelSpec, Plan, Spec, TrainSpec

Status = Literal["complete", "diverged", "pruned"]
FLOAT32_MAX = float(np.finfo(np.float32).max)

# Called after every epoch of every config: (config index, epoch from 1, mean training
# loss of that epoch, validation loss after it, validation accuracy after it: NaN for a
# regression loss). Returning True stops that config (the runner's pruner said so); the
# result then has status "pruned".
Monitor = Callable[[int, int, float, float, float], bool]


def no_monitor(index: int, epoch: int, train_loss: float, val_loss: float,
               val_accuracy: float) -> bool:
    return False


def output_width(train: TrainSpec, data: Dataset) -> int:
    """Units of the model's output layer: one logit per class for sparse_cross_entropy,
    else one per target column (the regression values, or the binary logit)."""
    return data.n_classes if train.loss == "sparse_cross_entropy" else data.n_outputs


@dataclass(frozen=True)
class TrialConfig:
    """Everything a trainer needs for one trial, and nothing about Optuna: `study.TrialConfig`,
    what a trainer of your own is handed (trainers/user.py). Read-only (frozen, and so are
    its sections).

    `batch_size`, `learning_rate` (the peak of `train.schedule`) and `seed` are the
    trial's; seed everything random with `seed` (initial weights, each epoch's order) so
    that a trial repeats. `model`, `train` and `analysis` are the spec's sections of
    those names (`ModelSpec`, `TrainSpec`, `AnalysisSpec` in spec.py): the optimizer, the
    loss, the budget, the divergence factor, the step-curve interval. The budget:
    `plan(n_train)` gives the epochs to train, the rows of the last (possibly partial)
    epoch and the optimizer steps; `curve_every(n_train)`, the steps per point of the
    step curve (0: none).
    """

    batch_size: int
    learning_rate: float
    seed: int
    model: ModelSpec
    train: TrainSpec
    analysis: AnalysisSpec = field(default_factory=AnalysisSpec)

    @classmethod
    def of(cls, spec: Spec, batch_size: int, learning_rate: float, seed: int) -> TrialConfig:
        return cls(batch_size, learning_rate, seed, spec.model, spec.train, spec.analysis)

    @property
    def shape_key(self) -> tuple[object, ...]:
        """Trials with equal keys can be trained together by a stacking trainer."""
        return (self.batch_size, self.model, self.train, self.analysis)

    def plan(self, n_train: int) -> Plan:
        """This trial's epochs under its budget (see `TrainSpec.plan`)."""
        return self.train.plan(self.batch_size, n_train)

    def curve_every(self, n_train: int) -> int:
        """The steps per point of this trial's step curve (`AnalysisSpec.every`), 0 when
        it would record none: its interval exceeds the steps it is planned to take."""
        steps = self.plan(n_train).steps
        every = self.analysis.every(steps)
        return every if every <= steps else 0


@dataclass
class TrialResult:
    status: Status
    train_curve: list[float]  # mean training loss of each epoch, as Keras reports it
    val_curve: list[float]  # validation loss after each epoch
    full_train_loss: float  # loss on the whole training set after training (nan if diverged)
    steps: int  # optimizer updates taken
    seconds: float  # wall time of this trial (a share of the batch for stacking trainers)
    diverged_epoch: int | None = None  # first epoch whose loss diverged (see `diverges`)
    extras: dict[str, float] = field(default_factory=dict)
    # Classification losses only (empty for mse): each epoch's training accuracy as
    # `model.fit` reports it (the share of the epoch's rows its batches got right, before
    # each batch's update), and the validation accuracy after each epoch.
    train_accuracy_curve: list[float] = field(default_factory=list)
    val_accuracy_curve: list[float] = field(default_factory=list)
    # The training loss every `step_every` optimizer steps (records.STEP_CURVE): value i
    # is the mean of the batch losses of steps i*k+1 .. (i+1)*k, each the loss of its
    # batch before its update, as `model.fit` computes it; complete windows only, so
    # floor(steps / k) values. step_every = 0: not recorded (its k exceeded the steps
    # the trial was planned to take, `AnalysisSpec.every`).
    step_every: int = 0
    step_losses: list[float] = field(default_factory=list)
    # With train.keep_weights = "best": the trained weights, in the order of the
    # builder's Keras model's `get_weights()`, so `model.set_weights(weights)` gives the
    # model this trial ended with. None otherwise (or when the trial diverged).
    weights: list[np.ndarray] | None = None

    @property
    def train_loss(self) -> float:
        """The article's metric: the last epoch's mean training loss."""
        return self.train_curve[-1] if self.train_curve else float("nan")

    @property
    def val_loss(self) -> float:
        return self.val_curve[-1] if self.val_curve else float("nan")

    @property
    def train_accuracy(self) -> float:
        """The last epoch's training accuracy (nan without one)."""
        return self.train_accuracy_curve[-1] if self.train_accuracy_curve else float("nan")

    @property
    def val_accuracy(self) -> float:
        return self.val_accuracy_curve[-1] if self.val_accuracy_curve else float("nan")


class Trainer(Protocol):
    name: str
    # The most configs the runner should hand over at once.
    batch_limit: int

    def claim_size(self, pending: Sequence[TrialConfig], n_train: int, seconds: float) -> int:
        """How many of `pending` (every config the runner has left to start, in the order
        it takes them) to take in the next `train` call, at most `batch_limit`, so that
        it takes about `seconds`, judged from the calls before: the
        runner records each call's results as it returns, so a kill loses at most that
        call. At least 1 when `pending` is not empty."""
        ...

    def train(
        self, configs: Sequence[TrialConfig], data: Dataset, monitor: Monitor = no_monitor
    ) -> list[TrialResult]: ...


def divergence_limit(train: TrainSpec, initial_loss: float) -> float:
    """The largest epoch loss that is not a blow-up: `train.divergence_factor` times the
    loss of the trial's initial weights on the whole training set; inf when the factor
    is 0 (off) or that loss gives no scale (zero or not finite).

    The reference is the initial weights' loss, not the first epoch's: a first epoch can
    itself blow up, and then every later epoch would be judged against a blow-up. It is
    rounded to float32, the precision of the losses it is compared with, so that a
    compiled program comparing in float32 decides exactly as `diverges` does.
    """
    limit = train.divergence_factor * initial_loss
    if not train.divergence_factor or not (initial_loss > 0) or not limit < FLOAT32_MAX:
        return math.inf
    return float(np.float32(limit))


def diverges(loss: float, limit: float) -> bool:
    """Whether an epoch's mean training loss ends its trial as diverged."""
    return not math.isfinite(loss) or loss > limit
