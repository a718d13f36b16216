"""The runner: Optuna ask-and-tell around a trainer. It decides and records; it never trains.

A grid study must end with exactly one finished trial per cell (batch size, learning
rate, seed), whatever happens to the processes running it. Optuna's `GridSampler`
picks an unvisited cell at random, which lets concurrent workers pick the same one
(its own comment says so), so the runner assigns cells itself:

- Under a cross-process claim lock (`storage.claim_lock`) a worker lists the trials,
  marks abandoned RUNNING trials FAIL, and for each cell with no finished and no
  running trial it enqueues a trial with that cell's params and pops it at once with
  `study.ask`. Nothing else pops, so no two workers ever hold the same cell.
- A trial is finished when it is COMPLETE, PRUNED, or FAIL because it diverged (a
  result, which a rerun would only repeat). FAIL for any other reason (interrupted,
  abandoned, error) leaves its cell pending, so the next claim re-runs it.
- A RUNNING trial is abandoned when its worker is a dead process on this host, or
  has not beaten its heartbeat for `run.grace_seconds`.

A sampler other than grid, and any pruner, learns from finished trials: TPE places its
next trial from the results it was told, a median pruner compares a trial's curve with
those of completed trials. So such a study's claims are small (`feedback_limit`: a
trainer's own figure, else about one trial per core), and each is told before the next
is asked for; one big claim would be asked for blind and compared with nothing.

A trainer trains a claim's trials in one call (the population trainer fuses them into
one program), so what each trial cost is recorded three ways (`result_attrs`): the
call's wall time and size (`records.GROUP_SECONDS`, `GROUP_SIZE`), the trial's share
of that wall time (`records.SECONDS`), and Optuna's `datetime_start` and
`datetime_complete`, which are when the trial was claimed and told: for a trial
trained alone its own time, for fused trials the group's span.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import math
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import TYPE_CHECKING, Any

from study import ledger, optuna_compat, refine, space
from study import records as R
from study.errors import SpecError, StorageError, StorageUsageError, TooManyFailures
from study.spec import BUILDER_SHA256, FINGERPRINT, Range, Spec, identity_diff, to_table
from study.storage import (
    claim_lock,
    describe_error,
    git_revision,
    is_storage_error,
    mask,
    package_versions,
    stored_study_attr,
)

if TYPE_CHECKING:
    import optuna
    from optuna.distributions import BaseDistribution

    from study.data import Dataset
    from study.progress import Progress
    from study.trainers import Trainer, TrialConfig, TrialResult

    # What the claim logic reads of a trial: Optuna's, or the ledger's sketch of it.
    TrialLike = optuna.trial.FrozenTrial | ledger.Sketch

WORKER_ATTR = ledger.WORKER_ATTR  # trial user attr: the id of the worker that ran it
WORKER_KEY = "worker:"  # study system attr prefix: a worker's liveness record
POOL_SIZE_ENV = "STUDY_POOL_SIZE"  # set by `study run --workers N` for its workers
FINISHED_STATUSES = ("complete", "pruned", "diverged")
# What `record` says of a trial that another worker recovered (and re-ran) while this one
# was stalled: its result here is dropped, the cell's outcome is the other's.
TAKEN_OVER = "taken over"


class Interrupted(KeyboardInterrupt):
    """SIGTERM, treated like Ctrl-C: stop cleanly."""


# --------------------------------------------------------------------------- workers


def _proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name; None off Linux or if gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _process_start(pid: int) -> str | None:
    """The kernel's start time of `pid` (guards against a reused pid); None off Linux."""
    fields = _proc_stat(pid)
    return fields[19] if fields and len(fields) > 19 else None


def process_alive(pid: int, start: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    fields = _proc_stat(pid)
    if fields is None:
        return True  # no /proc: the signal check is all we have
    # A zombie has exited; only its parent has not reaped it yet.
    return fields[0] not in ("Z", "X") and (start is None or fields[19] == start)


@dataclass(frozen=True)
class Worker:
    id: str
    host: str
    pid: int
    start: str | None

    @classmethod
    def current(cls) -> Worker:
        host = socket.gethostname()
        pid = os.getpid()
        return cls(f"{host}:{pid}:{uuid.uuid4().hex[:6]}", host, pid, _process_start(pid))

    def record(self, state: str = "running") -> dict[str, Any]:
        return {"host": self.host, "pid": self.pid, "start": self.start,
                "beat": time.time(), "state": state}


class Heartbeat:
    """Beats this worker's liveness record every `interval` seconds from a thread."""

    def __init__(self, storage: Any, study_id: int, worker: Worker, interval: float,
                 seconds: dict[str, float] | None = None) -> None:
        self.storage = storage
        # Where this worker adds up its time (`StudyContext.seconds`): the beats' own is
        # added there, and the last beat ("stopped") stores it with the record.
        self.seconds = seconds
        self.study_id = study_id
        self.worker = worker
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="study-heartbeat", daemon=True)

    def beat(self, state: str = "running") -> None:
        began = time.perf_counter()
        record = self.worker.record(state)
        if self.seconds is not None and state == "stopped":
            record["seconds"] = {k: round(v, 3) for k, v in self.seconds.items()}
        try:
            self.storage.set_study_system_attr(self.study_id, WORKER_KEY + self.worker.id,
                                               record)
        finally:
            if self.seconds is not None:
                self.seconds["heartbeats"] = self.seconds.get("heartbeats", 0.0) \
                    + time.perf_counter() - began

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            # A storage hiccup must not kill the thread; the main loop sees real outages.
            with contextlib.suppress(Exception):
                self.beat()

    def __enter__(self) -> Heartbeat:
        self.beat()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=self.interval + 5)
        with contextlib.suppress(Exception):
            self.beat("stopped")


