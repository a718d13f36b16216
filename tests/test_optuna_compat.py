"""The gate to Optuna's internals: its version window, that nothing else passes it, and
that its bulk writes store exactly what Optuna's public API stores, field by field, on
real SQLite and PostgreSQL."""

from __future__ import annotations

import ast
import contextlib
import math
import tomllib
import uuid
from collections.abc import Callable, Iterator, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import optuna
import pytest
import sqlalchemy
from optuna.trial import FrozenTrial, TrialState
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from study import optuna_compat, runner, space
from study.data import make_dataset
from study.optuna_compat import NewTrial, Outcome, TrialFacts, finish_trials, start_trials
from study.spec import load_spec
from study.storage import open_storage
from tests.helpers import ROOT
from tests.scripted import ScriptedTrainer

# --------------------------------------------------------------------------- the window


def test_window_is_pyprojects_bound() -> None:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    (optuna_req,) = [r for r in map(Requirement, deps) if r.name == "optuna"]
    assert optuna_req.specifier == SpecifierSet(optuna_compat.SUPPORTED_SPEC)
    assert optuna_req.specifier == optuna_compat.supported()


@pytest.mark.parametrize(("version", "inside"), [
    ("5.0.0", True), ("5.1.0", True), ("5.1.3", True), ("5.1.0rc1", True),
    ("5.1.0.post1", True),
    ("4.9.0", False), ("5.0.0.dev1", False), ("5.2.0", False), ("5.2.0rc1", False),
    ("5.10.0", False), ("6.0.0", False), ("15.0", False),
])
def test_window_compares_versions_not_strings(version: str, inside: bool) -> None:
    # 5.10 and 15.0 are what a prefix or string comparison would let through.
    assert optuna_compat.is_supported(version) is inside
    assert optuna_compat.is_supported(Version(version)) is inside


def test_installed_optuna_takes_the_bulk_path_unless_told_not_to(
        monkeypatch: pytest.MonkeyPatch) -> None:
    installed = metadata.version("optuna")
    assert optuna_compat.optuna_version() == Version(installed) == Version(optuna.__version__)
    # pyproject.toml's bound is what the installer obeyed.
    assert Version(installed) in SpecifierSet(optuna_compat.SUPPORTED_SPEC)
    monkeypatch.delenv(optuna_compat.PUBLIC_API_ENV, raising=False)
    assert optuna_compat.bulk_enabled()
    monkeypatch.setenv(optuna_compat.PUBLIC_API_ENV, "0")
    assert optuna_compat.bulk_enabled()
    monkeypatch.setenv(optuna_compat.PUBLIC_API_ENV, "1")
    assert not optuna_compat.bulk_enabled()


def test_outside_the_window_bulk_is_refused(monkeypatch: pytest.MonkeyPatch, db_url: str) -> None:
    # What a future Optuna would meet: no private path, whatever the caller asks.
    monkeypatch.setattr(optuna_compat, "optuna_version", lambda: Version("5.2.0"))
    assert not optuna_compat.bulk_enabled()
    study = optuna.create_study(storage=open_storage(db_url), study_name="s")
    with pytest.raises(RuntimeError, match=r"Optuna >=5.0,<5.2, not 5.2.0"):
        start_trials(study, open_storage(db_url), 1, [NewTrial({}, {}, {})], bulk=True)
    # ... and the default is the public path, which works on it.
    (trial,) = start_trials(study, open_storage(db_url), 1, [NewTrial({}, {}, {"k": 1})])
    assert study.trials[0].user_attrs == {"k": 1} and trial.number == 0


# --------------------------------------------------------------------------- the gate

# Members of Optuna's storage that carry no underscore but are not its public API.
INTERNAL_NAMES = ("scoped_session", "_rdb", "_create_scoped_session", "_cached_frozen_trial",
                  "_trial_id", "_filter_study", "_CachedStorage", "_study_id")


def _private(name: str) -> bool:
    return name.startswith("_") and not name.endswith("__")


