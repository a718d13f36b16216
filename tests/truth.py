"""A known answer for the batch-size / learning-rate estimators, computed without `study`.

Online minibatch SGD on noisy linear regression has an exact expected loss curve. This
module computes it, simulates the same SGD by Monte Carlo, and derives from the exact
curve every figure `study` estimates from noisy trials: the best learning rate per batch
size, the plateau of near-best learning rates, steps and examples to a target loss,
McCandlish et al.'s S_min, E_min and B_crit, Zhang et al.'s 20%-overhead critical batch,
and the B_noise of a McCandlish fit to the exact optima. Nothing here imports `study`'s
estimators; only `records()` builds `study.analysis.TrialRecord`s, so that a simulated
study can be fed to them.

The model
---------
Inputs x in R^d with independent coordinates, E[x_k] = 0, E[x_k^2] = lambda_k (H =
diag(lambda)), E[x_k^4] = kappa_k lambda_k^2 (kappa = 3 Gaussian, 9/5 uniform, 1 for a
constant coordinate: a bias, see below), odd moments zero. Target y = x.w* + eps, eps
independent of x with mean 0 and variance sigma2. Keras' "mse" loss: the mean over the
batch of (y - x.w)^2, so with the error e = w - w* a batch of B fresh examples gives the
gradient g = (2/B) sum_i x_i (x_i.e - eps_i) and SGD sets e' = e - lr g. Fresh examples
every step (online: no row is reused).

The exact recursion. With M = E[e e^T], E[g | e] = 2 H e and
    E[g g^T] = (4/B) (Q(M) + sigma2 H) + 4 (1 - 1/B) H M H,
    Q(M) = E[x x^T M x x^T] = 2 H M H + tr(H M) H + diag((kappa_k - 3) lambda_k^2 M_kk)
(independent coordinates with zero odd moments), hence
    M' = M - 2 lr (H M + M H) + 4 lr^2 [(1/B) (Q(M) + sigma2 H) + (1 - 1/B) H M H].
The diagonal m = diag(M) is closed under this map (off-diagonal entries of M decay on
their own and never feed back into the diagonal, nor into the loss):
    m_k' = (1 - 2 lr lambda_k)^2 m_k
           + (4 lr^2 / B) [(kappa_k - 2) lambda_k^2 m_k + lambda_k (lambda.m + sigma2)].
The expected population loss is L(t) = lambda.m(t) + sigma2, and the expected loss of
the batch drawn at step t+1 (before its update, what Keras logs) is also L(t). B may be
any positive real (1/B enters analytically) or inf (gradient descent on the population).
The bracket is written as (kappa_k - 1) lambda_k^2 m_k + lambda_k (sum_{j != k} lambda_j
m_j + sigma2): every term is non-negative (kappa >= 1), so no cancellation, and a run
whose loss passes `DIVERGED` is reported as inf from that step on.

A bias is a constant coordinate x_k = 1: lambda_k = 1, kappa_k = 1, E[x_k] = 1 != 0,
yet the formula above still holds, because every moment it needs that involves the
constant also involves an odd moment of a zero-mean symmetric feature (zero).

Figures derived from the exact curve (`lr_star`, `plateau`, `steps_to_target`, ...)
---------------------------------------------------------------------------------
- lr*(B): the learning rate minimizing the objective after `steps` updates, the
  objective being L(steps) (window = 0: the population, i.e. validation, loss of the
  final weights) or the mean of L over the last `window` steps (the mean training loss
  of the batches of that stretch, Keras' epoch loss when the window is the last epoch).
  A dense log grid, then scipy's bounded Brent search in log lr between the best grid
  point's neighbours.
- plateau: the two learning rates where the objective equals (1 + tol) L_min, by brentq
  in log lr, bracketed by the dense grid.
- S(B, target): min over lr of the first t with L(t) <= target, t interpolated linearly
  between the integer steps on either side of the crossing; E(B) = B S(B).
- S_min = S(inf, target) (gradient descent on the population loss).
- E_min = lim_{B -> 0} B S(B): with lr = eta B and tau = B t (examples), the recursion
  becomes the linear ODE dm/dtau = C m + c, C = -4 eta H + 4 eta^2 [diag((kappa - 2)
  lambda^2) + lambda lambda^T] (symmetric), c = 4 eta^2 sigma2 lambda, solved exactly by
  an eigendecomposition; E_min = min over eta of the first tau with L(tau) = target.
  `examples_to_target(problem, 1, ...)` is the smallest E over integer batch sizes.
- B_crit = E_min / S_min (McCandlish et al. 2018, "An empirical model of large-batch
  training": S(B) = S_min (1 + B_noise / B), E(B) = E_min (1 + B / B_noise), B_crit =
  E_min / S_min).
- The 20% critical batch (Zhang et al. 2024, "How does critical batch size scale in
  pre-training?": the batch size beyond which steps to target exceed what linear
  scaling predicts by 20%). Linear scaling from the smallest batch size B_0 of a study
  predicts S_lin(B) = S(B_0) B_0 / B; the critical batch is the smallest B >= B_0 with
  S(B) >= 1.2 S_lin(B), i.e. E(B) >= 1.2 E(B_0) (`critical_batch`, reference "smallest",
  solved over real B by brentq). Its other reading, linear scaling from the B -> 0
  limit, S_lin(B) = E_min / B, is reference "limit" (E(B) >= 1.2 E_min). On the
  McCandlish hyperbola these are 1.2 B_0 + 0.2 B_noise and 0.2 B_noise.
- The truth's B_noise: lr_max and B_noise of lr*(B) ~ lr_max / (1 + B_noise / B), fitted
  to exact optima at given batch sizes by scipy.optimize.least_squares in log lr.

Run `python -m tests.truth` to print the default problems' figures.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt
from scipy import optimize

from study.analysis import TrialRecord

FloatArray = npt.NDArray[np.float64]
ArrayLike = float | int | Sequence[float] | FloatArray

# A run whose expected loss passes this is diverged: inf from then on (never overflow).
DIVERGED = 1e100
# Learning rates per decade of the dense grids that bracket every optimum and root.
GRID_PER_DECADE = 48
KURTOSIS = {"gaussian": 3.0, "uniform": 1.8}


@dataclass(frozen=True)
class Problem:
    """Noisy linear regression: the input's per-coordinate second moments `lambdas`,
    the label noise variance `sigma2`, the initial error's per-coordinate second moment
    `m0` (E[e0 e0^T] = diag(m0)), the input distribution `features` ("gaussian" or
    "uniform", kappa 3 or 1.8) and `bias`: a constant input 1 appended as the last
    coordinate (lambda 1, kappa 1), the initial error of the bias being `m0`'s last
    entry (so `m0` has d + 1 entries where `lambdas` has d)."""

    lambdas: tuple[float, ...]
    sigma2: float
    m0: tuple[float, ...]
    features: Literal["gaussian", "uniform"] = "gaussian"
    bias: bool = False
    noise: Literal["gaussian", "uniform"] = "gaussian"
    name: str = ""
    lam: FloatArray = field(init=False, repr=False, compare=False)
    kappa: FloatArray = field(init=False, repr=False, compare=False)
    m_init: FloatArray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.features not in KURTOSIS:
            raise ValueError(f"features: expected 'gaussian' or 'uniform', got {self.features!r}")
        d = len(self.lambdas)
        lam = np.array(self.lambdas + ((1.0,) if self.bias else ()), float)
        kappa = np.full(lam.shape, KURTOSIS[self.features])
        if self.bias:
            kappa[-1] = 1.0
        if len(self.m0) != lam.size:
            raise ValueError(f"m0 has {len(self.m0)} entries; expected {lam.size} "
                             f"({d} features{' and the bias' if self.bias else ''})")
        object.__setattr__(self, "lam", lam)
        object.__setattr__(self, "kappa", kappa)
        object.__setattr__(self, "m_init", np.array(self.m0, float))

    @property
    def floor(self) -> float:
        """The irreducible loss: sigma2."""
        return self.sigma2

    @property
    def initial_loss(self) -> float:
        return float(self.lam @ self.m_init) + self.sigma2

    def lr_bounds(self) -> tuple[float, float]:
        """Where every search looks: gradient descent diverges above 1 / lambda_max
        (Keras' mse has no 1/2), and 1e-5 of that learns next to nothing."""
        hi = 1.0 / float(self.lam.max())
        return hi * 1e-5, hi


# --------------------------------------------------------------------------- exact curve


def expected_loss(lr: ArrayLike, batch_size: ArrayLike, steps: int, problem: Problem) -> FloatArray:
    """E[L(t)] for t = 0..steps: shape broadcast(lr, batch_size) + (steps + 1,).

    `lr` and `batch_size` broadcast together (a real batch size is allowed, and inf is
    gradient descent on the population loss). A run whose expected loss passes
    `DIVERGED` is inf from that step on.
    """
    eta, b = np.broadcast_arrays(np.asarray(lr, float), np.asarray(batch_size, float))
    shape = eta.shape
    with np.errstate(divide="ignore"):
        inv_b = np.where(np.isinf(b), 0.0, 1.0 / b)[..., None]
    e = eta[..., None]
    lam, kappa, s2 = problem.lam, problem.kappa, problem.sigma2
    decay = (1.0 - 2.0 * e * lam) ** 2 + 4.0 * e**2 * inv_b * (kappa - 1.0) * lam**2
    couple = 4.0 * e**2 * inv_b * lam
    m = np.broadcast_to(problem.m_init, (*shape, lam.size)).copy()
    out = np.empty((*shape, steps + 1))
    out[..., 0] = m @ lam + s2
    dead = np.zeros(shape, bool)
    for t in range(1, steps + 1):
        lm = (m @ lam)[..., None]
        m = decay * m + couple * (lm - lam * m + s2)
        loss = m @ lam + s2
        dead |= ~(loss <= DIVERGED)
        m = np.where(dead[..., None], 0.0, m)
        out[..., t] = np.where(dead, np.inf, loss)
    return out


def divergence_lr(problem: Problem, batch_size: float) -> float:
    """The learning rate above which the expected loss grows without bound: where the
    spectral radius of the linear map m -> m' (module docstring) reaches 1 (bisection
    in log lr; the radius rises with lr past the optimum)."""
    lam, kappa = problem.lam, problem.kappa
    inv_b = 0.0 if math.isinf(batch_size) else 1.0 / batch_size

    def radius(lr: float) -> float:
        decay = (1 - 2 * lr * lam) ** 2 + 4 * lr**2 * inv_b * (kappa - 1) * lam**2
        couple = 4 * lr**2 * inv_b * lam
        a = np.diag(decay - couple * lam) + np.outer(couple, lam)
        return float(np.abs(np.linalg.eigvals(a)).max())

    lo, hi = 1e-6, 1.0 / float(lam.max())
    if radius(hi) < 1:
        raise ValueError(f"divergence_lr: stable up to {hi:g} at B={batch_size:g}")
    return math.exp(optimize.brentq(lambda x: radius(math.exp(x)) - 1.0, math.log(lo), math.log(hi),
                                    xtol=1e-12))


def objective(lr: ArrayLike, batch_size: ArrayLike, steps: int, problem: Problem,
              window: int = 0) -> FloatArray:
    """The expected objective after `steps` updates: L(steps) (window 0), or the mean of
    L(t) over t = steps - window .. steps - 1 (the mean loss of the last `window`
    batches, each before its update: Keras' epoch loss)."""
    curve = expected_loss(lr, batch_size, steps, problem)
    if window == 0:
        return curve[..., -1]
    if not 0 < window <= steps:
        raise ValueError(f"window: expected 0..{steps} steps, got {window}")
    return np.asarray(curve[..., steps - window:steps].mean(axis=-1), dtype=np.float64)


def _grid(lo: float, hi: float) -> FloatArray:
    n = max(3, math.ceil(math.log10(hi / lo) * GRID_PER_DECADE) + 1)
    return np.geomspace(lo, hi, n)


@dataclass(frozen=True)
class Optimum:
    lr: float
    loss: float  # the objective at lr


def lr_star(problem: Problem, batch_size: float, steps: int, window: int = 0,
            bounds: tuple[float, float] | None = None) -> Optimum:
    """The learning rate minimizing `objective` after `steps` updates at this batch size,
    and the minimum; ValueError when the optimum is on the edge of `bounds`."""
    lo, hi = bounds or problem.lr_bounds()
    lrs = _grid(lo, hi)
    values = objective(lrs, batch_size, steps, problem, window)
    i = int(np.nanargmin(values))
    if i in (0, lrs.size - 1):
        raise ValueError(f"lr_star: the optimum at B={batch_size:g} is on the edge of "
                         f"[{lo:.3g}, {hi:.3g}]; widen the bounds")

    def f(log_lr: float) -> float:
        return min(float(objective(math.exp(log_lr), batch_size, steps, problem, window)), DIVERGED)

    res = optimize.minimize_scalar(f, bounds=(math.log(lrs[i - 1]), math.log(lrs[i + 1])),
                                   method="bounded", options={"xatol": 1e-7})
    x = float(res.x)
    return Optimum(math.exp(x), f(x)) if f(x) <= values[i] else Optimum(float(lrs[i]), float(values[i]))


def plateau(problem: Problem, batch_size: float, steps: int, tol: float = 0.01, window: int = 0,
            bounds: tuple[float, float] | None = None) -> tuple[float, float]:
    """The two learning rates, either side of lr*, where the objective equals
    (1 + tol) times its minimum: the ends of the plateau of near-best learning rates."""
    lo, hi = bounds or problem.lr_bounds()
    best = lr_star(problem, batch_size, steps, window, (lo, hi))
    level = (1.0 + tol) * best.loss

    def g(log_lr: float) -> float:
        v = float(objective(math.exp(log_lr), batch_size, steps, problem, window))
        return min(v, 1e300) - level

    lrs = _grid(lo, hi)
    values = objective(lrs, batch_size, steps, problem, window) - level
    below, above = lrs[lrs < best.lr], lrs[lrs > best.lr]
    vb, va = values[lrs < best.lr], values[lrs > best.lr]
    out = []
    for side, xs, vs in (("low", below[::-1], vb[::-1]), ("high", above, va)):
        over = np.nonzero(vs > 0)[0]
        if over.size == 0:
            raise ValueError(f"plateau: its {side} end at B={batch_size:g} is beyond "
                             f"[{lo:.3g}, {hi:.3g}]; widen the bounds")
        j = int(over[0])
        inner = best.lr if j == 0 else float(xs[j - 1])
        a, b = sorted((math.log(inner), math.log(float(xs[j]))))
        out.append(math.exp(optimize.brentq(g, a, b, xtol=1e-12, rtol=1e-12)))
    return out[0], out[1]


# --------------------------------------------------------------------------- steps to target


def crossing(curve: FloatArray, target: float) -> FloatArray:
    """The first t at which each curve (last axis: t = 0, 1, ...) reaches `target`,
    interpolated linearly between the steps either side; inf where it never does."""
    hit = curve <= target
    first = np.argmax(hit, axis=-1)
    reached = hit.any(axis=-1)
    prev = np.take_along_axis(curve, np.maximum(first - 1, 0)[..., None], -1)[..., 0]
    now = np.take_along_axis(curve, first[..., None], -1)[..., 0]
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.where(first > 0, (prev - target) / (prev - now), 0.0)
    t = np.where(first > 0, first - 1 + frac, 0.0)
    return np.where(reached, t, np.inf)


@dataclass(frozen=True)
class Steps:
    steps: float  # S(B): fewest steps to the target, interpolated
    lr: float  # the learning rate that takes them
    batch_size: float

    @property
    def examples(self) -> float:
        """E(B) = B S(B)."""
        return self.batch_size * self.steps


def steps_to_target(problem: Problem, batch_size: float, target: float, max_steps: int,
                    bounds: tuple[float, float] | None = None) -> Steps:
    """S(B, target): the fewest (interpolated) steps over learning rates to bring the
    expected loss to `target`, and the learning rate that does it. ValueError when no
    learning rate reaches the target within `max_steps`."""
    if target <= problem.floor:
        raise ValueError(f"target: {target:g} is at or below the loss floor sigma2 = "
                         f"{problem.floor:g}; no run reaches it")
    lo, hi = bounds or problem.lr_bounds()
    lrs = _grid(lo, hi)
    horizon = 64
    while True:  # the shortest horizon some learning rate reaches the target within
        horizon = min(horizon, max_steps)
        times = crossing(expected_loss(lrs, batch_size, horizon, problem), target)
        i = int(np.argmin(times))
        if np.isfinite(times[i]) or horizon == max_steps:
            break
        horizon *= 4
    if not np.isfinite(times[i]):
        raise ValueError(f"steps_to_target: no learning rate reaches {target:g} within "
                         f"{max_steps} steps at B={batch_size:g}; raise max_steps")
    horizon = min(max_steps, math.ceil(times[i]) + 2)

    def f(log_lr: float) -> float:
        # Never reached within the horizon: the horizon, finite, so Brent's arithmetic holds.
        return min(float(crossing(expected_loss(math.exp(log_lr), batch_size, horizon, problem),
                                  target)), float(horizon))

    a, b = math.log(lrs[max(i - 1, 0)]), math.log(lrs[min(i + 1, lrs.size - 1)])
    res = optimize.minimize_scalar(f, bounds=(a, b), method="bounded", options={"xatol": 1e-9})
    x = float(res.x)
    if f(x) <= times[i]:
        return Steps(f(x), math.exp(x), float(batch_size))
    return Steps(float(times[i]), float(lrs[i]), float(batch_size))


def examples_to_target(problem: Problem, batch_size: float, target: float, max_steps: int) -> float:
    """E(B) = B S(B)."""
    return steps_to_target(problem, batch_size, target, max_steps).examples


def s_min(problem: Problem, target: float, max_steps: int) -> Steps:
    """S_min = S(inf): gradient descent on the population loss."""
    return steps_to_target(problem, math.inf, target, max_steps)


@dataclass(frozen=True)
class ExamplesLimit:
    examples: float  # E_min
    eta: float  # lr / B at the optimum: the learning rate per example as B -> 0


def e_min(problem: Problem, target: float) -> ExamplesLimit:
    """E_min = lim_{B -> 0} B S(B), with lr = eta B: the fewest examples over eta for
    the ODE dm/dtau = C m + c (module docstring) to bring lambda.m + sigma2 to
    `target`."""
    lam, kappa, s2 = problem.lam, problem.kappa, problem.sigma2
    gap = target - s2
    if gap <= 0:
        raise ValueError(f"target: {target:g} is at or below the loss floor sigma2 = {s2:g}")

    def tau(eta: float) -> float:
        c_mat = (np.diag(-4 * eta * lam + 4 * eta**2 * (kappa - 2) * lam**2)
                 + 4 * eta**2 * np.outer(lam, lam))
        w, v = np.linalg.eigh(c_mat)
        if w.max() >= 0:
            return math.inf
        m_star = -np.linalg.solve(c_mat, 4 * eta**2 * s2 * lam)
        if lam @ m_star >= gap:
            return math.inf  # the stationary loss is above the target
        coef = (lam @ v) * (v.T @ (problem.m_init - m_star))

        def excess(t: float) -> float:
            return float(coef @ np.exp(w * t)) + float(lam @ m_star) - gap

        if excess(0.0) <= 0:
            return 0.0
        # Bracket the first crossing on a geometric grid of tau, then refine.
        ts = np.concatenate([[0.0], np.geomspace(1e-3 / -w.min(), 50 / -w.max(), 400)])
        vals = np.array([excess(t) for t in ts])
        j = int(np.argmax(vals <= 0))
        if vals[j] > 0:
            return math.inf
        return float(optimize.brentq(excess, ts[j - 1], ts[j], xtol=1e-10, rtol=1e-13))

    hi = 1.0 / float((lam * kappa).max() + lam.sum())  # beyond, the noise term wins
    etas = _grid(hi * 1e-4, hi * 4)
    taus = np.array([tau(float(x)) for x in etas])
    i = int(np.argmin(taus))
    if not np.isfinite(taus[i]) or i in (0, etas.size - 1):
        raise ValueError(f"e_min: no learning rate per example reaches {target:g}, or the "
                         "best is on the search's edge")
    cap = 10 * float(taus[i])  # a finite stand-in for "never", for Brent's arithmetic
    res = optimize.minimize_scalar(lambda x: min(tau(math.exp(x)), cap),
                                   bounds=(math.log(etas[i - 1]), math.log(etas[i + 1])),
                                   method="bounded", options={"xatol": 1e-9})
    x = float(res.x)
    if tau(math.exp(x)) <= taus[i]:
        return ExamplesLimit(tau(math.exp(x)), math.exp(x))
    return ExamplesLimit(float(taus[i]), float(etas[i]))


@dataclass(frozen=True)
class Critical:
    s_min: float
    e_min: float
    b_crit: float  # E_min / S_min


def mccandlish(problem: Problem, target: float, max_steps: int) -> Critical:
    """S_min, E_min (the B -> 0 limit) and B_crit = E_min / S_min at this target."""
    s = s_min(problem, target, max_steps).steps
    e = e_min(problem, target).examples
    return Critical(s, e, e / s)


def critical_batch(problem: Problem, target: float, max_steps: int, b0: float,
                   overhead: float = 0.2, reference: Literal["smallest", "limit"] = "smallest",
                   b_max: float = 1e6) -> float:
    """Zhang et al.'s critical batch: the smallest real B >= b0 where the steps to
    `target` exceed linear scaling by `overhead`, i.e. E(B) = (1 + overhead) E_ref,
    E_ref = E(b0) ("smallest": linear scaling from the study's smallest batch) or E_min
    ("limit": from the B -> 0 limit). E(B) rises with B, so brentq in log B."""
    e_ref = (examples_to_target(problem, b0, target, max_steps) if reference == "smallest"
             else e_min(problem, target).examples)
    level = (1.0 + overhead) * e_ref

    def h(log_b: float) -> float:
        return examples_to_target(problem, math.exp(log_b), target, max_steps) / level - 1.0

    lo = math.log(b0)
    if h(lo) >= 0:
        return b0
    hi = lo
    while h(hi) < 0:
        hi += math.log(2.0)
        if hi > math.log(b_max):
            raise ValueError(f"critical_batch: E(B) stays under {level:g} up to B={b_max:g}")
    return math.exp(optimize.brentq(h, hi - math.log(2.0), hi, xtol=1e-10))


def first_over(batch_sizes: Sequence[float], steps: Sequence[float], overhead: float = 0.2
               ) -> float | None:
    """The discrete reading on a study's own batch sizes: the smallest B whose steps are
    at least (1 + overhead) S(B_0) B_0 / B, B_0 the smallest; None if none is."""
    order = np.argsort(batch_sizes)
    b = np.asarray(batch_sizes, float)[order]
    s = np.asarray(steps, float)[order]
    over = s * b >= (1.0 + overhead) * s[0] * b[0]
    return float(b[np.argmax(over)]) if over.any() else None


# --------------------------------------------------------------------------- fits


def fit_lr_noise(batch_sizes: ArrayLike, lrs: ArrayLike) -> tuple[float, float]:
    """(lr_max, B_noise) of lr(B) = lr_max / (1 + B_noise / B), least squares in log lr
    (scipy.optimize.least_squares over log lr_max and log B_noise)."""
    b = np.asarray(batch_sizes, float)
    y = np.log(np.asarray(lrs, float))

    def resid(p: FloatArray) -> FloatArray:
        return np.asarray(p[0] - np.log1p(np.exp(p[1]) / b) - y, dtype=np.float64)

    p0 = np.array([float(y.max()) + math.log(2.0), math.log(float(np.median(b)))])
    res = optimize.least_squares(resid, p0, xtol=1e-14, ftol=1e-14, gtol=1e-14)
    return math.exp(float(res.x[0])), math.exp(float(res.x[1]))


def fit_steps_hyperbola(batch_sizes: ArrayLike, steps: ArrayLike) -> tuple[float, float]:
    """(S_min, E_min) of S(B) = S_min + E_min / B (McCandlish's S_min (1 + B_noise / B)),
    least squares in log S over log S_min and log E_min."""
    b = np.asarray(batch_sizes, float)
    y = np.log(np.asarray(steps, float))

    def resid(p: FloatArray) -> FloatArray:
        return np.asarray(np.log(np.exp(p[0]) + np.exp(p[1]) / b) - y, dtype=np.float64)

    p0 = np.array([float(y.min()), float(np.log(np.asarray(steps) * b).min())])
    res = optimize.least_squares(resid, p0, xtol=1e-14, ftol=1e-14, gtol=1e-14)
    return math.exp(float(res.x[0])), math.exp(float(res.x[1]))


# --------------------------------------------------------------------------- Monte Carlo


@dataclass(frozen=True)
class Simulation:
    """Runs of `simulate`: axes (learning rate, seed)."""

    learning_rates: FloatArray
    batch_size: int
    final_loss: FloatArray  # (n_lr, n_seeds): sum lambda_k e_k^2 + sigma2 after the last step
    step_losses: FloatArray  # (n_lr, n_seeds, steps): the batch loss of step t+1, before it

    def windowed(self, every: int) -> FloatArray:
        """Means of the step losses over windows of `every` steps (value i: steps
        i*every+1 .. (i+1)*every), the last partial window dropped: (n_lr, n_seeds, n)."""
        n = self.step_losses.shape[-1] // every
        w = self.step_losses[..., :n * every]
        return np.asarray(w.reshape(*w.shape[:-1], n, every).mean(axis=-1), dtype=np.float64)


def _draw(rng: np.random.Generator, kind: str, var: FloatArray, shape: tuple[int, ...]) -> FloatArray:
    if kind == "gaussian":
        return rng.standard_normal(shape) * np.sqrt(var)
    half = np.sqrt(3.0 * var)  # U(-a, a) has variance a^2 / 3
    return rng.uniform(-1.0, 1.0, shape) * half


def simulate(problem: Problem, learning_rates: ArrayLike, batch_size: int, steps: int,
             seeds: int, seed: int = 0) -> Simulation:
    """Online minibatch SGD with real sampled batches, every learning rate and seed at
    once. Run j of every learning rate shares its initial error and batches (common
    random numbers); one `numpy.random.default_rng(seed)` draws them all. The initial
    error is Gaussian with variances m0 (only its second moment enters the expectation).
    A run that overflows carries inf/NaN losses from then on."""
    lrs = np.atleast_1d(np.asarray(learning_rates, float))
    rng = np.random.default_rng(seed)
    lam = problem.lam
    d = len(problem.lambdas)
    e = np.broadcast_to(rng.standard_normal((seeds, lam.size)) * np.sqrt(problem.m_init),
                        (lrs.size, seeds, lam.size)).copy()
    eta = lrs[:, None, None]
    losses = np.empty((lrs.size, seeds, steps))
    with np.errstate(over="ignore", invalid="ignore"):
        for t in range(steps):
            x = _draw(rng, problem.features, lam[:d], (seeds, batch_size, d))
            if problem.bias:
                x = np.concatenate([x, np.ones((seeds, batch_size, 1))], axis=-1)
            noise = _draw(rng, problem.noise, np.array(problem.sigma2), (seeds, batch_size))
            r = np.einsum("sbk,lsk->lsb", x, e) - noise  # prediction minus label
            losses[..., t] = (r**2).mean(axis=-1)
            e -= eta * (2.0 / batch_size) * np.einsum("sbk,lsb->lsk", x, r)
    with np.errstate(over="ignore", invalid="ignore"):
        final = (e**2) @ lam + problem.sigma2
    return Simulation(lrs, batch_size, final, losses)


# --------------------------------------------------------------------------- records


def records(sim: Simulation, every: int, first_number: int = 0,
            value: Literal["final", "train"] = "final") -> list[TrialRecord]:
    """One COMPLETE `TrialRecord` per (learning rate, seed) of `sim`, numbered from
    `first_number`: value the final population loss ("final") or the mean batch loss
    of the whole run ("train": Keras' loss of a one-epoch run), val_loss the final
    population loss, train_loss the mean batch loss, step_losses the windowed means of
    `every` steps. A run with a non-finite final loss is recorded as diverged."""
    windows = sim.windowed(every)
    out: list[TrialRecord] = []
    for i, lr in enumerate(sim.learning_rates):
        for s in range(sim.final_loss.shape[1]):
            final = float(sim.final_loss[i, s])
            train = float(sim.step_losses[i, s].mean())
            ok = math.isfinite(final) and math.isfinite(train)
            out.append(TrialRecord(
                number=first_number + len(out), state="COMPLETE" if ok else "FAIL",
                batch_size=sim.batch_size, learning_rate=float(lr), seed=s,
                value=(final if value == "final" else train) if ok else None,
                status="complete" if ok else "diverged",
                train_loss=train if ok else None, val_loss=final if ok else None,
                step_every=every,
                step_losses=tuple(float(v) if math.isfinite(v) else math.nan
                                  for v in windows[i, s])))
    return out


def simulate_study(problem: Problem, batch_sizes: Sequence[int], learning_rates: ArrayLike,
                   steps: int | Callable[[int], int], seeds: int, every: int = 10, seed: int = 0,
                   value: Literal["final", "train"] = "final") -> list[TrialRecord]:
    """A whole grid study: `simulate` at every batch size (seed `seed + i` for the i-th),
    as `records`. `steps` is a number, or a function of the batch size (an examples
    budget: `lambda b: examples // b`)."""
    out: list[TrialRecord] = []
    for i, b in enumerate(batch_sizes):
        n = steps(b) if callable(steps) else steps
        sim = simulate(problem, learning_rates, b, n, seeds, seed + i)
        out.extend(records(sim, every, len(out), value))
    return out


# --------------------------------------------------------------------------- problems

# The default problem: 16 Gaussian features with a power-law spectrum lambda_k = k^-2
# (condition number 256), label noise 0.1, unit initial error per coordinate; a budget of
# 8192 examples per run (steps = 8192 // B: whole batches at every B, like study's
# `budget = "examples"`), batch sizes 4..256. Why an examples budget: with a fixed
# number of steps T, the final loss of SGD on a quadratic balances decay
# exp(-4 lr lambda T) against a noise floor ~ lr sigma2 tr(H) / B, so lr*(B) grows
# only like log B; with a fixed number of examples N, lr = eta B makes both terms
# independent of B while lr is small (lr* ~ B exactly), and the stability limit
# lr < 1 / lambda_max bends it flat: McCandlish's shape.
DEFAULT = Problem(lambdas=tuple(float(k) ** -2 for k in range(1, 17)), sigma2=0.1,
                  m0=(1.0,) * 16, name="power-law k^-2, d=16, sigma2=0.1")
DEFAULT_EXAMPLES = 8192
DEFAULT_BATCH_SIZES = (4, 8, 16, 32, 64, 128, 256)
# The study-matched problem's budget (see `linear_study_problem`).
LINEAR_EXAMPLES = 1024


def default_steps(batch_size: int, examples: int = DEFAULT_EXAMPLES) -> int:
    """Steps of an examples budget at this batch size (whole batches)."""
    return examples // batch_size


def linear_study_problem(n_features: int = 10, seed: int = 0, n_train: int = 1000) -> Problem:
    """`study`'s data.kind = "linear" with data.standardize = true, model a Dense(1) with
    bias (hidden = []), Keras' default initializers, plain SGD, loss "mse".

    The set: x ~ U[0,1)^d, w ~ U[0,1)^d (drawn by RandomState(seed) *after* the
    n_train x d inputs, so w depends on n_train), y = x.w + u, u ~ U[0,1). Standardized
    (per-feature population mean 1/2, std 1/sqrt(12)), the inputs are uniform with
    lambda = 1, kappa = 9/5, zero mean; y = z.(w / sqrt(12)) + (sum(w) / 2 + 1/2) + (u - 1/2):
    w* = w / sqrt(12), the bias's target sum(w)/2 + 1/2, label noise uniform with
    sigma2 = 1/12. Initial weights: glorot_uniform, U(-a, a) with a = sqrt(6 / (d + 1)),
    variance 2 / (d + 1), independent of w*, so m0_k = 2 / (d + 1) + w*_k^2; the bias
    starts at 0, so its m0 is its target squared.

    Approximations (all O(1 / sqrt(n_train)) or smaller): `study` standardizes by the
    training rows' own mean and std, not the population's; the rows are a finite sample;
    rows are drawn without replacement within an epoch. Choose n_train so the budget never
    revisits a row (n_train >= examples), and a large validation set.
    """
    rng = np.random.RandomState(seed)
    rng.rand(n_train, n_features)  # the inputs come first in the stream
    w = rng.rand(n_features)
    w_star = w / math.sqrt(12.0)
    bias = float(w.sum()) / 2 + 0.5
    m0 = (*(2.0 / (n_features + 1) + w_star**2), bias**2)
    return Problem(lambdas=(1.0,) * n_features, sigma2=1.0 / 12.0,
                   m0=tuple(float(v) for v in m0), features="uniform", bias=True,
                   noise="uniform", name=f"study linear, d={n_features}, seed={seed}")


def _report(problem: Problem, batch_sizes: Sequence[int], examples: int,
            targets: Sequence[float], tol: float = 0.01) -> None:
    print(f"{problem.name}: floor sigma2 = {problem.floor:g}, initial loss "
          f"{problem.initial_loss:.4g}, {examples} examples per run")
    opt = []
    for b in batch_sizes:
        steps = examples // b
        o = lr_star(problem, b, steps)
        lo, hi = plateau(problem, b, steps, tol)
        opt.append(o.lr)
        print(f"  B={b:4d} steps={steps:5d} lr*={o.lr:.5g} L*={o.loss:.6g} "
              f"plateau {lo:.5g}..{hi:.5g} (x{hi / lo:.2f})")
    lr_max, b_noise = fit_lr_noise(batch_sizes, opt)
    print(f"  McCandlish fit of lr*(B): lr_max={lr_max:.5g} B_noise={b_noise:.4g}")
    for target in targets:
        max_steps = 20 * examples
        ss = [steps_to_target(problem, b, target, max_steps) for b in batch_sizes]
        c = mccandlish(problem, target, max_steps)
        fs, fe = fit_steps_hyperbola(batch_sizes, [s.steps for s in ss])
        z_small = critical_batch(problem, target, max_steps, batch_sizes[0])
        z_limit = critical_batch(problem, target, max_steps, batch_sizes[0], reference="limit")
        print(f"  target {target:.6g} ({target / problem.floor - 1:.0%} above the floor):")
        print("    S(B): " + ", ".join(f"{s.batch_size:g}:{s.steps:.2f}" for s in ss))
        print("    E(B): " + ", ".join(f"{s.batch_size:g}:{s.examples:.1f}" for s in ss))
        print(f"    S_min={c.s_min:.4f} E_min={c.e_min:.2f} B_crit={c.b_crit:.3f}; "
              f"hyperbola fit on these B: S_min={fs:.4f} E_min={fe:.2f} B_crit={fe / fs:.3f}")
        print(f"    20% critical batch: {z_small:.3f} (from B0={batch_sizes[0]}), "
              f"{z_limit:.3f} (from E_min); on these B: "
              f"{first_over(batch_sizes, [s.steps for s in ss])}")


if __name__ == "__main__":
    _report(DEFAULT, DEFAULT_BATCH_SIZES, DEFAULT_EXAMPLES, (0.11, 0.12))
    lin = linear_study_problem(n_train=1 << 18)
    _report(lin, DEFAULT_BATCH_SIZES, LINEAR_EXAMPLES, (lin.floor * 1.1, lin.floor * 1.2))
