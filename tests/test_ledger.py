"""The ledger: what a claim reads of the study's trials, read incrementally, agrees with
what Optuna reads of them, on real SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import optuna
import pytest
from optuna.trial import TrialState

from study import ledger, space
from study.optuna_compat import NewTrial, Outcome, finish_trials, start_trials
from study.spec import load_spec
from study.storage import open_storage


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest) -> str:
    name = "db_url" if request.param == "sqlite" else "pg_url"
    return str(request.getfixturevalue(name))


def facts(trials: list[ledger.Sketch] | list[optuna.trial.FrozenTrial]) -> list[tuple[object, ...]]:
    return [(t.number, t.state, t.params, {k: v for k, v in t.user_attrs.items()
                                           if k in ledger.ATTRS}, t.datetime_start)
            for t in trials]


class GridStudy(NamedTuple):
    storage: optuna.storages.RDBStorage
    study: optuna.Study
    study_id: int
    start: Callable[[list[space.Cell]], list[optuna.Trial]]  # RUNNING trials for these cells


def grid_study(url: str, worker: str) -> GridStudy:
    """The article's grid study "s", empty, whose trials `start` makes as a claim does."""
    spec = load_spec("article")
    dists = space.distributions(spec)
    storage = open_storage(url)
    study = optuna.create_study(storage=storage, study_name="s",
                                sampler=space.make_sampler(spec))
    study_id = storage.get_study_id_from_name("s")

    def start(cells: list[space.Cell]) -> list[optuna.Trial]:
        return start_trials(study, storage, study_id, [
            NewTrial(c.params(), {k: dists[k] for k in c.params()},
                     {"worker": worker, "seed": c.seed}) for c in cells], bulk=True)

    return GridStudy(storage, study, study_id, start)


def test_the_ledger_reads_what_optuna_reads_and_each_finished_trial_once(url: str) -> None:
    storage, study, study_id, start = grid_study(url, "w1")
    book = ledger.Ledger(storage.engine, study_id)
    assert book.trials() == []
    cells = space.grid_cells(load_spec("article"))
    first = start(cells[:5])
    assert facts(book.trials()) == facts(study.get_trials())
    assert book.reads == 5
    finish_trials(study, storage, [
        Outcome(first[0], {1: 0.5}, {"status": "complete"}, TrialState.COMPLETE, [0.5]),
        Outcome(first[1], {}, {"status": "diverged"}, TrialState.FAIL),
    ], bulk=True)
    second = start(cells[5:8])
    # Another study's trials in the same database are not this one's.
    other = optuna.create_study(storage=storage, study_name="other")
    other.ask()
    trials = book.trials()
    assert facts(trials) == facts(study.get_trials())
    assert [t.state for t in trials[:3]] == [TrialState.COMPLETE, TrialState.FAIL,
                                             TrialState.RUNNING]
    assert trials[1].user_attrs["status"] == "diverged" and trials[0].params == cells[0].params()
    # Read again: the five that were unfinished and the three new ones.
    assert book.reads == 5 + 5 + 3
    finish_trials(study, storage, [
        Outcome(t, {}, {"status": "complete"}, TrialState.COMPLETE, [0.1])
        for t in first[2:] + second], bulk=True)
    assert facts(book.trials()) == facts(study.get_trials())
    assert book.reads == 13 + 6
    # Now every trial is finished and none is new: nothing more is read.
    assert len(book.trials()) == 8 and book.reads == 19


def test_a_trial_committed_between_the_ledgers_reads_is_read_whole_on_the_next(
        url: str) -> None:
    """Under PostgreSQL's READ COMMITTED each of the ledger's three statements sees what
    was committed before it: trials started by another worker between the trials query
    and the params query (made to happen here, by a real commit from another connection)
    must not break the refresh, nor be lost to it."""
    import sqlalchemy

    storage, study, study_id, start = grid_study(url, "w2")
    cells = space.grid_cells(load_spec("article"))
    start(cells[:2])
    reader = sqlalchemy.create_engine(storage.engine.url)
    book = ledger.Ledger(reader, study_id)
    pending = [cells[2:5]]

    @sqlalchemy.event.listens_for(reader, "before_cursor_execute")
    def between(conn: object, cursor: object, statement: str, *args: object) -> None:
        if "trial_params" in statement and pending:
            start(pending.pop())  # committed by the study's own engine, another connection

    first = book.trials()
    assert [t.number for t in first] == [0, 1]  # the three new ones came too late
    assert facts(book.trials()) == facts(study.get_trials())
    assert [t.number for t in book.trials()] == [0, 1, 2, 3, 4]
    reader.dispose()
