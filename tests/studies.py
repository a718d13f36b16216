"""Small real studies for the report, query and dashboard tests: no TensorFlow.

The real runner writes a real SQLite file; the scripted trainer's closed-form loss
stands in for training. One study has everything a report must show: repeats (two
seeds), a learning rate whose every run diverges, and a cell where one seed of two
diverges.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from study import runner
from study.data import Dataset, make_dataset
from study.spec import Spec, load_spec
from study.trainers import Monitor, TrialConfig, TrialResult, no_monitor
from tests.scripted import ScriptedTrainer

GRID = ["search.batch_size=[16, 64, 256]", "search.learning_rate=[0.1, 0.01, 0.001]",
        "train.epochs=4", "data.n_train=300", "data.n_val=50"]
DIVERGED_LR = 0.1  # every run at this learning rate diverges
PARTLY = (64, 0.01, 1)  # (batch size, learning rate, seed): the one run of its cell that diverges


def step_losses(c: TrialConfig, steps: int) -> list[float]:
    """The step curve a completed scripted run records, every 2 steps: a closed form that
    falls faster at larger batches and learning rates, so steps to a target shrink with B."""
    rate = c.learning_rate * min(c.batch_size, 64) * 10
    return [0.05 + 1.0 / (1.0 + rate * (2 * i + 1.5)) for i in range(steps // 2)]


def measured(c: TrialConfig) -> dict[str, float]:
    """The noise scale and sharpness attributes a completed scripted run records: closed
    forms, so tests know the pooled B_simple (tr(Sigma) and |G|^2 averaged over seeds, then
    divided) and that the sharpness sits below 2/lr."""
    grad_sq = 0.01 * (1 + c.seed)
    trace = c.batch_size * c.learning_rate * 100 * (2 + c.seed)
    return {"noise_grad_sq": grad_sq, "noise_trace_sigma": trace, "noise_scale": trace / grad_sq,
            "sharpness": 1.5 / c.learning_rate * (1 + 0.1 * c.seed)}


@dataclass
class DivergingTrainer(ScriptedTrainer):
    """The scripted trainer, diverging at `DIVERGED_LR` and in the `PARTLY` run; its
    completed runs record `measured(config)` as the real trainers' [analysis] options do."""

    def train(self, configs: Sequence[TrialConfig], data: Dataset, monitor: Monitor = no_monitor
              ) -> list[TrialResult]:
        out = []
        for c in configs:
            if c.learning_rate == DIVERGED_LR or (c.batch_size, c.learning_rate, c.seed) == PARTLY:
                self.seen.append(c)
                out.append(TrialResult("diverged", [2.0, math.nan], [2.1, math.nan], math.nan,
                                       20, 0.01, diverged_epoch=2))
            else:
                (result,) = super().train([c], data, monitor)
                if result.status == "complete":
                    result.extras.update(measured(c))
                    result.step_every = 2
                    result.step_losses = step_losses(c, result.steps)
                out.append(result)
        return out


def spec(seeds: str = "[0, 1]", *more: str) -> Spec:
    return load_spec("article", [*GRID, f"search.seeds={seeds}", *more])


def make_study(url: str, name: str = "article", seeds: str = "[0, 1]") -> Spec:
    """A finished grid study: 3 batch sizes x 3 learning rates x `seeds`, with divergences."""
    s = spec(seeds)
    ctx = runner.open_study(s, url, name, create=True)
    runner.work(ctx, DivergingTrainer, lambda: make_dataset(s.data))
    return s
