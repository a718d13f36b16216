"""A new user's first study: any directory, hints that work, reports kept apart, a note
that stays current, the Python objects a notebook expects, kept weights, deleting."""

from __future__ import annotations

import json
import re
import shlex
import statistics
import subprocess
import time
from pathlib import Path

import pytest

import study
from study import api, report, weights
from study.errors import StorageUsageError, UsageError
from study.records import TRAINER
from tests.helpers import cli_env, run_cli, sql
from tests.studies import make_study

TINY = ["--spec", "article", "--epochs", "1", "--set", "search.batch_size=[64]",
        "--set", "search.learning_rate=[0.01, 0.001]", "--set", "data.n_train=256",
        "--set", "data.n_val=64"]


def _note(db: Path, name: str) -> str:
    """The study's note as optuna-dashboard reads it."""
    import optuna
    from optuna_dashboard import get_note

    return str(get_note(optuna.load_study(study_name=name, storage=f"sqlite:///{db}")))


def test_any_directory_hints_that_work_reports_apart_and_a_current_note(tmp_path: Path) -> None:
    # No --storage, in a directory that is not the repository: the default's folder is
    # created there.
    first = run_cli(["run", *TINY, "--seeds", "0"], cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    db = tmp_path / "storage" / "study.db"
    assert db.is_file()
    # Every hint names this storage and study, and works from here as printed.
    hints = [line.strip() for line in first.stdout.splitlines()[
        first.stdout.splitlines().index("Next:") + 1:]]
    assert len(hints) == 3 and all("--storage sqlite:///storage/study.db" in h for h in hints)
    query_hint = next(h for h in hints if " query trials " in h).split("      ")[0]
    assert "--study-name article" in query_hint
    rows = subprocess.run([*shlex.split(query_hint), "--format", "json"], cwd=tmp_path,
                          env=cli_env(), capture_output=True, text=True, timeout=120)
    assert rows.returncode == 0, rows.stderr
    assert len(json.loads(rows.stdout)) == 2

    # Reports go to a folder per study: a second study's report leaves the first's.
    for name in ("article", "../other study"):
        if name != "article":
            out = run_cli(["run", *TINY, "--seeds", "0", "--study-name", name], cwd=tmp_path)
            assert out.returncode == 0, out.stderr
        out = run_cli(["report", "--study-name", name], cwd=tmp_path)
        assert out.returncode == 0, out.stderr
    dashboards = tmp_path / "dashboards"
    folders = sorted(p.name for p in dashboards.iterdir())
    assert len(folders) == 2 and "article" in folders
    assert re.fullmatch(r"_other_study-[0-9a-f]{8}", folders[0])
    assert all((dashboards / f / "index.html").is_file() for f in folders)
    assert not (tmp_path / "other study").exists()  # the name's ../ stayed inside

    # The note the report stored says 2 trials; a run that adds a seed refreshes it.
    assert "**Trials:** 2 (2 complete)" in _note(db, "article")
    more = run_cli(["run", *TINY, "--seeds", "0,1"], cwd=tmp_path)
    assert more.returncode == 0, more.stderr
    assert "Refreshed the study's summary note" in more.stderr
    assert "**Trials:** 4 (4 complete)" in _note(db, "article")


def test_a_named_storage_folder_must_exist(tmp_path: Path) -> None:
    # Only the default's folder is made: a typo in a URL the user gave is not.
    out = run_cli(["run", *TINY, "--storage", "sqlite:///typo/study.db"], cwd=tmp_path)
    assert out.returncode == 2 and not (tmp_path / "typo").exists()
    assert out.stderr.strip() == ("study run: error: --storage: directory 'typo' does not "
                                  "exist (sqlite:///typo/study.db)")


def test_report_dir_is_a_folder_of_its_own_for_any_name() -> None:
    assert report.report_dir("article") == Path("dashboards/article")
    names = ["../x", "..", "a/b", "a\\b", ".hidden", "-rf", "é", "", "x" * 300, "a b", "a_b"]
    dirs = [report.report_dir(n) for n in names]
    assert len(set(dirs)) == len(dirs)
    for d in dirs:
        assert d.parent == Path("dashboards") and d.name not in ("", ".", "..")
        assert re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", d.name), d


# --------------------------------------------------------------------------- Results


def test_best_is_the_lowest_mean_over_seeds_computed_by_hand(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    make_study(url, seeds="[0, 1, 2]")
    rows = sql(tmp_path / "s.db", """
        SELECT MAX(CASE WHEN p.param_name = 'batch_size' THEN p.param_value END),
               MAX(CASE WHEN p.param_name = 'learning_rate' THEN p.param_value END),
               t.state, v.value
        FROM trials t JOIN trial_params p ON p.trial_id = t.trial_id
        LEFT JOIN trial_values v ON v.trial_id = t.trial_id GROUP BY t.trial_id""")
    cells: dict[tuple[float, float], list[float | None]] = {}
    for b, lr, state, value in rows:
        cells.setdefault((float(b), float(lr)), []).append(  # type: ignore[arg-type]
            float(value) if state == "COMPLETE" else None)  # type: ignore[arg-type]
    # A cell where any seed failed is never best (as analysis.best says).
    means = {k: statistics.fmean(v) for k, v in cells.items() if None not in v}  # type: ignore[arg-type]
    (b, lr), mean = min(means.items(), key=lambda kv: kv[1])
    best = study.load(url).best
    assert best is not None
    assert (best.batch_size, best.learning_rate) == (b, lr)
    assert best.mean == pytest.approx(mean) and best.seeds == 3
    assert best.objective == "train_loss" and best.seed_values == (0, 1, 2)
    values = [v for v in cells[(b, lr)] if v is not None]
    assert best.low is not None and best.high is not None
    assert min(values) <= best.low <= mean <= best.high <= max(values)
    assert str(best).startswith(f"batch_size={b:g}, learning_rate={lr:g}: train_loss ")


def test_optuna_study_is_the_study_itself(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    make_study(url)
    s = study.load(url).optuna_study
    assert s.study_name == "article"
    assert len(s.trials) == len(sql(tmp_path / "s.db", "SELECT trial_id FROM trials"))
    trials = study.load(url).trials()
    assert trials.columns[-1] == "trainer"
    assert {t.user_attrs.get(TRAINER) for t in s.trials} == {r[-1] for r in trials.rows}


@pytest.mark.parametrize("trainer", ["keras", "population"])
def test_kept_weights_give_the_stored_validation_loss(tmp_path: Path, trainer: str) -> None:
    url = f"sqlite:///{tmp_path / 'w.db'}"
    res = study.run("article", storage=url, seeds=[0, 1], trainer=trainer, overrides={
        "train.epochs": 2, "search.batch_size": [32, 64], "search.learning_rate": [0.01, 0.001],
        "data.n_train": 256, "data.n_val": 64, "train.keep_weights": "best"})
    best = res.best
    assert best is not None
    held = res.optuna_study.user_attrs[weights.BEST_WEIGHTS]
    assert (held["batch_size"], held["learning_rate"]) == (best.batch_size, best.learning_rate)
    assert sorted(int(s) for s in held["seeds"]) == [0, 1]
    # Only the best cell's staged files are left.
    staged = sorted(p.name for p in (tmp_path / "w.db.artifacts" / "staging").rglob("*.npz"))
    assert staged == [f"{best.batch_size}_{best.learning_rate!r}_{s}.npz" for s in (0, 1)]
    data = api.load_data(res.spec)  # type: ignore[arg-type]
    stored = {(r[4], r[3], r[2]): r[6] for r in res.trials().rows}  # seed, lr, b -> val_loss
    for seed in (0, 1):
        model = res.model(seed=seed)
        got = float(model.evaluate(data.x_val, data.y_val, batch_size=len(data.x_val),
                                   verbose=0, return_dict=True)["loss"])
        want = stored[(seed, best.learning_rate, best.batch_size)]
        assert got == pytest.approx(want, rel=1e-5), (seed, got, want)
    with pytest.raises(UsageError, match=r"^seed: 7 has no kept weights .*seeds with weights: 0, 1"):
        res.model(seed=7)


def test_model_without_kept_weights_says_how(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    make_study(url)
    with pytest.raises(UsageError, match=r"keeps no weights: run it with train.keep_weights"):
        study.load(url).model()


# --------------------------------------------------------------------------- delete


def test_delete_refusals_then_delete(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    url = f"sqlite:///{db}"
    make_study(url)
    make_study(url, name="keep")
    before = sql(db, "SELECT COUNT(*) FROM trials")[0][0]
    # A missing study, and no --yes with no one at the terminal: refused, nothing deleted.
    out = run_cli(["delete", "--storage", url, "--study-name", "nope", "--yes"])
    assert out.returncode == 2 and out.stderr.startswith(
        "study delete: error: --study-name: no study 'nope'")
    out = run_cli(["delete", "--storage", url, "--study-name", "article"])
    assert out.returncode == 2 and "--yes" in out.stderr and len(out.stderr.splitlines()) == 1
    # A worker's fresh heartbeat (written as the runner writes it) refuses it too.
    from study import runner
    from study.storage import open_storage

    rdb = open_storage(url, create_schema=False)
    sid = rdb.get_study_id_from_name("article")
    rdb.set_study_system_attr(sid, runner.WORKER_KEY + "host:1:abc",
                              {"host": "host", "pid": 1, "start": None, "beat": time.time(),
                               "state": "running"})
    with pytest.raises(UsageError, match=r"study 'article' is running \(1 live worker"):
        api.delete(url, "article")
    assert sql(db, "SELECT COUNT(*) FROM trials")[0][0] == before
    rdb.set_study_system_attr(sid, runner.WORKER_KEY + "host:1:abc",
                              {"host": "host", "pid": 1, "start": None, "beat": time.time(),
                               "state": "stopped"})
    rdb.engine.dispose()
    out = run_cli(["delete", "--storage", url, "--study-name", "article", "--yes"])
    assert out.returncode == 0, out.stderr
    n = before // 2
    assert out.stdout.strip() == f"Deleted study 'article' ({n} trials) from {url}."
    assert [r[0] for r in sql(db, "SELECT study_name FROM studies")] == ["keep"]
    assert sql(db, "SELECT COUNT(*) FROM trials")[0][0] == n
    with pytest.raises(StorageUsageError, match=r"no study 'article'"):
        study.delete(url, "article")


def test_results_best_is_none_before_any_cell(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    from study import runner
    from tests.studies import spec

    runner.open_study(spec(), url, "article", create=True)
    assert study.load(url).best is None


# --------------------------------------------------------------------------- join, summary


def test_join_runs_the_pending_cells_in_this_process_and_summary_is_what_run_prints(
        tmp_path: Path) -> None:
    from study import runner
    from study.spec import load_spec

    db = tmp_path / "j.db"
    url = f"sqlite:///{db}"
    spec = load_spec("article", ["run.trainer=tests.cheap_trainer:train", "data.n_train=64",
                                 "data.n_val=32", "search.batch_size=[16, 32]",
                                 "search.learning_rate=[0.01, 0.001]", "search.seeds=[0, 1]"])
    data = api.load_data(spec)
    spec = api.for_data(spec, data)
    runner.open_study(spec, url, "j", create=True, fingerprint=data.fingerprint)
    assert sql(db, "SELECT COUNT(*) FROM trials")[0][0] == 0
    res = study.join(url, "j", progress=False)
    cells = sorted(sql(db, """
        SELECT MAX(CASE WHEN p.param_name = 'batch_size' THEN p.param_value END),
               MAX(CASE WHEN p.param_name = 'learning_rate' THEN p.param_value END),
               MAX(CASE WHEN p.param_name = 'seed' THEN p.param_value END), t.state
        FROM trials t JOIN trial_params p ON p.trial_id = t.trial_id GROUP BY t.trial_id"""))
    assert cells == sorted((float(b), lr, float(s), "COMPLETE") for b in (16, 32)
                           for lr in (0.01, 0.001) for s in (0, 1))
    # The closed form the cheap trainer trains to: the best cell is B=32, lr=0.001.
    best = res.best
    assert best is not None and (best.batch_size, best.learning_rate) == (32, 0.001)
    text = res.summary()
    assert text.splitlines()[0].startswith("Objective: final training loss")
    assert "Best cell: batch_size=32, learning_rate=0.001:" in text
    assert text.splitlines()[-1] == f"Results: study 'j' in {url} (8 complete)."
    # Joining a finished study trains nothing; a missing one is one line.
    assert study.join(url, "j", progress=False).best == best
    with pytest.raises(StorageUsageError, match=r"^--study-name: no study 'x' made by .study run. in "):
        study.join(url, "x")
