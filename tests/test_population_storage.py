"""The population trainer through the real runner and SQLite; bulk writes read back by Optuna's
readers (the rows themselves are compared with the public API's in test_optuna_compat.py)."""

from __future__ import annotations

import datetime
import io
import json
import math
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from wsgiref.util import setup_testing_defaults

import optuna
import pytest

from study import runner
from study.data import make_dataset
from study.errors import SpecError
from study.spec import Spec, load_spec
from study.storage import open_storage
from study.trainers import get_trainer
from tests.helpers import ROOT, cli_env, run_cli, sql, start_cli

SMALL = ["data.n_train=128", "data.n_val=64", "train.epochs=6",
         "search.batch_size=[16, 32]", "search.learning_rate=[1e12, 0.01, 0.001]"]


def run(spec: Spec, url: str) -> runner.RunOutcome:
    ctx = runner.open_study(spec, url, "t", create=True)
    return runner.work(ctx, lambda: get_trainer("auto", spec), lambda: make_dataset(spec.data))


@pytest.mark.slow
def test_optuna_dashboard_reads_the_bulk_rows(db_url: str) -> None:
    from optuna_dashboard import wsgi

    spec = load_spec("article", [*SMALL, "search.learning_rate=[0.01]", "train.epochs=3"])
    run(spec, db_url)
    app = wsgi(open_storage(db_url))
    environ: dict[str, object] = {"PATH_INFO": "/api/studies/1", "QUERY_STRING": "after=0"}
    setup_testing_defaults(environ)
    errors = io.StringIO()
    environ["wsgi.errors"] = errors
    status: list[str] = []
    body = b"".join(app(environ, lambda s, headers, exc_info=None: status.append(s)))
    assert status == ["200 OK"], errors.getvalue()
    trials = json.loads(body)["trials"]
    assert len(trials) == 2
    for t in trials:
        assert [v["step"] for v in t["intermediate_values"]] == [1, 2, 3]
        attrs = {a["key"]: a["value"] for a in t["user_attrs"]}
        assert attrs["trainer"] == "population" and attrs["status"] == "complete"


@pytest.mark.slow
def test_study_run_records_complete_and_diverged(db_path: Path, db_url: str) -> None:
    spec = load_spec("article", SMALL)
    outcome = run(spec, db_url)
    assert outcome.statuses == {"complete": 4, "diverged": 2}
    trials = optuna.load_study(study_name="t", storage=db_url).trials
    for t in trials:
        assert t.datetime_complete is not None and t.datetime_start is not None
        assert t.datetime_start <= t.datetime_complete
        if t.params["learning_rate"] == 1e12:
            assert t.state.name == "FAIL" and t.user_attrs["status"] == "diverged"
            assert t.user_attrs["diverged_epoch"] == 1 and t.intermediate_values == {}
        else:
            assert t.state.name == "COMPLETE" and t.user_attrs["trainer"] == "population"
            assert sorted(t.intermediate_values) == list(range(1, 7))
            assert t.value == t.user_attrs["train_curve"][-1] == t.intermediate_values[6]
            assert math.isfinite(t.user_attrs["full_train_loss"])
    # Optuna's own reader and plain SQL agree on the per-epoch rows.
    assert sql(db_path, "SELECT COUNT(*) FROM trial_intermediate_values") == [(4 * 6,)]


