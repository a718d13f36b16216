"""The real `study` command, as real processes, on real SQLite files."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import dump, run_cli, sql, start_cli, trial_states

GRID = {(b, lr) for b in (16, 32, 64, 128, 256) for lr in (0.1, 0.01, 0.001, 0.0001)}


def test_help_for_module_and_console_script() -> None:
    assert "run" in run_cli(["--help"]).stdout
    script = Path(sys.executable).parent / "study"
    out = subprocess.run([str(script), "run", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "Example: study run" in out.stdout


BAD_INPUT = [
    (["--spec", "nope"], "spec: unknown spec 'nope'"),
    (["--set", "train.epochz=3"], "train.epochz: unknown key"),
    (["--set", "train.epochs=three"], "train.epochs: expected an integer, got 'three'"),
    (["--epochs", "0"], "train.epochs: expected a positive number, got 0"),
    (["--epochs", "x"], "argument --epochs: invalid int value: 'x'"),
    (["--spec", "fixed-steps", "--epochs", "3"], "--epochs: the spec's budget is 'steps', not epochs"),
    (["--set", "search.batch_size=[16, -1]"], "search.batch_size[1]: expected a positive number"),
    (["--set", "search.learning_rate=[0]"], "search.learning_rate[0]: expected a positive number"),
    (["--set", "search.batch_size=[4096]"], "search.batch_size: 4096 is larger than the training"),
    (["--set", "search.batch_size=[]"], "search.batch_size: the grid is empty"),
    (["--set", "train.epochs"], "--set: expected SECTION.KEY=VALUE, got 'train.epochs'"),
    (["--seeds", "0,x"], "argument --seeds: expected comma-separated integers"),
    (["--trainer", "magic"], "run.trainer: unknown value 'magic'"),
    (["--storage", "nonsense"], "--storage: 'nonsense' is not a database URL"),
    (["--storage", "oracle9://x/y"], "--storage: unknown database kind 'oracle9'"),
    (["--storage", "sqlite:///missing/dir/s.db"], "--storage: directory 'missing/dir' does not"),
]


@pytest.mark.parametrize(("args", "message"), BAD_INPUT)
def test_bad_input_is_one_line_exit_2_and_touches_nothing(
    tmp_path: Path, args: list[str], message: str
) -> None:
    storage = [] if "--storage" in args else ["--storage", f"sqlite:///{tmp_path / 's.db'}"]
    out = run_cli(["run", *args, *storage], cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert message in lines[0]
    assert "Traceback" not in out.stderr
    assert list(tmp_path.iterdir()) == []  # no database, no lock file, nothing


def _attrs(db: Path, number: int) -> dict[str, object]:
    rows = sql(db, """SELECT a.key, a.value_json FROM trial_user_attributes a
                      JOIN trials t ON t.trial_id = a.trial_id WHERE t.number = ?""", (number,))
    return {k: json.loads(v) for k, v in rows}  # type: ignore[arg-type]


def _cells(db: Path, state: str = "COMPLETE") -> list[tuple[int, float, int]]:
    rows = sql(db, """
        SELECT t.trial_id,
          MAX(CASE WHEN p.param_name = 'batch_size' THEN p.param_value END),
          MAX(CASE WHEN p.param_name = 'learning_rate' THEN p.param_value END),
          MAX(CASE WHEN p.param_name = 'seed' THEN p.param_value END)
        FROM trials t JOIN trial_params p ON p.trial_id = t.trial_id
        WHERE t.state = ? GROUP BY t.trial_id""", (state,))
    return sorted((int(b), float(lr), int(s)) for _, b, lr, s in rows)  # type: ignore[arg-type]


def _values(db: Path) -> dict[int, float]:
    rows = sql(db, """SELECT t.number, v.value FROM trials t JOIN trial_values v
                      ON v.trial_id = t.trial_id WHERE t.state = 'COMPLETE'""")
    return dict(rows)  # type: ignore[arg-type]


@pytest.mark.slow
def test_the_digits_spec_trains_real_images_and_prints_the_best_validation_accuracy(
        tmp_path: Path) -> None:
    """`make study SPEC=digits`: scikit-learn's bundled images, nothing fetched, ten
    classes; two epochs on two batch sizes keep it short."""
    db = tmp_path / "d.db"
    out = run_cli(["run", "--spec", "digits", "--epochs", "2", "--storage", f"sqlite:///{db}",
                   "--set", "search.batch_size=[32, 64]"], cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert trial_states(db) == {"COMPLETE": 8}
    accuracies = {n: _attrs(db, n)["val_accuracy"] for n in range(8)}
    best = min(_values(db).items(), key=lambda kv: kv[1])
    # The best cell is the least validation error, and its accuracy is said.
    assert best[1] == pytest.approx(1.0 - accuracies[best[0]])  # type: ignore[operator]
    assert f"validation accuracy {accuracies[best[0]]:.4g}" in out.stdout
    # 360 held-out images of ten classes: two epochs already beat chance by far.
    assert max(accuracies.values()) > 0.5  # type: ignore[type-var]


@pytest.mark.slow
def test_a_multiclass_study_minimizes_the_validation_error_end_to_end(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    url = f"sqlite:///{db}"
    small = ["--set", "data.n_train=200", "--set", "data.n_val=100",
             "--set", "search.batch_size=[16, 32]", "--set", "search.learning_rate=[0.01, 0.001]"]
    out = run_cli(["run", "--spec", "multiclass", "--epochs", "2", "--seeds", "0,1",
                   "--storage", url, *small], cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert trial_states(db) == {"COMPLETE": 8}
    values = _values(db)
    steps = sql(db, """SELECT t.number, v.step, v.intermediate_value
                       FROM trial_intermediate_values v JOIN trials t ON t.trial_id = v.trial_id""")
    for number in range(8):
        attrs = _attrs(db, number)
        assert attrs["trainer"] == "population"
        curve = attrs["val_accuracy_curve"]
        assert isinstance(curve, list) and len(curve) == 2
        assert len(attrs["train_accuracy_curve"]) == 2  # type: ignore[arg-type]
        assert all(0.0 <= v <= 1.0 for v in curve)
        assert attrs["val_accuracy"] == curve[-1]
        assert attrs["train_accuracy"] == attrs["train_accuracy_curve"][-1]  # type: ignore[index]
        # The objective is the validation error, after training and per epoch.
        assert values[number] == pytest.approx(1.0 - curve[-1])
        assert sorted((s, v) for n, s, v in steps if n == number) == \
            [(1, pytest.approx(1.0 - curve[0])), (2, pytest.approx(1.0 - curve[1]))]
    assert "Objective: validation error after training (1 - validation accuracy)" in out.stdout
    assert "; validation accuracy 0." in out.stdout  # the best cell's
    assert "(Adam, 2 seeds; by validation error" in out.stdout  # the scaling headline
    # Queries say which objective they show, and list the accuracies.
    trials = run_cli(["query", "trials", "--storage", url, "--format", "csv"])
    assert trials.stdout.splitlines()[0].endswith(",status,trainer,train_accuracy,val_accuracy")
    for name in ("grid", "best-lr", "scaling"):
        text = run_cli(["query", name, "--storage", url]).stdout
        assert "Objective: validation error (train.objective = 'val_error'), minimized." in text
    assert "(Adam, 2 seeds; by validation error" in text  # the scaling query's conclusion
    curves = run_cli(["query", "curves", "--trial", "0", "--storage", url, "--format", "csv"])
    assert curves.stdout.splitlines()[0] == ("trial,batch_size,learning_rate,seed,epoch,"
                                             "train_loss,val_loss,objective,train_accuracy,"
                                             "val_accuracy")
    report = run_cli(["report", "--storage", url, "--out", str(tmp_path / "dash")])
    assert report.returncode == 0, report.stderr
    index = (tmp_path / "dash" / "index.html").read_text()
    assert "validation error" in index and "validation accuracy 0." in index


@pytest.mark.slow
def test_article_grid_end_to_end_then_resume(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    url = f"sqlite:///{db}"
    out = run_cli(["run", "--epochs", "2", "--storage", url], cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert trial_states(db) == {"COMPLETE": 20}
    assert {(b, lr) for b, lr, _ in _cells(db)} == GRID and len(_cells(db)) == 20
    # Intermediate values: the per-epoch training loss, steps 1 and 2.
    steps = sql(db, "SELECT trial_id, GROUP_CONCAT(step) FROM trial_intermediate_values "
                    "GROUP BY trial_id")
    assert len(steps) == 20 and {s for _, s in steps} == {"1,2"}
    attrs = _attrs(db, 0)
    for key in ("val_loss", "full_train_loss", "steps", "seconds", "seed", "val_curve",
                "train_curve", "status"):
        assert key in attrs, key
    assert attrs["status"] == "complete" and attrs["seed"] == 0
    assert len(attrs["val_curve"]) == 2  # type: ignore[arg-type]
    values = _values(db)
    assert values[0] == pytest.approx(attrs["train_loss"])  # the objective: last epoch's loss
    # The summary table and what to do next.
    assert "batch_size  lr=0.1  lr=0.01  lr=0.001  lr=0.0001" in out.stdout
    assert "Best cell:" in out.stdout and "Next:" in out.stdout
    # TensorFlow's start-up chatter is silenced.
    for noise in ("oneDNN", "cuda", "absl", "cpu_feature_guard"):
        assert noise not in out.stderr
    spec = json.loads(sql(db, "SELECT value_json FROM study_user_attributes WHERE key='spec'")
                      [0][0])  # type: ignore[arg-type]
    assert spec["train"]["epochs"] == 2

    # Resume: the grid is exhausted, nothing trains, no row changes (WAL checkpoints may
    # rewrite pages, so the rows are compared, not the file's bytes).
    before = dump(db)
    again = run_cli(["run", "--epochs", "2", "--storage", url], cwd=tmp_path)
    assert again.returncode == 0 and "nothing to train" in again.stdout
    assert trial_states(db) == {"COMPLETE": 20}
    assert _values(db) == values
    assert dump(db) == before

    # A spec that does not match the stored study is refused; the file is untouched.
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    other = run_cli(["run", "--epochs", "3", "--storage", url], cwd=tmp_path)
    assert other.returncode == 2
    assert "exists with a different spec: train.epochs: study has 2, this run asks 3" in \
        other.stderr
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before


# The reference trainer, one trial at a time, so that a signal lands mid-trial.
SLOW_GRID = ["--set", "search.batch_size=[16, 32]", "--set", "search.learning_rate=[0.01, 0.001]",
             "--epochs", "12", "--trainer", "keras"]


def _wait_for(db: Path, state: str, n: int, proc: subprocess.Popen[str], timeout: float = 120
              ) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"run ended early: {proc.communicate()}")
        if db.exists():
            try:
                if trial_states(db).get(state, 0) >= n and trial_states(db).get("RUNNING"):
                    return
            except Exception:
                pass
        time.sleep(0.1)
    raise AssertionError(f"no {n} {state} trials within {timeout}s")


def _assert_exactly_one_complete_per_cell(db: Path) -> None:
    cells = _cells(db)
    expected = sorted(itertools.product((16, 32), (0.01, 0.001), (0,)))
    assert cells == expected, cells
    assert "RUNNING" not in trial_states(db)


def _failed_statuses(db: Path) -> list[str]:
    return sorted(json.loads(str(v)) for (v,) in sql(db, """
        SELECT a.value_json FROM trial_user_attributes a JOIN trials t
        ON t.trial_id = a.trial_id WHERE t.state = 'FAIL' AND a.key = 'status'"""))


@pytest.mark.slow
def test_interrupt_or_kill_9_then_the_next_run_finishes(tmp_path: Path) -> None:
    """Ctrl-C, then SIGTERM, then kill -9, each mid-trial in the next run of one study:
    every stop keeps the finished trials, the next run re-runs the stopped cell, and the
    last run completes the grid with one result per cell.

    One study for the three stops, so each run resumes the one before it (four cells,
    one finished per run, the next one in flight when the stop lands)."""
    db = tmp_path / "s.db"
    args = ["run", *SLOW_GRID, "--storage", f"sqlite:///{db}"]
    kept: dict[int, float] = {}

    def keeps_what_was_finished() -> None:
        # No run changes a result an earlier run finished.
        nonlocal kept
        now = _values(db)
        assert {k: v for k, v in now.items() if k in kept} == kept
        kept = now

    for done, sig in enumerate((signal.SIGINT, signal.SIGTERM), start=1):
        proc = start_cli(args, cwd=tmp_path)
        _wait_for(db, "COMPLETE", done, proc)
        time.sleep(0.5)  # mid-trial
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 130, (sig, err)
        assert "interrupted; finished trials are kept" in err and "Traceback" not in err
        states = trial_states(db)
        assert "RUNNING" not in states and states.get("FAIL") == done, (sig, states)
        assert _failed_statuses(db) == ["interrupted"] * done
        keeps_what_was_finished()

    proc = start_cli(args, cwd=tmp_path)
    _wait_for(db, "COMPLETE", 3, proc)
    time.sleep(0.5)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    assert trial_states(db).get("RUNNING") == 1
    keeps_what_was_finished()
    out = run_cli(args, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    _assert_exactly_one_complete_per_cell(db)
    assert _failed_statuses(db) == ["abandoned", "interrupted", "interrupted"]
    keeps_what_was_finished()
    assert {k: v for k, v in _values(db).items() if k in kept} == kept


# --------------------------------------------------------------------------- wrong databases and paths


def _bytes(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _one_line_exit_2(out: subprocess.CompletedProcess[str], message: str) -> None:
    assert out.returncode == 2, out.stderr
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr, out.stderr
    assert message in out.stderr, out.stderr


EVERY_COMMAND = [["query", "trials"], ["query", "--sql", "SELECT 1"], ["report", "--out", "out"],
                 ["run", "--epochs", "1"], ["dashboard", "--port", "0"]]


@pytest.mark.parametrize(("content", "commands"), [
    (b"hello, I am a text file\n", EVERY_COMMAND),
    (bytes(range(256)) * 16, [["query", "trials"]]),
    (b"SQLite", [["report", "--out", "out"]]),  # shorter than SQLite's header
])
def test_every_command_on_a_file_that_is_not_a_database(
        tmp_path: Path, content: bytes, commands: list[list[str]]) -> None:
    path = tmp_path / "notes.db"
    path.write_bytes(content)
    for args in commands:
        out = run_cli([*args, "--storage", f"sqlite:///{path}"], cwd=tmp_path, timeout=120)
        _one_line_exit_2(out, f"--storage: {path} is not a database (not a SQLite file)")
    assert path.read_bytes() == content
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.db"]


def test_run_refuses_another_applications_sqlite_database(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "app.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
        conn.execute("INSERT INTO notes (body) VALUES ('keep me')")
    conn.close()
    before = _bytes(path)
    for command in (["run", "--epochs", "1"], ["worker"]):
        out = run_cli([*command, "--storage", f"sqlite:///{path}"], cwd=tmp_path)
        _one_line_exit_2(out, f"--storage: {path} is another application's SQLite database "
                              "(tables: notes), not an Optuna storage; give a new file")
    assert _bytes(path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app.db"]  # no lock, no journal


def test_run_takes_a_new_or_empty_file_and_an_optuna_storage_with_more_tables(
        tmp_path: Path) -> None:
    import sqlite3

    from study import query
    from tests.studies import make_study

    empty = tmp_path / "empty.db"
    empty.touch()  # SQLite reads an empty file as an empty database
    make_study(f"sqlite:///{empty}")
    assert sql(empty, "SELECT COUNT(*) FROM trials") == [(18,)]
    # Our own tables beside Optuna's: still an Optuna storage, resumed as such.
    with sqlite3.connect(empty) as conn:
        conn.execute("CREATE TABLE my_notes (body TEXT)")
    conn.close()
    make_study(f"sqlite:///{empty}")  # resumes: nothing left to train
    assert sql(empty, "SELECT COUNT(*) FROM trials") == [(18,)]
    assert len(query.run_named(f"sqlite:///{empty}", "trials").rows) == 18


def test_report_out_that_cannot_be_written(tmp_path: Path) -> None:
    from tests.studies import make_study

    db = tmp_path / "s.db"
    make_study(f"sqlite:///{db}")
    before = _bytes(db)
    a_file = tmp_path / "a_file"
    a_file.write_text("mine\n")
    for out_dir, message in (("/proc/nope", "--out: cannot write to /proc/nope: No such file"),
                             (str(a_file), f"--out: {a_file} is a file, not a directory"),
                             (str(a_file / "sub"), f"--out: cannot write to {a_file / 'sub'}: "
                                                   "Not a directory")):
        out = run_cli(["report", "--storage", f"sqlite:///{db}", "--out", out_dir], cwd=tmp_path)
        _one_line_exit_2(out, message)
    assert a_file.read_text() == "mine\n"
    assert _bytes(db) == before  # nothing stored on the study either


def test_worker_joins_a_study_stored_by_an_earlier_version(db_path: Path) -> None:
    """A stored spec with a field this version no longer has (and lacking the newest) is
    read through the one stored-spec parser, as `study run` reads it, not refused: the
    worker trains the study's pending cells, as the stored spec says."""
    import optuna

    from study import runner
    from study.spec import load_spec, to_table

    url = f"sqlite:///{db_path}"
    spec = load_spec("article", ["search.batch_size=[16, 64]", "search.learning_rate=[0.01]",
                                 "train.epochs=2", "data.n_train=64", "data.n_val=32",
                                 "run.trainer='keras'"])
    runner.open_study(spec, url, "old", create=True)  # stored, nothing run: two cells pending
    old = to_table(spec)
    old["run"]["retired_option"] = 1
    del old["train"]["divergence_factor"]
    optuna.load_study(study_name="old", storage=url).set_user_attr("spec", old)
    assert sql(db_path, "SELECT COUNT(*) FROM trials") == [(0,)]
    r = run_cli(["worker", "--storage", url, "--study-name", "old"])
    assert r.returncode == 0, r.stderr
    # Each cell of the stored grid once, trained by the stored trainer for the stored
    # epochs, and marked with the worker that ran it.
    attrs = {(n, k): json.loads(str(v)) for n, k, v in sql(
        db_path, "SELECT t.number, a.key, a.value_json FROM trials t "
                 "JOIN trial_user_attributes a ON a.trial_id = t.trial_id")}
    cells = sql(db_path, "SELECT t.number, t.state, "
                         "MAX(CASE WHEN p.param_name = 'batch_size' THEN p.param_value END), "
                         "MAX(CASE WHEN p.param_name = 'learning_rate' THEN p.param_value END) "
                         "FROM trials t JOIN trial_params p ON p.trial_id = t.trial_id "
                         "GROUP BY t.number ORDER BY t.number")
    assert sorted((state, b, lr) for _, state, b, lr in cells) == \
        [("COMPLETE", 16.0, 0.01), ("COMPLETE", 64.0, 0.01)]
    for n, *_ in cells:
        assert (attrs[n, "status"], attrs[n, "trainer"]) == ("complete", "keras")
        assert len(attrs[n, "train_curve"]) == 2 and attrs[n, "worker"]
    assert len({attrs[n, "worker"] for n, *_ in cells}) == 1  # one worker ran both


