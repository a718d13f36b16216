"""Read-only questions to the study database: named queries and raw SQL over Optuna's schema.

Everything goes through `storage.read_only`: SQLite opened with `mode=ro`, other
engines inside a read-only transaction. On SQLite we also install an authorizer that
allows nothing but reading, because `mode=ro` alone still lets `ATTACH` and `VACUUM
INTO` create other files. A statement the database refuses is a usage error (exit 2)
and the file is left byte for byte as it was.

Named queries are plain SQL over Optuna's tables (portable: no JSON functions, which
differ between engines); our trial facts are JSON in `trial_user_attributes.value_json`
and are decoded here. No pandas: a `Table` is columns plus rows.
"""

from __future__ import annotations

import csv
import datetime
import io
import json
import math
import re
import sqlite3
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from study import analysis
from study import records as R
from study.analysis import TrialRecord
from study.errors import StorageUsageError, UsageError
from study.space import BATCH_SIZE, LEARNING_RATE, SEED
from study.storage import mask, read_only

if TYPE_CHECKING:
    import sqlalchemy

NAMED = ("trials", "grid", "best-lr", "curves", "studies")
FORMATS = ("table", "csv", "json")
DEFAULT_STUDY = "article"

Value = str | int | float | None


@dataclass(frozen=True)
class Table:
    """A query's answer. `display`, when given, is how the text table shows each row."""

    columns: tuple[str, ...]
    rows: tuple[tuple[Value, ...], ...]
    display: tuple[tuple[str, ...], ...] | None = None


# --------------------------------------------------------------------------- formats


