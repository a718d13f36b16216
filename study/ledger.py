"""What the runner knows of a study's trials, read from the database a little at a time.

Claiming needs, of every trial, only its number, state, cell (params), status and
owner. `study.get_trials` reads everything, curves and all, and each claim of a large
study would read again every trial finished since the last one: in a 10,000-trial study
that was most of the time spent on storage. The ledger reads just those facts, in three
plain queries over Optuna's tables, and like Optuna's own cache only the trials it has
not yet seen finished: a finished trial never changes (its state, params and our
attributes are written once, as it ends), so what the ledger holds of it stays true.
Trials are created only under the claim lock, a claim's in one transaction (or one at a
time), so they are committed in the order of their ids: no reader, inside the lock or
not, sees a trial whose id is below one it has already read.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from study import records as R
from study.space import BATCH_SIZE, LEARNING_RATE, SEED

if TYPE_CHECKING:
    import sqlalchemy
    from optuna.trial import TrialState

# The attributes a claim reads: its outcome, its owner, its seed.
WORKER_ATTR = "worker"
ATTRS = (R.STATUS, WORKER_ATTR, R.SEED_ATTR)
PARAMS = (BATCH_SIZE, LEARNING_RATE, SEED)

_WHICH = "t.study_id = :study_id AND (t.trial_id > :mark OR t.trial_id IN :unfinished)"
_TRIALS_SQL = f"SELECT t.trial_id, t.number, t.state, t.datetime_start FROM trials t WHERE {_WHICH}"
_PARAMS_SQL = (f"SELECT p.trial_id, p.param_name, p.param_value FROM trial_params p "
               f"JOIN trials t ON t.trial_id = p.trial_id WHERE {_WHICH} AND p.param_name IN :names")
_ATTRS_SQL = (f"SELECT a.trial_id, a.key, a.value_json FROM trial_user_attributes a "
              f"JOIN trials t ON t.trial_id = a.trial_id WHERE {_WHICH} AND a.key IN :names")


@dataclass
class Sketch:
    """A trial as the runner sees it: the parts of an Optuna `FrozenTrial` it reads
    (`number`, `state`, `params`, `user_attrs`, `datetime_start`, `value`), with only
    the attributes in `ATTRS`."""

    trial_id: int
    number: int
    state: TrialState
    datetime_start: datetime.datetime | None
    params: dict[str, Any] = field(default_factory=dict)
    user_attrs: dict[str, Any] = field(default_factory=dict)
    value: float | None = None  # not read: no claim decision depends on it
    # What the runner made of a finished trial (its status and cell), kept with it since
    # a finished trial never changes: each claim of a 2000-cell grid would make them
    # again for every trial.
    memo: Any = field(default=None, repr=False, compare=False)


def _when(v: object) -> datetime.datetime | None:
    if v is None or isinstance(v, datetime.datetime):
        return v
    return datetime.datetime.fromisoformat(str(v))


@dataclass
class Ledger:
    """The sketches of one study's trials, refreshed by `trials()`."""

    engine: sqlalchemy.engine.Engine
    study_id: int
    _by_id: dict[int, Sketch] = field(default_factory=dict)
    _mark: int = -1  # every trial with an id up to this one has been read
    _unfinished: set[int] = field(default_factory=set)
    reads: int = 0  # trials read, all refreshes together (what a test can count)

    def trials(self) -> list[Sketch]:
        """Every trial of the study, as now stored, in order of number."""
        self._refresh()
        return sorted(self._by_id.values(), key=lambda s: s.number)

    def _refresh(self) -> None:
        import sqlalchemy
        from optuna.trial import TrialState

        def query(sql: str) -> Any:
            lists = [name for name in ("unfinished", "names") if f":{name}" in sql]
            return sqlalchemy.text(sql).bindparams(
                *(sqlalchemy.bindparam(name, expanding=True) for name in lists))

        # -1 stands for "none": an empty IN list is not valid SQL everywhere.
        bound = {"study_id": self.study_id, "mark": self._mark,
                 "unfinished": sorted(self._unfinished) or [-1]}
        with self.engine.connect() as conn:
            rows = conn.execute(query(_TRIALS_SQL), bound).all()
            if not rows:
                return
            params = conn.execute(query(_PARAMS_SQL), {**bound, "names": list(PARAMS)}).all()
            attrs = conn.execute(query(_ATTRS_SQL), {**bound, "names": list(ATTRS)}).all()
            conn.rollback()
        fresh: dict[int, Sketch] = {}
        for trial_id, number, state, start in rows:
            name = str(getattr(state, "name", state))
            fresh[int(trial_id)] = Sketch(int(trial_id), int(number), TrialState[name],
                                          _when(start))
        # The three reads are three statements: under PostgreSQL's READ COMMITTED, a trial
        # committed between them has params or attributes but no row in `rows`. It is
        # skipped here; the mark stays below it, so the next refresh reads it whole.
        for trial_id, name, value in params:
            if int(trial_id) not in fresh:
                continue
            # The internal value, which for our int and float distributions is the value.
            v = float(value)
            fresh[int(trial_id)].params[str(name)] = int(v) if name in (BATCH_SIZE, SEED) else v
        for trial_id, key, value_json in attrs:
            if int(trial_id) in fresh:
                fresh[int(trial_id)].user_attrs[str(key)] = json.loads(value_json)
        self._add(fresh.values())

    def _add(self, sketches: Iterable[Sketch]) -> None:
        for s in sketches:
            self.reads += 1
            self._by_id[s.trial_id] = s
            if s.state.is_finished():
                self._unfinished.discard(s.trial_id)
            else:
                self._unfinished.add(s.trial_id)
            self._mark = max(self._mark, s.trial_id)
