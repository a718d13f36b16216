"""Pure functions from finished trials to tables. No I/O, no Optuna objects.

The runner, the report and the query commands all turn Optuna's trials into
`TrialRecord`s first (see `records.py`), so everything here is tested on hand-made
inputs.

Repeats: every mean over seeds comes with a 95% percentile bootstrap interval over
those seeds (`bootstrap_interval`; Efron & Tibshirani 1993, ch. 13), seeded so the same
study always gives the same interval. Student's t interval (`mean_interval`) is kept for
comparison; every table and chart says which one it shows.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True)
class TrialRecord:
    """One trial as the analysis sees it."""

    number: int
    state: str  # COMPLETE, FAIL, PRUNED, RUNNING, WAITING
    batch_size: int | None
    learning_rate: float | None
    seed: int | None
    value: float | None  # the objective, for COMPLETE trials
    status: str  # complete | diverged | pruned | interrupted | abandoned | error | running
    train_loss: float | None = None
    val_loss: float | None = None
    full_train_loss: float | None = None
    seconds: float | None = None
    extras: dict[str, float] = field(default_factory=dict)
    train_accuracy: float | None = None  # classification only
    val_accuracy: float | None = None
    # The training loss every `step_every` optimizer steps (records.STEP_CURVE): value i
    # is the mean batch loss of steps i*k+1 .. (i+1)*k; NaN where it was not finite.
    step_every: int | None = None
    step_losses: tuple[float, ...] = ()

    @property
    def finished(self) -> bool:
        """A final outcome for its cell: completed, pruned, or diverged."""
        return self.status in ("complete", "pruned", "diverged")


@dataclass(frozen=True)
class GridCell:
    batch_size: int
    learning_rate: float
    values: tuple[float, ...]  # one per completed seed
    diverged: int  # seeds that diverged
    pruned: int

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.values) if self.values else None

    @property
    def runs(self) -> int:
        """Runs with an outcome: completed or diverged (pruned runs are not outcomes)."""
        return len(self.values) + self.diverged

    @property
    def score(self) -> float | None:
        """What choosing this cell costs: the mean, or inf when any run diverged.

        A learning rate that diverges for some seeds has an unbounded expected loss, so
        it is never the best cell nor a batch size's optimal learning rate, however good
        its other runs were. None: the cell has no outcome at all.
        """
        if self.diverged:
            return math.inf
        return self.mean


@dataclass(frozen=True)
class Grid:
    batch_sizes: tuple[int, ...]
    learning_rates: tuple[float, ...]  # descending, as the article lists them
    cells: dict[tuple[int, float], GridCell]

    def cell(self, batch_size: int, learning_rate: float) -> GridCell | None:
        return self.cells.get((batch_size, learning_rate))


def cell_mean(records: Iterable[TrialRecord], batch_size: int, learning_rate: float,
              metric: str) -> float | None:
    """The mean of `metric` (see `metric_of`) over one cell's completed runs; None: none."""
    cell = grid(records, metric).cell(batch_size, learning_rate)
    return cell.mean if cell is not None else None


def metric_of(record: TrialRecord, metric: str) -> float | None:
    """`objective` (the study's value), `train_loss`, `val_loss`, `full_train_loss`, or `gap`."""
    if metric == "objective":
        return record.value
    if metric == "gap":
        if record.val_loss is None or record.train_loss is None:
            return None
        return record.val_loss - record.train_loss
    value = getattr(record, metric, None)
    if value is None:
        value = record.extras.get(metric)
    return None if value is None or not math.isfinite(value) else float(value)


def grid(records: Iterable[TrialRecord], metric: str = "objective") -> Grid:
    """The batch size x learning rate matrix of `metric` over completed trials, by seed."""
    values: dict[tuple[int, float], list[float]] = defaultdict(list)
    diverged: dict[tuple[int, float], int] = defaultdict(int)
    pruned: dict[tuple[int, float], int] = defaultdict(int)
    keys: set[tuple[int, float]] = set()
    for r in records:
        if r.batch_size is None or r.learning_rate is None:
            continue
        key = (r.batch_size, r.learning_rate)
        if r.status == "complete":
            v = metric_of(r, metric)
            keys.add(key)
            if v is not None:
                values[key].append(v)
        elif r.status == "diverged":
            keys.add(key)
            diverged[key] += 1
        elif r.status == "pruned":
            keys.add(key)
            pruned[key] += 1
    cells = {
        k: GridCell(k[0], k[1], tuple(values[k]), diverged[k], pruned[k]) for k in sorted(keys)
    }
    return Grid(
        batch_sizes=tuple(sorted({k[0] for k in keys})),
        learning_rates=tuple(sorted({k[1] for k in keys}, reverse=True)),
        cells=cells,
    )


