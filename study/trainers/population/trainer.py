"""The population trainer: the runner's seam (claims, groups, tiles) around the program."""

from __future__ import annotations

import concurrent.futures
import math
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from study.data import Dataset
from study.spec import CLASSIFICATION_LOSSES, Spec
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
from study.trainers.population import program as programs
from study.trainers.population.layout import (
    Group,
    Kind,
    _has_gpu,
    _parallel_tiles,
    _pool,
    _rounds,
    _speed_key,
    _SpeedKey,
    glorot_weights,
    kind_of,
    plan_groups,
    tile_size,
)
from study.trainers.population.network import (
    batch_statistics,
    initial_weights,
    net_of,
    with_loss,
)
from study.trainers.population.optimizers import OPTIMIZERS
from study.trainers.population.probes import noise_norms, sharpness
from study.trainers.population.program import CHUNK_EPOCHS, mean_loss, program_key
from study.trainers.probes import SHARPNESS, noise_extras, noise_rows
from study.trainers.schedule import Schedule

Tensor = Any  # a tf.Tensor; TensorFlow ships no type stubs
Weights = list[npt.NDArray[np.float32]]  # [kernel_1, bias_1, kernel_2, bias_2, ...]

# The most trials the runner hands over at once; within it, `claim_size` sizes each
# claim by the time it will take (run.checkpoint_seconds).
BATCH_LIMIT = 400
# With a pruner, trials must finish before others can be compared with them (Optuna's
# median pruner waits for 5 completed trials), so claims are smaller.
PRUNING_BATCH_LIMIT = 16

# The step-curve interval of a member that records nothing: no trial takes so many steps.
NEVER = 2**31 - 1

