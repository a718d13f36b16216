"""Read-only questions to the study database: named queries and raw SQL over Optuna's schema.

Everything goes through `storage.read_only`: SQLite opened with `mode=ro`, PostgreSQL
in a session whose every transaction is read-only, other engines inside a read-only
transaction. On SQLite we also install an authorizer that allows nothing but reading,
because `mode=ro` alone still lets `ATTACH` and `VACUUM INTO` create other files.
`--sql` is held to exactly one statement by the driver and the database (`run_sql`); a
statement they refuse is a usage error (exit 2) and the database is left as it was.

Named queries are plain SQL over Optuna's tables (portable: no JSON functions, which
differ between engines); our trial facts are JSON in `trial_user_attributes.value_json`
and are decoded here. No pandas: a `Table` is columns plus rows.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import re
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from study import analysis, store
from study import critical as C
from study import records as R
from study import scaling as S
from study.errors import StorageUsageError, UsageError
from study.spec import Spec, from_stored
from study.storage import parse_url, read_only

if TYPE_CHECKING:
    import sqlalchemy

NAMED = ("trials", "grid", "best-lr", "scaling", "critical-batch", "curves", "studies")
FORMATS = ("table", "csv", "json")

Value = str | int | float | None


@dataclass(frozen=True)
class Table:
    """A query's answer. `display`, when given, is how the text table shows each row (under
    `display_columns`, when given); `notes` are lines printed below the text table only."""

    columns: tuple[str, ...]
    rows: tuple[tuple[Value, ...], ...]
    display: tuple[tuple[str, ...], ...] | None = None
    display_columns: tuple[str, ...] | None = None
    notes: tuple[str, ...] = ()
    left: tuple[int, ...] = ()  # text-table columns aligned left (besides the first)

    def to_dicts(self) -> list[dict[str, Value]]:
        """One dict per row, column name to value (NaN and infinities kept as floats)."""
        return [dict(zip(self.columns, row, strict=True)) for row in self.rows]

    def to_pandas(self) -> Any:
        """The rows as a `pandas.DataFrame` (typed Any: pandas is optional, not a dependency,
        so its types may be absent); without pandas, `MissingDependency`."""
        import importlib

        try:
            # By name: pandas is optional, and its type stubs may be absent too.
            pandas = importlib.import_module("pandas")
        except ImportError as e:
            from study.errors import MissingDependency

            raise MissingDependency(
                f"Table.to_pandas needs pandas, which is not installed ({e}): "
                "pip install 'study[notebook]' (in a checkout: .venv/bin/pip install -e "
                "'.[notebook]'), or use .to_dicts()") from None
        return pandas.DataFrame(list(self.rows), columns=list(self.columns))

    def __str__(self) -> str:
        """The text table `study query` prints, with its notes."""
        return render(self, "table") or "(no columns)"

    def __repr__(self) -> str:
        return str(self)


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
        columns = table.display_columns or table.columns
        if not columns:
            return ""
        return "\n".join([analysis.render_table(columns, rows, table.left), *table.notes])
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(table.columns)
        for row in table.rows:
            writer.writerow(["" if v is None else _plain(v) for v in row])
        return buf.getvalue().rstrip("\n")
    if fmt == "json":
        objects = [{k: _plain(v) for k, v in row.items()} for row in table.to_dicts()]
        return json.dumps(objects, indent=2, allow_nan=False)
    raise UsageError(f"--format: expected one of {', '.join(FORMATS)}, got {fmt!r}")


# --------------------------------------------------------------------------- read-only seam

# Statements that only read. The walls are the driver and the database (below); this
# check just gives the obvious mistake a clear message first.
READ_KEYWORDS = ("SELECT", "WITH", "VALUES", "EXPLAIN", "PRAGMA", "SHOW", "TABLE")
# On PostgreSQL, what runs as the query of a cursor (the server accepts nothing else there).
_PG_QUERIES = ("SELECT", "WITH", "VALUES", "TABLE")
# ... and what runs as itself, only as the text's very first word (`_runs_as_itself`).
_PG_OWN = ("EXPLAIN", "SHOW")

# PostgreSQL functions whose effects outlive the read-only transaction or reach beyond the
# database (other sessions, settings, locks, the server's files, other connections), or
# that run a query given as text. A read-only transaction does not stop them and a
# superuser may call them all, so a role without those rights is the real wall (README);
# refusing them by name is a courtesy for the obvious cases.
_PG_ACTING = re.compile(
    r"\b(pg_terminate_backend|pg_cancel_backend|pg_reload_conf|pg_rotate_logfile|pg_switch_wal"
    r"|pg_promote|pg_create_restore_point|pg_log_backend_memory_contexts|pg_stat_reset\w*"
    r"|pg_(try_)?advisory_\w+|pg_backup_\w+|pg_file_\w+|pg_(create|drop|copy)_\w*_slot"
    r"|pg_replication_\w+|pg_read_file|pg_read_binary_file|pg_ls_\w+|pg_stat_file|set_config"
    r"|lo_(import|export|creat|create|unlink|open|put|from_bytea|truncate|truncate64)|lowrite"
    r"|dblink\w*|query_to_xml\w*|cursor_to_xml\w*)\b"
    r"|\bU&\"",  # an identifier spelled in Unicode escapes could hide any of these names
    re.I)


def _runs_as_itself(sql: str) -> bool:
    """Whether the text's very first word, as PostgreSQL's lexer reads it (no comment
    before it), is EXPLAIN or SHOW."""
    return re.match(r"(EXPLAIN|SHOW)\b", sql.lstrip(" \t\n\r\f\v"), re.I) is not None

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


def _explain(message: str) -> UsageError:
    """The database's refusal as a usage error that says why it was refused."""
    if re.search(r"multiple commands|one statement at a time", message, re.I):
        return UsageError(f"--sql: study query runs exactly one statement ({message})")
    if re.search(r"data-modifying", message, re.I):
        return UsageError(f"--sql: refused, a WITH that changes data is not a read ({message})")
    if re.search(r"read-?only|not authorized|authorization denied|read-write mode", message,
                 re.I):
        return UsageError(f"--sql: refused, the database is open read-only ({message})")
    return UsageError(f"--sql: {message}")


