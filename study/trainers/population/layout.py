"""Where members' parameters live, which configs train together, and in what tiles."""

from __future__ import annotations

import concurrent.futures
import functools
import itertools
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from study.spec import AnalysisSpec, ModelSpec, TrainSpec
from study.trainers._tf import tensorflow
from study.trainers.base import (
    TrialConfig,
)

Tensor = Any  # a tf.Tensor; TensorFlow ships no type stubs
Weights = list[npt.NDArray[np.float32]]  # [kernel_1, bias_1, kernel_2, bias_2, ...]

# Rows of the held-out or training set evaluated at once, per member and layer unit
# (bounds the activations of a full-set evaluation to ~64 MiB).
EVAL_BUDGET = 1 << 24

# Member epochs of one batch size that earn it a program of its own, at its own batch
# size as the micro-batch (see `plan_groups`): what saves about twice a compile's cost.
OWN_PROGRAM = 10_000

# Members per call of the compiled program on a CPU (see `tile_size`): at most this
# many, and no tile smaller than MIN_TILE only to keep another core busy.
CPU_TILE = 32
MIN_TILE = 4


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
                micros: Mapping[Kind, Sequence[int]] | None = None,
                work: Sequence[TrialConfig] | None = None,
                whole: Callable[[ModelSpec], bool] | None = None) -> list[Group]:
    """Partition configs into groups that one program can train.

    Configs must share everything in `TrialConfig.shape_key` but the batch size, and
    train for as many epochs (`TrialConfig.plan`): under a steps budget each batch size
    trains its own number of epochs, and a member that is done only rides along, so
    batch sizes with different epoch counts train apart (each at its own micro-batch,
    which is also faster per row).

    Batch sizes are taken smallest first. One that a group's micro-batch equals joins
    it; one with enough work for a program of its own (`OWN_PROGRAM`) opens a group
    with itself as the micro-batch; any other joins the group with the largest
    micro-batch that divides it, else opens its own. A micro-batch as large as the
    batch size is the fastest per row (larger matrix products, one optimizer update per
    step instead of one masked update per micro-step: 0.41 against 0.9 ms of CPU per
    member and epoch for the article's 256 against 16), but each group is a program to
    compile (about 1.3 s), so small studies keep the article's 16..256 (all multiples
    of 16) in one group.

    `micros` lists, per kind, micro-batches to offer first (those of earlier calls): a
    later claim's configs then join the groups, and so run the programs, of the first
    claim, even when its batch sizes alone would have chosen others. `work` (default:
    `configs`) is what the choice of micro-batches weighs: the study's pending trials,
    when `configs` are one claim of them.

    `whole` says which models need each batch to be one micro-batch (BatchNormalization:
    a micro-batch's statistics are not its batch's): their batch sizes each train at
    their own micro-batch.
    """
    by_kind: dict[Kind, list[int]] = {}
    for i, c in enumerate(configs):
        by_kind.setdefault(kind_of(c, n_train), []).append(i)
    member_epochs: dict[tuple[Kind, int], int] = {}
    for c in (configs if work is None else work):
        kind = kind_of(c, n_train)
        member_epochs[kind, c.batch_size] = member_epochs.get((kind, c.batch_size), 0) + kind[3]
    groups: list[Group] = []
    for kind, indices in by_kind.items():
        model, train, analysis, _epochs = kind
        # micro-batch: members
        open_groups: dict[int, list[int]] = {m: [] for m in (micros or {}).get(kind, ())}
        for i in sorted(indices, key=lambda i: (configs[i].batch_size, i)):
            bs = micro = configs[i].batch_size
            if bs not in open_groups and whole is not None and whole(model):
                open_groups[bs] = []
            elif bs not in open_groups:
                dividing = [m for m in open_groups if bs % m == 0]
                if dividing and member_epochs.get((kind, bs), 0) < OWN_PROGRAM:
                    micro = max(dividing)
                else:
                    open_groups[bs] = []
            open_groups[micro].append(i)
        groups += [Group(tuple(members), micro, model, train, analysis)
                   for micro, members in open_groups.items() if members]
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
    """Where each layer's parameters (kernel and bias, LayerNormalization's gamma and
    beta, BatchNormalization's and its moving statistics) live in a member's flat
    parameter vector, in `model.get_weights()` order.

    All of a member's parameters are one row of a (members, size) matrix, so the
    optimizer is one element-wise update over the whole population and the compiled
    program stays small (XLA compile time grows with the number of ops).
    """

    params: tuple[tuple[int, ...], ...]  # each parameter tensor's shape
    sizes: tuple[int, ...]  # n_features, then each Dense layer's units
    # Indices into `params` of the tensors no optimizer updates: BatchNormalization's
    # moving statistics, which each training batch writes (see batchnorm.py).
    statistics: tuple[int, ...] = ()

    @property
    def shapes(self) -> list[tuple[int, ...]]:
        return list(self.params)

    @property
    def size(self) -> int:
        return sum(math.prod(s) for s in self.shapes)

    def offsets(self) -> list[int]:
        out, at = [], 0
        for shape in self.shapes:
            out.append(at)
            at += math.prod(shape)
        return out

    def trainable_columns(self) -> npt.NDArray[np.int64]:
        """The columns of a member's row that hold trained parameters (not statistics)."""
        return np.concatenate([np.arange(at, at + math.prod(shape), dtype=np.int64)
                               for i, (at, shape) in enumerate(zip(self.offsets(), self.shapes,
                                                                   strict=True))
                               if i not in self.statistics] or [np.zeros(0, np.int64)])

    def flatten(self, weights: Weights) -> npt.NDArray[np.float32]:
        return np.concatenate([np.asarray(w, np.float32).ravel() for w in weights])

    def unflatten(self, row: npt.NDArray[np.float32]) -> Weights:
        return [row[at:at + math.prod(shape)].reshape(shape)
                for at, shape in zip(self.offsets(), self.shapes, strict=True)]

    def pieces(self, theta: Tensor) -> list[Tensor]:
        """Each parameter tensor's columns of `theta`, (members, its size)."""
        return [theta[:, at:at + math.prod(shape)]
                for at, shape in zip(self.offsets(), self.shapes, strict=True)]

    def shaped(self, tf: Any, pieces: list[Tensor]) -> list[Tensor]:
        """`pieces` in their parameter tensors' shapes, (members, *shape)."""
        return [tf.reshape(p, [p.shape[0], *shape])
                for p, shape in zip(pieces, self.shapes, strict=True)]

    def views(self, tf: Any, theta: Tensor) -> list[Tensor]:
        """[kernel (members, in, out), bias (members, out), ...] as views of `theta`."""
        return self.shaped(tf, self.pieces(theta))


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


_executor: concurrent.futures.ThreadPoolExecutor | None = None


def _pool() -> concurrent.futures.ThreadPoolExecutor:
    global _executor
    if _executor is None:
        _executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=_threads(), thread_name_prefix="study-tile")
    return _executor
