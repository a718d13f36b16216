"""Samplers that learn (TPE) and pruners get results as they come: small claims, each
told before the next is asked for; a trial's recorded time is its own."""

from __future__ import annotations

import io
import math
import re
import time
from collections.abc import Sequence

import optuna
import pytest

from study import records as R
from study import runner
from study.data import Dataset, make_dataset
from study.progress import Progress
from study.spec import Spec, load_spec
from study.trainers import Monitor, TrialConfig, TrialResult, no_monitor
from tests.scripted import loss_at


class FusedTrainer:
    """Trains a call's configs together, epoch by epoch, as the population trainer does:
    every member's epoch, then the monitor for each; the call's time shared equally."""

    name = "fused"

    def __init__(self, batch_limit: int = 16, delay: float = 0.0) -> None:
        self.batch_limit = batch_limit
        self.delay = delay  # seconds per epoch of the whole call
        self.calls: list[int] = []

    def claim_size(self, pending: Sequence[TrialConfig], n_train: int, seconds: float) -> int:
        return min(self.batch_limit, len(pending))

    def train(self, configs: Sequence[TrialConfig], data: Dataset, monitor: Monitor = no_monitor
              ) -> list[TrialResult]:
        start = time.perf_counter()
        self.calls.append(len(configs))
        curves: list[list[float]] = [[] for _ in configs]
        active = [True] * len(configs)
        status = ["complete"] * len(configs)
        for epoch in range(1, configs[0].train.epochs + 1):
            time.sleep(self.delay)
            for i, c in enumerate(configs):
                if not active[i]:
                    continue
                curves[i].append(loss_at(c, epoch))
                if monitor(i, epoch, curves[i][-1], curves[i][-1] + 0.1, math.nan):
                    status[i], active[i] = "pruned", False
        share = (time.perf_counter() - start) / len(configs)
        return [TrialResult(s, c, [v + 0.1 for v in c], c[-1], 10 * len(c), share)  # type: ignore[arg-type]
                for s, c in zip(status, curves, strict=True)]


def sampled_spec(*more: str) -> Spec:
    return load_spec("article", [
        "search.sampler=tpe", "search.n_trials=16", "search.seeds=[0]",
        "search.batch_size={low = 16, high = 64}", "search.learning_rate={low=1e-4, high=1}",
        "train.epochs=10", "data.n_train=100", "data.n_val=50", *more])


def run(spec: Spec, url: str, trainer: FusedTrainer, progress: Progress | None = None
        ) -> runner.RunOutcome:
    ctx = runner.open_study(spec, url, "t", create=True)
    return runner.work(ctx, lambda: trainer, lambda: make_dataset(spec.data), progress)


@pytest.fixture(autouse=True)
def two_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    """The claims of a study that learns are a trial per core: two, on any machine."""
    monkeypatch.setenv("STUDY_THREADS", "2")


def test_which_studies_learn_and_how_much_they_claim() -> None:
    assert not runner.learns(load_spec("article"))
    assert runner.learns(load_spec("article", ["search.pruner=median"]))
    assert runner.learns(sampled_spec())
    assert runner.feedback_limit(FusedTrainer(batch_limit=16)) == 2  # a trial per core
    assert runner.feedback_limit(FusedTrainer(batch_limit=1)) == 1  # keras: one at a time
    own = FusedTrainer(batch_limit=16)
    own.feedback_limit = 6  # type: ignore[attr-defined]  # a trainer's own figure wins
    assert runner.feedback_limit(own) == 6


def test_tpe_asks_for_later_trials_after_earlier_ones_are_told(db_url: str) -> None:
    trainer = FusedTrainer(batch_limit=16)
    assert run(sampled_spec(), db_url, trainer).statuses == {"complete": 16}
    assert trainer.calls == [2] * 8  # not one claim of 16
    trials = sorted(optuna.load_study(study_name="t", storage=db_url).trials,
                    key=lambda t: t.number)
    for later in trials[2:]:
        earlier = trials[later.number - 2]  # the claim before its own
        assert earlier.datetime_complete is not None and later.datetime_start is not None
        assert later.datetime_start >= earlier.datetime_complete


def test_a_median_pruner_prunes_sampled_trials(db_url: str) -> None:
    # Learning rates from 1e-4 (the loss stays near 1) to 1 (it falls at once): once
    # five trials have completed, the slow ones are clearly worse than the median.
    outcome = run(sampled_spec("search.pruner=median"), db_url, FusedTrainer(batch_limit=16))
    trials = optuna.load_study(study_name="t", storage=db_url).trials
    pruned = [t for t in trials if t.state.name == "PRUNED"]
    assert len(pruned) == outcome.statuses.get("pruned") and len(pruned) >= 3
    assert all(t.user_attrs[R.STATUS] == "pruned" for t in pruned)
    # Stopped where the pruner said, after its warm-up (train.epochs // 5 = 2 epochs).
    assert all(2 <= len(t.user_attrs[R.TRAIN_CURVE]) < 10 for t in pruned)


def test_a_fused_trials_time_is_its_share_of_its_group(db_url: str) -> None:
    run(sampled_spec("search.n_trials=4", "train.epochs=3"), db_url,
        FusedTrainer(batch_limit=16, delay=0.05))
    trials = sorted(optuna.load_study(study_name="t", storage=db_url).trials,
                    key=lambda t: t.number)
    for pair in (trials[:2], trials[2:]):
        group = pair[0].user_attrs[R.GROUP_SECONDS]
        assert group >= 0.15 and all(t.user_attrs[R.GROUP_SECONDS] == group for t in pair)
        assert all(t.user_attrs[R.GROUP_SIZE] == 2 for t in pair)
        assert sum(t.user_attrs[R.SECONDS] for t in pair) == pytest.approx(group, abs=1e-3)
        # Optuna's span of a fused trial is its group's: claimed before, told after.
        for t in pair:
            assert t.duration is not None and t.duration.total_seconds() >= group


def test_shares_follow_the_trainers_measures_and_add_up_to_the_wall_time() -> None:
    def result(seconds: float) -> TrialResult:
        return TrialResult("complete", [1.0], [1.0], 1.0, 1, seconds)

    assert runner.shares([result(1.0), result(3.0)], 2.0) == [0.5, 1.5]
    # Groups trained side by side each measure the time they share: it is split.
    assert runner.shares([result(5.0), result(5.0)], 5.0) == [2.5, 2.5]
    assert runner.shares([result(0.0), result(1.0)], 3.0) == [1.5, 1.5]
    assert runner.shares([], 1.0) == []


def test_progress_lines_come_per_claim_with_the_objective_by_name(db_url: str) -> None:
    stream = io.StringIO()
    spec = sampled_spec("search.n_trials=6", "train.objective=val_loss")
    run(spec, db_url, FusedTrainer(batch_limit=16), Progress(6, 0, stream=stream))
    lines = stream.getvalue().splitlines()
    assert [line.split()[0] for line in lines] == [f"{n}/6" for n in range(1, 7)]
    # One ETA per claim of two, after both its trials; none once the work is done.
    assert ["ETA" in line for line in lines] == [False, True, False, True, False, False]
    assert all(re.search(r": complete val_loss=\d", line) for line in lines)
    assert "loss=" not in lines[0].replace("val_loss=", "")