# --------------------------------------------------------------------------- your own data


def _data_files(root: Path) -> None:
    """The files the bad-data cases read, each wrong in one way (or right, as a base)."""
    import numpy as np

    rows = "".join(f"{i / 10},{(i * 7) % 5},{i % 3 + 0.5}\n" for i in range(40))
    (root / "good.csv").write_text("a,b,y\n" + rows)
    (root / "word.csv").write_text("a,b,y\n1,2,3\n4,five,6\n")
    (root / "nan.csv").write_text("a,b,y\n1,2,3\n4,5,nan\n")
    (root / "header.csv").write_text("a,b,y\n")
    (root / "ones.csv").write_text("a,b,y\n" + "".join(f"{i},{i},1\n" for i in range(20)))
    (root / "binary.csv").write_text("a,b,y\n" + "".join(f"{i},{i % 4},{i % 2}\n" for i in range(20)))
    (root / "text.npz").write_text("not a zip")
    (root / "folder.npz").mkdir()
    np.savez(root / "short.npz", x_train=np.ones((5, 2)), y_train=np.ones(4))
    np.savez(root / "objects.npz", x_train=np.array([None] * 5, dtype=object), y_train=np.ones(5))
    (root / "loaders_mod.py").write_text(
        "def boom():\n    raise ValueError('no data today')\n"
        "def nothing():\n    return None\n")


