"""The gradient noise scale, estimated as McCandlish et al. (2018) do. Pure numpy.

McCandlish, Kaplan, Amodei et al., "An Empirical Model of Large-Batch Training"
(2018): the simple noise scale is

    B_simple = tr(Sigma) / |G|^2,

where G is the true (full-data) gradient and Sigma the per-example gradient
covariance. A minibatch gradient G_B of size B has E|G_B|^2 = |G|^2 + tr(Sigma) / B,
so two batch sizes B_small < B_big give unbiased estimates (their Appendix A.1):

    |G|^2     ~ (B_big |G_big|^2 - B_small |G_small|^2) / (B_big - B_small)
    tr(Sigma) ~ (|G_small|^2 - |G_big|^2) / (1 / B_small - 1 / B_big)

The ratio of two unbiased estimates is biased, so numerator and denominator are
averaged separately (over repeated measurements) before dividing. The same paper
predicts the optimal learning rate eps_opt(B) = eps_max / (1 + B_noise / B), with
B_simple an estimate of B_noise (the critical batch size).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class NoiseEstimate:
    grad_sq: float  # |G|^2, unbiased
    trace_sigma: float  # tr(Sigma), unbiased
    b_simple: float  # trace_sigma / grad_sq (inf when grad_sq <= 0)
    measurements: int


def estimate_b_simple(
    b_small: int,
    b_big: int,
    sq_norms_small: Sequence[float],
    sq_norms_big: Sequence[float],
) -> NoiseEstimate:
    """B_simple from squared gradient norms measured at two batch sizes.

    `sq_norms_small[i]` and `sq_norms_big[i]` are |G_B|^2 of minibatch gradients
    (means over the batch of per-example gradients) at batch sizes b_small and b_big.
    Each pair gives unbiased |G|^2 and tr(Sigma); both are averaged over the pairs
    first, and only then divided.
    """
    if not 0 < b_small < b_big:
        raise ValueError(f"need 0 < b_small < b_big, got {b_small} and {b_big}")
    small = np.asarray(sq_norms_small, dtype=np.float64)
    big = np.asarray(sq_norms_big, dtype=np.float64)
    if small.shape != big.shape or small.size == 0:
        raise ValueError(
            f"need equally many measurements at both sizes, got {small.size} and {big.size}"
        )
    grad_sq = float(np.mean((b_big * big - b_small * small) / (b_big - b_small)))
    trace_sigma = float(np.mean((small - big) / (1.0 / b_small - 1.0 / b_big)))
    b_simple = trace_sigma / grad_sq if grad_sq > 0 else float("inf")
    return NoiseEstimate(grad_sq, trace_sigma, b_simple, int(small.size))
