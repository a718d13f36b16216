"""The article's question in numbers: how the best learning rate scales with batch size.

Pure functions over `TrialRecord`s (numpy only; no I/O, no Optuna, no scipy):

1. `optima`: for each batch size, the learning rate with the lowest mean objective over
   seeds, refined by a weighted smooth fit (quadratic or cubic in log(lr)) through it and
   up to two neighbours on each side, and the plateau of learning rates within
   `tolerance` of the fit's minimum; bootstrap intervals on both (seeds resampled within
   each cell, the fit redone). An optimum on the grid's edge is a bound, not an
   estimate, and says the grid should be widened; a tie is a plateau, not a point.
2. `compare_shapes`: the power law, McCandlish's saturation and Li et al.'s surge fitted
   to the refined optima and compared (`study.shapes`); `rule_slope` and `verdicts`: the
   slope of ln lr* on ln B where the chosen shape says the four rules in the literature
   apply, and the rules against it:
   - inverse, alpha = -1 (a fixed "noise temperature" lr * B);
   - constant, alpha = 0 (batch size and learning rate tuned independently);
   - square root, alpha = 1/2 (Krizhevsky 2014, "One weird trick ..."; Malladi et al.
     2022, "On the SDEs and scaling rules for adaptive gradient algorithms": Adam and
     RMSprop);
   - linear, alpha = 1 (Goyal et al. 2017, "Accurate, large minibatch SGD": multiply the
     batch size by k, multiply the learning rate by k; holds for SGD up to ~8k on
     ImageNet and breaks beyond).
3. `power_fit`: log lr*(B) = a + alpha log B over every interior optimum (the `alpha`
   rows), with two 95% intervals: the seed bootstrap (every replicate refits alpha) and
   the regression's Student-t interval (3 or more batch sizes). With fewer than three
   refined optima, no shape is compared and the rules are judged on this alpha with the
   union of the two intervals: the bootstrap alone is too narrow with few seeds, the
   regression alone ignores seed noise.
4. `mccandlish_fit`: McCandlish et al. 2018 ("An empirical model of large-batch
   training", eq. 2.6): lr*(B) = lr_max / (1 + B_noise / B), the saturating shape's fit.
5. `noise_scales`: the simple gradient noise scale B_simple = tr(Sigma) / |G|^2 the
   trainers record per trial (`noise_trace_sigma`, `noise_grad_sq`, `noise_scale`),
   pooled as McCandlish et al. advise: numerator and denominator averaged separately,
   then divided. It predicts the critical batch size, B_crit ~ B_noise.
6. `conclusion`: a short paragraph saying what the study found, from all of the above.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from study import shapes
from study.analysis import (
    BOOTSTRAP_RESAMPLES,
    BOOTSTRAP_SEED,
    FloatArray,
    Interval,
    TrialRecord,
    grid,
    percentile_interval,
    resample_indices,
    t975,
)
from study.records import NOISE_GRAD_SQ, NOISE_SCALE, NOISE_TRACE_SIGMA


@dataclass(frozen=True)
class Hypothesis:
    name: str  # "square-root"
    alpha: float
    source: str  # where the rule comes from


HYPOTHESES = (
    Hypothesis("inverse", -1.0, "lr * B constant"),
    Hypothesis("constant", 0.0, "lr independent of B"),
    Hypothesis("square-root", 0.5, "Krizhevsky 2014; Malladi et al. 2022 (Adam, RMSprop)"),
    Hypothesis("linear", 1.0, "Goyal et al. 2017 (SGD)"),
)

# The rule the literature expects for each optimizer (spec `train.optimizer`).
EXPECTED = {"sgd": "linear", "momentum": "linear", "adam": "square-root",
            "rmsprop": "square-root"}
OPTIMIZER_NAMES = {"sgd": "SGD", "momentum": "SGD with momentum", "adam": "Adam",
                   "rmsprop": "RMSprop"}



# --------------------------------------------------------------------------- optimum per batch size


@dataclass(frozen=True)
class Optimum:
    """The best learning rate at one batch size, and the plateau of good ones around it."""

    batch_size: int
    learning_rates: tuple[float, ...]  # the grid at this batch size, ascending
    means: tuple[float, ...]  # mean objective per learning rate; inf: a run diverged; nan: none
    runs: tuple[int, ...]  # runs with an outcome per learning rate (completed + diverged)
    grid_lr: float  # the grid learning rate with the lowest mean
    lr: float  # from the smooth fit: its minimum; the grid value when not refined
    low: float | None  # 95% bootstrap interval of `lr` (None: a single seed)
    high: float | None
    refined: bool
    edge: str | None  # "low" | "high": the best sits on that edge of the grid
    note: str  # how `lr` was found, in words
    # The smooth fit: mean objective = sum_i curve[i] (ln lr)^i over the learning
    # rates `window` (lowest, highest grid lr it used); None when not refined.
    curve: tuple[float, ...] | None = None
    window: tuple[float, float] | None = None
    # The learning rates whose expected objective is within `tolerance` of the best: the
    # fit's span (or, for a tie, the tied grid points'), each end with its 95% interval.
    plateau: tuple[float, float] | None = None
    plateau_low: tuple[float, float] | None = None
    plateau_high: tuple[float, float] | None = None
    open_ends: str = ""  # "low", "high" or "low high": the plateau reaches the fit's edge there
    tie: bool = False  # several grid points share the best mean exactly
    sigma: float | None = None  # standard deviation of ln lr* over the seed bootstrap

    @property
    def single_seed(self) -> bool:
        return self.low is None

    @property
    def best_runs(self) -> int:
        return self.runs[self.learning_rates.index(self.grid_lr)]


def _cell_runs(records: Iterable[TrialRecord]) -> dict[tuple[int, float], list[float]]:
    """Outcomes per cell: each completed run's objective, inf for each diverged run."""
    g = grid(records)
    return {k: [*c.values, *([math.inf] * c.diverged)] for k, c in g.cells.items()
            if c.values or c.diverged}


