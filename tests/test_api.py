"""The Python API (study/api.py): `study.run`, `study.load`, `Results`, `Table`.

The CLI is the reference: the API stores the same trials as `study run`, and its tables
are what `study query` prints. Studies are real SQLite files; the tables, figures and
report use the scripted study of tests/studies.py; one tiny real grid trains through
both the API and the CLI, and one through a pool of two worker processes.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import study
from study import runner
from study.data import make_dataset
from study.errors import DataError, MissingDependency, SpecError, StorageUsageError, UsageError
from study.query import Table
from study.spec import load_spec, to_table
from study.trainers import TrialConfig
from tests.helpers import ROOT, dump, run_cli, sql, trial_states
from tests.scripted import ScriptedTrainer, loss_at
from tests.studies import DIVERGED_LR, PARTLY, make_study, measured, step_losses
from tests.studies import spec as scripted_spec


def _plain(v: object) -> object:
    """A value as `study query --format json` writes it: JSON has no NaN or infinity."""
    return None if isinstance(v, float) and not math.isfinite(v) else v


@pytest.fixture(scope="module")
def scripted(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A finished scripted grid study (repeats, divergences, noise and sharpness)."""
    url = f"sqlite:///{tmp_path_factory.mktemp('api') / 'study.db'}"
    make_study(url)
    return url


# --------------------------------------------------------------------------- import


