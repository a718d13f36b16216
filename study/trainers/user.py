"""Your own trainer: a function `fn(config, data) -> mapping` that trains one trial.

Named in a spec as `run.trainer = "module:function"`, or handed to
`study.run(trainer=fn)`. `config` is the trial's `study.TrialConfig` (read-only: batch
size, learning rate, seed, the spec's model, train and analysis sections; the budget is
`config.plan(data.n_train)`), `data` the `study.Dataset`. It returns a mapping:

    required  train_loss, val_loss            numbers (train_loss: the last epoch's mean
                                              training loss, as Keras reports it)
    optional  train_curve, val_curve          one number per epoch; the last is the loss
              val_accuracy or val_error       a number (val_error = 1 - val_accuracy);
                                              required when train.objective = "val_error"
              train_accuracy                  a number
              train_accuracy_curve,           one number per epoch
              val_accuracy_curve
              step_every, step_losses         the mean training loss of every k optimizer
                                              steps (both or neither; see TrialResult)
              initial_loss                    the loss of the initial weights on the
                                              training set: the scale of a blow-up
              full_train_loss                 the loss on the whole training set after
              steps                           optimizer updates taken (default: the plan's)
              seconds                         the trial's own time (default: measured)
              anything else                   a user attribute, `user.<key>`: a
                                              number is stored on the trial; a string
                                              or other JSON value is checked and kept
                                              in `UserResult.attrs`, which the runner
                                              does not write yet

A class (or an object) with `train(configs, data) -> list of mappings` takes many
trials at once, in the order given, for a trainer that fuses them as our population
trainer does; a class is made once per process with no arguments, and its optional
`batch_limit` (default 64) caps the trials per call.

How the study reads what comes back (`to_result`):

- A curve shorter than the plan's epochs is a trial that stopped early; one longer is
  an error. Without curves the losses stand at the trial's last epoch, the epochs
  before unknown (stored as null).
- Divergence follows our rule (base.py, `diverges`): the first epoch of `train_curve`
  (else `train_loss`, at the last epoch) that is NaN, inf, or above
  `train.divergence_factor` times `initial_loss`. Without `initial_loss` there is no
  scale, so only NaN and inf diverge. A NaN is a result, never an error.
- The pruner (`search.pruner`) judges the curve after the call, epoch by epoch, as it
  would have judged ours live: a trial it stops is recorded as pruned at that epoch
  (your function is not stopped, so no time is saved).
- Anything else wrong (not a mapping, a missing key, a string where a number goes, a
  curve that does not end in its loss) is a `TrainerError`: one line naming the
  trainer, the trial (batch size, learning rate, seed) and the key. The runner records
  it as that trial's error, as for any exception a trainer raises (the trials of one
  call of a class together), and stops after `run.max_failures` in a row; the
  study stays resumable, and the next run trains those trials again.

Its identity is its `module:qualname` and the sha256 of its source (`identify`), stored
with the spec (`run.trainer_identity`); resuming with another function, or with a
changed one, is refused (spec.py, `trainer_diff`). Nothing here imports TensorFlow.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import inspect
import json
import marshal
import math
import textwrap
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from study.errors import SpecError, StudyError, UsageError
from study.trainers.base import (
    Monitor,
    Status,
    TrialConfig,
    TrialResult,
    divergence_limit,
    diverges,
    no_monitor,
)
from study.user_code import cwd_on_path, first_line, import_root, load_function

if TYPE_CHECKING:
    from study.data import Dataset
    from study.spec import Spec

BUILTIN = ("auto", "keras", "population")
# A class's trials per call when it says nothing (`batch_limit`).
DEFAULT_BATCH_LIMIT = 64
# What the user attributes a trainer returns beyond ours are stored under.
USER_PREFIX = "user."
REQUIRED = ("train_loss", "val_loss")
KNOWN = (*REQUIRED, "train_curve", "val_curve", "val_accuracy", "val_error",
         "train_accuracy", "train_accuracy_curve", "val_accuracy_curve", "step_every",
         "step_losses", "initial_loss", "full_train_loss", "steps", "seconds")


class TrainerError(StudyError):
    """A trainer of your own returned what the study cannot record; one line naming the
    trainer, the trial and the key."""


def is_own(name: str) -> bool:
    """Whether `run.trainer` names a trainer of your own ("module:function")."""
    return name not in BUILTIN and ":" in name


@dataclass(frozen=True)
class Own:
    """A trainer of your own, loaded: the function, or the class or object with `train`."""

    ref: str  # "module:qualname", what run.trainer stores
    target: Any
    fused: bool  # the class form: train(configs, data)
    import_root: str | None = None  # see models.Builder.import_root; "" : found by name


# Trainers handed to `study.run(trainer=...)` in this process, by ref; looked up before
# importing, so a function no other process can import still trains here.
_REGISTERED: dict[str, Own] = {}


def register(target: object) -> Own:
    """Keep `target` (a function, or a class or object with `train`) in this process
    under its `module:qualname`; `UsageError` when it is neither."""
    module = str(getattr(target, "__module__", None) or "__main__")
    qualname = getattr(target, "__qualname__", None)
    if qualname is None:  # an object: named by its class
        qualname = type(target).__qualname__
    ref = f"{module}:{qualname}"
    own = _check(ref, target, "trainer", UsageError)
    own = replace(own, import_root=import_root(target, module, str(qualname)))
    _REGISTERED[ref] = own
    return own


def load(ref: str) -> Own:
    """The trainer `ref` names: registered in this process, else imported; `SpecError`
    one line when it does not import or is not a trainer."""
    registered = _REGISTERED.get(ref)
    if registered is not None:
        return registered
    module, _, qualname = ref.partition(":")
    if module.strip() == "__main__" or "<" in qualname:
        raise SpecError(f"run.trainer: {ref!r} was a function of the script or notebook that "
                        "called study.run, which only that process can run; elsewhere use "
                        "run.trainer = 'module:function' in an importable module")
    return _check(ref, load_function(ref, "run.trainer", SpecError), "run.trainer", SpecError)


def _check(ref: str, target: Any, where: str, error: type[UsageError]) -> Own:
    named = f"{where}: {ref!r}"
    train = getattr(target, "train", None)
    if isinstance(target, type) or (callable(train) and not inspect.isroutine(target)):
        if not callable(train):
            raise error(f"{named} is a class without a train(configs, data) method")
        return Own(ref, target, True, "")
    if not callable(target):
        raise error(f"{where}: expected a function (config, data) -> mapping, a class with "
                    f"train(configs, data), or a 'module:function' string, got "
                    f"{type(target).__name__}")
    try:
        inspect.signature(target).bind(None, None)
    except TypeError:
        raise error(f"{named} takes {_signature(target)}; expected fn(config, data)") from None
    except ValueError:
        pass  # no signature to read (a builtin): the call will tell
    return Own(ref, target, False, "")


def _signature(fn: Any) -> str:
    try:
        return str(inspect.signature(fn))
    except (TypeError, ValueError):
        return "(?)"


def importable(ref: str) -> str | None:
    """The sys.path entry worker processes import the trainer `ref` from: None when they
    cannot (a function of `__main__` or a notebook), "" when found as this process
    found it (a string ref: on the path or in the current directory)."""
    registered = _REGISTERED.get(ref)
    return "" if registered is None else registered.import_root


def check_workers(ref: str, workers: int) -> None:
    """Refuse, before anything is written, a pool of workers for a trainer they cannot
    import: they train in processes of their own."""
    if workers > 1 and is_own(ref) and importable(ref) is None:
        raise UsageError(f"trainer: {ref!r} is defined in the script or notebook that called "
                         "study.run, which worker processes cannot import; define it in an "
                         "importable module, or use workers=1")


# --------------------------------------------------------------------------- identity


def identify(target: Any) -> str:
    """`module:qualname sha256:HEX`: the hash of the function's (or the class's) source
    as Python parses it, so a comment or a reformat keeps the identity and any change to
    the code does not; without source (a function made by exec), of its code object.
    Only its own source: a helper it calls may change unseen."""
    obj = target if inspect.isroutine(target) or isinstance(target, type) else type(target)
    try:
        source = textwrap.dedent(inspect.getsource(obj))
    except (OSError, TypeError):
        code = getattr(obj, "__code__", None)
        text = marshal.dumps(code) if code is not None else repr(obj).encode()
    else:
        try:
            text = ast.dump(ast.parse(source)).encode()
        except SyntaxError:  # a lambda's line, cut from an expression
            text = source.encode()
    return "sha256:" + hashlib.sha256(text).hexdigest()


def with_identity(spec: Spec) -> Spec:
    """The spec with `run.trainer_identity` set: `ref sha256:...` for a trainer of your
    own (loaded, so one that does not import or is no trainer is one `SpecError` line),
    empty for ours."""
    name = spec.run.trainer
    identity = ""
    if is_own(name):
        own = load(name)
        identity = f"{own.ref} {identify(own.target)}"
    if identity == spec.run.trainer_identity:
        return spec
    return replace(spec, run=replace(spec.run, trainer_identity=identity))


# --------------------------------------------------------------------------- the trainer


class UserTrainer:
    """The `Trainer` seam (base.py) around a trainer of your own."""

    def __init__(self, own: Own) -> None:
        self.own = own
        self.name = own.ref
        self._target = own.target
        if own.fused and isinstance(own.target, type):
            try:
                with cwd_on_path():
                    self._target = own.target()
            except (Exception, SystemExit) as e:
                raise TrainerError(f"run.trainer {own.ref!r}: making it raised "
                                   f"{type(e).__name__}: {first_line(e)}") from e
        limit = getattr(self._target, "batch_limit", DEFAULT_BATCH_LIMIT) if own.fused else 1
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise TrainerError(f"run.trainer {own.ref!r}: batch_limit must be a positive "
                               f"integer, got {limit!r}")
        # One trial per call for a function: a failed call loses only its own trial.
        self.batch_limit = limit

    def claim_size(self, pending: Sequence[TrialConfig], n_train: int, seconds: float) -> int:
        own = getattr(self._target, "claim_size", None) if self.own.fused else None
        size = own(pending, n_train, seconds) if callable(own) else len(pending)
        return max(1, min(int(size), self.batch_limit)) if pending else 0

    def train(self, configs: Sequence[TrialConfig], data: Dataset,
              monitor: Monitor = no_monitor) -> list[TrialResult]:
        if not self.own.fused:
            results = []
            for i, config in enumerate(configs):
                began = time.perf_counter()
                out = self._call(functools.partial(self._target, config, data), config)
                results.append(self.result(i, config, data, out,
                                           time.perf_counter() - began, monitor))
            return results
        began = time.perf_counter()
        outs = self._call(lambda: self._target.train(list(configs), data), None)
        share = (time.perf_counter() - began) / max(1, len(configs))
        if not isinstance(outs, Sequence) or isinstance(outs, str | bytes | Mapping):
            raise TrainerError(f"run.trainer {self.name!r}: train(configs, data) returned a "
                               f"{type(outs).__name__}; expected a list of mappings, one per "
                               "config")
        if len(outs) != len(configs):
            raise TrainerError(f"run.trainer {self.name!r}: train(configs, data) returned "
                               f"{len(outs)} results for {len(configs)} configs")
        return [self.result(i, c, data, out, share, monitor)
                for i, (c, out) in enumerate(zip(configs, outs, strict=True))]

    def _call(self, call: Callable[[], Any], config: TrialConfig | None) -> Any:
        try:
            with cwd_on_path():
                return call()
        except Exception as e:
            trial = f", trial {_trial(config)}" if config is not None else ""
            raise TrainerError(f"run.trainer {self.name!r}{trial} raised "
                               f"{type(e).__name__}: {first_line(e)}") from e

    def result(self, index: int, config: TrialConfig, data: Dataset, out: object,
               seconds: float, monitor: Monitor = no_monitor) -> TrialResult:
        return to_result(self.name, config, data, out, seconds, monitor, index)


@dataclass
class UserResult(TrialResult):
    """A result of a trainer of your own: also every user attribute it returned,
    namespaced (`user.<key>`) and JSON-able; the numeric ones are in `extras` too."""

    attrs: dict[str, Any] = field(default_factory=dict)


def _trial(config: TrialConfig) -> str:
    return f"bs={config.batch_size} lr={config.learning_rate:g} seed={config.seed}"


def to_result(ref: str, config: TrialConfig, data: Dataset, out: object, seconds: float,
              monitor: Monitor = no_monitor, index: int = 0) -> UserResult:
    """What a trainer of your own returned for `config`, as a `TrialResult`, read as the
    module docstring says; `TrainerError` (one line) for what cannot be read."""

    def bad(problem: str) -> TrainerError:
        return TrainerError(f"run.trainer {ref!r}, trial {_trial(config)}: {problem}")

    if not isinstance(out, Mapping):
        raise bad(f"returned a {type(out).__name__}; expected a mapping like "
                  "{'train_loss': ..., 'val_loss': ...}")
    for key in out:
        if not isinstance(key, str):
            raise bad(f"key {key!r} is a {type(key).__name__}; keys are strings")
    for key in REQUIRED:
        if key not in out:
            raise bad(f"its result has no {key!r} (required: {', '.join(REQUIRED)})")

    def number(key: str) -> float:
        return _number(out[key], key, bad)

    def curve(key: str) -> list[float] | None:
        if key not in out or out[key] is None:
            return None
        value = out[key]
        if isinstance(value, str | bytes | Mapping) or not hasattr(value, "__iter__"):
            raise bad(f"{key!r} is a {type(value).__name__}; expected a list of numbers")
        return [_number(v, f"{key}[{i}]", bad) for i, v in enumerate(value)]

    plan = config.plan(data.n_train)
    train_loss, val_loss = number("train_loss"), number("val_loss")
    train_curve, val_curve = curve("train_curve"), curve("val_curve")
    train_curve_given = train_curve is not None
    for key, c in (("train_curve", train_curve), ("val_curve", val_curve)):
        if c is not None and not c:
            raise bad(f"{key!r} is empty; give one value per epoch, or leave it out")
        if c is not None and len(c) > plan.epochs:
            raise bad(f"{key!r} has {len(c)} values, but the trial's budget plans "
                      f"{plan.epochs} epochs (config.plan(data.n_train).epochs)")
    if train_curve is not None and val_curve is not None and len(train_curve) != len(val_curve):
        raise bad(f"'train_curve' has {len(train_curve)} values and 'val_curve' "
                  f"{len(val_curve)}; one each per epoch")
    epochs = len(train_curve or val_curve or []) or plan.epochs
    train_curve = _ends_in(train_curve, train_loss, "train_curve", "train_loss", epochs, bad)
    val_curve = _ends_in(val_curve, val_loss, "val_curve", "val_loss", epochs, bad)

    accuracy = _accuracy(out, bad)
    if accuracy is None and config.train.objective == "val_error" and "val_accuracy_curve" \
            not in out:
        raise bad("its result has no 'val_accuracy' (or 'val_error'): train.objective = "
                  "'val_error' needs it")
    val_acc = curve("val_accuracy_curve")
    if val_acc is not None or accuracy is not None:
        if accuracy is None:
            accuracy = val_acc[-1] if val_acc else math.nan
        val_acc = _ends_in(val_acc, accuracy, "val_accuracy_curve", "val_accuracy", epochs, bad)
    train_acc = curve("train_accuracy_curve")
    if train_acc is not None or "train_accuracy" in out:
        last = number("train_accuracy") if "train_accuracy" in out else \
            (train_acc[-1] if train_acc else math.nan)
        train_acc = _ends_in(train_acc, last, "train_accuracy_curve", "train_accuracy",
                             epochs, bad)

    every, step_losses = 0, []
    if ("step_every" in out) != ("step_losses" in out):
        raise bad("'step_every' and 'step_losses' come together (the mean loss of every "
                  "step_every steps)")
    if "step_every" in out:
        every = out["step_every"]
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise bad(f"'step_every' is {every!r}; expected a positive integer")
        step_losses = curve("step_losses") or []

    steps = plan.steps_after(epochs)
    if "steps" in out:
        steps = out["steps"]
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            raise bad(f"'steps' is {steps!r}; expected a non-negative integer")
    if "seconds" in out:
        seconds = number("seconds")
    initial = number("initial_loss") if "initial_loss" in out else math.nan
    full = number("full_train_loss") if "full_train_loss" in out else math.nan

    attrs: dict[str, Any] = {}
    extras: dict[str, float] = {}
    for key, value in out.items():
        if key in KNOWN:
            continue
        name = USER_PREFIX + key
        if isinstance(value, int | float) and not isinstance(value, bool):
            extras[name] = float(value)
        elif hasattr(value, "item") and getattr(value, "ndim", None) == 0:
            value = value.item()  # a numpy or framework scalar
            if isinstance(value, int | float) and not isinstance(value, bool):
                extras[name] = float(value)
        try:
            json.dumps(value, allow_nan=True)
        except (TypeError, ValueError):
            raise bad(f"{key!r} is a {type(value).__name__}; anything beyond our keys is "
                      "stored as a user attribute: a number, a string or JSON-able") from None
        attrs[name] = value

    # Our divergence rule, on the epochs the trainer reported (a padded one is unknown),
    # then the pruner's verdicts, epoch by epoch, as the keras trainer's callback asks.
    known = len(train_curve) - (len(out["train_curve"]) if train_curve_given else 1)
    replay = train_curve_given or "val_curve" in out
    limit = divergence_limit(config.train, initial) if math.isfinite(initial) else math.inf
    status: Status = "complete"
    diverged: int | None = None
    stop = len(train_curve)
    for epoch, loss in enumerate(train_curve, start=1):
        if epoch > known and diverges(loss, limit):
            status, diverged, stop = "diverged", epoch, epoch
            break
        acc = val_acc[epoch - 1] if val_acc else math.nan
        if replay and monitor(index, epoch, loss, val_curve[epoch - 1], acc):
            status, stop = "pruned", epoch
            break
    if stop < len(train_curve):
        train_curve, val_curve = train_curve[:stop], val_curve[:stop]
        val_acc = val_acc[:stop] if val_acc else val_acc
        train_acc = train_acc[:stop] if train_acc else train_acc
        if "steps" not in out:
            steps = plan.steps_after(stop)
        if step_losses:
            step_losses = step_losses[:steps // every]
    if status == "diverged":
        full = math.nan
    return UserResult(
        status=status, train_curve=train_curve, val_curve=val_curve, full_train_loss=full,
        steps=steps, seconds=seconds, diverged_epoch=diverged, extras=extras,
        train_accuracy_curve=train_acc or [], val_accuracy_curve=val_acc or [],
        step_every=every, step_losses=step_losses, attrs=attrs)


def _number(value: object, key: str, bad: Callable[[str], TrainerError]) -> float:
    """A number as float: Python's, numpy's, or a framework's 0-d tensor (`float()`)."""
    if isinstance(value, bool | str | bytes) or value is None \
            or not hasattr(type(value), "__float__"):
        shown = f" ({value!r})" if isinstance(value, str | bool) or value is None else ""
        raise bad(f"{key!r} is a {type(value).__name__}{shown}; expected a number")
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise bad(f"{key!r} is a {type(value).__name__} that is not one number") from None


