from __future__ import annotations

import hashlib
import math
import os
import re
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import optuna
import pytest

from study import records as R
from study import runner, space
from study.data import Dataset, make_dataset
from study.errors import SpecError, TooManyFailures
from study.spec import Spec, load_spec
from study.trainers import Monitor, TrialConfig, TrialResult, no_monitor
from tests.helpers import checkout_revision, sql
from tests.scripted import ScriptedTrainer, loss_at

SMALL = ["search.batch_size=[16, 64]", "search.learning_rate=[0.1, 0.01, 0.001]",
         "train.epochs=4", "data.n_train=100", "data.n_val=50"]


def small_spec(*more: str) -> Spec:
    return load_spec("article", [*SMALL, *more])


def run(spec: Spec, url: str, trainer: ScriptedTrainer, name: str = "t") -> runner.RunOutcome:
    ctx = runner.open_study(spec, url, name, create=True)
    return runner.work(ctx, lambda: trainer, lambda: make_dataset(spec.data))


def cells_by_state(path: Path) -> Counter[tuple[object, ...]]:
    rows = sql(path, """
        SELECT t.state, group_concat(p.param_name || '=' || p.param_value, ',')
        FROM trials t JOIN trial_params p ON p.trial_id = t.trial_id
        GROUP BY t.trial_id""")
    return Counter(rows)


def test_runs_every_cell_exactly_once(db_path: Path, db_url: str) -> None:
    spec = small_spec("search.seeds=[0, 1]")
    trainer = ScriptedTrainer()
    outcome = run(spec, db_url, trainer)
    assert outcome.trained == 12 and outcome.statuses == {"complete": 12}
    study = optuna.load_study(study_name="t", storage=db_url)
    trials = study.get_trials()
    assert {space.cell_of(t.params) for t in trials} == set(space.grid_cells(spec))
    assert len(trials) == 12
    for t in trials:
        config = next(c for c in trainer.seen if space.cell_of(t.params) ==
                      space.Cell(c.batch_size, c.learning_rate, c.seed))
        assert t.value == pytest.approx(loss_at(config, 4))
        assert sorted(t.intermediate_values) == [1, 2, 3, 4]
        assert t.user_attrs["status"] == "complete"
        assert t.user_attrs["seed"] == t.params["seed"]
        assert len(t.user_attrs["val_curve"]) == 4
    # One worker, this process, ran every trial: its id is host:pid:random.
    (worker,) = {t.user_attrs["worker"] for t in trials}
    assert re.fullmatch(rf"{re.escape(socket.gethostname())}:{os.getpid()}:[0-9a-f]{{6}}", worker)
    # Provenance on the study.
    assert study.user_attrs["spec"]["train"]["epochs"] == 4
    assert study.user_attrs["versions"]["optuna"] == optuna.__version__
    assert study.user_attrs["git_revision"] == checkout_revision()


def test_resume_trains_nothing_when_done(db_url: str) -> None:
    spec = small_spec()
    run(spec, db_url, ScriptedTrainer())
    again = ScriptedTrainer()
    outcome = run(spec, db_url, again)
    assert outcome.trained == 0 and again.seen == []


def test_more_seeds_extend_the_same_study(db_url: str) -> None:
    run(small_spec(), db_url, ScriptedTrainer())
    more = ScriptedTrainer()
    run(small_spec("search.seeds=[0, 1]"), db_url, more)
    assert len(more.seen) == 6 and {c.seed for c in more.seen} == {1}


def test_divergence_is_a_fail_with_its_epoch_and_the_study_goes_on(db_url: str) -> None:
    spec = small_spec()
    outcome = run(spec, db_url, ScriptedTrainer(diverge_lr=0.1))
    assert outcome.statuses == {"complete": 4, "diverged": 2}
    study = optuna.load_study(study_name="t", storage=db_url)
    failed = [t for t in study.trials if t.state.name == "FAIL"]
    assert len(failed) == 2
    assert all(t.user_attrs["status"] == "diverged" and t.user_attrs["diverged_epoch"] == 2
               and t.params["learning_rate"] == 0.1 for t in failed)
    assert all(t.user_attrs["train_curve"][-1] is None for t in failed)  # NaN stored as null
    # A diverged cell is a result: a rerun does not repeat it.
    again = ScriptedTrainer(diverge_lr=0.1)
    run(spec, db_url, again)
    assert again.seen == []