def _text(v: object) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def _plain(v: object) -> object:
    """A JSON-safe value: JSON has no NaN or infinity, so those become null."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, int | float | str) or v is None:
        return v
    if isinstance(v, bytes):
        return v.hex()
    return str(v)  # datetimes, decimals, ... from raw SQL


def render(table: Table, fmt: str) -> str:
    """The table as text: `table` (aligned columns), `csv`, or `json` (a list of objects)."""
    if fmt == "table":
        rows = table.display if table.display is not None else \
            tuple(tuple(_text(v) for v in row) for row in table.rows)
        if not table.columns:
            return ""
        return analysis.render_table(table.columns, rows)
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(table.columns)
        for row in table.rows:
            writer.writerow(["" if v is None else _plain(v) for v in row])
        return buf.getvalue().rstrip("\n")
    if fmt == "json":
        objects = [dict(zip(table.columns, map(_plain, row), strict=True)) for row in table.rows]
        return json.dumps(objects, indent=2, allow_nan=False)
    raise UsageError(f"--format: expected one of {', '.join(FORMATS)}, got {fmt!r}")


# --------------------------------------------------------------------------- read-only seam

# Statements that only read. The database is the guarantee (read-only connection,
# authorizer); this check just gives the obvious mistake a clear message first.
READ_KEYWORDS = ("SELECT", "WITH", "VALUES", "EXPLAIN", "PRAGMA", "SHOW", "TABLE")

# PRAGMAs that only describe the database; anything else (a pragma that sets) is refused.
_READ_PRAGMAS = {
    "table_info", "table_xinfo", "table_list", "index_list", "index_info", "index_xinfo",
    "foreign_key_list", "database_list", "collation_list", "function_list", "pragma_list",
    "compile_options", "user_version", "schema_version", "application_id", "page_count",
    "page_size", "freelist_count", "encoding", "journal_mode", "data_version",
}
_WITH_ARGUMENT = {"table_info", "table_xinfo", "index_list", "index_info", "index_xinfo",
                  "foreign_key_list", "table_list"}


def _sqlite_authorizer(action: int, arg1: str | None, arg2: str | None, db: str | None,
                       source: str | None) -> int:
    if action in (sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION,
                  sqlite3.SQLITE_RECURSIVE):
        return sqlite3.SQLITE_OK
    if action == sqlite3.SQLITE_PRAGMA and arg1 is not None:
        name = arg1.lower()
        if name in _READ_PRAGMAS and (arg2 is None or name in _WITH_ARGUMENT):
            return sqlite3.SQLITE_OK
    return sqlite3.SQLITE_DENY


def _lock_down(conn: sqlalchemy.engine.Connection) -> None:
    raw = conn.connection.driver_connection
    if isinstance(raw, sqlite3.Connection):
        raw.set_authorizer(_sqlite_authorizer)


def _first_keyword(sql: str) -> str:
    # Skip leading comments and parentheses: "-- why\n(SELECT ...)" is a SELECT.
    text = re.sub(r"^(\s|--[^\n]*(\n|$)|/\*.*?\*/|\()+", "", sql, flags=re.S)
    match = re.match(r"[A-Za-z]+", text)
    return match.group(0).upper() if match else ""


def _refusal(e: BaseException) -> str:
    orig = getattr(e, "orig", None) or e
    lines = str(orig).strip().splitlines() or [type(orig).__name__]
    return lines[0]


def run_sql(url: str, sql: str) -> Table:
    """Run one read-only statement; a write (or any statement the database refuses) is exit 2."""
    import sqlalchemy.exc

    if not sql.strip():
        raise UsageError("--sql: the statement is empty")
    keyword = _first_keyword(sql)
    if keyword not in READ_KEYWORDS:
        raise UsageError(
            f"--sql: {keyword or sql.strip()[:20]!r} is not a read-only statement; study query "
            f"runs {', '.join(READ_KEYWORDS)} and never changes the database"
        )
    with read_only(url) as conn:
        _lock_down(conn)
        if conn.dialect.paramstyle in ("format", "pyformat"):
            # psycopg reads % as a placeholder even in string literals; %% is a plain %.
            sql = sql.replace("%", "%%")
        try:
            result = conn.exec_driver_sql(sql)
            if not result.returns_rows:
                return Table((), ())
            columns = tuple(result.keys())
            rows = tuple(tuple(row) for row in result.fetchall())
        except sqlalchemy.exc.DBAPIError as e:
            message = _refusal(e)
            if re.search(r"read-?only|not authorized|authorization denied", message, re.I):
                raise UsageError(
                    f"--sql: refused, the database is open read-only ({message})"
                ) from None
            raise UsageError(f"--sql: {message}") from None
    return Table(columns, rows)


# --------------------------------------------------------------------------- studies


def _studies(conn: sqlalchemy.engine.Connection, url: str) -> list[tuple[int, str]]:
    import sqlalchemy

    try:
        rows = conn.execute(sqlalchemy.text(
            "SELECT study_id, study_name FROM studies ORDER BY study_id")).all()
    except sqlalchemy.exc.DBAPIError:
        raise StorageUsageError(
            f"--storage: {mask(url)} holds no Optuna studies (start one with `study run`)"
        ) from None
    return [(int(r[0]), str(r[1])) for r in rows]


def resolve_study(conn: sqlalchemy.engine.Connection, url: str, name: str | None
                  ) -> tuple[int, str]:
    """The study asked for; without a name, `article`, or else the storage's only study."""
    studies = _studies(conn, url)
    names = ", ".join(repr(n) for _, n in studies) or "none"
    if name is not None:
        for sid, n in studies:
            if n == name:
                return sid, n
        raise StorageUsageError(f"--study-name: no study {name!r} in {mask(url)} (studies: {names})")
    if len(studies) == 1:
        return studies[0]
    for sid, n in studies:
        if n == DEFAULT_STUDY:
            return sid, n
    if not studies:
        raise StorageUsageError(f"--storage: {mask(url)} holds no studies (start one with `study run`)")
    raise StorageUsageError(f"--study-name: {mask(url)} holds several studies ({names}); name one")


def study_name(url: str, name: str | None) -> str:
    """Resolve `name` as `resolve_study` does, reading the storage read-only."""
    with read_only(url) as conn:
        return resolve_study(conn, url, name)[1]