def test_import_study_and_its_api_does_not_load_tensorflow() -> None:
    probe = subprocess.run([sys.executable, "-c", (
        "import sys, study; study.run; study.load; study.Results; study.Table; study.Spec; "
        "study.errors.SpecError; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & "
        "{'tensorflow', 'keras', 'optuna', 'plotly', 'sqlalchemy'}))")],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.strip() == "[]"
    with pytest.raises(AttributeError, match="module 'study' has no attribute 'nope'"):
        study.nope  # type: ignore[attr-defined]  # noqa: B018


# --------------------------------------------------------------------------- tables


TABLES: list[tuple[str, Callable[[study.Results], Table], list[str]]] = [
    ("trials", lambda r: r.trials(), ["trials"]),
    ("grid", lambda r: r.grid(), ["grid"]),
    ("best-lr", lambda r: r.best_lr(), ["best-lr"]),
    ("scaling", lambda r: r.scaling(), ["scaling"]),
    ("critical-batch", lambda r: r.critical_batch(), ["critical-batch"]),
    ("curves", lambda r: r.curves(), ["curves"]),
    ("curves of one trial", lambda r: r.curves(trial=3), ["curves", "--trial", "3"]),
]


def _loss(bs: int, lr: float, seed: int, epoch: int = 4) -> float | None:
    """The scripted study's loss in closed form (tests/scripted.py, tests/studies.py); None
    where the study makes the run diverge."""
    if lr == DIVERGED_LR or (bs, lr, seed) == PARTLY:
        return None
    return loss_at(TrialConfig.of(scripted_spec(), bs, lr, seed), epoch)


def _cell_mean(bs: int, lr: float) -> float:
    """The mean over the seeds that completed."""
    runs = [v for s in (0, 1) if (v := _loss(bs, lr, s)) is not None]
    return sum(runs) / len(runs)


def _best_lr(bs: int) -> float:
    """The lowest mean of a cell where no run diverged."""
    clean = [lr for lr in (0.01, 0.001) if None not in (_loss(bs, lr, 0), _loss(bs, lr, 1))]
    return min(clean, key=lambda lr: _cell_mean(bs, lr))


def _expect_trials(rows: list[dict[str, Any]]) -> None:
    assert [r["number"] for r in rows] == list(range(18))
    for r in rows:
        want = _loss(r["batch_size"], r["learning_rate"], r["seed"])
        assert r["objective"] == (None if want is None else pytest.approx(want)), r


def _expect_grid(rows: list[dict[str, Any]]) -> None:
    assert [r["batch_size"] for r in rows] == [16, 64, 256]
    for r in rows:
        b = r["batch_size"]
        assert (r["lr=0.1"], r["lr=0.01"], r["lr=0.001"]) == (
            "diverged", pytest.approx(_cell_mean(b, 0.01)), pytest.approx(_cell_mean(b, 0.001))), r


def _expect_best_lr(rows: list[dict[str, Any]]) -> None:
    assert {r["batch_size"]: (r["learning_rate"], r["objective"]) for r in rows} == \
        {b: (_best_lr(b), pytest.approx(_cell_mean(b, _best_lr(b)))) for b in (16, 64, 256)}


def _expect_scaling(rows: list[dict[str, Any]]) -> None:
    assert {r["quantity"]: r["value"] for r in rows if str(r["quantity"]).startswith("lr* at")} \
        == {f"lr* at B={b}": _best_lr(b) for b in (16, 64, 256)}


def _expect_critical_batch(rows: list[dict[str, Any]]) -> None:
    # The automatic target: 10% above the lowest loss every batch size's step curves reached
    # (tests/studies.step_losses over a run's 4 epochs of 10 steps).
    target = 1.1 * max(min(min(step_losses(TrialConfig.of(scripted_spec(), b, lr, s), 40))
                           for lr in (0.01, 0.001) for s in (0, 1) if _loss(b, lr, s) is not None)
                       for b in (16, 64, 256))
    values = {r["quantity"]: r["value"] for r in rows}
    assert values["target"] == pytest.approx(target)
    # B=64 and B=256 fall at the same rate in closed form (it grows with min(B, 64)).
    assert values["steps to target at B=64"] == pytest.approx(values["steps to target at B=256"])
    assert values["steps to target at B=16"] > values["steps to target at B=64"]


def _expect_curves(rows: list[dict[str, Any]]) -> None:
    assert len(rows) == 11 * 4 + 7 * 2  # diverged runs stop at epoch 2
    for r in rows:
        bs, lr, seed, epoch = r["batch_size"], r["learning_rate"], r["seed"], r["epoch"]
        if _loss(bs, lr, seed) is None:  # tests/studies.DivergingTrainer: [2.0, NaN]
            assert r["train_loss"] == {1: 2.0, 2: None}[epoch], r
        else:
            assert r["train_loss"] == pytest.approx(_loss(bs, lr, seed, epoch)), r


def _expect_curves_of_trial_3(rows: list[dict[str, Any]]) -> None:
    assert [(r["trial"], r["epoch"]) for r in rows] == [(3, e) for e in (1, 2, 3, 4)]
    assert {(r["batch_size"], r["learning_rate"], r["seed"]) for r in rows} == {(16, 0.01, 1)}
    assert [r["train_loss"] for r in rows] == [pytest.approx(_loss(16, 0.01, 1, e))
                                                for e in (1, 2, 3, 4)]


# Each table's values, from the scripted study's closed forms (not from study.query).
EXPECT: dict[str, Callable[[list[dict[str, Any]]], None]] = {
    "trials": _expect_trials, "grid": _expect_grid, "best-lr": _expect_best_lr,
    "scaling": _expect_scaling, "critical-batch": _expect_critical_batch,
    "curves": _expect_curves,
    "curves of one trial": _expect_curves_of_trial_3}


@pytest.mark.parametrize(("what", "method", "args"), TABLES, ids=[t[0] for t in TABLES])
def test_every_table_is_what_study_query_prints(
        scripted: str, what: str, method: Callable[[study.Results], Table], args: list[str]
) -> None:
    table = method(study.load(scripted))
    EXPECT[what](table.to_dicts())
    printed = run_cli(["query", *args, "--storage", scripted, "--format", "json"])
    assert printed.returncode == 0, printed.stderr
    assert json.loads(printed.stdout) == [{k: _plain(v) for k, v in row.items()}
                                          for row in table.to_dicts()]
    # The text form is the command's default output, notes included.
    text = run_cli(["query", *args, "--storage", scripted])
    assert text.returncode == 0, text.stderr
    assert str(table) == repr(table) == text.stdout.rstrip("\n")
    assert list(table.to_dicts()[0]) == list(table.columns)


def test_to_pandas_or_a_typed_error_saying_what_is_missing(
        scripted: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import pandas  # the dev extra installs the notebook extra's pandas

    table = study.load(scripted).grid()
    frame = table.to_pandas()
    assert isinstance(frame, pandas.DataFrame)
    assert list(frame.columns) == list(table.columns) and len(frame) == len(table.rows)
    # Without pandas (None in sys.modules makes its import fail), the error names the
    # extra that installs it, exactly.
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(MissingDependency, match=r"Table.to_pandas needs pandas.*"
                       r"pip install 'study\[notebook\]'.*\.to_dicts") as caught:
        table.to_pandas()
    assert isinstance(caught.value, ImportError)


# --------------------------------------------------------------------------- load


def test_load_finds_the_study_as_query_does(tmp_path: Path, scripted: str) -> None:
    r = study.load(scripted)  # no name: the storage's only study
    assert r.name == "article" and r.storage == scripted
    assert r.spec == scripted_spec()
    url = f"sqlite:///{tmp_path / 'two.db'}"
    make_study(url, "first", seeds="[0]")
    make_study(url, "second", seeds="[0]")
    assert study.load(url, "second").name == "second"
    assert len(study.load(url, "second").trials().rows) == 9
    with pytest.raises(StorageUsageError, match="holds several studies \\('first', 'second'\\)"):
        study.load(url)
    with pytest.raises(StorageUsageError, match=r"no study 'third' in .*studies: 'first'"):
        study.load(url, "third")
    with pytest.raises(StorageUsageError, match="no database at"):
        study.load(f"sqlite:///{tmp_path / 'none.db'}")
    assert not (tmp_path / "none.db").exists()


def test_repr_masks_the_password() -> None:
    r = study.Results("postgresql+psycopg://me:s3cret@127.0.0.1:5/studies", "mine")
    assert repr(r) == ("Results(study='mine', "
                       "storage='postgresql+psycopg://me:***@127.0.0.1:5/studies')")
    assert "s3cret" not in repr(r) and "s3cret" not in str(r)


# --------------------------------------------------------------------------- figures and report


def test_every_report_page_is_a_figure_and_the_report_writes_them(
        tmp_path: Path, scripted: str) -> None:
    import plotly.graph_objects as go

    r = study.load(scripted)
    names = r.figure_names()
    for name in ("article", "scaling", "heatmap_objective", "contour", "noise", "sharpness"):
        assert name in names
    figures = {name: r.figure(name) for name in names}
    for name, figure in figures.items():
        assert isinstance(figure, go.Figure) and figure.data, name

    def trace(name: str, label: str) -> tuple[list[float], list[float | None]]:
        (t,) = [t for t in figures[name].data if t.name == label]
        return list(t.x), list(t.y)

    # What the figures draw, against the scripted study's closed forms: the article's line
    # of a learning rate (mean over the seeds that completed; diverged: no point), one
    # batch size's curve over learning rates, and the measured noise scale (tr(Sigma) and
    # |G|^2 averaged over seeds, then divided) and sharpness (mean over seeds) per cell.
    assert trace("article", "lr=0.01") == ([16, 64, 256], [pytest.approx(_cell_mean(b, 0.01))
                                                          for b in (16, 64, 256)])
    assert trace("article", "lr=0.1")[1] == [None] * 3
    assert trace("optimum", "B=16") == ([0.001, 0.01, 0.1], [
        pytest.approx(_cell_mean(16, 0.001)), pytest.approx(_cell_mean(16, 0.01)), None])
    cells = {b: [measured(TrialConfig.of(scripted_spec(), b, 0.001, s)) for s in (0, 1)]
             for b in (16, 64, 256)}
    assert trace("noise", "lr=0.001") == ([16, 64, 256], [pytest.approx(
        sum(m["noise_trace_sigma"] for m in ms) / sum(m["noise_grad_sq"] for m in ms))
        for ms in cells.values()])
    assert trace("sharpness", "lr=0.001") == ([16, 64, 256], [
        pytest.approx(sum(m["sharpness"] for m in ms) / 2) for ms in cells.values()])
    report = r.report(tmp_path / "out", dashboard=False)
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == sorted([f"{n}.html" for n in names] + ["index.html", "plotly.min.js"])
    assert report.skipped == {} and report.study == "article"
    with pytest.raises(UsageError, match="figure: unknown figure 'articel'; choose one of "
                                         "article, scaling, "):
        r.figure("articel")


def test_a_page_the_study_cannot_have_says_why(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    spec = load_spec("article", ["search.batch_size=[16, 64]", "search.learning_rate=[0.01]",
                                 "train.epochs=2", "data.n_train=64", "data.n_val=32"])
    ctx = runner.open_study(spec, url, "plain", create=True)
    runner.work(ctx, ScriptedTrainer, lambda: make_dataset(spec.data))
    r = study.load(url)
    with pytest.raises(UsageError, match="figure: 'noise' is not drawn for study 'plain': "
                                         "no trial recorded a noise scale"):
        r.figure("noise")
    # With the dashboard (the default), the summary note is stored on the study.
    r.report(tmp_path / "out")
    assert (tmp_path / "out" / "index.html").exists()
    # The note, read back by hand (optuna-dashboard keeps it in pieces, note_str:0, :1, ...),
    # names the best cell and every cell's loss as the closed form makes them.
    parts = dict(sql(tmp_path / "s.db", "SELECT key, value_json FROM study_system_attributes "
                                        "WHERE key LIKE 'dashboard:note_str:%'"))
    note = "".join(json.loads(str(parts[f"dashboard:note_str:{i}"])) for i in range(len(parts)))
    loss = {b: loss_at(TrialConfig.of(spec, b, 0.01, 0), 2) for b in (16, 64)}
    assert loss[16] < loss[64]
    assert (f"**Best cell:** batch_size=16, learning_rate=0.01: final training loss "
            f"{loss[16]:.4g} (mean of 1; single seed)") in note
    assert "**Trials:** 2 (2 complete)" in note
    assert f"| 16 | {loss[16]:.4g} |\n| 64 | {loss[64]:.4g} |" in note


# --------------------------------------------------------------------------- bad input


BAD: list[tuple[dict[str, Any], type[Exception], str]] = [
    ({"spec": "nope"}, SpecError, "spec: unknown spec 'nope'"),
    ({"spec": 42}, SpecError, "spec: expected a built-in name, a TOML path, a dict or a Spec"),
    ({"spec": {"train": {"epochz": 1}}}, SpecError, "train.epochz: unknown key"),
    ({"overrides": {"train.epochz": 3}}, SpecError, "train.epochz: unknown key"),
    ({"overrides": {"train.epochs": "three"}}, SpecError,
     "train.epochs: expected an integer, got 'three'"),
    ({"overrides": {"train.epochs": 0}}, SpecError, "train.epochs: expected a positive number"),
    ({"overrides": {"search.batch_size": [16, -1]}}, SpecError,
     "search.batch_size[1]: expected a positive number"),
    ({"overrides": {"train..epochs": 3}}, SpecError, "overrides: expected keys like"),
    ({"overrides": {"train.epochs.x": 3}}, SpecError, "train.epochs.x: 'epochs' is not a section"),
    ({"overrides": ["train.epochs=3"]}, SpecError, "overrides: expected a dict"),
    ({"seeds": [0, "x"]}, SpecError, "seeds: expected a non-empty list of integers"),
    ({"seeds": []}, SpecError, "seeds: expected a non-empty list of integers"),
    ({"trainer": "magic"}, SpecError, "run.trainer: unknown value 'magic'"),
    ({"workers": 0}, UsageError, "--workers: expected a positive integer, got 0"),
    ({"storage": "nonsense"}, StorageUsageError, "--storage: 'nonsense' is not a database URL"),
    ({"storage": "oracle9://x/y"}, StorageUsageError, "unknown database kind 'oracle9'"),
    ({"storage": "sqlite:///missing/dir/s.db"}, StorageUsageError,
     "--storage: directory 'missing/dir' does not exist"),
]


@pytest.mark.parametrize(("kwargs", "error", "message"), BAD, ids=[b[2][:40] for b in BAD])
def test_bad_input_raises_the_typed_error_and_writes_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kwargs: dict[str, Any],
        error: type[Exception], message: str) -> None:
    monkeypatch.chdir(tmp_path)
    kwargs = {"storage": f"sqlite:///{tmp_path / 's.db'}", **kwargs}
    with pytest.raises(error) as caught:
        study.run(**kwargs)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)
    assert list(tmp_path.iterdir()) == []  # no database, no lock file, nothing


def test_a_dict_spec_and_python_overrides_are_not_changed() -> None:
    from study.api import resolve_spec

    table = to_table(load_spec("article"))
    overrides = {"search.batch_size": (16, 64), "search.learning_rate": {"low": 1e-3,
                                                                        "high": 1e-1}}
    spec = resolve_spec(table, {**overrides, "search.sampler": "random", "search.n_trials": 4},
                        seeds=[3])
    assert spec.search.batch_size == (16, 64) and spec.search.seeds == (3,)
    assert (spec.search.learning_rate.low, spec.search.learning_rate.high) == (1e-3, 1e-1)  # type: ignore[union-attr]
    assert table == to_table(load_spec("article"))  # the caller's table is untouched


def test_a_spec_object_or_a_toml_path_is_the_same_spec(tmp_path: Path) -> None:
    from study.api import resolve_spec
    from study.spec import to_toml

    spec = load_spec("article", ["train.epochs=7", "search.seeds=[0, 1]"])
    path = tmp_path / "mine.toml"
    path.write_text(to_toml(spec))
    assert resolve_spec(spec) == resolve_spec(path) == resolve_spec(str(path)) == spec
    assert resolve_spec(spec, {"train.epochs": 3}).train.epochs == 3
    assert spec.train.epochs == 7


# --------------------------------------------------------------------------- real runs

TINY = {"search.batch_size": [16, 64], "search.learning_rate": [0.01, 0.001],
        "train.epochs": 2, "data.n_train": 128, "data.n_val": 64}
TINY_ARGS = ["--seeds", "0", "--epochs", "2", "--set", "search.batch_size=[16, 64]",
             "--set", "search.learning_rate=[0.01, 0.001]", "--set", "data.n_train=128",
             "--set", "data.n_val=64"]
# What the trials store beside the time they took and who ran them.
_TRIAL_SQL = """
SELECT t.number, t.state, v.value,
  (SELECT GROUP_CONCAT(p.param_name || '=' || p.param_value, ',') FROM
     (SELECT * FROM trial_params p WHERE p.trial_id = t.trial_id ORDER BY p.param_name) p),
  (SELECT GROUP_CONCAT(a.key || '=' || a.value_json, ';') FROM
     (SELECT * FROM trial_user_attributes a WHERE a.trial_id = t.trial_id
      AND a.key NOT IN ('seconds', 'group_seconds', 'worker') ORDER BY a.key) a)
FROM trials t LEFT JOIN trial_values v ON v.trial_id = t.trial_id ORDER BY t.number"""


def _trials(db: Path) -> list[tuple[object, ...]]:
    return sql(db, _TRIAL_SQL)


@pytest.mark.slow
def test_run_stores_what_study_run_stores_then_resumes_and_refuses_a_change(
        tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    api_db, cli_db = tmp_path / "api.db", tmp_path / "cli.db"
    r = study.run("article", storage=f"sqlite:///{api_db}", seeds=[0], overrides=TINY)
    assert capfd.readouterr() == ("", "")  # the library prints nothing
    out = run_cli(["run", *TINY_ARGS, "--storage", f"sqlite:///{cli_db}"])
    assert out.returncode == 0, out.stderr
    stored = _trials(api_db)
    assert len(stored) == 4 and {row[1] for row in stored} == {"COMPLETE"}
    assert stored == _trials(cli_db)  # params, states, values and every trial attribute
    assert r.name == "article" and r.spec == study.load(f"sqlite:///{cli_db}").spec
    assert r.grid().rows == study.load(f"sqlite:///{cli_db}").grid().rows

    # Resumed: a finished study trains nothing and no row changes.
    before = dump(api_db)
    again = study.run("article", storage=f"sqlite:///{api_db}", seeds=[0], overrides=TINY)
    assert dump(api_db) == before and again.trials().rows == r.trials().rows
    # A different identity is refused, naming the field; nothing is written.
    with pytest.raises(SpecError, match=r"exists with a different spec: train\.epochs: study has "
                                        r"2, this run asks 3"):
        study.run("article", storage=f"sqlite:///{api_db}", seeds=[0],
                  overrides={**TINY, "train.epochs": 3})
    assert dump(api_db) == before


@pytest.mark.slow
def test_workers_from_the_api_outside_the_source_tree(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """Two worker processes from `study.run(workers=2)`, called from another directory:
    the workers import this package (not whichever `study` is installed) and each cell
    ends with exactly one COMPLETE trial. `progress=True` draws the bar on stderr."""
    monkeypatch.chdir(tmp_path)
    db = tmp_path / "pool.db"
    r = study.run({"name": "pool"}, storage=f"sqlite:///{db}", seeds=[0, 1], overrides=TINY,
                  workers=2, progress=True)
    out, err = capfd.readouterr()
    assert out == "" and "8/8 trials" in err, err
    cells = sql(db, """SELECT COUNT(*), COUNT(DISTINCT t.trial_id) FROM trials t
                       WHERE t.state = 'COMPLETE'""")
    assert cells == [(8, 8)]
    assert len({row[3] for row in _trials(db)}) == 8  # eight distinct cells
    workers = {w for (w,) in sql(db, "SELECT value_json FROM trial_user_attributes "
                                     "WHERE key = 'worker'")}
    assert len(workers) == 2  # both workers trained
    assert r.name == "pool" and len(r.trials().rows) == 8


def test_workers_import_the_package_they_were_started_from() -> None:
    from study.workers import _same_package

    root = str(Path(study.__file__).resolve().parent.parent)
    assert _same_package({}) == {"PYTHONPATH": root}
    assert _same_package({"PYTHONPATH": "/elsewhere"}) == {
        "PYTHONPATH": os.pathsep.join([root, "/elsewhere"])}


# --------------------------------------------------------------------------- your own model


def _arrays(n: int = 96, seed: int = 0) -> tuple[Any, Any]:
    import numpy as np

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4))
    return x, x @ [1.0, -1.0, 0.5, 2.0] + 0.1 * rng.normal(size=n)


OWN = {"search.batch_size": [16, 32], "search.learning_rate": [0.01, 0.001], "train.epochs": 2,
       "data.val_fraction": 0.25}
ONE_LR = {**OWN, "search.learning_rate": [0.01]}


def test_run_with_a_function_and_arrays_trains_stores_and_resumes(tmp_path: Path) -> None:

    import numpy as np

    def build(input_shape: tuple[int, ...], outputs: int) -> Any:
        import keras

        return keras.Sequential([keras.Input(shape=input_shape),
                                 keras.layers.Dense(8, activation="tanh"),
                                 keras.layers.Dropout(0.1), keras.layers.Dense(outputs)])

    db = tmp_path / "own.db"
    url = f"sqlite:///{db}"
    x, y = _arrays()
    r = study.run({"name": "own"}, model=build, data=(x, y), storage=url, seeds=[0],
                  trainer="keras", overrides=ONE_LR)
    assert r.notes == []  # one process: nothing for other machines to know
    rows = r.trials().to_dicts()
    assert len(rows) == 2 and {row["state"] for row in rows} == {"COMPLETE"}
    assert {t for (t,) in sql(db, "SELECT value_json FROM trial_user_attributes "
                                  "WHERE key = 'trainer'")} == {'"keras"'}
    (stored,) = sql(db, "SELECT value_json FROM study_user_attributes WHERE key = 'spec'")
    table = json.loads(str(stored[0]))
    assert table["model"]["builder"] == ("tests.test_api:test_run_with_a_function_and_arrays_"
                                         "trains_stores_and_resumes.<locals>.build")
    identity = json.loads(table["model"]["builder_identity"])  # what it builds (models.py)
    assert identity["architecture"].startswith("sha256:") and "builder_sha256" not in table["model"]
    assert table["data"]["kind"] == "arrays" and table["data"]["val_fraction"] == 0.25
    assert str(table["data"]["fingerprint"]).startswith("sha256:")

    # The same arrays as a Dataset (the split `run` made): the same study, resumed.
    from study.api import arrays_dataset, resolve_spec

    spec = resolve_spec({"name": "own"}, ONE_LR, seeds=[0], in_memory_data=True)
    same = arrays_dataset(spec, (x, y))
    before = dump(db)
    again = study.run({"name": "own"}, model=build, storage=url, seeds=[0], trainer="keras",
                      overrides=ONE_LR, data=study.Dataset(same.x_train, same.y_train, same.x_val,
                                                        same.y_val, same.task))
    assert dump(db) == before and again.trials().rows == r.trials().rows
    # Other arrays are refused, naming them; nothing is written.
    before = dump(db)
    with pytest.raises(SpecError, match=r"^study 'own' was run on other data than the arrays "
                                        r"passed as data= holds now \(data.fingerprint: "):
        study.run({"name": "own"}, model=build, data=(x, np.flip(y)), storage=url, seeds=[0],
                  trainer="keras", overrides=ONE_LR)
    assert dump(db) == before


OWN_BAD: list[tuple[dict[str, Any], type[Exception], str]] = [
    ({"model": 42}, UsageError, "model: expected a function (input_shape, outputs) -> "
                                "keras.Model or a 'module:function' string, got int"),
    ({"model": "nope_module_ta:build"}, SpecError,
     "model.builder: 'nope_module_ta:build' does not import: ModuleNotFoundError"),
    ({"model": "os:getcwd"}, SpecError, "model.builder: 'os:getcwd' raised TypeError"),
    ({"data": 5}, UsageError, "data: expected (x_train, y_train), (x_train, y_train, x_val, "
                              "y_val) or a study.Dataset, got a int"),
    ({"data": ([1.0, 2.0], [1.0])}, DataError, "data: x_train has 2 rows but y_train has 1"),
    ({"data": ([[1.0]] * 40, [0.0] * 40), "overrides": {"data.val_fraction": 0.0}}, DataError,
     "data.val_fraction: the arrays passed as data= has no validation set"),
]


@pytest.mark.parametrize(("kwargs", "error", "message"), OWN_BAD, ids=[b[2][:40] for b in OWN_BAD])
def test_a_bad_model_or_data_raises_the_typed_error_and_writes_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kwargs: dict[str, Any],
        error: type[Exception], message: str) -> None:
    monkeypatch.chdir(tmp_path)
    x, y = _arrays()
    kwargs = {"storage": f"sqlite:///{tmp_path / 's.db'}", "data": (x, y),
              "overrides": {"data.val_fraction": 0.25, "search.batch_size": [16]}, **kwargs}
    with pytest.raises(error) as caught:
        study.run(**kwargs)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_workers_with_a_notebook_function_and_arrays_finish_every_trial(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A function defined where no worker can import it and arrays in memory: the two
    workers get them from a temporary file (the model as its Keras config, the arrays
    checked by fingerprint), and the result says what other machines would need."""
    monkeypatch.chdir(tmp_path)

    def build(input_shape: tuple[int, ...], outputs: int) -> Any:
        import keras

        return keras.Sequential([keras.Input(shape=input_shape),
                                 keras.layers.Dense(8, activation="relu"),
                                 keras.layers.Dense(outputs)])

    db = tmp_path / "pool.db"
    x, y = _arrays()
    r = study.run({"name": "pool"}, model=build, data=(x, y), storage=f"sqlite:///{db}",
                  seeds=[0], trainer="keras", workers=2, overrides=OWN)
    assert trial_states(db) == {"COMPLETE": 4}
    assert len({w for (w,) in sql(db, "SELECT value_json FROM trial_user_attributes "
                                      "WHERE key = 'worker'")}) == 2  # both trained
    (note,) = r.notes
    assert note.startswith("the workers on this machine got what they need from a temporary "
                           "file; `study worker` on other machines needs its data in a file or "
                           "a loader"), note
    assert "model.builder = 'module:function' naming a function in a module they can import, " \
           "instead of 'tests.test_api:test_workers_with_a_notebook" in note
    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith("pool.db")] == []


@pytest.mark.slow
def test_a_csv_study_from_the_cli_and_from_the_api_stores_the_same_trials(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The acceptance check: `study run --spec my.toml` and `study.run("my.toml")` give
    the same trials: params, states, values and every attribute but time and worker."""
    from tests.test_cli import _csv_study

    _csv_study(tmp_path)
    out = run_cli(["run", "--spec", "mine.toml", "--storage", "sqlite:///cli.db"], cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    monkeypatch.chdir(tmp_path)
    study.run("mine.toml", storage="sqlite:///api.db")
    cli_trials, api_trials = _trials(tmp_path / "cli.db"), _trials(tmp_path / "api.db")
    assert len(cli_trials) == 4 and {t[1] for t in cli_trials} == {"COMPLETE"}
    assert api_trials == cli_trials
