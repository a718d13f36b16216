"""The Python API: what a notebook or a script calls. The `study` command is glue over it.

    import study
    results = study.run("article", storage="sqlite:///mine.db",
                        seeds=[0, 1, 2], overrides={"train.epochs": 20})
    results.grid()                # the Table `study query grid` prints
    results.figure("article")     # a plotly Figure, as `study report` draws it
    study.load("sqlite:///mine.db").best_lr()

Your own model and data: `model=` is a builder, a function `(input_shape, outputs) ->
keras.Model` or a "module:function" string (models.py has the contract); `data=` is
arrays `(x_train, y_train)` or `(x_train, y_train, x_val, y_val)`, or a `study.Dataset`.

    results = study.run("digits", model=build, data=(x, y), overrides={"data.val_fraction": 0.2})

`run` creates or resumes a study exactly as `study run` does (the same spec checks, the
same refusal of a changed identity, the same runner and worker pool); `load` opens an
existing one as `study query` and `study report` do. Results are read fresh from the
storage at every call, through the functions behind `study query` and `study report`,
so the API and the command line cannot disagree. Errors are the typed exceptions of
`study.errors`; nothing here prints, except the progress bar when asked for.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from study.errors import SpecError, StudyError, UsageError
from study.records import STUDY_SPEC
from study.spec import Spec
from study.storage import DEFAULT_STORAGE

if TYPE_CHECKING:
    import optuna
    import plotly.graph_objects as go

    from study import weights as weights_module
    from study.data import Dataset
    from study.progress import Progress
    from study.query import Table
    from study.report import Report, StudyView
    from study.runner import StudyContext
    from study.trainers import Trainer
    from study.trainers.base import Monitor, TrialConfig, TrialResult

__all__ = ["Results", "load", "run"]

log = logging.getLogger("study")

# What a spec's data section says that still applies to arrays passed as `data=`.
IN_MEMORY_KEEPS = ("seed", "task", "val_fraction", "standardize")

# A spec: a built-in name, a TOML file's path, a spec table (as in a TOML file), or a Spec.
SpecLike = str | os.PathLike[str] | Mapping[str, Any] | Spec


# --------------------------------------------------------------------------- the spec


def resolve_spec(spec: SpecLike = "article", overrides: Mapping[str, Any] | None = None, *,
                 seeds: Sequence[int] | None = None, trainer: object = None,
                 builder: str | None = None, in_memory_data: bool = False) -> Spec:
    """The validated spec `run` would use: `spec`, then `overrides` (`{"train.epochs": 20}`,
    Python values), then `seeds`, `trainer` (`run.trainer`: a name, "module:function", or
    a trainer of your own itself, kept in this process under its "module:qualname") and
    `builder` (`model.builder`). With
    `in_memory_data`, the data are arrays passed to `run`: `data.kind` becomes "arrays",
    and of the spec's data section only what it says of the arrays' treatment is kept
    (`IN_MEMORY_KEEPS`); its source (a file, a loader, a built-in set) is replaced.
    Every error names the field at fault."""
    from study.spec import apply_values, from_table, read_spec_source, to_table, validate

    table: dict[str, Any]
    if isinstance(spec, Spec):
        table = to_table(spec)
    elif isinstance(spec, str | os.PathLike):
        table = read_spec_source(os.fspath(spec))
    elif isinstance(spec, Mapping):
        table = copy.deepcopy(dict(spec))  # the caller's dict is never changed
    else:
        raise SpecError(f"spec: expected a built-in name, a TOML path, a dict or a Spec, "
                        f"got {type(spec).__name__}")
    values: dict[str, Any] = {}
    if overrides is not None:
        if not isinstance(overrides, Mapping):
            raise SpecError(f"overrides: expected a dict like {{'train.epochs': 20}}, "
                            f"got {type(overrides).__name__}")
        values.update(overrides)
    if seeds is not None:
        values["search.seeds"] = _seed_list(seeds)
    if trainer is not None:
        values["run.trainer"] = _trainer_ref(trainer)
    if builder is not None:
        values["model.builder"] = builder
    table = apply_values(table, values)
    if in_memory_data:
        section = table.get("data", {})
        kept = {k: v for k, v in section.items() if k in IN_MEMORY_KEEPS} \
            if isinstance(section, Mapping) else {}
        table["data"] = {**kept, "kind": "arrays"}
    result = from_table(table)
    validate(result)
    return result


def _trainer_ref(trainer: object) -> str:
    """`trainer=` as `run.trainer`: a string as it is, a function (or a class or object
    with `train`) registered in this process under its "module:qualname" (trainers/user.py)."""
    if isinstance(trainer, str):
        return trainer
    from study.trainers.user import register

    return register(trainer).ref


def _seed_list(seeds: object) -> list[int]:
    if isinstance(seeds, str | bytes) or not isinstance(seeds, Sequence) or not seeds or any(
            not isinstance(s, int) or isinstance(s, bool) for s in seeds):
        raise SpecError(f"seeds: expected a non-empty list of integers like [0, 1, 2], "
                        f"got {seeds!r}")
    return list(seeds)


# --------------------------------------------------------------------------- running


def load_data(spec: Spec) -> Dataset:
    """The spec's data set, loaded and checked against the spec (its batch sizes fit its
    rows, its loss fits its task); `DataError` or `SpecError` names what is wrong. The
    spec to run on it is `for_data(spec, data)`."""
    from study.data import check_spec, make_dataset

    data = make_dataset(spec.data)
    check_spec(spec, data)
    return data


def for_data(spec: Spec, data: Dataset) -> Spec:
    """The spec as it runs on `data`: the loss and objective it left "auto" follow the
    data's task (regression `mse`, binary `cross_entropy`, multi-class
    `sparse_cross_entropy`; on data of your own the validation loss or error), and a
    trainer of your own (`run.trainer = "module:function"`) is loaded, before any
    database is touched, its identity in `run.trainer_identity` (trainers/user.py). This
    is the spec that is stored, and compared on resume."""
    from study.data import check_spec
    from study.trainers.user import with_identity

    return with_identity(check_spec(spec, data))


def arrays_dataset(spec: Spec, data: object) -> Dataset:
    """The arrays passed as `run(data=...)`, through the checks, split, standardization
    and fingerprint of any other source, checked against the spec."""
    import dataclasses

    from study.data import Dataset, check_spec, from_arrays

    if isinstance(data, Dataset):
        # Its own split and task, checked and fingerprinted as arrays are.
        d = dataclasses.replace(spec.data, val_fraction=0.0, standardize=False, task=data.task)
        out = from_arrays(d, data.x_train, data.y_train, data.x_val, data.y_val, origin="data")
    elif isinstance(data, tuple | list) and len(data) in (2, 4):
        x_train, y_train, x_val, y_val = (*data, None, None)[:4]
        out = from_arrays(spec.data, x_train, y_train, x_val, y_val, origin="data")
    else:
        what = f"a {type(data).__name__}" + (f" of {len(data)}" if isinstance(data, tuple | list)
                                             else "")
        raise UsageError(f"data: expected (x_train, y_train), (x_train, y_train, x_val, y_val) "
                         f"or a study.Dataset, got {what}")
    check_spec(spec, out)
    return out


def check_workers(trainer: str, workers: int) -> None:
    """Refuse (`UsageError`, before anything is written) worker processes for a trainer
    of your own that they cannot import: one defined in a script or a notebook."""
    from study.trainers.user import check_workers as check

    check(trainer, workers)


def check_model(spec: Spec, data: Dataset) -> str | None:
    """Build the spec's model once for `data`, before any database is touched (a builder
    that does not import, raises or returns the wrong model is one `SpecError` line);
    returns the builder's identity, what it builds (models.identify; None: no builder)."""
    if not spec.model.builder:
        return None
    from study.models import check_builder
    from study.trainers.base import output_width

    return check_builder(spec.model, data.input_shape, output_width(spec.train, data), spec.train)


