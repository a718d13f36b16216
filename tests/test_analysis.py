from __future__ import annotations

from study import analysis
from study.analysis import TrialRecord


def rec(n: int, bs: int, lr: float, seed: int, value: float | None, status: str = "complete"
        ) -> TrialRecord:
    state = {"complete": "COMPLETE", "pruned": "PRUNED"}.get(status, "FAIL")
    return TrialRecord(n, state, bs, lr, seed, value, status, train_loss=value,
                       val_loss=None if value is None else value + 0.5)


RECORDS = [
    rec(0, 16, 0.1, 0, 1.0), rec(1, 16, 0.1, 1, 3.0),
    rec(2, 16, 0.01, 0, 0.5),
    rec(3, 32, 0.1, 0, None, "diverged"),
    rec(4, 32, 0.01, 0, 0.25), rec(5, 32, 0.01, 1, None, "interrupted"),
]


def test_grid_means_over_seeds_and_marks_divergence() -> None:
    g = analysis.grid(RECORDS)
    assert g.batch_sizes == (16, 32) and g.learning_rates == (0.1, 0.01)
    assert g.cell(16, 0.1).mean == 2.0  # type: ignore[union-attr]
    assert g.cell(32, 0.1).mean is None and g.cell(32, 0.1).diverged == 1  # type: ignore[union-attr]
    # An interrupted trial is not a result.
    assert g.cell(32, 0.01).values == (0.25,)  # type: ignore[union-attr]


def test_metric_choice() -> None:
    g = analysis.grid(RECORDS, "val_loss")
    assert g.cell(16, 0.01).mean == 1.0  # type: ignore[union-attr]
    gap = analysis.grid(RECORDS, "gap")
    assert gap.cell(16, 0.1).mean == 0.5  # type: ignore[union-attr]


def test_rows_and_rendering() -> None:
    header, rows = analysis.grid_rows(analysis.grid(RECORDS))
    assert header == ["batch_size", "lr=0.1", "lr=0.01"]
    assert rows == [["16", "2", "0.5"], ["32", "diverged", "0.25"]]
    text = analysis.render_table(header, rows)
    assert text.splitlines()[0].startswith("batch_size")
    assert "diverged" in text.splitlines()[3]


def test_best() -> None:
    best = analysis.best(RECORDS)
    assert best is not None and (best.batch_size, best.learning_rate) == (32, 0.01)
    assert analysis.best([]) is None
