"""The article's question in numbers: how the best learning rate scales with batch size.

Pure functions over `TrialRecord`s (numpy only; no I/O, no Optuna, no scipy):

1. `optima`: for each batch size, the learning rate with the lowest mean objective over
   seeds, refined by a parabola through that grid point and its two neighbours in
   log(lr) when it is interior, with a bootstrap interval (seeds resampled within each
   cell, the refined optimum recomputed). An optimum on the grid's edge is a bound, not
   an estimate, and says the grid should be widened.
2. `power_fit`: log lr*(B) = a + alpha log B, with a 95% interval on alpha; `verdicts`
   against the four rules in the literature:
   - inverse, alpha = -1 (a fixed "noise temperature" lr * B);
   - constant, alpha = 0 (batch size and learning rate tuned independently);
   - square root, alpha = 1/2 (Krizhevsky 2014, "One weird trick ..."; Malladi et al.
     2022, "On the SDEs and scaling rules for adaptive gradient algorithms": Adam and
     RMSprop);
   - linear, alpha = 1 (Goyal et al. 2017, "Accurate, large minibatch SGD": multiply the
     batch size by k, multiply the learning rate by k; holds for SGD up to ~8k on
     ImageNet and breaks beyond).
3. `mccandlish_fit`: McCandlish et al. 2018 ("An empirical model of large-batch
   training", eq. 2.6): lr*(B) = lr_max / (1 + B_noise / B), fitted by least squares in
   log(lr) over a grid of B_noise (lr_max has a closed form for each B_noise).
4. `noise_scales`: the simple gradient noise scale B_simple = tr(Sigma) / |G|^2 the
   trainers record per trial (`noise_trace_sigma`, `noise_grad_sq`, `noise_scale`),
   pooled as McCandlish et al. advise: numerator and denominator averaged separately,
   then divided. It predicts the critical batch size, B_crit ~ B_noise.
5. `conclusion`: a short paragraph saying what the study found, from all of the above.

Intervals on alpha. Two sources of uncertainty, each with its own 95% interval:
- the seed bootstrap: every replicate resamples the seeds within every cell, recomputes
  every refined optimum and refits alpha (percentile interval over replicates);
- the regression's own Student-t interval on the slope, from the scatter of the optima
  about the power law (it needs 3 or more batch sizes).
A rule is *rejected* only when it lies outside both, i.e. the interval reported (and
used for the verdicts) is the union of the two. The bootstrap alone is too narrow when
optima stick to grid points; the regression alone ignores seed noise.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

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

# McCandlish's B_noise is searched from this factor below the smallest batch size to
# this factor above the largest; an estimate at either end is not identified.
B_NOISE_SPAN = 1000.0
B_NOISE_GRID = 481


# --------------------------------------------------------------------------- optimum per batch size


@dataclass(frozen=True)
class Optimum:
    """The best learning rate at one batch size."""

    batch_size: int
    learning_rates: tuple[float, ...]  # the grid at this batch size, ascending
    means: tuple[float, ...]  # mean objective per learning rate; inf: a run diverged; nan: none
    runs: tuple[int, ...]  # runs with an outcome per learning rate (completed + diverged)
    grid_lr: float  # the grid learning rate with the lowest mean
    lr: float  # refined: the parabola's vertex in log(lr); the grid value when not refined
    low: float | None  # 95% bootstrap interval of `lr` (None: a single seed)
    high: float | None
    refined: bool
    edge: str | None  # "low" | "high": the best sits on that edge of the grid
    note: str  # how `lr` was found, in words
    parabola: tuple[float, float, float] | None  # (c0, c1, c2): mean ~ c0 + c1 x + c2 x^2, x = ln lr

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


def _vertex(x: FloatArray, y: FloatArray) -> FloatArray:
    """The vertex of the parabola through (x0, y0), (x1, y1), (x2, y2), row-wise, clamped
    to [x0, x2]; x1 where the three are level (no curvature)."""
    x0, x1, x2 = x[..., 0], x[..., 1], x[..., 2]
    y0, y1, y2 = y[..., 0], y[..., 1], y[..., 2]
    num = (x1 - x0) ** 2 * (y1 - y2) - (x1 - x2) ** 2 * (y1 - y0)
    den = (x1 - x0) * (y1 - y2) - (x1 - x2) * (y1 - y0)
    with np.errstate(divide="ignore", invalid="ignore"):
        v = x1 - 0.5 * num / den
    v = np.where(np.isfinite(v) & (den != 0), v, x1)
    return np.asarray(np.clip(v, x0, x2), dtype=np.float64)


def _parabola(x: FloatArray, y: FloatArray) -> tuple[float, float, float]:
    c2, c1, c0 = np.polyfit(x, y, 2)
    return float(c0), float(c1), float(c2)


def _refine(log_lrs: FloatArray, means: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Row-wise: ln lr* and whether it was refined, from means (R x L; nan: no cell).

    The best grid point is the lowest mean (inf, a diverged run, is worse than any
    loss). When it has a finite neighbour on each side, the parabola through the three
    points in ln(lr) gives the optimum; on the grid's edge or beside a diverged cell the
    grid value stands.
    """
    m = np.where(np.isnan(means), np.inf, means)
    best = np.argmin(m, axis=-1)
    rows = np.arange(m.shape[0])
    ok = np.isfinite(m[rows, best])
    out = np.where(ok, log_lrs[best], np.nan)
    n = m.shape[-1]
    inner = ok & (best > 0) & (best < n - 1)
    lo, hi = np.clip(best - 1, 0, n - 1), np.clip(best + 1, 0, n - 1)
    inner &= np.isfinite(m[rows, lo]) & np.isfinite(m[rows, hi])
    if inner.any():
        idx = np.stack([lo, best, hi], axis=-1)[inner]
        xs = log_lrs[idx]
        ys = m[rows[inner][:, None], idx]
        out[inner] = _vertex(xs, ys)
    return out, inner


