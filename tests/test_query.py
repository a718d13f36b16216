"""`study query`: named queries and raw SQL on a real study file, and proof it never writes."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import sqlite3
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from study import query
from study.errors import UsageError
from study.trainers import TrialConfig
from tests.helpers import ROOT, run_cli, sql
from tests.pg import PgServer
from tests.scripted import loss_at
from tests.studies import DIVERGED_LR, PARTLY, make_study, spec

EPOCHS = 4
SEEDS = (0, 1)


@pytest.fixture(scope="module")
def study_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    db = tmp_path_factory.mktemp("query") / "study.db"
    make_study(f"sqlite:///{db}")
    return db


def copy_db(src: Path, dst: Path) -> Path:
    """A consistent copy, write-ahead log included (SQLite's backup API)."""
    with sqlite3.connect(src) as a, sqlite3.connect(dst) as b:
        a.backup(b)
    a.close()
    b.close()
    return dst


def url(db: Path) -> str:
    return f"sqlite:///{db}"


def expected_loss(bs: int, lr: float, seed: int, epoch: int = EPOCHS) -> float | None:
    """What the scripted trainer trains to; None where the study makes the run diverge."""
    if lr == DIVERGED_LR or (bs, lr, seed) == PARTLY:
        return None
    return loss_at(TrialConfig.of(spec(), bs, lr, seed), epoch)


def test_trials_one_row_per_trial(study_db: Path) -> None:
    table = query.run_named(url(study_db), "trials")
    assert table.columns == ("number", "state", "batch_size", "learning_rate", "seed",
                             "objective", "val_loss", "duration", "status", "trainer")
    (n,) = sql(study_db, "SELECT COUNT(*) FROM trials")[0]
    assert len(table.rows) == n == 18
    assert [r[0] for r in table.rows] == list(range(18))
    # Durations as Optuna timed them, read by hand: complete - start, to the centisecond.
    times = sql(study_db, "SELECT datetime_start, datetime_complete FROM trials ORDER BY number")
    took = [round((datetime.fromisoformat(str(b)) - datetime.fromisoformat(str(a)))
                  .total_seconds(), 2) for a, b in times]
    assert [r[7] for r in table.rows] == took
    # Which trainer ran each trial, read by hand from its attribute (JSON text).
    trainers = sql(study_db, "SELECT a.value_json FROM trials t LEFT JOIN trial_user_attributes a"
                   " ON a.trial_id = t.trial_id AND a.key = 'trainer' ORDER BY t.number")
    assert [r[9] for r in table.rows] == [None if v is None else json.loads(v)
                                          for (v,) in trainers]
    assert {r[9] for r in table.rows if r[1] == "COMPLETE"} == {"scripted"}
    for _, state, bs, lr, seed, objective, val_loss, duration, status, _ in table.rows:
        want = expected_loss(bs, lr, seed)  # type: ignore[arg-type]
        if want is None:
            assert (state, status, objective, val_loss) == ("FAIL", "diverged", None, None)
        else:
            assert (state, status) == ("COMPLETE", "complete")
            assert objective == pytest.approx(want) and val_loss == pytest.approx(want + 0.1)
        assert isinstance(duration, float)


def test_grid_is_the_mean_over_seeds_with_divergence_as_a_word(study_db: Path) -> None:
    table = query.run_named(url(study_db), "grid")
    lrs = ("lr=0.1", "lr=0.01", "lr=0.001")
    assert table.columns == ("batch_size", *lrs,
                             *(f"{lr} {end}" for lr in lrs for end in ("low", "high")))
    for row in table.rows:
        bs = row[0]
        assert row[1] == "diverged" and row[4:6] == (None, None)
        for k, lr in enumerate((0.01, 0.001)):
            runs = [v for s in SEEDS if (v := expected_loss(bs, lr, s)) is not None]  # type: ignore[arg-type]
            assert row[2 + k] == pytest.approx(sum(runs) / len(runs))
            # Two runs: the bootstrap interval spans them; one run: no interval.
            low, high = row[6 + 2 * k: 8 + 2 * k]
            assert (low, high) == (pytest.approx(min(runs)), pytest.approx(max(runs))) \
                if len(runs) == 2 else (low, high) == (None, None)
    text = query.render(table, "table")
    lines = text.splitlines()
    assert lines[0].split() == ["batch_size", *lrs]  # the table shows intervals beside means
    assert "0.9412 (1 div)" in text and "0.8005 [0.8, 0.801]" in text
    assert lines[-1] == "Each cell: the mean over seeds [95% percentile bootstrap over seeds]."
    assert "Each cell" not in query.render(table, "csv")
    single = query._grid([r for r in query_rows(study_db) if r.record.seed == 0])
    assert single.columns == ("batch_size", *lrs)
    assert query.render(single, "table").splitlines()[-1] == \
        "Single seed: one run per cell, no interval."


def query_rows(db: Path) -> list[query.TrialRow]:
    from study.storage import read_only

    with read_only(url(db)) as conn:
        return query.trial_rows(conn, 1)


def test_best_lr_per_batch_size(study_db: Path) -> None:
    table = query.run_named(url(study_db), "best-lr")
    assert table.columns == ("batch_size", "learning_rate", "objective", "objective_low",
                             "objective_high", "runs", "lr_refined", "lr_low", "lr_high", "note",
                             "diverged_lrs", "plateau_low", "plateau_high")
    for bs, lr, objective, low, high, runs, *_ in table.rows:
        means = {}
        for cand in (0.01, 0.001):
            vals = [expected_loss(bs, cand, s) for s in SEEDS]  # type: ignore[arg-type]
            if None not in vals:  # a learning rate where a run diverged is never the best
                means[cand] = sum(vals) / len(vals)  # type: ignore[arg-type]
        best = min(means, key=means.__getitem__)
        assert (lr, objective) == (best, pytest.approx(means[best]))
        assert runs == 2 and low is not None and high is not None and low < objective < high
    by_b = {r[0]: r for r in table.rows}
    # At 64, 0.01 has a diverged run: 0.001, the grid's smallest, is best (a bound).
    assert by_b[64][1] == 0.001 and "widen the grid downward" in str(by_b[64][9])
    assert by_b[64][10] == "0.1,0.01"
    assert "not refined: a neighbouring learning rate diverged" in str(by_b[16][9])
    text = query.render(table, "table")
    assert text.splitlines()[0].split() == ["batch_size", "best_lr", "objective", "runs", "lr*",
                                            "within_1%", "where", "diverged_lrs"]
    assert "A learning rate where any run diverged is never the best." in text


def raw_runs(db: Path) -> list[tuple[int, float, int, str, float | None, dict[str, object]]]:
    """Every trial as (batch size, learning rate, seed, state, value, user attributes), read
    by hand from Optuna's tables: the expectations below start from these rows, not from
    the readers under test."""
    params: dict[int, dict[str, float]] = {}
    for tid, name, value in sql(db, "SELECT trial_id, param_name, param_value FROM trial_params"):
        params.setdefault(int(tid), {})[str(name)] = float(value)  # type: ignore[arg-type]
    attrs: dict[int, dict[str, object]] = {}
    for tid, key, text in sql(db, "SELECT trial_id, key, value_json FROM trial_user_attributes"):
        attrs.setdefault(int(tid), {})[str(key)] = json.loads(str(text))  # type: ignore[call-overload]
    rows = sql(db, "SELECT t.trial_id, t.state, v.value FROM trials t "
                   "LEFT JOIN trial_values v ON v.trial_id = t.trial_id ORDER BY t.number")
    return [(int(params[tid]["batch_size"]), params[tid]["learning_rate"],  # type: ignore[index]
             int(params[tid]["seed"]), str(state), value, attrs.get(tid, {}))  # type: ignore[index, misc]
            for tid, state, value in rows]


def test_scaling_query_fits_verdicts_noise_and_a_conclusion(study_db: Path) -> None:
    from scipy import stats

    from tests.studies import measured

    table = query.run_named(url(study_db), "scaling")
    assert table.columns == ("quantity", "value", "low", "high", "note")
    rows = {r[0]: r for r in table.rows}
    assert [q for q in rows if str(q).startswith("lr* at")] == ["lr* at B=16", "lr* at B=64",
                                                                "lr* at B=256"]
    assert {q: rows[f"{q} rule"][4].split()[0] for q in ("inverse", "constant", "square-root",
                                                           "linear")} == \
        dict.fromkeys(("inverse", "constant", "square-root", "linear"), "consistent")
    # Pooled noise scale at B=16's best cell (lr=0.01): tr(Sigma) and |G|^2 averaged, then divided.
    configs = [TrialConfig.of(spec(), 16, 0.01, s) for s in SEEDS]
    want = sum(measured(c)["noise_trace_sigma"] for c in configs) / \
        sum(measured(c)["noise_grad_sq"] for c in configs)
    assert rows["B_simple at B=16, lr=0.01"][1] == pytest.approx(want)
    # The optimum per batch size, by hand from the raw rows: the lowest mean over seeds of
    # a cell where no run failed (every grid optimum here sits beside a diverged cell or on
    # the grid's edge, so none is refined: lr* is the grid value).
    runs = raw_runs(study_db)
    cells: dict[tuple[int, float], list[float | None]] = {}
    for bs, lr, _, state, value, _ in runs:
        cells.setdefault((bs, lr), []).append(value if state == "COMPLETE" else None)
    best = {}
    for b in sorted({bs for bs, _ in cells}):
        means = {lr: float(np.mean(v)) for (bb, lr), v in cells.items() if bb == b and None not in v}  # type: ignore[arg-type]
        best[b] = min(means, key=means.__getitem__)
    assert best == {16: 0.01, 64: 0.001, 256: 0.01}
    assert {b: rows[f"lr* at B={b}"][1] for b in best} == best
    # alpha: the OLS slope of ln lr* on ln B over all three (fewer than three are interior,
    # B=64's is the grid's edge); its interval the Student-t one with n - 2 = 1 degree of
    # freedom, which holds the seed bootstrap's (every replicate's slope is 0 here: B=16 and
    # B=256 keep lr=0.01 whatever the seeds, and either optimum at B=64 gives a flat line).
    x, y = np.log(list(best)), np.log(list(best.values()))
    alpha, intercept = np.polyfit(x, y, 1)
    sse = float(((y - intercept - alpha * x) ** 2).sum())
    half = stats.t.ppf(0.975, 1) * math.sqrt(sse / 1 / float(((x - x.mean()) ** 2).sum()))
    assert rows["alpha"][1:4] == (pytest.approx(alpha, abs=1e-12), pytest.approx(alpha - half),
                                  pytest.approx(alpha + half))
    assert rows["alpha, seed bootstrap"][2:4] == (pytest.approx(0, abs=1e-12),) * 2
    assert rows["a (intercept, ln lr)"][1] == pytest.approx(intercept)
    # The predicted critical batch size: tr(Sigma) and |G|^2 of every run in each batch
    # size's best cell, averaged, then divided.
    best_runs = [a for bs, lr, _, _, _, a in runs if best[bs] == lr]
    pooled = sum(a["noise_trace_sigma"] for a in best_runs) / \
        sum(a["noise_grad_sq"] for a in best_runs)  # type: ignore[misc]
    assert rows["B_simple, predicted critical batch size"][1] == pytest.approx(pooled)
    text = query.render(table, "table")
    last = text.splitlines()[-1]
    assert last.startswith(f"Best LR stays flat as B^{abs(alpha):.2f} "
                           f"[{alpha - half:.4g}, {alpha + half:.4g}] (Adam, 2 seeds; ")
    assert f"B_simple is {pooled:.3g} [" in last
    assert "(B=64: lr=0.001 (low edge))" in last
    assert json.loads(query.render(table, "json"))[0]["quantity"] == "lr* at B=16"


def test_curves_of_one_trial_and_of_all(study_db: Path) -> None:
    one = query.run_named(url(study_db), "curves", trial=2)
    (bs, lr, seed), = [r[2:5] for r in query.run_named(url(study_db), "trials").rows if r[0] == 2]
    assert [r[4] for r in one.rows] == [1, 2, 3, 4]
    for row in one.rows:
        want = expected_loss(bs, lr, seed, row[4])  # type: ignore[arg-type]
        assert row[5] == pytest.approx(want) and row[6] == pytest.approx(want + 0.1)  # type: ignore[operator]
        assert row[7] == pytest.approx(want)  # what Optuna got reported, per epoch
    every = query.run_named(url(study_db), "curves")
    # Complete trials have 4 epochs; diverged ones stop at epoch 2 (the NaN is a null).
    assert len(every.rows) == 11 * 4 + 7 * 2
    assert any(r[5] is None and r[4] == 2 for r in every.rows)
    with pytest.raises(UsageError, match=r"--trial: no trial 99 in study 'article' \(trials 0..17\)"):
        query.run_named(url(study_db), "curves", trial=99)
    with pytest.raises(UsageError, match="--trial: only the curves query takes a trial"):
        query.run_named(url(study_db), "grid", trial=1)


def test_studies_and_which_study_is_meant(tmp_path: Path) -> None:
    db = tmp_path / "two.db"
    make_study(url(db), "other", seeds="[0]")
    # One study: it is the default, whatever its name.
    assert query.study_name(url(db), None) == "other"
    make_study(url(db), "article")
    table = query.run_named(url(db), "studies")
    rows = {r[0]: r for r in table.rows}
    assert rows["other"][1:7] == ("minimize", 9, 6, 0, 3, 0)  # one seed: PARTLY is not run
    assert rows["article"][1:7] == ("minimize", 18, 11, 0, 7, 0)
    best = min(v for bs in (16, 64, 256) for lr in (0.01, 0.001)
               if (v := expected_loss(bs, lr, 0)) is not None)
    assert rows["other"][7] == pytest.approx(best)
    assert query.study_name(url(db), None) == "article"
    assert query.run_named(url(db), "trials", "other").rows[0][4] == 0
    with pytest.raises(UsageError, match=r"--study-name: no study 'x' in sqlite:///.*two.db "
                                         r"\(studies: 'other', 'article'\)"):
        query.run_named(url(db), "grid", "x")


def test_formats(study_db: Path) -> None:
    table = query.run_named(url(study_db), "trials")
    rows = list(csv.reader(io.StringIO(query.render(table, "csv"))))
    assert tuple(rows[0]) == table.columns and len(rows) == 19
    diverged = next(r for r in rows[1:] if r[table.columns.index("status")] == "diverged")
    assert diverged[5] == ""  # no objective: empty, not a number
    objects = json.loads(query.render(table, "json"))
    assert objects[0]["number"] == 0 and set(objects[0]) == set(table.columns)
    assert next(o for o in objects if o["status"] == "diverged")["objective"] is None
    text = query.render(query.Table(("a", "b"), ((1, float("inf")), (None, 0.5))), "json")
    assert json.loads(text) == [{"a": 1, "b": None}, {"a": None, "b": 0.5}]  # JSON has no inf


def test_raw_sql(study_db: Path) -> None:
    table = query.run_sql(url(study_db), "SELECT state, COUNT(*) AS n FROM trials "
                                         "GROUP BY state ORDER BY state")
    assert table.columns == ("state", "n") and table.rows == (("COMPLETE", 11), ("FAIL", 7))
    # Our facts are JSON in trial_user_attributes; SQLite's JSON functions read them.
    table = query.run_sql(url(study_db), """
        -- a comment first is fine
        SELECT json_extract(value_json, '$') AS status, COUNT(*) FROM trial_user_attributes
        WHERE key = 'status' GROUP BY 1 ORDER BY 1""")
    assert table.rows == (("complete", 11), ("diverged", 7))
    assert [r[1] for r in query.run_sql(url(study_db), "PRAGMA table_info(trials)").rows][:6] == \
        ["trial_id", "number", "study_id", "state", "datetime_start", "datetime_complete"]
    with pytest.raises(UsageError, match="--sql: no such table: nope"):
        query.run_sql(url(study_db), "SELECT * FROM nope")


def _fingerprint(db: Path) -> dict[str, str]:
    # The -shm file is SQLite's shared-memory index, where readers also record read
    # marks, and a reader of a WAL database may open an empty -wal beside it; the
    # database and the log's content are what hold the data.
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(db.parent.iterdir())
            if not p.name.endswith("-shm") and not (p.name.endswith("-wal") and not p.stat().st_size)}


