"""Optuna's internals, behind one gate.

Optuna writes each `trial.report`, `set_user_attr`, `enqueue_trial`/`ask` and `tell` in
a transaction of its own, a few milliseconds each on SQLite: a fast trainer's 50 epochs
and ten attributes per trial, for a hundred trials finishing together, would spend more
time committing than training, and claiming 100 cells took seconds. So the runner
starts and finishes trials in bulk, one transaction each, writing the rows Optuna would
write, with Optuna's own models and encodings. That needs Optuna's private parts
(`optuna.storages._rdb`, `Trial._trial_id`, `Trial._cached_frozen_trial`,
`pruners._filter_study`), which a release may change without notice.

Every such use lives in this module, and only runs on the Optuna versions the tests
cover (`SUPPORTED`, the same bound as pyproject.toml's). On any other version, or with
`STUDY_OPTUNA_PUBLIC_API=1` in the environment, the same trials are written through
Optuna's public API: the same rows (tests/test_optuna_compat.py compares every stored
field of both paths), only slower, and a claim or a record is no longer one
transaction (a process killed half-way leaves some of its trials finished and the
others RUNNING, which the runner re-runs as abandoned).
"""

from __future__ import annotations

import datetime
import functools
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    import optuna
    from optuna.distributions import BaseDistribution
    from optuna.trial import TrialState
    from packaging.specifiers import SpecifierSet
    from packaging.version import Version

# The Optuna releases whose internals the bulk path was tested against; keep it equal to
# the `optuna` bound in pyproject.toml (a test checks).
SUPPORTED_SPEC = ">=5.0,<5.2"
PUBLIC_API_ENV = "STUDY_OPTUNA_PUBLIC_API"  # set (not "0") to always use the public path


def supported() -> SpecifierSet:
    from packaging.specifiers import SpecifierSet

    return SpecifierSet(SUPPORTED_SPEC)


@functools.cache
def optuna_version() -> Version:
    from packaging.version import Version

    return Version(metadata.version("optuna"))


def is_supported(version: Version | str) -> bool:
    """Whether `version` is one whose internals the bulk path may use.

    Pre-releases count: a 5.1 release candidate is inside the window, but a 5.2 one is
    not (`<5.2` excludes 5.2's pre-releases), nor is 5.10.
    """
    return supported().contains(version, prereleases=True)


def bulk_enabled() -> bool:
    """Whether trials are written in bulk (Optuna's internals) rather than one by one."""
    if os.environ.get(PUBLIC_API_ENV, "") not in ("", "0"):
        return False
    return is_supported(optuna_version())


def _use_bulk(storage: Any, bulk: bool | None) -> bool:
    from optuna.storages import RDBStorage

    if bulk is None:
        bulk = bulk_enabled()
    elif bulk and not is_supported(optuna_version()):
        raise RuntimeError(f"bulk writes need Optuna {SUPPORTED_SPEC}, not {optuna_version()}")
    # Rows are written beneath the storage: only Optuna's own RDB storage has them.
    return bulk and isinstance(storage, RDBStorage)


# --------------------------------------------------------------------------- starting


@dataclass(frozen=True)
class NewTrial:
    """A trial to start RUNNING with these params (of these distributions) and attributes:
    what `study.enqueue_trial(params, user_attrs=...)` then `study.ask(distributions)` make."""

    params: Mapping[str, Any]
    distributions: Mapping[str, BaseDistribution]
    user_attrs: Mapping[str, Any]