@dataclass(frozen=True, eq=False)
class Optima:
    """Every batch size's optimum, and the bootstrap replicates behind their intervals."""

    points: tuple[Optimum, ...]  # ascending batch size
    replicates: FloatArray  # resamples x batch sizes: ln lr* of each bootstrap replicate
    resamples: int


def optima(records: Iterable[TrialRecord], resamples: int = BOOTSTRAP_RESAMPLES,
           seed: int = BOOTSTRAP_SEED) -> Optima:
    """The optimal learning rate of every batch size with a finite-loss cell.

    Bootstrap: each replicate resamples, with replacement, the runs of every cell (its
    seeds; a diverged run counts as infinitely bad), recomputes every mean, the best grid
    point and the refined optimum. Replicate r uses draw r of every cell, so the
    replicates of different batch sizes belong together (for the fit of alpha).
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
        point, refined = _refine(log_lrs, means[None, :])
        k = int(np.argmin(means))
        grid_lr = lrs[k]
        # Replicates: resampled means of every cell (R x L).
        boot = np.empty((resamples, len(lrs)))
        for j, r in enumerate(runs):
            v = np.asarray(r, dtype=np.float64)
            with np.errstate(invalid="ignore"):
                boot[:, j] = v[resample_indices(len(v), resamples, seed + j)].mean(axis=1)
        reps, _ = _refine(log_lrs, boot)
        multi = max(len(r) for r in runs) > 1
        bounds = percentile_interval(reps) if multi else None
        edge = "low" if k == 0 else "high" if k == len(lrs) - 1 else None
        parabola = None
        if len(lrs) == 1:
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
        elif not refined[0]:
            note = "not refined: a neighbouring learning rate diverged"
        else:
            note = "refined: parabola in log(lr) through the best grid lr and its neighbours"
            parabola = _parabola(log_lrs[k - 1:k + 2], means[k - 1:k + 2])
        points.append(Optimum(
            b, tuple(lrs), tuple(float(x) for x in means), tuple(len(r) for r in runs),
            grid_lr, float(math.exp(point[0])) if refined[0] else grid_lr,
            None if bounds is None else math.exp(bounds[0]),
            None if bounds is None else math.exp(bounds[1]),
            bool(refined[0]), edge, note, parabola))
        columns.append(reps)
    replicates = np.stack(columns, axis=1) if columns else np.empty((resamples, 0))
    return Optima(tuple(points), replicates, resamples)


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
    points = list(o.points)
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


def verdicts(fit: PowerFit | None, hypotheses: Sequence[Hypothesis] = HYPOTHESES
             ) -> tuple[Verdict, ...]:
    """Each rule is consistent when the 95% interval on alpha contains its exponent."""
    out = []
    for h in hypotheses:
        if fit is None or fit.low is None or fit.high is None:
            out.append(Verdict(h, None))
        else:
            out.append(Verdict(h, fit.low <= h.alpha <= fit.high))
    return tuple(out)


# --------------------------------------------------------------------------- McCandlish et al.


@dataclass(frozen=True)
class McCandlishFit:
    """lr*(B) = lr_max / (1 + B_noise / B), least squares in log(lr)."""

    lr_max: float
    b_noise: float
    interval: tuple[float, float] | None  # seed bootstrap 95% interval (0, inf: open ends)
    bound: str | None  # "low" | "high": B_noise hit the search range's end (not identified)
    search: tuple[float, float]  # the B_noise range searched
    batch_sizes: tuple[int, ...]

    def predict(self, batch_size: float) -> float:
        return self.lr_max / (1.0 + self.b_noise / batch_size)


def _mccandlish_sse(log_b: FloatArray, y: FloatArray, grid_n: FloatArray
                    ) -> tuple[FloatArray, FloatArray]:
    """For rows of y (R x n) and candidates grid_n (G): SSE (R x G) and ln lr_max (R x G)."""
    # z[g, j] = ln(1 + N_g / B_j); the model is y_j = m - z[g, j], m = mean(y + z) per row.
    z = np.log1p(grid_n[:, None] / np.exp(log_b)[None, :])
    mask = ~np.isnan(y)
    cnt = np.maximum(mask.sum(axis=1), 1)
    y0 = np.where(mask, y, 0.0)
    m = (y0.sum(axis=1)[:, None] + mask.astype(float) @ z.T) / cnt[:, None]
    r = np.where(mask[:, None, :], y0[:, None, :] + z[None, :, :] - m[:, :, None], 0.0)
    return (r * r).sum(axis=2), m


def mccandlish_fit(o: Optima, fit: PowerFit | None) -> McCandlishFit | None:
    """Fit McCandlish et al.'s form to the optima the power law used (None without two)."""
    if fit is None:
        return None
    pts = [p for p in o.points if p.batch_size in fit.batch_sizes]
    cols = [o.points.index(p) for p in pts]
    bs = np.array([p.batch_size for p in pts], dtype=np.float64)
    lo, hi = bs.min() / B_NOISE_SPAN, bs.max() * B_NOISE_SPAN
    grid_n = np.geomspace(lo, hi, B_NOISE_GRID)
    y = np.log(np.array([[p.lr for p in pts]]))
    sse, m = _mccandlish_sse(np.log(bs), y, grid_n)
    k = int(np.argmin(sse[0]))
    bound = "low" if k == 0 else "high" if k == len(grid_n) - 1 else None
    interval = None
    if fit.boot is not None:
        best = np.empty(o.replicates.shape[0])
        reps = o.replicates[:, cols]
        for start in range(0, reps.shape[0], 256):  # bounded memory: 256 x G x n at a time
            chunk = reps[start:start + 256]
            s, _ = _mccandlish_sse(np.log(bs), chunk, grid_n)
            best[start:start + 256] = grid_n[np.argmin(s, axis=1)]
            best[start:start + 256][np.isnan(chunk).sum(axis=1) > len(pts) - 2] = np.nan
        interval = percentile_interval(best)
        if interval is not None:
            # A replicate at either end of the search range says "beyond": an open end.
            interval = (0.0 if interval[0] <= grid_n[0] else interval[0],
                        math.inf if interval[1] >= grid_n[-1] else interval[1])
    return McCandlishFit(float(math.exp(m[0, k])), float(grid_n[k]), interval, bound,
                         (float(lo), float(hi)), tuple(int(b) for b in bs))


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
    fit: PowerFit | None
    verdicts: tuple[Verdict, ...]
    mccandlish: McCandlishFit | None
    noise: NoiseSummary | None
    seeds: int  # distinct seeds with a completed run
    why: str | None  # why there is no fit, when there is none


