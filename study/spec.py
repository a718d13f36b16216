"""The experiment spec: one frozen dataclass tree, loaded from TOML and validated here.

Precedence is CLI > spec file > defaults. The defaults *are* the article's experiment
(see `specs/article.toml`), so a user's file only states what it changes; the few that
depend on the data (`train.loss`, `train.objective`, "auto") follow its task (`resolve`),
and the study's default name its source (`default_study_name`). Every check lives in
`validate`, and every error names the field and the value at fault.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import tomllib
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Union

from study.errors import SpecError

SAMPLERS = ("grid", "tpe", "random", "qmc")
PRUNERS = ("none", "median", "hyperband")
TRAINERS = ("auto", "keras", "population")
DATA_KINDS = ("linear", "classification", "npz", "csv", "python", "diabetes", "digits", "arrays")
# Arrays handed to `study.run(data=...)` in Python: a stored spec can say so, but only that
# process (and the workers it starts) has them (see data.py).
IN_MEMORY_KINDS = ("arrays",)
# Kinds generated from `data.n_train`, `n_val`, `n_features` and `val_seed`; the
# others bring their own rows (see data.py).
SYNTHETIC_KINDS = ("linear", "classification")
TASKS = ("regression", "binary", "multiclass")
ACTIVATIONS = ("relu", "tanh", "sigmoid", "gelu", "linear")
# Keras 3's optimizers with their defaults; "momentum" is keras.optimizers.SGD with
# `train.momentum` (and `train.nesterov`).
OPTIMIZERS = ("adam", "sgd", "momentum", "rmsprop")
# mse: regression, one output per target column. cross_entropy: binary classification,
# one output (a logit), 0/1 labels. sparse_cross_entropy: multi-class classification, one
# output (a logit) per class, integer labels 0..k-1 (softmax cross-entropy, as
# keras.losses.SparseCategoricalCrossentropy(from_logits=True)).
LOSSES = ("mse", "cross_entropy", "sparse_cross_entropy")
CLASSIFICATION_LOSSES = ("cross_entropy", "sparse_cross_entropy")
# The loss each task's targets call for: real values, 0/1 labels, or class indices.
TASK_LOSS = {"regression": "mse", "binary": "cross_entropy", "multiclass": "sparse_cross_entropy"}
# The task of each data set whose task the spec alone tells (see `kind_task`).
KIND_TASK = {"linear": "regression", "classification": "binary", "diabetes": "regression",
             "digits": "multiclass"}
# val_error: 1 - the validation accuracy after training, for classification losses only.
OBJECTIVES = ("train_loss", "val_loss", "val_error")
# train.loss and train.objective left unset: chosen once the data's task is known
# (`resolve`): the loss the task calls for (TASK_LOSS); the article's training loss on
# the synthetic sets, else the validation loss (regression) or error (classification).
AUTO = "auto"
BUDGETS = ("epochs", "steps", "examples")
SCHEDULES = ("constant", "step", "cosine", "warmup")
KEEP_WEIGHTS = ("none", "best")
# train.divergence_factor's default (see TrainSpec and the README, "Divergence").
DIVERGENCE_FACTOR = 1000.0


@dataclass(frozen=True)
class Range:
    """A continuous search range for samplers other than grid (always log-scaled)."""

    low: float
    high: float


@dataclass(frozen=True)
class DataSpec:
    """The data set (see data.py); `linear` is the article's: y = X.w + U[0,1) noise.

    `classification` is a binary set (see data.py): 0/1 labels, cross-entropy loss; with
    `n_classes` above 2, a multi-class set (labels 0..n_classes-1, sparse_cross_entropy).
    `npz` and `csv` read the file at `path`; `python` calls `loader`; `diabetes` and
    `digits` are scikit-learn's bundled sets; `arrays` are arrays handed to
    `study.run(data=...)` (set by `study.run`, not by a spec file).
    """

    kind: str = "linear"
    # Synthetic sets only (SYNTHETIC_KINDS): their sizes.
    n_train: int = 1000
    n_val: int = 1000
    n_features: int = 10
    seed: int = 0  # the article's np.random.seed(0): X, then w, then the noise
    val_seed: int = 1  # held-out set: same w, fresh X and noise from this seed
    n_classes: int = 2  # classes of the `classification` set (2: the binary XOR set)
    path: str = ""  # npz, csv: the file, relative to the current directory
    target: tuple[str, ...] = ()  # csv: the target column(s); a name is a list of one
    features: tuple[str, ...] = ()  # csv: the input columns (default: every other one)
    loader: str = ""  # python: "module:function", returning the arrays (data.py)
    # regression | binary | multiclass; "" : decided from the data (data.py, _task_of).
    task: str = ""
    # A source with no validation set holds out this share of its rows, drawn with
    # `seed` (per class for a classification target).
    val_fraction: float = 0.0
    # Inputs scaled to zero mean, unit variance per feature, by the training rows'
    # statistics (applied to both sets).
    standardize: bool = False


@dataclass(frozen=True)
class ModelSpec:
    """The model: the MLP shorthand, or a user's builder.

    The shorthand is Dense(h, activation) for each h in `hidden` (each followed by
    Dropout(`dropout`) when it is above zero), then Dense(outputs); `hidden = []` is a
    linear model, Dense(outputs) alone (linear or logistic regression).

    `builder = "module:function"` names a function `(input_shape, outputs) ->
    keras.Model` (uncompiled) instead; `hidden`, `activation` and `dropout` then do not
    apply. See `study.models`. The runner stores what the builder builds (its Keras
    config and initial weights, `models.identify`) beside it as `model.builder_identity`
    (`BUILDER_SHA256`), so a study never silently mixes two models.
    """

    hidden: tuple[int, ...] = (64, 32)
    activation: str = "relu"
    dropout: float = 0.0
    builder: str = ""


@dataclass(frozen=True)
class Plan:
    """How one trial's budget unrolls into epochs (see `TrainSpec.plan`)."""

    epochs: int  # epochs started; only the last may be partial
    last_rows: int  # rows of the last epoch's shuffled order trained (n_train: a whole epoch)
    steps_per_epoch: int  # optimizer updates in a whole epoch: ceil(n_train / batch_size)
    steps: int  # optimizer updates in all
    examples: int  # training rows seen in all

    def steps_after(self, epochs_done: int) -> int:
        """Optimizer updates taken by the end of epoch `epochs_done` (a stopped trial's)."""
        if epochs_done >= self.epochs:
            return self.steps
        return epochs_done * self.steps_per_epoch