def open_join(storage: str, study_name: str | None = None, sets: Sequence[str] = (),
              data_file: str | None = None, model_file: str | None = None
              ) -> tuple[StudyContext, Dataset]:
    """Open an existing study to work on it as one more worker (what `study worker` and
    `join` do): its stored spec with run-only `sets` ("run.KEY=VALUE") applied, this
    process's own copy of its data (`data_file`: the arrays a pool's parent handed over)
    and its builder (`model_file`: a builder only the parent could import), both checked
    against the study's. Nothing is written before every check passed; a study not made
    by `study run` is refused."""
    from study import runner
    from study.spec import apply_overrides, from_stored, from_table, to_table, validate
    from study.storage import check_sqlite_target, mask, parse_url, stored_study_attr
    from study.store import study_name as resolve

    parse_url(storage)
    check_sqlite_target(storage)  # another application's database: said as such
    # Without a name: the storage's only study, else "article" (as `load` finds one).
    name = study_name if study_name is not None else resolve(storage, None)
    # Read through the one parser of stored specs, so a study stored by an earlier
    # version (a field since added or removed) is joined as `study run` resumes it.
    stored = from_stored(stored_study_attr(storage, name, STUDY_SPEC))
    if stored is None:
        from study.errors import StorageUsageError

        raise StorageUsageError(f"--study-name: no study {name!r} made by `study run` in "
                                f"{mask(storage)}")
    spec = from_table(apply_overrides(to_table(stored), list(sets)))
    validate(spec)
    if model_file:
        from study.handoff import read_model

        read_model(model_file)  # a builder function only the pool's parent can import
    if data_file:
        from study.handoff import read_data

        data = read_data(data_file)
    else:
        data = load_data(spec)
    spec = for_data(spec, data)  # a stored spec is resolved already: no change
    ctx = runner.open_study(spec, storage, name, create=False, fingerprint=data.fingerprint,
                            builder_sha256=check_model(spec, data))
    return ctx, data