# Builds Keras models (a builder's initial weights) one group at a time: groups train
# on threads side by side, and Keras' name counters are not guarded for that.
_KERAS = threading.Lock()


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

        `pending` is every trial the runner has left to start, in the order it takes
        them; a claim is at most `batch_limit` of them. The first call fixes the groups'
        micro-batches from all of `pending` (a batch size with enough work in the study
        gets a program of its own) and the tile from the first claim's groups
        (`plan_groups`, `tile_size`); every claim is then trained in tiles of
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
            # Micro-batches weigh the work of every pending trial, the tile the first
            # claim's largest group (each group's tiles run on the cores together).
            self._learn_micros(pending, n_train)
            first = plan_groups(pending[:self.batch_limit], n_train, self.micros,
                                whole=batch_statistics)
            self.tile = tile_size(max(len(g.members) for g in first))
        pending = pending[:self.batch_limit]
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
            for g in plan_groups(pending[:k], n_train, self.micros, whole=batch_statistics):
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
        for g in plan_groups(configs, n_train, self.micros, whole=batch_statistics):
            known = self.micros.setdefault(kind_of(configs[g.members[0]], n_train), [])
            if g.micro not in known:
                known.append(g.micro)


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
    weights per config, as `model.get_weights()` gives them) replaces the Glorot draw,
    `shuffle=False` trains the rows in the order given every epoch, and `final_weights`,
    if given, receives each config's weights after training.

    A config with `train.keep_weights = "best"` gets its trained weights in its result
    (`TrialResult.weights`, in `model.get_weights()` order, moving statistics included)
    unless it diverged; without it, the weights stay on the device.

    `tile` fixes the members per program call (by default each group picks its own,
    `tile_size`) and `micros` the groups' micro-batches (see `plan_groups`), so that
    calls of other sizes run the same programs; `timings`, if given, receives each
    group, its tile and its seconds (its own work: its tiles' time over the cores, and
    what it ran outside them).
    """
    if chunk_epochs < 1:
        raise ValueError(f"chunk_epochs: expected a positive number of epochs, got {chunk_epochs}")
    # An MLP flattens its inputs (the keras model's Flatten): images become rows here.
    input_shape = data.input_shape
    data = data.flat()
    if initial_weights is not None and len(initial_weights) != len(configs):
        raise ValueError(f"initial_weights: {len(initial_weights)} weight lists for "
                         f"{len(configs)} configs")
    results: list[TrialResult | None] = [None] * len(configs)
    finals: list[Weights | None] = [None] * len(configs)
    for model, train in {(c.model, c.train) for c in configs}:
        # Read each model now (cached): whether it normalizes by batch statistics decides
        # its groups (`batch_statistics`).
        net_of(model, input_shape, output_width(train, data))
    groups = plan_groups(configs, data.n_train, micros, whole=batch_statistics)
    watch = monitor
    if len(groups) > 1:
        # Groups train side by side, so their tiles share the cores (a group with fewer
        # tiles than cores would leave one idle), and the monitor is called by one at a
        # time.
        lock = threading.Lock()

        def watch(member: int, epoch: int, loss: float, val: float, val_acc: float) -> bool:
            with lock:
                return monitor(member, epoch, loss, val, val_acc)

    def train_group(group: Group) -> tuple[Group, int, float, list[TrialResult],
                                           list[Weights | None]]:
        weights = None if initial_weights is None else [initial_weights[i] for i in group.members]
        group_tile = tile_size(len(group.members)) if tile is None else tile
        out, trained, seconds = _train_group(
            group, [configs[i] for i in group.members], data, watch, chunk_epochs, weights,
            shuffle, group_tile, input_shape, final_weights is not None)
        return group, group_tile, seconds, out, trained

    if len(groups) == 1:
        done = [train_group(groups[0])]
    else:
        with concurrent.futures.ThreadPoolExecutor(len(groups), "study-group") as pool:
            done = list(pool.map(train_group, groups))
    for group, group_tile, seconds, out, trained in done:
        if timings is not None:
            timings.append((group, group_tile, seconds))
        for i, r, w in zip(group.members, out, trained, strict=True):
            results[i], finals[i] = r, w
    if final_weights is not None:
        final_weights[:] = [w for w in finals if w is not None]
    return [r for r in results if r is not None]


def _train_group(
    group: Group,
    configs: Sequence[TrialConfig],
    data: Dataset,
    monitor: Monitor,
    chunk_epochs: int,
    initial: Sequence[Weights] | None,
    shuffle: bool,
    tile: int,
    input_shape: tuple[int, ...],
    export: bool = False,
) -> tuple[list[TrialResult], list[Weights | None], float]:
    """Train one group: its results, its final weights (with `export`, else Nones), and
    the seconds of its own work (its tiles' time over the cores that run them side by
    side, and its time outside them), which excludes waiting for the tiles of groups
    training beside it. With train.keep_weights = "best" each result carries its weights
    too; otherwise, and without `export` or sharpness, they are never copied off the
    device."""
    tf = tensorflow()
    start = time.perf_counter()
    n_members = len(configs)
    n = data.n_train
    n_outputs = output_width(group.train, data)
    net = net_of(group.model, input_shape, n_outputs)
    if not isinstance(net, str):
        net = with_loss(net, group.train.loss)
    if isinstance(net, str):
        raise ValueError(f"the population trainer does not support {net}")
    layout = net.layout
    if initial is None:
        # The shorthand draws from numpy (the same distribution as Keras, another
        # stream); a builder's model is built per member as the keras trainer builds it.
        with _KERAS:
            initial = [glorot_weights(c.seed, layout.sizes) if not group.model.builder
                       else initial_weights(group.model, input_shape, n_outputs, c.seed)
                       for c in configs]
    for i, weights in enumerate(initial):
        shapes = [tuple(np.shape(w)) for w in weights]
        if shapes != layout.shapes:
            raise ValueError(f"initial_weights[{i}]: shapes {shapes}, expected {layout.shapes}")
    train, analysis = group.train, group.analysis
    optimizer = OPTIMIZERS[train.optimizer](train)
    # Each member's steps per point of its step curve, 0 for none.
    every = [c.curve_every(n) for c in configs]
    key = program_key(group.model, train, data.n_features, group.micro, chunk_epochs,
                      n_outputs, net, whole=all(c.batch_size == group.micro for c in configs),
                      curve=any(every))
    classifies = key.loss in CLASSIFICATION_LOSSES
    program = programs.program_for(key)
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
    # A member that records nothing counts its steps against an interval they never
    # reach (its planned steps are fewer), so the program needs no case for it.
    padded_every = [k or NEVER for k in [*every, *[every[-1]] * pad]]
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
        seeds = np.array([c.seed for c in padded[rows]], np.int32)
        tiles.append(_TileState(
            theta=theta,
            slots=tuple(tf.zeros_like(theta) for _ in range(optimizer.n_slots)),
            steps=tf.zeros([tile], tf.float32),
            lr=tf.constant([c.learning_rate for c in padded[rows]], tf.float32),
            batch=tf.constant([c.batch_size for c in padded[rows]], tf.int32),
            seeds=tf.constant(seeds),
            seed_values=seeds,
            epochs=tf.constant([p.epochs for p in padded_plans[rows]], tf.int32),
            last_rows=tf.constant([p.last_rows for p in padded_plans[rows]], tf.int32),
            sched=tf.constant([[s.decay_steps, s.warmup] for s in schedules[rows]], tf.float32),
            bounds=tf.constant(np.array([s.boundaries for s in schedules[rows]], np.float32)
                               .reshape(tile, key.boundaries)),
            values=tf.constant(np.array([s.values for s in schedules[rows]], np.float32)
                               .reshape(tile, key.boundaries + 1)),
            limit=tf.constant(limits[rows], tf.float32),
            every=np.array(padded_every[rows], np.int64),
            window=tf.zeros([tile], tf.float32)))

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
    # Each member's completed window sums, in order (the program's records, chunk by chunk).
    windows: list[list[float]] = [[] for _ in configs]

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
    timing = threading.Lock()
    tile_seconds = waited = 0.0
    done = 0
    while done < epochs and active.any():
        n_run = min(chunk_epochs, epochs - done)
        # A chunk ends where the noise scale is measured: at the weights of that epoch.
        n_run = min([n_run] + [e - done for e in noise_at if e > done])

        def run_tile(t: int, s: _TileState, done: int = done, n_run: int = n_run
                     ) -> tuple[tuple[npt.NDArray[np.float32], ...], list[list[float]]]:
            nonlocal tile_seconds
            began = time.perf_counter()
            orders = programs.shuffle_orders(s.seed_values, done, n_run, n, chunk_epochs, shuffle)
            recording = (tf.constant(s.every, tf.int32), s.window) if key.curve else ()
            before = s.steps.numpy().astype(np.int64) if key.curve else None
            s.theta, s.slots, s.steps, *outs = program(
                s.theta, s.slots, s.steps, s.lr, s.batch, s.seeds,
                tf.constant(active[t * tile:(t + 1) * tile]), tf.constant(done, tf.int32),
                tf.constant(n_run, tf.int32), x, y, xv, yv, s.epochs, s.last_rows, s.sched,
                s.bounds, s.values, s.limit, tf.constant(orders), *recording)
            records: list[list[float]] = [[] for _ in range(tile)]
            if before is not None:
                *outs, s.window, buffer = outs
                # The windows each member completed in this chunk, in order.
                made = s.steps.numpy().astype(np.int64) // s.every - before // s.every
                found = programs.windows_of(buffer.numpy(), n_run)
                records = [found[m][:made[m]] for m in range(tile)]
            # Per epoch: training loss, validation loss, training and validation accuracy.
            got = tuple(o.numpy()[:n_run] for o in outs)
            with timing:
                tile_seconds += time.perf_counter() - began
            return got, records

        # XLA runs a CPU program on one core; tiles run side by side, one per core.
        began = time.perf_counter()
        ran = list(_pool().map(run_tile, range(n_tiles), tiles))
        waited += time.perf_counter() - began
        outs = [got for got, _ in ran]
        losses, vals, accs, val_accs = (np.concatenate([o[i] for o in outs], axis=1)
                                        for i in range(4))
        for m, made in enumerate([r for _, records in ran for r in records][:n_members]):
            windows[m] += made
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
    keep = train.keep_weights == "best"
    trained = np.concatenate([s.theta.numpy() for s in tiles]) \
        if keep or export or analysis.sharpness else None
    # Diverged weights have no loss; a member pruned mid-chunk trained on past the
    # epoch it was pruned at, so its final weights are not the pruned ones.
    unknown = [status[m] == "diverged" or bool(stopped_early[m]) for m in range(n_members)]
    sharp: dict[int, float] = {}
    if analysis.sharpness:
        assert trained is not None
        who = [m for m in range(n_members) if status[m] == "complete"]
        sharp = dict(zip(who, sharpness(key, trained[who], x, y, analysis.sharpness_iterations,
                                        tile), strict=True))
    spent = time.perf_counter() - start
    seconds = spent - waited + tile_seconds / _parallel_tiles()
    share = spent / n_members
    results = []
    for m in range(n_members):
        extras = noise_extras(analysis.noise_batches, noise[m])
        if m in sharp:
            extras[SHARPNESS] = sharp[m]
        steps = plans[m].steps_after(len(train_curves[m]))
        # A member pruned mid-chunk trained on to the chunk's end: its windows past the
        # epoch it stopped at are not its trial's.
        kept = windows[m][:steps // every[m]] if every[m] else []
        results.append(TrialResult(
            status=status[m], train_curve=train_curves[m], val_curve=val_curves[m],
            full_train_loss=float("nan") if unknown[m] else float(full[m]),
            steps=steps, seconds=share,
            diverged_epoch=diverged[m], extras=extras, train_accuracy_curve=train_accuracy[m],
            val_accuracy_curve=val_accuracy[m], step_every=every[m],
            step_losses=[v / every[m] for v in kept],
            # A diverged member's weights are no result; one pruned mid-chunk trained on
            # past its trial's end, so its weights are not the trial's.
            weights=layout.unflatten(trained[m].copy()) if keep and trained is not None
            and not unknown[m] else None))
    finals: list[Weights | None] = [None] * n_members
    if export and trained is not None:
        finals = [layout.unflatten(trained[m]) for m in range(n_members)]
    return results, finals, seconds


@dataclass
class _TileState:
    """One tile's members: their training state, and what is fixed per member."""

    theta: Tensor
    slots: tuple[Tensor, ...]
    steps: Tensor
    lr: Tensor
    batch: Tensor
    seeds: Tensor
    seed_values: npt.NDArray[np.int32]  # the seeds, for the shuffle (program.shuffle_orders)
    epochs: Tensor  # epochs of its budget (TrainSpec.plan)
    last_rows: Tensor  # rows trained in its last epoch
    sched: Tensor  # (members, 2): the schedule's decay steps and warm-up steps
    bounds: Tensor  # (members, boundaries): step decay's boundaries
    values: Tensor  # (members, boundaries + 1): step decay's rates
    limit: Tensor  # the epoch loss above which a member diverges (base.divergence_limit)
    every: npt.NDArray[np.int64]  # steps per point of its step curve (NEVER: none)
    window: Tensor  # the sum of the batch losses since its last point