def _reaches_in(node: ast.AST) -> bool:
    """Whether `node` alone is a use of someone's internals."""
    if isinstance(node, ast.Attribute):
        own = isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")
        return (_private(node.attr) and not own) or node.attr in INTERNAL_NAMES
    if isinstance(node, ast.Call):
        func = ast.unparse(node.func)
        by_name = func in ("getattr", "setattr", "hasattr") and len(node.args) > 1 \
            and isinstance(node.args[1], ast.Constant) and _private(str(node.args[1].value))
        # Optuna makes a Trial itself (`ask`); the bulk path makes them from its own rows.
        return by_name or func in ("Trial", "optuna.Trial", "optuna.trial.Trial", "trial.Trial")
    if isinstance(node, ast.Constant):
        return isinstance(node.value, str) and node.value in INTERNAL_NAMES
    return False


def private_uses(source: str) -> list[str]:
    """Where `source` reaches into someone's internals: `x._name` on anything but
    self/cls, `getattr(x, "_name")`, imports of Optuna's private modules or names,
    direct construction of `optuna.trial.Trial`, and Optuna's unprefixed internals."""
    found = []
    for node in ast.walk(ast.parse(source)):
        where = f"line {getattr(node, 'lineno', '?')}"
        if _reaches_in(node):
            found.append(f"{where}: {ast.unparse(node)}")
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "optuna":
            parts = (node.module or "").split(".")
            found += [f"{where}: from {node.module} import {alias.name}" for alias in node.names
                      if any(_private(p) for p in [*parts, alias.name])]
        elif isinstance(node, ast.Import):
            found += [f"{where}: import {a.name}" for a in node.names
                      if a.name.split(".")[0] == "optuna"
                      and any(_private(p) for p in a.name.split("."))]
    return found


def test_the_checker_finds_each_kind_of_private_use() -> None:
    for source in ("x = trial._trial_id", "x = t._cached_frozen_trial.system_attrs",
                   "from optuna.storages._rdb import models",
                   "from optuna.storages._rdb.storage import _create_scoped_session",
                   "from optuna.pruners import _filter_study", "import optuna.storages._rdb",
                   "s = storage.scoped_session", "x = getattr(trial, '_trial_id')",
                   "t = optuna.trial.Trial(study, 1)", "ctx.study._storage.get_trial(1)"):
        assert private_uses(source), source
    assert private_uses("self._x = 1; cls._y = 2; x.__class__; trial.number; "
                        "optuna.trial.FrozenTrial(**kw); study.ask()") == []


def test_only_the_compat_module_touches_optunas_internals() -> None:
    package = ROOT / "study"
    offenders = {str(p.relative_to(ROOT)): uses for p in sorted(package.rglob("*.py"))
                 if p.name != "optuna_compat.py" and (uses := private_uses(p.read_text()))}
    assert offenders == {}, "private uses belong in study/optuna_compat.py"
    # ... and the compat module still holds what it gates (the checker sees it).
    assert private_uses((package / "optuna_compat.py").read_text())


# --------------------------------------------------------------------------- conformance