# --------------------------------------------------------------------------- trial rows

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
WHERE t.study_id = :study_id AND a.key IN ({keys})"""

_INTERMEDIATE_SQL = """
SELECT t.trial_id, i.step, i.intermediate_value, i.intermediate_value_type
FROM trial_intermediate_values i JOIN trials t ON t.trial_id = i.trial_id
WHERE t.study_id = :study_id ORDER BY t.number, i.step"""

_ROW_ATTRS = (R.STATUS, R.SEED_ATTR, R.TRAIN_LOSS, R.VAL_LOSS, R.FULL_TRAIN_LOSS, R.SECONDS)


def _float(value: object, value_type: object) -> float | None:
    """A stored value: Optuna keeps infinities as a type tag beside a null value."""
    kind = str(getattr(value_type, "name", value_type))
    if kind == "INF_POS":
        return math.inf
    if kind == "INF_NEG":
        return -math.inf
    if kind == "NAN":
        return math.nan
    return None if value is None else float(value)  # type: ignore[arg-type]


def _when(v: object) -> datetime.datetime | None:
    if v is None or isinstance(v, datetime.datetime):
        return v
    return datetime.datetime.fromisoformat(str(v))


def _num(v: object) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


@dataclass(frozen=True)
class TrialRow:
    trial_id: int
    record: TrialRecord
    duration: float | None  # seconds from start to completion, as Optuna timed it
    attrs: dict[str, Any]


def _attrs(conn: sqlalchemy.engine.Connection, study_id: int, keys: Sequence[str]
           ) -> dict[int, dict[str, Any]]:
    import sqlalchemy

    # Our own constant names, quoted: no user input reaches this string.
    sql = _ATTRS_SQL.format(keys=", ".join(f"'{k}'" for k in keys))
    out: dict[int, dict[str, Any]] = defaultdict(dict)
    for trial_id, key, value_json in conn.execute(sqlalchemy.text(sql), {"study_id": study_id}):
        out[int(trial_id)][str(key)] = json.loads(value_json)
    return out


def trial_rows(conn: sqlalchemy.engine.Connection, study_id: int,
               extra_attrs: Sequence[str] = ()) -> list[TrialRow]:
    import sqlalchemy

    values = {int(tid): _float(v, vt) for tid, v, vt in
              conn.execute(sqlalchemy.text(_VALUES_SQL), {"study_id": study_id})}
    attrs = _attrs(conn, study_id, [*_ROW_ATTRS, *extra_attrs])
    out = []
    for tid, number, state, start, complete, bs, lr, seed in conn.execute(
            sqlalchemy.text(_TRIALS_SQL), {"study_id": study_id}):
        state = str(getattr(state, "name", state))
        a = attrs.get(int(tid), {})
        default_status = {"COMPLETE": "complete", "PRUNED": "pruned", "RUNNING": "running",
                          "WAITING": "waiting"}.get(state, "error")
        if seed is None:
            seed = a.get(R.SEED_ATTR)
        began, ended = _when(start), _when(complete)
        record = TrialRecord(
            number=int(number), state=state,
            batch_size=int(bs) if bs is not None else None,
            learning_rate=float(lr) if lr is not None else None,
            seed=int(seed) if seed is not None else None,
            value=values.get(int(tid)) if state == "COMPLETE" else None,
            status=str(a.get(R.STATUS, default_status)),
            train_loss=_num(a.get(R.TRAIN_LOSS)), val_loss=_num(a.get(R.VAL_LOSS)),
            full_train_loss=_num(a.get(R.FULL_TRAIN_LOSS)), seconds=_num(a.get(R.SECONDS)),
        )
        duration = (ended - began).total_seconds() if began and ended else None
        out.append(TrialRow(int(tid), record, duration, a))
    return out


# --------------------------------------------------------------------------- named queries


def _trials(rows: Sequence[TrialRow]) -> Table:
    columns = ("number", "state", "batch_size", "learning_rate", "seed", "objective",
               "val_loss", "duration", "status")
    out = []
    for row in rows:
        r = row.record
        out.append((r.number, r.state, r.batch_size, r.learning_rate, r.seed, r.value,
                    r.val_loss, None if row.duration is None else round(row.duration, 2),
                    r.status))
    return Table(columns, tuple(out))


def _grid(rows: Sequence[TrialRow]) -> Table:
    g = analysis.grid(row.record for row in rows)
    header, display = analysis.grid_rows(g)
    out = []
    for b in g.batch_sizes:
        cells: list[Value] = [b]
        for lr in g.learning_rates:
            cell = g.cell(b, lr)
            mean = cell.mean if cell is not None else None
            # A number where there is one; otherwise the outcome as a word, never a number.
            if mean is None and cell is not None:
                cells.append("diverged" if cell.diverged else "pruned" if cell.pruned else None)
            else:
                cells.append(mean)
        out.append(tuple(cells))
    return Table(tuple(header), tuple(out), tuple(tuple(r) for r in display))


def _best_lr(rows: Sequence[TrialRow]) -> Table:
    g = analysis.grid(row.record for row in rows)
    columns = ("batch_size", "learning_rate", "objective", "runs", "diverged_lrs")
    out = []
    for cell in analysis.best_per_batch_size(g):
        diverged = [lr for lr in g.learning_rates
                    if (c := g.cell(cell.batch_size, lr)) is not None and c.diverged]
        out.append((cell.batch_size, cell.learning_rate, cell.mean, len(cell.values),
                    ",".join(f"{lr:g}" for lr in diverged) or None))
    return Table(columns, tuple(out))


def _curves(conn: sqlalchemy.engine.Connection, study_id: int, name: str,
            rows: Sequence[TrialRow], trial: int | None) -> Table:
    import sqlalchemy

    if trial is not None:
        chosen = [row for row in rows if row.record.number == trial]
        if not chosen:
            span = f"trials 0..{len(rows) - 1}" if rows else "no trials"
            raise UsageError(f"--trial: no trial {trial} in study {name!r} ({span})")
        rows = chosen
    wanted = {row.trial_id for row in rows}
    reported: dict[int, dict[int, float | None]] = defaultdict(dict)
    for tid, step, value, value_type in conn.execute(sqlalchemy.text(_INTERMEDIATE_SQL),
                                                     {"study_id": study_id}):
        if int(tid) in wanted:
            reported[int(tid)][int(step)] = _float(value, value_type)
    columns = ("trial", "batch_size", "learning_rate", "seed", "epoch", "train_loss",
               "val_loss", "objective")
    out = []
    for row in rows:
        train = row.attrs.get(R.TRAIN_CURVE) or []
        val = row.attrs.get(R.VAL_CURVE) or []
        steps = reported.get(row.trial_id, {})
        r = row.record
        for epoch in range(1, max(len(train), len(val), max(steps, default=0)) + 1):
            out.append((r.number, r.batch_size, r.learning_rate, r.seed, epoch,
                        train[epoch - 1] if epoch <= len(train) else None,
                        val[epoch - 1] if epoch <= len(val) else None,
                        steps.get(epoch)))
    return Table(columns, tuple(out))


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


def _studies_table(conn: sqlalchemy.engine.Connection, url: str) -> Table:
    import sqlalchemy

    _studies(conn, url)  # a storage without Optuna's schema gets its own message
    columns = ("study", "direction", "trials", "complete", "pruned", "fail", "running", "best")
    out = []
    for _, name, direction, n, complete, pruned, fail, running, low, high in conn.execute(
            sqlalchemy.text(_STUDIES_SQL)):
        direction = str(getattr(direction, "name", direction)).lower()
        best = high if direction == "maximize" else low
        out.append((str(name), direction, int(n), int(complete or 0), int(pruned or 0),
                    int(fail or 0), int(running or 0), None if best is None else float(best)))
    return Table(columns, tuple(out))


def run_named(url: str, name: str, study: str | None = None, trial: int | None = None) -> Table:
    """One of the named queries (`NAMED`) on the study `study` (see `resolve_study`)."""
    if name not in NAMED:
        raise UsageError(f"query: unknown query {name!r}; choose one of {', '.join(NAMED)}")
    if trial is not None and name != "curves":
        raise UsageError(f"--trial: only the curves query takes a trial, not {name!r}")
    with read_only(url) as conn:
        _lock_down(conn)
        if name == "studies":
            return _studies_table(conn, url)
        study_id, resolved = resolve_study(conn, url, study)
        if name == "curves":
            rows = trial_rows(conn, study_id, (R.TRAIN_CURVE, R.VAL_CURVE))
            return _curves(conn, study_id, resolved, rows, trial)
        rows = trial_rows(conn, study_id)
        return {"trials": _trials, "grid": _grid, "best-lr": _best_lr}[name](rows)