def _sqlite_statement(raw: sqlite3.Connection, sql: str) -> Table:
    """One statement through sqlite3, which compiles one and refuses a text holding more,
    on a connection opened `mode=ro` whose authorizer allows only reading."""
    raw.set_authorizer(_sqlite_authorizer)
    try:
        cursor = raw.execute(sql)
        columns = tuple(d[0] for d in cursor.description or ())
        rows = tuple(tuple(row) for row in cursor.fetchall()) if columns else ()
    except (sqlite3.Error, sqlite3.Warning) as e:  # several statements: Warning before 3.12
        raise _explain(_refusal(e)) from None
    return Table(columns, rows)


def _pg_statement(raw: Any, sql: str) -> Table:
    """One statement on PostgreSQL, every wall held by the server.

    - The session is read-only (`default_transaction_read_only`, set at connect by
      `read_only`): writes, data-modifying CTEs and `nextval` are refused.
    - The text goes through the extended query protocol (a prepared statement), which
      holds one statement: "SELECT 1; COMMIT; DELETE ..." is refused whole, never run in
      part. (psycopg sends a parameterless text by the simple protocol, which runs
      several statements, so `prepare=True` is not optional here.)
    - The text runs as the query of a cursor (`DECLARE ... CURSOR FOR <text>`): the
      server's grammar admits only SELECT, VALUES, TABLE or WITH there, with no
      data-modifying WITH, so COPY, DO, CALL, SET, COMMIT or a comment hiding one is a
      syntax error, never run. Only a text whose very first word is EXPLAIN or SHOW (no
      comment before it, so the server reads the same word) runs as itself.
    - Afterwards the transaction must still be open and read-only, and the session's
      default unchanged; otherwise the statement is refused (and rolled back).
    """
    import psycopg

    raw.prepare_threshold = 0  # None would make psycopg ignore prepare=True
    try:
        with raw.cursor() as cursor:
            if _runs_as_itself(sql):
                cursor.execute(sql, prepare=True)
            else:
                cursor.execute("DECLARE study_sql NO SCROLL CURSOR FOR\n" + sql, prepare=True)
                cursor.execute("FETCH ALL FROM study_sql", prepare=True)
            columns = tuple(d.name for d in cursor.description or ())
            rows = tuple(tuple(row) for row in cursor.fetchall()) if columns else ()
            if raw.info.transaction_status != psycopg.pq.TransactionStatus.INTRANS:
                raise UsageError("--sql: refused, the statement ended the read-only transaction")
            cursor.execute("SELECT current_setting('transaction_read_only'), "
                           "current_setting('default_transaction_read_only')", prepare=True)
            if cursor.fetchone() != ("on", "on"):
                raise UsageError("--sql: refused, the statement turned the read-only setting off")
    except psycopg.Error as e:
        raise _explain(_refusal(e)) from None
    return Table(columns, rows)


