"""Our figures as data (the info functions), then what the renderers draw from it."""

from __future__ import annotations

import math

import pytest

from study import analysis, figures, scaling
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
    # Two runs: the mean and, below it, its bootstrap interval (text and hover say so).
    assert info.text[0][cols[0.01]] == "0.3<br>[0.2, 0.4]"
    assert "95% percentile bootstrap over seeds: 0.2 .. 0.4" in info.hover[0][cols[0.01]]
    assert "95% percentile bootstrap over seeds" in info.title
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


def test_a_signed_heat_map_diverges_about_zero() -> None:
    rs = [rec(0, 16, 0.1, 0, 0.5, val=0.4), rec(1, 16, 0.01, 0, 0.5, val=0.7)]
    info = figures.heatmap_info(rs, "gap", figures.METRIC_LABELS["gap"])
    assert info.means == ((pytest.approx(0.2), pytest.approx(-0.1)),)
    assert "single seed" in info.title and info.text[0][1] == "-0.1"
    heat = figures.heatmap_figure(info).data[0]
    assert heat.zmid == 0 and heat.z[0][0] == pytest.approx(0.2)


# --------------------------------------------------------------------------- scaling and the rest


def sized(n: int, bs: int, lr: float, seed: int, value: float | None, **extras: float
          ) -> TrialRecord:
    status = "complete" if value is not None else "diverged"
    return TrialRecord(n, "COMPLETE" if value is not None else "FAIL", bs, lr, seed, value, status,
                       train_loss=value, val_loss=None if value is None else value + 0.01 * seed,
                       extras=dict(extras) if value is not None else {})


def study_records(extras: bool = True) -> list[TrialRecord]:
    """lr* = 1e-3 * B / 16 exactly (a parabola in ln lr), 3 seeds; at B=256 the largest
    learning rate diverges; noise attributes and sharpness on every completed run."""
    out = []
    lrs = [10.0 ** (e / 2) for e in range(-8, 1)]
    for b in (16, 32, 64, 128, 256):
        for lr in lrs:
            for s in range(3):
                v = None if (b == 256 and lr == 1.0) else \
                    0.1 + (math.log(lr) - math.log(1e-3 * b / 16)) ** 2 + 0.001 * s
                more = {"noise_trace_sigma": 50.0 * (1 + s), "noise_grad_sq": 0.1 * (1 + s),
                        "noise_scale": 500.0, "sharpness": 1.0 / lr * (1 + 0.1 * s)} \
                    if extras else {}
                out.append(sized(len(out), b, lr, s, v, **more))
    return out


def test_scaling_info_points_fit_rules_and_noise() -> None:
    rs = study_records()
    s = scaling.scaling(rs)
    info = figures.scaling_info(s, "sgd")
    assert [p.batch_size for p in info.points] == [16, 32, 64, 128, 256]
    assert [p.lr for p in info.points] == pytest.approx([1e-3 * b / 16 for b in (16, 32, 64, 128, 256)])
    assert all(p.low is not None and p.high is not None for p in info.points)
    assert info.fit is not None and info.fit.name.startswith("fit: lr* ~ B^1.00 [")
    # The four rules go through the fit's centre with their own slopes.
    assert [r.name.split(" (")[0] for r in info.references] == ["inverse", "constant",
                                                               "square-root", "linear"]
    linear = info.references[3]
    assert linear.name == "linear (alpha=1): consistent"
    slope = math.log(linear.ys[-1] / linear.ys[0]) / math.log(linear.xs[-1] / linear.xs[0])
    assert slope == pytest.approx(1.0)
    assert info.references[0].name.endswith("rejected")
    assert info.mccandlish is not None and "not identified" in info.mccandlish.name
    # The measured noise scale: pooled tr(Sigma) / |G|^2 = (50 * 6) / (0.1 * 6) = 500.
    (name, x, low, high, _), = info.verticals
    assert (x, low, high) == pytest.approx((500.0, 500.0, 500.0))
    assert name.startswith("measured B_simple 500")
    assert "(SGD, 3 seeds; " in info.title
    fig = figures.scaling_figure(info)
    assert fig.layout.xaxis.type == "log" and fig.layout.yaxis.type == "log"
    (points,) = [t for t in fig.data if t.name == "lr* (refined)"]
    assert list(points.x) == [16, 32, 64, 128, 256] and points.error_y.array is not None
    assert {t.name for t in fig.data} >= {r.name for r in info.references}


def test_scaling_info_single_seed_and_edges() -> None:
    rs = [r for r in study_records(extras=False) if r.seed == 0 and r.batch_size != 256]
    rs += [sized(999, 512, lr, 0, 0.1 + lr) for lr in (1e-3, 1e-2)]  # best at the low edge
    info = figures.scaling_info(scaling.scaling(rs))
    assert info.verticals == () and info.notes[0] == "single seed: lr* without interval"
    assert "hollow: best on the grid's edge (a bound; widen the grid)" in info.notes
    edge = [p for p in info.points if p.edge]
    assert [(p.batch_size, p.edge) for p in edge] == [(512, "low")]
    fig = figures.scaling_figure(info)
    (points,) = [t for t in fig.data if t.name == "lr* (refined)"]
    assert list(points.marker.symbol) == ["circle"] * 4 + ["circle-open"]