def start_trials(study: optuna.Study, storage: optuna.storages.BaseStorage, study_id: int,
                 new: Sequence[NewTrial], *, bulk: bool | None = None) -> list[optuna.Trial]:
    """RUNNING trials for `new`, in order; `storage` is the study's own (uncached) one.

    In bulk: one transaction, without the WAITING step (`ask` scans every unfinished
    trial to pop one). Otherwise `enqueue_trial` and `ask` for each; the caller must hold
    whatever lock keeps other processes from popping the queue meanwhile.
    """
    if not new:
        return []
    if _use_bulk(storage, bulk):
        from optuna.trial import FrozenTrial, TrialState

        now = datetime.datetime.now()
        templates = [FrozenTrial(
            number=-1, state=TrialState.RUNNING, value=None, values=None, datetime_start=now,
            datetime_complete=None, params=dict(t.params), distributions=dict(t.distributions),
            user_attrs=dict(t.user_attrs),
            # What `enqueue_trial` stores, so that samplers treat the trial as enqueued.
            system_attrs={"fixed_params": dict(t.params)}, intermediate_values={}, trial_id=-1)
            for t in new]
        from optuna.storages import RDBStorage

        made = _insert_trials(cast(RDBStorage, storage), study_id, templates)
        # The trials as stored are known: reading each back (`Trial(study, id)` does)
        # was a query per trial, most of a claim's time in a large study.
        for (trial_id, number), frozen in zip(made, templates, strict=True):
            frozen.number, frozen._trial_id = number, trial_id
        return [trial_of(study, frozen) for frozen in templates]
    trials = []
    for t in new:
        study.enqueue_trial(dict(t.params), user_attrs=dict(t.user_attrs))
        trial = study.ask(dict(t.distributions))
        if trial.params != dict(t.params):
            raise RuntimeError(f"ask popped trial {trial.number} with params {trial.params}, "
                               f"not the enqueued {dict(t.params)}: another process popped "
                               "the queue")
        trials.append(trial)
    return trials


# --------------------------------------------------------------------------- finishing


@dataclass
class Outcome:
    """How a RUNNING trial ends: new intermediate values (steps not reported yet; one
    already reported is kept, as `trial.report` keeps it), user attributes to set, its
    state and, when COMPLETE, its values. A PRUNED trial's value is its last
    intermediate value, as `study.tell` makes it. `told` is set once it is stored."""

    trial: optuna.Trial
    intermediate: Mapping[int, float]
    user_attrs: Mapping[str, Any]
    state: TrialState
    values: Sequence[float] | None = None
    told: bool = False


def _check(study: optuna.Study, o: Outcome) -> None:
    # What `study.tell` refuses, refused on both paths alike.
    from optuna.trial import TrialState

    if o.state == TrialState.COMPLETE:
        if o.values is None or len(o.values) != len(study.directions) \
                or any(math.isnan(v) for v in o.values):
            raise ValueError(f"trial {o.trial.number}: COMPLETE needs one non-NaN value per "
                             f"objective, not {o.values}")
    elif o.state in (TrialState.PRUNED, TrialState.FAIL):
        if o.values is not None:
            raise ValueError(f"trial {o.trial.number}: a {o.state.name} trial takes no values")
    else:
        raise ValueError(f"trial {o.trial.number}: cannot finish as {o.state.name}")