# Hostile statements, each with what refuses it once the courtesy checks in `run_sql`
# (first keyword, PostgreSQL functions by name) are out of the way: a regex of the
# refusal from the driver or the database itself, per backend. "role" marks what only a
# PostgreSQL role without the right refuses (a superuser may call it even read-only; see
# test_a_read_only_role_is_a_second_wall). `{dir}` is the test's own directory.
ONE = "one statement"
RO = "open read-only"
SYNTAX = "syntax error"
HOSTILE: list[tuple[str, str, str]] = [
    # several statements, however disguised
    ("SELECT 1; COMMIT; DELETE FROM trial_values", ONE, ONE),
    ("SELECT 1 /* hidden */; DELETE FROM trial_values", ONE, ONE),
    ("SELECT 1 -- hidden\n; DELETE FROM trial_values", ONE, ONE),
    ("SELECT 1;DROP TABLE trials", ONE, ONE),
    ("VALUES (1); UPDATE trials SET state = 'FAIL'", ONE, ONE),
    ("SELECT ';'; DELETE FROM trial_values", ONE, ONE),
    # transaction and session control
    ("COMMIT", RO, SYNTAX),
    ("ROLLBACK", RO, SYNTAX),
    ("BEGIN", RO, SYNTAX),
    ("SAVEPOINT s", RO, SYNTAX),
    ("START TRANSACTION READ WRITE", SYNTAX, SYNTAX),
    ("SET TRANSACTION READ WRITE", SYNTAX, SYNTAX),
    ("SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE", SYNTAX, SYNTAX),
    ("RESET ALL", SYNTAX, SYNTAX),
    ("DISCARD ALL", SYNTAX, SYNTAX),
    ("SELECT set_config('default_transaction_read_only', 'off', false)",
     "no such function", "turned the read-only setting off"),
    ("SELECT set_config('transaction_read_only', 'off', true)",
     "no such function", "read-write mode must be set before any query"),
    # writes, plain and inside a query
    ("DELETE FROM trials", RO, SYNTAX),
    ("UPDATE trials SET state = 'FAIL'", RO, SYNTAX),
    ("DROP TABLE trials", RO, SYNTAX),
    ("WITH x AS (SELECT 1) DELETE FROM trials", RO, SYNTAX),
    ("WITH d AS (DELETE FROM trial_values RETURNING 1) SELECT COUNT(*) FROM d",
     SYNTAX, "a WITH that changes data"),
    ("WITH i AS (INSERT INTO studies (study_name) VALUES ('evil') RETURNING study_id) "
     "SELECT * FROM i", SYNTAX, "a WITH that changes data"),
    ("SELECT * FROM trials FOR UPDATE", SYNTAX, "SELECT FOR UPDATE in a read-only"),
    ("SELECT * INTO evil FROM trials", SYNTAX, "SELECT ... INTO is not allowed here"),
    ("EXPLAIN ANALYZE WITH d AS (DELETE FROM trial_values RETURNING 1) SELECT 1",
     SYNTAX, "cannot execute SELECT in a read-only transaction"),
    ("LOCK TABLE trials", SYNTAX, SYNTAX),
    ("NOTIFY study, 'x'", SYNTAX, SYNTAX),
    ("PREPARE p AS DELETE FROM trial_values", SYNTAX, SYNTAX),
    ("SHOW ALL; DELETE FROM trial_values", SYNTAX, ONE),
    ("EXPLAIN ANALYZE DELETE FROM trial_values", SYNTAX, "DELETE in a read-only transaction"),
    ("SELECT nextval('trials_trial_id_seq')", "no such function", "nextval.. in a read-only"),
    ("SELECT query_to_xml('DELETE FROM trial_values', true, false, '')",
     "no such function", "DELETE is not allowed in a non-volatile function"),
    ("CREATE TEMP TABLE t (x)", RO, SYNTAX),
    # files, programs, procedures
    ("COPY trials TO PROGRAM 'true'", SYNTAX, SYNTAX),
    ("COPY trial_values FROM '/dev/null'", SYNTAX, SYNTAX),
    # PostgreSQL nests block comments, so a non-nesting reader sees SELECT first here
    ("/* /* */ SELECT */ COPY (SELECT 1) TO PROGRAM 'true'", SYNTAX, SYNTAX),
    ("DO $$ BEGIN DELETE FROM trial_values; END $$", SYNTAX, SYNTAX),
    ("CALL p()", SYNTAX, SYNTAX),
    ("ATTACH DATABASE '{dir}/new.db' AS n", RO, SYNTAX),
    ("VACUUM INTO '{dir}/copy.db'", RO, SYNTAX),
    ("PRAGMA writable_schema = 1", RO, SYNTAX),
    ("PRAGMA user_version = 7", RO, SYNTAX),
    ("PRAGMA journal_mode = DELETE", RO, SYNTAX),
    ("SELECT load_extension('{dir}/x')", RO, "function load_extension.* does not exist"),
    # effects beyond the database: no SQLite function does these
    ("SELECT pg_terminate_backend(pg_backend_pid())", "no such function", "role"),
    ("SELECT lo_import('/etc/hostname')", "no such function", "role"),
    ("SELECT pg_advisory_lock(1)", "no such function", "role"),
    # a read the keyword check admits, and a write after it
    ("TABLE trials; DELETE FROM trial_values", SYNTAX, ONE),
]