def join(storage: str, study_name: str | None = None, *, sets: Sequence[str] = (),
         progress: bool | None = None) -> Results:
    """Work on an existing study as one more worker, in this process, until no cell is
    left (what `study worker` does, from Python): any number of processes on any number
    of machines may join the same study; each cell still runs exactly once. `sets`:
    run-only settings ("run.heartbeat_seconds=2"). Returns the study's `Results`.

    Example:
        study.join("postgresql+psycopg://user@dbhost/study", "article").grid()
    """
    from study import progress as progress_bars

    show = progress_bars.in_notebook() if progress is None else progress
    with _library_quiet():
        ctx, data = open_join(storage, study_name, sets)
        done, total = tally(ctx)
        if done < total:
            bar = None
            if show:
                bar = (progress_bars.pick(total, done) if progress is None
                       else progress_bars.Progress(total, done))
            try:
                train(ctx, data, 1, progress=bar)
            finally:
                if bar is not None:
                    bar.close()
    return Results(storage, ctx.name)


def open_run(spec: Spec, storage: str, study_name: str | None, workers: int, data: Dataset,
             builder_sha256: str | None = None) -> StudyContext:
    """Check the storage and the workers, then create or resume the study (refusing one
    stored with a different identity, other data (`data`, from `load_data`) or another
    builder source (`builder_sha256`, from `check_model`)). Nothing is written before
    every check passed."""
    from study import runner
    from study.storage import mask, parse_url, supports_workers

    parse_url(storage)  # a bad URL fails here, before anything is created
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise UsageError(f"--workers: expected a positive integer, got {workers!r}")
    if workers > 1 and not supports_workers(storage):
        raise UsageError(f"--workers: {workers} workers need PostgreSQL or SQLite storage, "
                         f"not {mask(storage)}")
    # The schema and the study are created here, once, before any worker starts.
    from study.spec import default_study_name

    return runner.open_study(spec, storage, study_name or default_study_name(spec), create=True,
                             fingerprint=data.fingerprint, builder_sha256=builder_sha256)


def tally(ctx: StudyContext) -> tuple[int, int]:
    """(finished, total) trials of the study."""
    from study import runner

    done = runner.count_finished(ctx, ctx.trials())
    if done >= runner.total_trials(ctx):
        runner.extend(ctx)  # a refinement round may be due (refine.py): more cells
    return runner.count_finished(ctx, ctx.trials()), runner.total_trials(ctx)


def train(ctx: StudyContext, data: Dataset, workers: int = 1, worker_args: Sequence[str] = (),
          progress: Progress | None = None,
          on_fallback: Callable[[str], None] | None = None,
          worker_env: Mapping[str, str] | None = None) -> int:
    """Run every pending trial: in this process, or in `workers` local worker processes.

    Returns how many workers were killed (their trials re-run by the others; see
    `require_finished`). `on_fallback` hears why the spec's trainer is not the one
    training, when it is not (a pool's workers say it themselves). `worker_env` adds to
    the workers' environment (see `local_workers`).
    """
    from study import runner
    from study import workers as pool

    spec = ctx.spec
    if workers > 1:
        # Said here, once for the study: the pool's members train quietly.
        fallback = fallback_line(spec, data)
        if fallback is not None:
            (on_fallback or log.info)(fallback)
        outcome = pool.run_pool(ctx, workers, worker_args, progress, worker_env)
        if outcome.interrupted:
            raise KeyboardInterrupt
        return len(outcome.killed)
    factory = trainer_factory(spec, on_fallback, data)
    if spec.train.keep_weights != "none":
        factory = _staging(factory, ctx, data)
    runner.work(ctx, factory, lambda: data, progress)
    return 0


