"""A trainer for runner tests: the real seam, a closed-form loss, no TensorFlow.

The runner, Optuna and SQLite around it are the real ones; only the training is
replaced by a formula so the tests can script divergence, errors and timing.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from study.data import Dataset
from study.trainers import Monitor, TrialConfig, TrialResult, no_monitor


def loss_at(config: TrialConfig, epoch: int) -> float:
    return 1.0 / (1.0 + config.learning_rate * epoch * 100 / config.batch_size) + 0.001 * config.seed


@dataclass
class ScriptedTrainer:
    batch_limit: int = 1
    diverge_lr: float | None = None  # configs with this learning rate go NaN at epoch 2
    raise_lr: float | None = None  # configs with this learning rate raise
    delay: float = 0.0  # seconds per epoch
    name: str = "scripted"
    seen: list[TrialConfig] = field(default_factory=list)

    def claim_size(self, pending: Sequence[TrialConfig], n_train: int, seconds: float) -> int:
        return min(self.batch_limit, len(pending))

    def train(self, configs: Sequence[TrialConfig], data: Dataset, monitor: Monitor = no_monitor
              ) -> list[TrialResult]:
        out = []
        for i, c in enumerate(configs):
            self.seen.append(c)
            if self.raise_lr is not None and c.learning_rate == self.raise_lr:
                raise RuntimeError(f"scripted failure at lr={c.learning_rate}")
            train: list[float] = []
            val: list[float] = []
            status = "complete"
            diverged = None
            for epoch in range(1, c.train.epochs + 1):
                time.sleep(self.delay)
                loss = loss_at(c, epoch)
                if self.diverge_lr is not None and c.learning_rate == self.diverge_lr and epoch >= 2:
                    loss = math.nan
                train.append(loss)
                val.append(loss + 0.1)
                if not math.isfinite(loss):
                    status, diverged = "diverged", epoch
                    break
                if monitor(i, epoch, loss, loss + 0.1, math.nan):
                    status = "pruned"
                    break
            out.append(TrialResult(status, train, val, train[-1], len(train) * 10, 0.01,
                                   diverged_epoch=diverged))
        return out
