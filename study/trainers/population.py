"""The population trainer: many trials trained at once in one XLA-compiled TensorFlow program.

A study of the batch-size x learning-rate plane trains hundreds of tiny MLPs whose
arithmetic takes milliseconds; one `model.fit` each spends its time in Python, graph
building and per-step dispatch. Here trials are stacked on a leading *member* axis:
every weight, Adam slot, learning rate, seed, shuffle order and step count has one row
per trial, and the whole epoch loop, steps included, runs inside one
`tf.function(jit_compile=True)`, so no Python runs per step.

The math is the reference trainer's (`keras.py`), member by member:

- Glorot-uniform kernels, zero biases (`keras.layers.Dense` defaults);
- Keras 3's Adam (`keras/src/optimizers/adam.py`): `alpha = lr * sqrt(1 - b2^t) /
  (1 - b1^t)`, `m += (g - m)(1 - b1)`, `v += (g^2 - v)(1 - b2)`,
  `w -= m * alpha / (sqrt(v) + eps)`, with eps = 1e-7 outside the square root;
- a fresh shuffle every epoch, the last partial batch trained, not dropped;
- the epoch loss as `model.fit` reports it: Keras' `Mean` loss tracker weights each
  batch's mean loss by the batch's row count, i.e. the sum of squared errors over the
  epoch divided by the number of rows;
- validation on the held-out set after every epoch, and the loss on the whole
  training set after training;
- for the classification losses, the epoch's accuracy as `model.fit`'s accuracy metric
  reports it (the epoch's rows right, each batch judged before its own update, over
  the rows), and the held-out accuracy after every epoch.

One program serves several batch sizes. Each step processes a *micro-batch* of `b0`
rows per member, where `b0` divides every member's batch size; a member accumulates
the gradients of `batch_size / b0` micro-batches and applies its optimizer update on
the last one. Every member thus walks through the same number of micro-steps per
epoch (`ceil(n / b0)`) and computes on exactly its own rows, so the article's grid
(batch sizes 16..256) is one program and one compilation, not five. Batch sizes with
no common divisor worth using (a TPE study's 37 and 101) go to separate programs.

Members that diverge (an epoch's loss NaN, inf, or above their limit: see
`base.diverges`) are frozen inside the program at the end of that epoch; members the
monitor prunes are frozen between chunks of epochs. Frozen members still ride along in
the arithmetic until their group ends, masked out of every update.

Nothing here pins a device: on a machine where TensorFlow sees a GPU, XLA compiles
the same program for it.
"""

from __future__ import annotations

import concurrent.futures
import functools
import itertools
import math
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from study.data import Dataset
from study.spec import CLASSIFICATION_LOSSES, AnalysisSpec, ModelSpec, Spec, TrainSpec
from study.trainers._tf import tensorflow
from study.trainers.base import (
    Monitor,
    Status,
    TrialConfig,
    TrialResult,
    divergence_limit,
    diverges,
    no_monitor,
    output_width,
)
from study.trainers.probes import SHARPNESS, hvp_of, noise_extras, noise_rows, top_eigenvalue
from study.trainers.schedule import Schedule

Tensor = Any  # a tf.Tensor; TensorFlow ships no type stubs
Weights = list[npt.NDArray[np.float32]]  # [kernel_1, bias_1, kernel_2, bias_2, ...]

# Keras 3's defaults (keras.optimizers.Adam, RMSprop).
ADAM_BETA_1 = 0.9
ADAM_BETA_2 = 0.999
ADAM_EPSILON = 1e-7
RMSPROP_RHO = 0.9
RMSPROP_EPSILON = 1e-7

# The most trials the runner hands over at once; within it, `claim_size` sizes each
# claim by the time it will take (run.checkpoint_seconds).
BATCH_LIMIT = 400
# With a pruner, trials must finish before others can be compared with them (Optuna's
# median pruner waits for 5 completed trials), so claims are smaller.
PRUNING_BATCH_LIMIT = 16
# Epochs per call of the compiled program; the monitor sees them all after each call.
CHUNK_EPOCHS = 10
# Members per call of the compiled program on a CPU (see `tile_size`): at most this
# many, and no tile smaller than MIN_TILE only to keep another core busy.
CPU_TILE = 32
MIN_TILE = 4
# Names a directory where XLA keeps compiled programs across runs (see use_compile_cache).
CACHE_ENV = "STUDY_XLA_CACHE"
# Rows of the held-out or training set evaluated at once, per member and layer unit
# (bounds the activations of a full-set evaluation to ~64 MiB).
EVAL_BUDGET = 1 << 24


# --------------------------------------------------------------------------- what it supports


class Optimizer(NamedTuple):
    """An optimizer as a pure, element-wise update, the same for every parameter tensor.

    `update(param, grad, slots, lr, step) -> (param, slots)`: `lr` (this update's rate,
    after the schedule) and `step` (the update's 1-based count, float) broadcast against
    `param`, one value per member.
    """

    slots: int  # state tensors per parameter, each shaped like it, zero at the start
    update: Callable[[Tensor, Tensor, tuple[Tensor, ...], Tensor, Tensor],
                     tuple[Tensor, tuple[Tensor, ...]]]


Slots = tuple[Tensor, ...]


def _adam(param: Tensor, grad: Tensor, slots: Slots, lr: Tensor, step: Tensor
          ) -> tuple[Tensor, Slots]:
    # Written exactly as keras/src/optimizers/adam.py `update_step`, same op order.
    tf = tensorflow()
    m, v = slots
    alpha = lr * tf.sqrt(1.0 - tf.pow(ADAM_BETA_2, step)) / (1.0 - tf.pow(ADAM_BETA_1, step))
    m = m + (grad - m) * (1.0 - ADAM_BETA_1)
    v = v + (tf.square(grad) - v) * (1.0 - ADAM_BETA_2)
    return param - (m * alpha) / (tf.sqrt(v) + ADAM_EPSILON), (m, v)


def _sgd(param: Tensor, grad: Tensor, slots: Slots, lr: Tensor, step: Tensor
         ) -> tuple[Tensor, Slots]:
    # keras/src/optimizers/sgd.py with momentum 0: `assign_sub(variable, gradient * lr)`.
    return param - grad * lr, ()


def _momentum(momentum: float, nesterov: bool) -> Callable[..., tuple[Tensor, Slots]]:
    def update(param: Tensor, grad: Tensor, slots: Slots, lr: Tensor, step: Tensor
               ) -> tuple[Tensor, Slots]:
        # keras/src/optimizers/sgd.py: m = m * momentum - g * lr; then w += m, or with
        # Nesterov w += m * momentum - g * lr.
        (m,) = slots
        m = m * momentum - grad * lr
        if nesterov:
            return param + (m * momentum - grad * lr), (m,)
        return param + m, (m,)

    return update


