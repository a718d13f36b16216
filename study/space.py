"""The spec's search section as Optuna distributions, grid cells, samplers and pruners.

Batch size and learning rate are log-scaled distributions so that Optuna's contour
and slice plots draw log axes. A grid study is a `GridSampler` over those same
distributions with the seed as a third axis (repeats of every cell).
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from study.spec import Range, Spec

if TYPE_CHECKING:
    import optuna
    from optuna.distributions import BaseDistribution

BATCH_SIZE = "batch_size"
LEARNING_RATE = "learning_rate"
SEED = "seed"


@dataclass(frozen=True, order=True)
class Cell:
    """One grid point: what must end with exactly one finished trial."""

    batch_size: int
    learning_rate: float
    seed: int

    def params(self) -> dict[str, int | float]:
        return {BATCH_SIZE: self.batch_size, LEARNING_RATE: self.learning_rate, SEED: self.seed}


def _bounds(axis: tuple[int, ...] | tuple[float, ...] | Range) -> tuple[float, float]:
    if isinstance(axis, Range):
        return axis.low, axis.high
    return min(axis), max(axis)


def distributions(spec: Spec) -> dict[str, BaseDistribution]:
    from optuna.distributions import FloatDistribution, IntDistribution

    bs_low, bs_high = _bounds(spec.search.batch_size)
    lr_low, lr_high = _bounds(spec.search.learning_rate)
    dists: dict[str, BaseDistribution] = {
        BATCH_SIZE: IntDistribution(int(bs_low), int(bs_high), log=True),
        LEARNING_RATE: FloatDistribution(lr_low, lr_high, log=True),
    }
    if spec.is_grid:
        # Seed 0 rules out a log scale; the seed is an axis, not a quantity.
        dists[SEED] = IntDistribution(min(spec.search.seeds), max(spec.search.seeds))
    return dists


def grid_cells(spec: Spec) -> list[Cell]:
    """Every cell of a grid spec, ordered so that cells of one batch size are adjacent.

    Trainers that stack trials of the same shape get full batches that way.
    """
    s = spec.search
    assert not isinstance(s.batch_size, Range) and not isinstance(s.learning_rate, Range)
    return sorted(
        Cell(int(b), float(lr), int(seed))
        for b, lr, seed in itertools.product(s.batch_size, s.learning_rate, s.seeds)
    )


def cell_of(params: dict[str, object]) -> Cell | None:
    """The cell a trial's params denote, or None when they are incomplete."""
    try:
        return Cell(
            int(params[BATCH_SIZE]),  # type: ignore[call-overload]
            float(params[LEARNING_RATE]),  # type: ignore[arg-type]
            int(params[SEED]),  # type: ignore[call-overload]
        )
    except KeyError:
        return None


def seed_for_trial(spec: Spec, number: int) -> int:
    """Samplers other than grid cycle through the spec's seeds by trial number."""
    return spec.search.seeds[number % len(spec.search.seeds)]


def make_sampler(spec: Spec) -> optuna.samplers.BaseSampler:
    import optuna

    s = spec.search
    if s.sampler == "grid":
        grid: dict[str, list[int] | list[float]] = {
            BATCH_SIZE: [int(b) for b in s.batch_size],  # type: ignore[union-attr]
            LEARNING_RATE: [float(lr) for lr in s.learning_rate],  # type: ignore[union-attr]
            SEED: list(s.seeds),
        }
        return _cell_grid_sampler()(grid, seed=s.sampler_seed)
    if s.sampler == "tpe":
        # constant_liar: trials still running (a claim's others, other workers') count as
        # bad results while TPE samples, so concurrent trials are not put on one point.
        return optuna.samplers.TPESampler(seed=s.sampler_seed, constant_liar=True)
    if s.sampler == "random":
        return optuna.samplers.RandomSampler(seed=s.sampler_seed)
    if s.sampler == "qmc":
        return optuna.samplers.QMCSampler(seed=s.sampler_seed, warn_independent_sampling=False)
    raise ValueError(f"search.sampler: unknown sampler {s.sampler!r}")  # validate() stops this


@functools.cache
def _cell_grid_sampler() -> type[optuna.samplers.GridSampler]:
    import optuna

    class CellGridSampler(optuna.samplers.GridSampler):
        """Optuna's GridSampler over the spec's values, with cells assigned by the runner.

        The runner enqueues each cell's params itself (see runner.py), so trials carry
        no `grid_id`. GridSampler.after_trial reads that id to stop an `optimize` loop
        when one cell is left, and scans every trial on every tell to find out; the
        runner already knows when a grid is done, so that step is skipped.
        """

        def after_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial,
                        state: optuna.trial.TrialState, values: Sequence[float] | None
                        ) -> None:
            return None

    return CellGridSampler


def make_pruner(spec: Spec) -> optuna.pruners.BasePruner:
    import optuna

    if spec.search.pruner == "median":
        return optuna.pruners.MedianPruner(n_warmup_steps=max(1, spec.train.epochs // 5))
    if spec.search.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=spec.train.epochs)
    return optuna.pruners.NopPruner()