def _sql_backend(url: str) -> str:
    """Which of the engines that can hold `--sql` to one read-only statement `url` names."""
    parsed = parse_url(url)
    backend, driver = parsed.get_backend_name(), parsed.get_driver_name()
    if backend == "sqlite":
        return backend  # `read_only` opens SQLite with sqlite3, whatever the URL's driver
    if backend == "postgresql" and driver == "psycopg":
        return backend
    raise StorageUsageError(
        f"--sql: runs on SQLite and on PostgreSQL through psycopg (postgresql+psycopg://...), "
        f"where the driver and the database hold it to one read-only statement; not on "
        f"{parsed.drivername} (the named queries work there)")


def run_sql(url: str, sql: str) -> Table:
    """Run one read-only statement; a write, several statements, or any statement the
    database refuses is a usage error (exit 2), and nothing is changed."""
    if not sql.strip():
        raise UsageError("--sql: the statement is empty")
    backend = _sql_backend(url)
    keyword = _first_keyword(sql)
    if keyword not in READ_KEYWORDS:
        raise UsageError(
            f"--sql: {keyword or sql.strip()[:20]!r} is not a read-only statement; study query "
            f"runs {', '.join(READ_KEYWORDS)} and never changes the database"
        )
    if backend == "postgresql":
        if keyword in _PG_OWN and not _runs_as_itself(sql):
            raise UsageError(f"--sql: on PostgreSQL, {keyword} must be the statement's first "
                             "word (no comment before it)")
        if keyword == "PRAGMA":
            raise UsageError("--sql: PRAGMA is SQLite's; on PostgreSQL study query runs "
                             f"{', '.join(_PG_QUERIES + _PG_OWN)}")
        acting = _PG_ACTING.search(sql)
        if acting:
            raise UsageError(f"--sql: refused, {acting.group(0)!r} acts beyond reading the "
                             "database (sessions, settings, locks, server files); study query "
                             "does not run it")
    return execute_read_only(url, sql, backend)


def execute_read_only(url: str, sql: str, backend: str) -> Table:
    """`run_sql` past its keyword check: what the driver and the database alone enforce."""
    with read_only(url) as conn:
        raw = conn.connection.driver_connection
        if backend == "sqlite":
            assert isinstance(raw, sqlite3.Connection)
            return _sqlite_statement(raw, sql)
        return _pg_statement(raw, sql)


# --------------------------------------------------------------------------- studies

# The readers of Optuna's tables are store's; these names stay importable from here.
DEFAULT_STUDY = store.DEFAULT_STUDY
TrialRow = store.TrialRow
resolve_study = store.resolve_study
study_name = store.study_name
trial_rows = store.trial_rows


# --------------------------------------------------------------------------- named queries


def _trials(rows: Sequence[TrialRow]) -> Table:
    columns: tuple[str, ...] = ("number", "state", "batch_size", "learning_rate", "seed",
                                "objective", "val_loss", "duration", "status", "trainer")
    # A classification study's trials also have their final accuracies.
    accuracy = any(row.record.val_accuracy is not None or row.record.train_accuracy is not None
                   for row in rows)
    if accuracy:
        columns += ("train_accuracy", "val_accuracy")
    out = []
    for row in rows:
        r = row.record
        values: tuple[Value, ...] = (
            r.number, r.state, r.batch_size, r.learning_rate, r.seed, r.value, r.val_loss,
            None if row.duration is None else round(row.duration, 2), r.status,
            None if row.attrs.get(R.TRAINER) is None else str(row.attrs[R.TRAINER]))
        out.append(values + ((r.train_accuracy, r.val_accuracy) if accuracy else ()))
    return Table(columns, tuple(out))


