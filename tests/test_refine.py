"""Refinement (study/refine.py): placement on hand-made optima, and real refined studies on
SQLite with a closed-form trainer: exactly one finished trial per cell including the
rounds', resume adds nothing, two worker processes end with every cell once."""

from __future__ import annotations

import math
import subprocess
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import optuna
import pytest

from study import refine, runner, space
from study.analysis import TrialRecord
from study.data import Dataset, make_dataset
from study.errors import SpecError
from study.scaling import optima
from study.spec import Spec, load_spec
from study.trainers import Monitor, TrialConfig, TrialResult, no_monitor
from tests.helpers import ROOT

GRID = ["search.batch_size=[16, 64, 256]", "search.learning_rate=[0.1, 0.01, 0.001, 0.0001]",
        "train.epochs=2", "data.n_train=300", "data.n_val=50", "search.seeds=[0, 1]",
        # Targets out of reach: the budget decides how many rounds run.
        "search.refine_width=0.001", "search.refine_ratio=1.001"]


def true_lr(batch_size: float) -> float:
    """lr*(B) of the closed-form loss: McCandlish's shape, lr_max 0.03, B_noise 40."""
    return 0.03 / (1 + 40 / batch_size)


def loss(batch_size: int, lr: float, seed: int) -> float:
    """A bowl in ln lr around `true_lr`, steeper than a parabola, with a deterministic
    wobble per run standing in for seed noise."""
    x = math.log(lr / true_lr(batch_size))
    wobble = 0.02 * math.sin(1000 * lr + 7 * seed + batch_size)
    return 0.1 * (1 + 0.25 * x * x + 0.05 * x ** 4) * (1 + wobble)


@dataclass
class BowlTrainer:
    """The runner's trainer seam with `loss` for a result: no TensorFlow."""

    name: str = "bowl"
    batch_limit: int = 8
    seen: list[TrialConfig] = field(default_factory=list)

    def claim_size(self, pending: Sequence[TrialConfig], n_train: int, seconds: float) -> int:
        return min(self.batch_limit, len(pending))

    def train(self, configs: Sequence[TrialConfig], data: Dataset, monitor: Monitor = no_monitor
              ) -> list[TrialResult]:
        self.seen += configs
        out = []
        for c in configs:
            final = loss(c.batch_size, c.learning_rate, c.seed)
            out.append(TrialResult("complete", [2 * final, final], [2 * final, final], final,
                                   10, 0.001))
        return out


def spec(*more: str) -> Spec:
    return load_spec("article", [*GRID, *more])


def run(s: Spec, url: str, trainer: BowlTrainer | None = None) -> runner.StudyContext:
    ctx = runner.open_study(s, url, "refined", create=True)
    runner.work(ctx, lambda: trainer or BowlTrainer(), lambda: make_dataset(s.data))
    return ctx


def finished_cells(url: str) -> Counter[space.Cell]:
    study = optuna.load_study(study_name="refined", storage=url)
    return Counter(space.cell_of(t.params) for t in study.trials
                   if t.state == optuna.trial.TrialState.COMPLETE)


def records(cells: Sequence[tuple[int, float]], seeds: Sequence[int] = (0, 1)
            ) -> list[TrialRecord]:
    out = []
    for b, lr in cells:
        for seed in seeds:
            v = loss(b, lr, seed)
            out.append(TrialRecord(number=len(out), state="COMPLETE", batch_size=b,
                                   learning_rate=lr, seed=seed, value=v, status="complete",
                                   train_loss=v))
    return out


# --------------------------------------------------------------------------- pure


def test_placements_cover_the_optimum_inside_the_range_and_skip_run_learning_rates() -> None:
    lrs = (0.1, 0.01, 0.001, 0.0001)
    o = optima(records([(b, lr) for b in (16, 64, 256) for lr in lrs]))
    placed = refine.placements(o.points, (0.0001, 0.1), 4)
    assert set(placed) == {16, 64, 256}
    for p in o.points:
        new = placed[p.batch_size]
        assert 1 <= len(new) <= 4
        assert all(0.0001 <= lr <= 0.1 for lr in new)
        lo, hi = refine.region(p)
        assert all(lo / refine.WIDEN * 0.999 <= lr <= hi * refine.WIDEN * 1.001 for lr in new)
        taken = [*p.learning_rates, *new]
        assert all(abs(math.log(a / b)) >= math.log(refine.MIN_GAP) * 0.999
                   for i, a in enumerate(taken) for b in taken[i + 1:])
        # Nearest lr* first: what a round short of budget keeps.
        assert abs(math.log(new[0] / p.lr)) == min(abs(math.log(x / p.lr)) for x in new)
    # Placing again after running them finds the gaps left, never a repeat.
    more = records([(b, lr) for b in (16, 64, 256) for lr in lrs]
                   + [(b, lr) for b, v in placed.items() for lr in v])
    again = refine.placements(optima(more).points, (0.0001, 0.1), 4)
    for b, v in again.items():
        assert not set(v) & set(placed[b])


def test_an_optimum_on_the_grid_edge_gets_points_inside_the_range_only() -> None:
    # At B=1024 lr* = 0.029: above the grid's largest learning rate 0.01, so on its edge.
    lrs = (0.01, 0.001, 0.0001)
    (o,) = optima(records([(1024, lr) for lr in lrs])).points
    assert o.edge == "high"
    new = refine.placements([o], (0.0001, 0.01), 4)[1024]
    assert new and all(0.001 / refine.WIDEN <= lr <= 0.01 for lr in new)
    assert max(new) == 0.01 or max(new) > 0.005  # toward the edge, never past it


