"""Refinement: after the grid, spend trials where the answer is still undecided.

A grid a decade apart in learning rate leaves wide intervals on lr* and on the shape
lr*(B) follows. Refinement adds *rounds* of new learning rates per batch size, each run
with every seed of the spec, until the chosen shape's main parameter (the power law's
alpha, or B_noise) is known to `search.refine_width` / `search.refine_ratio`, or the
budget `search.refine_trials` is spent, or a round would add nothing.

Where a round puts its learning rates (`placements`): at each batch size, up to
`search.refine_points` log-spaced points across the union of the plateau and lr*'s 95%
interval, widened by `WIDEN` at each end (an optimum that is not refined, on the grid's
edge, a tie, next to a divergence: between the best grid learning rate's neighbours),
kept inside the grid's learning-rate range (the Optuna distribution's bounds: a trial
whose params lie outside its distribution cannot be read back by Optuna), skipping any
within a factor `MIN_GAP` of a learning rate already run there. An optimum on the grid's
edge therefore gets points toward the inside only: widening the grid is the user's call.

Why rounds are exact-once with workers: round k is a function of the finished trials of
the grid and of rounds before k, decided only once every cell so far has a final
outcome, so those trials can no longer change. The runner decides it under the study's
claim lock and stores it on the study as the user attribute `refine_round_<k>` before
any of its cells is claimed; a worker that finds it stored reads it instead of deciding
again (so workers on machines whose floating point differs in the last bit still agree).
The decision to stop is stored likewise (`refine_stop`), so a resumed study does not
redo the analysis. Everything else is the runner's ordinary cell machinery: a round's
cells are grid cells like any other (`StudyContext.cells`), their trials ordinary Optuna
trials.

This module is pure (records and spec in, decisions out; the attributes' JSON forms
and the sentences `study run` prints); the runner reads and writes the study.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from study import scaling as S
from study.analysis import TrialRecord
from study.space import Cell
from study.spec import Range, Spec

ROUND_ATTR = "refine_round_"  # study user attribute prefix: refine_round_1, refine_round_2, ...
STOP_ATTR = "refine_stop"
# The region a round covers is widened by this factor at each end: a fit through points
# only inside the plateau sees the loss change by less than the tolerance, too little
# against the seeds' noise to place a minimum.
WIDEN = 1.5
# A new learning rate is never within this factor of one already run at its batch size.
MIN_GAP = 1.3
CANDIDATES = 61  # the fine grid over a region that new points are chosen from
DIGITS = 4  # significant digits of a placed learning rate (readable params, exact in JSON)


# --------------------------------------------------------------------------- decisions


@dataclass(frozen=True)
class Target:
    """The chosen shape's main parameter as known when a decision was taken."""

    shape: str  # shapes.POWER, ... ; "slope" when too few optima to compare shapes
    name: str  # "alpha" or "B_noise"
    value: float
    low: float  # 95% interval; -inf / inf (None in JSON): open
    high: float

    @property
    def width(self) -> float:
        """high - low for alpha; high / low for B_noise (inf when open)."""
        if self.name == "alpha":
            return self.high - self.low
        return self.high / self.low if self.low > 0 else math.inf

    def met(self, spec: Spec) -> bool:
        limit = spec.search.refine_width if self.name == "alpha" else spec.search.refine_ratio
        return math.isfinite(self.width) and self.width < limit

    def words(self) -> str:
        how = "width" if self.name == "alpha" else "ratio"
        lo = "-inf" if not math.isfinite(self.low) else f"{self.low:.3g}"
        hi = "inf" if not math.isfinite(self.high) else f"{self.high:.3g}"
        return f"{self.name} {self.value:.3g} [{lo}, {hi}] ({how} {self.width:.3g})"

    def to_json(self) -> dict[str, Any]:
        def f(x: float) -> float | None:
            return x if math.isfinite(x) else None

        return {"shape": self.shape, "name": self.name, "value": f(self.value),
                "low": f(self.low), "high": f(self.high)}

    @classmethod
    def from_json(cls, d: object) -> Target | None:
        if not isinstance(d, Mapping):
            return None

        def f(key: str, default: float) -> float:
            v = d.get(key)
            return float(v) if isinstance(v, int | float) else default

        return cls(str(d.get("shape")), str(d.get("name")), f("value", math.nan),
                   f("low", -math.inf), f("high", math.inf))


