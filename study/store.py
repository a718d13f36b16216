"""The one reader of Optuna's tables: every SQL that names them for reading lives here.

Optuna owns the schema (`studies`, `trials`, `trial_params`, `trial_values`,
`trial_user_attributes`, `trial_intermediate_values`, `study_user_attributes`, ...); we
read it by plain SQL where Optuna's own reader would build every trial whole (seconds
for a study of 10,000 trials). Each function takes an open connection (the callers get
a read-only one from `storage.read_only`) and returns plain values: this module decides
how a stored value, time or parameter is turned back into Python, once. Writes go
through Optuna (and `optuna_compat` for the bulk ones), never through here.

The SQL is portable between SQLite and PostgreSQL: no JSON functions (they differ
between engines); our trial facts are JSON in `trial_user_attributes.value_json`,
decoded here.
"""

from __future__ import annotations

import datetime
import json
import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from study import records as R
from study.analysis import TrialRecord
from study.errors import StorageUsageError
from study.space import BATCH_SIZE, LEARNING_RATE, SEED
from study.storage import mask, read_only

if TYPE_CHECKING:
    import sqlalchemy

    Connection = sqlalchemy.engine.Connection

# Without a name, the study read is the storage's only one, else the one of this name.
DEFAULT_STUDY = "article"


# --------------------------------------------------------------------------- decoding


def float_value(value: object, value_type: object) -> float | None:
    """A stored value: Optuna keeps infinities and NaN as a type tag beside a null."""
    kind = str(getattr(value_type, "name", value_type))
    if kind == "INF_POS":
        return math.inf
    if kind == "INF_NEG":
        return -math.inf
    if kind == "NAN":
        return math.nan
    return None if value is None else float(value)  # type: ignore[arg-type]


def when(v: object) -> datetime.datetime | None:
    """A stored time (a datetime from PostgreSQL, ISO text from SQLite)."""
    if v is None or isinstance(v, datetime.datetime):
        return v
    return datetime.datetime.fromisoformat(str(v))


def state_name(state: object) -> str:
    """A stored trial state or direction as its name ("COMPLETE", "MINIMIZE")."""
    return str(getattr(state, "name", state))


# --------------------------------------------------------------------------- studies


def _text(sql: str) -> Any:
    import sqlalchemy

    return sqlalchemy.text(sql)


def studies(conn: Connection, url: str) -> list[tuple[int, str]]:
    """(study_id, name) of every study, oldest first; a one-line error when the storage
    has no Optuna schema."""
    import sqlalchemy

    try:
        rows = conn.execute(_text("SELECT study_id, study_name FROM studies "
                                  "ORDER BY study_id")).all()
    except sqlalchemy.exc.DBAPIError:
        raise StorageUsageError(
            f"--storage: {mask(url)} holds no Optuna studies (start one with `study run`)"
        ) from None
    return [(int(r[0]), str(r[1])) for r in rows]


def resolve_study(conn: Connection, url: str, name: str | None) -> tuple[int, str]:
    """The study asked for; without a name, the storage's only study, else `article`."""
    found = studies(conn, url)
    names = ", ".join(repr(n) for _, n in found) or "none"
    if name is not None:
        for sid, n in found:
            if n == name:
                return sid, n
        raise StorageUsageError(f"--study-name: no study {name!r} in {mask(url)} (studies: {names})")
    if len(found) == 1:
        return found[0]
    for sid, n in found:
        if n == DEFAULT_STUDY:
            return sid, n
    if not found:
        raise StorageUsageError(f"--storage: {mask(url)} holds no studies (start one with `study run`)")
    raise StorageUsageError(f"--study-name: {mask(url)} holds several studies ({names}); name one")


def study_name(url: str, name: str | None) -> str:
    """Resolve `name` as `resolve_study` does, reading the storage read-only."""
    with read_only(url) as conn:
        return resolve_study(conn, url, name)[1]


def study_id(conn: Connection, name: str) -> int:
    """The id of the study named exactly `name` (KeyError: none)."""
    row = conn.execute(_text("SELECT study_id FROM studies WHERE study_name = :name"),
                       {"name": name}).first()
    if row is None:
        raise KeyError(name)
    return int(row[0])


def study_attr(conn: Connection, sid: int, key: str) -> Any:
    """A study user attribute, decoded from its JSON; None when it is not set."""
    row = conn.execute(_text(
        "SELECT value_json FROM study_user_attributes WHERE study_id = :sid AND key = :key"),
        {"sid": sid, "key": key}).first()
    return json.loads(row[0]) if row is not None else None