def is_abandoned(
    trial: TrialLike,
    workers: dict[str, dict[str, Any]],
    me: Worker,
    grace: float,
    now: float,
) -> bool:
    """Whether a RUNNING trial's worker is gone (dead here, or silent past `grace`)."""
    owner = trial.user_attrs.get(WORKER_ATTR)
    if owner == me.id:
        return False
    record = workers.get(str(owner)) if owner else None
    if record is None:
        started = trial.datetime_start or datetime.datetime.now()
        return (datetime.datetime.now() - started).total_seconds() > grace
    if record.get("host") == me.host and not process_alive(int(record["pid"]), record.get("start")):
        return True
    if record.get("state") == "stopped":
        return True
    return now - float(record.get("beat", 0.0)) > grace


# --------------------------------------------------------------------------- study


@dataclass
class StudyContext:
    spec: Spec
    url: str
    name: str
    study: optuna.Study
    storage: Any  # optuna.storages.RDBStorage
    study_id: int
    fingerprint: str | None = None  # the data set's (data.py), stored with the spec
    builder_sha256: str | None = None  # what the model builder builds (models.identify), likewise
    storage_seconds: float = 0.0  # spent by this process's runner on claims and records
    # This process's runner's wall time by what it went to (`work`): "claims" and
    # "records" (together `storage_seconds`), "training", "idle" (waiting for cells
    # running elsewhere), "heartbeats" (the thread's writes), and "started", the
    # seconds from the process's start to its first claim. Stored with the worker's
    # last heartbeat, for a pool's figures (bench/workers.py).
    seconds: dict[str, float] = field(default_factory=dict)
    _ledger: ledger.Ledger | None = field(default=None, repr=False)
    # Refinement rounds stored on the study (refine.py), as last read (`extend`).
    rounds: list[refine.Round] = field(default_factory=list)

    _cells: tuple[tuple[int, int], list[space.Cell]] | None = field(default=None, repr=False)

    @property
    def cells(self) -> list[space.Cell]:
        """The grid's cells, then every stored refinement round's (kept while the rounds
        are: each claim reads them, 2000 cells a millisecond to make again)."""
        if not self.spec.is_grid:
            return []
        key = (id(self.rounds), len(self.rounds))
        if self._cells is None or self._cells[0] != key:
            self._cells = (key, space.grid_cells(self.spec)
                           + refine.round_cells(self.spec, self.rounds))
        return list(self._cells[1])

    def trials(self) -> list[ledger.Sketch]:
        """Every trial, as much as claiming needs of it, read incrementally (ledger.py)."""
        if self._ledger is None:
            self._ledger = ledger.Ledger(self.storage.engine, self.study_id)
        return self._ledger.trials()


def open_study(spec: Spec, url: str, name: str, *, create: bool,
               fingerprint: str | None = None, builder_sha256: str | None = None
               ) -> StudyContext:
    """Create or load the study `name`, refusing one whose stored spec differs, whose
    data had another `fingerprint` (data.py), or whose model builder built another model
    (`builder_sha256`: its identity, models.identify; either None: not compared, nor stored).

    The check reads the database read-only first, so a mismatched spec writes nothing.
    """
    import optuna

    from study.storage import open_storage

    stored = stored_study_attr(url, name, "spec")
    table = _spec_table(spec, fingerprint, stored, builder_sha256)
    if stored is not None:
        diff = identity_diff(stored, table)
        if diff and diff.startswith("model.builder: the model it builds changed"):
            raise SpecError(
                f"study {name!r} was run with another model than model.builder = "
                f"{spec.model.builder!r} builds now ({_inside(diff)}); "
                "pass --study-name NAME or another --storage to start a new study"
            )
        if diff and diff.startswith("data.fingerprint"):
            from study.data import describe

            raise SpecError(
                f"study {name!r} was run on other data than {describe(spec.data)} holds now "
                f"({diff}); pass --study-name NAME or another --storage to start a new study"
            )
        if diff:
            raise SpecError(
                f"study {name!r} exists with a different spec: {diff} "
                "(pass --study-name NAME to start a new study)"
            )
    storage = open_storage(url, create_schema=create)
    sampler, pruner = space.make_sampler(spec), space.make_pruner(spec)
    if create:
        try:
            study = optuna.create_study(
                storage=storage, study_name=name, sampler=sampler, pruner=pruner,
                direction="minimize", load_if_exists=True,
            )
        except optuna.exceptions.DuplicatedStudyError:  # created meanwhile by another process
            study = optuna.load_study(storage=storage, study_name=name, sampler=sampler,
                                      pruner=pruner)
    else:
        try:
            study = optuna.load_study(storage=storage, study_name=name, sampler=sampler,
                                      pruner=pruner)
        except KeyError:
            raise StorageUsageError(
                f"--study-name: no study {name!r} in {mask(url)} (start it with `study run`)"
            ) from None
    ctx = StudyContext(spec, url, name, study, storage, storage.get_study_id_from_name(name),
                       fingerprint, builder_sha256)
    _store_provenance(ctx, stored)
    if spec.is_grid:
        ctx.rounds = refine.rounds_from_attrs(study.user_attrs)
    return ctx