def test_errors_fail_the_trial_then_stop_the_study(db_url: str) -> None:
    spec = small_spec("run.max_failures=2")
    with pytest.raises(TooManyFailures, match=r"2 failed trials in a row; last error: "
                                              r"RuntimeError: scripted failure at lr=0.001"):
        run(spec, db_url, ScriptedTrainer(raise_lr=0.001))
    study = optuna.load_study(study_name="t", storage=db_url)
    errors = [t for t in study.trials if t.user_attrs.get("status") == "error"]
    assert len(errors) == 2 and all(t.state.name == "FAIL" for t in errors)
    assert errors[0].user_attrs["error"] == "RuntimeError: scripted failure at lr=0.001"
    assert not [t for t in study.trials if t.state.name == "RUNNING"]
    # Once fixed, a rerun completes every cell exactly once.
    run(spec, db_url, ScriptedTrainer())
    done = [t for t in optuna.load_study(study_name="t", storage=db_url).trials
            if t.state.name == "COMPLETE"]
    assert sorted(space.cell_of(t.params) for t in done) == space.grid_cells(spec)


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _running_trial(ctx: runner.StudyContext, cell: space.Cell, owner: str | None) -> int:
    attrs = {runner.WORKER_ATTR: owner} if owner else {}
    ctx.study.enqueue_trial(cell.params(), user_attrs=attrs)
    return ctx.study.ask(space.distributions(ctx.spec)).number


def test_abandoned_trial_of_a_dead_local_process_is_rerun(db_url: str) -> None:
    spec = small_spec()
    ctx = runner.open_study(spec, db_url, "t", create=True)
    cell = space.grid_cells(spec)[0]
    ghost = runner.Worker("ghost", runner.Worker.current().host, _dead_pid(), None)
    ctx.storage.set_study_system_attr(ctx.study_id, runner.WORKER_KEY + "ghost", ghost.record())
    number = _running_trial(ctx, cell, "ghost")
    trainer = ScriptedTrainer()
    runner.work(ctx, lambda: trainer, lambda: make_dataset(spec.data))
    study = optuna.load_study(study_name="t", storage=db_url)
    ghost_trial = study.trials[number]
    assert ghost_trial.state.name == "FAIL" and ghost_trial.user_attrs["status"] == "abandoned"
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert sorted(space.cell_of(t.params) for t in complete) == space.grid_cells(spec)


def test_heartbeat_decides_for_remote_workers() -> None:
    me = runner.Worker.current()
    now = time.time()
    fresh = {"host": "elsewhere", "pid": 1, "start": None, "beat": now - 5, "state": "running"}
    stale = {**fresh, "beat": now - 100}

    t = optuna.trial.create_trial(state=optuna.trial.TrialState.RUNNING,
                                  user_attrs={runner.WORKER_ATTR: "w"})
    assert not runner.is_abandoned(t, {"w": fresh}, me, 30, now)
    assert runner.is_abandoned(t, {"w": stale}, me, 30, now)
    assert runner.is_abandoned(t, {"w": {**fresh, "state": "stopped"}}, me, 30, now)