def finish_trials(study: optuna.Study, storage: optuna.storages.BaseStorage,
                  outcomes: Sequence[Outcome], *, bulk: bool | None = None) -> None:
    """Store `outcomes` as `trial.report`, `set_user_attr` and `study.tell` would, the
    sampler hearing of each as `tell` tells it. In bulk: one transaction for all (a
    process killed mid-write leaves every one RUNNING). Should the sampler raise for
    one, those before it are still stored."""
    for o in outcomes:
        _check(study, o)
    if not _use_bulk(storage, bulk):
        for o in outcomes:
            for step, value in o.intermediate.items():
                o.trial.report(value, step)
            for key, attr in o.user_attrs.items():
                o.trial.set_user_attr(key, attr)
            study.tell(o.trial, None if o.values is None else list(o.values), state=o.state)
            o.told = True
        return
    from optuna import pruners
    from optuna.storages import RDBStorage
    from optuna.trial import FrozenTrial, TrialState

    facts: list[TrialFacts] = []
    try:
        for o in outcomes:
            trial = o.trial
            cached = trial._cached_frozen_trial
            # A step already reported is kept, as `trial.report` keeps it.
            steps = {**o.intermediate, **cached.intermediate_values}
            values = None if o.values is None else [float(v) for v in o.values]
            if o.state == TrialState.PRUNED and steps and not math.isnan(steps[max(steps)]):
                values = [steps[max(steps)]]  # as `study.tell` values a pruned trial
            facts.append(TrialFacts(trial._trial_id, o.intermediate, o.user_attrs, o.state,
                                    values))
            # The cached trial's own params and distributions: `trial.params` and
            # `trial.distributions` deep-copy them on every read (0.1 s a claim of 400).
            frozen = FrozenTrial(
                number=cached.number, state=TrialState.RUNNING, value=None, values=None,
                datetime_start=cached.datetime_start, datetime_complete=None,
                params=cached.params, distributions=cached.distributions,
                user_attrs={**cached.user_attrs, **o.user_attrs},
                system_attrs=dict(cached.system_attrs), intermediate_values=steps,
                trial_id=trial._trial_id)
            # As `study.tell` does, the sampler hears of the outcome before it is stored.
            study.sampler.after_trial(pruners._filter_study(study, frozen), frozen, o.state,
                                      values)
    finally:
        write_trials_facts(cast(RDBStorage, storage), facts)
        for o in outcomes[:len(facts)]:
            o.told = True


# --------------------------------------------------------------------------- the rows


@dataclass(frozen=True)
class TrialFacts:
    """What one RUNNING trial has to store: new intermediate values, user attributes,
    and with `state`, its outcome (`values`)."""

    trial_id: int
    intermediate: Mapping[int, float]
    user_attrs: Mapping[str, Any]
    state: TrialState | None = None
    values: Sequence[float] | None = None


def write_trials_facts(storage: optuna.storages.RDBStorage, facts: Sequence[TrialFacts]) -> None:
    """RUNNING trials' intermediate values and user attributes, in one transaction; a
    trial with a `state` is finished in it too (its `values` and completion time).

    The rows are made by Optuna's own models and value encodings, checked the way its own
    `_set_trial_*_without_commit` and `set_trial_state_values` check them, so
    `study.trials`, the dashboard and the `optuna` CLI read them as if written one by
    one. A step the trial already has is kept, as `trial.report` keeps it; an attribute
    is overwritten, as `set_user_attr` does. All or nothing.
    """
    from optuna.storages._rdb import models
    from optuna.storages._rdb.storage import _create_scoped_session

    if not facts:
        return
    ids = [f.trial_id for f in facts]

    def existing(session: Any, model: Any, key: str) -> dict[tuple[int, Any], Any]:
        # The rows these trials already have (values the pruner was told, attributes set
        # at creation), to keep or update in place as Optuna does.
        rows = session.query(model).filter(model.trial_id.in_(ids))
        return {(int(row.trial_id), getattr(row, key)): row for row in rows}

    with _create_scoped_session(storage.scoped_session) as session:
        trials: dict[int, Any] = {int(t.trial_id): t for t in session.query(models.TrialModel)
                                  .filter(models.TrialModel.trial_id.in_(ids))
                                  .with_for_update()}
        for trial_id in ids:
            if trial_id not in trials:
                raise KeyError(f"no trial with trial_id {trial_id}")
            storage.check_trial_is_updatable(trial_id, trials[trial_id].state)
        steps = existing(session, models.TrialIntermediateValueModel, "step")
        attrs = existing(session, models.TrialUserAttributeModel, "key")
        objectives = existing(session, models.TrialValueModel, "objective")
        new_steps, new_attrs, new_values = [], [], []
        finished: list[dict[str, Any]] = []
        for f in facts:
            for step, value in f.intermediate.items():
                if (f.trial_id, step) in steps:
                    continue
                stored, kind = \
                    models.TrialIntermediateValueModel.intermediate_value_to_stored_repr(value)
                new_steps.append({"trial_id": f.trial_id, "step": step,
                                  "intermediate_value": stored,
                                  "intermediate_value_type": kind})
            for key, attr in f.user_attrs.items():
                text = json.dumps(attr)
                if (f.trial_id, key) in attrs:
                    attrs[f.trial_id, key].value_json = text
                else:
                    new_attrs.append({"trial_id": f.trial_id, "key": key, "value_json": text})
            for objective, v in enumerate(f.values or ()):
                number, value_kind = models.TrialValueModel.value_to_stored_repr(v)
                if (f.trial_id, objective) in objectives:
                    row = objectives[f.trial_id, objective]
                    row.value, row.value_type = number, value_kind
                else:
                    new_values.append({"trial_id": f.trial_id, "objective": objective,
                                       "value": number, "value_type": value_kind})
            if f.state is not None:
                finished.append({"row": f.trial_id, "new_state": f.state,
                                 "new_complete": datetime.datetime.now() if f.state.is_finished()
                                 else trials[f.trial_id].datetime_complete})
        # New rows as one executemany INSERT each, through the tables (Core) rather than
        # the models: the ORM's per-object bookkeeping cost more than the database did,
        # and its bulk path still two to three times what Core does (50 learning-curve
        # rows a trial make most of a large claim's writes).
        for model, rows in ((models.TrialIntermediateValueModel, new_steps),
                            (models.TrialUserAttributeModel, new_attrs),
                            (models.TrialValueModel, new_values)):
            if rows:
                _insert_rows(session, model.__table__, rows)
        if finished:
            # One executemany UPDATE, not the ORM's flush of each trial object.
            import sqlalchemy

            table = models.TrialModel.__table__
            session.execute(
                table.update().where(table.c.trial_id == sqlalchemy.bindparam("row"))
                .values(state=sqlalchemy.bindparam("new_state"),
                        datetime_complete=sqlalchemy.bindparam("new_complete")), finished)


