"""Which shape lr*(B) follows, and steps to a target: known answers drawn here with numpy.

Optima are generated from each shape with log-normal noise of a known sigma; the
comparison must pick the generating shape at a measured rate, never the power law when
the truth saturates strongly, and its 95% intervals must cover the truth at a measured
rate. Steps to a target are generated from McCandlish et al.'s S(B) with noise."""

from __future__ import annotations

import math

import numpy as np
import pytest

from study import critical, scaling, shapes
from study.analysis import TrialRecord

BS = np.array([4, 8, 16, 32, 64, 128, 256, 512])
TRUTH = {
    shapes.POWER: lambda b: 1e-3 * (b / 16) ** 0.5,
    shapes.SATURATING: lambda b: 0.5 / (1 + 40 / b),
    shapes.SURGE: lambda b: 0.01 / (0.5 * (np.sqrt(40 / b) + np.sqrt(b / 40))),
}
TRUE_MAIN = {shapes.POWER: 0.5, shapes.SATURATING: 40.0, shapes.SURGE: 40.0}


@pytest.mark.parametrize("truth", list(TRUTH))
def test_the_generating_shape_is_chosen_and_its_interval_covers_the_truth(truth: str) -> None:
    rng = np.random.default_rng(11)
    sigma, reps = 0.1, 200
    chosen: dict[str, int] = {}
    covered = 0
    for _ in range(reps):
        lrs = TRUTH[truth](BS) * np.exp(rng.normal(0, sigma, len(BS)))
        c = shapes.compare(list(BS), list(lrs), [sigma] * len(BS))
        assert c is not None
        chosen[c.chosen.shape] = chosen.get(c.chosen.shape, 0) + 1
        f = c.of(truth)
        covered += f.low <= TRUE_MAIN[truth] <= f.high
    rate = chosen.get(truth, 0) / reps
    print(f"\n{truth}: chosen {chosen}; 95% interval covers the truth in {covered / reps:.1%}")
    assert rate >= 0.9, chosen
    # The profile interval with known sigma: close to its nominal 95%.
    assert 0.9 <= covered / reps <= 0.99


def test_the_power_law_is_not_chosen_when_the_truth_saturates_strongly() -> None:
    rng = np.random.default_rng(3)
    power = 0
    for _ in range(100):
        lrs = 0.5 / (1 + 40 / BS) * np.exp(rng.normal(0, 0.05, len(BS)))
        c = shapes.compare(list(BS), list(lrs), [0.05] * len(BS))
        assert c is not None
        power += c.chosen.shape == shapes.POWER
    assert power == 0


def test_equal_weights_without_sigmas_and_too_few_points() -> None:
    assert shapes.compare([16, 32], [1e-3, 2e-3], None) is None
    exact = [float(0.5 / (1 + 40 / b)) for b in BS]
    c = shapes.compare(list(BS), exact, None)
    assert c is not None and not c.weighted and c.chosen.shape == shapes.SATURATING
    assert c.chosen.main == pytest.approx(40.0, rel=1e-3)
    assert c.chosen.lr_max == pytest.approx(0.5, rel=1e-3)
    assert float(c.chosen.predict(40.0)) == pytest.approx(0.25, rel=1e-3)
    # The slope of lr* = B^0.5 exactly, with no sigmas: the residual scatter (0) gives
    # an interval that closes on the slope.
    s = shapes.slope([16, 64, 256], [1.0, 2.0, 4.0], None)
    assert s is not None and s.alpha == pytest.approx(0.5) and s.low == pytest.approx(0.5)


# --------------------------------------------------------------------------- steps to a target


