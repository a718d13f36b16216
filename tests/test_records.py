"""`records`: the one adapter from stored trials to `TrialRecord`s, read through Optuna (the
report) and through SQL (`study query`) from the same real database."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import optuna
import pytest
from optuna.distributions import FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

from study import query, records, report
from study.storage import read_only
from tests.helpers import sql
from tests.studies import make_study


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """The report tests' study (complete and diverged runs, noise and sharpness attributes)
    with a pruned trial, an error, a running one, and one that `study` did not write."""
    db = tmp_path_factory.mktemp("records") / "study.db"
    url = f"sqlite:///{db}"
    make_study(url)
    study = optuna.load_study(study_name="article", storage=url)
    dists = {"batch_size": IntDistribution(16, 256, log=True),
             "learning_rate": FloatDistribution(0.001, 0.1, log=True),
             "seed": IntDistribution(0, 1)}
    params = {"batch_size": 32, "learning_rate": 0.003, "seed": 1}
    study.add_trial(create_trial(state=TrialState.PRUNED, params=params, distributions=dists,
                                 intermediate_values={1: 0.5},
                                 user_attrs={"status": "pruned", "train_loss": 0.5,
                                             "seconds": 0.25, "noise_scale": 12.5}))
    study.add_trial(create_trial(state=TrialState.FAIL, params=params, distributions=dists,
                                 user_attrs={"status": "error", "error": "ValueError: boom",
                                             "seed": 1}))
    study.add_trial(create_trial(state=TrialState.COMPLETE, value=0.25, params=params,
                                 distributions=dists, user_attrs={"note": "by hand", "flag": True,
                                                                  "sharpness": 3}))
    running = study.ask({k: v for k, v in dists.items() if k != "seed"})
    running.set_user_attr("seed", 7)
    return url, db


def _query_records(url: str) -> list[records.TrialRecord]:
    with read_only(url) as conn:
        study_id, _ = query.resolve_study(conn, url, "article")
        # The report reads the step curves too (for the critical batch page).
        return [row.record for row in query.trial_rows(conn, study_id, step_curves=True)]


def test_report_and_query_read_the_same_records(mixed: tuple[str, Path]) -> None:
    url, db = mixed
    view = report.load_view(optuna.load_study(study_name="article", storage=url), url)
    ours = _query_records(url)
    assert ours == view.records
    # ...and they are right, not merely alike: what the database holds, read by hand.
    (n,) = sql(db, "SELECT COUNT(*) FROM trials")[0]
    assert len(ours) == n == 22
    by_status: dict[str, int] = {}
    for r in ours:
        by_status[r.status] = by_status.get(r.status, 0) + 1
    assert by_status == {"complete": 12, "diverged": 7, "pruned": 1, "error": 1, "running": 1}
    pruned, error, by_hand, running = ours[18:]
    assert (pruned.state, pruned.value, pruned.train_loss, pruned.seconds) == \
        ("PRUNED", None, 0.5, 0.25)
    assert (pruned.batch_size, pruned.learning_rate, pruned.seed) == (32, 0.003, 1)
    assert pruned.extras == {"noise_scale": 12.5}
    assert (error.state, error.status, error.extras) == ("FAIL", "error", {})
    # No status attribute: the outcome its state implies; a bool is not a measurement.
    assert (by_hand.status, by_hand.value, by_hand.extras) == ("complete", 0.25,
                                                               {"sharpness": 3.0})
    assert (running.state, running.seed, running.value) == ("RUNNING", 7, None)
    complete = [r for r in ours if r.status == "complete" and r.number < 18]
    stored = dict(sql(db, "SELECT t.number, v.value FROM trials t JOIN trial_values v "
                          "ON v.trial_id = t.trial_id WHERE t.state = 'COMPLETE'"))
    assert {r.number: r.value for r in complete} == {k: v for k, v in stored.items() if k < 18}
    noise = dict(sql(db, "SELECT t.number, a.value_json FROM trials t JOIN "
                         "trial_user_attributes a ON a.trial_id = t.trial_id "
                         "WHERE a.key = 'noise_scale'"))
    assert {r.number: r.extras[records.NOISE_SCALE] for r in ours
            if records.NOISE_SCALE in r.extras} == \
        {k: json.loads(str(v)) for k, v in noise.items()}


def test_report_and_query_tables_agree(mixed: tuple[str, Path]) -> None:
    from study import analysis

    url, _ = mixed
    view = report.load_view(optuna.load_study(study_name="article", storage=url), url)
    grid = query.run_named(url, "grid")
    g = analysis.grid(view.records)
    assert grid.display == tuple(tuple(r) for r in analysis.grid_rows(g, True)[1])
    # The same stored spec (optimizer, budget) behind both conclusions.
    headline, noise, caveats = view.conclusion()
    text = query.render(query.run_named(url, "scaling"), "table")
    assert text.splitlines()[-1] == " ".join(
        [headline, *([noise] if noise else []), *(["Caveats: " + " ".join(caveats)]
                                                  if caveats else [])])
    assert "(Adam, 2 seeds; " in headline


def test_curves_are_read_only_by_the_curves_query(mixed: tuple[str, Path]) -> None:
    url, _ = mixed
    with read_only(url) as conn:
        plain = query.trial_rows(conn, 1)
        full = query.trial_rows(conn, 1, curves=True)
    assert not any(set(records.CURVES) & set(r.attrs) for r in plain)
    assert [len(r.attrs[records.TRAIN_CURVE]) for r in full[:18]] == \
        [2 if r.record.status == "diverged" else 4 for r in full[:18]]
    # Without curves a record has no step curve; with the step curves alone, the same
    # records as with every curve.
    assert [r.record for r in plain] == [dataclasses.replace(r.record, step_every=None,
                                                             step_losses=()) for r in full]
    with read_only(url) as conn:
        steps = query.trial_rows(conn, 1, step_curves=True)
    assert [r.record for r in steps] == [r.record for r in full]
    assert any(r.record.step_losses for r in full)
    assert not (set(records.CURVES) - {records.STEP_CURVE}) & set().union(*(r.attrs for r in steps))


def test_the_attribute_names_are_defined_once() -> None:
    """Writers (runner, trainers) and readers (report, query, analysis) import the names
    from records; a second definition elsewhere could drift from it."""
    import re

    from tests.helpers import ROOT

    # (SEED_ATTR is left out: it is named after the parameter `space.SEED` on purpose.)
    names = [records.STATUS, records.TRAIN_LOSS, records.VAL_LOSS,
             records.FULL_TRAIN_LOSS, records.STEPS, records.SECONDS, records.TRAIN_CURVE,
             records.VAL_CURVE, records.DIVERGED_EPOCH, records.ERROR, records.TRAINER,
             records.NOISE_SCALE, records.NOISE_GRAD_SQ, records.NOISE_TRACE_SIGMA,
             records.SHARPNESS, records.STUDY_SPEC]
    pattern = re.compile(r"^\s*[A-Z_][A-Z0-9_]*\s*(?::[^=]+)?=\s*[\"'](" + "|".join(names)
                         + r")[\"']", re.M)
    where = [f"{path.relative_to(ROOT)}: {m.group(0).strip()}"
             for path in sorted((ROOT / "study").rglob("*.py")) if path.name != "records.py"
             for m in pattern.finditer(path.read_text())]
    assert where == []
    assert records.at_epoch(records.NOISE_SCALE, 3) == "noise_scale_epoch_3"


def test_accuracies_are_fields_of_the_record_not_extras() -> None:
    attrs = {"status": "complete", "train_loss": 0.4, "val_loss": 0.5, "train_accuracy": 0.8,
             "val_accuracy": 0.75, "train_accuracy_curve": [0.6, 0.8],
             "val_accuracy_curve": [0.7, 0.75], "sharpness": 3.0}
    r = records.record(0, "COMPLETE", {"batch_size": 16, "learning_rate": 0.01, "seed": 0},
                       0.25, attrs)
    assert (r.train_accuracy, r.val_accuracy) == (0.8, 0.75)
    assert r.extras == {"sharpness": 3.0}
    assert set(records.CURVES) >= {"train_accuracy_curve", "val_accuracy_curve"}
    regression = records.record(1, "COMPLETE", {"batch_size": 16}, 0.4, {"train_loss": 0.4})
    assert regression.train_accuracy is None and regression.val_accuracy is None
