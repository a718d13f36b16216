"""Which curve lr*(B) follows: three shapes fitted to the optima and compared.

Pure numpy. The shapes, each with two parameters, in natural logs (y = ln lr*, B the
batch size):

- power law: y = a + alpha ln B (the linear, square-root, constant and inverse rules
  are its special cases);
- saturating (McCandlish et al. 2018, "An empirical model of large-batch training",
  eq. 2.6): lr*(B) = lr_max / (1 + B_noise / B): linear in B well below B_noise, flat
  well above it;
- surge (Li et al. 2024, "Surge phenomenon in optimal learning rate and batch size
  scaling"): lr*(B) = lr_max / (0.5 (sqrt(B_noise / B) + sqrt(B / B_noise))): it grows
  as sqrt(B) below B_noise, peaks there at lr_max, and falls as 1/sqrt(B) above.

How they are compared. Each optimum comes with the standard deviation of ln lr* over
its seed bootstrap (`sigma`); every shape is fitted by weighted least squares in ln lr*
(for a fixed B_noise, or alpha, the other parameter has a closed form, so each fit is an
exact profile over a fine grid of the first). The fits are compared by QAIC (Burnham &
Anderson 2002, "Model selection and multimodel inference", sec. 6.2): chi^2 / c + 2k,
where c, the overdispersion, is the best shape's chi^2 per degree of freedom when that
exceeds 1. Why this criterion: all three shapes have two parameters, so any criterion
that counts parameters compares their chi^2; dividing by c keeps a study whose optima
sit further from every shape than their seed noise says (optima on a coarse grid, or a
shape none of the three has) from declaring a winner on misfit alone; and it needs no
parametric bootstrap, which at 2000 refits per study would be slow on 10,000-trial
studies. A difference of 2 or less (Burnham & Anderson's "substantial support" for
both) is "the data cannot tell them apart". A single-seed study has no sigma: every
optimum gets the same weight and c is estimated from the best fit's scatter.

Intervals on a shape's parameter are profile-likelihood intervals, {theta : chi^2(theta)
/ c <= min + 3.84} (the chi^2 quantile with one degree of freedom): they include the
seed noise (through sigma) and, through c, the misfit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from study.analysis import FloatArray

POWER = "power law"
SATURATING = "saturating (McCandlish)"
SURGE = "surge (Li et al.)"
SHAPES = (POWER, SATURATING, SURGE)

# B_noise is searched from this factor below the smallest batch size to this factor above
# the largest; a best value at either end is not identified (a bound).
B_NOISE_SPAN = 1000.0
GRID = 1201
ALPHA_RANGE = (-3.0, 3.0)
# chi^2 quantile (1 degree of freedom, 95%): the profile interval's threshold.
CHI2_95_1DF = 3.841458820694124
# QAIC differences up to this are "cannot tell apart" (Burnham & Anderson 2002, p. 70).
TIE = 2.0
# The smallest sigma of ln lr* an optimum is given (a bootstrap whose replicates all
# agree would otherwise weigh one point without limit).
SIGMA_FLOOR = 0.02


@dataclass(frozen=True)
class ShapeFit:
    """One shape's weighted least-squares fit to the optima."""

    shape: str  # POWER, SATURATING or SURGE
    main: float  # alpha (power law) or B_noise (the others)
    main_name: str  # "alpha" or "B_noise"
    low: float  # profile 95% interval on `main`; -inf/0 or inf: open at the search range's end
    high: float
    scale: float  # ln lr_max, or the power law's intercept a
    bound: str | None  # "low" | "high": the best `main` is at the search range's end
    chi2: float
    qaic: float
    weight: float  # Akaike weight among the shapes compared

    def predict(self, batch_size: float | FloatArray) -> FloatArray:
        """lr*(B) under this fit."""
        return np.exp(self.scale - _shape_term(self.shape, self.main,
                                               np.log(np.asarray(batch_size, float))))

    @property
    def lr_max(self) -> float:
        """The saturating plateau's or the surge's peak learning rate (exp of `scale`)."""
        return math.exp(self.scale)