def test_decide_places_a_round_then_stops_on_budget_or_target() -> None:
    grid = [(b, lr) for b in (16, 64, 256) for lr in (0.1, 0.01, 0.001, 0.0001)]
    s = spec("search.refine_trials=12", "search.refine_points=4")
    first = refine.decide(records(grid), s, [])
    assert isinstance(first, refine.Round)
    # 12 trials = 6 learning rates x 2 seeds, the most undecided batch sizes first.
    assert first.number == 1 and len(first.pairs) == 6 and first.trials == 24
    assert first.before is not None and first.before.name in ("alpha", "B_noise")
    out = refine.decide(records(grid + list(first.pairs)), s, [first])
    assert isinstance(out, refine.Stop) and "budget is spent" in out.reason
    easy = spec("search.refine_trials=100", "search.refine_width=100", "search.refine_ratio=1e9")
    met = refine.decide(records(grid), easy, [])
    assert isinstance(met, refine.Stop) and "target is met" in met.reason
    # The JSON forms read back as they were (inf as null).
    assert refine.Round.from_json(1, first.to_json()) == first
    assert refine.Stop.from_json(met.to_json()) == met


@pytest.mark.parametrize(("item", "message"), [
    ("search.refine_trials=-1", r"search\.refine_trials: expected a non-negative"),
    ("search.refine_points=0", r"search\.refine_points: expected a positive"),
    ("search.refine_width=0", r"search\.refine_width: expected a positive"),
    ("search.refine_ratio=1", r"search\.refine_ratio: expected a ratio above 1"),
])
def test_spec_keys_are_validated_naming_the_field(item: str, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        spec(item)


def test_refinement_needs_the_grid_sampler() -> None:
    with pytest.raises(SpecError, match=r"search\.refine_trials: refinement adds learning rates"):
        load_spec("article", ["search.sampler=tpe", "search.n_trials=10",
                              "search.batch_size={low = 16, high = 256}",
                              "search.learning_rate={low = 1e-4, high = 0.1}",
                              "search.refine_trials=8"])


# --------------------------------------------------------------------------- studies


def test_a_refined_study_ends_with_one_finished_trial_per_cell_and_resume_adds_nothing(
        db_url: str) -> None:
    s = spec("search.refine_trials=40")
    ctx = run(s, db_url)
    rounds = ctx.rounds
    assert rounds, "no refinement round was run"
    grid = space.grid_cells(s)
    round_cells = refine.round_cells(s, rounds)
    assert len(round_cells) <= 40 and not set(round_cells) & set(grid)
    found = finished_cells(db_url)
    assert found == Counter(grid + round_cells)  # every cell, each exactly once
    # The rounds are ordinary Optuna trials, inside the distributions, and on the study.
    study = optuna.load_study(study_name="refined", storage=db_url)
    assert len(study.trials) == len(grid) + len(round_cells)
    lr_dist = study.trials[-1].distributions[space.LEARNING_RATE]
    assert all(lr_dist._contains(t.params[space.LEARNING_RATE]) for t in study.trials)
    attrs = study.user_attrs
    assert refine.rounds_from_attrs(attrs) == rounds
    stop = refine.stop_from_attrs(attrs)
    assert stop is not None and stop.after == len(rounds)
    lines = refine.describe(rounds, stop, 2)
    assert lines[0].startswith("Refinement round 1: ") and "->" in lines[0]
    assert lines[-1].startswith(f"Refinement stopped after {len(rounds)} round(s): ")

    again = BowlTrainer()
    ctx2 = run(s, db_url, again)
    assert again.seen == [] and ctx2.rounds == rounds
    assert len(optuna.load_study(study_name="refined", storage=db_url).trials) == len(study.trials)


def test_a_larger_budget_on_resume_refines_further_and_other_placements_are_refused(
        db_url: str) -> None:
    ctx = run(spec("search.refine_trials=8"), db_url)
    assert len(refine.round_cells(ctx.spec, ctx.rounds)) <= 8
    before = len(ctx.rounds)
    ctx2 = run(spec("search.refine_trials=40"), db_url)
    assert len(ctx2.rounds) > before and ctx2.rounds[:before] == ctx.rounds
    assert finished_cells(db_url) == Counter(ctx2.cells)
    with pytest.raises(SpecError, match=r"search\.refine_points: study has 4"):
        runner.open_study(spec("search.refine_trials=40", "search.refine_points=6"), db_url,
                          "refined", create=True)


def test_off_by_default_the_study_is_the_grid(db_url: str) -> None:
    s = spec()
    ctx = run(s, db_url)
    assert ctx.rounds == [] and finished_cells(db_url) == Counter(space.grid_cells(s))
    assert not any(k.startswith("refine") for k in
                   optuna.load_study(study_name="refined", storage=db_url).user_attrs)


WORKER = """
import sys
from study import runner
from study.data import make_dataset
from tests.test_refine import BowlTrainer, spec
s = spec("search.refine_trials=40")
ctx = runner.open_study(s, sys.argv[1], "refined", create=False)
trainer = BowlTrainer(batch_limit=2)
runner.work(ctx, lambda: trainer, lambda: make_dataset(s.data))
print(len(trainer.seen))
"""


def test_two_worker_processes_end_with_every_cell_exactly_once(db_url: str) -> None:
    s = spec("search.refine_trials=40")
    runner.open_study(s, db_url, "refined", create=True)  # the study, before any worker
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, db_url], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err for _, err in outs]
    ctx = runner.open_study(s, db_url, "refined", create=False)
    assert ctx.rounds
    assert finished_cells(db_url) == Counter(ctx.cells)
    trained = [int(out.split()[-1]) for out, _ in outs]
    assert sum(trained) == len(ctx.cells)  # no cell trained twice, none lost
