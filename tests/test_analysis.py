from __future__ import annotations

import statistics

import pytest

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
    # Numbers right-aligned under their header, the first column left-aligned.
    assert analysis.render_table(header, rows).splitlines() == [
        "batch_size    lr=0.1  lr=0.01",
        "----------  --------  -------",
        "16                 2      0.5",
        "32          diverged     0.25",
    ]


def test_best() -> None:
    best = analysis.best(RECORDS)
    assert best is not None and (best.batch_size, best.learning_rate) == (32, 0.01)
    assert analysis.best([]) is None


def test_t975_matches_scipy() -> None:
    from scipy.stats import t

    for df in [*range(1, 61), 100, 1000]:
        assert abs(analysis.t975(df) - t.ppf(0.975, df)) < 1e-3, df
    with pytest.raises(ValueError, match="degrees of freedom must be at least 1, got 0"):
        analysis.t975(0)


def test_mean_interval_is_students_t() -> None:
    from scipy import stats

    values = [0.12, 0.15, 0.11, 0.19]
    got = analysis.mean_interval(values)
    low, high = stats.t.interval(0.95, len(values) - 1, loc=statistics.fmean(values),
                                 scale=stats.sem(values))
    assert got is not None and got.n == 4
    assert (got.low, got.high) == pytest.approx((low, high), rel=1e-4)
    one = analysis.mean_interval([0.3])
    assert one is not None and one.mean == 0.3 and one.low is None and one.high is None
    assert analysis.mean_interval([]) is None


def test_best_per_batch_size_and_counts() -> None:
    best = analysis.best_per_batch_size(analysis.grid(RECORDS))
    assert [(c.batch_size, c.learning_rate, c.mean) for c in best] == [(16, 0.01, 0.5),
                                                                        (32, 0.01, 0.25)]
    assert analysis.count_by(RECORDS, "status") == {"complete": 4, "diverged": 1,
                                                    "interrupted": 1}
    assert analysis.count_by(RECORDS, "state") == {"COMPLETE": 4, "FAIL": 2}