def _inside(diff: str) -> str:
    """What a difference says in its parentheses ("... changed (architecture: ...)")."""
    start, end = diff.find("("), diff.rfind(")")
    return diff[start + 1:end] if 0 <= start < end else diff


def _spec_table(spec: Spec, fingerprint: str | None, stored: Any,
                builder_sha256: str | None = None) -> dict[str, Any]:
    """The spec as stored: its table, with the data's fingerprint (spec.FINGERPRINT) and
    the builder's identity (spec.BUILDER_SHA256, stored as model.builder_identity).

    Without one, the stored one is kept: a caller that did not compute it must not
    erase it. A study stored before either gets it on its next run.
    """
    table = to_table(spec)
    for (section, key), value in ((FINGERPRINT, fingerprint), (BUILDER_SHA256, builder_sha256)):
        if value is None and isinstance(stored, dict):
            value = stored.get(section, {}).get(key)
        if value is not None:
            table[section][key] = value
    return table


def _store_provenance(ctx: StudyContext, stored: dict[str, Any] | None) -> None:
    table = _spec_table(ctx.spec, ctx.fingerprint, stored, ctx.builder_sha256)
    if stored is None and ctx.study.get_trials(deepcopy=False):
        raise SpecError(
            f"study {ctx.name!r} has trials but no stored spec: it was not made by `study` "
            "(pass --study-name NAME to start a new study)"
        )
    if stored is None:
        ctx.study.set_user_attr("created", datetime.datetime.now().isoformat(timespec="seconds"))
    if stored != table:
        # New, or resumed with other seeds or run settings: the stored spec is the latest.
        ctx.study.set_user_attr("spec", table)
        ctx.study.set_user_attr("versions", package_versions())
        ctx.study.set_user_attr("git_revision", git_revision())


def trial_status(t: TrialLike) -> str:
    return R.status_of(t.state.name, t.user_attrs)


def _facts(t: TrialLike) -> tuple[str, space.Cell | None]:
    """A trial's status and cell; a finished sketch keeps them (`ledger.Sketch.memo`)."""
    memo = getattr(t, "memo", None)
    if memo is not None:
        return memo  # type: ignore[no-any-return]
    facts = (trial_status(t), space.cell_of(t.params))
    if isinstance(t, ledger.Sketch) and t.state.is_finished():
        t.memo = facts
    return facts


def pending_cells(ctx: StudyContext, trials: Sequence[TrialLike]) -> list[space.Cell]:
    """Grid cells with no finished and no running trial."""
    taken: set[space.Cell] = set()
    for t in trials:
        status, cell = _facts(t)
        if cell is not None and (status in FINISHED_STATUSES or t.state.name == "RUNNING"):
            taken.add(cell)
    return [c for c in ctx.cells if c not in taken]


def count_finished(ctx: StudyContext, trials: Sequence[TrialLike]) -> int:
    facts = [_facts(t) for t in trials]
    if ctx.spec.is_grid:
        cells = set(ctx.cells)
        return len({cell for status, cell in facts if status in FINISHED_STATUSES} & cells)
    return sum(status in FINISHED_STATUSES for status, _ in facts)


def total_trials(ctx: StudyContext) -> int:
    return len(ctx.cells) if ctx.spec.is_grid else ctx.spec.search.n_trials


# --------------------------------------------------------------------------- refinement


def extend(ctx: StudyContext) -> bool:
    """Refinement (refine.py): whether the study has cells left to run once every cell
    known here has a final outcome, deciding and storing the next round if it is due.

    Under the claim lock, so that a round is decided once and every worker reads the
    same one: the rounds stored are read again (another worker may have added one: then
    there are cells left); if every cell has a final outcome the next round is decided
    from their trials, which can no longer change, and stored before any of its cells
    can be claimed, or the reason to stop is stored, so a resumed study does not decide
    again (unless its budget, `search.refine_trials`, changed). A study without
    refinement returns False at once, touching nothing.
    """
    spec = ctx.spec
    if not spec.is_grid or spec.search.refine_trials <= 0:
        return False
    with claim_lock(ctx.url, ctx.name, ctx.storage.engine):
        attrs = ctx.storage.get_study_user_attrs(ctx.study_id)
        ctx.rounds = refine.rounds_from_attrs(attrs)
        trials = ctx.trials()
        if count_finished(ctx, trials) < total_trials(ctx):
            return True
        stop = refine.stop_from_attrs(attrs)
        if stop is not None and stop.after == len(ctx.rounds) \
                and stop.budget == spec.search.refine_trials:
            return False
        cells = set(ctx.cells)
        done = [t for t in ctx.study.get_trials(deepcopy=False)
                if space.cell_of(t.params) in cells and trial_status(t) in FINISHED_STATUSES]
        decision = refine.decide(R.to_records(done), spec, ctx.rounds)
        if isinstance(decision, refine.Stop):
            ctx.study.set_user_attr(refine.STOP_ATTR, decision.to_json())
            return False
        ctx.study.set_user_attr(refine.round_key(decision.number), decision.to_json())
        ctx.rounds.append(decision)
        return True