BAD_DATA = [
    ('kind = "csv"\npath = "missing.csv"\ntarget = "y"', "data.path: 'missing.csv': file not found"),
    ('kind = "npz"\npath = "text.npz"', "data.path: 'text.npz' is not an npz file"),
    ('kind = "npz"\npath = "folder.npz"', "data.path: 'folder.npz' is a directory"),
    ('kind = "npz"\npath = "objects.npz"\nval_fraction = 0.2', "holds Python objects (pickled)"),
    ('kind = "npz"\npath = "short.npz"\nval_fraction = 0.2', "x_train has 5 rows but y_train has 4"),
    ('kind = "csv"\npath = "good.csv"\ntarget = "z"\nval_fraction = 0.2',
     "data.target: no column 'z' in 'good.csv' (columns: a, b, y)"),
    ('kind = "csv"\npath = "word.csv"\ntarget = "y"\nval_fraction = 0.2',
     "'word.csv' line 3, column 'b': 'five' is not a number"),
    ('kind = "csv"\npath = "nan.csv"\ntarget = "y"\nval_fraction = 0.2',
     "'nan.csv' line 3, column 'y': 'nan' is not a finite number"),
    ('kind = "csv"\npath = "header.csv"\ntarget = "y"\nval_fraction = 0.2', "the training set is empty"),
    ('kind = "csv"\npath = "ones.csv"\ntarget = "y"\ntask = "binary"\nval_fraction = 0.2\n'
     '[train]\nloss = "cross_entropy"', "y_train has a single class (1)"),
    ('kind = "csv"\npath = "good.csv"\ntarget = "y"\nval_fraction = 0.01',
     "data.val_fraction: 0.01 of 40 rows leaves the validation set empty"),
    ('kind = "csv"\npath = "good.csv"\ntarget = "y"', "data.val_fraction: csv file 'good.csv' has no "
     "validation set"),
    ('kind = "python"\nloader = "loaders_mod:boom"\nval_fraction = 0.2',
     "data.loader: 'loaders_mod:boom' raised ValueError: no data today"),
    ('kind = "python"\nloader = "loaders_mod:nothing"\nval_fraction = 0.2',
     "data.loader: 'loaders_mod:nothing' returned a NoneType; expected a tuple"),
    ('kind = "python"\nloader = "no_such_module_q:load"\nval_fraction = 0.2',
     "data.loader: 'no_such_module_q:load' does not import: ModuleNotFoundError"),
    # A loss named that does not fit the task stays an error (left out, it follows the task).
    ('kind = "csv"\npath = "binary.csv"\ntarget = "y"\nval_fraction = 0.2\n[train]\nloss = "mse"',
     "train.loss: 'mse' does not fit csv file 'binary.csv' (use 'cross_entropy', or leave "
     "train.loss out to follow the data)"),
    ('kind = "csv"\npath = "good.csv"\ntarget = "y"\nval_fraction = 0.5',
     "search.batch_size: 32 is larger than the training set (csv file 'good.csv' has 20 "
     "training rows)"),
    ('kind = "digits"\nval_fraction = 0.2\n[train]\nloss = "mse"',
     "train.loss: 'mse' does not fit data.kind = 'digits' (use 'sparse_cross_entropy', or "
     "leave train.loss out to follow the data)"),
]


