"""`records`: the one adapter from stored trials to `TrialRecord`s, read through Optuna (the
report) and through SQL (`study query`) from the same real database."""

from __future__ import annotations

import ast
import dataclasses
import json
import re
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


# Where a stored attribute's name is used: the key argument of these calls (its position).
_KEY_ARG = {"set_user_attr": 0, "set_system_attr": 0, "set_trial_user_attr": 1,
            "set_trial_system_attr": 1, "set_study_user_attr": 1, "set_study_system_attr": 1,
            "stored_study_attr": 2}
# ...and `.get(key)` or `[key]` on anything named like attributes (`attrs`, `user_attrs`,
# `t.system_attrs`, `storage.get_study_user_attrs(...)`).
_HOLDER = re.compile(r"(^|_)attrs$")
_BUILTINS = {"str", "int", "float", "tuple", "len"}

# Names that are not ours, read where Optuna keeps them: never to be moved to records.
NOT_OURS = {
    # Optuna's own trial system attribute for an enqueued trial's parameters.
    ("study/optuna_compat.py", "'fixed_params'"),
    # The seed parameter's name; records.SEED_ATTR, the seed attribute, is named after it.
    ("study/space.py", "SEED = 'seed'"),
}
# Known offenders, each a name of ours defined or spelled outside records (issue 19, "Why"
# 4). The refactor that moves them into records empties this list; it must not grow.
KNOWN_OFFENDERS = {
    ("study/ledger.py", "WORKER_ATTR = 'worker'"),  # the worker's trial attribute
    ("study/runner.py", "WORKER_ATTR = ledger.WORKER_ATTR"),  # ...aliased
    ("study/runner.py", "WORKER_ATTR"),  # ...and used under the alias
    ("study/runner.py", "WORKER_KEY = 'worker:'"),  # a worker's liveness record (study system)
    ("study/runner.py", "WORKER_KEY + self.worker.id"),
    ("study/runner.py", "'created'"),  # study user attributes by literal: STUDY_CREATED,
    ("study/runner.py", "'spec'"),  # STUDY_SPEC,
    ("study/runner.py", "'versions'"),  # STUDY_VERSIONS,
    ("study/runner.py", "'git_revision'"),  # STUDY_GIT_REVISION
    ("study/runner.py", "refine.STOP_ATTR"),  # refinement's study attributes, named in refine
    ("study/runner.py", "refine.round_key(decision.number)"),
    ("study/refine.py", "ROUND_ATTR = 'refine_round_'"),
    ("study/refine.py", "STOP_ATTR = 'refine_stop'"),
    ("study/refine.py", "STOP_ATTR"),
    ("study/refine.py", "round_key(len(out) + 1)"),
    ("study/weights.py", "BEST_WEIGHTS"),  # the published cell (study user attribute)
}


def _ours(key: ast.expr, aliases: set[str], imported: set[str], constants: set[str]) -> bool:
    """Whether a key expression is a name from records (`R.NAME`, `records.at_epoch(...)`,
    an imported name), or no name at all (a variable, a tuple, `str(key)`)."""
    if isinstance(key, ast.Attribute) and isinstance(key.value, ast.Name):
        return key.value.id in aliases
    if isinstance(key, ast.Call):
        f = key.func
        return (isinstance(f, ast.Name) and f.id in _BUILTINS) or (
            isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name)
            and f.value.id in aliases)
    if isinstance(key, ast.Name):
        return key.id in imported or key.id not in constants
    if isinstance(key, ast.BinOp):
        return _ours(key.left, aliases, imported, constants)
    return not isinstance(key, ast.Constant)


def _holder(e: ast.expr) -> bool:
    """Whether an expression is named like attributes: `attrs`, `t.user_attrs`, ..."""
    name = (e.id if isinstance(e, ast.Name) else e.attr if isinstance(e, ast.Attribute)
            else e.func.attr if isinstance(e, ast.Call) and isinstance(e.func, ast.Attribute)
            else "")
    return bool(_HOLDER.search(name))


