"""The scaling analysis: optimum per batch size, power law, verdicts, McCandlish, noise scale;
and two validations against known answers (a noisy quadratic, synthetic square-root data)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import numpy as np
import pytest

from study import analysis, scaling
from study.analysis import TrialRecord


def rec(n: int, bs: int, lr: float, seed: int, value: float | None, status: str = "complete",
        **extras: float) -> TrialRecord:
    state = "COMPLETE" if status == "complete" else "FAIL"
    return TrialRecord(n, state, bs, lr, seed, value, status, train_loss=value,
                       val_loss=None if value is None else value + 0.1, extras=dict(extras))


def records(batch_sizes: Iterable[int], lrs: Iterable[float], seeds: Iterable[int],
            loss: Callable[[int, float, int], float | None]) -> list[TrialRecord]:
    """One record per (batch size, lr, seed); `loss` None means the run diverged."""
    out = []
    for b in batch_sizes:
        for lr in lrs:
            for s in seeds:
                v = loss(b, lr, s)
                out.append(rec(len(out), b, lr, s, v, "complete" if v is not None else "diverged"))
    return out


# --------------------------------------------------------------------------- bootstrap


def test_bootstrap_interval_is_deterministic_and_brackets_the_mean() -> None:
    values = [0.12, 0.15, 0.11, 0.19, 0.13]
    a = analysis.bootstrap_interval(values)
    b = analysis.bootstrap_interval(list(values))
    assert a == b and a is not None and a.method == "bootstrap" and a.n == 5
    assert a.low is not None and a.high is not None
    assert min(values) <= a.low < a.mean < a.high <= max(values)
    # Close to the textbook percentile interval of many resamples.
    rng = np.random.default_rng(1)
    means = np.array(values)[rng.integers(0, 5, (200_000, 5))].mean(axis=1)
    assert (a.low, a.high) == pytest.approx(tuple(np.percentile(means, [2.5, 97.5])), abs=2e-3)
    one = analysis.bootstrap_interval([0.3])
    assert one is not None and one.single and one.mean == 0.3 and one.high is None
    assert analysis.bootstrap_interval([]) is None
    assert analysis.interval_text(a) == f"{a.mean:.4g} [{a.low:.4g}, {a.high:.4g}]"
    assert analysis.interval_text(one) == "0.3 (single seed)"
    # An infinite replicate stays an open end, never NaN.
    assert analysis.percentile_interval(np.array([1.0, 2.0, np.inf, np.nan] * 10)) == (1.0, np.inf)
    with pytest.raises(ValueError, match="need at least one value to resample, got n=0"):
        analysis.resample_indices(0)


def test_grid_rows_with_intervals_mark_single_runs() -> None:
    rs = [rec(0, 16, 0.1, 0, 1.0), rec(1, 16, 0.1, 1, 3.0), rec(2, 16, 0.01, 0, 0.5),
          rec(3, 16, 0.01, 1, None, "diverged")]
    g = analysis.grid(rs)
    assert analysis.repeats(g)
    _, rows = analysis.grid_rows(g, intervals=True)
    assert rows == [["16", "2 [1, 3]", "0.5 (1 div)"]]
    _, rows = analysis.grid_rows(analysis.grid([*rs[:3], rec(4, 32, 0.1, 0, 0.7)]), True)
    assert rows[1] == ["32", "0.7 (1 run)", "-"]
    assert analysis.grid_rows(g)[1] == [["16", "2", "0.5 (1 div)"]]
    # A learning rate where a run diverged is never the best, however good the others.
    best = analysis.best(rs)
    assert best is not None and best.learning_rate == 0.1
    assert [c.learning_rate for c in analysis.best_per_batch_size(g)] == [0.1]


# --------------------------------------------------------------------------- optimum per batch size


LRS = [10.0 ** e for e in (-4, -3, -2, -1, 0)]


def parabola_loss(centre: Callable[[int], float]) -> Callable[[int, float, int], float]:
    """Exactly quadratic in ln(lr) about ln(centre(B)): the refinement must find centre(B)."""
    return lambda b, lr, s: 0.1 + (math.log(lr) - math.log(centre(b))) ** 2


def test_refined_optimum_is_the_parabolas_vertex() -> None:
    o = scaling.optima(records([16, 64], LRS, [0], parabola_loss(lambda b: 3e-3 * b / 16)))
    p16, p64 = o.points
    assert (p16.grid_lr, p64.grid_lr) == (1e-3, 1e-2)
    assert p16.lr == pytest.approx(3e-3) and p64.lr == pytest.approx(1.2e-2)
    assert p16.refined and p16.edge is None and p16.single_seed and p16.low is None
    # The best and its neighbours (the next ones sit above 3x the best): a quadratic in
    # ln(lr), exact on this loss.
    assert p16.curve is not None and len(p16.curve) == 3 and p16.window == (1e-4, 1e-2)
    _, c1, c2 = p16.curve
    assert -c1 / (2 * c2) == pytest.approx(math.log(3e-3))
    # Its plateau: 0.1 + u^2 <= 0.1 * 1.01, |u| <= sqrt(0.001) in ln(lr), around lr*.
    u = math.sqrt(0.001)
    assert p16.plateau == pytest.approx((3e-3 * math.exp(-u), 3e-3 * math.exp(u)), rel=1e-3)
    assert p16.open_ends == "" and not p16.tie


def test_edges_and_diverged_neighbours_are_flagged() -> None:
    def loss(b: int, lr: float, s: int) -> float | None:
        if b == 32 and lr == 1e-1:
            return None  # a neighbour of the best diverged
        return {16: 0.1 + lr, 32: 0.1 + abs(math.log10(lr) + 2), 64: 1.0 - lr}[b]

    points = {p.batch_size: p for p in scaling.optima(records([16, 32, 64], LRS, [0, 1], loss)).points}
    assert points[16].edge == "low" and points[16].lr == 1e-4
    assert "widen the grid downward" in points[16].note
    assert points[64].edge == "high" and "widen the grid upward" in points[64].note
    assert points[32].edge is None and not points[32].refined and points[32].lr == 1e-2
    assert "neighbouring learning rate diverged" in points[32].note
    # Identical seeds: the bootstrap cannot move the optimum.
    assert (points[32].low, points[32].high) == pytest.approx((1e-2, 1e-2))


def test_one_learning_rate_is_no_optimum() -> None:
    (p,) = scaling.optima(records([16], [1e-3], [0, 1], lambda b, lr, s: 0.1 + s)).points
    assert p.lr == 1e-3 and not p.refined and p.edge is not None
    assert p.note.startswith("only one learning rate was run at this batch size")


def test_a_partly_diverged_learning_rate_is_not_the_optimum_but_resamples_may_pick_it() -> None:
    def loss(b: int, lr: float, s: int) -> float | None:
        if lr == 1e-2 and s == 0:
            return None
        return 0.1 + abs(math.log10(lr) + 2.2)

    (p,) = scaling.optima(records([16], LRS, range(5), loss)).points
    assert p.grid_lr == 1e-3 and p.means[2] == math.inf
    # Resamples without seed 0 make lr=0.01 the best: the interval reaches up to it.
    assert p.low == pytest.approx(1e-3) and p.high is not None and p.high > 5e-3


# --------------------------------------------------------------------------- fits and verdicts


def test_power_fit_matches_ordinary_least_squares() -> None:
    from scipy import stats

    wobble = {16: 1.0, 32: 1.3, 64: 0.8, 128: 1.1, 256: 0.9}
    rs = records(wobble, [10.0 ** (e / 4) for e in range(-20, 1)], [0],
                 parabola_loss(lambda b: 1e-3 * (b / 16) ** 0.5 * wobble[b]))
    fit = scaling.power_fit(scaling.optima(rs))
    assert fit is not None and fit.boot is None  # one seed: only the regression's interval
    xs = np.log(list(wobble))
    ys = np.log([1e-3 * (b / 16) ** 0.5 * wobble[b] for b in wobble])
    ref = stats.linregress(xs, ys)
    half = stats.t.ppf(0.975, len(xs) - 2) * ref.stderr
    assert fit.alpha == pytest.approx(ref.slope, rel=1e-6)
    assert fit.regression == pytest.approx((ref.slope - half, ref.slope + half), rel=1e-3)
    assert (fit.low, fit.high) == fit.regression
    assert fit.interval_words == "the regression t-interval (single seed: no bootstrap)"
    assert fit.predict(16) == pytest.approx(math.exp(ref.intercept + ref.slope * xs[0]))


def test_no_fit_without_two_batch_sizes_and_no_verdict_without_an_interval() -> None:
    s = scaling.scaling(records([16], LRS, [0], parabola_loss(lambda b: 1e-2)))
    assert s.fit is None and s.mccandlish is None
    assert s.why == "a scaling fit needs optima at two or more batch sizes; this study has 1"
    assert all(v.consistent is None and v.word == "undecided" for v in s.verdicts)
    assert scaling.headline(s, "adam").startswith("No scaling law (Adam, 1 seed): a scaling fit")
    two = scaling.scaling(records([16, 64], LRS, [0], parabola_loss(lambda b: 1e-3 * b / 16)))
    assert two.fit is not None and two.fit.low is None and two.fit.alpha == pytest.approx(1.0)
    assert "no interval on the slope, so no rule is accepted or rejected" in \
        scaling.headline(two, None)


def test_the_headline_names_an_objective_other_than_the_articles() -> None:
    rs = records([16, 64], LRS, [0], parabola_loss(lambda b: 1e-3 * b / 16))
    few = "; too few refined optima to compare shapes"
    for objective, context in (("objective", f"(Adam, 1 seed{few})"),
                               ("train_loss", f"(Adam, 1 seed{few})"),
                               ("val_loss", f"(Adam, 1 seed; by validation loss{few})"),
                               ("val_error", f"(Adam, 1 seed; by validation error{few})")):
        head = scaling.headline(scaling.scaling(rs, objective), "adam")
        assert head.startswith(f"Best LR grows as B^1.00 (no interval) {context}: "), head
    one = scaling.scaling(records([16], LRS, [0], parabola_loss(lambda b: 1e-2)), "val_error")
    assert scaling.headline(one, None).startswith("No scaling law (1 seed; by validation error)")


def test_mccandlish_fit_recovers_its_parameters() -> None:
    lr_max, b_noise = 0.05, 200.0
    bs = [8, 16, 32, 64, 128, 256, 512, 1024, 2048]
    grid = [10.0 ** (e / 8) for e in range(-40, 1)]
    rs = records(bs, grid, [0], parabola_loss(lambda b: lr_max / (1 + b_noise / b)))
    s = scaling.scaling(rs)
    m = s.mccandlish
    assert m is not None and m.bound is None and m.interval is not None
    # Exact optima, equal weights: the profile interval closes on the estimate.
    assert m.interval[0] <= m.b_noise <= m.interval[1]
    assert m.interval == pytest.approx((b_noise, b_noise), rel=0.05)
    assert m.b_noise == pytest.approx(b_noise, rel=0.05)
    assert m.lr_max == pytest.approx(lr_max, rel=0.05)
    assert m.predict(b_noise) == pytest.approx(lr_max / 2, rel=0.05)
    # Pure linear scaling: B_noise runs off the top of its range, and the words say so.
    lin = scaling.scaling(records([16, 32, 64, 128], grid, [0],
                                  parabola_loss(lambda b: 1e-4 * b)))
    assert lin.mccandlish is not None and lin.mccandlish.bound == "high"
    assert "lr* is still in its linear regime" in (scaling.noise_sentence(lin) or "")


def test_verdicts_on_synthetic_square_root_data() -> None:
    """Acceptance 9(d): lr*(B) = 1e-3 (B/16)^0.5 with seed noise; the verdicts must accept the
    square-root rule and reject the inverse and linear ones."""
    rng = np.random.default_rng(7)
    bs = [16, 32, 64, 128, 256, 512, 1024]
    lrs = [10.0 ** (e / 4) for e in range(-20, 1)]
    shift = {(b, s): rng.normal(0, 0.15) for b in bs for s in range(5)}  # per-seed optimum jitter

    def loss(b: int, lr: float, s: int) -> float:
        centre = math.log(1e-3 * (b / 16) ** 0.5) + shift[(b, s)]
        return 0.05 + 0.02 * (math.log(lr) - centre) ** 2 + abs(rng.normal(0, 0.0005))

    s = scaling.scaling(records(bs, lrs, range(5), loss))
    f = s.fit
    assert f is not None and f.low is not None and f.high is not None
    words = {v.hypothesis.name: v.word for v in s.verdicts}
    print(f"\n9(d) synthetic alpha=0.5: fitted alpha {f.alpha:.3f} [{f.low:.3f}, {f.high:.3f}] "
          f"(bootstrap {f.boot}, regression {f.regression}); verdicts {words}")
    assert words == {"inverse": "rejected", "constant": "rejected", "square-root": "consistent",
                     "linear": "rejected"}, (f.alpha, f.low, f.high)
    assert f.boot is not None and f.regression is not None
    assert f.low == min(f.boot[0], f.regression[0]) and f.high == max(f.boot[1], f.regression[1])
    c = s.shape_fits
    assert c is not None and c.chosen.shape == "power law"
    p = c.chosen
    assert s.rules is not None and s.rules.alpha == pytest.approx(p.main)
    head = scaling.headline(s, "adam")
    ties = "; the data cannot tell it from the surge (Li et al.) shape" if c.ties else ""
    assert head == (f"Best LR grows as a power law, B^{p.main:.2f} [{p.low:.2f}, {p.high:.2f}] "
                    f"(Adam, 5 seeds; power law best supported, QAIC weight {p.weight:.2f}{ties}). "
                    "Its exponent is consistent with the square-root rule; rejects the inverse, "
                    "constant and linear rules (the square-root rule is the one expected for "
                    "Adam).")


# --------------------------------------------------------------------------- noisy quadratic


def simulate_sgd(batch_sizes: list[int], lrs: np.ndarray, seeds: range, *,
                 examples: int | None = None, steps: int | None = None) -> list[TrialRecord]:
    """Plain SGD on a noisy quadratic (Zhang et al. 2019, "Which algorithmic choices matter
    at which batch sizes?"): loss 1/2 sum_i h_i w_i^2 with curvatures h_i from 0.01 to 1, and
    a minibatch gradient h * w + xi / sqrt(B), xi ~ N(0, diag(S h)) per example, S = 1000.
    Every learning rate of a seed sees the same noise (as one seed's data order would)."""
    d, noise = 16, 1000.0
    h = np.geomspace(0.01, 1.0, d)
    sigma = np.sqrt(noise * h)
    out: list[TrialRecord] = []
    for b in batch_sizes:
        n_steps = steps if steps is not None else (examples or 0) // b
        w = np.ones((len(lrs), len(seeds), d))
        gens = [np.random.default_rng(1000 + s) for s in seeds]
        with np.errstate(over="ignore", invalid="ignore"):
            for _ in range(n_steps):
                xi = np.stack([g.standard_normal(d) for g in gens])
                w = w - lrs[:, None, None] * (h * w + sigma * xi[None] / math.sqrt(b))
        loss = 0.5 * (h * w * w).sum(axis=-1)
        for i, lr in enumerate(lrs):
            for j, s in enumerate(seeds):
                v = float(loss[i, j])
                ok = math.isfinite(v) and v < 1e6
                out.append(rec(len(out), b, float(lr), s, v if ok else None,
                               "complete" if ok else "diverged"))
    return out


def test_sgd_on_a_noisy_quadratic_scales_linearly_with_an_examples_budget() -> None:
    """Acceptance 9(c). The regime: B from 1 to 32, well below the noise scale, which is
    B_simple = tr(Sigma) / |G|^2 = 1000 * sum(h) / sum(h^2) ~ 1700 at the start and larger as
    the gradient shrinks (McCandlish et al. 2018 predict lr* ~ B for B << B_noise).

    The budget is a fixed number of EXAMPLES (8192), i.e. 8192 / B steps. Why that one: in
    the small-step regime (lr * h << 1, true here since lr* B / B_noise is small) SGD
    follows an SDE whose drift over the budget is lr * steps = (lr / B) * examples and whose
    noise temperature is lr / B, so the final loss depends on lr / B alone and its minimiser
    is exactly lr* proportional to B (Smith & Le 2018; Zhang et al. 2019). With a fixed
    number of STEPS instead, the drift lr * steps does not scale with B and the optimum
    grows more slowly than B; the test shows that too.

    The pipeline is the study's own: records -> `scaling.scaling` (best grid lr per B on a
    log grid with ratio 2^(1/2), parabola refinement, seed bootstrap) -> the power fit.
    """
    bs = [1, 2, 4, 8, 16, 32]
    lrs = np.geomspace(1e-4, 2.0, 30)
    s = scaling.scaling(simulate_sgd(bs, lrs, range(16), examples=8192))
    f = s.fit
    assert f is not None and f.low is not None and f.high is not None
    assert [p.edge for p in s.optima.points] == [None] * len(bs)
    fixed = scaling.scaling(simulate_sgd(bs, lrs, range(16), steps=512)).fit
    assert fixed is not None
    print(f"\n9(c) noisy quadratic, SGD, 8192 examples: alpha {f.alpha:.3f} [{f.low:.3f}, "
          f"{f.high:.3f}]; lr* = " + ", ".join(f"{p.lr:.3g}" for p in s.optima.points)
          + f"; with 512 steps instead: alpha {fixed.alpha:.3f}")
    assert 0.7 <= f.alpha <= 1.3, f.alpha
    assert {v.hypothesis.name: v.word for v in s.verdicts}["linear"] == "consistent"
    assert fixed.alpha < f.alpha


# --------------------------------------------------------------------------- noise scale


def test_noise_scale_pools_numerator_and_denominator() -> None:
    rs = [rec(0, 16, 1e-2, 0, 0.1, noise_trace_sigma=10.0, noise_grad_sq=1.0, noise_scale=10.0),
          rec(1, 16, 1e-2, 1, 0.1, noise_trace_sigma=30.0, noise_grad_sq=0.1, noise_scale=300.0),
          rec(2, 16, 1e-3, 0, 0.2, noise_scale=50.0), rec(3, 16, 1e-3, 1, 0.2, noise_scale=70.0),
          rec(4, 16, 1e-1, 0, 0.3)]
    cells = {c.learning_rate: c for c in scaling.noise_cells(rs)}
    assert set(cells) == {1e-2, 1e-3}  # no attribute, no estimate, no error
    assert cells[1e-2].pooled and cells[1e-2].interval.mean == pytest.approx(40.0 / 1.1)
    assert not cells[1e-3].pooled and cells[1e-3].interval.mean == 60.0
    est = scaling.b_simple(rs[:1])
    assert est is not None and est[0].single and est[0].mean == 10.0
    summary = scaling.noise_summary(rs, scaling.optima(rs))
    assert summary is not None and summary.critical.mean == pytest.approx(40.0 / 1.1)
    assert [c.learning_rate for c in summary.at_optimum] == [1e-2]
    # |G|^2 estimated <= 0: the gradient is lost in the noise, B_simple is unbounded.
    neg = scaling.b_simple([rec(0, 16, 1e-2, 0, 0.1, noise_trace_sigma=5.0, noise_grad_sq=-1.0)])
    assert neg is not None and neg[0].mean == math.inf
    assert scaling.noise_summary(rs[4:], scaling.optima(rs[4:])) is None


# --------------------------------------------------------------------------- in words


def test_conclusion_states_numbers_and_caveats() -> None:
    def loss(b: int, lr: float, s: int) -> float:
        centre = {16: 1e-4, 32: 2e-3, 64: 3e-3, 128: 5e-3}[b]
        return 0.1 + (math.log(lr) - math.log(centre)) ** 2 + 0.01 * s

    rs = records([16, 32, 64, 128], LRS, [0], loss)
    text = scaling.conclusion(scaling.scaling(rs), "sgd", "epochs")
    assert text.startswith("Best LR grows as a power law, B^")
    assert "(SGD, 1 seed; power law best supported" in text
    assert "Best learning rate on the grid's edge (B=16: lr=0.0001 (low edge))" in text
    assert "Single seed: no interval over seeds" in text
    assert "The budget is in epochs" in text
    assert "Only two batch sizes in the fit" not in text
    assert "The fit leaves out batch sizes whose optimum is on the grid's edge (16)." in text
    two_interior = scaling.conclusion(scaling.scaling(rs[: 3 * len(LRS)]), "sgd")
    assert "The fit includes optima on the grid's edge" in two_interior
    seeds = records([16, 32, 64, 128], LRS, range(3), loss)
    five = scaling.conclusion(scaling.scaling(seeds), "adam", "examples")
    assert "(Adam, 3 seeds; power law" in five and "Single seed" not in five and "epochs" not in five
    assert "The budget is in examples: every batch size sees the same data" in five
    assert "budget" not in scaling.conclusion(scaling.scaling(seeds), "adam", "steps")