def test_every_first_word_let_through_is_tried_hostile() -> None:
    """Each first word `run_sql` lets through starts a hostile statement above, so the walls
    behind the keyword check are tried for every kind of read it admits (a word added to
    READ_KEYWORDS without one fails here)."""
    assert set(query.READ_KEYWORDS) - {query._first_keyword(s) for s, _, _ in HOSTILE} == set()


def test_sqlite_refuses_several_statements_itself() -> None:
    # The wall on SQLite is sqlite3's own: `execute` compiles one statement, whatever follows.
    conn = sqlite3.connect(":memory:")
    with pytest.raises((sqlite3.ProgrammingError, sqlite3.Warning), match="one statement"):
        conn.execute("SELECT 1; SELECT 2")
    conn.close()


@pytest.mark.parametrize(("statement", "wall"), [(s, w) for s, w, _ in HOSTILE])
def test_sqlite_hostile_sql_is_refused_and_nothing_changes(
        tmp_path: Path, study_db: Path, statement: str, wall: str) -> None:
    db = copy_db(study_db, tmp_path / "s.db")
    before, counts = _fingerprint(db), _sqlite_counts(db)
    text = statement.format(dir=tmp_path)
    with pytest.raises(UsageError) as caught:
        query.run_sql(url(db), text)
    assert caught.value.exit_code == 2 and "\n" not in str(caught.value)
    # Without the first-keyword check, the driver or the database refuses it all the same.
    with pytest.raises(UsageError, match=wall) as bare:
        query.execute_read_only(url(db), text, "sqlite")
    assert bare.value.exit_code == 2 and "\n" not in str(bare.value)
    assert _fingerprint(db) == before  # same files, same bytes: nothing created, nothing changed
    assert _sqlite_counts(db) == counts