def exhausted(ctx: StudyContext) -> bool:
    """Every cell has a final outcome and no refinement round is due."""
    return count_finished(ctx, ctx.trials()) >= total_trials(ctx) and not extend(ctx)


# --------------------------------------------------------------------------- claiming


@dataclass
class Claim:
    trial: optuna.Trial
    config: TrialConfig
    told: bool = False
    val_curve: list[float] = field(default_factory=list)
    reported: set[int] = field(default_factory=set)  # epochs already reported to Optuna


def _fail(ctx: StudyContext, number: int, status: str, **attrs: Any) -> None:
    """Mark a RUNNING trial FAIL with a status saying why.

    Another process may finish the trial first (its owner, late but alive, or another
    worker recovering it as abandoned): a finished trial is left exactly as it was.
    """
    from optuna.exceptions import UpdateFinishedTrialError

    trial_id = ctx.storage.get_trial_id_from_study_id_trial_number(ctx.study_id, number)
    try:
        ctx.storage.set_trial_user_attr(trial_id, R.STATUS, status)
        for key, value in attrs.items():
            ctx.storage.set_trial_user_attr(trial_id, key, value)
    except UpdateFinishedTrialError:
        return
    ctx.study.tell(number, state=_state("FAIL"), skip_if_finished=True)


def _state(name: str) -> Any:
    from optuna.trial import TrialState

    return TrialState[name]


def recover_abandoned(ctx: StudyContext, me: Worker, trials: Sequence[TrialLike]) -> int:
    """Mark RUNNING trials whose worker is gone as FAIL (status "abandoned")."""
    running = [t for t in trials if t.state.name == "RUNNING"]
    if not running:
        return 0
    attrs = ctx.storage.get_study_system_attrs(ctx.study_id)
    workers = {k.removeprefix(WORKER_KEY): v for k, v in attrs.items() if k.startswith(WORKER_KEY)}
    now = time.time()
    n = 0
    for t in running:
        if is_abandoned(t, workers, me, ctx.spec.run.grace_seconds, now):
            _fail(ctx, t.number, "abandoned")
            n += 1
    return n


def _start_trials(ctx: StudyContext, cells: Sequence[space.Cell],
                  dists: dict[str, BaseDistribution], owner: dict[str, Any]) -> list[optuna.Trial]:
    """RUNNING trials for grid cells, with their owner and seed: the trials
    `enqueue_trial` + `ask` make, in one transaction where Optuna's version allows
    (`optuna_compat`): a transaction per trial made claiming 100 cells take seconds."""
    new = [optuna_compat.NewTrial(cell.params(), {k: dists[k] for k in cell.params()},
                                  {**owner, R.SEED_ATTR: cell.seed}) for cell in cells]
    return optuna_compat.start_trials(ctx.study, ctx.storage, ctx.study_id, new)