@dataclass(frozen=True)
class StudySummary:
    name: str
    direction: str  # "minimize" or "maximize"
    trials: int
    complete: int
    pruned: int
    fail: int
    running: int  # RUNNING or WAITING
    best: float | None  # the best finite value in the study's direction


_STUDIES_SQL = """
SELECT s.study_id, s.study_name, d.direction,
       COUNT(t.trial_id) AS trials,
       SUM(CASE WHEN t.state = 'COMPLETE' THEN 1 ELSE 0 END) AS complete,
       SUM(CASE WHEN t.state = 'PRUNED' THEN 1 ELSE 0 END) AS pruned,
       SUM(CASE WHEN t.state = 'FAIL' THEN 1 ELSE 0 END) AS fail,
       SUM(CASE WHEN t.state IN ('RUNNING', 'WAITING') THEN 1 ELSE 0 END) AS running,
       MIN(v.value) AS min_value, MAX(v.value) AS max_value
FROM studies s
LEFT JOIN study_directions d ON d.study_id = s.study_id AND d.objective = 0
LEFT JOIN trials t ON t.study_id = s.study_id
LEFT JOIN trial_values v ON v.trial_id = t.trial_id AND v.objective = 0
    AND v.value_type = 'FINITE'
GROUP BY s.study_id, s.study_name, d.direction
ORDER BY s.study_id"""


def study_summaries(conn: Connection, url: str) -> list[StudySummary]:
    """Every study with its trials counted by state and its best finite value."""
    studies(conn, url)  # a storage without Optuna's schema gets its own message
    out = []
    for _, name, direction, n, complete, pruned, fail, running, low, high in conn.execute(
            _text(_STUDIES_SQL)):
        direction = state_name(direction).lower()
        best = high if direction == "maximize" else low
        out.append(StudySummary(str(name), direction, int(n), int(complete or 0),
                                int(pruned or 0), int(fail or 0), int(running or 0),
                                None if best is None else float(best)))
    return out


# --------------------------------------------------------------------------- trials

_TRIALS_SQL = f"""
SELECT t.trial_id, t.number, t.state, t.datetime_start, t.datetime_complete,
       MAX(CASE WHEN p.param_name = '{BATCH_SIZE}' THEN p.param_value END) AS batch_size,
       MAX(CASE WHEN p.param_name = '{LEARNING_RATE}' THEN p.param_value END) AS learning_rate,
       MAX(CASE WHEN p.param_name = '{SEED}' THEN p.param_value END) AS seed
FROM trials t LEFT JOIN trial_params p ON p.trial_id = t.trial_id
WHERE t.study_id = :study_id
GROUP BY t.trial_id, t.number, t.state, t.datetime_start, t.datetime_complete
ORDER BY t.number"""

_VALUES_SQL = """
SELECT v.trial_id, v.value, v.value_type FROM trial_values v
JOIN trials t ON t.trial_id = v.trial_id
WHERE t.study_id = :study_id AND v.objective = 0"""

_ATTRS_SQL = """
SELECT a.trial_id, a.key, a.value_json FROM trial_user_attributes a
JOIN trials t ON t.trial_id = a.trial_id
WHERE t.study_id = :study_id{skip}"""

_INTERMEDIATE_SQL = """
SELECT t.trial_id, i.step, i.intermediate_value, i.intermediate_value_type
FROM trial_intermediate_values i JOIN trials t ON t.trial_id = i.trial_id
WHERE t.study_id = :study_id ORDER BY t.number, i.step"""


@dataclass(frozen=True)
class TrialRow:
    trial_id: int
    record: TrialRecord
    duration: float | None  # seconds from start to completion, as Optuna timed it
    attrs: dict[str, Any]


def values(conn: Connection, sid: int) -> dict[int, float | None]:
    """Each trial's objective value (the first objective), by trial id."""
    return {int(tid): float_value(v, vt) for tid, v, vt in
            conn.execute(_text(_VALUES_SQL), {"study_id": sid})}