def _sqlite_counts(db: Path) -> dict[str, int]:
    tables = [t for (t,) in sql(db, "SELECT name FROM sqlite_master WHERE type = 'table'")]
    assert "trial_values" in tables
    return {str(t): int(sql(db, f'SELECT COUNT(*) FROM "{t}"')[0][0]) for t in tables}  # type: ignore[call-overload]


def test_the_keyword_check_speaks_first(study_db: Path) -> None:
    for statement, word in (("DELETE FROM trials", "DELETE"), ("COMMIT", "COMMIT"),
                            ("VACUUM INTO 'x.db'", "VACUUM")):
        with pytest.raises(UsageError, match=f"--sql: '{word}' is not a read-only statement"):
            query.run_sql(url(study_db), statement)
    with pytest.raises(UsageError, match="--sql: the statement is empty"):
        query.run_sql(url(study_db), "  \n")


def test_other_drivers_are_refused(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"--sql: runs on SQLite and on PostgreSQL through "
                                         r"psycopg .*not on mysql\+pymysql"):
        query.run_sql("mysql+pymysql://u:p@127.0.0.1/db", "SELECT 1")
    with pytest.raises(UsageError, match=r"not on postgresql\+pg8000 \(the named queries"):
        query.run_sql("postgresql+pg8000://u:p@127.0.0.1/db", "SELECT 1")