def format_value(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:.4g}"


def cell_text(cell: GridCell | None, intervals: bool = False) -> str:
    """A cell as a table shows it: the mean, or why there is none.

    With `intervals` (a study with repeats), the mean carries its 95% bootstrap interval
    over seeds, "0.0771 [0.0752, 0.079]", or says "(1 run)" where only one run finished.
    """
    if cell is None:
        return "-"
    if cell.mean is not None:
        text = format_value(cell.mean)
        if intervals:
            i = bootstrap_interval(cell.values)
            if i is not None and not i.single:
                text = interval_text(i)
            elif not cell.diverged:  # "(n div)" below already says how many runs are left
                text += " (1 run)"
        if cell.diverged:
            text += f" ({cell.diverged} div)"
        return text
    if cell.diverged:
        return "diverged"
    if cell.pruned:
        return "pruned"
    return "-"


def repeats(g: Grid) -> bool:
    """Some cell has more than one completed run: intervals over seeds can be shown."""
    return any(len(c.values) > 1 for c in g.cells.values())


def grid_rows(g: Grid, intervals: bool = False) -> tuple[list[str], list[list[str]]]:
    """Header and rows: one row per batch size, one column per learning rate.

    `intervals`: each mean with its 95% bootstrap interval over seeds (see `cell_text`).
    """
    header = ["batch_size"] + [f"lr={lr:g}" for lr in g.learning_rates]
    rows = [
        [str(b)] + [cell_text(g.cell(b, lr), intervals) for lr in g.learning_rates]
        for b in g.batch_sizes
    ]
    return header, rows


def render_table(header: Sequence[str], rows: Sequence[Sequence[str]],
                 left: Iterable[int] = ()) -> str:
    """A plain fixed-width text table (first column and those in `left` left-aligned, the
    rest right)."""
    lefts = {0, *left}
    widths = [len(h) for h in header]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]

    def line(cells: Sequence[str]) -> str:
        parts = [c.ljust(w) if k in lefts else c.rjust(w)
                 for k, (c, w) in enumerate(zip(cells, widths, strict=True))]
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), rule, *(line(r) for r in rows)])


def best(records: Iterable[TrialRecord]) -> GridCell | None:
    """The cell with the lowest mean objective; a cell where any run diverged never is."""
    g = grid(records)
    scored = [c for c in g.cells.values() if c.score is not None and math.isfinite(c.score)]
    return min(scored, key=lambda c: c.mean or 0.0) if scored else None


# --------------------------------------------------------------------------- repeats and summaries

# Student's t quantile t(0.975, df) for df = 1..30; beyond 30 a Cornish-Fisher expansion
# around the normal quantile is accurate to better than 1e-3 (scipy is not a runtime
# dependency, and a 95% interval is the only one we draw).
_T975 = (
    12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281,
    2.2010, 2.1788, 2.1604, 2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860,
    2.0796, 2.0739, 2.0687, 2.0639, 2.0595, 2.0555, 2.0518, 2.0484, 2.0452, 2.0423,
)
_Z975 = 1.959963984540054


def t975(df: int) -> float:
    """The 97.5% quantile of Student's t with `df` degrees of freedom (two-sided 95%)."""
    if df < 1:
        raise ValueError(f"t975: degrees of freedom must be at least 1, got {df}")
    if df <= len(_T975):
        return _T975[df - 1]
    z = _Z975
    return (z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)
            + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * df**3))


@dataclass(frozen=True)
class Interval:
    """The mean of repeated runs and its 95% interval (None with a single run).

    `method` says which interval: "bootstrap" (percentile bootstrap over seeds) or "t"
    (Student's t).
    """

    mean: float
    low: float | None
    high: float | None
    n: int
    method: str = "t"

    @property
    def single(self) -> bool:
        """One run: a mean with no interval, shown as "single seed"."""
        return self.low is None