@dataclass(frozen=True)
class Round:
    """One round: its new (batch size, learning rate) pairs, each run with every seed."""

    number: int  # 1, 2, ...
    pairs: tuple[tuple[int, float], ...]
    trials: int  # the finished trials it was decided on
    before: Target | None  # the main parameter as known then (None: no shape yet)

    def to_json(self) -> dict[str, Any]:
        return {"pairs": [[b, lr] for b, lr in self.pairs], "trials": self.trials,
                "before": None if self.before is None else self.before.to_json()}

    @classmethod
    def from_json(cls, number: int, d: object) -> Round | None:
        if not isinstance(d, Mapping) or not isinstance(d.get("pairs"), list):
            return None
        pairs = tuple((int(b), float(lr)) for b, lr in d["pairs"])
        return cls(number, pairs, int(d.get("trials", 0)), Target.from_json(d.get("before")))


@dataclass(frozen=True)
class Stop:
    """Why no further round comes, decided after `after` rounds under `budget`."""

    after: int
    reason: str
    budget: int
    trials: int
    target: Target | None

    def to_json(self) -> dict[str, Any]:
        return {"after": self.after, "reason": self.reason, "budget": self.budget,
                "trials": self.trials,
                "target": None if self.target is None else self.target.to_json()}

    @classmethod
    def from_json(cls, d: object) -> Stop | None:
        if not isinstance(d, Mapping):
            return None
        return cls(int(d.get("after", 0)), str(d.get("reason", "")), int(d.get("budget", 0)),
                   int(d.get("trials", 0)), Target.from_json(d.get("target")))


def round_key(number: int) -> str:
    return f"{ROUND_ATTR}{number}"


def rounds_from_attrs(attrs: Mapping[str, Any]) -> list[Round]:
    """The rounds stored on a study (its user attributes), in order; a gap ends them."""
    out: list[Round] = []
    while (r := Round.from_json(len(out) + 1, attrs.get(round_key(len(out) + 1)))) is not None:
        out.append(r)
    return out


def stop_from_attrs(attrs: Mapping[str, Any]) -> Stop | None:
    return Stop.from_json(attrs.get(STOP_ATTR))


def round_cells(spec: Spec, rounds: Sequence[Round]) -> list[Cell]:
    """The cells of the stored rounds: every pair with every seed of the spec."""
    return sorted(Cell(b, lr, seed) for r in rounds for b, lr in r.pairs
                  for seed in spec.search.seeds)


def spent(spec: Spec, rounds: Sequence[Round]) -> int:
    """Trials the stored rounds take (with the spec's seeds)."""
    return sum(len(r.pairs) for r in rounds) * len(spec.search.seeds)


def lr_bounds(spec: Spec) -> tuple[float, float]:
    """The learning-rate distribution's bounds: the grid's smallest and largest."""
    lr = spec.search.learning_rate
    if isinstance(lr, Range):
        return lr.low, lr.high
    return min(lr), max(lr)


def target_of(s: S.Scaling) -> Target | None:
    """The chosen shape's main parameter, or with too few refined optima to compare shapes
    the slope over every optimum; None when there is neither."""
    if s.shape_fits is not None:
        c = s.shape_fits.chosen
        return Target(c.shape, c.main_name, c.main, c.low, c.high)
    if s.rules is not None:
        return Target("slope", "alpha", s.rules.alpha, s.rules.low, s.rules.high)
    return None


def region(o: S.Optimum) -> tuple[float, float]:
    """Where learning rates are still worth running at one batch size, before widening:
    the plateau united with lr*'s interval; without a smooth fit, between the best grid
    learning rate's neighbours (toward the inside only, on the grid's edge)."""
    spans = [o.plateau] if o.plateau is not None else []
    if o.refined and o.low is not None and o.high is not None:
        spans.append((o.low, o.high))
    if o.refined and spans:
        return min(a for a, _ in spans), max(b for _, b in spans)
    lrs = o.learning_rates
    k = lrs.index(o.grid_lr)
    lo = lrs[k - 1] if k > 0 else lrs[k]
    hi = lrs[k + 1] if k < len(lrs) - 1 else lrs[k]
    if o.plateau is not None:  # a tie: its span, and a neighbour on each side
        lo = min(lo, lrs[max(0, lrs.index(o.plateau[0]) - 1)])
        hi = max(hi, lrs[min(len(lrs) - 1, lrs.index(o.plateau[1]) + 1)])
    return lo, hi


def _round(x: float) -> float:
    return float(f"{x:.{DIGITS}g}")