def _objective_note(spec: Spec | None) -> str:
    """Which objective a table's `objective` is (every objective is minimized)."""
    if spec is None:
        return "Objective: the study's value (no spec stored)."
    label = S.OBJECTIVE_LABELS.get(spec.train.objective, spec.train.objective)
    return f"Objective: {label} (train.objective = " \
        f"{spec.train.objective!r}), minimized."


def _seed_note(g: analysis.Grid) -> str:
    if analysis.repeats(g):
        return f"Each cell: the mean over seeds [{analysis.BOOTSTRAP_WORDS}]."
    return "Single seed: one run per cell, no interval."


def _grid(rows: Sequence[TrialRow]) -> Table:
    """The mean objective per cell; with repeats, each mean's 95% bootstrap interval too
    (as `lr=X low` / `lr=X high` columns in CSV and JSON, beside the mean in the table)."""
    g = analysis.grid(row.record for row in rows)
    intervals = analysis.repeats(g)
    header, display = analysis.grid_rows(g, intervals)
    columns = list(header)
    if intervals:
        columns += [f"lr={lr:g} {end}" for lr in g.learning_rates for end in ("low", "high")]
    out = []
    for b in g.batch_sizes:
        cells: list[Value] = [b]
        bounds: list[Value] = []
        for lr in g.learning_rates:
            cell = g.cell(b, lr)
            mean = cell.mean if cell is not None else None
            # A number where there is one; otherwise the outcome as a word, never a number.
            if mean is None and cell is not None:
                cells.append("diverged" if cell.diverged else "pruned" if cell.pruned else None)
            else:
                cells.append(mean)
            i = analysis.bootstrap_interval(cell.values) if cell is not None else None
            bounds += [i.low, i.high] if i is not None else [None, None]
        out.append(tuple(cells + (bounds if intervals else [])))
    return Table(tuple(columns), tuple(out), tuple(tuple(r) for r in display), tuple(header),
                 (_seed_note(g),))


def _best_lr(rows: Sequence[TrialRow], tolerance: float = 0.01) -> Table:
    """Per batch size: the best grid learning rate and its mean objective (with interval),
    the refined optimum with its bootstrap interval, whether it sits on the grid's edge,
    and the plateau of learning rates within `tolerance` of the best."""
    records = [row.record for row in rows]
    g = analysis.grid(records)
    o = S.optima(records, tolerance=tolerance)
    columns = ("batch_size", "learning_rate", "objective", "objective_low", "objective_high",
               "runs", "lr_refined", "lr_low", "lr_high", "note", "diverged_lrs",
               "plateau_low", "plateau_high")
    out = []
    display = []
    for p in o.points:
        cell = g.cell(p.batch_size, p.grid_lr)
        assert cell is not None
        i = analysis.bootstrap_interval(cell.values)
        assert i is not None
        diverged = [lr for lr in g.learning_rates
                    if (c := g.cell(p.batch_size, lr)) is not None and c.diverged]
        note = p.note + ("; single seed" if p.single_seed else "")
        div = ",".join(f"{lr:g}" for lr in diverged) or None
        plateau = p.plateau or (None, None)
        out.append((p.batch_size, p.grid_lr, i.mean, i.low, i.high, len(cell.values), p.lr,
                    p.low, p.high, note, div, *plateau))
        plateau_text = "-" if p.plateau is None else \
            f"{p.plateau[0]:.3g}..{p.plateau[1]:.3g}" + (" (tie)" if p.tie else "") + \
            (f" (open {p.open_ends})" if p.open_ends else "")
        lr_text = f"{p.lr:.3g}" + (f" [{p.low:.3g}, {p.high:.3g}]" if p.low is not None
                                    and p.high is not None else "")
        edge = f"{p.edge} edge: widen the grid" if p.edge else \
            ("refined" if p.refined else "not refined (diverged neighbour)")
        display.append((str(p.batch_size), f"{p.grid_lr:g}", analysis.interval_text(i),
                        str(len(cell.values)), lr_text, plateau_text, edge, div or "-"))
    notes = [_seed_note(g)]
    if any(not p.single_seed for p in o.points):
        notes.append("lr*: the minimum of a weighted quadratic or cubic in log(lr) fitted through "
                     "the best grid lr and up to two neighbours each side; [95% interval: seeds "
                     "resampled within each cell].")
    notes.append("A learning rate where any run diverged is never the best.")
    return Table(columns, tuple(out), tuple(display),
                 ("batch_size", "best_lr", "objective", "runs", "lr*",
                  f"within_{tolerance * 100:g}%", "where", "diverged_lrs"),
                 tuple(notes), left=(6,))


