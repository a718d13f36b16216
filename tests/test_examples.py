"""examples/: each example runs as a user runs it (the spec files through the real CLI,
the notebook script as a Python process, from the repository root), shrunk by the
options a user would pass for a quick look, against throwaway SQLite files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT, cli_env, run_cli, sql, trial_states

EXAMPLES = ROOT / "examples"


def _trainers(db: Path) -> set[str]:
    return {json.loads(str(v)) for (v,) in sql(db, "SELECT value_json FROM trial_user_attributes "
                                                   "WHERE key = 'trainer'")}


def _stored_spec(db: Path) -> dict[str, object]:
    (stored,) = sql(db, "SELECT value_json FROM study_user_attributes WHERE key = 'spec'")
    table = json.loads(str(stored[0]))
    assert isinstance(table, dict)
    return table


@pytest.mark.slow
def test_digits_mlp_builder_with_dropout_trains_on_the_population_trainer(tmp_path: Path
                                                                           ) -> None:
    db = tmp_path / "mlp.db"
    out = run_cli(["run", "--spec", "examples/digits_mlp.toml", "--storage", f"sqlite:///{db}",
                   "--epochs", "1", "--set", "search.batch_size=[64, 256]",
                   "--set", "search.learning_rate=[0.01]"])
    assert out.returncode == 0, out.stderr
    assert "keras trainer" not in out.stderr, out.stderr  # no fallback: every layer fused
    assert trial_states(db) == {"COMPLETE": 2}
    assert _trainers(db) == {"population"}
    model = _stored_spec(db)["model"]
    assert isinstance(model, dict) and model["builder"] == "examples.digits_mlp:build"
    assert json.loads(str(model["builder_identity"]))["weights"].startswith("sha256:")
    assert "validation accuracy" in out.stdout


@pytest.mark.slow
def test_digits_cnn_trains_on_the_keras_trainer_after_one_line_naming_conv2d(tmp_path: Path
                                                                             ) -> None:
    db = tmp_path / "cnn.db"
    out = run_cli(["run", "--spec", "examples/digits_cnn.toml", "--storage", f"sqlite:///{db}",
                   "--epochs", "1", "--set", "search.batch_size=[256]",
                   "--set", "search.learning_rate=[0.01]"])
    assert out.returncode == 0, out.stderr
    fallback = [line for line in out.stderr.splitlines() if "keras trainer" in line]
    assert len(fallback) == 1 and "Conv2D" in fallback[0], out.stderr
    assert trial_states(db) == {"COMPLETE": 1}
    assert _trainers(db) == {"keras"}


def test_the_csv_is_what_its_script_makes(tmp_path: Path) -> None:
    script = EXAMPLES / "csv_regression" / "make_data.py"
    (tmp_path / "make_data.py").write_text(script.read_text())
    subprocess.run([sys.executable, str(tmp_path / "make_data.py")], check=True, timeout=60)
    made = (tmp_path / "data.csv").read_bytes()
    committed = (EXAMPLES / "csv_regression" / "data.csv").read_bytes()
    assert made == committed
    assert len(committed) < 50_000 and made.count(b"\n") == 401  # header + 400 rows


@pytest.mark.slow
def test_csv_regression_study_from_its_spec_file(tmp_path: Path) -> None:
    db = tmp_path / "csv.db"
    out = run_cli(["run", "--spec", "examples/csv_regression/spec.toml",
                   "--storage", f"sqlite:///{db}", "--epochs", "2", "--seeds", "0",
                   "--set", "search.batch_size=[32, 128]", "--set", "search.learning_rate=[0.003]"])
    assert out.returncode == 0, out.stderr
    assert trial_states(db) == {"COMPLETE": 2}
    data = _stored_spec(db)["data"]
    assert isinstance(data, dict) and data["path"] == "examples/csv_regression/data.csv"
    assert str(data["fingerprint"]).startswith("sha256:")
    assert "Objective: validation loss after training" in out.stdout


@pytest.mark.slow
def test_notebook_script_runs_the_python_api_end_to_end(tmp_path: Path) -> None:
    db = tmp_path / "nb.db"
    out = subprocess.run(
        [sys.executable, "examples/notebook.py", "--quick", "--storage", f"sqlite:///{db}",
         "--out", str(tmp_path / "report")],
        cwd=ROOT, env=cli_env(), capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert trial_states(db) == {"COMPLETE": 4}
    assert "best learning rate per batch size: [(32, " in out.stdout, out.stdout
    assert "model.builder stored with the study: __main__:build" in out.stdout
    assert "4/4 trials" in out.stderr  # progress=True draws the bar
    assert (tmp_path / "report" / "index.html").exists()
    assert (tmp_path / "report" / "article-figure.html").exists()
    spec = _stored_spec(db)
    assert isinstance(spec["data"], dict) and spec["data"]["kind"] == "arrays"