def _fair_share(ctx: StudyContext, me: Worker, pending: int) -> int:
    """The most cells one claim takes: an equal share of the pending cells per live worker.

    A trainer that takes many trials at once (the population trainer, up to 400) would
    otherwise leave the other workers of a pool nothing to do.
    """
    attrs = ctx.storage.get_study_system_attrs(ctx.study_id)
    now = time.time()
    live = {key for key, record in attrs.items()
            if key.startswith(WORKER_KEY) and isinstance(record, dict)
            and record.get("state") == "running"
            and now - float(record.get("beat", 0.0)) <= ctx.spec.run.grace_seconds}
    live.add(WORKER_KEY + me.id)
    workers = max(len(live), int(os.environ.get(POOL_SIZE_ENV, "1") or 1))
    return max(1, -(-pending // workers))


def claim(ctx: StudyContext, me: Worker, limit: int,
          size: Callable[[Sequence[TrialConfig]], int] | None = None,
          n_train: int | None = None) -> list[Claim]:
    """Take up to `limit` trials to run, under the study's claim lock.

    `size`, given the configs of the trials this claim could take (in the order it takes
    them), says how many to take: the trainer's `claim_size`, which keeps a claim to about
    `run.checkpoint_seconds` of training, since its results are recorded only as it ends.
    `n_train` is the data set's training rows (a budget's epochs depend on them).
    """
    from study.trainers import TrialConfig

    spec = ctx.spec
    dists = space.distributions(spec)
    owner = {WORKER_ATTR: me.id}
    with claim_lock(ctx.url, ctx.name, ctx.storage.engine):
        trials = ctx.trials()
        if recover_abandoned(ctx, me, trials):
            trials = ctx.trials()
        claimed: list[optuna.Trial] = []
        if spec.is_grid:
            pending = pending_cells(ctx, trials)
            if limit > 1:  # a claim of one is everyone's fair share
                limit = min(limit, _fair_share(ctx, me, len(pending)))
            if size is not None and pending:
                # Every pending cell, not only the next `limit`: the trainer weighs the
                # study's whole work (a population trainer's micro-batches).
                limit = max(1, min(limit, size([
                    TrialConfig.of(spec, c.batch_size, c.learning_rate, c.seed)
                    for c in pending])))
            # WAITING trials are left only by a worker killed inside its claim: pop
            # them first (ask() pops the oldest), keeping those whose cell is pending.
            for _ in range(sum(t.state.name == "WAITING" for t in trials)):
                trial = ctx.study.ask(dists)
                cell = space.cell_of(trial.params)
                if cell in pending and len(claimed) < limit:
                    pending.remove(cell)
                    trial.set_user_attr(WORKER_ATTR, me.id)
                    claimed.append(trial)
                else:
                    _fail(ctx, trial.number, "duplicate")
            claimed += _start_trials(ctx, pending[: limit - len(claimed)], dists, owner)
        else:
            finished = count_finished(ctx, trials)
            running = sum(t.state.name in ("RUNNING", "WAITING") for t in trials)
            limit = max(0, min(limit, spec.search.n_trials - finished - running))
            if size is not None and limit:
                rows = spec.data.n_train if n_train is None else n_train  # the data's own
                limit = max(1, min(limit, size([_unsampled(spec, rows)] * limit)))
            for _ in range(limit):
                ctx.study.enqueue_trial({}, user_attrs=owner)
                claimed.append(ctx.study.ask(dists))
    claims = []
    for trial in claimed:
        params = trial.params
        seed = int(params[space.SEED]) if space.SEED in params \
            else space.seed_for_trial(spec, trial.number)
        if trial.user_attrs.get(R.SEED_ATTR) != seed:
            trial.set_user_attr(R.SEED_ATTR, seed)
        config = TrialConfig.of(spec, int(params[space.BATCH_SIZE]),
                                float(params[space.LEARNING_RATE]), seed)
        claims.append(Claim(trial, config))
    return claims


def _unsampled(spec: Spec, n_train: int) -> TrialConfig:
    """What sizes a claim of trials whose batch size the sampler has yet to choose: the
    end of the range whose budget trains the most epochs (the smallest batch size, unless
    a steps budget gives larger ones more epochs)."""
    from study.trainers import TrialConfig

    bs = spec.search.batch_size
    ends = (int(bs.low), int(bs.high)) if isinstance(bs, Range) else (min(bs), max(bs))
    lr = spec.search.learning_rate
    rate = lr.low if isinstance(lr, Range) else min(lr)
    longest = max(ends, key=lambda b: (spec.train.plan(int(b), n_train).epochs, -b))
    return TrialConfig.of(spec, int(longest), float(rate), spec.search.seeds[0])


# --------------------------------------------------------------------------- recording


def shares(results: Sequence[TrialResult], wall: float) -> list[float]:
    """Each trial's share of `wall`, the seconds of the call that trained them all: in
    proportion to the trainer's own measure of each (`TrialResult.seconds`, which weighs
    a longer trial more), equal where it says nothing. The shares add up to `wall`, so
    a study's SECONDS add up to the time its trainers spent, even where a trainer's
    measures overlap (groups trained side by side each count the time they share)."""
    own = [r.seconds if math.isfinite(r.seconds) and r.seconds > 0 else 0.0 for r in results]
    total = sum(own)
    if total <= 0 or len(results) != sum(v > 0 for v in own):
        return [wall / len(results)] * len(results) if results else []
    return [wall * v / total for v in own]


def result_attrs(result: TrialResult, trainer: str, seconds: float | None = None,
                 group: tuple[float, int] | None = None) -> dict[str, Any]:
    """The trial's user attributes. `seconds`: its share of its call's wall time
    (`shares`; default the trainer's own measure); `group`: that call's wall time and
    number of trials (records.GROUP_SECONDS, GROUP_SIZE)."""
    attrs: dict[str, Any] = {
        R.STATUS: result.status,
        R.TRAIN_LOSS: R.finite_or_none(result.train_loss),
        R.VAL_LOSS: R.finite_or_none(result.val_loss),
        R.FULL_TRAIN_LOSS: R.finite_or_none(result.full_train_loss),
        R.STEPS: result.steps,
        R.SECONDS: round(result.seconds if seconds is None else seconds, 4),
        R.TRAIN_CURVE: [R.finite_or_none(v) for v in result.train_curve],
        R.VAL_CURVE: [R.finite_or_none(v) for v in result.val_curve],
        R.TRAINER: trainer,
    }
    if result.train_accuracy_curve or result.val_accuracy_curve:
        attrs[R.TRAIN_ACCURACY] = R.finite_or_none(result.train_accuracy)
        attrs[R.VAL_ACCURACY] = R.finite_or_none(result.val_accuracy)
        attrs[R.TRAIN_ACCURACY_CURVE] = [R.finite_or_none(v) for v in result.train_accuracy_curve]
        attrs[R.VAL_ACCURACY_CURVE] = [R.finite_or_none(v) for v in result.val_accuracy_curve]
    if result.diverged_epoch is not None:
        attrs[R.DIVERGED_EPOCH] = result.diverged_epoch
    if result.step_every > 0:
        attrs[R.STEP_CURVE] = {"every": result.step_every,
                               "loss": [R.finite_or_none(v) for v in result.step_losses]}
    if group is not None:
        attrs[R.GROUP_SECONDS] = round(group[0], 4)
        attrs[R.GROUP_SIZE] = group[1]
    attrs.update({k: R.finite_or_none(v) for k, v in result.extras.items()})
    return attrs


def objective_of(spec: Spec, result: TrialResult) -> float:
    """The trial's value for Optuna: the last point of `objective_curve`."""
    curve = objective_curve(spec, result)
    return curve[-1] if curve else math.nan


def objective_curve(spec: Spec, result: TrialResult) -> list[float]:
    """The objective after each epoch: the training or validation loss, or the
    validation error (1 - validation accuracy)."""
    if spec.train.objective == "val_error":
        return [1.0 - a for a in result.val_accuracy_curve]
    return result.val_curve if spec.train.objective == "val_loss" else result.train_curve


def record(ctx: StudyContext, claims: Sequence[Claim], results: Sequence[TrialResult],
           trainer: str, wall: float | None = None) -> list[str]:
    """Tell Optuna the claims' results, in one transaction where Optuna's version allows
    (`optuna_compat`); returns their final statuses. `wall`: the seconds of the trainer's
    call that trained them (see the module docstring); None: each trial's SECONDS is the
    trainer's own measure, and no group is recorded."""
    outcomes: list[optuna_compat.Outcome] = []
    statuses: list[str] = []
    seconds: Sequence[float | None] = [None] * len(results) if wall is None \
        else shares(results, wall)
    group = None if wall is None else (wall, len(results))
    for c, result, share in zip(claims, results, seconds, strict=True):
        objective = objective_of(ctx.spec, result)
        if result.status == "complete" and not math.isfinite(objective):
            # Training loss stayed finite but the objective (e.g. validation) did not.
            result.status = "diverged"
            result.diverged_epoch = result.diverged_epoch or len(result.train_curve)
        # The learning curve (but the epochs the pruner already heard), every attribute
        # and the outcome: what `trial.report`, `set_user_attr` and `study.tell` write.
        curve = objective_curve(ctx.spec, result)
        reported = {epoch: v for epoch, v in enumerate(curve, start=1)
                    if math.isfinite(v) and epoch not in c.reported}
        state = _state({"complete": "COMPLETE", "pruned": "PRUNED"}.get(result.status, "FAIL"))
        outcomes.append(optuna_compat.Outcome(
            c.trial, reported, result_attrs(result, trainer, share, group), state,
            [objective] if result.status == "complete" else None))
        statuses.append(result.status)
    for i in _tell(ctx, claims, outcomes):
        statuses[i] = TAKEN_OVER
    return statuses


def _tell(ctx: StudyContext, claims: Sequence[Claim],
          outcomes: Sequence[optuna_compat.Outcome]) -> set[int]:
    """Store `outcomes`, but those whose trial another worker finished first; returns
    the indices of those skipped.

    A worker stalled past `run.grace_seconds` (a stopped process, a machine asleep, a
    long swap) has its trials recovered as abandoned by the others, which re-run their
    cells. Its own results for them come too late: those trials are no longer its own.
    The others of its claim still are, and are stored. Optuna refuses a whole write that
    touches a finished trial (`UpdateFinishedTrialError`), so the finished ones are
    found and the write tried again without them.
    """
    from optuna.exceptions import UpdateFinishedTrialError

    skipped: set[int] = set()
    try:
        while True:
            todo = [i for i, o in enumerate(outcomes) if not o.told and i not in skipped]
            try:
                optuna_compat.finish_trials(ctx.study, ctx.storage, [outcomes[i] for i in todo])
                return skipped
            except UpdateFinishedTrialError:
                state = {s.trial_id: s.state for s in ctx.trials()}
                done = {i for i in todo if i not in skipped and not outcomes[i].told
                        and state[optuna_compat.trial_id(claims[i].trial)].is_finished()}
                if not done:
                    raise
                skipped |= done
    finally:
        for i, (c, o) in enumerate(zip(claims, outcomes, strict=True)):
            c.told = o.told or i in skipped


# --------------------------------------------------------------------------- signals


class _Signals:
    """SIGINT/SIGTERM ask for a clean stop; a second signal insists.

    The first signal only sets a flag, which the loop checks at safe points: between
    epochs (through the trainer's monitor), before each claim, after recording. An
    exception raised from a handler at an arbitrary point can land inside a garbage
    collector callback, where Python prints and drops it, or between enqueueing a
    trial and recording its owner. A second signal raises at once, except inside
    `critical()` sections, which check the flag as they end.
    """

    def __init__(self) -> None:
        self._depth = 0
        self.requested: type[KeyboardInterrupt] | None = None
        self._saved: dict[int, Any] = {}

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        exc = Interrupted if signum == signal.SIGTERM else KeyboardInterrupt
        if self.requested is None:
            self.requested = exc
        elif not self._depth:
            raise exc()

    def check(self) -> None:
        if self.requested is not None and not self._depth:
            raise self.requested()

    def __enter__(self) -> _Signals:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                if signal.getsignal(sig) is signal.SIG_IGN:
                    continue  # a pool member leaves Ctrl-C to its parent
                self._saved[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._saved.items():
            signal.signal(sig, handler)

    @contextlib.contextmanager
    def critical(self) -> Iterator[None]:
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
        self.check()


# --------------------------------------------------------------------------- the loop


@dataclass
class RunOutcome:
    trained: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    recovered: int = 0


def work(
    ctx: StudyContext,
    trainer_factory: Callable[[], Trainer],
    data_factory: Callable[[], Dataset],
    progress: Progress | None = None,
    worker: Worker | None = None,
) -> RunOutcome:
    """Claim, train and record until no cell is left to run (or a signal stops us)."""
    me = worker or Worker.current()
    outcome = RunOutcome()
    trainer: Trainer | None = None
    data: Dataset | None = None
    failures = 0
    signals = _Signals()
    started = _process_age()
    if started is not None:
        ctx.seconds["started"] = started
    with signals, Heartbeat(ctx.storage, ctx.study_id, me, ctx.spec.run.heartbeat_seconds,
                            ctx.seconds):
        while True:
            if trainer is None:
                # Peek before paying for TensorFlow: an exhausted study trains nothing.
                if exhausted(ctx):
                    break
                trainer, data = trainer_factory(), data_factory()
            assert data is not None
            claims: list[Claim] = []
            try:
                signals.check()
                size = functools.partial(trainer.claim_size, n_train=data.n_train,
                                         seconds=ctx.spec.run.checkpoint_seconds)
                per_call = feedback_limit(trainer) if learns(ctx.spec) else trainer.batch_limit
                limit = per_call
                if per_call == 1 and not learns(ctx.spec):
                    limit = quick_claim(ctx, outcome.trained)
                with signals.critical(), _timed(ctx, "claims"):
                    claims = claim(ctx, me, limit, size if limit == per_call else None,
                                   data.n_train)
                if not claims:
                    if exhausted(ctx):
                        break
                    if progress is not None:
                        progress.total = total_trials(ctx)  # a refinement round adds cells
                    # Cells are running elsewhere; wait in case their workers die.
                    with _timed(ctx, "idle"):
                        time.sleep(min(ctx.spec.run.heartbeat_seconds, 2.0))
                    continue
                # A claim is trained `per_call` trials at a time, each part recorded as it
                # ends: one part, but for the quick claims of a trainer of one (above).
                for at in range(0, len(claims), per_call):
                    part = claims[at:at + per_call]
                    try:
                        began = time.perf_counter()
                        results = trainer.train([c.config for c in part], data,
                                                _monitor(ctx, part, progress, signals.check,
                                                         data.n_train))
                        wall = time.perf_counter() - began
                        ctx.seconds["training"] = ctx.seconds.get("training", 0.0) + wall
                    except Exception as e:
                        if is_storage_error(e):
                            raise StorageError(describe_error(e, ctx.url)) from e
                        error = f"{type(e).__name__}: {e}".splitlines()[0]
                        _release(ctx, part, "error", error=error)
                        failures += len(part)
                        outcome.statuses["error"] = outcome.statuses.get("error", 0) + len(part)
                        if failures >= ctx.spec.run.max_failures:
                            _release(ctx, claims, "interrupted")  # the claim's others
                            raise TooManyFailures(
                                f"stopped after {failures} failed trials in a row; last "
                                f"error: {error}"
                            ) from e
                        continue
                    failures = 0
                    with signals.critical(), _timed(ctx, "records"):
                        statuses = record(ctx, part, results, trainer.name, wall)
                    for status in statuses:
                        outcome.trained += status != TAKEN_OVER
                        outcome.statuses[status] = outcome.statuses.get(status, 0) + 1
                    if progress is not None:
                        # A line per trial as its part is told: the small claims of a study
                        # that learns (`learns`) finish one after another, so their lines
                        # come as they finish; a grid's big claim (the population trainer's,
                        # up to `run.checkpoint_seconds` of training) prints all its lines
                        # when it ends, with one ETA after them; until then a terminal's bar
                        # shows the epoch in hand (`_monitor`).
                        progress.finish([_describe(ctx.spec, c.config, status, r)
                                         for c, r, status in zip(part, results, statuses,
                                                                 strict=True)])
            except KeyboardInterrupt:
                _release(ctx, claims, "interrupted")
                raise
    return outcome


@contextlib.contextmanager
def _timed(ctx: StudyContext, what: str) -> Iterator[None]:
    """Add the block's wall time to `ctx.seconds[what]`, and for claims and records to
    `ctx.storage_seconds` (storage work: reads, one transaction, the claim lock's wait,
    and the little Python that shapes them)."""
    start = time.perf_counter()
    try:
        yield
    finally:
        spent = time.perf_counter() - start
        ctx.seconds[what] = ctx.seconds.get(what, 0.0) + spent
        if what in ("claims", "records"):
            ctx.storage_seconds += spent


def _process_age() -> float | None:
    """Seconds since this process started (its interpreter's start, imports, opening the
    study and data come before the first claim); None off Linux."""
    fields = _proc_stat(os.getpid())
    boottime = getattr(time, "CLOCK_BOOTTIME", None)
    if fields is None or len(fields) <= 19 or boottime is None:
        return None
    # /proc's start time counts clock ticks since boot, as CLOCK_BOOTTIME counts seconds.
    return time.clock_gettime(boottime) - int(fields[19]) / os.sysconf("SC_CLK_TCK")


def _describe(spec: Spec, config: TrialConfig, status: str, r: TrialResult) -> str:
    """A finished trial's progress note: its cell, its outcome and its objective under
    the objective's own name (`val_loss=0.1234`), where it stopped if pruned."""
    what = f"bs={config.batch_size} lr={config.learning_rate:g} seed={config.seed}"
    if status == TAKEN_OVER:
        return f"{what}: taken over by another worker while this one stalled; result dropped"
    if status == "diverged":
        return f"{what}: diverged at epoch {r.diverged_epoch}"
    objective = spec.train.objective
    curve = objective_curve(spec, r)
    text = f"{what}: {status} {objective}={curve[-1] if curve else math.nan:.4g}"
    if status == "pruned":
        text += f" at epoch {len(curve)}"
    if r.val_accuracy_curve and objective != "val_error":
        text += f" val_accuracy={r.val_accuracy:.4g}"
    return text


# A claim of trials that each take well under this long gathers about this much of them.
QUICK_CLAIM_SECONDS = 1.0


def quick_claim(ctx: StudyContext, trained: int) -> int:
    """How many trials a grid's claim takes for a trainer of one trial per call (a
    function of your own, the keras trainer): one, unless this worker's trials so far
    took a quarter of `QUICK_CLAIM_SECONDS` or less each. Then about that many seconds
    of them, trained and recorded one by one: a claim costs a turn of the claim lock, a
    few dozen milliseconds when 64 workers queue for it, as long as a cheap trial.
    `claim` holds it to the worker's fair share of the pending cells, so none is left
    waiting on another's queue at the end."""
    spent = ctx.seconds.get("training", 0.0)
    if trained <= 0 or spent <= 0 or spent / trained > QUICK_CLAIM_SECONDS / 4:
        return 1  # a trial of a second pays little for its claim, and holds no other cell
    return max(1, min(100, int(QUICK_CLAIM_SECONDS * trained / spent)))


def learns(spec: Spec) -> bool:
    """Whether the study's sampler or pruner decides from the trials it was told: every
    sampler but grid (TPE learns; random and QMC ask for their next point as results
    come, keeping claims, durations and progress per trial), and any pruner."""
    return not spec.is_grid or spec.search.pruner != "none"


def feedback_limit(trainer: Trainer) -> int:
    """The most trials one claim takes in a study that `learns`: the trainer's own
    `feedback_limit` where it has one, else a trial per core, within its `batch_limit`
    (the keras trainer takes one trial at a time anyway; the population trainer trains
    a claim this small in one round of its tiles, in about the time of one trial): the
    sampler asks for a claim's trials knowing every result but those of trials still
    running (TPE's constant liar stands in for those)."""
    limit = trainer.batch_limit
    own = getattr(trainer, "feedback_limit", None)
    if isinstance(own, int) and not isinstance(own, bool) and own > 0:
        return max(1, min(limit, own))
    return max(1, min(limit, _cores()))


def _cores() -> int:
    """Cores this process may use, as the trainers count them (STUDY_THREADS overrides)."""
    if os.environ.get("STUDY_THREADS"):
        return max(1, int(os.environ["STUDY_THREADS"]))
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _release(ctx: StudyContext, claims: Sequence[Claim], status: str, **attrs: Any) -> None:
    """Mark claimed trials that were not told as FAIL, so none is left RUNNING."""
    signal_mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM}) \
        if threading.current_thread() is threading.main_thread() else None
    try:
        for c in claims:
            if not c.told:
                _fail(ctx, c.trial.number, status, **attrs)
                c.told = True
    finally:
        if signal_mask is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, signal_mask)