def scaling_table(s: S.Scaling, optimizer: str | None, budget: str | None) -> Table:
    """The scaling analysis as rows of (quantity, value, low, high, note)."""
    columns = ("quantity", "value", "low", "high", "note")
    out: list[tuple[Value, ...]] = []
    for p in s.optima.points:
        note = f"best grid lr {p.grid_lr:g}; {p.note}" + ("; single seed" if p.single_seed else "")
        out.append((f"lr* at B={p.batch_size}", p.lr, p.low, p.high, note))
    f = s.fit
    if f is not None:
        used = ", ".join(str(b) for b in f.batch_sizes)
        out.append(("alpha", f.alpha, f.low, f.high,
                    f"log lr* = a + alpha log B over B = {used}; 95% interval: "
                    f"{f.interval_words}" + (f"; left out (grid edge): "
                                             f"{', '.join(map(str, f.excluded))}"
                                             if f.excluded else "")))
        if f.boot is not None:
            out.append(("alpha, seed bootstrap", f.alpha, f.boot[0], f.boot[1],
                        "percentile; seeds resampled within each cell, optima and fit redone"))
        if f.regression is not None:
            out.append(("alpha, regression t", f.alpha, f.regression[0], f.regression[1],
                        f"OLS slope, Student t with {len(f.batch_sizes) - 2} df"))
        out.append(("a (intercept, ln lr)", f.intercept, None, None, "natural logs"))
    tol = f"{s.optima.tolerance * 100:g}%"
    for p in s.optima.points:
        if p.plateau is None:
            continue
        how = "a tie of grid points" if p.tie else "the smooth fit's span"
        ends = f"; open at the {p.open_ends} end(s): the fit's window ends there" \
            if p.open_ends else ""
        ci = ""
        if p.plateau_low is not None and p.plateau_high is not None:
            ci = (f"; 95% intervals of the ends: [{p.plateau_low[0]:.3g}, {p.plateau_low[1]:.3g}]"
                  f" and [{p.plateau_high[0]:.3g}, {p.plateau_high[1]:.3g}]")
        out.append((f"plateau at B={p.batch_size}", p.lr, p.plateau[0], p.plateau[1],
                    f"learning rates within {tol} of the best expected objective ({how}); "
                    f"value: lr*{ci}{ends}"))
    comp = s.shape_fits
    if comp is not None:
        for fs in comp.fits:
            params = (f"alpha (lr* ~ B^alpha); intercept ln lr {fs.scale:.3g}"
                      if fs.main_name == "alpha" else
                      f"B_noise; lr_max {fs.lr_max:.3g}")
            bound = {"high": "; B_noise at the top of the search range: not identified",
                     "low": "; B_noise at the bottom of the search range: not identified"}
            out.append((f"shape: {fs.shape}", fs.main, fs.low, fs.high,
                        f"value: {params}; chi2 {fs.chi2:.3g}, QAIC {fs.qaic:.3g}, Akaike "
                        f"weight {fs.weight:.2f}; 95% profile interval"
                        + bound.get(fs.bound or "", "")))
        chosen = comp.chosen
        tied = comp.alternatives
        out.append(("shape", chosen.main, chosen.low, chosen.high,
                    f"{chosen.shape}" + (f"; cannot be told from: {', '.join(tied)}"
                                         if tied else "")
                    + (f"; overdispersion {comp.overdispersion:.3g}" if comp.weighted else
                       f"; single seed: equal weights, residual variance "
                       f"{comp.overdispersion:.3g}")
                    + " over B = "
                    + ", ".join(map(str, comp.batch_sizes))))
    r = s.rules
    if r is not None:
        out.append(("slope for the rules", r.alpha, r.low if math.isfinite(r.low) else None,
                    r.high if math.isfinite(r.high) else None,
                    "d ln lr* / d ln B over B = " + ", ".join(map(str, r.batch_sizes))
                    + " (where the chosen shape says the rules apply)"))
    for v in s.verdicts:
        out.append((f"{v.hypothesis.name} rule", v.hypothesis.alpha, None, None,
                    f"{v.word} ({v.hypothesis.source})"))
    m = s.mccandlish
    if m is not None:
        mbound = {"high": "at the top of the search range: lr* still linear in B, not "
                          "identified",
                  "low": "at the bottom of the search range: lr* does not grow with B"}
        out.append(("McCandlish B_noise", m.b_noise, *(m.interval or (None, None)),
                    mbound.get(m.bound or "", "lr*(B) = lr_max / (1 + B_noise / B); 95% "
                               "profile interval (the saturating shape's)")))
        out.append(("McCandlish lr_max", m.lr_max, None, None,
                    "weighted least squares in log(lr)"))
    if s.noise is not None:
        n = s.noise
        how = "tr(Sigma) and |G|^2 averaged, then divided" if n.pooled else \
            "mean of the trials' noise_scale"
        for c in n.at_optimum:
            out.append((f"B_simple at B={c.batch_size}, lr={c.learning_rate:g}", c.interval.mean,
                        c.interval.low, c.interval.high,
                        f"{c.interval.n} run(s); {how}" + ("; single seed" if c.interval.single
                                                          else "")))
        out.append(("B_simple, predicted critical batch size", n.critical.mean, n.critical.low,
                    n.critical.high, f"pooled over each batch size's best cell; {how}"))
    return Table(columns, tuple(out), notes=("", S.conclusion(s, optimizer, budget)),
                 left=(4,))


