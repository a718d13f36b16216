"""The compiled program: the epoch loop of a tile of members, steps included."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from study.spec import CLASSIFICATION_LOSSES, ModelSpec, TrainSpec
from study.trainers._tf import tensorflow
from study.trainers.population import layers
from study.trainers.population.layers import mix as _mix
from study.trainers.population.layout import EVAL_BUDGET, Layout
from study.trainers.population.losses import LOSSES, _correct
from study.trainers.population.network import Net, shorthand_net
from study.trainers.population.optimizers import OPTIMIZERS

Tensor = Any  # a tf.Tensor; TensorFlow ships no type stubs
Weights = list[npt.NDArray[np.float32]]  # [kernel_1, bias_1, kernel_2, bias_2, ...]

# Epochs per call of the compiled program; the monitor sees them all after each call.
CHUNK_EPOCHS = 10


@dataclass(frozen=True)
class _ProgramKey:
    """What a compiled program is specialized on, besides its tensors' shapes."""

    net: Net
    loss: str
    optimizer: str
    optimizer_args: tuple[float | bool, ...]  # SGD momentum's (momentum, nesterov)
    schedule: str
    warmup: bool  # whether the schedule starts with a linear warm-up
    boundaries: int  # step decay's boundaries
    micro: int
    chunk_epochs: int
    # Whether every member's batch is one micro-batch: then each step's gradient is the
    # batch's, applied as it is, with no accumulator carried from step to step.
    whole: bool = False
    # Whether any member records its step curve (`TrialConfig.curve_every`): then the
    # program carries each member's window of batch losses and a buffer of the chunk's
    # records; without one it carries neither.
    curve: bool = False

    @property
    def layout(self) -> Layout:
        return self.net.layout


def program_key(model: ModelSpec, train: TrainSpec, n_features: int, micro: int = 1,
                chunk_epochs: int = CHUNK_EPOCHS, n_outputs: int = 1,
                net: Net | None = None, whole: bool = False, curve: bool = False
                ) -> _ProgramKey:
    """The key of the program that trains `model` by `train`; the probes (`noise_norms`,
    `sharpness`) read only its model and loss. `net` is the model read as a Net (see
    network.py), the shorthand's by default."""
    if net is None:
        shorthand = shorthand_net(model, n_features, n_outputs)
        if isinstance(shorthand, str):
            raise ValueError(f"the population trainer does not support {shorthand}")
        net = shorthand
    return _ProgramKey(
        net, train.loss, train.optimizer,
        (train.momentum, train.nesterov) if train.optimizer == "momentum" else (),
        train.schedule, train.warmup_fraction > 0,
        len(train.decay_at) if train.schedule == "step" else 0,
        micro, chunk_epochs, whole, curve)


_programs: dict[_ProgramKey, Callable[..., Any]] = {}


def program_for(key: _ProgramKey) -> Callable[..., Any]:
    # tf.function keeps one trace (and XLA one executable) per input shape signature,
    # so a second claim of the same shape reuses the compiled program.
    if key not in _programs:
        _programs[key] = _build_program(key)
    return _programs[key]


def _forward(tf: Any, key: _ProgramKey, views: list[Tensor], x: Tensor) -> Tensor:
    """Predictions of every member, (members, rows, outputs), Dropout off; x is (rows,
    features) or per member. The logits, for a model with a softmax or sigmoid output."""
    return layers.forward(tf, key.net.ops, views, x)


def mean_loss(key: _ProgramKey, theta: Tensor, x: Tensor, y: Tensor) -> Tensor:
    """Mean loss of every member on all of (x, y), (members,), in blocks that bound memory."""
    return evaluate(key, theta, x, y, accuracy=False)[0]


def evaluate(key: _ProgramKey, theta: Tensor, x: Tensor, y: Tensor, accuracy: bool = True
             ) -> tuple[Tensor, Tensor | None]:
    """Mean loss and, for a classification loss when `accuracy`, the accuracy of every
    member on all of (x, y), each (members,), in blocks that bound memory."""
    tf = tensorflow()
    return _evaluate(tf, key, key.layout.views(tf, theta), x, y, accuracy)