def trial_attrs(conn: Connection, sid: int, curves: bool,
                step_curves: bool = False) -> dict[int, dict[str, Any]]:
    """Each trial's user attributes, decoded, by trial id; the per-epoch curves only when
    `curves` (the step curve alone with `step_curves`): they are most of the bytes."""
    # Our own constant names, quoted: no user input reaches this string.
    skipped = [k for k in R.CURVES if not (step_curves and k == R.STEP_CURVE)]
    skip = "" if curves else f" AND a.key NOT IN ({', '.join(f'{k!r}' for k in skipped)})"
    out: dict[int, dict[str, Any]] = defaultdict(dict)
    for trial_id, key, value_json in conn.execute(_text(_ATTRS_SQL.format(skip=skip)),
                                                  {"study_id": sid}):
        out[int(trial_id)][str(key)] = json.loads(value_json)
    return out


def trial_rows(conn: Connection, sid: int, curves: bool = False,
               step_curves: bool = False) -> list[TrialRow]:
    """Every trial of the study, its record built by `records.record` as the report's is
    (with its step curve when `curves` or `step_curves`)."""
    vals = values(conn, sid)
    attrs = trial_attrs(conn, sid, curves, step_curves)
    out = []
    for tid, number, state, start, complete, bs, lr, seed in conn.execute(
            _text(_TRIALS_SQL), {"study_id": sid}):
        a = attrs.get(int(tid), {})
        # Optuna stores a parameter's internal value: for our int and float (log)
        # distributions that is the value itself, as a float.
        params = {k: v for k, v in ((BATCH_SIZE, bs), (LEARNING_RATE, lr), (SEED, seed))
                  if v is not None}
        record = R.record(int(number), state_name(state), params, vals.get(int(tid)), a)
        began, ended = when(start), when(complete)
        duration = (ended - began).total_seconds() if began and ended else None
        out.append(TrialRow(int(tid), record, duration, a))
    return out


def intermediate_values(conn: Connection, sid: int) -> dict[int, dict[int, float | None]]:
    """Each trial's reported values (the per-epoch objective) by step, by trial id."""
    out: dict[int, dict[int, float | None]] = defaultdict(dict)
    for tid, step, value, value_type in conn.execute(_text(_INTERMEDIATE_SQL),
                                                     {"study_id": sid}):
        out[int(tid)][int(step)] = float_value(value, value_type)
    return out


def param_names(conn: Connection, sid: int) -> tuple[str, ...]:
    """The names of every parameter any trial of the study has, sorted."""
    return tuple(sorted(str(name) for (name,) in conn.execute(_text(
        "SELECT DISTINCT p.param_name FROM trial_params p JOIN trials t "
        "ON t.trial_id = p.trial_id WHERE t.study_id = :study_id"), {"study_id": sid})))


# --------------------------------------------------------------------------- for Optuna's plots


@dataclass(frozen=True)
class PlotTrial:
    """What Optuna's own figures read of a trial: no attributes."""

    trial_id: int
    number: int
    state: str
    start: datetime.datetime | None
    complete: datetime.datetime | None
    params: dict[str, tuple[float, str]]  # name -> (internal value, distribution JSON)
    value: float | None


def plot_trials(conn: Connection, sid: int) -> list[PlotTrial]:
    """Every trial of the study as Optuna's figures read it, by number."""
    sql = {"study_id": sid}
    params: dict[int, dict[str, tuple[float, str]]] = {}
    for tid, name, value, dist in conn.execute(_text(
            "SELECT p.trial_id, p.param_name, p.param_value, p.distribution_json "
            "FROM trial_params p JOIN trials t ON t.trial_id = p.trial_id "
            "WHERE t.study_id = :study_id"), sql):
        params.setdefault(int(tid), {})[str(name)] = (float(value), str(dist))
    vals = values(conn, sid)
    return [PlotTrial(int(tid), int(number), state_name(state), when(start), when(end),
                      params.get(int(tid), {}), vals.get(int(tid)))
            for tid, number, state, start, end in conn.execute(_text(
                "SELECT trial_id, number, state, datetime_start, datetime_complete FROM "
                "trials WHERE study_id = :study_id ORDER BY number"), sql)]


def curves_of(conn: Connection, trial_ids: Iterable[int]) -> dict[int, dict[int, float]]:
    """The reported values of the given trials only (NaN for a null), by step."""
    import sqlalchemy

    ids = list(trial_ids)
    out: dict[int, dict[int, float]] = {}
    for tid, step, value, kind in conn.execute(_text(
            "SELECT trial_id, step, intermediate_value, intermediate_value_type "
            "FROM trial_intermediate_values WHERE trial_id IN :ids").bindparams(
                sqlalchemy.bindparam("ids", expanding=True)), {"ids": ids or [-1]}):
        v = float_value(value, kind)
        out.setdefault(int(tid), {})[int(step)] = math.nan if v is None else v
    return out