def test_waits_for_a_live_worker_then_reruns_its_cell_when_it_dies(db_url: str) -> None:
    """A cell held by a live process is not taken; once that process dies, it is."""
    spec = small_spec("run.heartbeat_seconds=0.5", "run.grace_seconds=60")
    ctx = runner.open_study(spec, db_url, "t", create=True)
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3)"])
    host = runner.Worker.current().host
    rec = runner.Worker("holder", host, holder.pid, runner._process_start(holder.pid)).record()
    ctx.storage.set_study_system_attr(ctx.study_id, runner.WORKER_KEY + "holder", rec)
    cell = space.grid_cells(spec)[0]
    _running_trial(ctx, cell, "holder")
    trainer = ScriptedTrainer()
    start = time.monotonic()
    runner.work(ctx, lambda: trainer, lambda: make_dataset(spec.data))
    holder.wait()
    assert time.monotonic() - start >= 2.0  # it waited for the holder to exit
    seen = [space.Cell(c.batch_size, c.learning_rate, c.seed) for c in trainer.seen]
    assert sorted(seen) == space.grid_cells(spec)  # the held cell too, exactly once


def test_orphan_waiting_trial_is_used(db_url: str) -> None:
    spec = small_spec()
    ctx = runner.open_study(spec, db_url, "t", create=True)
    ctx.study.enqueue_trial(space.grid_cells(spec)[3].params())
    trainer = ScriptedTrainer()
    runner.work(ctx, lambda: trainer, lambda: make_dataset(spec.data))
    trials = optuna.load_study(study_name="t", storage=db_url).trials
    assert len(trials) == 6 and all(t.state.name == "COMPLETE" for t in trials)


def test_mismatched_spec_is_refused_without_touching_the_file(db_path: Path, db_url: str) -> None:
    run(small_spec(), db_url, ScriptedTrainer())
    before = hashlib.sha256(db_path.read_bytes()).hexdigest()
    with pytest.raises(SpecError, match=r"study 't' exists with a different spec: "
                                        r"train\.epochs: study has 4, this run asks 9"):
        runner.open_study(small_spec("train.epochs=9"), db_url, "t", create=True)
    assert hashlib.sha256(db_path.read_bytes()).hexdigest() == before


def test_other_samplers_run_n_trials(db_url: str) -> None:
    spec = load_spec("article", [
        "search.sampler=random", "search.n_trials=5", "search.seeds=[0, 1]",
        "search.batch_size={low = 16, high = 64}", "search.learning_rate={low=1e-3, high=0.1}",
        "train.epochs=2", "data.n_train=100",
    ])
    trainer = ScriptedTrainer()
    run(spec, db_url, trainer)
    trials = optuna.load_study(study_name="t", storage=db_url).trials
    assert len(trials) == 5 and all(t.state.name == "COMPLETE" for t in trials)
    assert [t.user_attrs["seed"] for t in trials] == [0, 1, 0, 1, 0]
    assert all(16 <= t.params["batch_size"] <= 64 for t in trials)