def _staging(factory: Callable[[], Trainer], ctx: StudyContext, data: Dataset
             ) -> Callable[[], Trainer]:
    """`factory`'s trainer, each result's weights written to the study's staging folder
    as it comes back (weights.py), before the runner records the trial."""
    from study import weights
    from study.trainers.base import no_monitor, output_width

    folder = weights.staging_dir(ctx.url, ctx.study_id)
    outputs = output_width(ctx.spec.train, data)

    class Staging:
        def __init__(self, inner: Trainer) -> None:
            self.inner = inner
            self.name = inner.name
            self.batch_limit = inner.batch_limit

        def claim_size(self, pending: Sequence[TrialConfig], n_train: int,
                       seconds: float) -> int:
            return self.inner.claim_size(pending, n_train, seconds)

        def train(self, configs: Sequence[TrialConfig], data: Dataset,
                  monitor: Monitor = no_monitor) -> list[TrialResult]:
            results = self.inner.train(configs, data, monitor)
            for config, result in zip(configs, results, strict=True):
                weights.stage(folder, config, result, data.input_shape, outputs, data.n_train)
                result.weights = None  # on disk now; the runner has no use for them
            return results

        def __getattr__(self, name: str) -> Any:  # anything else a trainer offers
            return getattr(self.inner, name)

    return lambda: Staging(factory())


def publish_weights(ctx: StudyContext) -> weights_module.Published | None:
    """After a run whose every trial is finished: publish the best cell's weights when
    the spec keeps them (weights.py); None otherwise."""
    if ctx.spec.train.keep_weights == "none":
        return None
    done, total = tally(ctx)
    if done < total:
        return None
    from study import weights

    with _library_quiet():
        return weights.publish(ctx.url, ctx.name)


def refresh_note(ctx: StudyContext) -> bool:
    """After a run: rewrite the study's optuna-dashboard note, if `study report` stored
    one, from every trial now (see `report.refresh_note`)."""
    from study.report import refresh_note as refresh

    return refresh(ctx.url, ctx.name)


def require_finished(ctx: StudyContext) -> None:
    """Raise when trials are left unfinished (after a pool whose workers were killed)."""
    done, total = tally(ctx)
    if done < total:
        raise StudyError(f"{total - done} trials are left unfinished (workers were killed); "
                         "run the same command again to finish them")


def trainer_factory(spec: Spec, on_fallback: Callable[[str], None] | None = None,
                    data: Dataset | None = None) -> Callable[[], Trainer]:
    """What the runner calls for its trainer (only once it has work): the spec's trainer
    for `data`, telling `on_fallback` when it falls back to the keras trainer and why."""
    from study.trainers import choose_trainer

    def make() -> Trainer:
        trainer, fallback = choose_trainer(spec.run.trainer, spec, data)
        if fallback is not None:
            (on_fallback or log.info)(fallback)
        return trainer

    return make


def fallback_line(spec: Spec, data: Dataset | None = None) -> str | None:
    """Why the spec's trainer falls back to the keras trainer on `data` (None when it
    does not), as `trainer_factory` tells it, without making either trainer."""
    from study.trainers.user import is_own

    if spec.run.trainer not in ("auto", "population") or is_own(spec.run.trainer):
        return None
    from study.trainers.population.support import unsupported

    reason = unsupported(spec, data)
    return None if reason is None else (f"the population trainer does not support {reason}; "
                                        "training with the keras trainer")


@contextlib.contextmanager
def _library_quiet() -> Iterator[None]:
    """Optuna logs every study and trial at INFO on its own stderr handler, and warns
    about experimental features: the library does not print, so both are held to
    errors for the call, and restored after."""
    import optuna

    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module="optuna")
            warnings.filterwarnings("ignore", category=UserWarning, module="keras")
            yield
    finally:
        optuna.logging.set_verbosity(level)