def critical_table(found: Sequence[C.Critical], noise: S.NoiseSummary | None) -> Table:
    """Steps to each target per batch size and the critical batch sizes, as rows of
    (quantity, value, low, high, note). With several targets, each row names its target."""
    columns = ("quantity", "value", "low", "high", "note")
    out: list[tuple[Value, ...]] = []
    for c in found:
        at = f" (target {c.target:.4g})" if len(found) > 1 else ""
        how = (f"auto: {C.AUTO_TARGET_MARGIN:.0%} above the loss every batch size reached"
               if c.auto
               else "analysis.target")
        out.append((f"target{at}", c.target, None, None, how))
        for p in c.points:
            note = (f"lr {p.learning_rate:g} reached it first; curve every {p.every} steps; "
                    f"examples {p.examples:.4g}" if p.steps is not None and p.examples
                    is not None else "no learning rate's mean curve reached the target")
            out.append((f"steps to target at B={p.batch_size}{at}", p.steps, p.low, p.high,
                        note))
        fit = "McCandlish et al. 2018: S = S_min (1 + B_noise/B), least squares in ln S; " \
            "seed bootstrap"
        for name, e in (("S_min", c.s_min), ("E_min", c.e_min)):
            if e is not None:
                out.append((f"{name}{at}", e.value, e.low, e.high, fit))
        if c.b_crit is not None:
            bound = {"high": "; at the top of the range searched: S(B) does not level off",
                     "low": "; at the bottom of the range searched: S(B) does not fall with B"}
            out.append((f"B_crit{at}", c.b_crit.value, c.b_crit.low, c.b_crit.high,
                        "E_min / S_min" + bound.get(c.bound or "", "")))
        else:
            out.append((f"B_crit{at}", None, None, None,
                        "needs three or more batch sizes that reached the target"))
        o = c.b_overhead
        out.append((f"B_crit (20% overhead){at}", None if o is None or not math.isfinite(
            o.value) else o.value, None if o is None else o.low,
            None if o is None or o.high is None or not math.isfinite(o.high) else o.high,
            f"Zhang et al. 2024: {c.overhead_note}"))
    if noise is not None:
        n = noise.critical
        out.append(("B_simple", n.mean, n.low, n.high,
                    "the measured gradient noise scale, pooled over each batch size's best "
                    "cell: McCandlish et al.'s predicted critical batch size"))
    notes: tuple[str, ...] = ()
    if not found:
        notes = ("No trial recorded a step curve (studies run before analysis.curve_every "
                 "existed have none): rerun the study to measure steps to a target.",)
    return Table(columns, tuple(out), notes=notes, left=(4,))


