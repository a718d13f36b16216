"""Learning-rate schedules per optimizer step, defined as `keras.optimizers.schedules` does.

Keras evaluates a schedule at the optimizer's `iterations`, the number of updates
already applied, so update u (1-based) uses the rate at step u - 1. The keras trainer
builds the Keras schedule classes from a `Schedule`; the population trainer computes the
same formulas, in float32 and the same order of operations, inside its program:

- constant: `learning_rate`;
- step: `PiecewiseConstantDecay(boundaries, values)`, the rate times `decay_rate`^i after
  the i-th boundary (a step is past boundary b when step > b);
- cosine: `CosineDecay(learning_rate, decay_steps=total)`: lr * 0.5 (1 + cos(pi s / D)),
  s = min(step, D); with a warm-up, `CosineDecay(0, D = total - W, warmup_target=lr,
  warmup_steps=W)`: lr * s / W while s < W, then the cosine over the remaining steps;
- warmup: the same linear warm-up from 0 over W steps, then constant: `CosineDecay` with
  `alpha = 1`, whose decayed factor is (1 - 1) cos + 1 = 1 exactly.

Lengths are fractions of the trial's own update count (`TrainSpec.plan(...).steps`), so
a schedule means the same thing at every batch size and budget (Goyal et al. 2017 warm
up over a share of training, in epochs).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from study.spec import TrainSpec


@dataclass(frozen=True)
class Schedule:
    kind: str  # constant | step | cosine | warmup
    peak: float  # the trial's learning rate
    total: int  # the trial's optimizer updates
    warmup: int  # warm-up updates (0: none)
    boundaries: tuple[int, ...]  # step decay: past each, the next value
    values: tuple[float, ...]  # step decay: len(boundaries) + 1 rates; else (peak,)

    @classmethod
    def of(cls, train: TrainSpec, learning_rate: float, total: int) -> Schedule:
        warmup = 0
        if train.schedule in ("cosine", "warmup") and train.warmup_fraction > 0:
            warmup = min(total, max(1, round(train.warmup_fraction * total)))
        boundaries: tuple[int, ...] = ()
        values: tuple[float, ...] = (learning_rate,)
        if train.schedule == "step":
            boundaries = tuple(round(f * total) for f in train.decay_at)
            values = tuple(learning_rate * train.decay_rate ** i for i in range(len(boundaries) + 1))
        return cls(train.schedule, learning_rate, total, warmup, boundaries, values)

    @property
    def decay_steps(self) -> int:
        """`CosineDecay`'s decay_steps: the updates after the warm-up (at least 1)."""
        return max(1, self.total - self.warmup)

    def at(self, step: int) -> float:
        """The rate at `step` (updates already applied), in float64: for tests and docs."""
        if self.kind == "step":
            return self.values[sum(step > b for b in self.boundaries)]
        if self.kind == "constant":
            return self.peak
        alpha = 1.0 if self.kind == "warmup" else 0.0
        if self.warmup:
            s = min(step, self.decay_steps + self.warmup)
            if s < self.warmup:
                return self.peak * s / self.warmup
            s -= self.warmup
        else:
            s = min(step, self.decay_steps)
        cosine = 0.5 * (1.0 + math.cos(math.pi * s / self.decay_steps))
        return self.peak * ((1 - alpha) * cosine + alpha)