def _insert_rows(session: Any, table: Any, rows: list[dict[str, Any]]) -> None:
    """`rows` (dicts with the same keys) into `table`, in the session's transaction.

    On SQLite, as one executemany of the driver itself: SQLAlchemy's executemany built
    each row's parameters in Python, which for a claim of 400 trials (26,000 rows, most
    of them learning-curve values) took longer than SQLite took to store them. Each
    column's own bind processor (an Enum stored by name) still converts its values, and
    the statement is SQLAlchemy's, compiled for the dialect. Elsewhere SQLAlchemy's path
    stays: it batches rows into few round trips, which a driver's plain executemany
    (psycopg's, a round trip a row) does not.
    """
    connection = session.connection()
    dialect = connection.dialect
    if dialect.name != "sqlite":
        session.execute(table.insert(), rows)
        return
    keys = list(rows[0])
    compiled = table.insert().compile(dialect=dialect, column_keys=keys)
    convert = {key: table.c[key].type.bind_processor(dialect) for key in keys}
    order = compiled.positiontup if compiled.positional else keys
    columns = [[row[key] for row in rows] for key in order]
    for i, key in enumerate(order):
        process = convert[key]
        if process is not None:
            columns[i] = [None if v is None else process(v) for v in columns[i]]
    params = list(zip(*columns, strict=True)) if compiled.positional else \
        [dict(zip(order, values, strict=True)) for values in zip(*columns, strict=True)]
    connection.exec_driver_sql(str(compiled), params)


def trial_of(study: optuna.Study, frozen: optuna.trial.FrozenTrial) -> optuna.Trial:
    """The `optuna.Trial` that `Trial(study, frozen._trial_id)` makes, from `frozen` (the
    trial as just stored) rather than from a read of it: the same attributes, and the
    sampler's `before_trial` called as `Trial.__init__` calls it (tests compare both)."""
    import optuna
    from optuna import pruners

    trial = optuna.trial.Trial.__new__(optuna.trial.Trial)
    trial.study = study
    trial._trial_id = frozen._trial_id
    trial.storage = study._storage
    trial._cached_frozen_trial = frozen
    study.sampler.before_trial(pruners._filter_study(study, frozen), frozen)
    trial.relative_search_space = None
    trial._relative_params = None
    trial._fixed_params = frozen.system_attrs.get("fixed_params", {})
    return trial