def test_optimum_info_draws_the_refining_fit() -> None:
    rs = study_records()
    info = figures.optimum_info(rs, scaling.scaling(rs), "final training loss")
    c16 = info.curves[0]
    assert c16.batch_size == 16 and c16.lr == pytest.approx(1e-3)
    # The fit spans the best grid lr and its neighbours (the next ones sit above 3x the best).
    assert c16.fit_xs[0] == pytest.approx(10 ** -3.5) and c16.fit_xs[-1] == pytest.approx(10 ** -2.5)
    assert min(c16.fit_ys) == pytest.approx(0.101, abs=1e-3)  # the minimum of the mean's fit
    assert c16.star_y is not None and c16.star_y == pytest.approx(0.101, rel=0.05)
    c256 = info.curves[-1]
    assert c256.diverged == (1.0,) and c256.means[-1] is None
    assert any("diverged are left out" in n for n in info.notes)
    fig = figures.optimum_figure(info)
    assert fig.layout.xaxis.type == "log" and len(fig.data) == 3 * 5


def test_generalization_sharpness_and_noise_panels() -> None:
    rs = study_records()
    gen = figures.generalization_info(rs, "final training loss")
    val, gap = gen.panels
    assert val.y_log and not gap.y_log  # the gap is 0 for seed 0: not a log axis
    (lr_line,) = [sr for sr in gap.series if sr.name == "lr=0.001"]
    p16 = lr_line.points[0]
    assert p16.x == 16 and p16.runs == pytest.approx((0.0, 0.01, 0.02))
    assert p16.interval is not None and p16.interval.mean == pytest.approx(0.01)
    sharp = figures.sharpness_info(rs)
    assert sharp is not None
    by_b, by_lr = sharp.panels
    assert by_b.x_label == "batch size" and by_lr.x_label == "learning rate"
    (ref,) = by_lr.references
    assert ref.ys == pytest.approx(tuple(2.0 / x for x in ref.xs))
    noise = figures.noise_info(scaling.scaling(rs))
    assert noise is not None
    (panel,) = noise.panels
    assert [r.name.split(" ")[0] for r in panel.references] == ["B_simple", "predicted"]
    assert panel.series[0].points[0].interval.mean == pytest.approx(500.0)  # type: ignore[union-attr]
    fig = figures.panels_figure(sharp)
    assert fig.layout.xaxis.type == "log" and fig.layout.xaxis2.type == "log"
    assert fig.layout.yaxis.type == "log"
    # Nothing recorded: no page, not an error.
    bare = study_records(extras=False)
    assert figures.sharpness_info(bare) is None
    assert figures.noise_info(scaling.scaling(bare)) is None


def test_critical_info_draws_steps_against_examples_with_the_fitted_front() -> None:
    import numpy as np

    from study import critical
    from tests.test_shapes import _study

    found = critical.critical_all(_study(200.0, 64.0, 3, np.random.default_rng(2)), (0.1,),
                                  resamples=50)
    info = figures.critical_info(found)
    assert info is not None
    ((name, pts, front),) = info.targets
    assert name == "target 0.1" and [b for b, *_ in pts] == [4, 8, 16, 32, 64, 128, 256, 512]
    for b, examples, steps, _, _ in pts:
        assert examples == pytest.approx(b * steps)
    # The front: S = S_min (1 + B_crit / B) at every B it is drawn for, as (E, S) pairs.
    c = found[0]
    assert c.s_min is not None and c.b_crit is not None
    for e, s in front:
        assert s == pytest.approx(c.s_min.value * (1 + c.b_crit.value / (e / s)))
    fig = figures.critical_figure(info)
    assert fig.layout.xaxis.type == "log" and len(fig.data) == 2
    assert figures.critical_info([]) is None


def test_the_heat_map_outlines_the_plateau_and_the_scaling_chart_draws_its_band() -> None:
    rs = study_records()
    s = scaling.scaling(rs)
    plateaus = {p.batch_size: p.plateau for p in s.optima.points if p.plateau is not None}
    info = figures.heatmap_info(rs, "objective", "final training loss", plateaus)
    assert info.plateaus, plateaus
    for r, c0, c1 in info.plateaus:
        lo, hi = plateaus[info.batch_sizes[r]]
        inside = [c for c, lr in enumerate(info.learning_rates) if lo <= lr <= hi]
        assert (c0, c1) == (inside[0], inside[-1])
    sc = figures.scaling_info(s, "sgd")
    assert [b for b, _, _ in sc.plateaus] == sorted(plateaus)
    assert sc.shape is not None and sc.shape.name.startswith("chosen shape: ")