def dump(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, comparable across databases: a trial by its number,
    surrogate keys dropped, a timestamp by its presence (their order checked here)."""
    engine = sqlalchemy.create_engine(url)
    try:
        meta = sqlalchemy.MetaData()
        meta.reflect(engine)
        with engine.connect() as conn:
            trials = conn.execute(sqlalchemy.text(
                "SELECT trial_id, number, datetime_start, datetime_complete FROM trials")).all()
            number = {row.trial_id: row.number for row in trials}
            for row in trials:
                if row.datetime_complete is not None:
                    assert row.datetime_start is not None
                    assert row.datetime_start <= row.datetime_complete, row
            out: dict[str, list[tuple[Any, ...]]] = {}
            for table in meta.sorted_tables:
                keep = [c for c in table.columns
                        if not (c.primary_key and c.name.endswith("_id")
                                and c.name not in ("trial_id", "study_id"))]
                rows = []
                for row in conn.execute(sqlalchemy.select(*keep)):
                    values = []
                    for column, value in zip(keep, row, strict=True):
                        if column.name == "trial_id":
                            value = ("trial", number[value])
                        elif isinstance(column.type, sqlalchemy.DateTime):
                            value = value is not None
                        elif hasattr(value, "name"):  # an enum (a trial's state)
                            value = value.name
                        values.append((column.name, value))
                    rows.append(tuple(values))
                out[table.name] = sorted(rows, key=repr)
            return out
    finally:
        engine.dispose()


class Heard(list[tuple[Any, ...]]):
    """What a sampler's `after_trial` was told, trial by trial."""

    def hear(self, trial: FrozenTrial, state: TrialState, values: Sequence[float] | None
             ) -> None:
        self.append((trial.number, state, values, trial.params, trial.distributions,
                     trial.user_attrs, trial.system_attrs, trial.intermediate_values,
                     trial.datetime_start is not None))


def listening_sampler(heard: Heard) -> optuna.samplers.BaseSampler:
    class Listening(optuna.samplers.RandomSampler):
        def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState,
                        values: Sequence[float] | None) -> None:
            heard.hear(trial, state, values)

    return Listening(seed=0)


def write_scenario(url: str, bulk: bool, heard: Heard) -> None:
    """Trials started, reported to, attributed and finished COMPLETE, PRUNED (with and
    without values) and FAIL (diverged), in two batches, one left RUNNING."""
    spec = load_spec("article")
    dists = space.distributions(spec)
    storage = open_storage(url)
    study = optuna.create_study(storage=storage, study_name="s", sampler=listening_sampler(heard),
                                pruner=space.make_pruner(spec))
    study.set_user_attr("spec", {"k": [1, 2]})
    study_id = storage.get_study_id_from_name("s")
    cells = space.grid_cells(spec)[:6]
    new = [NewTrial(c.params(), {k: dists[k] for k in c.params()}, {"worker": "w", "seed": c.seed})
           for c in cells]
    first = start_trials(study, storage, study_id, new[:4], bulk=bulk)
    second = start_trials(study, storage, study_id, new[4:], bulk=bulk)
    assert [t.number for t in [*first, *second]] == list(range(6))
    assert all(t.params == n.params for t, n in zip([*first, *second], new, strict=True))
    # What the runner's monitor does between epochs: the pruner hears some steps.
    first[0].report(0.9, 1)
    first[1].report(0.8, 1)
    first[1].report(0.75, 2)
    second[0].set_user_attr("seed", 99)  # overwritten below
    curve = [0.9, 0.5, 0.25]
    # Optuna warns of the step reported twice; the bulk path keeps the first as quietly.
    warns = contextlib.nullcontext() if bulk else pytest.warns(UserWarning, match="step=1")
    with warns:
        finish_trials(study, storage, [
            # Step 1 was reported: kept, as `trial.report` keeps it (and warns).
            Outcome(first[0], {1: 0.95, 2: 0.5, 3: 0.25},
                    {"status": "complete", "train_curve": curve, "val_curve": [None, 0.5, 0.3],
                     "steps": 30, "seconds": 0.125, "note": "ünïcode"},
                    TrialState.COMPLETE, [0.25]),
            Outcome(first[1], {3: 0.7}, {"status": "pruned", "train_curve": [0.8, 0.75, 0.7]},
                    TrialState.PRUNED),
            Outcome(first[2], {1: 2.0}, {"status": "diverged", "diverged_epoch": 2,
                                         "train_curve": [2.0, None]}, TrialState.FAIL),
        ], bulk=bulk)
    finish_trials(study, storage, [
        Outcome(first[3], {}, {"status": "pruned", "train_curve": []}, TrialState.PRUNED),
        # Non-finite values are stored by kind (an Enum column) as Optuna stores them.
        Outcome(second[0], {1: 1e-300, 2: 1e300, 3: math.inf, 4: -math.inf},
                {"status": "complete", "seed": 4},
                TrialState.COMPLETE, [1e300]),
    ], bulk=bulk)
    # second[1] stays RUNNING, as a trial of a worker still training does.