def scaling(records: Sequence[TrialRecord], objective: str = "objective",
            resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED) -> Scaling:
    records = list(records)
    o = optima(records, resamples, seed)
    fit = power_fit(o)
    why = None
    if fit is None:
        why = (f"a scaling fit needs optima at two or more batch sizes; this study has "
               f"{len(o.points)}")
    seeds = len({r.seed for r in records if r.status == "complete" and r.seed is not None})
    return Scaling(objective, o, fit, verdicts(fit), mccandlish_fit(o, fit),
                   noise_summary(records, o), seeds, why)


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


def headline(s: Scaling, optimizer: str | None) -> str:
    """"Best LR grows as B^0.46 [0.31, 0.61] (Adam, 5 seeds): consistent with the
    square-root rule; rejects the inverse, constant and linear rules." """
    who = OPTIMIZER_NAMES.get(optimizer or "", optimizer or "")
    seeds = "1 seed" if s.seeds == 1 else f"{s.seeds} seeds"
    # The best learning rate is the best by the study's objective: named unless it is the
    # article's (the final training loss).
    by = f"; by {OBJECTIVE_LABELS[s.objective]}" \
        if s.objective in OBJECTIVE_LABELS and s.objective != "train_loss" else ""
    context = f"({who}, {seeds}{by})" if who else f"({seeds}{by})"
    if s.fit is None:
        return f"No scaling law {context}: {s.why}."
    f = s.fit
    trend = "grows" if f.alpha >= 0.005 else "falls" if f.alpha <= -0.005 else "stays flat"
    ci = f" [{f.low:.2f}, {f.high:.2f}]" if f.low is not None and f.high is not None else \
        " (no interval)"
    text = f"Best LR {trend} as B^{f.alpha:.2f}{ci} {context}"
    ok = [f"{v.hypothesis.name}" for v in s.verdicts if v.consistent]
    bad = [f"{v.hypothesis.name}" for v in s.verdicts if v.consistent is False]
    if f.low is None:
        return text + ": no interval on alpha, so no rule is accepted or rejected."
    if ok:
        text += f": consistent with the {_join(ok)} rule{'s' if len(ok) > 1 else ''}"
    else:
        text += ": consistent with none of the four rules"
    if bad:
        text += f"; rejects the {_join(bad)} rule{'s' if len(bad) > 1 else ''}"
    expected = EXPECTED.get(optimizer or "")
    if expected is not None and who:
        text += (f" (the {expected} rule is the one expected for {who})" if expected in ok
                 else f" (the rule expected for {who}, {expected}, is rejected)")
    return text + "."


def noise_sentence(s: Scaling) -> str | None:
    parts = []
    m = s.mccandlish
    if m is not None:
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
    noise = noise_sentence(s)
    if noise:
        parts.append(noise)
    cav = caveats(s, budget)
    if cav:
        parts.append("Caveats: " + " ".join(cav))
    return " ".join(parts)