def _evaluate(tf: Any, key: _ProgramKey, views: list[Tensor], x: Tensor, y: Tensor,
              accuracy: bool = True) -> tuple[Tensor, Tensor | None]:
    """`evaluate` on the members' parameters as `Layout.views` gives them."""
    n = int(x.shape[0])
    members = int(views[0].shape[0])
    block = max(1, min(n, EVAL_BUDGET // (members * max(key.layout.sizes))))
    loss_fn = LOSSES[key.loss]
    counts = accuracy and key.loss in CLASSIFICATION_LOSSES
    if block == n:
        pred = _forward(tf, key, views, x)
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
        pred = _forward(tf, key, views, xb)
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
               scale: Tensor, drop: tuple[Tensor, Tensor] | None = None
               ) -> tuple[Tensor, Tensor, Tensor]:
    """Per member: the sum of its valid rows' losses, the number of them predicted right
    (zeros for a regression loss), and the flat gradient of `scale` x the loss sum
    (scale = 1/batch rows: the gradient of the batch mean loss), zero in the columns of
    BatchNormalization's moving statistics (not trained).

    xb (members, rows, features), yb (members, rows, 1), valid (members, rows) 0/1,
    scale (members,). `drop`, for a network with Dropout: each member's mask base and
    the rows' positions in the epoch (see layers.dropout_keep). Backpropagation written
    out (layers.py), which XLA compiles smaller than the tape's.
    """
    views = key.layout.views(tf, theta)
    loss_sum, right, grads, _ = _piece_gradients(tf, key, views, xb, yb, valid, scale, drop)
    return loss_sum, right, tf.concat(
        [tf.zeros([v.shape[0], math.prod(v.shape[1:])], tf.float32) if g is None else g
         for g, v in zip(grads, views, strict=True)], axis=1)


def _piece_gradients(tf: Any, key: _ProgramKey, views: list[Tensor], xb: Tensor, yb: Tensor,
                     valid: Tensor, scale: Tensor, drop: tuple[Tensor, Tensor] | None = None
                     ) -> tuple[Tensor, Tensor, list[Tensor | None], dict[int, Tensor]]:
    """`_gradients` on the members' parameters as `Layout.views` gives them, with each
    parameter tensor's gradient apart, (members, its size), None for BatchNormalization's
    moving statistics; and their values after this batch, by index (see
    `layers.moving_statistics`). BatchNormalization normalizes by the statistics of each
    member's `valid` rows."""
    ops = key.net.ops
    members = views[0].shape[0]
    masks = None
    if drop is not None:
        masks = [layers.dropout_keep(tf, op, *drop) if isinstance(op, layers.Dropout) else None
                 for op in ops]
    caches: list[layers.Cache] = []
    h = layers.forward(tf, ops, views, xb, masks, caches, rows=valid)
    row_loss, d_pred = LOSSES[key.loss](h, yb)
    delta = d_pred * (valid[:, :, None] * scale[:, None, None])
    grads = layers.backward(tf, ops, views, caches, delta)
    right = tf.reduce_sum(_correct(key.loss, h, yb) * valid, axis=1) \
        if key.loss in CLASSIFICATION_LOSSES else tf.zeros([members], tf.float32)
    return (tf.reduce_sum(row_loss * valid[:, :, None], axis=[1, 2]), right, grads,
            layers.moving_statistics(ops, views, caches))


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


def _build_program(key: _ProgramKey) -> Callable[..., Any]:
    tf = tensorflow()
    optimizer = OPTIMIZERS[key.optimizer](_train_of(key))
    layout = key.layout
    b0 = key.micro
    f32 = tf.float32
    statistics = set(layout.statistics)
    if statistics and not key.whole:
        raise ValueError("BatchNormalization trains only on whole batches (a micro-batch "
                         "per batch)")

    def dropout_base(seeds: Tensor, epoch: Tensor) -> Tensor:
        """Each member's Dropout mask base in `epoch`: its own stream, apart from the
        shuffle's (a salted seed)."""
        golden = tf.constant(0x9E3779B9, tf.uint32)
        salted = tf.bitwise.bitwise_xor(tf.cast(seeds, tf.uint32), tf.constant(0x5BD1E995, tf.uint32))
        return _mix(tf, _mix(tf, salted) + tf.cast(epoch, tf.uint32) * golden)

    def epoch(params: list[Tensor], slots: list[tuple[Tensor, ...]], steps_taken: Tensor,
              lr: Tensor, batch: Tensor, active: Tensor, order: Tensor, drop_base: Tensor, x: Tensor,
              y: Tensor, rows: Tensor, sched: Tensor, bounds: Tensor, values: Tensor,
              curve: tuple[Tensor, ...], every: Tensor) -> tuple[Any, ...]:
        """One pass over the first `rows` (per member) of each member's order;
        `drop_base` seeds the members' Dropout masks of the epoch. `curve` is (window,)
        with `key.curve`, else empty; it comes back as (window, this epoch's records,
        (micro-steps, members)) (see `_record`)."""
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

        def step(k: Tensor, params: list[Tensor], slots: list[tuple[Tensor, ...]],
                 acc: list[Tensor], steps_taken: Tensor, sse: Tensor, hits: Tensor,
                 curve: tuple[Tensor, ...]) -> tuple[Any, ...]:
            idx = tf.slice(order, [0, k * b0], [members, b0])
            xb, yb = tf.gather(x, idx), tf.gather(y, idx)  # (members, b0, features)
            # The last micro-batch of the epoch, or of a member's rows, may be short.
            valid = tf.cast(k * b0 + tf.range(b0)[None, :] < rows[:, None], f32)
            drop = (drop_base, k * b0 + tf.range(b0)) if key.net.dropout else None
            scale = tf.gather(scale_table, k)
            loss_sum, right, grads, stats = _piece_gradients(
                tf, key, layout.shaped(tf, params), xb, yb, valid, scale, drop)
            # A statistic's "gradient" slot carries its new value (whole batches only:
            # see batchnorm.py); the optimizer never sees it.
            grads = [tf.reshape(stats[i], [members, -1]) if g is None else g
                     for i, g in enumerate(grads)]
            acc = grads if key.whole else [a + g for a, g in zip(acc, grads, strict=True)]
            # Every member's update is computed; only those whose batch ends here (and
            # that are not frozen) keep it. Skipping the arithmetic for the others with a
            # tf.cond measured no faster on a CPU: XLA then copies the carried state.
            ends = tf.gather(ends_table, k)
            apply = tf.logical_and(active, ends)[:, None]
            stepped = steps_taken + 1.0
            rate = _rate(tf, key, lr, steps_taken, sched, bounds, values)[:, None]
            count = stepped[:, None]
            # The optimizer's state first, then the parameters from it, each parameter
            # tensor on its own: no step concatenates or slices the members' rows.
            slots = _barrier(tf, [
                s if i in statistics else
                tuple(tf.where(apply, new, old) for new, old in zip(
                    optimizer.slots(g, s, rate, count), s, strict=True))
                for i, (g, s) in enumerate(zip(acc, slots, strict=True))])
            params = [tf.where(apply, g if i in statistics
                               else optimizer.param(p, g, s, rate, count), p)
                      for i, (p, g, s) in enumerate(zip(params, acc, slots, strict=True))]
            acc = [] if key.whole else [tf.where(ends[:, None], tf.zeros_like(a), a) for a in acc]
            if key.curve:
                curve = _record(tf, curve, k, loss_sum * scale, active, apply[:, 0], stepped,
                                every)
            steps_taken = tf.where(apply[:, 0], stepped, steps_taken)
            return k + 1, params, slots, acc, steps_taken, sse + loss_sum, hits + right, curve

        if key.curve:
            # One row per micro-step, appended in place (a TensorArray is a
            # dynamic-update-slice under XLA), instead of a scatter into the chunk's
            # records on every step: a scatter per step cost a fifth of the training.
            curve = (curve[0], tf.TensorArray(f32, size=micro_steps, element_shape=[members]))
        _, params, slots, _, steps_taken, sse, hits, curve = tf.while_loop(
            lambda k, *_: k < micro_steps, step,
            (tf.constant(0), params, slots, [] if key.whole else [tf.zeros_like(p) for p in params],
             steps_taken, tf.zeros([members], f32), tf.zeros([members], f32), curve))
        if key.curve:
            curve = (curve[0], curve[1].stack())
        # The epoch's mean loss and accuracy over its rows, as model.fit's trackers.
        return (params, slots, steps_taken, sse / tf.cast(rows, f32),
                hits / tf.cast(rows, f32), curve)

    def run(theta: Tensor, slots: tuple[Tensor, ...], steps_taken: Tensor, lr: Tensor,
            batch: Tensor, seeds: Tensor, active: Tensor, first_epoch: Tensor, n_epochs: Tensor,
            x: Tensor, y: Tensor, xv: Tensor, yv: Tensor, epochs: Tensor, last_rows: Tensor,
            sched: Tensor, bounds: Tensor, values: Tensor, limit: Tensor, orders: Tensor,
            *recording: Tensor) -> tuple[Any, ...]:
        """`orders` (members, chunk_epochs, n): each member's row order of each epoch of
        the chunk (see `shuffle_orders`).

        With `key.curve`, `recording` is (every, window): each member's steps per record
        (int32; more than its planned steps: it records nothing) and the sum of the batch
        losses of its window so far (the steps since its last record, which may lie in
        an earlier chunk). The outputs then end with the window after the chunk and the
        chunk's records, (chunk epochs, micro-steps, members): a window sum where a
        member completed one, NO_RECORD elsewhere (`windows_of` reads them)."""
        members = theta.shape[0]
        n = x.shape[0]
        # Inside the program each parameter tensor is a tensor of its own, (members, its
        # size), and so is its optimizer state: the members' flat rows are cut once per
        # call, not sliced and concatenated on every step.
        params = layout.pieces(theta)
        slot_pieces = [layout.pieces(s) for s in slots]
        state = [tuple(s[i] for s in slot_pieces) for i in range(len(params))]
        every = tf.zeros([members], tf.int32)
        curve: tuple[Tensor, ...] = ()
        if key.curve:
            every, window = recording
            curve = (window, tf.fill([key.chunk_epochs, -(-n // key.micro), members],
                                     NO_RECORD))

        def body(e: Tensor, params: list[Tensor], slots: list[tuple[Tensor, ...]],
                 steps_taken: Tensor, active: Tensor, losses: Tensor, vals: Tensor, accs: Tensor,
                 val_accs: Tensor, curve: tuple[Tensor, ...]) -> tuple[Any, ...]:
            at = first_epoch + e
            # A member whose budget is spent rides along frozen; its last epoch may be
            # partial (TrainSpec.plan).
            live = tf.logical_and(active, at < epochs)
            rows = tf.where(at == epochs - 1, last_rows, n)
            order = tf.gather(orders, e, axis=1)
            params, slots, steps_taken, loss, accuracy, made = epoch(
                params, slots, steps_taken, lr, batch, live, order, dropout_base(seeds, at), x,
                y, rows, sched, bounds, values, curve[:1], every)
            if key.curve:
                window, block = made
                curve = (window, tf.tensor_scatter_nd_update(curve[1], [[e]], block[None]))
            losses = tf.tensor_scatter_nd_update(losses, [[e]], loss[None])
            val_loss, val_accuracy = _evaluate(tf, key, layout.shaped(tf, params), xv, yv)
            vals = tf.tensor_scatter_nd_update(vals, [[e]], val_loss[None])
            if val_accuracy is not None:
                accs = tf.tensor_scatter_nd_update(accs, [[e]], accuracy[None])
                val_accs = tf.tensor_scatter_nd_update(val_accs, [[e]], val_accuracy[None])
            # Diverged: frozen from the end of this epoch on, as model.fit stops there.
            # `loss <= limit` in float32 is base.diverges' test (limit is float32 there
            # too); is_finite is for an inf loss under an inf limit (no factor).
            active = tf.logical_and(active, tf.logical_and(tf.math.is_finite(loss),
                                                           loss <= limit))
            return e + 1, params, slots, steps_taken, active, losses, vals, accs, val_accs, curve

        # Per-epoch outputs in fixed-size buffers: XLA needs static shapes, and the
        # last chunk of a study may be shorter than the others. The accuracies stay
        # zero for a regression loss.
        buffer = tf.zeros([key.chunk_epochs, members], f32)
        _, params, state, steps_taken, _, losses, vals, accs, val_accs, curve = tf.while_loop(
            lambda e, *_: e < n_epochs, body,
            (tf.constant(0), params, state, steps_taken, active, buffer, buffer, buffer, buffer,
             curve))
        theta = tf.concat(params, axis=1)
        slots = tuple(tf.concat([s[j] for s in state], axis=1) for j in range(len(slots)))
        return (theta, slots, steps_taken, losses, vals, accs, val_accs, *curve)

    # No autograph: the loops are explicit tf.while_loops, and converting Python source
    # took longer than XLA's compile of the result.
    return tf.function(run, jit_compile=True, autograph=False)  # type: ignore[no-any-return]


# What a micro-step's row of the step-curve records holds where no window ended: losses
# are never negative, so no record is ever this.
NO_RECORD = -1.0


def _record(tf: Any, curve: tuple[Any, ...], k: Tensor, batch_loss: Tensor, live: Tensor,
            stepped: Tensor, count: Tensor, every: Tensor) -> tuple[Any, ...]:
    """The step curve after micro-step `k`: `batch_loss` (members,), this micro-step's
    share of each member's batch mean loss, joins the window of the members training
    (`live`); a member whose update was applied (`stepped`) and whose step count `count`
    is a multiple of its `every` writes its window's sum to row `k` and starts a new
    window; the others write NO_RECORD. The host reads each member's records in order
    (`windows_of`)."""
    window, rows = curve
    window = window + tf.where(live, batch_loss, 0.0)
    done = tf.logical_and(stepped, tf.equal(tf.cast(count, tf.int32) % every, 0))
    rows = rows.write(k, tf.where(done, window, NO_RECORD))
    return tf.where(done, 0.0, window), rows


def windows_of(records: npt.NDArray[np.float32], n_epochs: int) -> list[list[float]]:
    """Each member's window sums, in order, from a chunk's records (chunk epochs,
    micro-steps, members) of which the first `n_epochs` ran."""
    ran = records[:n_epochs]
    flat = ran.reshape(-1, ran.shape[-1])
    return [[float(v) for v in flat[:, m] if v != NO_RECORD] for m in range(flat.shape[1])]


def shuffle_orders(seeds: npt.NDArray[np.int32], first_epoch: int, n_epochs: int, n: int,
                   chunk_epochs: int, shuffle: bool = True) -> npt.NDArray[np.int32]:
    """Each member's order of the n rows in epochs first_epoch.. of a chunk, (members,
    chunk_epochs, n); epochs past `n_epochs` (a chunk cut short) repeat the last.

    A member's order depends on its seed and the epoch alone, not on its tile or claim:
    the rows sorted by a counter-based hash (`layers.mix`) of the seed, the epoch and
    the row. The keys of a member's rows are distinct (the hash is a bijection of
    uint32), so any sort gives the same order. Computed here rather than in the program:
    numpy's sort took 9 ns a row where XLA's took about 80 on this CPU, a quarter of the
    program's time at the larger batch sizes. `shuffle=False`: the rows in the order given.
    """
    members = len(seeds)
    if not shuffle:
        return np.broadcast_to(np.arange(n, dtype=np.int32), (members, chunk_epochs, n))
    u32 = np.uint32
    epochs = first_epoch + np.minimum(np.arange(chunk_epochs), max(n_epochs, 1) - 1)
    with np.errstate(over="ignore"):
        seeded = layers.mix_host(np.asarray(seeds, np.int32).astype(u32))
        base = layers.mix_host(seeded[:, None] + epochs.astype(u32)[None, :] * u32(0x9E3779B9))
        rows = layers.mix_host(np.arange(n, dtype=u32))
        keys = layers.mix_host(base[:, :, None] ^ rows[None, None, :])
    return np.argsort(keys, axis=2).astype(np.int32)


def _barrier(tf: Any, tensors: Any) -> Any:
    """`tensors` (a nest) as they are, behind an XLA optimization barrier: XLA neither
    fuses the ops that make them into those that read them nor the other way round.

    Here it keeps the optimizer's new state computed once, in place, and the parameter
    update reading it: without it XLA recomputed the state inside the parameter update,
    which reads the old state, so every step copied the carried state first. Only speed
    depends on it; where TensorFlow lacks the op, the tensors pass as they are.
    """
    flat = tf.nest.flatten(tensors)
    if not flat:
        return tensors
    try:
        from tensorflow.compiler.tf2xla.python import xla
    except ImportError:  # pragma: no cover - an older or trimmed TensorFlow
        return tensors
    return tf.nest.pack_sequence_as(tensors, list(xla.optimization_barrier(*flat)))


def _train_of(key: _ProgramKey) -> TrainSpec:
    """The optimizer hyperparameters a program key carries, as a TrainSpec."""
    if key.optimizer == "momentum":
        momentum, nesterov = key.optimizer_args
        return TrainSpec(optimizer=key.optimizer, momentum=float(momentum),
                         nesterov=bool(nesterov))
    return TrainSpec(optimizer=key.optimizer)