def _rmsprop(param: Tensor, grad: Tensor, slots: Slots, lr: Tensor, step: Tensor
             ) -> tuple[Tensor, Slots]:
    # keras/src/optimizers/rmsprop.py (momentum 0, not centered): v = rho v + (1 - rho) g^2;
    # w -= lr g / sqrt(v + eps), epsilon *inside* the square root (Adam's is outside).
    tf = tensorflow()
    (v,) = slots
    v = RMSPROP_RHO * v + (1 - RMSPROP_RHO) * tf.square(grad)
    return param - (lr * grad) / tf.sqrt(v + RMSPROP_EPSILON), (v,)


# Each optimizer from the spec's training section (for its hyperparameters).
OPTIMIZERS: dict[str, Callable[[TrainSpec], Optimizer]] = {
    "adam": lambda t: Optimizer(2, _adam),
    "sgd": lambda t: Optimizer(0, _sgd),
    "momentum": lambda t: Optimizer(1, _momentum(t.momentum, t.nesterov)),
    "rmsprop": lambda t: Optimizer(1, _rmsprop),
}


def _mse(pred: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """Per-row loss (members, rows, 1) and its derivative with respect to `pred` (its
    shape). With several outputs, the mean over them, as keras.losses.MeanSquaredError."""
    err = pred - y
    outputs = int(pred.shape[-1])
    if outputs == 1:
        return err * err, 2.0 * err
    tf = tensorflow()
    return tf.reduce_mean(err * err, axis=-1, keepdims=True), err * (2.0 / outputs)


def _cross_entropy(pred: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """Binary cross-entropy of a logit, as keras.losses.BinaryCrossentropy(from_logits=True)
    computes it (tf.nn.sigmoid_cross_entropy_with_logits); its derivative sigmoid - y."""
    tf = tensorflow()
    y = tf.broadcast_to(y, tf.shape(pred))  # the held-out labels are shared by all members
    return tf.nn.sigmoid_cross_entropy_with_logits(labels=y, logits=pred), tf.sigmoid(pred) - y


def _sparse_cross_entropy(pred: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """Softmax cross-entropy of the logits `pred` (members, rows, classes) against the
    integer labels `y` (rows, 1 per member, or shared), as
    keras.losses.SparseCategoricalCrossentropy(from_logits=True) computes it: per row
    logsumexp(logits) - logits[label], (members, rows, 1); its derivative softmax - onehot.

    Written out rather than by tf.nn.sparse_softmax_cross_entropy_with_logits (Keras'
    op): the fused op has no second derivative, which the sharpness probe takes.
    """
    tf = tensorflow()
    labels = tf.cast(tf.broadcast_to(y, tf.concat([tf.shape(pred)[:-1], [1]], 0)), tf.int32)
    picked = tf.gather(pred, labels, axis=2, batch_dims=2)
    loss = tf.reduce_logsumexp(pred, axis=2, keepdims=True) - picked
    onehot = tf.one_hot(labels[:, :, 0], tf.shape(pred)[2], dtype=pred.dtype)
    return loss, tf.nn.softmax(pred) - onehot


# Per-row loss (members, rows, 1) and d(loss)/d(pred) (the shape of `pred`), beside a
# linear output layer.
LOSSES: dict[str, Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]] = {
    "mse": _mse, "cross_entropy": _cross_entropy, "sparse_cross_entropy": _sparse_cross_entropy}


def _correct(loss: str, pred: Tensor, y: Tensor) -> Tensor:
    """Per row, 1.0 where the prediction is the label, (members, rows): Keras'
    BinaryAccuracy(threshold=0) on a logit, or SparseCategoricalAccuracy (the largest
    logit) for integer labels."""
    tf = tensorflow()
    label = tf.cast(y[..., 0], tf.float32)
    if loss == "cross_entropy":
        hit = tf.equal(tf.cast(pred[:, :, 0] > 0.0, tf.float32), label)
    else:
        hit = tf.equal(tf.cast(tf.argmax(pred, axis=2), tf.float32), label)
    return tf.cast(hit, tf.float32)


ACTIVATIONS = ("relu", "tanh", "linear")
SCHEDULES = ("constant", "step", "cosine", "warmup")


def unsupported(spec: Spec) -> str | None:
    """Why the population trainer cannot train `spec` (None when it can)."""
    if spec.model.activation not in ACTIVATIONS:
        return f"model.activation = {spec.model.activation!r}"
    if spec.train.optimizer not in OPTIMIZERS:
        return f"train.optimizer = {spec.train.optimizer!r}"
    if spec.train.loss not in LOSSES:
        return f"train.loss = {spec.train.loss!r}"
    if spec.train.schedule not in SCHEDULES:
        return f"train.schedule = {spec.train.schedule!r}"
    return None


# --------------------------------------------------------------------------- the trainer


class PopulationTrainer:
    name = "population"

    def __init__(self, batch_limit: int = BATCH_LIMIT, chunk_epochs: int = CHUNK_EPOCHS) -> None:
        self.batch_limit = batch_limit
        self.chunk_epochs = chunk_epochs
        # Members per tile and micro-batches per kind, fixed by the first `claim_size`
        # (until then each call picks its own), so that every claim runs the programs of
        # the first.
        self.tile: int | None = None
        self.micros: dict[Kind, list[int]] = {}
        # Seconds per epoch of one round of tiles (see `_rounds`), by what a program's
        # speed depends on, as measured on the latest call that trained such a group.
        self.speeds: dict[_SpeedKey, float] = {}
        use_compile_cache()
        # Loads TensorFlow now, when the runner makes the trainer, rather than in the
        # first `claim_size`, which runs under the study's claim lock.
        _has_gpu()

    @classmethod
    def for_spec(cls, spec: Spec) -> PopulationTrainer:
        if spec.search.pruner != "none":
            # Prune decisions land between chunks, so one epoch per chunk: a pruned
            # member stops where the pruner said, as under model.fit.
            return cls(batch_limit=PRUNING_BATCH_LIMIT, chunk_epochs=1)
        return cls()

    def claim_size(self, pending: Sequence[TrialConfig], n_train: int, seconds: float) -> int:
        """How many of `pending` to train next so that it takes about `seconds`.

        The first call fixes the tile and the groups' micro-batches from the work in
        sight then (`tile_size`, `plan_groups`); every claim is then trained in tiles of
        that size, the last padded with frozen members, and in those groups, so a later
        claim of any size and batch sizes runs the programs compiled for the first: the
        compile cost is paid once per program, not per claim. A claim is one round of
        tiles (one per core, side by side: the time of one tile) while no speed is
        measured, then as many tiles as the measured speed of each of its groups fits in
        `seconds` (a program not measured yet is assumed as slow as the slowest that
        was), and never less than one round.
        """
        if not pending:
            return 0
        if self.tile is None:
            self.tile = tile_size(len(pending))
        self._learn_micros(pending, n_train)
        tile = self.tile
        take = min(len(pending), tile * _parallel_tiles())
        if not self.speeds:
            return take
        slowest = max(self.speeds.values())
        for k in [*range(take + tile, len(pending), tile), len(pending)]:
            if k <= take:
                continue
            cost = 0.0
            for g in plan_groups(pending[:k], n_train, self.micros):
                epochs = max(pending[i].plan(n_train).epochs for i in g.members)
                cost += (self.speeds.get(_speed_key(g), slowest)
                         * _rounds(len(g.members), tile) * epochs)
            if cost > seconds:
                break
            take = k
        return take

    def train(
        self, configs: Sequence[TrialConfig], data: Dataset, monitor: Monitor = no_monitor
    ) -> list[TrialResult]:
        timings: list[tuple[Group, int, float]] = []
        self._learn_micros(configs, data.n_train)
        results = train_population(configs, data, monitor, chunk_epochs=self.chunk_epochs,
                                   tile=self.tile, micros=self.micros, timings=timings)
        for group, tile, seconds in timings:
            planned = max(configs[i].plan(data.n_train).epochs for i in group.members)
            # The program runs whole chunks (a group whose members all stopped early
            # ends at its chunk's end), so the epochs it ran are counted in chunks.
            trained = max(len(results[i].train_curve) for i in group.members)
            ran = min(planned, -(-trained // self.chunk_epochs) * self.chunk_epochs)
            self.speeds[_speed_key(group)] = seconds / (max(ran, 1)
                                                        * _rounds(len(group.members), tile))
        return results

    def _learn_micros(self, configs: Sequence[TrialConfig], n_train: int) -> None:
        """Keep the micro-batches that `configs` add to those of earlier calls."""
        for g in plan_groups(configs, n_train, self.micros):
            known = self.micros.setdefault(kind_of(configs[g.members[0]], n_train), [])
            if g.micro not in known:
                known.append(g.micro)


def use_compile_cache() -> None:
    """With STUDY_XLA_CACHE=DIR, XLA keeps compiled programs in DIR across processes.

    A later `study run` of the same shapes then loads its program instead of compiling
    it (about a second saved per shape on a CPU). Opt-in: a cached CPU program is built
    for this machine's instruction set, and a cache directory shared between machines
    could hand one to a CPU that lacks them. TensorFlow reads the flag when it loads, so
    this only acts before the first `tensorflow()`.
    """
    path = os.environ.get(CACHE_ENV, "")
    flags = os.environ.get("TF_XLA_FLAGS", "")
    if not path or "tensorflow" in sys.modules or "persistent_cache_directory" in flags:
        return
    os.makedirs(path, exist_ok=True)
    os.environ["TF_XLA_FLAGS"] = f"{flags} --tf_xla_persistent_cache_directory={path}".strip()


def train_population(
    configs: Sequence[TrialConfig],
    data: Dataset,
    monitor: Monitor = no_monitor,
    *,
    chunk_epochs: int = CHUNK_EPOCHS,
    initial_weights: Sequence[Weights] | None = None,
    shuffle: bool = True,
    final_weights: list[Weights] | None = None,
    tile: int | None = None,
    micros: Mapping[Kind, Sequence[int]] | None = None,
    timings: list[tuple[Group, int, float]] | None = None,
) -> list[TrialResult]:
    """Train `configs` group by group; one result per config, in order.

    For tests that replay a Keras run step for step: `initial_weights` (one list of
    kernels and biases per config, as `model.get_weights()` gives them) replaces the
    Glorot draw, `shuffle=False` trains the rows in the order given every epoch, and
    `final_weights`, if given, receives each config's weights after training.

    `tile` fixes the members per program call (by default each group picks its own,
    `tile_size`) and `micros` the groups' micro-batches (see `plan_groups`), so that
    calls of other sizes run the same programs; `timings`, if given, receives each
    group, its tile and its seconds.
    """
    if chunk_epochs < 1:
        raise ValueError(f"chunk_epochs: expected a positive number of epochs, got {chunk_epochs}")
    # An MLP flattens its inputs (the keras model's Flatten): images become rows here.
    data = data.flat()
    if initial_weights is not None and len(initial_weights) != len(configs):
        raise ValueError(f"initial_weights: {len(initial_weights)} weight lists for "
                         f"{len(configs)} configs")
    results: list[TrialResult | None] = [None] * len(configs)
    finals: list[Weights | None] = [None] * len(configs)
    for group in plan_groups(configs, data.n_train, micros):
        weights = None if initial_weights is None else [initial_weights[i] for i in group.members]
        group_tile = tile_size(len(group.members)) if tile is None else tile
        start = time.perf_counter()
        out, trained = _train_group(group, [configs[i] for i in group.members], data, monitor,
                                    chunk_epochs, weights, shuffle, group_tile)
        if timings is not None:
            timings.append((group, group_tile, time.perf_counter() - start))
        for i, r, w in zip(group.members, out, trained, strict=True):
            results[i], finals[i] = r, w
    if final_weights is not None:
        final_weights[:] = [w for w in finals if w is not None]
    return [r for r in results if r is not None]


# --------------------------------------------------------------------------- grouping


@dataclass(frozen=True)
class Group:
    """Configs trained in one program: same model and training, batch sizes multiples of `micro`.

    Members are ordered by batch size, so each batch size is a contiguous block of rows
    in every stacked tensor.
    """

    members: tuple[int, ...]  # indices into the configs, by batch size
    micro: int  # rows per member per step; divides every member's batch size
    model: ModelSpec
    train: TrainSpec
    analysis: AnalysisSpec


# What configs must share to train in one group: model, training, probes, and epochs.
Kind = tuple[ModelSpec, TrainSpec, AnalysisSpec, int]


def kind_of(config: TrialConfig, n_train: int) -> Kind:
    return (config.model, config.train, config.analysis, config.plan(n_train).epochs)


def plan_groups(configs: Sequence[TrialConfig], n_train: int,
                micros: Mapping[Kind, Sequence[int]] | None = None) -> list[Group]:
    """Partition configs into groups that one program can train.

    Configs must share everything in `TrialConfig.shape_key` but the batch size, and
    train for as many epochs (`TrialConfig.plan`): under a steps budget each batch size
    trains its own number of epochs, and a member that is done only rides along, so
    batch sizes with different epoch counts train apart (each at its own micro-batch,
    which is also faster per row). Batch sizes are taken smallest first; each joins the
    first group whose micro-batch divides it, else opens a group with itself as the
    micro-batch. The article's 16..256 (all multiples of 16) make one group.

    `micros` lists, per kind, micro-batches to offer first (those of earlier calls): a
    later claim's configs then join the groups, and so run the programs, of the first
    claim, even when its batch sizes alone would have chosen others.
    """
    by_kind: dict[Kind, list[int]] = {}
    for i, c in enumerate(configs):
        by_kind.setdefault(kind_of(c, n_train), []).append(i)
    groups: list[Group] = []
    for kind, indices in by_kind.items():
        model, train, analysis, _epochs = kind
        # (micro, members)
        open_groups: list[tuple[int, list[int]]] = [(m, []) for m in (micros or {}).get(kind, ())]
        for i in sorted(indices, key=lambda i: (configs[i].batch_size, i)):
            bs = configs[i].batch_size
            for micro, members in open_groups:
                if bs % micro == 0:
                    members.append(i)
                    break
            else:
                open_groups.append((bs, [i]))
        groups += [Group(tuple(members), micro, model, train, analysis)
                   for micro, members in open_groups if members]
    return groups


# --------------------------------------------------------------------------- weights


def glorot_weights(seed: int, sizes: Sequence[int]) -> Weights:
    """Glorot-uniform kernels and zero biases, as `keras.layers.Dense` initializes them.

    Drawn from numpy with the trial's seed: the same distribution as Keras, another
    random stream (the two trainers agree in distribution, not draw for draw).
    """
    rng = np.random.default_rng([seed, 0x610B])
    weights: Weights = []
    for fan_in, fan_out in itertools.pairwise(sizes):
        limit = math.sqrt(6.0 / (fan_in + fan_out))
        weights.append(rng.uniform(-limit, limit, (fan_in, fan_out)).astype(np.float32))
        weights.append(np.zeros(fan_out, np.float32))
    return weights


@dataclass(frozen=True)
class Layout:
    """Where each layer's kernel and bias live in a member's flat parameter vector.

    All of a member's parameters are one row of a (members, size) matrix, so the
    optimizer is one element-wise update over the whole population and the compiled
    program stays small (XLA compile time grows with the number of ops).
    """

    sizes: tuple[int, ...]  # n_features, hidden widths..., outputs

    @property
    def shapes(self) -> list[tuple[int, ...]]:
        return [s for a, b in itertools.pairwise(self.sizes) for s in ((a, b), (b,))]

    @property
    def size(self) -> int:
        return sum(math.prod(s) for s in self.shapes)

    def offsets(self) -> list[int]:
        out, at = [], 0
        for shape in self.shapes:
            out.append(at)
            at += math.prod(shape)
        return out

    def flatten(self, weights: Weights) -> npt.NDArray[np.float32]:
        return np.concatenate([np.asarray(w, np.float32).ravel() for w in weights])

    def unflatten(self, row: npt.NDArray[np.float32]) -> Weights:
        return [row[at:at + math.prod(shape)].reshape(shape)
                for at, shape in zip(self.offsets(), self.shapes, strict=True)]

    def views(self, tf: Any, theta: Tensor) -> list[Tensor]:
        """[kernel (members, in, out), bias (members, out), ...] as views of `theta`."""
        members = theta.shape[0]
        return [tf.reshape(theta[:, at:at + math.prod(shape)], [members, *shape])
                for at, shape in zip(self.offsets(), self.shapes, strict=True)]


def layout_of(model: ModelSpec, n_features: int, n_outputs: int = 1) -> Layout:
    return Layout((n_features, *model.hidden, n_outputs))


# --------------------------------------------------------------------------- training a group


def tile_size(members: int) -> int:
    """Members per call of the compiled program.

    On a GPU, all of them: it wants width. On a CPU, XLA runs a program on one core,
    so members are split into at least one tile per core (tiles run side by side) and
    into tiles of at most `CPU_TILE`, whose weights and optimizer state stay in the
    core's cache across the thousands of steps of a chunk. Tiles are balanced, so the
    last is padded by at most one member per tile.
    """
    if _has_gpu():
        return members
    cores = _threads()
    tiles = cores * -(-members // (cores * CPU_TILE))
    tiles = min(tiles, -(-members // MIN_TILE))
    return -(-members // max(tiles, 1))


@functools.cache
def _has_gpu() -> bool:
    return bool(tensorflow().config.list_logical_devices("GPU"))


def _parallel_tiles() -> int:
    """Tiles that run side by side: one per core on a CPU, one (all members) on a GPU."""
    return 1 if _has_gpu() else _threads()


def _rounds(members: int, tile: int) -> int:
    """Rounds of side-by-side tiles it takes to train `members`: what their time grows with."""
    tiles = -(-members // tile)
    return -(-tiles // _parallel_tiles())


# What a group's seconds per round-epoch depend on besides the tile: its model, training
# and probes, and its micro-batch (the steps an epoch takes).
_SpeedKey = tuple[ModelSpec, TrainSpec, AnalysisSpec, int]


def _speed_key(group: Group) -> _SpeedKey:
    return (group.model, group.train, group.analysis, group.micro)


def _threads() -> int:
    """Cores this process may use (STUDY_THREADS overrides)."""
    if os.environ.get("STUDY_THREADS"):
        return max(1, int(os.environ["STUDY_THREADS"]))
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _train_group(
    group: Group,
    configs: Sequence[TrialConfig],
    data: Dataset,
    monitor: Monitor,
    chunk_epochs: int,
    initial: Sequence[Weights] | None,
    shuffle: bool,
    tile: int,
) -> tuple[list[TrialResult], list[Weights]]:
    tf = tensorflow()
    start = time.perf_counter()
    n_members = len(configs)
    n = data.n_train
    n_outputs = output_width(group.train, data)
    layout = layout_of(group.model, data.n_features, n_outputs)
    if initial is None:
        initial = [glorot_weights(c.seed, layout.sizes) for c in configs]
    for i, weights in enumerate(initial):
        shapes = [tuple(np.shape(w)) for w in weights]
        if shapes != layout.shapes:
            raise ValueError(f"initial_weights[{i}]: shapes {shapes}, expected {layout.shapes}")
    train, analysis = group.train, group.analysis
    optimizer = OPTIMIZERS[train.optimizer](train)
    key = program_key(group.model, train, data.n_features, group.micro, chunk_epochs,
                      shuffle, n_outputs)
    classifies = key.loss in CLASSIFICATION_LOSSES
    program = _program(key)
    x, y = tf.constant(data.x_train), tf.constant(data.y_train)
    xv, yv = tf.constant(data.x_val), tf.constant(data.y_val)
    plans = [c.plan(n) for c in configs]

    # Members are trained in tiles of equal size (one compiled program serves them all);
    # the last tile is padded with frozen copies of its last member.
    n_tiles = -(-n_members // tile)
    pad = n_tiles * tile - n_members
    theta_all = np.stack([layout.flatten(w) for w in initial])
    theta_all = np.concatenate([theta_all, np.repeat(theta_all[-1:], pad, axis=0)])
    padded = [*configs, *[configs[-1]] * pad]
    padded_plans = [*plans, *[plans[-1]] * pad]
    # Each member's divergence limit, from its initial weights' loss on the training set
    # (a forward pass, so it runs eagerly like the full-set loss after training).
    limits = [divergence_limit(train, float(v))
              for v in mean_loss(key, tf.constant(theta_all), x, y).numpy()]
    schedules = [Schedule.of(train, c.learning_rate, p.steps)
                 for c, p in zip(padded, padded_plans, strict=True)]
    tiles = []
    for t in range(n_tiles):
        rows = slice(t * tile, (t + 1) * tile)
        theta = tf.constant(theta_all[rows])
        tiles.append(_TileState(
            theta=theta,
            slots=tuple(tf.zeros_like(theta) for _ in range(optimizer.slots)),
            steps=tf.zeros([tile], tf.float32),
            lr=tf.constant([c.learning_rate for c in padded[rows]], tf.float32),
            batch=tf.constant([c.batch_size for c in padded[rows]], tf.int32),
            seeds=tf.constant([c.seed for c in padded[rows]], tf.int32),
            epochs=tf.constant([p.epochs for p in padded_plans[rows]], tf.int32),
            last_rows=tf.constant([p.last_rows for p in padded_plans[rows]], tf.int32),
            sched=tf.constant([[s.decay_steps, s.warmup] for s in schedules[rows]], tf.float32),
            bounds=tf.constant(np.array([s.boundaries for s in schedules[rows]], np.float32)
                               .reshape(tile, key.boundaries)),
            values=tf.constant(np.array([s.values for s in schedules[rows]], np.float32)
                               .reshape(tile, key.boundaries + 1)),
            limit=tf.constant(limits[rows], tf.float32)))

    epochs = max(p.epochs for p in plans)
    active = np.arange(n_tiles * tile) < n_members
    train_curves: list[list[float]] = [[] for _ in configs]
    val_curves: list[list[float]] = [[] for _ in configs]
    train_accuracy: list[list[float]] = [[] for _ in configs]
    val_accuracy: list[list[float]] = [[] for _ in configs]
    status: list[Status] = ["complete"] * n_members
    diverged: list[int | None] = [None] * n_members
    stopped_early = np.zeros(n_members, bool)  # pruned before its chunk ended
    noise_at = sorted(analysis.noise_epochs)
    noise: list[dict[int, tuple[list[float], list[float]]]] = [{} for _ in configs]

    def measure_noise(epoch: int) -> None:
        """Probe the members that trained through `epoch` and have not diverged."""
        who = [m for m in range(n_members)
               if len(train_curves[m]) == epoch and status[m] != "diverged"]
        if not who:
            return
        draws = [noise_rows(c.seed, epoch, analysis.noise_repeats, analysis.noise_batches, n)
                 for c in padded]
        norms: list[tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]] = []
        for t, s in enumerate(tiles):
            members = range(t * tile, (t + 1) * tile)
            norms += zip(*(noise_norms(key, s.theta, x, y, np.stack([draws[m][i] for m in members]))
                           for i in (0, 1)), strict=True)
        for m in who:
            noise[m][epoch] = (norms[m][0].tolist(), norms[m][1].tolist())

    if 0 in noise_at:
        measure_noise(0)
    done = 0
    while done < epochs and active.any():
        n_run = min(chunk_epochs, epochs - done)
        # A chunk ends where the noise scale is measured: at the weights of that epoch.
        n_run = min([n_run] + [e - done for e in noise_at if e > done])

        def run_tile(t: int, s: _TileState, done: int = done, n_run: int = n_run
                     ) -> tuple[npt.NDArray[np.float32], ...]:
            s.theta, s.slots, s.steps, *outs = program(
                s.theta, s.slots, s.steps, s.lr, s.batch, s.seeds,
                tf.constant(active[t * tile:(t + 1) * tile]), tf.constant(done, tf.int32),
                tf.constant(n_run, tf.int32), x, y, xv, yv, s.epochs, s.last_rows, s.sched,
                s.bounds, s.values, s.limit)
            # Per epoch: training loss, validation loss, training and validation accuracy.
            return tuple(o.numpy()[:n_run] for o in outs)

        # XLA runs a CPU program on one core; tiles run side by side, one per core.
        outs = list(_pool().map(run_tile, range(n_tiles), tiles))
        losses, vals, accs, val_accs = (np.concatenate([o[i] for o in outs], axis=1)
                                        for i in range(4))
        for e in range(n_run):
            epoch = done + e + 1
            for m in map(int, np.flatnonzero(active)):
                loss, val = float(losses[e, m]), float(vals[e, m])
                train_curves[m].append(loss)
                val_curves[m].append(val)
                val_acc = math.nan
                if classifies:
                    val_acc = float(val_accs[e, m])
                    train_accuracy[m].append(float(accs[e, m]))
                    val_accuracy[m].append(val_acc)
                if diverges(loss, limits[m]):
                    # The program froze this member at the end of this epoch too.
                    status[m], diverged[m], active[m] = "diverged", epoch, False
                elif monitor(group.members[m], epoch, loss, val, val_acc):
                    status[m], active[m] = "pruned", False
                    stopped_early[m] = e < n_run - 1
                elif epoch == plans[m].epochs:
                    active[m] = False  # its budget is spent; the program froze it too
        done += n_run
        if done in noise_at:
            measure_noise(done)
    # Every member's weights where it stopped (frozen members kept theirs), on the whole
    # training set; a forward pass, so it runs eagerly rather than compile for it.
    full = np.concatenate([mean_loss(key, s.theta, x, y).numpy() for s in tiles])
    trained = np.concatenate([s.theta.numpy() for s in tiles])
    # Diverged weights have no loss; a member pruned mid-chunk trained on past the
    # epoch it was pruned at, so its final weights are not the pruned ones.
    unknown = [status[m] == "diverged" or bool(stopped_early[m]) for m in range(n_members)]
    sharp: dict[int, float] = {}
    if analysis.sharpness:
        who = [m for m in range(n_members) if status[m] == "complete"]
        sharp = dict(zip(who, sharpness(key, trained[who], x, y, analysis.sharpness_iterations,
                                        tile), strict=True))
    share = (time.perf_counter() - start) / n_members
    results = []
    for m in range(n_members):
        extras = noise_extras(analysis.noise_batches, noise[m])
        if m in sharp:
            extras[SHARPNESS] = sharp[m]
        results.append(TrialResult(
            status=status[m], train_curve=train_curves[m], val_curve=val_curves[m],
            full_train_loss=float("nan") if unknown[m] else float(full[m]),
            steps=plans[m].steps_after(len(train_curves[m])), seconds=share,
            diverged_epoch=diverged[m], extras=extras, train_accuracy_curve=train_accuracy[m],
            val_accuracy_curve=val_accuracy[m]))
    return results, [layout.unflatten(trained[m]) for m in range(n_members)]


_executor: concurrent.futures.ThreadPoolExecutor | None = None


def _pool() -> concurrent.futures.ThreadPoolExecutor:
    global _executor
    if _executor is None:
        _executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=_threads(), thread_name_prefix="study-tile")
    return _executor


@dataclass
class _TileState:
    """One tile's members: their training state, and what is fixed per member."""

    theta: Tensor
    slots: tuple[Tensor, ...]
    steps: Tensor
    lr: Tensor
    batch: Tensor
    seeds: Tensor
    epochs: Tensor  # epochs of its budget (TrainSpec.plan)
    last_rows: Tensor  # rows trained in its last epoch
    sched: Tensor  # (members, 2): the schedule's decay steps and warm-up steps
    bounds: Tensor  # (members, boundaries): step decay's boundaries
    values: Tensor  # (members, boundaries + 1): step decay's rates
    limit: Tensor  # the epoch loss above which a member diverges (base.divergence_limit)


# --------------------------------------------------------------------------- probes


def noise_norms(key: _ProgramKey, theta: Tensor, x: Tensor, y: Tensor,
                rows: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
    """|G_B|^2 of minibatch gradients per member and repeat, (members, repeats).

    `rows` (members, repeats, B) are the training rows of each minibatch; the gradient is
    that of the batch's mean loss at the member's weights in `theta`, computed by the
    very function the training program steps with. Repeats are stacked on the member
    axis, in blocks that bound memory like `mean_loss`.
    """
    tf = tensorflow()
    members, repeats, b = rows.shape
    block = max(1, min(repeats, EVAL_BUDGET // (members * b * max(key.layout.sizes))))
    out = np.empty((members, repeats))
    for r0 in range(0, repeats, block):
        part = rows[:, r0:r0 + block]
        k = part.shape[1]
        idx = tf.constant(part.reshape(members * k, b))
        stacked = tf.repeat(theta, k, axis=0)
        _, _, grad = _gradients(tf, key, stacked, tf.gather(x, idx), tf.gather(y, idx),
                                tf.ones([members * k, b], tf.float32),
                                tf.fill([members * k], 1.0 / b))
        out[:, r0:r0 + k] = tf.reshape(tf.reduce_sum(grad * grad, axis=1), [members, k]).numpy()
    return out


def sharpness(key: _ProgramKey, theta: npt.NDArray[np.float32], x: Tensor, y: Tensor,
              iterations: int, block: int) -> list[float]:
    """The top Hessian eigenvalue of each member's mean training loss (rows of `theta`),
    by Lanczos on Hessian-vector products of `mean_loss` (see probes.py), `block`
    members at a time."""
    tf = tensorflow()
    # Compiled: eager nested tapes spent most of their time dispatching small ops. Blocks
    # run side by side like the training tiles, the last padded to the block's shape.
    hvp = _hvp_program(key)
    starts = range(0, len(theta), block)

    def run(m0: int) -> list[float]:
        part = theta[m0:m0 + block]
        rows = tf.constant(np.concatenate([part, np.repeat(part[-1:], block - len(part), 0)]))

        def product(v: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
            return np.asarray(hvp(rows, tf.constant(v, tf.float32), x, y).numpy(), np.float64)

        return [float(v) for v in top_eigenvalue(product, block, int(rows.shape[1]),
                                                 iterations)[:len(part)]]

    return [v for part in _pool().map(run, starts) for v in part]


_hvps: dict[_ProgramKey, Callable[..., Any]] = {}


def _hvp_program(key: _ProgramKey) -> Callable[..., Any]:
    """Hessian-vector products of every member's mean loss on (x, y), XLA-compiled."""
    if key not in _hvps:
        tf = tensorflow()

        def hvp(theta: Tensor, v: Tensor, x: Tensor, y: Tensor) -> Tensor:
            return hvp_of(lambda th: mean_loss(key, th, x, y))(theta, v)

        _hvps[key] = tf.function(hvp, jit_compile=True, autograph=False)
    return _hvps[key]


# --------------------------------------------------------------------------- the program


@dataclass(frozen=True)
class _ProgramKey:
    """What a compiled program is specialized on, besides its tensors' shapes."""

    layout: Layout
    activation: str
    loss: str
    optimizer: str
    optimizer_args: tuple[float | bool, ...]  # SGD momentum's (momentum, nesterov)
    schedule: str
    warmup: bool  # whether the schedule starts with a linear warm-up
    boundaries: int  # step decay's boundaries
    micro: int
    chunk_epochs: int
    shuffle: bool


def program_key(model: ModelSpec, train: TrainSpec, n_features: int, micro: int = 1,
                chunk_epochs: int = CHUNK_EPOCHS, shuffle: bool = True, n_outputs: int = 1
                ) -> _ProgramKey:
    """The key of the program that trains `model` by `train`; the probes (`noise_norms`,
    `sharpness`) read only its model and loss."""
    return _ProgramKey(
        layout_of(model, n_features, n_outputs), model.activation, train.loss, train.optimizer,
        (train.momentum, train.nesterov) if train.optimizer == "momentum" else (),
        train.schedule, train.warmup_fraction > 0,
        len(train.decay_at) if train.schedule == "step" else 0,
        micro, chunk_epochs, shuffle)


_programs: dict[_ProgramKey, Callable[..., Any]] = {}


def _program(key: _ProgramKey) -> Callable[..., Any]:
    # tf.function keeps one trace (and XLA one executable) per input shape signature,
    # so a second claim of the same shape reuses the compiled program.
    if key not in _programs:
        _programs[key] = _build_program(key)
    return _programs[key]


def _activation(tf: Any, name: str) -> tuple[Callable[[Tensor], Tensor],
                                              Callable[[Tensor, Tensor], Tensor]]:
    """The activation and its derivative, the latter from pre-activation z and output a."""
    if name == "relu":
        return tf.nn.relu, lambda z, a: tf.cast(z > 0, z.dtype)
    if name == "tanh":
        return tf.tanh, lambda z, a: 1.0 - a * a
    return (lambda z: z), (lambda z, a: tf.ones_like(z))


def _forward(tf: Any, key: _ProgramKey, theta: Tensor, x: Tensor) -> Tensor:
    """Predictions of every member, (members, rows, 1); x is (rows, features) or per member."""
    act, _ = _activation(tf, key.activation)
    views = key.layout.views(tf, theta)
    h = x
    for j in range(0, len(views), 2):
        if j:
            h = act(h)
        h = (tf.einsum("nf,mfo->mno", h, views[j]) if len(h.shape) == 2
             else tf.matmul(h, views[j])) + views[j + 1][:, None, :]
    return h


def mean_loss(key: _ProgramKey, theta: Tensor, x: Tensor, y: Tensor) -> Tensor:
    """Mean loss of every member on all of (x, y), (members,), in blocks that bound memory."""
    return evaluate(key, theta, x, y, accuracy=False)[0]


def evaluate(key: _ProgramKey, theta: Tensor, x: Tensor, y: Tensor, accuracy: bool = True
             ) -> tuple[Tensor, Tensor | None]:
    """Mean loss and, for a classification loss when `accuracy`, the accuracy of every
    member on all of (x, y), each (members,), in blocks that bound memory."""
    tf = tensorflow()
    n = int(x.shape[0])
    members = int(theta.shape[0])
    block = max(1, min(n, EVAL_BUDGET // (members * max(key.layout.sizes))))
    loss_fn = LOSSES[key.loss]
    counts = accuracy and key.loss in CLASSIFICATION_LOSSES
    if block == n:
        pred = _forward(tf, key, theta, x)
        row_loss, _ = loss_fn(pred, y[None])
        hits = tf.reduce_sum(_correct(key.loss, pred, y[None]), axis=1) / float(n) \
            if counts else None
        return tf.reduce_sum(row_loss, axis=[1, 2]) / float(n), hits
    blocks = -(-n // block)
    pad = blocks * block - n
    xp, yp = tf.pad(x, [[0, pad], [0, 0]]), tf.pad(y, [[0, pad], [0, 0]])
    weight = tf.pad(tf.ones([n], tf.float32), [[0, pad]])

    def body(i: Tensor, total: Tensor, right: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        xb = tf.slice(xp, [i * block, 0], [block, x.shape[1]])
        yb = tf.slice(yp, [i * block, 0], [block, y.shape[1]])
        pred = _forward(tf, key, theta, xb)
        row_loss, _ = loss_fn(pred, yb[None])
        w = tf.slice(weight, [i * block], [block])
        if counts:
            right = right + tf.reduce_sum(_correct(key.loss, pred, yb[None]) * w[None, :], axis=1)
        return i + 1, total + tf.reduce_sum(row_loss[:, :, 0] * w[None, :], axis=1), right

    zeros = tf.zeros([members], tf.float32)
    _, total, right = tf.while_loop(lambda i, *_: i < blocks, body,
                                    (tf.constant(0), zeros, zeros))
    return total / float(n), right / float(n) if counts else None


def _gradients(tf: Any, key: _ProgramKey, theta: Tensor, xb: Tensor, yb: Tensor, valid: Tensor,
               scale: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per member: the sum of its valid rows' losses, the number of them predicted right
    (zeros for a regression loss), and the flat gradient of `scale` x the loss sum
    (scale = 1/batch rows: the gradient of the batch mean loss).

    xb (members, rows, features), yb (members, rows, 1), valid (members, rows) 0/1,
    scale (members,). Backpropagation written out: one batched matmul per layer and
    direction, which XLA compiles smaller than the tape's.
    """
    act, act_grad = _activation(tf, key.activation)
    views = key.layout.views(tf, theta)
    members = theta.shape[0]
    inputs, pre = [xb], []
    h = xb
    for j in range(0, len(views), 2):
        z = tf.matmul(h, views[j]) + views[j + 1][:, None, :]
        pre.append(z)
        h = act(z) if j + 2 < len(views) else z
        inputs.append(h)
    row_loss, d_pred = LOSSES[key.loss](h, yb)
    delta = d_pred * (valid[:, :, None] * scale[:, None, None])
    grads: list[Tensor] = [None] * len(views)
    for j in range(len(views) - 2, -1, -2):
        grads[j] = tf.reshape(tf.matmul(inputs[j // 2], delta, transpose_a=True), [members, -1])
        grads[j + 1] = tf.reduce_sum(delta, axis=1)
        if j:
            delta = tf.matmul(delta, views[j], transpose_b=True) \
                * act_grad(pre[j // 2 - 1], inputs[j // 2])
    right = tf.reduce_sum(_correct(key.loss, h, yb) * valid, axis=1) \
        if key.loss in CLASSIFICATION_LOSSES else tf.zeros([members], tf.float32)
    return (tf.reduce_sum(row_loss * valid[:, :, None], axis=[1, 2]), right,
            tf.concat(grads, axis=1))


def _rate(tf: Any, key: _ProgramKey, lr: Tensor, step: Tensor, sched: Tensor, bounds: Tensor,
          values: Tensor) -> Tensor:
    """Each member's learning rate at `step` (updates already applied), (members,): the
    formulas of keras.optimizers.schedules in their float32 order (see schedule.py)."""
    if key.schedule == "constant":
        return lr
    if key.schedule == "step":
        # PiecewiseConstantDecay: the value after as many boundaries as `step` is past.
        past = tf.reduce_sum(tf.cast(step[:, None] > bounds, tf.int32), axis=1)
        return tf.gather(values, past, batch_dims=1)
    decay_steps, warmup = sched[:, 0], sched[:, 1]
    pi = tf.constant(math.pi, tf.float32)

    def decayed(s: Tensor) -> Tensor:
        cosine = 0.5 * (1.0 + tf.cos(pi * (s / decay_steps)))
        # CosineDecay's (1 - alpha) cosine + alpha: alpha = 0 for cosine, 1 for warmup.
        return lr * cosine if key.schedule == "cosine" else lr * ((1.0 - 1.0) * cosine + 1.0)

    if not key.warmup:
        return decayed(tf.minimum(step, decay_steps))
    s = tf.minimum(step, decay_steps + warmup)
    return tf.where(s < warmup, (lr - 0.0) * (s / warmup) + 0.0, decayed(s - warmup))


def _mix(tf: Any, x: Tensor) -> Tensor:
    """A 32-bit integer hash (lowbias32): counter-based randomness, the same on any device."""
    x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, 16))
    x = x * tf.constant(0x7FEB352D, tf.uint32)
    x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, 15))
    x = x * tf.constant(0x846CA68B, tf.uint32)
    return tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, 16))


def _build_program(key: _ProgramKey) -> Callable[..., Any]:
    tf = tensorflow()
    optimizer = OPTIMIZERS[key.optimizer](_train_of(key))
    b0 = key.micro
    f32 = tf.float32

    def permutation(seeds: Tensor, epoch: Tensor, n: int) -> Tensor:
        """Each member's order of the n rows in `epoch`, from its seed and the epoch alone."""
        members = seeds.shape[0]
        if not key.shuffle:
            return tf.broadcast_to(tf.range(n)[None, :], [members, n])
        golden = tf.constant(0x9E3779B9, tf.uint32)
        base = _mix(tf, _mix(tf, tf.cast(seeds, tf.uint32)) + tf.cast(epoch, tf.uint32) * golden)
        rows = _mix(tf, tf.cast(tf.range(n), tf.uint32))
        keys = _mix(tf, tf.bitwise.bitwise_xor(base[:, None], rows[None, :]))
        return tf.argsort(keys, axis=1, stable=True)

    def epoch(theta: Tensor, slots: tuple[Tensor, ...], steps_taken: Tensor, lr: Tensor,
              batch: Tensor, active: Tensor, order: Tensor, x: Tensor, y: Tensor, rows: Tensor,
              sched: Tensor, bounds: Tensor, values: Tensor) -> tuple[Any, ...]:
        """One pass over the first `rows` (per member) of each member's order."""
        n = x.shape[0]
        members = order.shape[0]
        micro_steps = -(-n // b0)
        order = tf.pad(order, [[0, 0], [0, micro_steps * b0 - n]])

        # Per micro-step and member: whether the member's batch ends there (at a
        # multiple of its batch size, or where its rows of this epoch end: the last,
        # partial batch is trained, not dropped), and 1 / the rows of its current batch.
        # Tables, so the per-parameter updates below read one value instead of redoing
        # integer arithmetic for every parameter. A micro-step past a member's rows (a
        # budget that ends mid-epoch) holds none of them and ends no batch.
        k_all = tf.range(micro_steps)[:, None]
        first = k_all * b0
        ends_table = tf.logical_and(
            first < rows[None, :],
            tf.logical_or(tf.equal((k_all + 1) * b0 % batch[None, :], 0),
                          (k_all + 1) * b0 >= rows[None, :]))
        batch_start = (first // batch[None, :]) * batch[None, :]
        batch_rows = tf.maximum(tf.minimum(batch[None, :], rows[None, :] - batch_start), 1)
        scale_table = 1.0 / tf.cast(batch_rows, f32)

        def step(k: Tensor, theta: Tensor, slots: tuple[Tensor, ...], acc: Tensor,
                 steps_taken: Tensor, sse: Tensor, hits: Tensor) -> tuple[Any, ...]:
            idx = tf.slice(order, [0, k * b0], [members, b0])
            xb, yb = tf.gather(x, idx), tf.gather(y, idx)  # (members, b0, features)
            # The last micro-batch of the epoch, or of a member's rows, may be short.
            valid = tf.cast(k * b0 + tf.range(b0)[None, :] < rows[:, None], f32)
            loss_sum, right, grad = _gradients(tf, key, theta, xb, yb, valid,
                                               tf.gather(scale_table, k))
            acc = acc + grad
            # Every member's update is computed; only those whose batch ends here (and
            # that are not frozen) keep it. Skipping the arithmetic for the others with a
            # tf.cond measured no faster on a CPU: XLA then copies the carried state.
            ends = tf.gather(ends_table, k)
            apply = tf.logical_and(active, ends)
            stepped = steps_taken + 1.0
            rate = _rate(tf, key, lr, steps_taken, sched, bounds, values)
            new_theta, new_slots = optimizer.update(theta, acc, slots, rate[:, None],
                                                    stepped[:, None])
            theta = tf.where(apply[:, None], new_theta, theta)
            slots = tuple(tf.where(apply[:, None], b, a)
                          for a, b in zip(slots, new_slots, strict=True))
            acc = tf.where(ends[:, None], tf.zeros_like(acc), acc)
            steps_taken = tf.where(apply, stepped, steps_taken)
            return k + 1, theta, slots, acc, steps_taken, sse + loss_sum, hits + right

        _, theta, slots, _, steps_taken, sse, hits = tf.while_loop(
            lambda k, *_: k < micro_steps, step,
            (tf.constant(0), theta, slots, tf.zeros_like(theta), steps_taken,
             tf.zeros([members], f32), tf.zeros([members], f32)))
        # The epoch's mean loss and accuracy over its rows, as model.fit's trackers.
        return (theta, slots, steps_taken, sse / tf.cast(rows, f32),
                hits / tf.cast(rows, f32))

    def run(theta: Tensor, slots: tuple[Tensor, ...], steps_taken: Tensor, lr: Tensor,
            batch: Tensor, seeds: Tensor, active: Tensor, first_epoch: Tensor, n_epochs: Tensor,
            x: Tensor, y: Tensor, xv: Tensor, yv: Tensor, epochs: Tensor, last_rows: Tensor,
            sched: Tensor, bounds: Tensor, values: Tensor, limit: Tensor) -> tuple[Any, ...]:
        members = theta.shape[0]
        n = x.shape[0]

        def body(e: Tensor, theta: Tensor, slots: tuple[Tensor, ...], steps_taken: Tensor,
                 active: Tensor, losses: Tensor, vals: Tensor, accs: Tensor, val_accs: Tensor
                 ) -> tuple[Any, ...]:
            at = first_epoch + e
            # A member whose budget is spent rides along frozen; its last epoch may be
            # partial (TrainSpec.plan).
            live = tf.logical_and(active, at < epochs)
            rows = tf.where(at == epochs - 1, last_rows, n)
            order = permutation(seeds, at, n)
            theta, slots, steps_taken, loss, accuracy = epoch(
                theta, slots, steps_taken, lr, batch, live, order, x, y, rows, sched, bounds,
                values)
            losses = tf.tensor_scatter_nd_update(losses, [[e]], loss[None])
            val_loss, val_accuracy = evaluate(key, theta, xv, yv)
            vals = tf.tensor_scatter_nd_update(vals, [[e]], val_loss[None])
            if val_accuracy is not None:
                accs = tf.tensor_scatter_nd_update(accs, [[e]], accuracy[None])
                val_accs = tf.tensor_scatter_nd_update(val_accs, [[e]], val_accuracy[None])
            # Diverged: frozen from the end of this epoch on, as model.fit stops there.
            # `loss <= limit` in float32 is base.diverges' test (limit is float32 there
            # too); is_finite is for an inf loss under an inf limit (no factor).
            active = tf.logical_and(active, tf.logical_and(tf.math.is_finite(loss),
                                                           loss <= limit))
            return e + 1, theta, slots, steps_taken, active, losses, vals, accs, val_accs

        # Per-epoch outputs in fixed-size buffers: XLA needs static shapes, and the
        # last chunk of a study may be shorter than the others. The accuracies stay
        # zero for a regression loss.
        buffer = tf.zeros([key.chunk_epochs, members], f32)
        _, theta, slots, steps_taken, _, losses, vals, accs, val_accs = tf.while_loop(
            lambda e, *_: e < n_epochs, body,
            (tf.constant(0), theta, slots, steps_taken, active, buffer, buffer, buffer, buffer))
        return theta, slots, steps_taken, losses, vals, accs, val_accs

    # No autograph: the loops are explicit tf.while_loops, and converting Python source
    # took longer than XLA's compile of the result.
    return tf.function(run, jit_compile=True, autograph=False)  # type: ignore[no-any-return]


def _train_of(key: _ProgramKey) -> TrainSpec:
    """The optimizer hyperparameters a program key carries, as a TrainSpec."""
    if key.optimizer == "momentum":
        momentum, nesterov = key.optimizer_args
        return TrainSpec(optimizer=key.optimizer, momentum=float(momentum),
                         nesterov=bool(nesterov))
    return TrainSpec(optimizer=key.optimizer)
