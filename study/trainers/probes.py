"""Probes of a network beyond its loss: the gradient noise scale and the sharpness.

Both trainers measure through these functions, each with its own way of computing a
gradient or a Hessian-vector product (the keras trainer on its `keras.Model`, the
population trainer on its stacked parameter rows), so the two record the same
quantities by the same rules. TensorFlow is imported only inside functions.

**Gradient noise scale** (McCandlish, Kaplan, Amodei et al., "An Empirical Model of
Large-Batch Training", 2018). At a trial's current weights, `repeats` minibatch
gradients (gradients of the batch's mean loss) are taken at each of two batch sizes
B_small < B_big, and their squared norms go to `study.noise.estimate_b_simple`, which
averages the unbiased |G|^2 and tr(Sigma) estimates separately over every repeat and
epoch before dividing (their Appendix A.1). Minibatch rows are drawn uniformly *with*
replacement: E|G_B|^2 = |G|^2 + tr(Sigma) / B holds for independent draws, while B rows
without replacement from n shrink the second term by (n - B) / (n - 1), which at the
article's n = 1000 and B_big = 256 would understate tr(Sigma) by a quarter. G and Sigma
are then the training set's mean gradient and per-example gradient covariance.

**Sharpness** (Keskar et al. 2017, "On Large-Batch Training for Deep Learning: Generalization
Gap and Sharp Minima"; Cohen et al. 2021, "Gradient Descent on Neural Networks Typically
Occurs at the Edge of Stability"): the top eigenvalue of the Hessian of the training loss
(the mean over the whole training set) after training, by the Lanczos method on
Hessian-vector products, which nested `tf.GradientTape`s compute without forming the
Hessian. Lanczos with full reorthogonalization returns the largest algebraic Ritz value
of the Krylov space, which converges to the top eigenvalue far faster than power
iteration does, and is not fooled by a negative eigenvalue of larger magnitude.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from study.noise import estimate_b_simple
from study.records import NOISE_GRAD_SQ, NOISE_SCALE, NOISE_TRACE_SIGMA, at_epoch
from study.records import SHARPNESS as SHARPNESS  # re-exported: the trainers import it from here
from study.trainers._tf import tensorflow

Tensor = Any  # a tf.Tensor
Floats = npt.NDArray[np.float64]

# Lanczos stops extending a member's Krylov space when the new direction's norm falls
# below this share of the largest curvature seen: the space is (numerically) invariant.
LANCZOS_BREAKDOWN = 1e-6


# --------------------------------------------------------------------------- noise scale


def noise_rows(seed: int, epoch: int, repeats: int, batches: Sequence[int], n: int
               ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """The training rows of a trial's probe minibatches at `epoch`: (repeats, B_small) and
    (repeats, B_big), uniform with replacement, from the trial's seed and the epoch alone
    (both trainers draw the same rows for the same trial)."""
    rng = np.random.default_rng([seed, epoch, 0x5CA1E])
    small, big = batches
    return rng.integers(0, n, (repeats, small)), rng.integers(0, n, (repeats, big))


def noise_extras(batches: Sequence[int], by_epoch: Mapping[int, tuple[Sequence[float],
                                                                     Sequence[float]]]
                 ) -> dict[str, float]:
    """TrialResult.extras from squared norms measured at each epoch.

    `noise_scale`, `noise_grad_sq`, `noise_trace_sigma` pool every repeat of every epoch
    (numerator and denominator averaged separately, then divided); the same three with
    the suffix `_epoch_E` give each epoch's own estimate. Empty when nothing was measured.
    """
    if not by_epoch:
        return {}
    small, big = batches
    pooled = estimate_b_simple(small, big, [v for e in sorted(by_epoch) for v in by_epoch[e][0]],
                               [v for e in sorted(by_epoch) for v in by_epoch[e][1]])
    out = {NOISE_SCALE: pooled.b_simple, NOISE_GRAD_SQ: pooled.grad_sq,
           NOISE_TRACE_SIGMA: pooled.trace_sigma}
    for epoch in sorted(by_epoch):
        est = estimate_b_simple(small, big, by_epoch[epoch][0], by_epoch[epoch][1])
        out[at_epoch(NOISE_SCALE, epoch)] = est.b_simple
        out[at_epoch(NOISE_GRAD_SQ, epoch)] = est.grad_sq
        out[at_epoch(NOISE_TRACE_SIGMA, epoch)] = est.trace_sigma
    return out


# --------------------------------------------------------------------------- sharpness


def hvp_of(loss: Callable[[Tensor], Tensor]) -> Callable[[Tensor, Tensor], Tensor]:
    """Hessian-vector products of `loss`, a map from parameter rows (members, P) to one
    loss per member (members,), by reverse-over-reverse differentiation: the gradient of
    (grad loss . v). Members are independent, so the sum over them separates."""
    tf = tensorflow()

    def hvp(theta: Tensor, v: Tensor) -> Tensor:
        with tf.GradientTape() as outer:
            outer.watch(theta)
            with tf.GradientTape() as inner:
                inner.watch(theta)
                total = tf.reduce_sum(loss(theta))
            grad = inner.gradient(total, theta)
            gv = tf.reduce_sum(grad * tf.stop_gradient(v))
        return outer.gradient(gv, theta)

    return hvp


def top_eigenvalue(hvp: Callable[[Floats], Floats], members: int, dim: int, iterations: int,
                   seed: int = 0) -> Floats:
    """The top eigenvalue of each member's symmetric operator `hvp` ((members, dim) ->
    (members, dim)), by `iterations` Lanczos steps with full reorthogonalization.

    The recurrence runs in float64 on top of the (float32) products. A member whose
    Krylov space stops growing (its operator has fewer distinct eigenvalues than
    `iterations`) keeps the tridiagonal matrix it had, whose Ritz values are then exact.
    """
    rng = np.random.default_rng([seed, 0x1A2C05])
    q = rng.standard_normal((members, dim))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    basis = np.zeros((members, iterations, dim))
    alphas = np.zeros((members, iterations))
    betas = np.zeros((members, iterations))
    size = np.zeros(members, dtype=int)  # Krylov dimension reached per member
    growing = np.ones(members, dtype=bool)
    scale = np.zeros(members)
    for j in range(iterations):
        basis[:, j] = q
        w = np.asarray(hvp(q), dtype=np.float64)
        alpha = np.einsum("md,md->m", w, q)
        # Full reorthogonalization, twice ("twice is enough", Parlett): the textbook
        # three-term recurrence loses orthogonality as soon as a Ritz value converges.
        for _ in range(2):
            w -= np.einsum("mj,mjd->md", np.einsum("mjd,md->mj", basis[:, :j + 1], w),
                           basis[:, :j + 1])
        alphas[:, j] = np.where(growing, alpha, 0.0)
        size += growing
        beta = np.linalg.norm(w, axis=1)
        scale = np.maximum(scale, np.abs(alpha))
        growing &= beta > LANCZOS_BREAKDOWN * np.maximum(scale, 1e-30)
        betas[:, j] = np.where(growing, beta, 0.0)
        q = np.where(growing[:, None], w / np.where(beta > 0, beta, 1.0)[:, None], 0.0)
    top = np.empty(members)
    for m in range(members):
        k = int(size[m])
        t = np.diag(alphas[m, :k]) + np.diag(betas[m, :k - 1], 1) + np.diag(betas[m, :k - 1], -1)
        top[m] = float(np.linalg.eigvalsh(t)[-1])
    return top