def attribute_names_outside_records(package: Path) -> set[tuple[str, str]]:
    """(file, source) of every attribute name of ours that `package` spells outside
    records.py: a constant named like one (`*_ATTR`, `*_KEY`) or holding a name records
    registers, and a key at an attribute seam that is not `records.NAME` (a literal, a
    module's own constant, another module's constant or key function)."""
    registered = {node.value.value for node in ast.parse((package / "records.py").read_text()).body
                  if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
                  and isinstance(node.value.value, str)}
    found: set[tuple[str, str]] = set()
    for path in sorted(package.rglob("*.py")):
        if path.name == "records.py" and path.parent == package:
            continue
        where = f"{package.name}/{path.relative_to(package)}"
        tree = ast.parse(path.read_text())
        aliases, imported, constants = set(), set(), set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == "study":
                aliases |= {a.asname or a.name for a in node.names if a.name == "records"}
            elif isinstance(node, ast.ImportFrom) and node.module == "study.records":
                imported |= {a.asname or a.name for a in node.names}
            elif isinstance(node, ast.Import):
                aliases |= {a.asname or a.name for a in node.names if a.name == "study.records"}
        for node in tree.body:
            target = (node.targets[0] if isinstance(node, ast.Assign) and len(node.targets) == 1
                      else node.target if isinstance(node, ast.AnnAssign) else None)
            if not isinstance(target, ast.Name) or not target.id.isupper() or node.value is None:  # type: ignore[union-attr]
                continue
            constants.add(target.id)
            value = node.value  # type: ignore[union-attr]
            if target.id.endswith(("_ATTR", "_KEY")) or (
                    isinstance(value, ast.Constant) and value.value in registered):
                found.add((where, f"{target.id} = {ast.unparse(value)}"))

        keys: list[ast.expr] = []
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                f = node.func
                name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) \
                    else ""
                if name in _KEY_ARG and len(node.args) > _KEY_ARG[name]:
                    keys.append(node.args[_KEY_ARG[name]])
                if isinstance(f, ast.Attribute) and f.attr in ("get", "pop", "setdefault") \
                        and _holder(f.value) and node.args:
                    keys.append(node.args[0])
                keys += [k for kw in node.keywords if kw.arg in ("user_attrs", "system_attrs")
                         and isinstance(kw.value, ast.Dict) for k in kw.value.keys if k is not None]
            elif isinstance(node, ast.Subscript) and _holder(node.value):
                keys.append(node.slice)
        found |= {(where, ast.unparse(k)) for k in keys
                  if not _ours(k, aliases, imported, constants)}
    return found


def test_the_attribute_names_are_defined_once() -> None:
    """Writers (runner, trainers) and readers (report, query, analysis) import the names
    from records; a second definition elsewhere, or a literal where the name is used,
    could drift from it."""
    from tests.helpers import ROOT

    found = attribute_names_outside_records(ROOT / "study")
    assert found - NOT_OURS - KNOWN_OFFENDERS == set()
    # Each allowed entry still exists: the list shrinks as offenders move into records.
    assert found >= KNOWN_OFFENDERS | NOT_OURS, (KNOWN_OFFENDERS | NOT_OURS) - found
    assert records.at_epoch(records.NOISE_SCALE, 3) == "noise_scale_epoch_3"


@pytest.mark.parametrize(("module", "line", "shown"), [
    ("report.py", "BEST = \"status\"\n", "BEST = 'status'"),  # a second definition
    ("query.py", "OWNER_ATTR = R.TRAINER\n", "OWNER_ATTR = R.TRAINER"),  # an alias
    ("report.py", "def _x(t):\n    return t.user_attrs.get('trainer')\n", "'trainer'"),
    ("api.py", "def _x(s):\n    s.set_user_attr('created', 1)\n", "'created'"),
    ("ledger.py", "def _x(s):\n    s.set_study_system_attr(1, WORKER_ATTR, 2)\n", "WORKER_ATTR"),
])
def test_the_check_sees_a_planted_name(tmp_path: Path, module: str, line: str, shown: str) -> None:
    import shutil

    from tests.helpers import ROOT

    copy = tmp_path / "study"
    shutil.copytree(ROOT / "study", copy, ignore=shutil.ignore_patterns("__pycache__"))
    before = attribute_names_outside_records(copy)
    with (copy / module).open("a") as f:
        f.write("\n\n" + line)
    assert attribute_names_outside_records(copy) - before == {(f"study/{module}", shown)}


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