@pytest.mark.slow
def test_cli_query_exit_codes_and_file_unchanged(tmp_path: Path, study_db: Path) -> None:
    db = copy_db(study_db, tmp_path / "s.db")
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    out = run_cli(["query", "--sql", "WITH x AS (SELECT 1) DELETE FROM trials",
                   "--storage", url(db)])
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.count("\n") == 1 and out.stderr.startswith(
        "study query: error: --sql: refused, the database is open read-only")
    out = run_cli(["query", "grid", "--storage", url(db), "--format", "csv"])
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0].startswith("batch_size,lr=0.1,lr=0.01,lr=0.001,lr=0.1 low,")
    for args, message in [([], "give a query name (trials, grid, best-lr, scaling, critical-batch, "
                                "curves, studies) or --sql"),
                          (["nope"], "argument NAME: invalid choice: 'nope'"),
                          (["trials", "--sql", "SELECT 1"], "or --sql \"SELECT ...\", not both")]:
        bad = run_cli(["query", *args, "--storage", url(db)])
        assert bad.returncode == 2 and message in bad.stderr and bad.stderr.count("\n") == 1
    helped = run_cli(["query", "--help"])
    assert helped.returncode == 0 and "Example: study query" in helped.stdout
    missing = run_cli(["query", "trials", "--storage", url(tmp_path / "none.db")])
    assert missing.returncode == 2 and "no database at" in missing.stderr
    assert not (tmp_path / "none.db").exists()
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before
    # `make query Q=grid` runs the same (-o: do not rebuild the virtual environment here).
    made = subprocess.run(["make", "-s", "-o", ".venv/.installed", "query", "Q=grid",
                           f"STORAGE={url(db)}", "ARGS=--format csv"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, made.stderr
    assert made.stdout == out.stdout
    # A query loads neither TensorFlow nor plotly nor optuna-dashboard.
    probe = subprocess.run([sys.executable, "-c", (
        "import sys; from study.cli import main; rc = main(['query', 'trials', '--storage', "
        f"{url(db)!r}]); heavy = [m for m in ('tensorflow', 'plotly', 'optuna_dashboard') "
        "if m in sys.modules]; print(rc, heavy, file=sys.stderr)")],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert probe.stderr.strip().splitlines()[-1] == "0 []", probe.stderr


@pytest.fixture(scope="module")
def pg_study(pg_server: PgServer) -> str:
    """The scripted study on PostgreSQL, once for the module; no test may change it."""
    url = pg_server.create_db("query_study")
    make_study(url)
    return url


def _pg_fingerprint(url: str) -> dict[str, tuple[int, str]]:
    """Every table's row count and a hash of its rows, the large objects, and the
    sequences' positions: what a statement that wrote anything would change."""
    import psycopg

    with psycopg.connect(url.replace("+psycopg", ""), autocommit=True) as conn:
        tables = [t for (t,) in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")]
        assert "trial_values" in tables
        out = {}
        for t in [*tables, "pg_largeobject_metadata"]:
            count, digest = conn.execute(
                f'SELECT COUNT(*), md5(COALESCE(string_agg(x::text, \'|\' ORDER BY x::text), \'\')) '
                f'FROM {t} x').fetchone()  # type: ignore[misc]
            out[t] = (int(count), str(digest))
        for (seq,) in conn.execute("SELECT sequencename FROM pg_sequences").fetchall():
            out[f"sequence {seq}"] = (int(conn.execute(
                f"SELECT last_value FROM {seq}").fetchone()[0]), "")  # type: ignore[index]
    return out


@pytest.mark.parametrize(("statement", "wall"), [(s, w) for s, _, w in HOSTILE])
def test_postgres_hostile_sql_is_refused_and_nothing_changes(
        tmp_path: Path, pg_study: str, statement: str, wall: str) -> None:
    before = _pg_fingerprint(pg_study)
    text = statement.format(dir=tmp_path)
    with pytest.raises(UsageError) as caught:
        query.run_sql(pg_study, text)
    assert caught.value.exit_code == 2 and "\n" not in str(caught.value)
    if wall != "role":
        # Without the courtesy checks, the driver or the server refuses it all the same.
        with pytest.raises(UsageError, match=wall) as bare:
            query.execute_read_only(pg_study, text, "postgresql")
        assert bare.value.exit_code == 2 and "\n" not in str(bare.value)
    assert _pg_fingerprint(pg_study) == before
    assert list(tmp_path.iterdir()) == []


def test_postgres_session_is_read_only_from_connect(pg_study: str) -> None:
    from study.storage import read_only

    with read_only(pg_study) as conn:
        raw = conn.connection.driver_connection
        assert raw.execute("SHOW default_transaction_read_only").fetchone() == ("on",)
    # Options the URL gives itself are kept beside ours.
    with read_only(pg_study + "?options=-c%20application_name%3Dstudy_probe") as conn:
        raw = conn.connection.driver_connection
        assert raw.execute("SELECT current_setting('application_name'), "
                           "current_setting('default_transaction_read_only')").fetchone() == \
            ("study_probe", "on")
    # The read-only setting outlives a COMMIT: the next transaction is read-only too.
    with read_only(pg_study) as conn:
        raw = conn.connection.driver_connection
        raw.commit()
        import psycopg

        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            raw.execute("DELETE FROM trial_values")


def test_a_read_only_role_is_a_second_wall(pg_server: PgServer, pg_study: str,
                                          tmp_path: Path) -> None:
    """The README's recipe, run: a role that can only read, through which even what a
    superuser may do read-only (stop other sessions, read server files) is refused."""
    import psycopg

    admin = pg_study.replace("+psycopg", "")
    db = pg_study.rsplit("/", 1)[1]
    with psycopg.connect(admin, autocommit=True) as conn:
        for statement in (
                "CREATE ROLE study_reader LOGIN PASSWORD 'reader-pw'",
                f'GRANT CONNECT ON DATABASE "{db}" TO study_reader',
                "GRANT USAGE ON SCHEMA public TO study_reader",
                "GRANT SELECT ON ALL TABLES IN SCHEMA public TO study_reader",
                "ALTER DEFAULT PRIVILEGES FOR ROLE study IN SCHEMA public "
                "GRANT SELECT ON TABLES TO study_reader",
                "ALTER ROLE study_reader SET default_transaction_read_only = on"):
            conn.execute(statement)
        # A session of the study's own role, as a worker would hold.
        worker = psycopg.connect(admin, autocommit=True)
        (worker_pid,) = worker.execute("SELECT pg_backend_pid()").fetchone()  # type: ignore[misc]
    before = _pg_fingerprint(pg_study)
    reader = f"postgresql+psycopg://study_reader:reader-pw@127.0.0.1:{pg_server.port}/{db}"
    try:
        assert query.run_sql(reader, "SELECT COUNT(*) FROM trials").rows == ((18,),)
        assert len(query.run_named(reader, "trials").rows) == 18
        for statement, refusal in (
                (f"SELECT pg_terminate_backend({worker_pid})", "superuser to terminate"),
                ("SELECT lo_import('/etc/hostname')", "permission denied for function lo_import"),
                ("SELECT pg_read_file('/etc/hostname')", "permission denied for function")):
            with pytest.raises(UsageError, match=refusal):
                query.execute_read_only(reader, statement, "postgresql")
        assert worker.execute("SELECT 1").fetchone() == (1,)  # still alive
        # The report's files need only reading (storing on the study needs the writing role).
        from study.report import write_report

        written = write_report(reader, None, tmp_path / "out", dashboard=False)
        assert written.trials == 18 and (tmp_path / "out" / "index.html").exists()
        # And on its own, outside study, the role can write nothing, read-only setting or not.
        with psycopg.connect(reader.replace("+psycopg", ""), autocommit=True) as conn:
            conn.execute("SET default_transaction_read_only = off")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("DELETE FROM trial_values")
    finally:
        worker.close()
    assert _pg_fingerprint(pg_study) == before


@pytest.mark.slow
def test_cli_refuses_hostile_sql_in_one_line(tmp_path: Path, study_db: Path, pg_study: str
                                             ) -> None:
    db = copy_db(study_db, tmp_path / "s.db")
    files, pg = _fingerprint(db), _pg_fingerprint(pg_study)
    for storage in (url(db), pg_study):
        for statement in ("SELECT 1; COMMIT; DELETE FROM trial_values",
                          "/* /* */ SELECT */ COPY (SELECT 1) TO PROGRAM 'true'"):
            out = run_cli(["query", "--sql", statement, "--storage", storage])
            assert out.returncode == 2, (storage, statement, out.stderr)
            assert out.stdout == "" and "Traceback" not in out.stderr
            assert out.stderr.count("\n") == 1 and out.stderr.startswith("study query: error: --sql: ")
    assert _fingerprint(db) == files and _pg_fingerprint(pg_study) == pg


@pytest.mark.slow
def test_postgres_is_read_only_too(pg_study: str, study_db: Path) -> None:
    pg_url = pg_study
    assert query.run_named(pg_url, "studies").rows[0][:3] == ("article", "minimize", 18)
    assert len(query.run_named(pg_url, "trials").rows) == 18
    # It looks like a read; PostgreSQL refuses a query that writes.
    with pytest.raises(UsageError, match="refused, a WITH that changes data is not a read"):
        query.run_sql(pg_url, "WITH d AS (DELETE FROM trials RETURNING 1) SELECT COUNT(*) FROM d")
    assert query.run_sql(pg_url, "SELECT COUNT(*) FROM trials").rows == ((18,),)
    # A literal % is SQL's, not the driver's placeholder; PostgreSQL reads the JSON itself.
    assert query.run_sql(pg_url, "SELECT COUNT(*) FROM trials WHERE CAST(state AS TEXT) LIKE 'C%'"
                         ).rows == ((11,),)
    assert query.run_sql(pg_url, "SELECT COUNT(*) FROM trial_user_attributes WHERE key = "
                                 "'status' AND value_json::json #>> '{}' = 'diverged'"
                         ).rows == ((7,),)
    # Reads of every shape still run: a CTE, VALUES, TABLE, a trailing ; and comment, EXPLAIN, SHOW.
    assert query.run_sql(pg_url, "-- why\nWITH c AS (SELECT COUNT(*) AS n FROM trials) "
                                 "SELECT n FROM c; -- done").rows == ((18,),)
    assert query.run_sql(pg_url, "VALUES (1, 'a')").rows == ((1, "a"),)
    assert len(query.run_sql(pg_url, "TABLE studies").rows) == 1
    assert query.run_sql(pg_url, "EXPLAIN SELECT * FROM trials").columns == ("QUERY PLAN",)
    assert query.run_sql(pg_url, "SHOW default_transaction_read_only").rows == (("on",),)
    with pytest.raises(UsageError, match="EXPLAIN must be the statement's first word"):
        query.run_sql(pg_url, "/* plan */ EXPLAIN SELECT 1")
    # The same scripted study gives the same answers from either engine.
    for name in ("grid", "best-lr", "scaling", "curves"):
        assert query.run_named(pg_url, name) == query.run_named(url(study_db), name), name


def test_scaling_of_a_search_that_is_not_a_grid(tmp_path: Path) -> None:
    from study import runner
    from study.data import make_dataset
    from tests.scripted import ScriptedTrainer

    db = url(tmp_path / "s.db")
    tpe = spec("[0]", "search.sampler='tpe'", "search.batch_size={low=16, high=256}",
               "search.learning_rate={low=0.001, high=0.1}", "search.n_trials=4")
    runner.work(runner.open_study(tpe, db, "tpe", create=True), ScriptedTrainer,
                lambda: make_dataset(tpe.data))
    table = query.run_named(db, "scaling")
    assert table.rows == ()
    assert query.render(table, "table").splitlines()[-1].startswith(
        "The tpe sampler searched ranges, not a grid: there is no optimum per batch size")
    assert query.render(table, "json") == "[]"
