"""The known answer of tests/truth.py checked against itself: the closed-form expected
loss against a brute-force recursion and against Monte Carlo, and the derived figures for
self-consistency."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from study.analysis import best_per_batch_size, grid
from tests import truth
from tests.truth import DEFAULT, Problem

SMALL = Problem(lambdas=(1.0, 0.4, 0.1), sigma2=0.2, m0=(1.0, 2.0, 0.5), name="small")


def _moment4(problem: Problem) -> np.ndarray:
    """E[x_i x_j x_k x_l] of independent coordinates, by enumerating index patterns: the
    product of per-coordinate moments E[x_c^n] over the distinct coordinates."""
    lam, kappa = problem.lam, problem.kappa
    d = lam.size
    bias = problem.bias

    def moment(c: int, n: int) -> float:
        if bias and c == d - 1:
            return 1.0  # the constant input
        return float({0: 1.0, 1: 0.0, 2: lam[c], 3: 0.0, 4: kappa[c] * lam[c] ** 2}[n])

    t = np.empty((d,) * 4)
    for idx in itertools.product(range(d), repeat=4):
        t[idx] = math.prod(moment(c, idx.count(c)) for c in set(idx))
    return t


def _brute_curve(problem: Problem, lr: float, b: int, steps: int) -> np.ndarray:
    """E[L(t)] by the full matrix recursion M' = M - lr (E[g e^T] + E[e g^T]) + lr^2 E[g g^T],
    with E[x x^T M x x^T] from the enumerated fourth moments (no diagonal shortcut)."""
    t4 = _moment4(problem)
    h = np.diag(problem.lam)
    m = np.diag(problem.m_init)
    out = [float(np.trace(h @ m)) + problem.sigma2]
    for _ in range(steps):
        q = np.einsum("ijkl,kl->ij", t4, m)
        gg = 4.0 / b * (q + problem.sigma2 * h) + 4.0 * (1 - 1.0 / b) * h @ m @ h
        m = m - 2 * lr * (h @ m + m @ h) + lr**2 * gg
        out.append(float(np.trace(h @ m)) + problem.sigma2)
    return np.array(out)


@pytest.mark.parametrize("features", ["gaussian", "uniform"])
@pytest.mark.parametrize("bias", [False, True])
def test_closed_form_equals_the_full_matrix_recursion(features: str, bias: bool) -> None:
    p = Problem(lambdas=SMALL.lambdas, sigma2=0.2, m0=(1.0, 2.0, 0.5) + ((3.0,) if bias else ()),
                features=features, bias=bias)  # type: ignore[arg-type]
    for lr, b in ((0.05, 1), (0.3, 4), (0.6, 32)):
        np.testing.assert_allclose(truth.expected_loss(lr, b, 30, p), _brute_curve(p, lr, b, 30),
                                   rtol=1e-10)


def test_expected_loss_vectorizes_and_marks_divergence() -> None:
    lrs = np.array([0.01, 0.3, 3.0])
    curves = truth.expected_loss(lrs, 8, 400, DEFAULT)
    assert curves.shape == (3, 401)
    np.testing.assert_allclose(curves[1], truth.expected_loss(0.3, 8, 400, DEFAULT)[()])
    both = truth.expected_loss(0.3, np.array([8.0, 16.0]), 10, DEFAULT)
    np.testing.assert_allclose(both[1], truth.expected_loss(0.3, 16, 10, DEFAULT))
    assert np.all(np.isfinite(curves[:2]))
    assert np.isinf(curves[2, -1]) and not np.isnan(curves).any()
    # Gradient descent (B = inf) is the limit of large batches.
    np.testing.assert_allclose(truth.expected_loss(0.3, 1e12, 50, DEFAULT),
                               truth.expected_loss(0.3, math.inf, 50, DEFAULT), rtol=1e-9)


def test_divergence_lr_is_where_the_loss_stops_converging() -> None:
    edge = truth.divergence_lr(DEFAULT, 4)
    below = truth.expected_loss(0.98 * edge, 4, 3000, DEFAULT)[-1]
    above = truth.expected_loss(1.02 * edge, 4, 3000, DEFAULT)[-1]
    assert below < DEFAULT.initial_loss < above


LINEAR = truth.linear_study_problem(n_train=4096)


@pytest.mark.parametrize(("problem", "lr_of_edge", "b", "steps", "seeds"), [
    (DEFAULT, 0.1, 4, 60, 3000),  # gaussian, small lr
    (DEFAULT, 0.5, 16, 40, 1500),
    (DEFAULT, 0.9, 16, 40, 2000),  # near divergence
    (DEFAULT, 0.9, 4, 60, 4000),  # near divergence, small batch
    (LINEAR, 0.3, 8, 40, 3000),  # uniform features, bias, uniform noise
    (LINEAR, 0.9, 2, 40, 4000),  # the same near divergence
])
def test_closed_form_matches_monte_carlo(problem: Problem, lr_of_edge: float, b: int, steps: int,
                                         seeds: int) -> None:
    lr = lr_of_edge * truth.divergence_lr(problem, b)
    sim = truth.simulate(problem, lr, b, steps, seeds, seed=7)
    exact = truth.expected_loss(lr, b, steps, problem)
    final = sim.final_loss[0]
    se = final.std(ddof=1) / math.sqrt(seeds)
    assert abs(final.mean() - exact[-1]) < 4 * se, (final.mean(), exact[-1], se)
    # Each step's batch loss (before its update) has expectation L(t).
    for t in (0, 1, steps // 4, steps - 1):
        v = sim.step_losses[0, :, t]
        assert abs(v.mean() - exact[t]) < 4 * v.std(ddof=1) / math.sqrt(seeds), t


def test_kurtosis_matters_and_is_matched() -> None:
    # Same second moments, different fourth: the closed form tells them apart, and so
    # does Monte Carlo (at B = 1, where the fourth moment weighs most).
    g = Problem(SMALL.lambdas, 0.2, SMALL.m0, features="gaussian")
    u = Problem(SMALL.lambdas, 0.2, SMALL.m0, features="uniform")
    lg, lu = (truth.expected_loss(0.25, 1, 20, p)[-1] for p in (g, u))
    assert lu < lg
    for p, exact in ((g, lg), (u, lu)):
        f = truth.simulate(p, 0.25, 1, 20, 20000, seed=3).final_loss[0]
        assert abs(f.mean() - exact) < 4 * f.std(ddof=1) / math.sqrt(f.size)


# --------------------------------------------------------------------------- figures

BATCHES = (4, 32, 256)


@pytest.fixture(scope="module")
def optima() -> dict[int, truth.Optimum]:
    return {b: truth.lr_star(DEFAULT, b, truth.default_steps(b)) for b in BATCHES}


def test_lr_star_is_a_minimum_and_rises_then_flattens(optima: dict[int, truth.Optimum]) -> None:
    for b, o in optima.items():
        steps = truth.default_steps(b)
        near = truth.objective([o.lr / 1.02, o.lr, o.lr * 1.02], b, steps, DEFAULT)
        assert near[1] <= near.min() + 1e-15
        assert o.loss == pytest.approx(float(near[1]))
    lr = [optima[b].lr for b in BATCHES]
    assert lr[1] / lr[0] > 4  # about linear at small B (x8 in B)
    assert lr[2] / lr[1] < 2.5  # flat at large B (x8 in B)
    lr_max, b_noise = truth.fit_lr_noise(BATCHES, lr)
    assert 4 < b_noise < 256 and lr_max > lr[2]


def test_fit_lr_noise_recovers_an_exact_hyperbola() -> None:
    b = np.array([4.0, 8, 16, 32, 64, 128, 256])
    assert truth.fit_lr_noise(b, 0.9 / (1 + 37.0 / b)) == pytest.approx((0.9, 37.0), rel=1e-8)
    assert truth.fit_steps_hyperbola(b, 50 + 2000 / b) == pytest.approx((50.0, 2000.0), rel=1e-8)


def test_plateau_brackets_lr_star(optima: dict[int, truth.Optimum]) -> None:
    for b in (4, 32):
        o = optima[b]
        steps = truth.default_steps(b)
        lo, hi = truth.plateau(DEFAULT, b, steps, 0.01)
        assert lo < o.lr < hi
        ends = truth.objective([lo, hi], b, steps, DEFAULT)
        np.testing.assert_allclose(ends, 1.01 * o.loss, rtol=1e-9)
        inside = truth.objective(np.geomspace(lo, hi, 9)[1:-1], b, steps, DEFAULT)
        assert np.all(inside < 1.01 * o.loss)
    lo, hi = truth.plateau(DEFAULT, 4, truth.default_steps(4), 0.01)
    assert 2 < hi / lo < 4


def test_window_objective_is_the_mean_batch_loss() -> None:
    curve = truth.expected_loss(0.2, 16, 100, DEFAULT)
    assert truth.objective(0.2, 16, 100, DEFAULT, window=100) == pytest.approx(curve[:100].mean())
    assert truth.objective(0.2, 16, 100, DEFAULT) == pytest.approx(curve[-1])
    with pytest.raises(ValueError, match="window"):
        truth.objective(0.2, 16, 100, DEFAULT, window=101)


TARGET = 0.12  # 20% above DEFAULT's floor


@pytest.fixture(scope="module")
def steps() -> dict[float, truth.Steps]:
    return {b: truth.steps_to_target(DEFAULT, b, TARGET, 100_000)
            for b in (0.5, 4, 32, 256, 65536)}


def test_steps_to_target_is_reached_and_monotone(steps: dict[float, truth.Steps]) -> None:
    for b, s in steps.items():
        curve = truth.expected_loss(s.lr, b, math.ceil(s.steps) + 1, DEFAULT)
        assert curve[math.ceil(s.steps)] <= TARGET < curve[math.floor(s.steps)] or s.steps == 0
        # No learning rate on a coarse grid does better.
        coarse = truth.crossing(truth.expected_loss(np.geomspace(1e-3, 1, 40), b,
                                                    math.ceil(s.steps) + 2, DEFAULT), TARGET)
        assert coarse.min() >= s.steps - 1e-6
    bs = sorted(steps)
    s_b = [steps[b].steps for b in bs]
    e_b = [steps[b].examples for b in bs]
    assert all(x >= y for x, y in itertools.pairwise(s_b))
    assert all(x <= y for x, y in itertools.pairwise(e_b))


def test_mccandlish_limits(steps: dict[float, truth.Steps]) -> None:
    c = truth.mccandlish(DEFAULT, TARGET, 100_000)
    assert c.s_min <= min(s.steps for s in steps.values())
    assert c.s_min == pytest.approx(steps[65536].steps, rel=0.005)  # B -> inf
    assert c.e_min <= min(s.examples for s in steps.values())
    # B -> 0: E(B) / E_min - 1 is about B / B_crit on McCandlish's hyperbola.
    assert 1 < steps[0.5].examples / c.e_min < 1 + 2 * 0.5 / c.b_crit
    assert c.b_crit == pytest.approx(c.e_min / c.s_min)
    assert 4 < c.b_crit < 256


def test_critical_batch_is_where_examples_pass_the_overhead() -> None:
    b0 = 4
    z = truth.critical_batch(DEFAULT, TARGET, 100_000, b0)
    e0 = truth.examples_to_target(DEFAULT, b0, TARGET, 100_000)
    assert truth.examples_to_target(DEFAULT, z, TARGET, 100_000) == pytest.approx(1.2 * e0, rel=1e-6)
    assert b0 < z < 256
    assert truth.first_over([4, 8, 16, 32], [100.0, 50.0, 26.0, 16.0]) == 32.0
    assert truth.first_over([4, 8], [100.0, 50.0]) is None


def test_target_below_the_floor_names_it() -> None:
    with pytest.raises(ValueError, match="loss floor"):
        truth.steps_to_target(DEFAULT, 4, 0.1, 1000)


# --------------------------------------------------------------------------- records


def test_simulated_study_feeds_the_analysis() -> None:
    lrs = [0.05, 0.2, 0.5]
    records = truth.simulate_study(DEFAULT, [8, 32], lrs, lambda b: 256 // b, seeds=3, every=2)
    assert len(records) == 2 * 3 * 3
    assert [r.number for r in records] == list(range(18))
    r = records[0]
    assert (r.state, r.status, r.batch_size, r.step_every) == ("COMPLETE", "complete", 8, 2)
    assert len(r.step_losses) == 256 // 8 // 2
    assert r.value == r.val_loss and r.train_loss is not None
    g = grid(records)
    assert g.batch_sizes == (8, 32) and len(g.cells) == 6
    assert all(c.runs == 3 for c in g.cells.values())
    assert [c.batch_size for c in best_per_batch_size(g)] == [8, 32]


def test_windowed_step_losses() -> None:
    sim = truth.simulate(SMALL, [0.1], 4, 7, 2)
    w = sim.windowed(3)
    assert w.shape == (1, 2, 2)
    np.testing.assert_allclose(w[0, 1, 1], sim.step_losses[0, 1, 3:6].mean())
    rec = truth.records(sim, 3)
    assert rec[1].step_losses == pytest.approx(tuple(w[0, 1]))


def test_a_divergent_run_is_recorded_as_diverged() -> None:
    sim = truth.simulate(SMALL, [5.0], 4, 200, 2)
    rec = truth.records(sim, 10)
    assert all(r.status == "diverged" and r.state == "FAIL" and r.value is None for r in rec)