def run(
    spec: SpecLike = "article",
    *,
    model: Callable[..., Any] | str | None = None,
    data: Dataset | Sequence[Any] | None = None,
    storage: str = DEFAULT_STORAGE,
    study_name: str | None = None,
    seeds: Sequence[int] | None = None,
    trainer: str | Callable[..., Any] | object | None = None,
    workers: int = 1,
    overrides: Mapping[str, Any] | None = None,
    progress: bool | None = None,
) -> Results:
    """Create or resume a study and run every pending trial, as `study run` does.

    `spec`: a built-in name ("article", ...), a TOML file's path, a dict (a spec table,
    as a TOML file holds it) or a `Spec`. `model`: a builder, a function `(input_shape,
    outputs) -> keras.Model` (uncompiled, logits out) or a "module:function" string; it
    sets `model.builder` (a function: to its "module:qualname"), and what it builds (its
    Keras config and initial weights) is the model's identity. `data`: arrays `(x_train, y_train)` or
    `(x_train, y_train, x_val, y_val)`, or a `study.Dataset`; they replace the spec's
    data source (`data.kind = "arrays"`), keeping its `val_fraction`, `seed`,
    `standardize` and `task`, and are fingerprinted like any data. `overrides`: fields to change, with Python
    values: `{"train.epochs": 20, "search.batch_size": [16, 64]}`. `seeds` sets
    `search.seeds`; `trainer` ("auto", "population" or "keras") sets `run.trainer`
    (None: the spec's, which is "auto" unless it says otherwise); a trainer of your own
    is a function `(config, data) -> mapping` (or a class with `train(configs, data)`,
    trainers/user.py has the contract) or its "module:function" string; worker
    processes need it importable. `study_name` defaults
    to the spec's name. `workers` > 1 starts that many local worker processes on the
    study (SQLite or PostgreSQL storage), as `study run --workers N` does; with arrays
    or a function no other process can import (one defined in a notebook or a script),
    they get them from a temporary file (the function as its model's Keras config), and
    `Results.notes` says what workers on other machines would need instead.

    A study that exists with the same identity (data, model, train, search, analysis)
    is resumed: finished trials are kept and only pending cells run; a different one is
    refused (`SpecError`) and nothing is written. `progress=True` draws the progress bar
    on stderr, with the line saying when the trainer falls back to the keras trainer;
    `False` prints nothing (the fallback goes to the "study" logger at INFO); None (the
    default) draws tqdm's bar in a Jupyter notebook and prints nothing elsewhere.

    Example:
        results = study.run("article", storage="sqlite:///mine.db",
                            seeds=[0, 1], overrides={"train.epochs": 5})
        print(results.grid())
    """
    from study import progress as progress_bars

    show = progress_bars.in_notebook() if progress is None else progress
    with _library_quiet():
        builder = _builder_ref(model)
        resolved = resolve_spec(spec, overrides, seeds=seeds, trainer=trainer, builder=builder,
                                in_memory_data=data is not None)
        dataset = load_data(resolved) if data is None else arrays_dataset(resolved, data)
        resolved = for_data(resolved, dataset)
        check_workers(resolved.run.trainer, workers)
        ctx = open_run(resolved, storage, study_name, workers, dataset,
                       check_model(resolved, dataset))
        done, total = tally(ctx)
        notes: list[str] = []
        if done < total:
            bar = None
            if show:
                bar = (progress_bars.pick(total, done) if progress is None
                       else progress_bars.Progress(total, done))
            say = (lambda line: print(f"study: {line}", file=sys.stderr)) if show else None
            with contextlib.ExitStack() as stack:
                args: list[str] = []
                env: dict[str, str] = {}
                if workers > 1:
                    args, env, note = local_workers(ctx, dataset, data is not None, stack)
                    if note is not None:
                        notes.append(note)
                        (say or log.info)(note)
                try:
                    train(ctx, dataset, workers, args, progress=bar, on_fallback=say,
                          worker_env=env)
                finally:
                    if bar is not None:
                        bar.close()
            if workers > 1:
                # A killed worker's cells are re-run by the others; if all were killed,
                # some are left, and a Results would pass for a finished study.
                require_finished(ctx)
            publish_weights(ctx)
            refresh_note(ctx)
        return Results(storage, ctx.name, notes)


def _builder_ref(model: object) -> str | None:
    """`model=` as `model.builder`: a string as it is, a function registered in this
    process under its "module:qualname" (models.py, `register`)."""
    if model is None or isinstance(model, str):
        return model
    from study.models import register

    return register(model).ref


