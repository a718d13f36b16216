"""How large a batch is still worth it: steps to a target loss and the critical batch size.

Pure numpy over `TrialRecord`s that carry a step curve (`analysis.curve_every`: the mean
training loss of each window of k optimizer steps).

1. Per trial cell (batch size, learning rate): the mean curve over its seeds, smoothed
   at each step t over the windows within a factor 1.25 of t, and the first step at which
   it reaches the target, interpolated linearly between the windows' centres (window i
   covers steps i*k+1 .. (i+1)*k, its centre i*k + (k+1)/2). A cell where a run diverged
   never counts.
2. Per batch size, the fewest steps over learning rates: S(B) (Shallue et al. 2019,
   "Measuring the effects of data parallelism on neural network training": steps to a
   target with the learning rate re-tuned at every batch size), and E(B) = B S(B) the
   examples.
3. McCandlish et al. 2018 (eq. 2.11): S = S_min (1 + B_noise / B), E = E_min (1 + B /
   B_noise), so B_crit = E_min / S_min = B_noise. Fitted by least squares in ln S (for
   each B_noise on a fine grid, ln S_min has a closed form).
4. Zhang et al. 2024 ("How does critical batch size scale in pre-training?"): the batch
   size where the steps exceed perfect scaling from the smallest batch size B0 by 20%,
   i.e. where E(B) / E(B0) = S(B) B / (S(B0) B0) first reaches 1.2, interpolated in
   ln B between the batch sizes run; measured, not from the fit.

Intervals: a seed bootstrap (seeds resampled within every cell, every step above redone,
replicate r using draw r of every cell), percentile 95%.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from study import shapes
from study.analysis import (
    BOOTSTRAP_RESAMPLES,
    BOOTSTRAP_SEED,
    FloatArray,
    TrialRecord,
    percentile_interval,
    resample_indices,
)
from study.spec import AUTO_TARGET_MARGIN

__all__ = ["AUTO_TARGET_MARGIN", "Critical", "Estimate", "StepsAt", "critical", "critical_all"]

OVERHEAD = 0.2  # Zhang et al.'s 20% above perfect scaling
GRID = 601


@dataclass(frozen=True)
class StepsAt:
    """The fewest steps to the target at one batch size, over its learning rates."""

    batch_size: int
    steps: float | None  # None: no learning rate's mean curve reached the target
    low: float | None  # 95% bootstrap interval (None: a single seed)
    high: float | None
    learning_rate: float | None  # the learning rate that reached it first
    every: int  # the recording interval k of its curves

    @property
    def examples(self) -> float | None:
        return None if self.steps is None else self.steps * self.batch_size


@dataclass(frozen=True)
class Estimate:
    value: float
    low: float | None
    high: float | None


@dataclass(frozen=True)
class Critical:
    """Steps to one target, per batch size, and the critical batch sizes from them."""

    target: float
    auto: bool  # the target is AUTO_TARGET_MARGIN above the best loss reached
    points: tuple[StepsAt, ...]
    s_min: Estimate | None  # None: fewer than three batch sizes reached the target
    e_min: Estimate | None
    b_crit: Estimate | None  # McCandlish's E_min / S_min
    bound: str | None  # "low" | "high": B_crit at the end of the range searched
    b_overhead: Estimate | None  # Zhang et al.'s 20%-overhead batch size
    overhead_note: str  # how b_overhead was found, or why there is none

    def fitted_steps(self, batch_size: float) -> float | None:
        if self.s_min is None or self.b_crit is None:
            return None
        return self.s_min.value * (1.0 + self.b_crit.value / batch_size)


@dataclass(frozen=True, eq=False)
class _CellCurves:
    """One cell's step curves: its completed runs' (those with the cell's interval), cut
    to the shortest, as rows; and whether any of its runs diverged."""

    every: int
    curves: FloatArray  # runs x windows; may be empty (no completed run with a curve)
    diverged: bool


def _cell_curves(records: Sequence[TrialRecord]) -> dict[tuple[int, float], _CellCurves]:
    """Every cell's step curves (records without one are left out)."""
    runs: dict[tuple[int, float], list[TrialRecord]] = defaultdict(list)
    for r in records:
        if r.step_every is not None and r.batch_size is not None and \
                r.learning_rate is not None and r.status in ("complete", "diverged"):
            runs[(r.batch_size, r.learning_rate)].append(r)
    out = {}
    for key, rs in runs.items():
        every = rs[0].step_every or 0
        same = [r.step_losses for r in rs
                if r.status == "complete" and r.step_every == every and r.step_losses]
        width = min((len(c) for c in same), default=0)
        out[key] = _CellCurves(every, np.array([c[:width] for c in same], dtype=np.float64),
                               any(r.status == "diverged" for r in rs))
    return out


def _best_loss(cells: Mapping[tuple[int, float], _CellCurves]) -> float | None:
    by_b: dict[int, float] = {}
    for (b, _), cell in cells.items():
        if not len(cell.curves):
            continue
        mean = cell.curves.mean(axis=0)
        finite = mean[np.isfinite(mean)]
        if finite.size:
            by_b[b] = min(by_b.get(b, math.inf), float(finite.min()))
    return max(by_b.values()) if by_b else None


def best_loss(records: Sequence[TrialRecord]) -> float | None:
    """The loss every batch size reached: per batch size, the lowest point of any of its
    cells' mean step curves over seeds; the highest of those. (A single trial's lowest
    window is mostly the luck of its batches, so seeds are averaged first, as steps to the
    target are measured on those means; and a target only the largest batches reach
    measures nothing at the others.)"""
    return _best_loss(_cell_curves(records))


# The mean curve is smoothed at each step t over the windows whose centres lie within a
# factor SMOOTH_SPAN of t: a fixed share of the time so far, so early steep stretches keep
# their detail and late flat ones, where noise decides the crossing, are averaged most.
SMOOTH_SPAN = 1.25


def _smooth(curves: FloatArray, every: int) -> tuple[FloatArray, FloatArray]:
    """Each row averaged, at every window centre t, over the windows centred in
    [t / SMOOTH_SPAN, t * SMOOTH_SPAN]; with the centres (in steps)."""
    width = curves.shape[1]
    centres = np.asarray(np.arange(width) * every + (every + 1) / 2, dtype=np.float64)
    lo = np.searchsorted(centres, centres / SMOOTH_SPAN, side="left")
    hi = np.searchsorted(centres, centres * SMOOTH_SPAN, side="right")
    c = np.cumsum(np.concatenate([np.zeros((curves.shape[0], 1)), curves], axis=1), axis=1)
    with np.errstate(invalid="ignore"):
        out = (c[:, hi] - c[:, lo]) / (hi - lo)
    return np.asarray(out, dtype=np.float64), centres


def _crossing(curves: FloatArray, every: int, target: float) -> FloatArray:
    """Per row of mean curves (R x W): the first step at which the smoothed curve reaches
    `target`, interpolated between window centres; NaN where it never does.

    Smoothed, because a mean of minibatch losses is noisy: the raw curve's first dip below
    a target comes early by chance, the more so the smaller the batch (a bias that would
    bend S(B) itself); an average centred in log time shifts little where the curve is
    smooth."""
    curves, centres = _smooth(np.where(np.isfinite(curves), curves, np.inf), every)
    below = curves <= target
    hit = below.any(axis=1)
    first = np.argmax(below, axis=1)
    prev = np.maximum(first - 1, 0)
    r = np.arange(curves.shape[0])
    v0, v1 = curves[r, prev], curves[r, first]
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where((first > 0) & (v0 != v1) & np.isfinite(v0), (v0 - target) / (v0 - v1),
                     1.0)
    steps = centres[prev] + t * (centres[first] - centres[prev])
    steps = np.where(first == 0, centres[0], steps)
    return np.asarray(np.where(hit, steps, np.nan), dtype=np.float64)


def _fit(batch_sizes: FloatArray, steps: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Least squares of ln S = ln S_min + ln(1 + N / B) for each row of `steps` (R x n; NaN:
    left out): (N, S_min, index of N in the grid) per row."""
    grid = np.geomspace(batch_sizes.min() / shapes.B_NOISE_SPAN,
                        batch_sizes.max() * shapes.B_NOISE_SPAN, GRID)
    z = np.log1p(grid[:, None] / batch_sizes[None, :])  # G x n
    y = np.log(steps)  # R x n
    mask = np.isfinite(y)
    cnt = np.maximum(mask.sum(axis=1), 1)
    y0 = np.where(mask, y, 0.0)
    scale = (y0.sum(axis=1)[:, None] - mask.astype(float) @ z.T) / cnt[:, None]  # R x G
    resid = np.where(mask[:, None, :], y0[:, None, :] - z[None, :, :] - scale[:, :, None], 0.0)
    sse = (resid ** 2).sum(axis=2)
    k = np.argmin(sse, axis=1)
    r = np.arange(steps.shape[0])
    return grid[k], np.exp(scale[r, k]), k


def _overhead(batch_sizes: FloatArray, steps: FloatArray) -> FloatArray:
    """Per row: Zhang et al.'s 20%-overhead batch size, interpolated in ln B; inf where the
    ratio never reaches 1.2 over the batch sizes run, NaN without the smallest's steps."""
    e = steps * batch_sizes[None, :]
    ratio = e / e[:, :1]
    out = np.full(steps.shape[0], np.inf)
    done = np.zeros(steps.shape[0], dtype=bool)
    lb = np.log(batch_sizes)
    for j in range(1, len(batch_sizes)):
        a, b = ratio[:, j - 1], ratio[:, j]
        cross = ~done & np.isfinite(a) & np.isfinite(b) & (b >= 1 + OVERHEAD)
        with np.errstate(divide="ignore", invalid="ignore"):
            t = np.where(b != a, (1 + OVERHEAD - a) / (b - a), 0.0)
        out = np.where(cross, np.exp(lb[j - 1] + np.clip(t, 0, 1) * (lb[j] - lb[j - 1])), out)
        done |= cross
    out[~np.isfinite(steps[:, 0])] = np.nan
    return out


def _estimate(value: float, reps: FloatArray | None) -> Estimate:
    if reps is None:
        return Estimate(value, None, None)
    b = percentile_interval(reps)
    return Estimate(value, None if b is None else b[0], None if b is None else b[1])


def critical(records: Sequence[TrialRecord], target: float | None = None,
             resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED) -> Critical | None:
    """Steps to `target` (None: AUTO_TARGET_MARGIN above `best_loss`, the loss every batch
    size reached) and the critical batch sizes; None when no trial recorded a step
    curve."""
    return _critical(_cell_curves(records), target, resamples, seed)


def _critical(cells: Mapping[tuple[int, float], _CellCurves], target: float | None,
              resamples: int, seed: int) -> Critical | None:
    best = _best_loss(cells)
    if best is None:
        return None
    auto = target is None
    goal = best * (1 + AUTO_TARGET_MARGIN) if target is None else float(target)
    by_b: dict[int, list[float]] = defaultdict(list)
    for b, lr in cells:
        by_b[b].append(lr)
    sizes = sorted(by_b)
    multi = any(len(c.curves) > 1 for c in cells.values())
    point = np.full((1, len(sizes)), np.nan)
    reps = np.full((resamples, len(sizes)), np.nan)
    chosen: list[float | None] = [None] * len(sizes)
    everies = [0] * len(sizes)
    for j, b in enumerate(sizes):
        for i, lr in enumerate(sorted(by_b[b])):
            cell = cells[(b, lr)]
            if cell.diverged or not len(cell.curves):
                continue
            everies[j] = every = cell.every
            curves = np.where(np.isfinite(cell.curves), cell.curves, np.inf)
            steps = _crossing(curves.mean(axis=0, keepdims=True), every, goal)[0]
            if math.isfinite(steps) and not steps >= point[0, j]:
                point[0, j] = steps
                chosen[j] = lr
            if multi:
                idx = resample_indices(len(curves), resamples, seed + 7919 * j + i)
                rep = _crossing(curves[idx].mean(axis=1), every, goal)
                reps[:, j] = np.fmin(reps[:, j], rep)
    points = []
    for j, b in enumerate(sizes):
        s = float(point[0, j]) if math.isfinite(point[0, j]) else None
        ci = percentile_interval(reps[:, j]) if multi and s is not None else None
        points.append(StepsAt(b, s, None if ci is None else ci[0], None if ci is None else ci[1],
                              chosen[j], everies[j]))
    reached = [j for j, p in enumerate(points) if p.steps is not None]
    s_min = e_min = b_crit = b_over = None
    bound = None
    note = "fewer than two batch sizes reached the target"
    if len(reached) >= 3:
        bs = np.array([sizes[j] for j in reached], dtype=np.float64)
        n_hat, s_hat, k = _fit(bs, point[:, reached])
        bound = "low" if k[0] == 0 else "high" if k[0] == GRID - 1 else None
        n_reps = s_reps = None
        if multi:
            n_reps, s_reps, _ = _fit(bs, reps[:, reached])
            bad = np.isfinite(reps[:, reached]).sum(axis=1) < 3
            n_reps[bad] = np.nan
            s_reps[bad] = np.nan
        b_crit = _estimate(float(n_hat[0]), n_reps)
        s_min = _estimate(float(s_hat[0]), s_reps)
        e_min = _estimate(float(n_hat[0] * s_hat[0]),
                          None if n_reps is None or s_reps is None else n_reps * s_reps)
    if len(reached) >= 2 and reached[0] == 0:
        bs_all = np.array(sizes, dtype=np.float64)
        over = _overhead(bs_all, point)
        over_reps = _overhead(bs_all, reps) if multi else None
        b_over = _estimate(float(over[0]), over_reps)
        note = (f"E(B) / E(B={sizes[0]}) first reaches {1 + OVERHEAD:g}, interpolated in ln B"
                if math.isfinite(over[0]) else
                f"E(B) / E(B={sizes[0]}) stays under {1 + OVERHEAD:g} up to B={sizes[-1]}: "
                "beyond the batch sizes run")
    elif len(reached) >= 2:
        note = f"the smallest batch size (B={sizes[0]}) did not reach the target"
    return Critical(goal, auto, tuple(points), s_min, e_min, b_crit, bound, b_over, note)


def critical_all(records: Sequence[TrialRecord], targets: Sequence[float] = (),
                 resamples: int = BOOTSTRAP_RESAMPLES) -> list[Critical]:
    """One `Critical` per target (the automatic one when `targets` is empty)."""
    out = []
    cells = _cell_curves(records)  # read once for every target
    wanted: list[float | None] = list(targets) or [None]
    for t in wanted:
        c = _critical(cells, t, resamples, BOOTSTRAP_SEED)
        if c is not None:
            out.append(c)
    return out