@pytest.fixture(params=["sqlite", "postgresql"])
def two_urls(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'bulk.db'}", f"sqlite:///{tmp_path / 'public.db'}"
    else:
        server = request.getfixturevalue("pg_server")
        tag = uuid.uuid4().hex[:8]
        yield server.create_db(f"bulk_{tag}"), server.create_db(f"public_{tag}")


def test_bulk_and_public_paths_store_the_same_rows(two_urls: tuple[str, str]) -> None:
    bulk_url, public_url = two_urls
    bulk_heard, public_heard = Heard(), Heard()
    write_scenario(bulk_url, True, bulk_heard)
    write_scenario(public_url, False, public_heard)
    bulk, public = dump(bulk_url), dump(public_url)
    assert bulk.keys() == public.keys()
    for table in bulk:
        assert bulk[table] == public[table], table
    # The scenario reached every table a trial writes to, and each state.
    for table in ("trials", "trial_params", "trial_values", "trial_intermediate_values",
                  "trial_user_attributes", "trial_system_attributes", "study_user_attributes"):
        assert bulk[table], table
    trials = optuna.load_study(study_name="s", storage=bulk_url).trials
    assert [t.state.name for t in trials] == \
        ["COMPLETE", "PRUNED", "FAIL", "PRUNED", "COMPLETE", "RUNNING"]
    assert [t.values for t in trials] == [[0.25], [0.7], None, None, [1e300], None]
    assert trials[0].intermediate_values == {1: 0.9, 2: 0.5, 3: 0.25}
    assert trials[1].intermediate_values == {1: 0.8, 2: 0.75, 3: 0.7}
    assert trials[4].user_attrs["seed"] == 4
    assert str(trials[4].intermediate_values) == \
        "{1: 1e-300, 2: 1e+300, 3: inf, 4: -inf}"
    assert all(t.system_attrs == {"fixed_params": t.params} for t in trials)
    # The sampler heard the same of each trial, in the same order.
    assert bulk_heard == public_heard and [h[0] for h in bulk_heard] == [0, 1, 2, 3, 4]


