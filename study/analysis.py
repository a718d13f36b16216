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