@pytest.mark.parametrize(("data", "message"), BAD_DATA)
def test_bad_data_is_one_line_exit_2_and_no_database(tmp_path: Path, data: str, message: str
                                                     ) -> None:
    _data_files(tmp_path)
    (tmp_path / "s.toml").write_text(f'name = "mine"\n[data]\n{data}\n'
                                     "[search]\nbatch_size = [16, 32]\n")
    out = run_cli(["run", "--spec", "s.toml", "--storage", "sqlite:///s.db"], cwd=tmp_path)
    _one_line_exit_2(out, message)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("s.db")]


def _csv_study(root: Path) -> None:
    rng = __import__("numpy").random.default_rng(0)
    x = rng.normal(size=(96, 3)).round(4)
    y = x @ [1.0, -1.0, 0.5] + 0.1 * rng.normal(size=96).round(4)
    (root / "mine.csv").write_text("a,b,c,y\n" + "".join(
        f"{r[0]},{r[1]},{r[2]},{t:.4f}\n" for r, t in zip(x.tolist(), y.tolist(), strict=True)))
    (root / "mine.toml").write_text(
        'name = "mine"\n[data]\nkind = "csv"\npath = "mine.csv"\ntarget = "y"\n'
        "val_fraction = 0.25\nstandardize = true\n[model]\nhidden = [8]\n[train]\nepochs = 3\n"
        "[search]\nbatch_size = [8, 16]\nlearning_rate = [0.01, 0.001]\n")