def mean_interval(values: Sequence[float]) -> Interval | None:
    """Mean and 95% confidence interval of the mean (Student's t); None with no values."""
    if not values:
        return None
    mean = statistics.fmean(values)
    if len(values) < 2:
        return Interval(mean, None, None, len(values))
    half = t975(len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
    return Interval(mean, mean - half, mean + half, len(values))


# --------------------------------------------------------------------------- bootstrap

# Resamples per bootstrap and the generator's seed: fixed, so a report is reproducible
# (the same study gives the same intervals, to the last digit).
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0
BOOTSTRAP_WORDS = "95% percentile bootstrap over seeds"

FloatArray = npt.NDArray[np.float64]


def resample_indices(n: int, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED
                     ) -> npt.NDArray[np.intp]:
    """`resamples` x `n` indices drawn with replacement from range(n), deterministically."""
    if n < 1:
        raise ValueError(f"resample_indices: need at least one value to resample, got n={n}")
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def bootstrap_means(values: Sequence[float], resamples: int = BOOTSTRAP_RESAMPLES,
                    seed: int = BOOTSTRAP_SEED) -> FloatArray:
    """The mean of each of `resamples` resamples of `values` (with replacement)."""
    v = np.asarray(values, dtype=np.float64)
    return np.asarray(v[resample_indices(len(v), resamples, seed)].mean(axis=1), dtype=np.float64)


def percentile_interval(samples: FloatArray, level: float = 0.95) -> tuple[float, float] | None:
    """The central `level` percentile interval of bootstrap replicates (NaN replicates,
    ones that could not be computed, are left out; None when none is left).

    Order statistics, not interpolation (numpy's `inverted_cdf`), so a replicate that is
    infinite stays an honest open end instead of turning into NaN.
    """
    s = np.asarray(samples, dtype=np.float64)
    s = s[~np.isnan(s)]
    if s.size == 0:
        return None
    tail = (1.0 - level) / 2
    low, high = np.quantile(s, [tail, 1.0 - tail], method="inverted_cdf")
    return float(low), float(high)


def bootstrap_interval(values: Sequence[float], resamples: int = BOOTSTRAP_RESAMPLES,
                       seed: int = BOOTSTRAP_SEED) -> Interval | None:
    """Mean over seeds and its 95% percentile bootstrap interval; None with no values.

    With one value there is nothing to resample: the interval is None ("single seed").
    Percentile intervals are somewhat narrow for very few seeds (with 2 they span the
    two runs); they make no normality assumption, which losses across seeds rarely meet.
    """
    if not values:
        return None
    mean = statistics.fmean(values)
    if len(values) < 2:
        return Interval(mean, None, None, 1, "bootstrap")
    bounds = percentile_interval(bootstrap_means(values, resamples, seed))
    assert bounds is not None
    return Interval(mean, bounds[0], bounds[1], len(values), "bootstrap")


def interval_text(i: Interval | None, digits: int = 4) -> str:
    """"0.0771 [0.0752, 0.0790]", "0.0771 (single seed)", or "-"."""
    if i is None:
        return "-"
    if i.low is None or i.high is None:
        return f"{i.mean:.{digits}g} (single seed)"
    return f"{i.mean:.{digits}g} [{i.low:.{digits}g}, {i.high:.{digits}g}]"


def best_per_batch_size(g: Grid) -> list[GridCell]:
    """For each batch size, the learning rate with the lowest mean over cells where no run
    diverged (see `GridCell.score`); sizes with no such cell are left out."""
    out = []
    for b in g.batch_sizes:
        scored = [c for lr in g.learning_rates if (c := g.cell(b, lr)) is not None
                  and c.score is not None and math.isfinite(c.score)]
        if scored:
            out.append(min(scored, key=lambda c: c.mean or 0.0))
    return out


def count_by(records: Iterable[TrialRecord], attr: str) -> dict[str, int]:
    """How many records have each value of `attr` (`state` or `status`), most common first."""
    counts: dict[str, int] = defaultdict(int)
    for r in records:
        counts[str(getattr(r, attr))] += 1
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