# The smooth fit: up to this many grid learning rates on each side of the best one, the
# points of that evaluation grid, and the smallest relative standard error a cell's
# mean is weighted with (cells whose seeds agree to the last digit).
FIT_HALF_WIDTH = 2
WINDOW_CAP = 3.0
FIT_POINTS = 241
REL_SE_FLOOR = 1e-4


@dataclass(frozen=True)
class _Smooth:
    """A smooth fit over one batch size's window, for the point estimate and replicates."""

    degree: int
    lo: int  # the window's first and last grid index
    hi: int
    coef: FloatArray  # rows: point estimate first, then replicates; ascending powers
    xs: FloatArray  # the evaluation grid in ln lr
    star: FloatArray  # per row: ln lr* (the fit's minimum over the window)
    ends: FloatArray  # per row: (ln low end, ln high end) of the plateau
    open_low: FloatArray  # per row: the plateau reaches the window's low edge
    open_high: FloatArray


def _window(means: FloatArray, k: int) -> tuple[int, int]:
    """The grid indices the fit uses around the best, k: up to FIT_HALF_WIDTH on each
    side, stopping before a cell with no finite mean (a diverged run, or none) and, past
    the nearest neighbour, before one whose mean is above WINDOW_CAP times the best (a
    low-degree polynomial through a cliff says nothing about the valley)."""
    def take(j: int, taken: int) -> bool:
        return (0 <= j < len(means) and taken < FIT_HALF_WIDTH and math.isfinite(means[j])
                and (taken == 0 or means[j] <= WINDOW_CAP * means[k]))

    lo = k
    while take(lo - 1, k - lo):
        lo -= 1
    hi = k
    while take(hi + 1, hi - k):
        hi += 1
    return lo, hi