@dataclass(frozen=True)
class Comparison:
    """The shapes fitted to one set of optima, best first."""

    fits: tuple[ShapeFit, ...]  # ascending QAIC
    batch_sizes: tuple[int, ...]
    overdispersion: float  # c: chi^2 per degree of freedom of the best fit, at least 1
    weighted: bool  # True: sigma from the seed bootstrap; False: equal weights

    @property
    def best(self) -> ShapeFit:
        return self.fits[0]

    def of(self, shape: str) -> ShapeFit:
        return next(f for f in self.fits if f.shape == shape)

    @property
    def ties(self) -> tuple[ShapeFit, ...]:
        """The other shapes within TIE of the best: the data cannot tell them from it."""
        return tuple(f for f in self.fits[1:] if f.qaic - self.best.qaic <= TIE)

    @property
    def alternatives(self) -> tuple[str, ...]:
        """The shapes the data cannot tell from the chosen one, best first: those within
        TIE of the best, and the best itself when the power law leads in its place."""
        chosen = self.chosen.shape
        return tuple(f.shape for f in (self.best, *self.ties) if f.shape != chosen)

    @property
    def chosen(self) -> ShapeFit:
        """The shape the headline leads with: the best, unless the power law is as good
        (within TIE), in which case the simpler, familiar statement leads."""
        if self.best.shape != POWER and any(f.shape == POWER for f in self.ties):
            return self.of(POWER)
        return self.best


def _shape_term(shape: str, main: float | FloatArray, log_b: FloatArray) -> FloatArray:
    """-(y - scale): what the shape subtracts from its scale at ln B (broadcasting `main`
    over rows against `log_b` over columns)."""
    m = np.asarray(main, dtype=np.float64)
    if m.ndim:
        m = m[:, None]
    if shape == POWER:
        return np.asarray(-m * log_b, dtype=np.float64)
    ratio = np.log(m) - log_b  # ln(B_noise / B)
    if shape == SATURATING:
        return np.asarray(np.logaddexp(0.0, ratio), dtype=np.float64)  # ln(1 + N/B)
    # ln(0.5 (sqrt(N/B) + sqrt(B/N))) = ln cosh(ratio / 2)
    half = np.abs(ratio) / 2
    return np.asarray(half + np.log1p(np.exp(-2 * half)) - math.log(2.0), dtype=np.float64)


def _profile(shape: str, grid: FloatArray, log_b: FloatArray, y: FloatArray,
             w: FloatArray) -> tuple[FloatArray, FloatArray]:
    """chi^2 and the best scale for every candidate `main` in `grid` (closed form)."""
    z = _shape_term(shape, grid, log_b)  # G x n
    scale = ((y[None, :] + z) * w[None, :]).sum(axis=1) / w.sum()
    r = y[None, :] + z - scale[:, None]
    return (r * r * w[None, :]).sum(axis=1), scale


def _grid(shape: str, batch_sizes: Sequence[int]) -> FloatArray:
    if shape == POWER:
        return np.linspace(*ALPHA_RANGE, GRID)
    return np.geomspace(min(batch_sizes) / B_NOISE_SPAN, max(batch_sizes) * B_NOISE_SPAN, GRID)


def _refine_min(shape: str, grid: FloatArray, chi2: FloatArray, log_b: FloatArray,
                y: FloatArray, w: FloatArray) -> tuple[float, float, float]:
    """The minimum of the profile, refined between the grid's neighbours (golden section
    on the same closed form): (main, chi2, scale)."""
    k = int(np.argmin(chi2))
    if k in (0, len(grid) - 1):
        c, s = _profile(shape, grid[k:k + 1], log_b, y, w)
        return float(grid[k]), float(c[0]), float(s[0])
    power = shape == POWER
    lo, hi = (grid[k - 1], grid[k + 1]) if power else (math.log(grid[k - 1]), math.log(grid[k + 1]))

    def f(t: float) -> float:
        c, _ = _profile(shape, np.array([t if power else math.exp(t)]), log_b, y, w)
        return float(c[0])

    g = (math.sqrt(5) - 1) / 2
    a, b = lo, hi
    for _ in range(40):
        c1, c2 = b - g * (b - a), a + g * (b - a)
        if f(c1) < f(c2):
            b = c2
        else:
            a = c1
    t = (a + b) / 2
    main = t if power else math.exp(t)
    c, s = _profile(shape, np.array([main]), log_b, y, w)
    return main, float(c[0]), float(s[0])


def _interval(grid: FloatArray, chi2: FloatArray, best: float, threshold: float,
              power: bool) -> tuple[float, float]:
    """The profile interval: the span of grid values under the threshold, interpolated at
    its crossings; open (-inf or 0, inf) where it reaches the search range's end."""
    inside = chi2 <= threshold
    idx = np.flatnonzero(inside)
    if idx.size == 0:
        return best, best
    i, j = int(idx[0]), int(idx[-1])
    t = grid if power else np.log(grid)

    def cross(a: int, b: int) -> float:
        # Linear interpolation of chi2 between grid points a (outside) and b (inside).
        f = (threshold - chi2[a]) / (chi2[b] - chi2[a]) if chi2[b] != chi2[a] else 0.5
        return float(t[a] + f * (t[b] - t[a]))

    lo = (-math.inf if power else 0.0) if i == 0 else cross(i - 1, i)
    hi = math.inf if j == len(grid) - 1 else cross(j + 1, j)
    if not power:
        lo = lo if lo == 0.0 else math.exp(lo)
        hi = hi if math.isinf(hi) else math.exp(hi)
    return min(lo, best), max(hi, best)