def create_trials(storage: optuna.storages.RDBStorage, study_id: int,
                  templates: Sequence[optuna.trial.FrozenTrial]) -> list[int]:
    """New trials made from `templates` in one transaction; their ids, in order."""
    return [trial_id for trial_id, _ in _insert_trials(storage, study_id, templates)]


def _insert_trials(storage: optuna.storages.RDBStorage, study_id: int,
                   templates: Sequence[optuna.trial.FrozenTrial]) -> list[tuple[int, int]]:
    """New trials made from `templates` in one transaction; their (id, number), in order.

    What `create_new_trial(template_trial=...)` writes for a template with params and
    attributes (no values yet), for many trials at once: under a lock of the study row,
    the trials numbered on from the study's count (as Optuna numbers them), then their
    params (internal representation and distribution JSON, as Optuna encodes them) and
    attributes (JSON) as multi-row INSERTs. Optuna's own path costs a dozen queries per
    trial. The search space is the spec's, fixed for the study, so Optuna's check that a
    param keeps its distribution across trials holds by construction.
    """
    import sqlalchemy
    from optuna.distributions import distribution_to_json
    from optuna.storages._rdb import models
    from optuna.storages._rdb.storage import _create_scoped_session

    for t in templates:
        if t.values is not None or t.intermediate_values:
            raise ValueError(f"create_trials: template {t.number} has values; "
                             "use create_new_trial")
    with _create_scoped_session(storage.scoped_session) as session:
        models.StudyModel.find_or_raise_by_id(study_id, session, for_update=True)
        count = session.query(sqlalchemy.func.count(models.TrialModel.trial_id)).filter(
            models.TrialModel.study_id == study_id).scalar() or 0
        trials = [models.TrialModel(study_id=study_id, number=count + i, state=t.state,
                                    datetime_start=t.datetime_start,
                                    datetime_complete=t.datetime_complete)
                  for i, t in enumerate(templates)]
        session.add_all(trials)
        session.flush()
        ids = [int(trial.trial_id) for trial in trials]
        params, user_attrs, system_attrs = [], [], []
        for trial_id, t in zip(ids, templates, strict=True):
            for name, value in t.params.items():
                dist = t.distributions[name]
                params.append({"trial_id": trial_id, "param_name": name,
                               "param_value": dist.to_internal_repr(value),
                               "distribution_json": distribution_to_json(dist)})
            user_attrs += [{"trial_id": trial_id, "key": k, "value_json": json.dumps(v)}
                           for k, v in t.user_attrs.items()]
            system_attrs += [{"trial_id": trial_id, "key": k, "value_json": json.dumps(v)}
                             for k, v in t.system_attrs.items()]
        for model, rows in ((models.TrialParamModel, params),
                            (models.TrialUserAttributeModel, user_attrs),
                            (models.TrialSystemAttributeModel, system_attrs)):
            if rows:
                _insert_rows(session, model.__table__, rows)
        return [(trial_id, count + i) for i, trial_id in enumerate(ids)]


def use_engine(storage: optuna.storages.RDBStorage, engine: Any, kwargs: dict[str, Any]) -> None:
    """Make `storage` query through `engine` from now on: its engine and its session
    factory (private in Optuna) are replaced, and the engine that opened it is closed."""
    from sqlalchemy import orm

    storage.engine.dispose()
    storage.engine, storage.engine_kwargs = engine, kwargs
    storage.scoped_session = orm.scoped_session(orm.sessionmaker(bind=engine))


def trial_id(trial: Any) -> int:
    """The storage's id of an `optuna.Trial` or `FrozenTrial` (private in Optuna)."""
    return int(trial._trial_id)