def local_workers(ctx: StudyContext, data: Dataset, in_memory_data: bool,
                  stack: contextlib.ExitStack) -> tuple[list[str], dict[str, str], str | None]:
    """What a pool started from this process needs beyond the stored spec: the worker
    options naming a temporary file with the arrays and the model (`handoff.py`), removed
    when `stack` closes, the environment that lets them import a builder function, and
    the line saying what workers on other machines would need (None: nothing more)."""
    import tempfile

    from study import handoff
    from study.models import export_builder, importable
    from study.trainers import user
    from study.trainers.base import output_width

    spec = ctx.spec
    model: dict[str, Any] | None = None
    env: dict[str, str] = {}
    local_model: str | None = None
    if spec.model.builder:
        root = importable(spec.model.builder)
        if root is None:
            local_model = spec.model.builder
            model = export_builder(spec.model, data.input_shape, output_width(spec.train, data))
        elif root:
            rest = os.environ.get("PYTHONPATH", "")
            env["PYTHONPATH"] = os.pathsep.join([root, rest]) if rest else root
    own_root = user.importable(spec.run.trainer) if user.is_own(spec.run.trainer) else None
    if own_root:  # a trainer of your own, handed over as a function: its module's folder
        rest = env.get("PYTHONPATH", os.environ.get("PYTHONPATH", ""))
        env["PYTHONPATH"] = os.pathsep.join([own_root, rest]) if rest else own_root
    args: list[str] = []
    if in_memory_data or model is not None:
        directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="study-")))
        args = handoff.write(directory, data if in_memory_data else None, model)
    return args, env, handoff.remote_needs(in_memory_data, local_model)


def live_workers(storage: str, study_name: str) -> list[str]:
    """The workers whose heartbeat on the study is fresh (within the stored spec's
    `run.grace_seconds`): someone is running it now."""
    from study import runner
    from study.records import STUDY_SPEC
    from study.spec import RunSpec, from_stored
    from study.storage import open_storage

    rdb = open_storage(storage, create_schema=False)
    study_id = rdb.get_study_id_from_name(study_name)
    stored = from_stored(rdb.get_study_user_attrs(study_id).get(STUDY_SPEC))
    grace = (stored.run if stored is not None else RunSpec()).grace_seconds
    now = time.time()
    return sorted(key.removeprefix(runner.WORKER_KEY)
                  for key, record in rdb.get_study_system_attrs(study_id).items()
                  if key.startswith(runner.WORKER_KEY) and isinstance(record, dict)
                  and record.get("state") == "running"
                  and now - float(record.get("beat", 0.0)) <= grace)


def delete(storage: str, study_name: str) -> int:
    """Delete the study named `study_name` (exactly; there is no default) from `storage`,
    with its trials and anything stored on it; returns how many trials it had.

    Refused (`UsageError`, nothing deleted) when no such study exists or when a worker's
    heartbeat on it is fresh: a running study would be recreated half-empty by its
    workers. Optuna deletes it in one transaction.
    """
    import optuna

    from study.storage import open_storage
    from study.store import study_name as resolve

    if not isinstance(study_name, str) or not study_name:
        raise UsageError(f"--study-name: name the study to delete, got {study_name!r}")
    resolve(storage, study_name)  # read-only: a missing study is one line, nothing written
    live = live_workers(storage, study_name)
    if live:
        raise UsageError(f"--study-name: study {study_name!r} is running ({len(live)} live "
                         f"worker(s): {', '.join(live[:3])}); stop them first")
    with _library_quiet():
        rdb = open_storage(storage, create_schema=False)
        n = len(optuna.load_study(study_name=study_name, storage=rdb)
                .get_trials(deepcopy=False))
        optuna.delete_study(study_name=study_name, storage=rdb)
    return n


def load(storage: str = DEFAULT_STORAGE, study_name: str | None = None) -> Results:
    """An existing study, as `study query` and `study report` find it: by name, or
    without one, "article", or else the storage's only study. Reads only.

    Example:
        results = study.load("sqlite:///storage/study.db")
        results.best_lr().to_dicts()
    """
    from study.store import study_name as resolve

    return Results(storage, resolve(storage, study_name))


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Best:
    """The best cell of a study (`Results.best`)."""

    batch_size: int
    learning_rate: float
    objective: str  # which objective `mean` is (train.objective), minimized
    mean: float  # over the cell's completed seeds
    low: float | None  # its 95% bootstrap interval over seeds (None: a single seed)
    high: float | None
    seeds: int  # completed seeds in the cell
    trials: tuple[int, ...]  # their trial numbers, in the order of `seed_values`
    seed_values: tuple[int, ...]

    def __str__(self) -> str:
        spread = (f" [{self.low:.4g}, {self.high:.4g}]"
                  if self.low is not None and self.high is not None else "")
        return (f"batch_size={self.batch_size}, learning_rate={self.learning_rate:g}: "
                f"{self.objective} {self.mean:.4g}{spread} over {self.seeds} seed(s)")