def _smooth(log_lrs: FloatArray, rows: FloatArray, weights: FloatArray, lo: int, hi: int,
            tolerance: float) -> _Smooth:
    """Weighted least squares of the mean on a polynomial in ln lr over the window lo..hi
    (degree 2 for 3-4 points, 3 for 5), for every row of `rows` (R x L means) at once; its
    minimum over the window and the plateau within a factor (1 + tolerance) of it."""
    x = log_lrs[lo:hi + 1]
    n = len(x)
    degree = 2 if n < 5 else 3
    v = np.vander(x, degree + 1, increasing=True)
    w = weights[lo:hi + 1]
    # Coefficients are linear in the data: one solve for every replicate.
    solve = np.linalg.solve(v.T @ (v * w[:, None]), (v * w[:, None]).T)
    coef = rows[:, lo:hi + 1] @ solve.T
    xs = np.linspace(x[0], x[-1], FIT_POINTS)
    f = coef @ np.vander(xs, degree + 1, increasing=True).T  # R x G
    a = np.argmin(f, axis=1)
    r = np.arange(f.shape[0])
    fmin = f[r, a]
    # The minimum between evaluation points: the vertex of the parabola through the best
    # one and its neighbours (exact to O(h^3) on a smooth curve).
    am, ap = np.clip(a - 1, 0, FIT_POINTS - 1), np.clip(a + 1, 0, FIT_POINTS - 1)
    f0, f1, f2 = f[r, am], fmin, f[r, ap]
    den = f0 - 2 * f1 + f2
    h = xs[1] - xs[0]
    inner = (a > 0) & (a < FIT_POINTS - 1) & (den > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        shift = np.where(inner, 0.5 * h * (f0 - f2) / den, 0.0)
        fmin = np.where(inner, f1 - (f0 - f2) ** 2 / (8 * den), fmin)
    x_star = xs[a] + shift
    thresh = fmin * (1.0 + tolerance)
    above = f > thresh[:, None]
    j = np.arange(FIT_POINTS)[None, :]
    left = np.where(above & (j < a[:, None]), j, -1).max(axis=1)
    right = np.where(above & (j > a[:, None]), j, FIT_POINTS).min(axis=1)

    def cross(i_out: FloatArray, i_in: FloatArray) -> FloatArray:
        # Bisection on the polynomial between an evaluation point above the threshold
        # and its neighbour below it: exact to ~1e-9 in ln(lr), however narrow the plateau.
        out, inn = xs[i_out].copy(), xs[i_in].copy()
        for _ in range(34):
            mid = (out + inn) / 2
            val = (coef * mid[:, None] ** np.arange(degree + 1)[None, :]).sum(axis=1)
            up = val > thresh
            out, inn = np.where(up, mid, out), np.where(up, inn, mid)
        return np.asarray((out + inn) / 2, dtype=np.float64)

    open_low = left < 0
    open_high = right >= FIT_POINTS
    low_end = np.where(open_low, xs[0], cross(np.maximum(left, 0), np.maximum(left, 0) + 1))
    high_end = np.where(open_high, xs[-1],
                        cross(np.minimum(right, FIT_POINTS - 1), np.minimum(right, FIT_POINTS - 1)
                              - 1))
    bad = ~np.isfinite(fmin)
    star = np.where(bad, np.nan, x_star)
    ends = np.stack([np.where(bad, np.nan, low_end), np.where(bad, np.nan, high_end)], axis=1)
    return _Smooth(degree, lo, hi, coef, xs, star, ends, open_low, open_high)


def _weights(runs: Sequence[Sequence[float]], means: FloatArray) -> FloatArray:
    """1 / var(mean) per cell, from its seeds; with a single seed, 1 / mean^2 (a relative
    error, as the spread of a loss over seeds is, roughly, proportional to it)."""
    out = np.ones(len(runs))
    if max(len(r) for r in runs) < 2:
        with np.errstate(divide="ignore"):
            return np.where(np.isfinite(means) & (means > 0), 1.0 / means**2, 0.0)
    for j, r in enumerate(runs):
        if not math.isfinite(means[j]) or len(r) < 2 or means[j] <= 0:
            out[j] = 0.0 if not math.isfinite(means[j]) else out[j]
            continue
        se = float(np.std(r, ddof=1)) / math.sqrt(len(r))
        out[j] = 1.0 / max(se, REL_SE_FLOOR * means[j]) ** 2
    finite = out[out > 0]
    # A cell with a single run among repeated ones: the median weight of the others.
    single = [j for j, r in enumerate(runs) if len(r) < 2 and math.isfinite(means[j])]
    if single and finite.size:
        out[single] = float(np.median(finite))
    return out


@dataclass(frozen=True, eq=False)
class Optima:
    """Every batch size's optimum, and the bootstrap replicates behind their intervals."""

    points: tuple[Optimum, ...]  # ascending batch size
    replicates: FloatArray  # resamples x batch sizes: ln lr* of each bootstrap replicate
    resamples: int
    tolerance: float = 0.01


def _ci(values: FloatArray) -> tuple[float, float] | None:
    b = percentile_interval(values)
    return None if b is None else (math.exp(b[0]), math.exp(b[1]))


def optima(records: Iterable[TrialRecord], resamples: int = BOOTSTRAP_RESAMPLES,
           seed: int = BOOTSTRAP_SEED, tolerance: float = 0.01) -> Optima:
    """The optimal learning rate of every batch size with a finite-loss cell, and the
    plateau of learning rates within `tolerance` (relative) of the best expected objective.

    The best grid learning rate (lowest mean over seeds; a cell where any run diverged
    never is) and up to FIT_HALF_WIDTH neighbours on each side, stopping at a diverged
    cell, are fitted by weighted least squares: the mean against a polynomial in ln(lr),
    quadratic for 3-4 points and cubic for 5 (the curve may then lean to one side, as a
    loss against learning rate does: it rises slowly toward small rates and steeply
    toward divergence). Each cell's weight is 1 / var(mean) from its seeds, so every run
    counts. lr* is the fit's minimum over the window; the plateau is the span around it
    where the fit is within a factor (1 + tolerance) of that minimum.

    Bootstrap: each replicate resamples, with replacement, the runs of every cell (its
    seeds; a diverged run counts as infinitely bad) and refits the same window with the
    same weights. Replicate r uses draw r of every cell, so the replicates of different
    batch sizes belong together (for the fits across batch sizes).
    """
    cells = _cell_runs(records)
    batch_sizes = sorted({b for b, _ in cells})
    points: list[Optimum] = []
    columns: list[FloatArray] = []
    for b in batch_sizes:
        lrs = sorted(lr for bb, lr in cells if bb == b)
        runs = [cells[(b, lr)] for lr in lrs]
        means = np.array([math.inf if math.inf in r else float(np.mean(r)) for r in runs])
        if not np.isfinite(means).any():
            continue  # every learning rate diverged: no optimum at this batch size
        log_lrs = np.log(np.asarray(lrs, dtype=np.float64))
        k = int(np.argmin(means))
        grid_lr = lrs[k]
        # Replicates: resampled means of every cell (R x L).
        boot = np.empty((resamples, len(lrs)))
        for j, r in enumerate(runs):
            v = np.asarray(r, dtype=np.float64)
            with np.errstate(invalid="ignore"):
                boot[:, j] = v[resample_indices(len(v), resamples, seed + j)].mean(axis=1)
        multi = max(len(r) for r in runs) > 1
        edge = "low" if k == 0 else "high" if k == len(lrs) - 1 else None
        tied = [j for j, m in enumerate(means) if m == means[k]]
        lo, hi = _window(means, k)
        fit: _Smooth | None = None
        if len(tied) > 1:
            note = ("a tie: " + ", ".join(f"lr={lrs[j]:g}" for j in tied) + " share the best "
                    "mean exactly; a plateau, not a point")
            edge = None if tied[0] > 0 and tied[-1] < len(lrs) - 1 else edge
        elif len(lrs) == 1:
            note = ("only one learning rate was run at this batch size: a bound at best; run "
                    "a grid of learning rates")
        elif edge is not None:
            side = "smallest" if edge == "low" else "largest"
            way = "down" if edge == "low" else "up"
            note = (f"the grid's {side} learning rate is best: a bound, not an estimate; "
                    f"widen the grid {way}ward")
            inner = k + 1 if edge == "low" else k - 1
            if 0 <= inner < len(lrs) and means[inner] == math.inf:
                note += f" (and refine it toward lr={lrs[inner]:g}, where a run diverged)"
        elif lo == k or hi == k:
            note = "not refined: a neighbouring learning rate diverged"
        else:
            fit = _smooth(log_lrs, np.vstack([means[None, :], boot]), _weights(runs, means),
                          lo, hi, tolerance)
            shape = "quadratic" if fit.degree == 2 else "cubic"
            note = (f"refined: a weighted {shape} in log(lr) through {hi - lo + 1} learning "
                    "rates around the best")
            # A fit whose minimum runs to its window's edge is not describing a minimum
            # near the best grid point (a second valley, a kink): keep the grid value.
            span = (fit.xs[-1] - fit.xs[0]) / (FIT_POINTS - 1)
            if not fit.xs[0] + span < fit.star[0] < fit.xs[-1] - span:
                note = (f"not refined: the {shape} through {hi - lo + 1} learning rates has no "
                        "minimum inside them")
                fit = None
        plateau: tuple[float, float] | None
        if fit is not None:
            star = float(math.exp(fit.star[0]))
            reps = fit.star[1:]
            plateau = (math.exp(fit.ends[0, 0]), math.exp(fit.ends[0, 1]))
            ends = ("low " if fit.open_low[0] else "") + ("high" if fit.open_high[0] else "")
            p_low = _ci(fit.ends[1:, 0]) if multi else None
            p_high = _ci(fit.ends[1:, 1]) if multi else None
            curve = tuple(float(c) for c in fit.coef[0])
            window = (lrs[lo], lrs[hi])
        else:
            star = grid_lr if len(tied) < 2 else math.exp(float(np.mean(log_lrs[tied])))
            reps = np.where(np.isfinite(boot).any(axis=1),
                            log_lrs[np.argmin(np.where(np.isnan(boot), np.inf, boot), axis=1)],
                            np.nan)
            plateau = (lrs[tied[0]], lrs[tied[-1]]) if len(tied) > 1 else None
            ends, p_low, p_high, curve, window = "", None, None, None, None
        bounds = _ci(reps) if multi else None
        sigma = float(np.nanstd(reps)) if multi and np.isfinite(reps).sum() > 1 else None
        points.append(Optimum(
            b, tuple(lrs), tuple(float(x) for x in means), tuple(len(r) for r in runs),
            grid_lr, star, None if bounds is None else bounds[0],
            None if bounds is None else bounds[1], fit is not None, edge, note, curve, window,
            plateau, p_low, p_high, ends.strip(), len(tied) > 1, sigma))
        columns.append(np.asarray(reps, dtype=np.float64))
    replicates = np.stack(columns, axis=1) if columns else np.empty((resamples, 0))
    return Optima(tuple(points), replicates, resamples, tolerance)


# --------------------------------------------------------------------------- power law


@dataclass(frozen=True)
class PowerFit:
    """log lr*(B) = intercept + alpha log B (natural logs), over `batch_sizes`."""

    alpha: float
    intercept: float
    batch_sizes: tuple[int, ...]  # the optima the fit used
    excluded: tuple[int, ...]  # batch sizes left out: their optimum is on the grid's edge
    boot: tuple[float, float] | None  # seed bootstrap 95% interval on alpha
    regression: tuple[float, float] | None  # Student-t 95% interval of the OLS slope
    low: float | None  # the reported interval: the union of the two above
    high: float | None

    @property
    def interval_words(self) -> str:
        """Which interval `low`..`high` is, in words."""
        if self.boot is not None and self.regression is not None:
            return "the union of the seed bootstrap and the regression t-interval"
        if self.boot is not None:
            return "the seed bootstrap (two batch sizes: no regression interval)"
        if self.regression is not None:
            return "the regression t-interval (single seed: no bootstrap)"
        return "none (two batch sizes and a single seed)"

    def predict(self, batch_size: float) -> float:
        return math.exp(self.intercept + self.alpha * math.log(batch_size))


def _slopes(x: FloatArray, y: FloatArray) -> FloatArray:
    """OLS slope of each row of y (R x n) on x (n); NaN entries are left out of that row."""
    mask = ~np.isnan(y)
    cnt = mask.sum(axis=1)
    xs = np.where(mask, x[None, :], 0.0)
    ys = np.where(mask, y, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        xm = xs.sum(axis=1) / cnt
        ym = ys.sum(axis=1) / cnt
        dx = np.where(mask, x[None, :] - xm[:, None], 0.0)
        dy = np.where(mask, y - ym[:, None], 0.0)
        slope = (dx * dy).sum(axis=1) / (dx * dx).sum(axis=1)
    return np.asarray(np.where(cnt >= 2, slope, np.nan), dtype=np.float64)


def power_fit(o: Optima) -> PowerFit | None:
    """Fit log lr* = a + alpha log B; None with fewer than two batch sizes.

    Optima on the grid's edge are bounds: they are left out when three or more interior
    optima remain (else all are used, and the conclusion says alpha is biased).
    """
    points = [p for p in o.points if not p.tie]  # a tie is a plateau, not a point
    interior = [p for p in points if p.edge is None]
    use = interior if len(interior) >= 3 else points
    if len(use) < 2:
        return None
    cols = [points.index(p) for p in use]
    x = np.log(np.array([p.batch_size for p in use], dtype=np.float64))
    y = np.log(np.array([p.lr for p in use]))
    n = len(use)
    xm, ym = x.mean(), y.mean()
    sxx = float(((x - xm) ** 2).sum())
    alpha = float(((x - xm) * (y - ym)).sum() / sxx)
    intercept = float(ym - alpha * xm)
    regression = None
    if n >= 3:
        sse = float(((y - intercept - alpha * x) ** 2).sum())
        half = t975(n - 2) * math.sqrt(sse / (n - 2) / sxx)
        regression = (alpha - half, alpha + half)
    boot = None
    if any(not p.single_seed for p in use):
        boot = percentile_interval(_slopes(x, o.replicates[:, cols]))
    ends = [iv for iv in (boot, regression) if iv is not None]
    low = min(iv[0] for iv in ends) if ends else None
    high = max(iv[1] for iv in ends) if ends else None
    excluded = tuple(p.batch_size for p in points if p not in use)
    return PowerFit(alpha, intercept, tuple(p.batch_size for p in use), excluded, boot,
                    regression, low, high)


@dataclass(frozen=True)
class Verdict:
    hypothesis: Hypothesis
    consistent: bool | None  # None: no interval, no verdict

    @property
    def word(self) -> str:
        return {True: "consistent", False: "rejected", None: "undecided"}[self.consistent]


def verdicts(slope: shapes.Slope | None, hypotheses: Sequence[Hypothesis] = HYPOTHESES
             ) -> tuple[Verdict, ...]:
    """Each rule is consistent when the 95% interval on the slope contains its exponent."""
    out = []
    for h in hypotheses:
        if slope is None or not (math.isfinite(slope.low) and math.isfinite(slope.high)):
            out.append(Verdict(h, None))
        else:
            out.append(Verdict(h, slope.low <= h.alpha <= slope.high))
    return tuple(out)


# --------------------------------------------------------------------------- shapes


def fitted(o: Optima) -> list[Optimum]:
    """The optima the shapes are fitted to: refined ones, neither on the grid's edge (a
    bound) nor a tie (a plateau)."""
    return [p for p in o.points if p.edge is None and not p.tie and p.refined]


def _sigmas(pts: Sequence[Optimum]) -> list[float] | None:
    """Each optimum's bootstrap sigma of ln lr*; None (equal weights) when any has none."""
    sig = [p.sigma for p in pts]
    return None if any(v is None for v in sig) else [float(v) for v in sig if v is not None]


def compare_shapes(o: Optima) -> shapes.Comparison | None:
    """The three shapes fitted to the refined optima, weighted by their seed bootstrap."""
    pts = fitted(o)
    return shapes.compare([p.batch_size for p in pts], [p.lr for p in pts], _sigmas(pts))


def rule_range(c: shapes.Comparison) -> tuple[float, float]:
    """Where the four rules (constant exponents) mean something under the chosen shape:
    everywhere for a power law, below B_noise for the saturating form (where it is not yet
    flat), below the peak for a surge (where it rises)."""
    f = c.chosen
    if f.shape == shapes.POWER:
        return 0.0, math.inf
    return 0.0, f.main


def rule_slope(o: Optima, c: shapes.Comparison | None, fit: PowerFit | None
               ) -> shapes.Slope | None:
    """The slope the rules are judged on: over the optima in `rule_range`, scaled by the
    comparison's overdispersion. Without a comparison (fewer than three refined optima),
    the power law over every optimum, its interval the union of the seed bootstrap's and
    the regression's (see PowerFit), which stays honest when two seeds make the bootstrap
    too narrow."""
    if c is None:
        if fit is None:
            return None
        return shapes.Slope(fit.alpha, -math.inf if fit.low is None else fit.low,
                            math.inf if fit.high is None else fit.high, fit.batch_sizes)
    lo, hi = rule_range(c)
    pts = [p for p in fitted(o) if lo < p.batch_size <= hi]
    return shapes.slope([p.batch_size for p in pts], [p.lr for p in pts], _sigmas(pts),
                        c.overdispersion)


@dataclass(frozen=True)
class McCandlishFit:
    """lr*(B) = lr_max / (1 + B_noise / B): the saturating shape's fit."""

    lr_max: float
    b_noise: float
    interval: tuple[float, float] | None  # profile 95% interval (0, inf: open ends)
    bound: str | None  # "low" | "high": B_noise hit the search range's end (not identified)
    search: tuple[float, float]  # the B_noise range searched
    batch_sizes: tuple[int, ...]

    def predict(self, batch_size: float) -> float:
        return self.lr_max / (1.0 + self.b_noise / batch_size)


def mccandlish_fit(c: shapes.Comparison | None) -> McCandlishFit | None:
    if c is None:
        return None
    f = c.of(shapes.SATURATING)
    return McCandlishFit(f.lr_max, f.main, (f.low, f.high), f.bound,
                         (min(c.batch_sizes) / shapes.B_NOISE_SPAN,
                          max(c.batch_sizes) * shapes.B_NOISE_SPAN), c.batch_sizes)


# --------------------------------------------------------------------------- noise scale


@dataclass(frozen=True)
class NoiseCell:
    batch_size: int
    learning_rate: float
    interval: Interval  # B_simple: pooled estimate and 95% bootstrap interval over seeds
    pooled: bool  # True: tr(Sigma) and |G|^2 averaged before dividing; False: mean of ratios


def _ratio(trace: FloatArray, grad: FloatArray) -> FloatArray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(grad > 0, trace / grad, np.inf)


def b_simple(records: Sequence[TrialRecord], resamples: int = BOOTSTRAP_RESAMPLES,
             seed: int = BOOTSTRAP_SEED) -> tuple[Interval, bool] | None:
    """B_simple over some trials, with a bootstrap interval over them; None without data.

    When the trials recorded tr(Sigma) and |G|^2, those are averaged separately and then
    divided (McCandlish et al. 2018, App. A.1: the ratio of unbiased estimates is
    biased); otherwise the trials' own `noise_scale` values are averaged. An estimate of
    |G|^2 <= 0 (gradient buried in noise) makes B_simple unbounded: inf.
    """
    pairs = [(r.extras[NOISE_TRACE_SIGMA], r.extras[NOISE_GRAD_SQ]) for r in records
             if math.isfinite(r.extras.get(NOISE_TRACE_SIGMA, math.nan))
             and math.isfinite(r.extras.get(NOISE_GRAD_SQ, math.nan))]
    if pairs:
        tr = np.array([p[0] for p in pairs])
        gs = np.array([p[1] for p in pairs])
        value = float(_ratio(np.array(tr.mean()), np.array(gs.mean())))
        if len(pairs) < 2:
            return Interval(value, None, None, 1, "bootstrap"), True
        idx = resample_indices(len(pairs), resamples, seed)
        reps = _ratio(tr[idx].mean(axis=1), gs[idx].mean(axis=1))
        b = percentile_interval(reps)
        assert b is not None
        return Interval(value, b[0], b[1], len(pairs), "bootstrap"), True
    ratios = [r.extras[NOISE_SCALE] for r in records
              if math.isfinite(r.extras.get(NOISE_SCALE, math.nan))]
    if not ratios:
        return None
    from study.analysis import bootstrap_interval

    interval = bootstrap_interval(ratios, resamples, seed)
    assert interval is not None
    return interval, False


def noise_cells(records: Iterable[TrialRecord]) -> tuple[NoiseCell, ...]:
    """B_simple per (batch size, learning rate) cell, over its completed runs."""
    by_cell: dict[tuple[int, float], list[TrialRecord]] = defaultdict(list)
    for r in records:
        if r.status == "complete" and r.batch_size is not None and r.learning_rate is not None:
            by_cell[(r.batch_size, r.learning_rate)].append(r)
    out = []
    for (b, lr), rs in sorted(by_cell.items()):
        est = b_simple(rs)
        if est is not None:
            out.append(NoiseCell(b, lr, est[0], est[1]))
    return tuple(out)


@dataclass(frozen=True)
class NoiseSummary:
    """The measured noise scale beside the observed scaling."""

    cells: tuple[NoiseCell, ...]  # every cell that recorded it
    at_optimum: tuple[NoiseCell, ...]  # per batch size, at its best grid learning rate
    critical: Interval  # pooled over the at-optimum trials: the predicted critical batch size
    pooled: bool


def noise_summary(records: Sequence[TrialRecord], o: Optima) -> NoiseSummary | None:
    """None when no trial recorded a noise scale (the spec did not ask for it)."""
    cells = noise_cells(records)
    if not cells:
        return None
    best = {p.batch_size: p.grid_lr for p in o.points}
    at_opt = tuple(c for c in cells if best.get(c.batch_size) == c.learning_rate)
    chosen = [r for r in records if r.status == "complete" and r.batch_size in best
              and best[r.batch_size] == r.learning_rate]
    est = b_simple(chosen) if at_opt else None
    if est is None:  # no optimum cell measured it: pool every cell that did
        est = b_simple([r for r in records if r.status == "complete"])
    assert est is not None
    return NoiseSummary(cells, at_opt, est[0], est[1])


# --------------------------------------------------------------------------- the whole answer


@dataclass(frozen=True, eq=False)
class Scaling:
    """Everything the report, the query and the conclusion say about scaling."""

    objective: str
    optima: Optima
    fit: PowerFit | None  # the power law over every interior optimum (the `alpha` rows)
    verdicts: tuple[Verdict, ...]  # the four rules, on `rules`
    mccandlish: McCandlishFit | None
    noise: NoiseSummary | None
    seeds: int  # distinct seeds with a completed run
    why: str | None  # why there is no fit, when there is none
    shape_fits: shapes.Comparison | None = None  # None: fewer than three refined optima
    rules: shapes.Slope | None = None  # the slope the rules are judged on


def scaling(records: Sequence[TrialRecord], objective: str = "objective",
            resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED,
            tolerance: float = 0.01) -> Scaling:
    records = list(records)
    o = optima(records, resamples, seed, tolerance)
    fit = power_fit(o)
    why = None
    if fit is None:
        why = (f"a scaling fit needs optima at two or more batch sizes; this study has "
               f"{len(o.points)}")
    seeds = len({r.seed for r in records if r.status == "complete" and r.seed is not None})
    c = compare_shapes(o)
    rules = rule_slope(o, c, fit)
    return Scaling(objective, o, fit, verdicts(rules), mccandlish_fit(c),
                   noise_summary(records, o), seeds, why, c, rules)


# --------------------------------------------------------------------------- in words


# Short names of the objectives (train.objective), for labels and sentences.
OBJECTIVE_LABELS = {"train_loss": "final training loss", "val_loss": "validation loss",
                    "val_error": "validation error"}


def fmt(x: float, digits: int = 3) -> str:
    return f"{x:.{digits}g}"


def _join(words: Sequence[str]) -> str:
    if len(words) <= 1:
        return "".join(words)
    return ", ".join(words[:-1]) + " and " + words[-1]


def _interval_words(low: float, high: float, digits: int = 3) -> str:
    lo = "unbounded below" if low <= 0 or not math.isfinite(low) else fmt(low, digits)
    hi = "unbounded above" if not math.isfinite(high) else fmt(high, digits)
    return f"[{lo}, {hi}]"


def _trend(alpha: float) -> str:
    return "grows" if alpha >= 0.005 else "falls" if alpha <= -0.005 else "stays flat"


def _power_words(r: shapes.Slope) -> str:
    """"B^0.48 [0.31, 0.61]", or "B^0.48 (no interval)"."""
    ci = f" [{r.low:.2f}, {r.high:.2f}]" if math.isfinite(r.low) and math.isfinite(r.high) \
        else " (no interval)"
    return f"B^{r.alpha:.2f}{ci}"


def _rules_text(s: Scaling, optimizer: str | None, who: str) -> str:
    """"consistent with the linear rule; rejects the inverse, constant and square-root
    rules (the linear rule is the one expected for SGD)", or why there is no verdict."""
    ok = [v.hypothesis.name for v in s.verdicts if v.consistent]
    bad = [v.hypothesis.name for v in s.verdicts if v.consistent is False]
    if not ok and not bad:
        return "no interval on the slope, so no rule is accepted or rejected"
    text = (f"consistent with the {_join(ok)} rule{'s' if len(ok) > 1 else ''}" if ok
            else "consistent with none of the four rules")
    if bad:
        text += f"; rejects the {_join(bad)} rule{'s' if len(bad) > 1 else ''}"
    expected = EXPECTED.get(optimizer or "")
    if expected is not None and who:
        text += (f" (the {expected} rule is the one expected for {who})" if expected in ok
                 else f" (the rule expected for {who}, {expected}, is rejected)")
    return text


def _shape_text(s: Scaling) -> str:
    """The chosen shape in numbers: "Best LR saturates: lr* = 0.0036 / (1 + B_noise/B),
    B_noise = 66.3 [64, 68.6]"."""
    c = s.shape_fits
    assert c is not None
    f = c.chosen
    ci = _interval_words(f.low, f.high)
    if f.shape == shapes.POWER:
        trend = _trend(f.main)
        lo = f"{f.low:.2f}" if math.isfinite(f.low) else "-inf"
        hi = f"{f.high:.2f}" if math.isfinite(f.high) else "inf"
        return f"Best LR {trend} as a power law, B^{f.main:.2f} [{lo}, {hi}]"
    if f.bound is not None:
        where = "above the largest" if f.bound == "high" else "below the smallest"
        return (f"Best LR follows the {f.shape} shape with B_noise {where} batch size "
                f"searched ({fmt(f.main)}): not identified")
    if f.shape == shapes.SATURATING:
        return (f"Best LR saturates: lr* = {fmt(f.lr_max)} / (1 + B_noise/B), "
                f"B_noise = {fmt(f.main)} {ci}")
    return (f"Best LR surges: it rises as sqrt(B) to lr_max = {fmt(f.lr_max)} at "
            f"B_noise = {fmt(f.main)} {ci}, then falls as 1/sqrt(B)")


def headline(s: Scaling, optimizer: str | None) -> str:
    """The study's answer in one sentence: the best-supported shape of lr*(B) with its
    parameter and interval, how it compares with the other shapes, and the four rules'
    verdicts where they mean something. "Best LR saturates: lr* = 0.0036 / (1 + B_noise/B),
    B_noise = 66.3 [64, 68.6] (Adam, 16 seeds; saturating (McCandlish) best supported,
    QAIC weight 0.97). Below B_noise, lr* grows as B^0.93 [0.7, 1.2]: consistent with the
    linear rule; ..." """
    who = OPTIMIZER_NAMES.get(optimizer or "", optimizer or "")
    seeds = "1 seed" if s.seeds == 1 else f"{s.seeds} seeds"
    # The best learning rate is the best by the study's objective: named unless it is the
    # article's (the final training loss).
    by = f"; by {OBJECTIVE_LABELS[s.objective]}" \
        if s.objective in OBJECTIVE_LABELS and s.objective != "train_loss" else ""
    if s.fit is None:
        context = f"({who}, {seeds}{by})" if who else f"({seeds}{by})"
        return f"No scaling law {context}: {s.why}."
    c = s.shape_fits
    if c is None:
        # Fewer than three refined optima: no shape can be told from another; the slope.
        context = f"({who}, {seeds}{by}; too few refined optima to compare shapes)" if who \
            else f"({seeds}{by}; too few refined optima to compare shapes)"
        r = s.rules
        if r is None:
            return f"No scaling law {context}: fewer than two refined optima."
        return (f"Best LR {_trend(r.alpha)} as {_power_words(r)} {context}: "
                f"{_rules_text(s, optimizer, who)}.")
    f = c.chosen
    support = f"{f.shape} best supported, QAIC weight {f.weight:.2f}" if f is c.best else \
        f"{f.shape} as good as the best ({c.best.shape}), so the simpler statement leads"
    ties = c.alternatives
    if ties:
        support += f"; the data cannot tell it from the {_join(ties)} shape" + \
            ("s" if len(ties) > 1 else "")
    context = f"({who}, {seeds}{by}; {support})" if who else f"({seeds}{by}; {support})"
    text = f"{_shape_text(s)} {context}."
    r = s.rules
    if f.shape == shapes.POWER:
        return text + f" Its exponent is {_rules_text(s, optimizer, who)}."
    where = "below B_noise" if f.shape == shapes.SATURATING else "below the peak"
    if f.bound == "high":
        where = "over the batch sizes run"
    if r is None or f.bound == "low":
        return text + f" Too few batch sizes {where} to judge the four rules."
    return text + (f" {where[:1].upper() + where[1:]}, lr* grows as {_power_words(r)}: "
                   f"{_rules_text(s, optimizer, who)}.")


def plateau_sentence(s: Scaling) -> str | None:
    """"Within 1% of the best: B=16: lr 0.0007..0.0012; ...", None without plateaus."""
    parts = []
    for p in s.optima.points:
        if p.plateau is None:
            continue
        lo, hi = p.plateau
        mark_lo = "<=" if "low" in p.open_ends else ""
        mark_hi = "+" if "high" in p.open_ends else ""
        tie = " (a tie)" if p.tie else ""
        parts.append(f"B={p.batch_size}: lr {mark_lo}{fmt(lo, 2)}..{fmt(hi, 2)}{mark_hi} "
                     f"({fmt(hi / lo, 2)}x){tie}")
    if not parts:
        return None
    tol = s.optima.tolerance
    return (f"Learning rates within {tol * 100:g}% of the best expected objective: "
            + "; ".join(parts) + ".")


def noise_sentence(s: Scaling) -> str | None:
    parts = []
    m = s.mccandlish
    # The headline already gives the saturating form when it leads.
    if m is not None and not (s.shape_fits is not None and s.shape_fits.chosen.shape == shapes.SATURATING):
        if m.bound == "high":
            parts.append("McCandlish et al.'s lr_max / (1 + B_noise / B) puts B_noise above "
                         f"{fmt(m.search[1])}: lr* is still in its linear regime")
        elif m.bound == "low":
            parts.append("McCandlish et al.'s lr_max / (1 + B_noise / B) does not fit "
                         f"(B_noise below {fmt(m.search[0])}: lr* does not grow with B)")
        else:
            ci = ""
            if m.interval is not None:
                lo, hi = m.interval
                ci = (f" [{fmt(lo) if lo > 0 else 'unbounded below'}, "
                      f"{fmt(hi) if math.isfinite(hi) else 'unbounded above'}]")
            parts.append(f"McCandlish et al.'s lr_max / (1 + B_noise / B) fits with "
                         f"B_noise = {fmt(m.b_noise)}{ci} and lr_max = {fmt(m.lr_max)}")
    n = s.noise
    if n is not None:
        c = n.critical
        ci = f" [{fmt(c.low)}, {fmt(c.high)}]" if c.low is not None and c.high is not None \
            else " (single seed)"
        parts.append(f"the measured gradient noise scale B_simple is {fmt(c.mean)}{ci}, the "
                     "predicted critical batch size")
    if not parts:
        return None
    text = "; ".join(parts)
    return text[:1].upper() + text[1:] + "."


def caveats(s: Scaling, budget: str | None = None) -> list[str]:
    """What a reader should doubt, generated from the analysis."""
    out = []
    o = s.optima
    edges = [p for p in o.points if p.edge is not None]
    if edges:
        where = "; ".join(f"B={p.batch_size}: lr={p.grid_lr:g} ({p.edge} edge)" for p in edges)
        out.append(f"Best learning rate on the grid's edge ({where}): that optimum is a bound; "
                   "widen the learning-rate grid there.")
    if s.fit is not None and s.fit.excluded:
        out.append("The fit leaves out batch sizes whose optimum is on the grid's edge ("
                   + ", ".join(str(b) for b in s.fit.excluded) + ").")
    elif s.fit is not None and edges:
        out.append("The fit includes optima on the grid's edge (fewer than three interior "
                   "ones): alpha is biased toward the grid.")
    if s.seeds <= 1:
        out.append("Single seed: no interval over seeds; the interval on alpha is the "
                   "regression's alone. Repeat with more seeds (e.g. --seeds 0,1,2,3,4).")
    else:
        wide = [p for p in o.points if p.low is not None and p.high is not None
                and p.high / p.low > 4]
        if wide:
            out.append("Seed spread: the optimum's 95% interval spans more than a factor 4 at "
                       + ", ".join(f"B={p.batch_size} ({p.low:.2g}..{p.high:.2g})"
                                   for p in wide) + ".")
    unrefined = [p for p in o.points if p.edge is None and not p.refined]
    if unrefined:
        out.append("Not refined beside a diverged learning rate: "
                   + ", ".join(f"B={p.batch_size}" for p in unrefined) + ".")
    if s.fit is not None and len(s.fit.batch_sizes) < 3:
        out.append("Only two batch sizes in the fit: alpha has no regression interval.")
    if budget in (None, "epochs"):
        out.append("The budget is in epochs: a larger batch also takes fewer steps, so the "
                   "scaling mixes both effects (a steps budget separates them).")
    elif budget == "examples":
        # An examples budget is the epoch budget counted in rows (TrainSpec.plan).
        out.append("The budget is in examples: every batch size sees the same data, so a "
                   "larger batch also takes fewer steps and the scaling mixes both effects "
                   "(a steps budget separates them).")
    return out


def conclusion(s: Scaling, optimizer: str | None, budget: str | None = None) -> str:
    """The paragraph the report opens with: the finding in numbers, then the caveats."""
    parts = [headline(s, optimizer)]
    plateau = plateau_sentence(s)
    if plateau:
        parts.append(plateau)
    noise = noise_sentence(s)
    if noise:
        parts.append(noise)
    cav = caveats(s, budget)
    if cav:
        parts.append("Caveats: " + " ".join(cav))
    return " ".join(parts)