def _accuracy(out: Mapping[str, Any], bad: Callable[[str], TrainerError]) -> float | None:
    acc = _number(out["val_accuracy"], "val_accuracy", bad) if "val_accuracy" in out else None
    err = _number(out["val_error"], "val_error", bad) if "val_error" in out else None
    if acc is not None and err is not None and not math.isclose(acc, 1.0 - err, abs_tol=1e-6):
        raise bad(f"'val_accuracy' {acc:g} and 'val_error' {err:g} disagree (val_error = "
                  "1 - val_accuracy); give one")
    value = acc if acc is not None else None if err is None else 1.0 - err
    if value is not None and math.isfinite(value) and not 0.0 <= value <= 1.0:
        raise bad(f"'val_accuracy' is {value:g}; expected a share in [0, 1]")
    return value


def _ends_in(curve: list[float] | None, last: float, key: str, scalar: str, epochs: int,
             bad: Callable[[str], TrainerError]) -> list[float]:
    """`curve`, checked to end in `last`; without one, `epochs` values whose last is
    `last` and the others unknown (NaN)."""
    if curve is None:
        return [math.nan] * (epochs - 1) + [last]
    end = curve[-1]
    same = (math.isnan(end) and math.isnan(last)) or end == last or (
        math.isfinite(end) and math.isfinite(last) and math.isclose(end, last, rel_tol=1e-6))
    if not same:
        raise bad(f"{scalar!r} is {last:g}, but {key!r} ends in {end:g}; its last value is "
                  f"the {scalar}")
    if len(curve) < epochs:  # a shorter curve than its partner: the epochs before unknown
        return [math.nan] * (epochs - len(curve)) + curve
    return curve


def user_trainer(spec: Spec) -> UserTrainer:
    """The trainer `spec.run.trainer` names, checked against the identity stored with the
    study (a worker that imports a changed function refuses to train)."""
    own = load(spec.run.trainer)
    stored = spec.run.trainer_identity
    if stored and stored != f"{own.ref} {identify(own.target)}":
        raise SpecError(f"run.trainer: {own.ref!r} changed since the study ran it (its code "
                        "hashes differently); pass --study-name NAME to start a new study")
    return UserTrainer(own)