@pytest.mark.slow
def test_a_finite_blow_up_is_a_diverged_fail_and_its_threshold_part_of_the_study(
        db_url: str) -> None:
    # Plain SGD on a linear model above its stability limit: the loss grows ~30-fold per
    # epoch and stays finite; the default train.divergence_factor stops it.
    sets = ["data.n_train=128", "data.n_val=64", "model.hidden=[]", "train.optimizer=sgd",
            "train.epochs=5", "search.batch_size=[16]", "search.learning_rate=[0.3, 0.01]"]
    outcome = run(load_spec("article", sets), db_url)
    assert outcome.statuses == {"complete": 1, "diverged": 1}
    trials = optuna.load_study(study_name="t", storage=db_url).trials
    bad, good = sorted(trials, key=lambda t: -t.params["learning_rate"])
    assert bad.state.name == "FAIL" and bad.user_attrs["status"] == "diverged"
    epoch, curve = bad.user_attrs["diverged_epoch"], bad.user_attrs["train_curve"]
    # Every epoch finite (a NaN is stored as null): the threshold stopped it, not NaN.
    assert 1 < epoch < 5 and len(curve) == epoch and None not in curve
    assert bad.intermediate_values == dict(enumerate(curve, start=1))
    assert bad.user_attrs["full_train_loss"] is None and bad.value is None
    assert good.state.name == "COMPLETE" and len(good.user_attrs["train_curve"]) == 5
    # The threshold decides which trials are results: resuming with another is refused.
    with pytest.raises(SpecError, match=r"train\.divergence_factor: study has 1000\.0, "
                                        r"this run asks 0\.0"):
        runner.open_study(load_spec("article", [*sets, "train.divergence_factor=0"]), db_url,
                          "t", create=True)


@pytest.mark.slow
def test_pruner_prunes_members_between_epochs(db_url: str) -> None:
    spec = load_spec("article", [*SMALL, "search.learning_rate=[0.1, 0.01, 0.001, 0.0001]",
                                 "search.seeds=[0, 1, 2, 3]", "search.batch_size=[16, 32, 64]",
                                 "train.epochs=10", "search.pruner=median"])
    outcome = run(spec, db_url)
    assert outcome.statuses.get("pruned", 0) > 0, outcome.statuses
    trials = optuna.load_study(study_name="t", storage=db_url).trials
    assert len(trials) == 48
    assert any(len(t.user_attrs["train_curve"]) < 10 for t in trials if t.state.name == "PRUNED")
    for t in trials:
        if t.state.name == "PRUNED":
            assert t.user_attrs["status"] == "pruned"
            epochs = len(t.user_attrs["train_curve"])
            assert sorted(t.intermediate_values) == list(range(1, epochs + 1))
            # As study.tell records a pruned trial: its value is the last reported one.
            assert t.value == t.intermediate_values[epochs]
            # Pruned where the pruner said, so its weights are the pruned epoch's.
            assert math.isfinite(t.user_attrs["full_train_loss"])
        else:
            assert t.state.name == "COMPLETE" and len(t.intermediate_values) == 10


@pytest.mark.slow
def test_kill_9_loses_no_completed_trial(tmp_path: Path) -> None:
    db = tmp_path / "study.db"
    url = f"sqlite:///{db}"
    args = ["run", "--storage", url, "--trainer", "population", "--epochs", "3",
            "--seeds", "0,1,2,3,4,5,6,7", "--set", "data.n_train=256", "--set", "data.n_val=64"]
    proc = start_cli(args)
    complete: list[tuple[object, ...]] = []
    deadline = time.monotonic() + 300
    while not complete and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
        if db.exists():
            try:
                complete = sql(db, "SELECT t.trial_id, v.value FROM trials t JOIN trial_values v "
                                   "ON v.trial_id = t.trial_id WHERE t.state = 'COMPLETE'")
            except Exception:  # the schema may be mid-creation
                complete = []
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert complete, "no trial completed before the deadline"
    rerun = run_cli(args)
    assert rerun.returncode == 0, rerun.stderr
    after = dict(sql(db, "SELECT t.trial_id, v.value FROM trials t JOIN trial_values v "
                         "ON v.trial_id = t.trial_id WHERE t.state = 'COMPLETE'"))
    assert all(after[trial_id] == value for trial_id, value in complete)
    finished = sql(db, """
        SELECT COUNT(*) FROM trials t WHERE t.state IN ('COMPLETE', 'PRUNED') OR EXISTS (
          SELECT 1 FROM trial_user_attributes a WHERE a.trial_id = t.trial_id
          AND a.key = 'status' AND a.value_json = '"diverged"')""")
    assert finished == [(5 * 4 * 8,)]


# 2 batch sizes x 4 learning rates x 16 seeds = 128 cells, each a few hundred steps.
KILLED = ["--trainer", "population", "--epochs", "20", "--seeds", ",".join(map(str, range(16))),
          "--set", "search.batch_size=[32, 64]", "--set", "data.n_train=512",
          "--set", "data.n_val=128", "--set", "run.checkpoint_seconds=1"]