def _monitor(ctx: StudyContext, claims: Sequence[Claim], progress: Progress | None,
             check_stop: Callable[[], None], n_train: int
             ) -> Callable[[int, int, float, float, float], bool]:
    from optuna.exceptions import UpdateFinishedTrialError

    prune = ctx.spec.search.pruner != "none"
    # Under a steps budget each batch size trains its own number of epochs.
    epochs = [c.config.plan(n_train).epochs for c in claims]
    objective = ctx.spec.train.objective

    def monitor(index: int, epoch: int, train_loss: float, val_loss: float,
                val_accuracy: float) -> bool:
        check_stop()  # a requested stop takes effect between epochs
        c = claims[index]
        if progress is not None:
            cfg = c.config
            progress.detail(f"bs={cfg.batch_size} lr={cfg.learning_rate:g} seed={cfg.seed} "
                            f"epoch {epoch}/{epochs[index]}")
        if not prune:
            # Nothing reads the curve before the trial ends: `record` writes it whole.
            return False
        value = {"train_loss": train_loss, "val_loss": val_loss,
                 "val_error": 1.0 - val_accuracy}[objective]
        try:
            if math.isfinite(value):
                c.trial.report(value, epoch)
                c.reported.add(epoch)
            return c.trial.should_prune()
        except UpdateFinishedTrialError:
            # Recovered by another worker while this one stalled (see `_tell`): it is
            # no longer ours to train; its result will be dropped.
            return True

    return monitor