def test_pruner_stops_bad_trials(db_url: str) -> None:
    spec = load_spec("article", [*SMALL, "search.pruner=median", "train.epochs=10",
                                 "search.seeds=[0, 1, 2]"])
    outcome = run(spec, db_url, ScriptedTrainer())
    trials = optuna.load_study(study_name="t", storage=db_url).trials
    # The median rule by hand, over the trials in the order they ran (one at a time): from
    # the 6th trial on (5 completed ones first) and from epoch 2 (the warm-up, epochs // 5),
    # a trial stops at the first epoch where its best loss so far is above the median of
    # the completed trials' losses at that epoch.
    done: list[list[float]] = []
    want: dict[int, int] = {}
    for t in sorted(trials, key=lambda t: t.number):
        config = TrialConfig.of(spec, t.params["batch_size"], t.params["learning_rate"],
                                t.user_attrs["seed"])
        curve: list[float] = []
        for epoch in range(1, 11):
            curve.append(loss_at(config, epoch))
            others = sorted(d[epoch - 1] for d in done)
            if len(done) >= 5 and epoch >= 2 and min(curve) > (
                    others[len(others) // 2] if len(others) % 2
                    else (others[len(others) // 2 - 1] + others[len(others) // 2]) / 2):
                want[t.number] = epoch
                break
        else:
            done.append(curve)
    assert want and outcome.statuses == {"complete": len(trials) - len(want), "pruned": len(want)}
    pruned = {t.number: max(t.intermediate_values) for t in trials if t.state.name == "PRUNED"}
    assert pruned == want
    for t in trials:
        stopped = want.get(t.number, 10)
        assert len(t.user_attrs["train_curve"]) == stopped, t.number
        assert t.user_attrs["status"] == ("pruned" if t.number in want else "complete")


def accuracy_at(config: TrialConfig, epoch: int) -> float:
    """A scripted validation accuracy: rises with the epochs, best at lr = 0.01."""
    return 0.9 - 0.3 / epoch - (0.2 if config.learning_rate != 0.01 else 0.0) - 0.01 * config.seed


class AccuracyTrainer(ScriptedTrainer):
    """The scripted trainer with a classification's accuracies, told to the monitor."""

    def train(self, configs: Sequence[TrialConfig], data: Dataset, monitor: Monitor = no_monitor
              ) -> list[TrialResult]:
        out = []
        for i, c in enumerate(configs):
            train: list[float] = []
            accuracy: list[float] = []
            status = "complete"
            for epoch in range(1, c.train.epochs + 1):
                train.append(loss_at(c, epoch))
                accuracy.append(accuracy_at(c, epoch))
                if monitor(i, epoch, train[-1], train[-1] + 0.1, accuracy[-1]):
                    status = "pruned"
                    break
            out.append(TrialResult(status, train, [v + 0.1 for v in train], train[-1], 10, 0.01,
                                   train_accuracy_curve=[a + 0.05 for a in accuracy],
                                   val_accuracy_curve=accuracy))
        return out


@pytest.mark.parametrize("pruner", ["none", "median"])
def test_the_validation_error_is_the_objective_and_the_pruners_curve(db_url: str,
                                                                     pruner: str) -> None:
    spec = load_spec("article", [*SMALL, "data.kind=classification", "train.loss=cross_entropy",
                                 "train.objective=val_error", f"search.pruner={pruner}",
                                 "search.seeds=[0, 1, 2]"])
    outcome = run(spec, db_url, AccuracyTrainer())
    trials = optuna.load_study(study_name="t", storage=db_url).trials
    assert len(trials) == 18
    if pruner == "median":
        assert outcome.statuses.get("pruned", 0) > 0
    for t in trials:
        config = TrialConfig.of(spec, t.params["batch_size"], t.params["learning_rate"],
                                t.user_attrs["seed"])
        epochs = len(t.user_attrs["val_accuracy_curve"])
        want = [1.0 - accuracy_at(config, e) for e in range(1, epochs + 1)]
        assert [t.intermediate_values[e] for e in sorted(t.intermediate_values)] == \
            pytest.approx(want)
        assert t.user_attrs["val_accuracy"] == pytest.approx(accuracy_at(config, epochs))
        assert t.user_attrs["train_accuracy"] == pytest.approx(accuracy_at(config, epochs) + 0.05)
        if t.state.name == "COMPLETE":
            assert epochs == 4 and t.value == pytest.approx(want[-1])
        else:
            assert t.state.name == "PRUNED" and t.user_attrs["status"] == "pruned"


def test_single_cell_grid(db_url: str) -> None:
    # GridSampler's own bookkeeping expects a grid_id our enqueued trials don't carry;
    # with one cell left it used to raise KeyError on tell.
    spec = load_spec("article", ["search.batch_size=[16]", "search.learning_rate=[0.01]",
                                 "train.epochs=2", "data.n_train=32"])
    assert run(spec, db_url, ScriptedTrainer()).statuses == {"complete": 1}


class SizedTrainer(ScriptedTrainer):
    """Takes as many trials per claim as `take` says, and checks at each call that every
    earlier claim is already recorded: nothing is held back across claims."""

    def __init__(self, take: int, db_path: Path) -> None:
        super().__init__(batch_limit=100)
        self.take = take
        self.db_path = db_path
        self.offered: list[list[tuple[int, float, int]]] = []
        self.claims: list[int] = []

    def claim_size(self, pending: Sequence[TrialConfig], n_train: int, seconds: float) -> int:
        assert n_train == 100 and seconds == 7.5
        self.offered.append([(c.batch_size, c.learning_rate, c.seed) for c in pending])
        return self.take

    def train(self, configs: Sequence[TrialConfig], data: Dataset, monitor: Monitor = no_monitor
              ) -> list[TrialResult]:
        finished = sql(self.db_path, "SELECT COUNT(*) FROM trials WHERE state = 'COMPLETE'")
        assert finished == [(sum(self.claims),)]
        self.claims.append(len(configs))
        return super().train(configs, data, monitor)


def test_claims_take_what_the_trainer_sizes_and_are_recorded_one_by_one(
        db_path: Path, db_url: str) -> None:
    spec = small_spec("search.seeds=[0, 1]", "run.checkpoint_seconds=7.5")
    trainer = SizedTrainer(5, db_path)
    assert run(spec, db_url, trainer).statuses == {"complete": 12}
    assert trainer.claims == [5, 5, 2]
    # Offered the pending cells in grid order, up to the trainer's limit.
    cells = [(c.batch_size, c.learning_rate, c.seed) for c in space.grid_cells(spec)]
    assert trainer.offered == [cells, cells[5:], cells[10:]]
    # A sampler's trials are sized before it picks them, as its costliest pick (the
    # smallest batch size trains as many epochs as any and takes the most steps).
    spec = load_spec("article", [
        "search.sampler=random", "search.n_trials=7", "search.batch_size={low = 16, high = 64}",
        "search.learning_rate={low=1e-3, high=0.1}", "train.epochs=2", "data.n_train=100",
        "run.checkpoint_seconds=7.5"])
    other = db_path.with_name("sampled.db")
    trainer = SizedTrainer(3, other)
    trainer.feedback_limit = 100  # as big as it likes: this checks the sizing alone
    run(spec, f"sqlite:///{other}", trainer)
    assert trainer.claims == [3, 3, 1]
    assert [len(o) for o in trainer.offered] == [7, 4, 1]
    assert {c for o in trainer.offered for c in o} == {(16, 1e-3, 0)}


class StepCurveTrainer(ScriptedTrainer):
    """The scripted trainer with a step curve where its interval fits the trial: a
    point per window of the loss formula, NaN at lr = 0.1 (a blow-up inside a window)."""

    def train(self, configs: Sequence[TrialConfig], data: Dataset, monitor: Monitor = no_monitor
              ) -> list[TrialResult]:
        out = super().train(configs, data, monitor)
        for c, r in zip(configs, out, strict=True):
            r.step_every = c.curve_every(data.n_train)
            if r.step_every:
                r.step_losses = [math.nan if c.learning_rate == 0.1 and i == 1 else
                                 loss_at(c, i + 1) for i in range(r.steps // r.step_every)]
        return out


def test_step_curves_are_stored_and_read_back(db_url: str) -> None:
    # 100 rows, 4 epochs: 28 steps at B=16 (points every 10), 8 at B=64 (none).
    spec = small_spec("analysis.curve_every=10")
    trainer = StepCurveTrainer(batch_limit=6)
    assert run(spec, db_url, trainer).statuses == {"complete": 6}
    trials = optuna.load_study(study_name="t", storage=db_url).trials
    assert len(trials) == 6
    for t in trials:
        config = TrialConfig.of(spec, t.params["batch_size"], t.params["learning_rate"],
                                t.user_attrs["seed"])
        record = R.to_record(t)
        if config.batch_size == 64:
            assert R.STEP_CURVE not in t.user_attrs
            assert record.step_every is None and record.step_losses == ()
            continue
        # The scripted trials take 40 steps: 4 points.
        want = [None if config.learning_rate == 0.1 and i == 1 else loss_at(config, i + 1)
                for i in range(4)]
        assert t.user_attrs[R.STEP_CURVE] == {"every": 10, "loss": want}  # NaN stored as null
        assert record.step_every == 10
        assert [None if math.isnan(v) else v for v in record.step_losses] == want
