"""Pure functions from finished trials to tables. No I/O, no Optuna objects.

The runner, the report and the query commands all turn Optuna's trials into
`TrialRecord`s first (see `records.py`), so everything here is tested on hand-made
inputs.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field


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


@dataclass(frozen=True)
class Grid:
    batch_sizes: tuple[int, ...]
    learning_rates: tuple[float, ...]  # descending, as the article lists them
    cells: dict[tuple[int, float], GridCell]

    def cell(self, batch_size: int, learning_rate: float) -> GridCell | None:
        return self.cells.get((batch_size, learning_rate))


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


def cell_text(cell: GridCell | None) -> str:
    """A cell as a table shows it: the mean, or why there is none."""
    if cell is None:
        return "-"
    if cell.mean is not None:
        text = format_value(cell.mean)
        if cell.diverged:
            text += f" ({cell.diverged} div)"
        return text
    if cell.diverged:
        return "diverged"
    if cell.pruned:
        return "pruned"
    return "-"


def grid_rows(g: Grid) -> tuple[list[str], list[list[str]]]:
    """Header and rows: one row per batch size, one column per learning rate."""
    header = ["batch_size"] + [f"lr={lr:g}" for lr in g.learning_rates]
    rows = [
        [str(b)] + [cell_text(g.cell(b, lr)) for lr in g.learning_rates] for b in g.batch_sizes
    ]
    return header, rows


def render_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain fixed-width text table (first column left-aligned, the rest right)."""
    widths = [len(h) for h in header]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]

    def line(cells: Sequence[str]) -> str:
        parts = [cells[0].ljust(widths[0])]
        parts += [c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True)]
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), rule, *(line(r) for r in rows)])


def best(records: Iterable[TrialRecord]) -> GridCell | None:
    """The cell with the lowest mean objective."""
    g = grid(records)
    scored = [c for c in g.cells.values() if c.mean is not None]
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
    """The mean of repeated runs and its 95% t-interval (None with a single run)."""

    mean: float
    low: float | None
    high: float | None
    n: int


def mean_interval(values: Sequence[float]) -> Interval | None:
    """Mean and 95% confidence interval of the mean (Student's t); None with no values."""
    if not values:
        return None
    mean = statistics.fmean(values)
    if len(values) < 2:
        return Interval(mean, None, None, len(values))
    half = t975(len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
    return Interval(mean, mean - half, mean + half, len(values))


def best_per_batch_size(g: Grid) -> list[GridCell]:
    """For each batch size, the learning rate with the lowest mean; sizes with none are left out."""
    out = []
    for b in g.batch_sizes:
        scored = [c for lr in g.learning_rates if (c := g.cell(b, lr)) is not None
                  and c.mean is not None]
        if scored:
            out.append(min(scored, key=lambda c: c.mean or 0.0))
    return out


def count_by(records: Iterable[TrialRecord], attr: str) -> dict[str, int]:
    """How many records have each value of `attr` (`state` or `status`), most common first."""
    counts: dict[str, int] = defaultdict(int)
    for r in records:
        counts[str(getattr(r, attr))] += 1
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