def placements(optima: Sequence[S.Optimum], bounds: tuple[float, float], points: int
               ) -> dict[int, list[float]]:
    """New learning rates per batch size (pure; see the module's docstring), each list
    ordered nearest lr* first (what a round keeps when the budget runs short)."""
    lo_b, hi_b = bounds
    out: dict[int, list[float]] = {}
    gap = math.log(MIN_GAP)
    for o in optima:
        lo, hi = region(o)
        lo, hi = max(lo / WIDEN, lo_b), min(hi * WIDEN, hi_b)
        # Not past a learning rate where a run diverged: its neighbours beyond it would too.
        for x, m in zip(o.learning_rates, o.means, strict=True):
            if m == math.inf:
                if x > o.grid_lr:
                    hi = min(hi, x)
                else:
                    lo = max(lo, x)
        if not lo < hi:
            continue
        # Greedy maximin in ln lr: each new point as far as can be from every learning
        # rate already run here (or placed now), from a fine grid over the region, so a
        # round fills the region's widest gaps and a later round never repeats one.
        taken = [math.log(x) for x in o.learning_rates]
        a, z = math.log(lo), math.log(hi)
        grid = [a + (z - a) * i / (CANDIDATES - 1) for i in range(CANDIDATES)]
        chosen: list[float] = []
        centre = math.log(o.lr)
        for _ in range(max(points, 1)):
            clear = [min(abs(x - t) for t in taken) for x in grid]
            i = max(range(len(grid)), key=lambda j: (clear[j], -abs(grid[j] - centre)))
            if clear[i] < gap:
                break
            best = grid[i]
            lr = min(max(_round(math.exp(best)), lo_b), hi_b)
            taken.append(math.log(lr))
            chosen.append(lr)
        if chosen:
            out[o.batch_size] = sorted(chosen, key=lambda x: (abs(math.log(x) - centre), x))
    return out


def _priority(o: S.Optimum) -> float:
    """How undecided a batch size's lr* is: the width of its interval in ln lr (of its
    region when it has none)."""
    lo, hi = (o.low, o.high) if o.low is not None and o.high is not None else region(o)
    return math.log(hi) - math.log(lo)


def decide(records: Sequence[TrialRecord], spec: Spec, rounds: Sequence[Round]) -> Round | Stop:
    """The next round, or why there is none, from the finished trials of every cell so far
    (`records`) and the rounds already stored. Pure and deterministic."""
    budget = spec.search.refine_trials
    done = sum(r.status in ("complete", "diverged", "pruned") for r in records)
    s = S.scaling(records, spec.train.objective, tolerance=spec.analysis.tolerance)
    target = target_of(s)
    after = len(rounds)

    def stop(reason: str) -> Stop:
        return Stop(after, reason, budget, done, target)

    if target is not None and target.met(spec):
        limit = (f"refine_width {spec.search.refine_width:g}" if target.name == "alpha"
                 else f"refine_ratio {spec.search.refine_ratio:g}")
        return stop(f"the target is met: {target.words()} is below {limit}")
    left = budget - spent(spec, rounds)
    seeds = len(spec.search.seeds)
    if left < seeds:
        return stop(f"the budget is spent: {spent(spec, rounds)} of refine_trials {budget}")
    by_b = {o.batch_size: o for o in s.optima.points}
    placed = placements(s.optima.points, lr_bounds(spec), spec.search.refine_points)
    if not placed:
        return stop("no new learning rate: every batch size's region is already run "
                    f"within a factor {MIN_GAP:g}")
    # Most undecided batch sizes first, nearest lr* first within each, as the budget allows.
    order = sorted(placed, key=lambda b: (-_priority(by_b[b]), b))
    queue = [(b, lr) for b in order for lr in placed[b]]
    keep = queue[: left // seeds]
    return Round(after + 1, tuple(sorted(keep)), done, target)


# --------------------------------------------------------------------------- in words


def describe(rounds: Sequence[Round], stop: Stop | None, seeds: int) -> list[str]:
    """What each round changed, a line each, and why refinement stopped: `study run`
    prints these. A round's "after" is the next decision's "before"."""
    lines: list[str] = []
    for i, r in enumerate(rounds):
        nxt = rounds[i + 1].before if i + 1 < len(rounds) else (
            stop.target if stop is not None and stop.after == len(rounds) else None)
        by_b: dict[int, list[float]] = {}
        for b, lr in r.pairs:
            by_b.setdefault(b, []).append(lr)
        where = "; ".join(f"B={b}: " + ", ".join(f"{lr:g}" for lr in sorted(v))
                          for b, v in sorted(by_b.items()))
        change = ""
        if r.before is not None:
            change = f"; {r.before.words()}"
            if nxt is not None:
                change += f" -> {nxt.words()}" if nxt.name == r.before.name else (
                    f" -> {nxt.shape} leads: {nxt.words()}")
        lines.append(f"Refinement round {r.number}: {len(r.pairs)} learning rates x {seeds} "
                     f"seed(s) = {len(r.pairs) * seeds} trials ({where}){change}")
    if stop is not None and stop.after == len(rounds):
        lines.append(f"Refinement stopped after {len(rounds)} round(s): {stop.reason}.")
    return lines