def _trial_rows(db: Path, state: str) -> dict[int, tuple[object, ...]]:
    """Each trial in `state`: its value and every user attribute, as stored."""
    rows = sql(db, """
        SELECT t.trial_id, v.value, t.datetime_start, group_concat(a.key || '=' || a.value_json, '|')
        FROM trials t LEFT JOIN trial_values v ON v.trial_id = t.trial_id
        JOIN trial_user_attributes a ON a.trial_id = t.trial_id
        WHERE t.state = ? GROUP BY t.trial_id""", (state,))
    return {int(str(r[0])): (r[1], r[2], "|".join(sorted(str(r[3]).split("|")))) for r in rows}


def _attr(row: tuple[object, ...], key: str) -> object:
    attrs = dict(a.split("=", 1) for a in str(row[2]).split("|"))
    return json.loads(attrs[key])


def _running(db: Path, pid: int) -> dict[int, tuple[object, ...]]:
    """The RUNNING trials of the `study` process `pid` (workers are HOST:PID:TAG)."""
    try:
        return {k: r for k, r in _trial_rows(db, "RUNNING").items()
                if f":{pid}:" in str(_attr(r, "worker"))}
    except sqlite3.OperationalError:  # the schema is not there yet
        return {}


@pytest.mark.slow
def test_random_kills_lose_at_most_a_claim(tmp_path: Path) -> None:
    """`kill -9` of a population run at seeded random moments, then a run to the end.

    What a kill loses is the claim in hand (its RUNNING trials). Asserted bound: no more
    than the larger of one tile (the least claim: at most 32 members on one core) and
    run.checkpoint_seconds divided by the fastest per-trial seconds that process had
    measured (its COMPLETE trials' `seconds`): a claim takes only as many tiles as its
    process's measured speed fits in checkpoint_seconds. Claims of the whole grid would
    lose all 128 at once.
    """
    db = tmp_path / "study.db"
    args = ["run", "--storage", f"sqlite:///{db}", *KILLED]
    env = {**cli_env(), "STUDY_THREADS": "1"}  # the same tiles on any machine
    rng = random.Random(20)
    kept: dict[int, tuple[object, ...]] = {}
    losses = []
    for _ in range(4):
        proc = subprocess.Popen([sys.executable, "-m", "study", *args], cwd=ROOT, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
        deadline = time.monotonic() + 300
        while not _running(db, proc.pid) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if proc.poll() is not None:
            break  # it finished the study first
        time.sleep(rng.uniform(0.0, 6.0))  # somewhere in its first claims
        os.killpg(proc.pid, signal.SIGKILL)
        killed_at = datetime.datetime.now()
        proc.communicate(timeout=60)
        lost = _running(db, proc.pid)
        complete = _trial_rows(db, "COMPLETE")
        measured = [float(str(_attr(r, "seconds"))) for r in complete.values()
                    if f":{proc.pid}:" in str(_attr(r, "worker"))]
        bound = max(32, int(1.0 / min(measured)) if measured else 0)
        started = min(datetime.datetime.fromisoformat(str(r[1])) for r in lost.values()) \
            if lost else killed_at
        losses.append((len(lost), bound, round((killed_at - started).total_seconds(), 1)))
        assert len(lost) <= bound, losses
        kept.update(complete)
    assert losses, "the study ended before any kill"
    print(f"\nper kill: (trials lost, bound, seconds since the lost claim began): {losses}")
    out = run_cli(args)
    assert out.returncode == 0, out.stderr
    after = _trial_rows(db, "COMPLETE")
    assert {k: after.get(k) for k in kept} == kept
    cells = sql(db, """
        SELECT COUNT(*), COUNT(DISTINCT group_concat) FROM (
          SELECT group_concat(p.param_name || '=' || p.param_value, ',') AS group_concat
          FROM trials t JOIN trial_params p ON p.trial_id = t.trial_id
          WHERE t.state = 'COMPLETE' GROUP BY t.trial_id)""")
    assert cells == [(128, 128)]
    assert "RUNNING" not in dict(sql(db, "SELECT state, COUNT(*) FROM trials GROUP BY state"))