def _curves(conn: sqlalchemy.engine.Connection, study_id: int, name: str,
            rows: Sequence[TrialRow], trial: int | None) -> Table:
    if trial is not None:
        chosen = [row for row in rows if row.record.number == trial]
        if not chosen:
            span = f"trials 0..{len(rows) - 1}" if rows else "no trials"
            raise UsageError(f"--trial: no trial {trial} in study {name!r} ({span})")
        rows = chosen
    reported = store.intermediate_values(conn, study_id)
    columns: tuple[str, ...] = ("trial", "batch_size", "learning_rate", "seed", "epoch",
                                "train_loss", "val_loss", "objective")
    # A classification study's curves also have each epoch's accuracies.
    accuracy = any(row.attrs.get(R.TRAIN_ACCURACY_CURVE) or row.attrs.get(R.VAL_ACCURACY_CURVE)
                   for row in rows)
    if accuracy:
        columns += ("train_accuracy", "val_accuracy")

    def at(curve: Sequence[Value], epoch: int) -> Value:
        return curve[epoch - 1] if epoch <= len(curve) else None

    out = []
    for row in rows:
        train = row.attrs.get(R.TRAIN_CURVE) or []
        val = row.attrs.get(R.VAL_CURVE) or []
        train_acc = row.attrs.get(R.TRAIN_ACCURACY_CURVE) or []
        val_acc = row.attrs.get(R.VAL_ACCURACY_CURVE) or []
        steps = reported.get(row.trial_id, {})
        r = row.record
        for epoch in range(1, max(len(train), len(val), max(steps, default=0)) + 1):
            values: tuple[Value, ...] = (r.number, r.batch_size, r.learning_rate, r.seed, epoch,
                                         at(train, epoch), at(val, epoch), steps.get(epoch))
            out.append(values + ((at(train_acc, epoch), at(val_acc, epoch)) if accuracy else ()))
    return Table(columns, tuple(out))


def _studies_table(conn: sqlalchemy.engine.Connection, url: str) -> Table:
    columns = ("study", "direction", "trials", "complete", "pruned", "fail", "running", "best")
    return Table(columns, tuple((s.name, s.direction, s.trials, s.complete, s.pruned, s.fail,
                                 s.running, s.best) for s in store.study_summaries(conn, url)))


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
            rows = trial_rows(conn, study_id, curves=True)
            return _curves(conn, study_id, resolved, rows, trial)
        if name == "critical-batch":
            spec = _study_spec(conn, study_id)
            rows = trial_rows(conn, study_id, step_curves=True)
            records = [row.record for row in rows]
            table = critical_table(C.critical_all(records, spec.analysis.target
                                                  if spec is not None else ()),
                                   S.scaling(records).noise)
            return dataclasses.replace(table, notes=(
                "Steps to the target: the training loss's step curve (analysis.curve_every), "
                "mean over seeds, the fewest steps over learning rates.", *table.notes))
        if name == "scaling":
            spec = _study_spec(conn, study_id)
            if spec is not None and not spec.is_grid:
                return Table(("quantity", "value", "low", "high", "note"), (), notes=(
                    f"The {spec.search.sampler} sampler searched ranges, not a grid: there is "
                    "no optimum per batch size to fit a scaling law to (see study query "
                    "trials).",))
            rows = trial_rows(conn, study_id)
            table = scaling_table(S.scaling([row.record for row in rows],
                                            spec.train.objective if spec is not None
                                            else "objective",
                                            tolerance=spec.analysis.tolerance
                                            if spec is not None else 0.01),
                                  spec.train.optimizer if spec is not None else None,
                                  spec.train.budget if spec is not None else None)
        else:
            rows = trial_rows(conn, study_id)
            spec = _study_spec(conn, study_id)
            if name == "best-lr":
                table = _best_lr(rows, spec.analysis.tolerance if spec is not None else 0.01)
            else:
                table = {"trials": _trials, "grid": _grid}[name](rows)
            if name == "trials":
                return table
        # Say which objective the table's numbers are, above its other notes.
        return dataclasses.replace(table, notes=(_objective_note(spec), *table.notes))


def _study_spec(conn: sqlalchemy.engine.Connection, study_id: int) -> Spec | None:
    """The spec `study run` stored on the study (`spec.from_stored`); None when there is none."""
    return from_stored(store.study_attr(conn, study_id, R.STUDY_SPEC))
