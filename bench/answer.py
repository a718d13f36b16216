"""`make bench`'s "The answer" section: refinement against a flat grid at equal trials.

No TensorFlow: the trials are plain SGD on noisy linear regression simulated in numpy
(tests/truth.py's default problem: 16 Gaussian features, an 8192-example budget, B 4..256,
real sampled minibatches, 5 seeds), so the row measures the analysis and the placement of
trials, not training speed. For each budget and replicate:

- refined: the `sgd-scaling` grid (8 learning rates in half decades), then rounds decided
  by `study.refine.decide` exactly as a study decides them, until it stops;
- flat: the same batch sizes and seeds with as many learning rates per batch size,
  log-spaced over the same range, as the refined study ran on average (at least as many
  trials);
- the 95% interval of the refined study's chosen shape's main parameter, in both studies:
  its width for alpha, the log of its high / low for B_noise; the gain is flat / refined,
  so 2 means half as wide.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from study import refine  # noqa: E402
from study import scaling as S  # noqa: E402
from study.analysis import TrialRecord  # noqa: E402
from study.spec import load_spec  # noqa: E402
from tests import truth as T  # noqa: E402

BATCH_SIZES = (4, 8, 16, 32, 64, 128, 256)
GRID = (1.0, 0.3, 0.1, 0.03, 0.01, 0.003, 0.001, 0.0003)
SEEDS = 5
BEGIN, END = "<!-- bench:answer:begin -->", "<!-- bench:answer:end -->"


def _study(lrs_by_b: dict[int, Sequence[float]], rep: int, first: int) -> list[TrialRecord]:
    out: list[TrialRecord] = []
    for i, b in enumerate(BATCH_SIZES):
        lrs = list(lrs_by_b.get(b, ()))
        if not lrs:
            continue
        sim = T.simulate(T.DEFAULT, np.asarray(lrs), b, T.default_steps(b), SEEDS,
                         seed=1000 * rep + i)
        out += T.records(sim, 10, first + len(out))
    return out


def _width(records: Sequence[TrialRecord], shape: str | None = None) -> tuple[str, float]:
    """(the shape and its parameter, the log-width of its 95% interval): of `shape`, or
    of the shape the study chose."""
    s = S.scaling(records, "objective")
    if s.shape_fits is None:
        return "none", math.inf
    f = s.shape_fits.chosen if shape is None else s.shape_fits.of(shape)
    if f.main_name == "alpha":
        return f"{f.shape}: alpha", f.high - f.low
    ratio = f.high / f.low if f.low > 0 else math.inf
    return f"{f.shape}: B_noise", math.log(ratio)


def compare(budget: int, rep: int) -> dict[str, object]:
    spec = load_spec("sgd-scaling", [f"search.refine_trials={budget}",
                                     "search.refine_width=0.0001", "search.refine_ratio=1.0001"])
    records = _study({b: GRID for b in BATCH_SIZES}, rep, 0)
    rounds: list[refine.Round] = []
    while True:
        d = refine.decide(records, spec, rounds)
        if isinstance(d, refine.Stop):
            break
        rounds.append(d)
        new: dict[int, list[float]] = {}
        for b, lr in d.pairs:
            new.setdefault(b, []).append(lr)
        records += _study(new, rep, len(records))
    per_b = math.ceil(len(records) / (SEEDS * len(BATCH_SIZES)))
    flat = _study({b: list(np.geomspace(min(GRID), max(GRID), per_b)) for b in BATCH_SIZES},
                  rep, 0)
    # The same parameter in both: the one the refined study's chosen shape has.
    r_name, r_width = _width(records)
    chosen = r_name.split(":")[0]
    f_name, f_width = _width(flat, chosen if chosen != "none" else None)
    f_name += f" (chose {_width(flat)[0].split(':')[0]})"
    gain = f_width / r_width if r_width > 0 and math.isfinite(f_width) else math.nan
    return {"budget": budget, "rep": rep, "rounds": len(rounds), "refined_trials": len(records),
            "flat_trials": len(flat), "refined": r_name, "refined_width": r_width,
            "flat": f_name, "flat_width": f_width, "gain": gain}


def section(budgets: Sequence[int] = (140, 280), reps: int = 2) -> str:
    rows = [compare(b, r) for b in budgets for r in range(reps)]
    lines = [
        "### The answer: refinement against a flat grid",
        "",
        "Plain SGD on noisy linear regression simulated in numpy (bench/answer.py; no "
        "TensorFlow), B 4..256, 5 seeds, the `sgd-scaling` learning-rate grid, then "
        "`study.refine` rounds until it stops; a flat grid of at least as many trials for "
        "comparison. Width: of the 95% interval of the refined study's chosen shape's main "
        "parameter, in both studies (alpha), or the log of its high / low (B_noise). Target: "
        "gain >= 2.",
        "",
        "| budget | replicate | rounds | trials refined / flat | refined: parameter, width "
        "| flat: parameter, width | gain |",
        "|---:|---:|---:|---:|---|---|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['budget']} | {r['rep']} | {r['rounds']} | {r['refined_trials']} / "
                     f"{r['flat_trials']} | {r['refined']}, {r['refined_width']:.3g} | "
                     f"{r['flat']}, {r['flat_width']:.3g} | {r['gain']:.2f} |")
    gains = [float(str(r["gain"])) for r in rows if math.isfinite(float(str(r["gain"])))]
    if gains:
        lines += ["", f"Median gain {float(np.median(gains)):.2f} (target 2: "
                  f"{'met' if np.median(gains) >= 2 else 'missed'})."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(section())