class Results:
    """A study in a storage, read fresh at every call: the tables `study query` prints,
    the figures `study report` draws, and the report itself.

    `.name` is the study's name, `.storage` its URL as given (shown with the password
    masked), `.spec` the `Spec` stored on it (None for a study `study` did not make),
    `.notes` the lines `run` logged (what a study with workers on other machines needs).
    """

    def __init__(self, storage: str, name: str, notes: Sequence[str] = ()) -> None:
        self._storage = storage
        self.name = name
        # What `run` had to say beyond the tables: what workers on other machines need.
        self.notes = list(notes)

    @property
    def storage(self) -> str:
        return self._storage

    def __repr__(self) -> str:
        from study.storage import mask

        return f"Results(study={self.name!r}, storage={mask(self._storage)!r})"

    @property
    def spec(self) -> Spec | None:
        from study.spec import from_stored
        from study.storage import stored_study_attr

        return from_stored(stored_study_attr(self._storage, self.name, STUDY_SPEC))

    @property
    def optuna_study(self) -> optuna.Study:
        """The `optuna.Study` itself, for anything Optuna offers (its trials, its
        visualizations, `copy_study`)."""
        import optuna

        from study.storage import open_storage

        with _library_quiet():
            return optuna.load_study(study_name=self.name,
                                     storage=open_storage(self._storage, create_schema=False))

    @property
    def best(self) -> Best | None:
        """The cell (batch size, learning rate) with the lowest mean objective over its
        seeds, a cell where any seed diverged never; None before any cell completed."""
        from study import analysis
        from study.storage import read_only
        from study.store import trial_rows

        with read_only(self._storage) as conn:
            from study.store import resolve_study

            study_id, _ = resolve_study(conn, self._storage, self.name)
            records = [row.record for row in trial_rows(conn, study_id)]
        cell = analysis.best(records)
        if cell is None or cell.mean is None:
            return None
        spread = analysis.bootstrap_interval(cell.values)
        spec = self.spec
        trials = tuple(sorted(
            (r.seed if r.seed is not None else -1, r.number) for r in records
            if r.status == "complete" and r.batch_size == cell.batch_size
            and r.learning_rate == cell.learning_rate))
        return Best(cell.batch_size, cell.learning_rate,
                    spec.train.objective if spec is not None else "objective", cell.mean,
                    spread.low if spread is not None else None,
                    spread.high if spread is not None else None,
                    len(cell.values), tuple(n for _, n in trials),
                    tuple(seed for seed, _ in trials))

    def model(self, seed: int | None = None) -> Any:
        """The study's model with the best cell's trained weights for `seed` (None: the
        lowest seed with weights), compiled as its trials were (`train.optimizer` at the
        cell's learning rate, the loss and metrics), so that `model.evaluate` on the
        validation set gives the trial's stored `val_loss`. Needs `train.keep_weights =
        "best"` and a finished study; the builder must be importable here (or defined in
        this process)."""
        from study import weights
        from study.errors import UsageError
        from study.models import build_model
        from study.trainers._tf import tensorflow
        from study.trainers.base import TrialConfig
        from study.trainers.keras import make_loss, make_metrics, make_optimizer

        spec = self.spec
        if spec is None:
            raise UsageError(f"study {self.name!r} has no stored spec: it was not made by "
                             "study run")
        with _library_quiet():
            kept = weights.download(self._storage, self.name, seed)
            tensorflow()
            model = build_model(spec.model, kept.input_shape, kept.outputs)
            model.set_weights(kept.weights)
            config = TrialConfig.of(spec, kept.batch_size, kept.learning_rate, kept.seed)
            model.compile(optimizer=make_optimizer(config, config.plan(kept.n_train).steps),
                          loss=make_loss(spec.train, model),
                          metrics=make_metrics(spec.train, model))
        return model

    def summary(self) -> str:
        """What `study run` prints when it ends: the grid with its intervals (a sampled
        study: its best trials), the best cell, the scaling headline and the outcomes."""
        from study.storage import mask, read_only
        from study.store import resolve_study, study_attr, trial_rows
        from study.summary import summary_lines

        spec = self.spec
        if spec is None:
            raise UsageError(f"study {self.name!r} has no stored spec: it was not made by "
                             "study run")
        with read_only(self._storage) as conn:
            study_id, _ = resolve_study(conn, self._storage, self.name)
            records = [row.record for row in trial_rows(conn, study_id)]
            attrs = {key: study_attr(conn, study_id, key)
                     for key in self.optuna_study.user_attrs}
        return "\n".join(summary_lines(records, spec, attrs, self.name,
                                       mask(self._storage))).strip("\n")

    # Tables: exactly what `study query NAME` prints (one code path).

    def _query(self, name: str, trial: int | None = None) -> Table:
        from study.query import run_named

        return run_named(self._storage, name, self.name, trial)

    def trials(self) -> Table:
        """One row per trial: number, state, batch size, learning rate, seed, objective, ..."""
        return self._query("trials")

    def grid(self) -> Table:
        """The mean objective per batch size (rows) x learning rate (columns); with repeats,
        each mean's 95% bootstrap interval (`lr=X low` / `lr=X high` columns)."""
        return self._query("grid")

    def best_lr(self) -> Table:
        """The best learning rate per batch size, refined, with its interval, and the
        plateau of learning rates within `analysis.tolerance` of the best
        (`plateau_low`, `plateau_high`)."""
        return self._query("best-lr")

    def scaling(self) -> Table:
        """Which shape lr*(B) follows (power law, McCandlish's saturation, Li et al.'s
        surge) with its parameter's interval, the plateaus, the rules' verdicts where they
        apply, the noise scale; the conclusion is in `.notes`."""
        return self._query("scaling")

    def critical_batch(self) -> Table:
        """Steps to the target loss per batch size, S_min, E_min, B_crit (McCandlish et
        al.) and the 20%-overhead batch size (Zhang et al.), each with its interval."""
        return self._query("critical-batch")

    def curves(self, trial: int | None = None) -> Table:
        """Per-epoch losses of every trial, or of trial number `trial`."""
        return self._query("curves", trial)

    # Figures and the report: what `study report` draws.

    def _view(self) -> tuple[optuna.Study, StudyView]:
        import optuna

        from study.report import load_view
        from study.storage import mask, open_storage

        with _library_quiet():
            study = optuna.load_study(study_name=self.name,
                                      storage=open_storage(self._storage, create_schema=False))
            return study, load_view(study, mask(self._storage), self._storage)

    def figure_names(self) -> list[str]:
        """Every page `study report` writes, by name (its file without .html)."""
        from study.report import our_pages

        _, view = self._view()
        return [p.file.removesuffix(".html") for p in our_pages(view)] + _optuna_names()

    def figure(self, name: str) -> go.Figure:
        """The plotly Figure of the report's page `name` ("article", "scaling",
        "heatmap_objective", "contour", ...; see `figure_names`). A page this study cannot
        have (no noise scale recorded, too few completed trials) is a `UsageError` saying why.
        """
        from study.report import optuna_pages, our_pages, plot_study

        study, view = self._view()
        ours = {p.file.removesuffix(".html"): p for p in our_pages(view)}
        names = [*ours, *_optuna_names()]
        if name not in names:
            raise UsageError(f"figure: unknown figure {name!r}; choose one of {', '.join(names)}")
        if name in ours:
            page = ours[name]
        else:
            with _library_quiet():
                plots, note = plot_study(study, self._storage)
                (page,) = optuna_pages(plots, view, only=f"{name}.html", note=note)
        if page.figure is None:
            raise UsageError(f"figure: {name!r} is not drawn for study {self.name!r}: "
                             f"{page.skipped}")
        return page.figure

    def report(self, out_dir: str | os.PathLike[str] | None = None, dashboard: bool = True
               ) -> Report:
        """Write the report to `out_dir` (default `dashboards/<study>/`) as `study report`
        does (every figure, index.html, plotly.min.js); with `dashboard`, also store our
        figures and the summary note on the study for optuna-dashboard. Returns what was
        written (`.files`, `.skipped`)."""
        from study.report import write_report

        out = Path(out_dir) if out_dir is not None else None
        with _library_quiet():
            return write_report(self._storage, self.name, out, dashboard=dashboard)


def _optuna_names() -> list[str]:
    from study.report import optuna_page_files

    return [file.removesuffix(".html") for file in optuna_page_files()]
