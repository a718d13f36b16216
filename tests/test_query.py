"""`study query`: named queries and raw SQL on a real study file, and proof it never writes."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import sqlite3
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest

from study import query
from study.errors import UsageError
from study.trainers import TrialConfig
from tests.helpers import ROOT, run_cli, sql
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
                             "objective", "val_loss", "duration", "status")
    (n,) = sql(study_db, "SELECT COUNT(*) FROM trials")[0]
    assert len(table.rows) == n == 18
    assert [r[0] for r in table.rows] == list(range(18))
    # Durations as Optuna timed them, read by hand: complete - start, to the centisecond.
    times = sql(study_db, "SELECT datetime_start, datetime_complete FROM trials ORDER BY number")
    took = [round((datetime.fromisoformat(str(b)) - datetime.fromisoformat(str(a)))
                  .total_seconds(), 2) for a, b in times]
    assert [r[7] for r in table.rows] == took
    for _, state, bs, lr, seed, objective, val_loss, duration, status in table.rows:
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
                             "diverged_lrs")
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
                                            "where", "diverged_lrs"]
    assert "A learning rate where any run diverged is never the best." in text


def test_scaling_query_fits_verdicts_noise_and_a_conclusion(study_db: Path) -> None:
    from study import scaling
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
    # The same numbers as the report's, from the same records and the stored spec.
    records = [r.record for r in query_rows(study_db)]
    s = scaling.scaling(records)
    assert rows["alpha"][1:4] == (s.fit.alpha, s.fit.low, s.fit.high)  # type: ignore[union-attr]
    text = query.render(table, "table")
    assert text.splitlines()[-1] == scaling.conclusion(s, "adam")
    assert text.splitlines()[-1].startswith("Best LR stays flat as B^0.00")
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
    diverged = next(r for r in rows[1:] if r[-1] == "diverged")
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


WRITES = [
    ("DELETE FROM trials", "'DELETE' is not a read-only statement"),
    ("UPDATE trials SET state = 'FAIL'", "'UPDATE' is not a read-only statement"),
    ("DROP TABLE trials", "'DROP' is not a read-only statement"),
    ("ATTACH DATABASE '{dir}/new.db' AS n", "'ATTACH' is not a read-only statement"),
    ("VACUUM INTO '{dir}/copy.db'", "'VACUUM' is not a read-only statement"),
    # These look like reads; the database itself refuses them.
    ("WITH x AS (SELECT 1) DELETE FROM trials", "refused, the database is open read-only"),
    ("WITH x AS (SELECT 1) INSERT INTO studies (study_name) VALUES ('evil')",
     "refused, the database is open read-only"),
    ("PRAGMA user_version = 7", "refused, the database is open read-only"),
    ("PRAGMA journal_mode = DELETE", "refused, the database is open read-only"),
    ("SELECT load_extension('x')", "refused, the database is open read-only"),
]


@pytest.mark.parametrize(("statement", "message"), WRITES)
def test_writes_are_refused_and_nothing_changes(tmp_path: Path, study_db: Path, statement: str,
                                               message: str) -> None:
    db = copy_db(study_db, tmp_path / "s.db")
    before = _fingerprint(db)
    with pytest.raises(UsageError, match=message) as caught:
        query.run_sql(url(db), statement.format(dir=tmp_path))
    assert caught.value.exit_code == 2
    assert _fingerprint(db) == before  # same files, same bytes: nothing created, nothing changed
    assert sql(db, "SELECT COUNT(*) FROM trials") == [(18,)]


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
    for args, message in [([], "give a query name (trials, grid, best-lr, scaling, curves, studies) or "
                                "--sql"),
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


@pytest.mark.slow
def test_postgres_is_read_only_too(pg_url: str, study_db: Path) -> None:
    make_study(pg_url)
    assert query.run_named(pg_url, "studies").rows[0][:3] == ("article", "minimize", 18)
    assert len(query.run_named(pg_url, "trials").rows) == 18
    # It looks like a read; PostgreSQL's read-only transaction refuses it.
    with pytest.raises(UsageError, match="refused, the database is open read-only "
                                         r"\(cannot execute .* in a read-only transaction"):
        query.run_sql(pg_url, "WITH d AS (DELETE FROM trials RETURNING 1) SELECT COUNT(*) FROM d")
    assert query.run_sql(pg_url, "SELECT COUNT(*) FROM trials").rows == ((18,),)
    # A literal % is SQL's, not the driver's placeholder; PostgreSQL reads the JSON itself.
    assert query.run_sql(pg_url, "SELECT COUNT(*) FROM trials WHERE CAST(state AS TEXT) LIKE 'C%'"
                         ).rows == ((11,),)
    assert query.run_sql(pg_url, "SELECT COUNT(*) FROM trial_user_attributes WHERE key = "
                                 "'status' AND value_json::json #>> '{}' = 'diverged'"
                         ).rows == ((7,),)
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