def compare(batch_sizes: Sequence[int], lrs: Sequence[float],
            sigmas: Sequence[float] | None, shapes: Sequence[str] = SHAPES) -> Comparison | None:
    """Fit every shape to the optima lr* (one per batch size) and compare them.

    `sigmas`: the standard deviation of each ln lr* (its seed bootstrap's), or None for
    equal weights (a single seed). None with fewer than three optima: two points fit any
    two-parameter shape exactly, so nothing can be compared.
    """
    n = len(batch_sizes)
    if n < 3:
        return None
    log_b = np.log(np.asarray(batch_sizes, dtype=np.float64))
    y = np.log(np.asarray(lrs, dtype=np.float64))
    weighted = sigmas is not None
    sig = np.maximum(np.asarray(sigmas, dtype=np.float64), SIGMA_FLOOR) if sigmas is not None \
        else np.ones(n)
    w = 1.0 / sig**2
    profiles = {}
    for shape in shapes:
        grid = _grid(shape, batch_sizes)
        chi2, _ = _profile(shape, grid, log_b, y, w)
        profiles[shape] = (grid, chi2, _refine_min(shape, grid, chi2, log_b, y, w))
    best_chi2 = min(p[2][1] for p in profiles.values())
    dof = n - 2
    c = best_chi2 / dof if dof > 0 else 1.0
    c = max(c, 1.0) if weighted else max(c, 1e-12)
    qaic = {s: p[2][1] / c + 4.0 for s, p in profiles.items()}
    base = min(qaic.values())
    raw = {s: math.exp(-(q - base) / 2) for s, q in qaic.items()}
    total = sum(raw.values())
    fits = []
    for shape, (grid, chi2, (main, chi2_min, scale)) in profiles.items():
        power = shape == POWER
        k = int(np.argmin(chi2))
        bound = None if power else "low" if k == 0 else "high" if k == len(grid) - 1 else None
        lo, hi = _interval(grid, chi2, main, chi2_min + CHI2_95_1DF * c, power)
        fits.append(ShapeFit(shape, main, "alpha" if power else "B_noise", lo, hi, scale, bound,
                             chi2_min, qaic[shape], raw[shape] / total))
    fits.sort(key=lambda f: (f.qaic, SHAPES.index(f.shape)))
    return Comparison(tuple(fits), tuple(int(b) for b in batch_sizes), c, weighted)


@dataclass(frozen=True)
class Slope:
    """d ln lr* / d ln B over some batch sizes, weighted least squares, with the same
    profile interval (the chi^2 scaled by the comparison's overdispersion)."""

    alpha: float
    low: float
    high: float
    batch_sizes: tuple[int, ...]


def slope(batch_sizes: Sequence[int], lrs: Sequence[float], sigmas: Sequence[float] | None,
          overdispersion: float = 1.0) -> Slope | None:
    """The power-law slope over the given optima; None with fewer than two. With two, the
    interval comes from the optima's sigmas alone (none without them: alpha +- inf)."""
    n = len(batch_sizes)
    if n < 2:
        return None
    x = np.log(np.asarray(batch_sizes, dtype=np.float64))
    y = np.log(np.asarray(lrs, dtype=np.float64))
    sig = np.maximum(np.asarray(sigmas, dtype=np.float64), SIGMA_FLOOR) if sigmas is not None \
        else None
    w = 1.0 / sig**2 if sig is not None else np.ones(n)
    xm = float((w * x).sum() / w.sum())
    ym = float((w * y).sum() / w.sum())
    sxx = float((w * (x - xm) ** 2).sum())
    alpha = float((w * (x - xm) * (y - ym)).sum() / sxx)
    if sig is None:
        if n < 3:
            return Slope(alpha, -math.inf, math.inf, tuple(batch_sizes))
        resid = y - ym - alpha * (x - xm)
        scale2 = float((resid**2).sum() / (n - 2))
    else:
        scale2 = max(overdispersion, 1.0)
    half = math.sqrt(CHI2_95_1DF * scale2 / sxx)
    return Slope(alpha, alpha - half, alpha + half, tuple(batch_sizes))
