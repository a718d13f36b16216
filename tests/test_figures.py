"""Our figures as data (the info functions), then what the renderers draw from it."""

from __future__ import annotations

import math

import pytest

from study import analysis, figures
from study.analysis import TrialRecord


def rec(n: int, bs: int, lr: float, seed: int, value: float | None, status: str = "complete",
        val: float | None = None) -> TrialRecord:
    state = {"complete": "COMPLETE", "pruned": "PRUNED"}.get(status, "FAIL")
    return TrialRecord(n, state, bs, lr, seed, value, status, train_loss=value,
                       val_loss=val if val is not None else (None if value is None else value * 2))


# lr=0.1: diverges at bs 16 (both seeds); at bs 64 one seed of two.
# lr=0.01: two seeds everywhere; one of them with a spread that reaches below zero.
RECORDS = [
    rec(0, 16, 0.1, 0, None, "diverged"), rec(1, 16, 0.1, 1, None, "diverged"),
    rec(2, 64, 0.1, 0, 0.5), rec(3, 64, 0.1, 1, None, "diverged"),
    rec(4, 16, 0.01, 0, 0.2), rec(5, 16, 0.01, 1, 0.4),
    rec(6, 64, 0.01, 0, 0.01), rec(7, 64, 0.01, 1, 1.0),
    rec(8, 16, 0.001, 0, None, "interrupted"),  # not a result: no point, not "diverged"
]


def test_article_info_lines_means_intervals_and_divergence() -> None:
    info = figures.article_info(RECORDS, "final training loss")
    assert info.batch_sizes == (16, 64)
    assert [line.learning_rate for line in info.lines] == [0.1, 0.01]  # the article's order
    assert info.repeats
    by_lr = {line.learning_rate: {p.batch_size: p for p in line.points} for line in info.lines}
    # Every run at lr=0.1, bs=16 diverged: no point, listed as diverged.
    assert by_lr[0.1][16].interval is None and by_lr[0.1][16].diverged == 2
    assert info.diverged == ((0.1, 16, 2),)
    # One of two diverged: the mean of the other, and the cell is named as partly diverged.
    p = by_lr[0.1][64]
    assert p.interval is not None and p.interval.mean == 0.5 and p.interval.low is None
    assert info.partly == ((0.1, 64, 1, 2),)
    # Two runs: the mean and its percentile bootstrap interval over seeds; resampling two
    # runs gives means 0.2, 0.3 and 0.4, so the 95% interval spans the two runs.
    q = by_lr[0.01][16]
    assert q.runs == (0.2, 0.4) and q.interval is not None and q.interval.method == "bootstrap"
    assert q.interval.mean == pytest.approx(0.3)
    assert (q.interval.low, q.interval.high) == pytest.approx((0.2, 0.4))
    assert q.interval == analysis.bootstrap_interval([0.2, 0.4])
    # The floor sits below every positive value drawn, for bands that would reach <= 0.
    assert info.floor is not None and 0 < info.floor < 0.01


def test_article_info_without_repeats_has_no_bands() -> None:
    info = figures.article_info([rec(0, 16, 0.1, 0, 0.3), rec(1, 32, 0.1, 0, 0.2)], "loss")
    assert not info.repeats and info.diverged == () and info.partly == ()


def test_article_figure_draws_log_axes_gaps_and_bands() -> None:
    fig = figures.article_figure(figures.article_info(RECORDS, "final training loss"))
    assert fig.layout.xaxis.type == "log" and fig.layout.yaxis.type == "log"
    means = {t.name: t for t in fig.data if t.mode == "lines+markers"}
    assert set(means) == {"lr=0.1", "lr=0.01"}
    assert list(means["lr=0.1"].y) == [None, 0.5]  # the diverged cell is a gap, not a number
    bands = [t for t in fig.data if t.fill == "toself"]
    assert len(bands) == 1 and bands[0].legendgroup == "lr=0.01"
    # The band never goes to zero or below on the log axis.
    assert min(bands[0].y) > 0
    runs = [t for t in fig.data if t.mode == "markers"]
    assert sorted(v for t in runs for v in t.y) == [0.01, 0.2, 0.4, 0.5, 1.0]
    assert "lr=0.1 at batch size 16" in fig.layout.title.text


def test_heatmap_info_marks_diverged_cells_as_words_not_numbers() -> None:
    records = [*RECORDS, rec(9, 64, 0.001, 0, 0.7)]
    info = figures.heatmap_info(records, "objective", "final training loss")
    assert info.batch_sizes == (16, 64) and info.learning_rates == (0.001, 0.01, 0.1)
    cols = {lr: c for c, lr in enumerate(info.learning_rates)}
    assert info.means[0][cols[0.1]] is None and info.text[0][cols[0.1]] == "diverged"
    assert info.diverged == ((0, cols[0.1]),)
    assert info.text[1][cols[0.1]] == "0.5 (1/2 div)" and info.means[1][cols[0.1]] == 0.5
    assert info.means[0][cols[0.01]] == pytest.approx(0.3)
    # The interrupted trial is no result; its cell is empty and says so, not "diverged".
    assert info.means[0][cols[0.001]] is None
    assert (0, cols[0.001], "not run") in info.empty
    val = figures.heatmap_info(records, "val_loss", "validation loss")
    assert val.means[0][cols[0.01]] == pytest.approx(0.6) and val.diverged == info.diverged


def test_heatmap_figure_hatches_and_labels_diverged_cells() -> None:
    info = figures.heatmap_info(RECORDS, "objective", "final training loss")
    fig = figures.heatmap_figure(info)
    heat = fig.data[0]
    r, c = info.diverged[0]
    assert heat.z[r][c] is None  # no colour for a diverged cell
    hatch = [t for t in fig.data if t.type == "scatter"]
    assert len(hatch) == 1 and hatch[0].fillpattern.shape == "x"
    assert hatch[0].x == (c - 0.5, c + 0.5, c + 0.5, c - 0.5, c - 0.5)
    labels = {(a.x, a.y): a.text for a in fig.layout.annotations}
    assert "diverged" in labels[(c, r)]
    # Colour is log10 of the mean; the colour bar is labelled in real values.
    assert heat.z[0][info.learning_rates.index(0.01)] == pytest.approx(math.log10(0.3))
    assert all(float(t) > 0 for t in heat.colorbar.ticktext)


def test_log_ticks() -> None:
    assert figures._log_ticks(0.05, 3.0) == [0.05, 0.1, 0.2, 0.5, 1.0, 2.0]
    narrow = figures._log_ticks(0.8, 0.99)
    assert len(narrow) == 5 and narrow[0] == 0.8 and narrow[-1] == 0.99