def test_the_runner_stores_the_same_either_way(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    # The real runner, pruning and diverging, once per path: the same study comes out.
    spec = load_spec("article", ["search.batch_size=[16, 64]",
                                 "search.learning_rate=[0.1, 0.01, 0.001, 1e3]",
                                 "search.seeds=[0, 1]", "train.epochs=4", "data.n_train=100",
                                 "data.n_val=50", "search.pruner=median"])
    dumps = []
    for path in ("bulk", "public"):
        monkeypatch.setenv(optuna_compat.PUBLIC_API_ENV, "1" if path == "public" else "0")
        url = f"sqlite:///{tmp_path / path}.db"
        ctx = runner.open_study(spec, url, "t", create=True)
        trainer = ScriptedTrainer(batch_limit=5, diverge_lr=1e3)
        outcome = runner.work(ctx, lambda t=trainer: t, lambda: make_dataset(spec.data))
        assert outcome.statuses.keys() >= {"complete", "pruned", "diverged"}, outcome.statuses
        dumps.append(normalised(dump(url)))
    assert dumps[0] == dumps[1]


def normalised(tables: dict[str, list[tuple[Any, ...]]]) -> dict[str, list[tuple[Any, ...]]]:
    """What differs between two runs of the same study: who ran it and when."""
    def fix(row: tuple[Any, ...], key: str, value: Callable[[Any], Any]) -> tuple[Any, ...]:
        names = dict(row)
        if names.get("key") == key or (key.endswith(":") and
                                       str(names.get("key", "")).startswith(key)):
            return tuple((n, value(v) if n in ("value_json", "key") else v) for n, v in row)
        return row

    out = {}
    for table, rows in tables.items():
        fixed = []
        for row in rows:
            row = fix(row, "worker", lambda v: "W")
            row = fix(row, "worker:", lambda v: "W")
            row = fix(row, "created", lambda v: "T")
            # Wall times the runner measures around each train call (runner.py): they
            # differ between two runs of the same trials.
            row = fix(row, "seconds", lambda v: "S")
            row = fix(row, "group_seconds", lambda v: "S")
            row = fix(row, "git_revision", lambda v: "G")
            fixed.append(row)
        out[table] = sorted(fixed, key=repr)
    return out


# --------------------------------------------------------------------------- the bulk rows


def trial_id(storage: optuna.storages.RDBStorage, study: optuna.Study, number: int) -> int:
    return storage.get_trial_id_from_study_id_trial_number(
        storage.get_study_id_from_name(study.study_name), number)


def test_one_finished_trial_among_many_writes_nothing(db_url: str) -> None:
    storage = open_storage(db_url)
    study = optuna.create_study(storage=storage, study_name="s")
    a, done = study.ask(), study.ask()
    study.tell(done, 1.0)
    with pytest.raises(RuntimeError, match="finished"):
        optuna_compat.write_trials_facts(storage, [
            TrialFacts(trial_id(storage, study, 0), {2: 0.2}, {"k": 1}),
            TrialFacts(trial_id(storage, study, 1), {}, {"k": 2})])
    (ta, tb) = optuna.load_study(study_name="s", storage=db_url).trials
    assert (ta.user_attrs, ta.intermediate_values, ta.state) == ({}, {}, TrialState.RUNNING)
    assert tb.user_attrs == {}
    # The same refusal through the public path, which Optuna makes.
    with pytest.raises(RuntimeError, match="finished"):
        finish_trials(study, storage, [Outcome(done, {}, {"k": 1}, TrialState.FAIL)], bulk=False)
    with pytest.raises(KeyError, match="no trial with trial_id 999"):
        optuna_compat.write_trials_facts(storage, [TrialFacts(999, {}, {})])
    assert a.number == 0


@pytest.mark.parametrize("bulk", [True, False])
def test_outcomes_tell_refuses_are_refused_on_both_paths(db_url: str, bulk: bool) -> None:
    storage = open_storage(db_url)
    study = optuna.create_study(storage=storage, study_name="s")
    trial = study.ask()
    for bad, match in ((Outcome(trial, {}, {}, TrialState.COMPLETE), "COMPLETE needs"),
                       (Outcome(trial, {}, {}, TrialState.COMPLETE, [math.nan]), "COMPLETE needs"),
                       (Outcome(trial, {}, {}, TrialState.FAIL, [1.0]), "takes no values"),
                       (Outcome(trial, {}, {}, TrialState.RUNNING), "cannot finish as RUNNING")):
        with pytest.raises(ValueError, match=match):
            finish_trials(study, storage, [bad], bulk=bulk)
    assert optuna.load_study(study_name="s", storage=db_url).trials[0].state == TrialState.RUNNING


def test_started_trials_are_the_ones_optuna_reads_back(db_url: str) -> None:
    # The bulk path makes each `optuna.Trial` from the rows it wrote, not by reading them
    # back: every attribute must be what `Trial(study, trial_id)` reads.
    spec = load_spec("article")
    dists = space.distributions(spec)
    storage = open_storage(db_url)
    study = optuna.create_study(storage=storage, study_name="s",
                                sampler=space.make_sampler(spec))
    study_id = storage.get_study_id_from_name("s")
    new = [NewTrial(c.params(), {k: dists[k] for k in c.params()}, {"worker": "w", "seed": c.seed})
           for c in space.grid_cells(spec)[:3]]
    start_trials(study, storage, study_id, new[:1], bulk=True)
    made = start_trials(study, storage, study_id, new[1:], bulk=True)
    assert [t.number for t in made] == [1, 2]
    for trial in made:
        read = optuna.trial.Trial(study, trial._trial_id)
        assert vars(trial).keys() == vars(read).keys()
        for key, value in vars(read).items():
            assert getattr(trial, key) == value, key
        assert trial.params == read.params and trial.user_attrs == read.user_attrs