@pytest.mark.slow
def test_a_csv_study_trains_end_to_end_and_refuses_changed_data(tmp_path: Path) -> None:
    _csv_study(tmp_path)
    args = ["run", "--spec", "mine.toml", "--storage", "sqlite:///s.db", "--trainer", "population"]
    out = run_cli(args, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "falls back" not in out.stderr and "keras trainer" not in out.stderr
    db = tmp_path / "s.db"
    assert trial_states(db) == {"COMPLETE": 4}
    (stored,) = sql(db, "SELECT value_json FROM study_user_attributes WHERE key = 'spec'")
    spec = json.loads(str(stored[0]))
    assert spec["data"]["path"] == "mine.csv" and spec["data"]["target"] == ["y"]
    assert str(spec["data"]["fingerprint"]).startswith("sha256:")
    # The same data resumes (nothing left to train)...
    again = run_cli(args, cwd=tmp_path)
    assert again.returncode == 0 and "is complete" in again.stdout, again.stderr
    # ...one changed value does not, and the database is left as it was.
    before = dump(db)
    text = (tmp_path / "mine.csv").read_text().splitlines()
    text[5] = "9.5," + text[5].split(",", 1)[1]
    (tmp_path / "mine.csv").write_text("\n".join(text) + "\n")
    out = run_cli(args, cwd=tmp_path)
    _one_line_exit_2(out, "study 'mine' was run on other data than csv file 'mine.csv' holds now "
                          f"(data.fingerprint: study has {spec['data']['fingerprint'][:19]}...")
    assert "pass --study-name NAME or another --storage to start a new study" in out.stderr
    assert dump(db) == before


def test_a_study_stored_without_a_fingerprint_resumes_and_gets_one(db_path: Path) -> None:
    from study import runner
    from study.data import make_dataset
    from study.spec import load_spec
    from tests.scripted import ScriptedTrainer

    url = f"sqlite:///{db_path}"
    spec = load_spec("article", ["search.batch_size=[16]", "search.learning_rate=[0.01]",
                                 "train.epochs=2", "data.n_train=64", "data.n_val=32"])
    ctx = runner.open_study(spec, url, "old", create=True)  # as before fingerprints: none
    runner.work(ctx, ScriptedTrainer, lambda: make_dataset(spec.data))
    (stored,) = sql(db_path, "SELECT value_json FROM study_user_attributes WHERE key = 'spec'")
    assert "fingerprint" not in json.loads(str(stored[0]))["data"]
    out = run_cli(["run", "--storage", url, "--study-name", "old", "--set", "search.batch_size=[16]",
                   "--set", "search.learning_rate=[0.01]", "--epochs", "2",
                   "--set", "data.n_train=64", "--set", "data.n_val=32"])
    assert out.returncode == 0 and "is complete" in out.stdout, out.stderr
    (stored,) = sql(db_path, "SELECT value_json FROM study_user_attributes WHERE key = 'spec'")
    assert json.loads(str(stored[0]))["data"]["fingerprint"] == make_dataset(spec.data).fingerprint


def test_a_worker_whose_copy_of_the_data_differs_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from study import runner
    from study.data import make_dataset
    from study.spec import load_spec

    _csv_study(tmp_path)
    monkeypatch.chdir(tmp_path)  # the spec's path is relative, as a user writes it
    from study.data import check_spec

    data = make_dataset(load_spec("mine.toml").data)
    spec = check_spec(load_spec("mine.toml"), data)  # as `study run` stores it: resolved
    url = f"sqlite:///{tmp_path / 's.db'}"
    runner.open_study(spec, url, "mine", create=True, fingerprint=data.fingerprint)
    (tmp_path / "mine.csv").write_text((tmp_path / "mine.csv").read_text().replace("y\n", "y\n0,0,0,0\n", 1))
    before = dump(tmp_path / "s.db")
    out = run_cli(["worker", "--storage", url, "--study-name", "mine"], cwd=tmp_path)
    _one_line_exit_2(out, "study 'mine' was run on other data than csv file 'mine.csv' holds now")
    assert dump(tmp_path / "s.db") == before


@pytest.mark.parametrize(("values", "message"), [
    ({}, "data.kind = 'arrays': arrays passed to study.run(data=...) exist only in that "
         "process and the workers it starts; elsewhere use data in a file"),
    ({"model.builder": "__main__:build"},
     "model.builder: '__main__:build' was a function of the script or notebook that called "
     "study.run, which only its own workers can rebuild; elsewhere use model.builder = "
     "'module:function' in an importable module"),
], ids=["arrays", "function"])
def test_a_worker_elsewhere_cannot_join_a_study_of_arrays_or_a_notebook_function(
        tmp_path: Path, values: dict[str, object], message: str) -> None:
    """What study.run(data=arrays, model=fn) stored names what only its own process has:
    a `study worker` started by hand says so in one line and writes nothing."""
    from study import runner
    from study.api import resolve_spec

    arrays = not values
    spec = resolve_spec({"name": "mem"}, {"search.batch_size": [16], **values,
                                          **({"data.val_fraction": 0.25} if arrays else {})},
                        in_memory_data=arrays)
    url = f"sqlite:///{tmp_path / 's.db'}"
    runner.open_study(spec, url, "mem", create=True)
    before = dump(tmp_path / "s.db")
    out = run_cli(["worker", "--storage", url, "--study-name", "mem"], cwd=tmp_path)
    _one_line_exit_2(out, message)
    assert dump(tmp_path / "s.db") == before
