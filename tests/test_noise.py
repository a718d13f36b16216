"""The two-batch noise-scale estimator against closed forms (McCandlish et al. 2018)."""

from __future__ import annotations

import numpy as np
import pytest

from study.noise import estimate_b_simple


def linear_regression_truth(delta: np.ndarray, noise_sd: float) -> tuple[float, float]:
    """|G|^2 and tr(Sigma) for loss 0.5 (x.w - y)^2, x ~ N(0, I_d), y = x.w* + N(0, s^2).

    With delta = w - w*, the per-example gradient is g = x (x.delta - eps), so
    G = E[g] = delta and E|g|^2 = (d + 2)|delta|^2 + d s^2 (Gaussian fourth moments):
    tr(Sigma) = E|g|^2 - |G|^2 = (d + 1)|delta|^2 + d s^2.
    """
    d = delta.size
    g2 = float(delta @ delta)
    return g2, (d + 1) * g2 + d * noise_sd**2


def minibatch_sq_norm(rng: np.random.Generator, delta: np.ndarray, noise_sd: float,
                      b: int, reps: int) -> np.ndarray:
    x = rng.standard_normal((reps, b, delta.size))
    residual = x @ delta - noise_sd * rng.standard_normal((reps, b))
    grads = (x * residual[..., None]).mean(axis=1)
    return np.einsum("rd,rd->r", grads, grads)


def test_b_simple_matches_the_closed_form_within_10_percent() -> None:
    rng = np.random.default_rng(0)
    delta = rng.standard_normal(10) * 0.3
    noise_sd = 0.5
    g2, trace = linear_regression_truth(delta, noise_sd)
    small = minibatch_sq_norm(rng, delta, noise_sd, 8, 4000)
    big = minibatch_sq_norm(rng, delta, noise_sd, 256, 4000)
    est = estimate_b_simple(8, 256, small, big)
    truth = trace / g2
    error = abs(est.b_simple - truth) / truth
    print(f"B_simple: estimate {est.b_simple:.2f}, truth {truth:.2f}, error {error:.1%}")
    assert error < 0.10
    assert est.grad_sq == pytest.approx(g2, rel=0.1)
    assert est.trace_sigma == pytest.approx(trace, rel=0.1)


def test_averages_numerator_and_denominator_before_dividing() -> None:
    # Two measurement pairs whose per-pair ratios average to something else.
    est = estimate_b_simple(1, 2, [3.0, 5.0], [2.0, 2.0])
    g2 = ((2 * 2 - 3) + (2 * 2 - 5)) / 2  # = 0
    assert est.grad_sq == g2 == 0.0 and est.b_simple == float("inf")
    est = estimate_b_simple(1, 3, [4.0, 6.0], [2.0, 2.0])
    assert est.grad_sq == pytest.approx(((6 - 4) / 2 + (6 - 6) / 2) / 2)
    assert est.trace_sigma == pytest.approx(((4 - 2) + (6 - 2)) / 2 / (1 - 1 / 3))
    assert est.b_simple == pytest.approx(est.trace_sigma / est.grad_sq)


@pytest.mark.parametrize(("small", "big", "a", "b"), [(8, 8, [1.0], [1.0]), (0, 8, [1.0], [1.0]),
                                                     (8, 16, [1.0], [1.0, 2.0]), (8, 16, [], [])])
def test_rejects_bad_input(small: int, big: int, a: list[float], b: list[float]) -> None:
    with pytest.raises(ValueError):
        estimate_b_simple(small, big, a, b)