@dataclass(frozen=True)
class TrainSpec:
    optimizer: str = "adam"
    # "auto": the task's (TASK_LOSS; see `resolve`). A named loss must fit the task.
    loss: str = AUTO
    # How long each trial trains: whole epochs (the article's), a number of optimizer
    # updates, or a number of training rows seen. See `plan`.
    budget: str = "epochs"
    epochs: int = 50  # with budget = "epochs"
    steps: int = 0  # with budget = "steps"
    examples: int = 0  # with budget = "examples"
    # Only for optimizer = "momentum": keras.optimizers.SGD(momentum=..., nesterov=...).
    momentum: float = 0.9
    nesterov: bool = False
    # The learning rate per optimizer step; `learning_rate` is its peak. Lengths are
    # fractions of the trial's own updates (plan().steps), so a schedule means the same
    # thing at every batch size.
    schedule: str = "constant"
    warmup_fraction: float = 0.0  # schedule "warmup" (then constant) or "cosine" (then decay)
    decay_at: tuple[float, ...] = (0.5, 0.75)  # schedule "step": after these fractions...
    decay_rate: float = 0.1  # ...the learning rate is multiplied by this
    # What a trial minimizes (OBJECTIVES). "train_loss", the article's metric: the last
    # epoch's mean training loss (history['loss'][-1]); with a steps or examples budget
    # the last epoch may be partial, and its mean is over the rows it trained. "auto":
    # train_loss on the synthetic sets (SYNTHETIC_KINDS), else val_loss for regression
    # and val_error for classification (see `resolve`).
    objective: str = AUTO
    # A trial diverges at the first epoch whose mean training loss is NaN, inf, or above
    # this factor times the loss of its initial weights on the training set (before any
    # update); 0 turns the factor off (NaN and inf still diverge). A blow-up that stays
    # finite (1e20) is not a result. The default sits far between the built-in specs'
    # largest finite epoch loss and their blow-ups: see the README, "Divergence".
    divergence_factor: float = DIVERGENCE_FACTOR
    # "best": the best cell's trained weights are kept, one set per seed (Optuna's
    # artifact store; `Results.model`). "none": no weights are kept.
    keep_weights: str = "none"

    def plan(self, batch_size: int, n_train: int) -> Plan:
        """The epochs a trial of this batch size trains for, on `n_train` rows.

        Every epoch draws a fresh order of the training rows and trains them in batches
        of `batch_size`, the last batch partial. A budget that ends inside an epoch
        trains only that epoch's first rows: for `steps`, its first batches (the budget
        is met exactly); for `examples`, its first rows, the last batch cut short (so
        exactly `examples` rows are seen). An examples budget is thus the epoch budget
        measured in rows: every batch size sees the same data, and a larger one takes
        fewer steps. A steps budget gives every batch size the same number of updates,
        and a larger one sees more data: the two separate the effect of fewer updates
        from that of larger batches.
        """
        per_epoch = -(-n_train // batch_size)
        if self.budget == "steps":
            epochs = -(-self.steps // per_epoch)
            last_steps = self.steps - (epochs - 1) * per_epoch
            last_rows = min(n_train, last_steps * batch_size)
        elif self.budget == "examples":
            epochs = -(-self.examples // n_train)
            last_rows = self.examples - (epochs - 1) * n_train
        else:
            epochs, last_rows = self.epochs, n_train
        steps = (epochs - 1) * per_epoch + -(-last_rows // batch_size)
        return Plan(epochs, last_rows, per_epoch, steps, (epochs - 1) * n_train + last_rows)


# analysis.curve_every = 0 records about this many points of each trial's loss curve.
CURVE_POINTS = 100
# analysis.target = "auto": this fraction above the loss every batch size reached.
AUTO_TARGET_MARGIN = 0.1


@dataclass(frozen=True)
class AnalysisSpec:
    """Measurements taken during or after training, beyond the losses; all opt-in.

    The gradient noise scale (McCandlish et al. 2018): after each epoch in
    `noise_epochs` (0: before training), `noise_repeats` minibatch gradients at each of
    the two `noise_batches` sizes, at the trial's current weights. The sharpness (Keskar
    et al. 2017; Cohen et al. 2021): the top Hessian eigenvalue of the training loss
    after training, by `sharpness_iterations` Lanczos steps.
    """

    noise_epochs: tuple[int, ...] = ()
    noise_batches: tuple[int, ...] = (16, 256)  # B_small, B_big
    noise_repeats: int = 16
    sharpness: bool = False
    sharpness_iterations: int = 20
    # The plateau of good learning rates per batch size: those whose expected objective
    # is within this fraction of the best (0.01: within 1%). See `study.shapes`.
    tolerance: float = 0.01
    # The training loss is recorded every `curve_every` optimizer steps (the mean of the
    # batch losses since the last record); 0: about CURVE_POINTS records per trial.
    curve_every: int = 0
    # Steps to reach these training losses give the critical batch size; () ("auto"): a
    # margin (AUTO_TARGET_MARGIN) above the loss every batch size reached (the highest of
    # the batch sizes' lowest seed-mean curves; see `critical.best_loss`).
    target: tuple[float, ...] = ()

    def every(self, steps: int) -> int:
        """The recording interval of a trial of `steps` optimizer updates."""
        return self.curve_every or max(1, steps // CURVE_POINTS)

    @property
    def noise(self) -> bool:
        return bool(self.noise_epochs)


@dataclass(frozen=True)
class SearchSpec:
    """What the study explores. Lists are grid values; a table {low, high} is a range."""

    sampler: str = "grid"
    batch_size: tuple[int, ...] | Range = (16, 32, 64, 128, 256)
    learning_rate: tuple[float, ...] | Range = (0.1, 0.01, 0.001, 0.0001)
    seeds: tuple[int, ...] = (0,)
    # Only for samplers other than grid: how many trials to run in all.
    n_trials: int = 0
    sampler_seed: int = 0
    pruner: str = "none"
    # Refinement (grid only; study/refine.py): after the grid, rounds of new learning
    # rates per batch size, across its plateau and lr*'s interval, each with every seed.
    # The trial budget of all rounds together; 0: no refinement. It may change on resume.
    refine_trials: int = 0
    refine_points: int = 4  # new learning rates per batch size per round, at most
    # Stop once the chosen shape's main parameter is this well known: the power law's
    # alpha, its 95% interval narrower than `refine_width` (high - low); B_noise (the
    # saturating and surge shapes), its interval's ratio high / low below `refine_ratio`.
    refine_width: float = 0.1
    refine_ratio: float = 1.5


@dataclass(frozen=True)
class RunSpec:
    """How trials are executed; not part of what a study *is*, so it may change on resume."""

    # One of TRAINERS, or "module:function": a trainer of your own (trainers/user.py).
    trainer: str = "auto"
    # Set by `study`, never by a spec file: a trainer of your own's `module:qualname` and
    # the sha256 of its source (user.py, `identify`), stored with the spec so that a study
    # is never resumed with another or a changed one (`trainer_diff`); empty for ours.
    trainer_identity: str = ""
    # A RUNNING trial whose worker has not beaten for `grace_seconds` is abandoned.
    heartbeat_seconds: float = 5.0
    grace_seconds: float = 30.0
    # Stop the study after this many trials in a row raise an error.
    max_failures: int = 3
    # Trials are claimed, trained and recorded in portions that each take about this
    # long (measured on the portions before), so a kill loses at most about this much
    # training; smaller costs more claims and recordings.
    checkpoint_seconds: float = 30.0


@dataclass(frozen=True)
class Spec:
    name: str = "article"
    description: str = ""
    data: DataSpec = field(default_factory=DataSpec)
    model: ModelSpec = field(default_factory=ModelSpec)
    train: TrainSpec = field(default_factory=TrainSpec)
    search: SearchSpec = field(default_factory=SearchSpec)
    analysis: AnalysisSpec = field(default_factory=AnalysisSpec)
    run: RunSpec = field(default_factory=RunSpec)

    @property
    def is_grid(self) -> bool:
        return self.search.sampler == "grid"


# Sections that change what a study measures (or records: `analysis`); `run`
# (execution) and `description` do not, so a resumed study may differ in those.
IDENTITY_SECTIONS = ("data", "model", "train", "search", "analysis")


# --------------------------------------------------------------------------- loading


def builtin_names() -> list[str]:
    return sorted(
        p.name.removesuffix(".toml")
        for p in resources.files("study.specs").iterdir()
        if p.name.endswith(".toml")
    )


def read_spec_source(name_or_path: str) -> dict[str, Any]:
    """The raw TOML table of a built-in spec name or a spec file path; a file that
    states no `name` is named by its stem (`default_study_name`)."""
    text: str
    origin: str
    if name_or_path in builtin_names():
        text = resources.files("study.specs").joinpath(f"{name_or_path}.toml").read_text()
        origin = f"built-in spec {name_or_path!r}"
    else:
        path = Path(name_or_path)
        if not (path.suffix == ".toml" or path.exists()):
            known = ", ".join(builtin_names())
            raise SpecError(f"spec: unknown spec {name_or_path!r} (built-in: {known}; or a .toml path)")
        if not path.is_file():
            raise SpecError(f"spec: file not found: {name_or_path}")
        text = path.read_text(encoding="utf-8")
        origin = str(path)
    try:
        table = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise SpecError(f"spec: {origin} is not valid TOML: {e}") from None
    if "name" not in table and Path(name_or_path).stem:
        table["name"] = Path(name_or_path).stem
    return table


def parse_override(item: str) -> tuple[list[str], Any]:
    """`section.key=value` -> (["section", "key"], value); the value is read as TOML."""
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise SpecError(f"--set: expected SECTION.KEY=VALUE, got {item!r}")
    raw = raw.strip()
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        # Bare words are strings: `--set train.optimizer=adam` needs no quotes.
        value = raw
    return key.split("."), value


def apply_overrides(table: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """A copy of `table` with each `--set` applied; unknown keys fail in `from_table`."""
    out: dict[str, Any] = {k: dict(v) if isinstance(v, dict) else v for k, v in table.items()}
    for item in overrides:
        path, value = parse_override(item)
        _assign(out, path, value, "--set")
    return out


def apply_values(table: Mapping[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of `table` with each `"section.key": value` of `values` set: the Python
    API's overrides, whose values are Python values (a tuple is a list), not TOML text.
    Unknown keys and wrong types fail in `from_table`, naming the field, as for `--set`."""
    out: dict[str, Any] = {k: dict(v) if isinstance(v, Mapping) else v for k, v in table.items()}
    for key, value in values.items():
        if not isinstance(key, str) or not key.strip() or any(
                not part.strip() for part in key.split(".")):
            raise SpecError(f"overrides: expected keys like 'train.epochs', got {key!r}")
        _assign(out, [part.strip() for part in key.split(".")], _plain_value(value),
                "overrides")
    return out


def _plain_value(value: Any) -> Any:
    """Tuples as lists, mappings as dicts: the shapes a TOML table holds."""
    if isinstance(value, tuple | list):
        return [_plain_value(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain_value(v) for k, v in value.items()}
    return value


def _assign(out: dict[str, Any], path: list[str], value: Any, where: str) -> None:
    node = out
    for part in path[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        elif not isinstance(child, dict):
            raise SpecError(f"{where}: {'.'.join(path)}: {part!r} is not a section")
        node = child
    node[path[-1]] = value


def load_spec(
    name_or_path: str = "article",
    overrides: Sequence[str] = (),
) -> Spec:
    """Load, override and validate: the one entry point from the outside world."""
    table = apply_overrides(read_spec_source(name_or_path), overrides)
    spec = from_table(table)
    validate(spec)
    return spec


def from_table(table: Mapping[str, Any]) -> Spec:
    """The spec a table describes, its defaults that the spec alone decides resolved:
    `train.loss` and `train.objective` left "auto" are filled (`resolve`) when the data's
    task follows from the spec (`known_task`), and stay "auto" until the data are loaded
    otherwise (data.py, `check_spec`). Every unknown key is reported at once."""
    _check_keys(table)
    spec = _build(Spec, table, "")
    assert isinstance(spec, Spec)
    task = known_task(spec.data)
    return _fill(spec, task) if task is not None else spec


def _check_keys(table: Mapping[str, Any]) -> None:
    """One SpecError naming every key of `table` that no field has, each with the closest
    known key ("did you mean train.epochs?") where one is close: within its section, else
    among every dotted key (a key in the wrong section, or a misspelt section)."""
    if not isinstance(table, Mapping):
        return  # `_build` says what it should be
    hints = typing.get_type_hints(Spec)
    sections: dict[str, list[str]] = {}
    top: list[str] = []  # the keys outside any section: name, description
    for f in dataclasses.fields(Spec):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp) and isinstance(tp, type):
            sections[f.name] = [g.name for g in dataclasses.fields(tp)]
        else:
            top.append(f.name)
    dotted = top + [f"{name}.{key}" for name, keys in sections.items() for key in keys]

    def closest(word: str, candidates: Sequence[str]) -> str | None:
        match = difflib.get_close_matches(word, candidates, n=1, cutoff=0.6)
        return match[0] if match else None

    unknown: list[tuple[str, str | None]] = []  # (dotted key, the closest known key)
    for key, value in table.items():
        key = str(key)
        if key in sections and isinstance(value, Mapping):
            for sub in map(str, value):
                if sub not in sections[key]:
                    # A key of another section (train.seeds -> search.seeds) first.
                    elsewhere = [f"{name}.{sub}" for name, keys in sections.items()
                                 if sub in keys]
                    near = closest(sub, sections[key])
                    unknown.append((f"{key}.{sub}", elsewhere[0] if elsewhere
                                    else f"{key}.{near}" if near else None))
        elif key not in sections and key not in top:
            section = closest(key, list(sections))
            if section is not None and isinstance(value, Mapping) and value:
                # A misspelt section: each of its keys, as a key of that section, else
                # against every dotted key.
                unknown += [(f"{key}.{sub}", f"{section}.{sub}" if sub in sections[section]
                             else closest(f"{key}.{sub}", dotted)) for sub in map(str, value)]
            else:
                unknown.append((key, closest(key, [*top, *sections]) or closest(key, dotted)))
    if len(unknown) > 1:
        raise SpecError("unknown keys: " + ", ".join(
            f"{where} (did you mean {near}?)" if near else where for where, near in unknown))
    if unknown:
        where, near = unknown[0]
        section = where.partition(".")[0]
        known = sections.get(section, [*top, *sections]) if "." in where else [*top, *sections]
        hint = f"did you mean {near}?" if near else f"known: {', '.join(sorted(known))}"
        raise SpecError(f"{where}: unknown key ({hint})")


def from_stored(table: object) -> Spec | None:
    """The spec `study run` stored on a study (its `spec` user attribute) as a `Spec`;
    None when the study has none (it was not made by `study run`).

    Every reader of a stored spec goes through here. A spec stored by an earlier version
    lacks the fields added since: they take their defaults, which is what that version
    ran with. A key this version does not know (a field since removed) is dropped, so
    an old study can still be read; a value of the wrong type is an error naming it.
    The data's fingerprint (`FINGERPRINT`) and the builder's source hash
    (`BUILDER_SHA256`), which the runner stores beside the spec's fields, are dropped
    too: they are compared by `identity_diff`, never set by a spec.
    """
    if not isinstance(table, Mapping):
        return None
    known = {f.name: f for f in dataclasses.fields(Spec)}
    hints = typing.get_type_hints(Spec)
    kept: dict[str, Any] = {}
    for key, value in table.items():
        if key not in known:
            continue
        tp = hints[key]
        if dataclasses.is_dataclass(tp) and isinstance(tp, type) and isinstance(value, Mapping):
            names = {f.name for f in dataclasses.fields(tp)}
            value = {k: v for k, v in value.items() if k in names}
        kept[key] = value
    try:
        return from_table(kept)
    except SpecError as e:
        raise SpecError(f"stored spec: {e}") from None


def _build(cls: type, table: Mapping[str, Any], prefix: str) -> object:
    if not isinstance(table, Mapping):
        raise SpecError(f"{prefix.rstrip('.') or 'spec'}: expected a table, got {table!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in table:
        if key not in names:  # `_check_keys` names them all first; this is a backstop
            where = f"{prefix}{key}"
            raise SpecError(f"{where}: unknown key (known: {', '.join(sorted(names))})")
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name in table:
            kwargs[f.name] = _convert(hints[f.name], table[f.name], f"{prefix}{f.name}")
    return cls(**kwargs)


def _convert(tp: Any, value: Any, where: str) -> Any:
    if dataclasses.is_dataclass(tp) and isinstance(tp, type) and tp is not Range:
        return _build(tp, value, where + ".")
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        # Our only union: a tuple of grid values or a Range.
        if isinstance(value, Mapping):
            return _convert(Range, value, where)
        seq_type = next(a for a in typing.get_args(tp) if typing.get_origin(a) is tuple)
        return _convert(seq_type, value, where)
    if tp is Range:
        if not isinstance(value, Mapping) or set(value) != {"low", "high"}:
            raise SpecError(f"{where}: expected a list of values or {{low = ..., high = ...}}")
        return Range(_scalar(float, value["low"], f"{where}.low"),
                      _scalar(float, value["high"], f"{where}.high"))
    if origin is tuple:
        (item_type, _ellipsis) = typing.get_args(tp)
        if item_type is str and isinstance(value, str):
            return (value,)  # `target = "y"` is the list of one column
        if item_type is float and value == "auto":
            return ()  # analysis.target = "auto": no list, the default
        if item_type is float and isinstance(value, int | float) and not isinstance(value, bool):
            return (float(value),)  # `target = 0.05` is the list of one
        if not isinstance(value, list):
            raise SpecError(f"{where}: expected a list, got {value!r}")
        return tuple(_scalar(item_type, v, f"{where}[{i}]") for i, v in enumerate(value))
    return _scalar(tp, value, where)


def _scalar(tp: Any, value: Any, where: str) -> Any:
    # bool is an int in Python; a spec that says `epochs = true` is a mistake.
    if tp is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if tp is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if tp is str and isinstance(value, str):
        return value
    if tp is bool and isinstance(value, bool):
        return value
    kind = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}[tp]
    raise SpecError(f"{where}: expected {kind}, got {value!r}")


def to_table(spec: Spec) -> dict[str, Any]:
    """The spec as plain JSON/TOML-able data (tuples become lists)."""

    def plain(x: Any) -> Any:
        if dataclasses.is_dataclass(x) and not isinstance(x, type):
            return {f.name: plain(getattr(x, f.name)) for f in dataclasses.fields(x)}
        if isinstance(x, tuple | list):
            return [plain(v) for v in x]
        return x

    table = plain(spec)
    assert isinstance(table, dict)
    return table


def to_toml(spec: Spec) -> str:
    """The spec as a TOML spec file: `from_table(tomllib.loads(to_toml(s))) == s` for any
    spec `from_table` gives (its defaults that the spec alone decides resolved).

    Top-level keys first, then one [section] per sub-table; a table inside a section (a
    search range) is written inline. No dependency: the values of a spec are strings,
    integers, floats, booleans, lists and tables, each written below.
    """
    def line(key: str, value: Any) -> str:
        # TOML has no null: an unset field is a comment, and reading it back gives the
        # field's default.
        if value is None:
            return f"# {key}: not set"
        return f"{_toml_key(key)} = {_toml_value(value)}"

    table = to_table(spec)
    lines = [line(k, v) for k, v in table.items() if not isinstance(v, dict)]
    for section, body in table.items():
        if isinstance(body, dict):
            lines += ["", f"[{_toml_key(section)}]", *(line(k, v) for k, v in body.items())]
    return "\n".join(lines) + "\n"


_TOML_ESCAPES = {"\\": "\\\\", '"': '\\"', "\b": "\\b", "\t": "\\t", "\n": "\\n",
                 "\f": "\\f", "\r": "\\r"}


def _toml_string(text: str) -> str:
    # A TOML basic string: backslash, quote and control characters escaped (DEL too);
    # anything else, non-ASCII included, is written as it is (TOML is UTF-8).
    out = []
    for ch in text:
        if ch in _TOML_ESCAPES:
            out.append(_TOML_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04X}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _toml_key(key: str) -> str:
    bare = key and all(c.isascii() and (c.isalnum() or c in "-_") for c in key)
    return key if bare else _toml_string(key)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):  # before int: a bool is an int in Python
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        # repr is the shortest text that reads back to the same float, and each of its
        # forms (1.0, 1e-05, 1e+20, inf, -inf, nan) is a TOML float; a whole number
        # keeps its ".0", so it reads back as a float, not an integer.
        return repr(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        if not value:
            return "{}"
        return "{ " + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}"
                                for k, v in value.items()) + " }"
    raise TypeError(f"no TOML form for {value!r} ({type(value).__name__})")


# --------------------------------------------------------------------------- validation


def validate(spec: Spec) -> None:
    """Every rule in one place; raises SpecError naming the first field at fault."""
    _validate_data(spec.data)

    # hidden = [] is a linear model.
    for i, width in enumerate(spec.model.hidden):
        _positive(f"model.hidden[{i}]", width)
    _one_of("model.activation", spec.model.activation, ACTIVATIONS)
    if not 0.0 <= spec.model.dropout < 1.0:
        raise SpecError(f"model.dropout: expected a rate in [0, 1), got {spec.model.dropout!r}")
    if spec.model.builder:
        module, sep, function = spec.model.builder.partition(":")
        if not sep or not module.strip() or not function.strip():
            raise SpecError(f"model.builder: expected 'module:function', "
                            f"got {spec.model.builder!r}")

    _validate_train(spec)

    a = spec.analysis
    for i, epoch in enumerate(a.noise_epochs):
        _non_negative(f"analysis.noise_epochs[{i}]", epoch)
    _unique("analysis.noise_epochs", a.noise_epochs)
    if len(a.noise_batches) != 2:
        raise SpecError(f"analysis.noise_batches: expected two batch sizes [small, big], "
                        f"got {list(a.noise_batches)}")
    _positive("analysis.noise_batches[0]", a.noise_batches[0])
    if a.noise_batches[1] <= a.noise_batches[0]:
        raise SpecError(f"analysis.noise_batches: the second size must exceed the first, "
                        f"got {list(a.noise_batches)}")
    _positive("analysis.noise_repeats", a.noise_repeats)
    _positive("analysis.sharpness_iterations", a.sharpness_iterations)
    if not 0.0 < a.tolerance < 1.0:
        raise SpecError(f"analysis.tolerance: expected a fraction in (0, 1), got {a.tolerance!r}")
    _non_negative("analysis.curve_every", a.curve_every)
    for i, t in enumerate(a.target):
        _positive(f"analysis.target[{i}]", t)
    _unique("analysis.target", a.target)

    s = spec.search
    _one_of("search.sampler", s.sampler, SAMPLERS)
    _one_of("search.pruner", s.pruner, PRUNERS)
    _non_negative("search.sampler_seed", s.sampler_seed)
    if not s.seeds:
        raise SpecError("search.seeds: expected at least one seed, got []")
    for i, seed in enumerate(s.seeds):
        _non_negative(f"search.seeds[{i}]", seed)
    _unique("search.seeds", s.seeds)
    for name in ("batch_size", "learning_rate"):
        axis = getattr(s, name)
        where = f"search.{name}"
        if isinstance(axis, Range):
            if spec.is_grid:
                raise SpecError(f"{where}: the grid sampler needs a list of values, got a range")
            _positive(f"{where}.low", axis.low)
            _positive(f"{where}.high", axis.high)
            if axis.low > axis.high:
                raise SpecError(f"{where}: low {axis.low:g} is above high {axis.high:g}")
        else:
            if not axis:
                raise SpecError(f"{where}: the grid is empty (expected at least one value)")
            for i, v in enumerate(axis):
                _positive(f"{where}[{i}]", v)
            _unique(where, axis)
    bs = s.batch_size
    if spec.data.kind in SYNTHETIC_KINDS:
        # Other sets are checked against their rows once loaded (`check_rows`).
        check_rows(spec, spec.data.n_train, f"data.n_train = {spec.data.n_train}")
    if isinstance(bs, Range) and bs.low != int(bs.low):
        raise SpecError(f"search.batch_size.low: expected an integer, got {bs.low:g}")
    if isinstance(bs, Range) and bs.high != int(bs.high):
        raise SpecError(f"search.batch_size.high: expected an integer, got {bs.high:g}")
    if s.pruner != "none" and spec.train.budget != "epochs":
        raise SpecError(f"search.pruner: {s.pruner!r} compares trials epoch by epoch and needs "
                        f"train.budget = 'epochs', got {spec.train.budget!r}")
    _non_negative("search.refine_trials", s.refine_trials)
    _positive("search.refine_points", s.refine_points)
    _positive("search.refine_width", s.refine_width)
    if not s.refine_ratio > 1.0:
        raise SpecError(f"search.refine_ratio: expected a ratio above 1, got {s.refine_ratio!r}")
    if s.refine_trials and not spec.is_grid:
        raise SpecError(f"search.refine_trials: refinement adds learning rates to a grid; the "
                        f"{s.sampler} sampler places its own (set it to 0)")
    if spec.is_grid:
        if s.n_trials:
            raise SpecError(
                f"search.n_trials: {s.n_trials} is only for samplers other than grid "
                "(a grid runs every cell)"
            )
    elif s.n_trials <= 0:
        raise SpecError(
            f"search.n_trials: the {s.sampler} sampler needs a positive trial count, "
            f"got {s.n_trials}"
        )

    _validate_trainer(spec)
    _positive("run.heartbeat_seconds", spec.run.heartbeat_seconds)
    if spec.run.grace_seconds <= spec.run.heartbeat_seconds:
        raise SpecError(
            f"run.grace_seconds: {spec.run.grace_seconds:g} must exceed "
            f"run.heartbeat_seconds ({spec.run.heartbeat_seconds:g})"
        )
    _positive("run.max_failures", spec.run.max_failures)
    _positive("run.checkpoint_seconds", spec.run.checkpoint_seconds)
    if not spec.name.strip():
        raise SpecError("name: expected a non-empty study name")


def _validate_trainer(spec: Spec) -> None:
    """run.trainer: ours by name, or "module:function", a trainer of your own (loaded
    and identified with the data, api.for_data), which hands back no Keras weights."""
    name = spec.run.trainer
    if name in TRAINERS:
        return
    module, sep, function = name.partition(":")
    if not sep:
        raise SpecError(f"run.trainer: unknown value {name!r} (expected one of: "
                        f"{', '.join(TRAINERS)}, or 'module:function' naming a trainer of "
                        "your own)")
    if not module.strip() or not function.strip():
        raise SpecError(f"run.trainer: expected 'module:function', got {name!r}")
    if spec.train.keep_weights != "none":
        raise SpecError(f"train.keep_weights: {spec.train.keep_weights!r} keeps a Keras "
                        f"model's weights, which run.trainer = {name!r} (a trainer of your "
                        "own) does not hand back; set train.keep_weights = 'none'")


def _validate_data(d: DataSpec) -> None:
    _one_of("data.kind", d.kind, DATA_KINDS)
    _non_negative("data.seed", d.seed)
    if d.kind in SYNTHETIC_KINDS:
        _positive("data.n_train", d.n_train)
        _positive("data.n_val", d.n_val)
        _positive("data.n_features", d.n_features)
        _non_negative("data.val_seed", d.val_seed)
    else:
        # The sizes of a set that brings its own rows are its own.
        defaults = DataSpec()
        for name in ("n_train", "n_val", "n_features", "val_seed"):
            if getattr(d, name) != getattr(defaults, name):
                raise SpecError(f"data.{name}: only for the synthetic sets "
                                f"({', '.join(SYNTHETIC_KINDS)}); data.kind = {d.kind!r} brings "
                                "its own rows")
    if d.kind == "classification" and d.n_features < 2:
        raise SpecError(f"data.n_features: the classification set needs at least 2 features, "
                        f"got {d.n_features}")
    if d.kind == "classification" and d.n_classes < 2:
        raise SpecError(f"data.n_classes: expected at least 2 classes, got {d.n_classes}")
    if d.kind != "classification" and d.n_classes != 2:
        raise SpecError(f"data.n_classes: {d.n_classes} is only for data.kind = "
                        f"'classification' (the kind is {d.kind!r})")
    needs = {"npz": ("path",), "csv": ("path", "target"), "python": ("loader",)}.get(d.kind, ())
    for name in ("path", "target", "features", "loader"):
        value = getattr(d, name)
        if name in needs and not value:
            what = {"path": "the path of the file", "target": "the target column (a name or a "
                    "list)", "loader": "'module:function'"}[name]
            raise SpecError(f"data.{name}: data.kind = {d.kind!r} needs {what}")
        if value and name not in needs and not (name == "features" and d.kind == "csv"):
            raise SpecError(f"data.{name}: {value!r} is not used by data.kind = {d.kind!r}")
    parts = d.loader.split(":")
    if d.loader and (len(parts) != 2 or not all(p.strip() for p in parts)):
        raise SpecError(f"data.loader: expected 'module:function', got {d.loader!r}")
    _unique("data.target", d.target)
    _unique("data.features", d.features)
    if d.task:
        _one_of("data.task", d.task, TASKS)
        known = kind_task(d)
        if known is not None and d.task != known:
            raise SpecError(f"data.task: {d.task!r} does not fit data.kind = {d.kind!r}, whose "
                            f"task is {known!r}")
    if not 0.0 <= d.val_fraction < 1.0:
        raise SpecError(f"data.val_fraction: expected a fraction in [0, 1), got {d.val_fraction!r}")
    if d.val_fraction and d.kind in SYNTHETIC_KINDS:
        raise SpecError(f"data.val_fraction: data.kind = {d.kind!r} draws its own validation set "
                        "(data.n_val, data.val_seed)")


def check_rows(spec: Spec, n_train: int, source: str) -> None:
    """The checks that need the training set's row count: every batch size fits in it,
    and the noise scale is measured at epochs that are trained. `source` says where the
    count comes from, in the message."""
    s, a = spec.search, spec.analysis
    bs = s.batch_size
    biggest = bs.high if isinstance(bs, Range) else max(bs, default=0)
    if biggest > n_train:
        raise SpecError(
            f"search.batch_size: {biggest:g} is larger than the training set ({source})"
        )
    if spec.train.budget != "steps" and a.noise_epochs:
        # Under a steps budget the epoch count depends on the batch size; a trial skips
        # the epochs it does not reach.
        last = spec.train.plan(1, n_train).epochs
        if max(a.noise_epochs) > last:
            raise SpecError(f"analysis.noise_epochs: epoch {max(a.noise_epochs)} is after the "
                            f"last one ({last})")


def check_task(spec: Spec, task: str, data: str) -> None:
    """A loss the spec names fits the data's task (`data` names the data set in the
    message); "auto" fits any (`resolve` fills it)."""
    wanted = TASK_LOSS[task]
    if spec.train.loss not in (AUTO, wanted):
        raise SpecError(f"train.loss: {spec.train.loss!r} does not fit {data} "
                        f"(use {wanted!r}, or leave train.loss out to follow the data)")


def resolve(spec: Spec, task: str) -> Spec:
    """`spec` with the defaults that depend on the data filled for data of `task`
    ("regression", "binary" or "multiclass"), then checked against it.

    `train.loss` "auto" becomes the task's (`TASK_LOSS`: mse, cross_entropy,
    sparse_cross_entropy); `train.objective` "auto" becomes the article's `train_loss`
    on its synthetic sets (`SYNTHETIC_KINDS`), else what a user's data is judged by:
    `val_loss` for regression, `val_error` (1 - validation accuracy) for
    classification. Values the spec names are kept; a named loss that does not fit
    the task is a SpecError. Resolved values are what a study stores and compares on
    resume (studies stored before "auto" hold their values explicitly).
    """
    _one_of("data.task", task, TASKS)
    check_task(spec, task, f"data.kind = {spec.data.kind!r}")
    out = _fill(spec, task)
    _check_objective(out.train)
    return out


def _fill(spec: Spec, task: str) -> Spec:
    """`resolve` without its checks (`from_table` leaves those to `validate`)."""
    t = spec.train
    loss = TASK_LOSS[task] if t.loss == AUTO else t.loss
    objective = t.objective
    if objective == AUTO:
        objective = ("train_loss" if spec.data.kind in SYNTHETIC_KINDS
                     else "val_loss" if task == "regression" else "val_error")
    if (loss, objective) == (t.loss, t.objective):
        return spec
    return dataclasses.replace(spec, train=dataclasses.replace(t, loss=loss, objective=objective))


def known_task(data: DataSpec) -> str | None:
    """The data's task when the spec tells it (`data.task`, else `kind_task`); None:
    decided from the data once loaded (data.py, _task_of)."""
    task = data.task or kind_task(data)
    return task if task in TASKS else None


def default_study_name(spec: Spec) -> str:
    """The study name when none is given: the spec's name, else the data source's.

    A spec file's `name`, or its file's stem when it names none (`read_spec_source`),
    is the study's name; so is a built-in spec's, but only on that spec's own kind of
    data: `--spec article --set data.kind=csv` is not the article. Otherwise the data
    source names it: a csv or npz file's stem ("houses" for data/houses.csv), a loader's
    function name ("load" for "mymod:load"), "arrays" for arrays passed as
    `study.run(data=...)`, the kind for a bundled or synthetic set ("digits",
    "classification"), and "article" for the article's linear set.
    """
    if spec.name.strip() and (spec.name not in builtin_names()
                              or _builtin_kind(spec.name) == spec.data.kind):
        return spec.name
    d = spec.data
    if d.kind in ("csv", "npz") and Path(d.path).stem:
        return Path(d.path).stem
    if d.kind == "python" and d.loader.partition(":")[2].strip():
        return d.loader.partition(":")[2].strip()
    return "article" if d.kind == "linear" else d.kind


def _builtin_kind(name: str) -> str:
    data = read_spec_source(name).get("data", {})
    kind = data.get("kind", DataSpec.kind) if isinstance(data, Mapping) else DataSpec.kind
    return str(kind)


def _check_objective(t: TrainSpec) -> None:
    if t.objective == "val_error" and t.loss not in (AUTO, *CLASSIFICATION_LOSSES):
        raise SpecError(f"train.objective: 'val_error' (1 - validation accuracy) needs a "
                        f"classification loss ({' or '.join(map(repr, CLASSIFICATION_LOSSES))}), "
                        f"got train.loss = {t.loss!r}")


def _validate_train(spec: Spec) -> None:
    t = spec.train
    _one_of("train.optimizer", t.optimizer, OPTIMIZERS)
    _one_of("train.loss", t.loss, (AUTO, *LOSSES))
    task = known_task(spec.data)
    if task is not None:
        check_task(spec, task, f"data.kind = {spec.data.kind!r}")
    _one_of("train.budget", t.budget, BUDGETS)
    _positive("train.epochs", t.epochs)
    for name in ("steps", "examples"):
        value = getattr(t, name)
        if t.budget == name:
            _positive(f"train.{name}", value)
        elif value:
            raise SpecError(f"train.{name}: {value} is only for train.budget = {name!r} "
                            f"(the budget is {t.budget!r})")
    if not 0.0 <= t.momentum < 1.0:
        raise SpecError(f"train.momentum: expected a number in [0, 1), got {t.momentum!r}")
    _one_of("train.schedule", t.schedule, SCHEDULES)
    _one_of("train.keep_weights", t.keep_weights, KEEP_WEIGHTS)
    if not 0.0 <= t.warmup_fraction < 1.0:
        raise SpecError(f"train.warmup_fraction: expected a fraction in [0, 1), "
                        f"got {t.warmup_fraction!r}")
    if t.schedule == "warmup" and t.warmup_fraction == 0.0:
        raise SpecError("train.warmup_fraction: the warmup schedule needs a positive fraction, "
                        "got 0.0")
    if t.schedule in ("constant", "step") and t.warmup_fraction:
        raise SpecError(f"train.warmup_fraction: {t.warmup_fraction!r} is only for the warmup "
                        f"and cosine schedules (the schedule is {t.schedule!r})")
    for i, f in enumerate(t.decay_at):
        if not 0.0 < f < 1.0:
            raise SpecError(f"train.decay_at[{i}]: expected a fraction in (0, 1), got {f!r}")
    if list(t.decay_at) != sorted(set(t.decay_at)):
        raise SpecError(f"train.decay_at: expected increasing fractions, got {list(t.decay_at)}")
    if t.schedule == "step" and not t.decay_at:
        raise SpecError("train.decay_at: the step schedule needs at least one fraction, got []")
    _positive("train.decay_rate", t.decay_rate)
    _one_of("train.objective", t.objective, (AUTO, *OBJECTIVES))
    _check_objective(t)
    f = t.divergence_factor
    # A factor of 1 or less would call a trial whose loss merely rose above its starting
    # point a blow-up; infinity is "off", which 0 already says.
    if f != 0.0 and not (f > 1.0 and math.isfinite(f)):
        raise SpecError(f"train.divergence_factor: expected 0 (off) or a finite factor above 1, "
                        f"got {f!r}")


def kind_task(data: DataSpec) -> str | None:
    """The task of a data set the spec alone tells (None: decided from the data, data.py):
    the synthetic classification set is multi-class with `n_classes` above 2."""
    if data.kind == "classification" and data.n_classes > 2:
        return "multiclass"
    return KIND_TASK.get(data.kind)


def _one_of(where: str, value: str, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise SpecError(f"{where}: unknown value {value!r} (expected one of: {', '.join(allowed)})")


def _positive(where: str, value: float) -> None:
    if not (value > 0) or not math.isfinite(value):
        raise SpecError(f"{where}: expected a positive number, got {value!r}")


def _non_negative(where: str, value: int) -> None:
    if value < 0:
        raise SpecError(f"{where}: expected a non-negative integer, got {value!r}")


def _unique(where: str, values: Sequence[float | str]) -> None:
    seen: set[float | str] = set()
    for v in values:
        if v in seen:
            raise SpecError(f"{where}: value {v!r} is listed twice")
        seen.add(v)


def identity_diff(stored: Mapping[str, Any], current: Mapping[str, Any]) -> str | None:
    """The first field (dotted) where two spec tables differ in what a study measures.

    `search.seeds` may grow on resume (more repeats of the same cells) and
    `search.refine_trials` change (how many more refinement rounds may come), so they
    are not compared (`RESUMABLE_KEYS`), nor are the keys that only say how trials are read (`READING_KEYS`);
    anything else that differs would mix incomparable trials in one study. A
    field missing from a table (a study stored before the field existed) has its default
    value, which is what that study ran with; `train.divergence_factor` is the one
    exception (before it, only NaN and inf diverged), read as its default all the same
    so that such studies resume, their finished trials kept as they were.
    """
    defaults = to_table(Spec())
    for section in IDENTITY_SECTIONS:
        base = defaults.get(section, {})
        a = {**base, **stored.get(section, {})}
        b = {**base, **current.get(section, {})}
        for key in sorted(set(a) | set(b)):
            if ((section, key) in RESUMABLE_KEYS or (section, key) in STORED_HASHES
                    or (section, key) in READING_KEYS):
                continue
            if a.get(key) != b.get(key):
                return f"{section}.{key}: study has {a.get(key)!r}, this run asks {b.get(key)!r}"
    return (trainer_diff(stored, current) or builder_diff(stored, current)
            or fingerprint_diff(stored, current))


# May change on resume: more seeds repeat the same cells; a refinement budget only says
# how many more rounds may come (rounds already stored stay part of the study); keeping
# weights changes no result.
RESUMABLE_KEYS = (("search", "seeds"), ("search", "refine_trials"), ("train", "keep_weights"))
# How the stored trials are read, not what they are: these may change on resume.
READING_KEYS = (("analysis", "tolerance"), ("analysis", "target"))
# Where the stored spec keeps the data set's fingerprint (data.py, `fingerprint`): a key
# the runner writes beside the spec's own fields, not a field a spec file sets.
FINGERPRINT = ("data", "fingerprint")
# Where it keeps a model builder's identity, what it builds (models.py, `identify`: its
# architecture, initial weights and a line per layer), beside `model.builder`.
BUILDER_IDENTITY = ("model", "builder_identity")
BUILDER_SHA256 = BUILDER_IDENTITY  # the name runner.py imports it by
# Where a study stored before identities kept the sha256 of the builder's source file.
# Never compared: such a study resumes, and its next run stores the identity instead.
LEGACY_BUILDER_SHA256 = ("model", "builder_sha256")
STORED_HASHES = (FINGERPRINT, BUILDER_IDENTITY, LEGACY_BUILDER_SHA256)


def fingerprint_diff(stored: Mapping[str, Any], current: Mapping[str, Any]) -> str | None:
    """How the data fingerprints of two spec tables differ; None when they agree or
    either has none (a study stored before fingerprints: it resumes, and gets one)."""
    section, key = FINGERPRINT
    a = stored.get(section, {}).get(key)
    b = current.get(section, {}).get(key)
    if a is None or b is None or a == b:
        return None
    # The first 12 hex digits tell two data sets apart in a message; both are stored.
    return f"data.fingerprint: study has {str(a)[:19]}..., this run's data {str(b)[:19]}..."


def trainer_diff(stored: Mapping[str, Any], current: Mapping[str, Any]) -> str | None:
    """How the trainers of two spec tables differ when either is a trainer of your own
    (`run.trainer_identity`): another function, the same one changed, or one of ours in
    its place; None when they agree. Ours are interchangeable (the population trainer
    is exact to the keras one), so a study run with one resumes with the other; a study
    stored before trainers of your own has none, which is ours."""
    a = str(stored.get("run", {}).get("trainer_identity") or "")
    b = str(current.get("run", {}).get("trainer_identity") or "")
    if a == b:
        return None
    ref_a, _, hash_a = a.partition(" ")
    ref_b, _, hash_b = b.partition(" ")
    if not a:
        return (f"run.trainer: study was trained by ours, this run asks {ref_b!r} (a trainer "
                "of your own)")
    if not b:
        ours = current.get("run", {}).get("trainer", "auto")
        return f"run.trainer: study was trained by {ref_a!r}, this run asks {ours!r}"
    if ref_a != ref_b:
        return f"run.trainer: study was trained by {ref_a!r}, this run asks {ref_b!r}"
    # The first 12 hex digits tell two sources apart in a message.
    return (f"run.trainer: the code of {ref_a!r} changed since the study ran it (study has "
            f"{hash_a[:19]}..., this run's {hash_b[:19]}...)")


def builder_diff(stored: Mapping[str, Any], current: Mapping[str, Any]) -> str | None:
    """How the models two spec tables' builders build differ (`BUILDER_IDENTITY`), as
    near as the identities tell: a layer's summary, the layer count, how the layers
    connect, or the initial weights; None when they agree or either has none (no
    builder, or a study stored before identities)."""
    section, key = BUILDER_IDENTITY
    a = stored.get(section, {}).get(key)
    b = current.get(section, {}).get(key)
    if a is None or b is None or a == b:
        return None
    return f"model.builder: the model it builds changed ({_model_change(str(a), str(b))})"


def _model_change(a: str, b: str) -> str:
    import json

    try:
        x, y = json.loads(a), json.loads(b)
        if not (isinstance(x, dict) and isinstance(y, dict)):
            raise ValueError
    except ValueError:
        return f"study has {a[:19]}..., this run's {b[:19]}..."
    if x.get("architecture") != y.get("architecture"):
        layers = _layers_change(list(x.get("layers") or []), list(y.get("layers") or []))
        return f"architecture: {layers}"
    # The first 12 hex digits tell two sets of weights apart in a message.
    return (f"initial weights: study has {str(x.get('weights'))[:19]}..., this run's "
            f"{str(y.get('weights'))[:19]}...")


def _layers_change(a: list[Any], b: list[Any]) -> str:
    """The first layer whose line (`Dense(units=8) #HASH`) differs, by its summary."""
    count = "" if len(a) == len(b) else f"{len(a)} layers -> {len(b)}; "
    for i, (p, q) in enumerate(zip(a, b, strict=False)):
        if p != q:
            sp, sq = str(p).rsplit(" #", 1)[0], str(q).rsplit(" #", 1)[0]
            if sp != sq:
                return f"{count}layer {i + 1}: {sp} -> {sq}"
            return (f"{count}layer {i + 1}, {sp}: another of its settings changed (an "
                    "initializer, a regularizer, its input shape...)")
    if len(a) != len(b):
        i = min(len(a), len(b))
        extra = str((a if len(a) > len(b) else b)[i]).rsplit(" #", 1)[0]
        return f"{count}layer {i + 1}, {extra}, {'removed' if len(a) > len(b) else 'added'}"
    return "how its layers connect"


def with_seeds(spec: Spec, seeds: Sequence[int]) -> Spec:
    return dataclasses.replace(spec, search=dataclasses.replace(spec.search, seeds=tuple(seeds)))