def _study(s_min: float, b_noise: float, seeds: int, rng: np.random.Generator,
           noise: float = 0.02) -> list[TrialRecord]:
    """Per batch size, three learning rates; the best one's mean curve crosses 0.1 at
    S(B) = s_min (1 + b_noise / B); the others later. Curves: 0.1 (S / t)^0.5."""
    out: list[TrialRecord] = []
    for b in BS:
        s_true = s_min * (1 + b_noise / b)
        total = int(s_true * 3)
        every = max(1, total // 100)
        centres = np.arange(total // every) * every + (every + 1) / 2
        for lr, late in ((0.01, 1.0), (0.003, 1.5), (0.03, 1.2)):
            for seed in range(seeds):
                v = 0.1 * (s_true * late / centres) ** 0.5 * np.exp(
                    rng.normal(0, noise, len(centres)))
                out.append(TrialRecord(len(out), "COMPLETE", int(b), lr, seed, float(v[-1]),
                                       "complete", step_every=every,
                                       step_losses=tuple(float(x) for x in v)))
    return out


def test_steps_to_target_recover_mcCandlish_s_min_and_b_crit() -> None:
    rng = np.random.default_rng(5)
    s_min, b_noise = 200.0, 64.0
    c = critical.critical(_study(s_min, b_noise, 5, rng), 0.1, resamples=400)
    assert c is not None and c.b_crit is not None and c.s_min is not None
    for p in c.points:
        assert p.learning_rate == 0.01
        assert p.steps == pytest.approx(s_min * (1 + b_noise / p.batch_size), rel=0.05)
    assert c.b_crit.value == pytest.approx(b_noise, rel=0.1)
    assert c.s_min.value == pytest.approx(s_min, rel=0.05)
    assert c.e_min is not None and c.e_min.value == pytest.approx(s_min * b_noise, rel=0.15)
    # Zhang et al.'s 20% overhead: E(B) / E(4) = (B + N) / (4 + N) = 1.2 at B = 0.2 N + 4.8.
    assert c.b_overhead is not None
    assert c.b_overhead.value == pytest.approx(1.2 * (4 + b_noise) - b_noise, rel=0.1)


def test_b_crit_interval_coverage_over_repeated_studies() -> None:
    rng = np.random.default_rng(9)
    s_min, b_noise, reps = 200.0, 64.0, 20
    covered = 0
    for _ in range(reps):
        c = critical.critical(_study(s_min, b_noise, 4, rng, noise=0.1), 0.1, resamples=200)
        assert c is not None and c.b_crit is not None
        low, high = c.b_crit.low, c.b_crit.high
        assert low is not None and high is not None
        covered += low <= b_noise <= high
    print(f"\nB_crit 95% bootstrap interval covers the truth in {covered}/{reps}")
    assert covered / reps >= 0.7


def test_an_unreached_target_and_no_curves() -> None:
    rng = np.random.default_rng(1)
    rs = _study(200.0, 64.0, 2, rng)
    c = critical.critical(rs, 1e-9, resamples=50)
    assert c is not None and all(p.steps is None for p in c.points) and c.b_crit is None
    auto = critical.critical(rs, None, resamples=50)
    # "auto": 10% above the loss every batch size reached: per batch size the lowest
    # point of its cells' seed-mean curves, the highest of those.
    cells = {(r.batch_size, r.learning_rate) for r in rs}
    lowest = {b: min(float(np.mean([r.step_losses for r in rs
                                    if (r.batch_size, r.learning_rate) == (b, lr)],
                                   axis=0).min()) for bb, lr in cells if bb == b)
              for b, _ in cells}
    best = max(lowest.values())
    assert auto is not None and auto.auto and auto.target == pytest.approx(best * 1.1)
    bare = [TrialRecord(0, "COMPLETE", 16, 0.01, 0, 0.1, "complete")]
    assert critical.critical(bare) is None
    assert math.isfinite(critical.critical_all(rs, (0.1, 0.2), resamples=50)[1].target)


# --------------------------------------------------------------------------- SGD, known truth


def test_sgd_on_linear_regression_the_truth_computed_in_closed_form() -> None:
    """Plain SGD on noisy linear regression (tests/truth.py: the expected loss in closed
    form, independent of `study`), 8 seeds of real sampled minibatches, an examples
    budget: the saturating shape leads, B_noise within 1.5x of the closed form's, the true
    lr* inside its interval at most batch sizes, and the 1% plateau's ends within 1.6x."""
    from tests import truth as T

    problem = T.DEFAULT
    rs = T.simulate_study(problem, T.DEFAULT_BATCH_SIZES, np.geomspace(0.02, 1.0, 16),
                          T.default_steps, seeds=8, every=4)
    s = scaling.scaling(rs)
    assert s.shape_fits is not None and s.shape_fits.chosen.shape == shapes.SATURATING
    true_lrs = {b: T.lr_star(problem, b, T.default_steps(b)).lr for b in T.DEFAULT_BATCH_SIZES}
    _, true_noise = T.fit_lr_noise(list(true_lrs), list(true_lrs.values()))
    m = s.mccandlish
    assert m is not None and true_noise / 1.5 <= m.b_noise <= true_noise * 1.5
    inside = sum(p.low is not None and p.high is not None and p.low <= true_lrs[p.batch_size]
                 <= p.high for p in s.optima.points)
    assert inside >= 6, inside
    for p in s.optima.points:
        lo, hi = T.plateau(problem, p.batch_size, T.default_steps(p.batch_size))
        assert p.plateau is not None
        assert lo / 1.6 <= p.plateau[0] <= lo * 1.6 and hi / 1.6 <= p.plateau[1] <= hi * 1.6
    print(f"\nSGD truth: B_noise {m.b_noise:.3g} (closed form {true_noise:.3g}); true lr* inside "
          f"the interval at {inside}/7 batch sizes")


def test_sgd_steps_to_target_against_the_closed_form() -> None:
    """Steps to a target 30% above the loss floor from noisy minibatch losses (12 seeds of
    real SGD, windows of 4 steps) against the closed form's S(B) (within 1.3x), and B_crit
    within 1.5x of the closed form's E_min / S_min."""
    from tests import truth as T

    problem, target = T.DEFAULT, 0.13
    rs = T.simulate_study(problem, T.DEFAULT_BATCH_SIZES, np.geomspace(0.05, 1.0, 12), 600,
                          seeds=12, every=4)
    c = critical.critical(rs, target, resamples=400)
    truth = T.mccandlish(problem, target, 2000)
    assert c is not None and c.b_crit is not None
    got = {p.batch_size: p.steps for p in c.points}
    want = {b: T.steps_to_target(problem, b, target, 2000).steps for b in got}
    print(f"\nSGD steps to {target}: " + ", ".join(f"B={b}: {got[b]:.0f} ({want[b]:.0f})"
                                                  for b in got if got[b] is not None)
          + f"; B_crit {c.b_crit.value:.3g} [{c.b_crit.low}, {c.b_crit.high}] (closed form "
          f"{truth.b_crit:.3g})")
    for b, steps in got.items():
        assert steps is not None and want[b] / 1.3 <= steps <= want[b] * 1.3
    assert truth.b_crit / 1.5 <= c.b_crit.value <= truth.b_crit * 1.5


def test_coverage_of_lr_star_plateau_and_b_noise_over_repeated_sgd_studies() -> None:
    """8 independent simulated SGD studies (8 seeds each) against the closed form: how
    often each 95% interval holds the truth. Measured (20 repetitions, 2026-12-07): lr*
    84%, the plateau's low end 71% and high end 74%, B_noise 100%, the saturating shape
    chosen in 80%. The bootstrap over seeds does not see the smooth fit's own bias, so
    lr*'s and the plateau's intervals cover less than 95%; the README says so."""
    from tests import truth as T

    problem, sizes = T.DEFAULT, T.DEFAULT_BATCH_SIZES
    true_lr = {b: T.lr_star(problem, b, T.default_steps(b)).lr for b in sizes}
    true_plateau = {b: T.plateau(problem, b, T.default_steps(b)) for b in sizes}
    _, true_noise = T.fit_lr_noise(list(true_lr), list(true_lr.values()))
    reps, n = 8, 0
    lr_in = low_in = high_in = noise_in = saturating = 0
    for rep in range(reps):
        rs = T.simulate_study(problem, sizes, np.geomspace(0.02, 1.0, 16), T.default_steps,
                              seeds=8, every=4, seed=100 * rep)
        s = scaling.scaling(rs, resamples=500)
        for p in s.optima.points:
            n += 1
            lr_in += p.low is not None and p.high is not None and \
                p.low <= true_lr[p.batch_size] <= p.high
            lo, hi = true_plateau[p.batch_size]
            low_in += p.plateau_low is not None and p.plateau_low[0] <= lo <= p.plateau_low[1]
            high_in += p.plateau_high is not None and \
                p.plateau_high[0] <= hi <= p.plateau_high[1]
        m = s.mccandlish
        noise_in += m is not None and m.interval is not None and \
            m.interval[0] <= true_noise <= m.interval[1]
        saturating += s.shape_fits is not None and s.shape_fits.chosen.shape == shapes.SATURATING
    print(f"\ncoverage over {reps} studies: lr* {lr_in}/{n}, plateau low {low_in}/{n}, high "
          f"{high_in}/{n}, B_noise {noise_in}/{reps}; saturating chosen {saturating}/{reps}")
    assert lr_in / n >= 0.7 and low_in / n >= 0.55 and high_in / n >= 0.55
    assert noise_in / reps >= 0.8 and saturating / reps >= 0.6
