"""The reference trainer: the article's loop, one `model.fit` per trial.

`tf.keras` `Sequential` + `model.fit`, `clear_session()` per trial, exactly as the
article trains; the other trainers are judged against this one. Optimizers and
learning-rate schedules are Keras's own classes (`keras.optimizers`,
`keras.optimizers.schedules`), built from the spec in `make_optimizer`.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from study.data import Dataset
from study.models import build_model
from study.spec import AnalysisSpec, TrainSpec
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
from study.trainers.probes import SHARPNESS, noise_extras, noise_rows, top_eigenvalue
from study.trainers.schedule import Schedule

Weights = list[npt.NDArray[np.float32]]


# keras.activations' functions by name, to read a layer's activation back.
_ACTIVATION_NAMES = ("relu", "tanh", "sigmoid", "gelu", "linear", "softmax", "selu", "elu",
                     "silu", "swish", "softplus", "softsign", "exponential", "leaky_relu",
                     "relu6", "hard_sigmoid", "hard_silu", "mish", "log_softmax")


def activation_name(fn: Any) -> str | None:
    """The keras.activations name of `fn` (a layer's `activation`), None for other code."""
    import keras

    for name in _ACTIVATION_NAMES:
        if getattr(keras.activations, name, None) is fn:
            return name
    return None


def output_activation(model: Any) -> str | None:
    """Whether the model's last layer ends in a softmax or sigmoid ("softmax", "sigmoid"):
    then it outputs probabilities rather than logits. None otherwise."""
    layers = getattr(model, "layers", None) or [None]
    name = activation_name(getattr(layers[-1], "activation", None))
    return name if name in ("softmax", "sigmoid") else None


def make_loss(train: TrainSpec, model: Any = None) -> Any:
    """Mean squared error, binary cross-entropy on the output logit, or softmax
    cross-entropy of the output logits against integer labels.

    A model whose output layer ends in a softmax or sigmoid outputs probabilities, so
    its cross-entropy is compiled with from_logits=False. Keras then takes the logits
    the activation recorded on its output (`_keras_logits`, keras/src/backend/tensorflow/
    nn.py `_get_logits`) and computes the loss from them, unclipped, as from_logits=True
    on those logits would.
    """
    import keras

    logits = output_activation(model) is None
    if train.loss == "cross_entropy":
        return keras.losses.BinaryCrossentropy(from_logits=logits)
    if train.loss == "sparse_cross_entropy":
        return keras.losses.SparseCategoricalCrossentropy(from_logits=logits)
    return keras.losses.MeanSquaredError()


def make_metrics(train: TrainSpec, model: Any = None) -> list[Any]:
    """The accuracy of a classification loss, named "accuracy" (none for mse).

    A logit output decides binary as logit > 0, not Keras' default threshold of 0.5; a
    sigmoid output as probability > 0.5, the same decision. A multi-class decision is
    the largest output.
    """
    import keras

    if train.loss == "cross_entropy":
        threshold = 0.5 if output_activation(model) == "sigmoid" else 0.0
        return [keras.metrics.BinaryAccuracy(name="accuracy", threshold=threshold)]
    if train.loss == "sparse_cross_entropy":
        return [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
    return []


def probe_loss(train: TrainSpec, n_outputs: int, model: Any = None) -> Any:
    """The loss as the probes differentiate it, twice for the sharpness.

    TensorFlow's fused sparse softmax cross-entropy has no second derivative; the dense
    softmax cross-entropy of the one-hot labels is the same function and has one.
    """
    if train.loss != "sparse_cross_entropy":
        return make_loss(train, model)
    import keras

    tf = tensorflow()
    dense = keras.losses.CategoricalCrossentropy(from_logits=output_activation(model) is None)

    def loss(y: Any, logits: Any) -> Any:
        return dense(tf.one_hot(tf.cast(tf.reshape(y, [-1]), tf.int32), n_outputs), logits)

    return loss


def keras_schedule(s: Schedule) -> Any:
    """The Keras schedule (or constant rate) a `Schedule` describes; see schedule.py."""
    import keras

    schedules = keras.optimizers.schedules
    if s.kind == "constant":
        return s.peak
    if s.kind == "step":
        return schedules.PiecewiseConstantDecay(list(s.boundaries), list(s.values))
    # "warmup" is CosineDecay with alpha = 1: after the warm-up its factor is exactly 1.
    alpha = 1.0 if s.kind == "warmup" else 0.0
    if s.warmup:
        return schedules.CosineDecay(0.0, s.decay_steps, alpha=alpha, warmup_target=s.peak,
                                     warmup_steps=s.warmup)
    return schedules.CosineDecay(s.peak, s.decay_steps, alpha=alpha)


def make_optimizer(config: TrialConfig, total_steps: int) -> Any:
    """Keras 3's optimizer for the trial, with its defaults, at the trial's schedule."""
    import keras

    t = config.train
    lr = keras_schedule(Schedule.of(t, config.learning_rate, total_steps))
    if t.optimizer == "sgd":
        return keras.optimizers.SGD(learning_rate=lr)
    if t.optimizer == "momentum":
        return keras.optimizers.SGD(learning_rate=lr, momentum=t.momentum, nesterov=t.nesterov)
    if t.optimizer == "rmsprop":
        return keras.optimizers.RMSprop(learning_rate=lr)
    return keras.optimizers.Adam(learning_rate=lr)


def _rows(data: Dataset, config: TrialConfig, shuffle: bool) -> Any:
    """The training rows, in a fresh seeded order every time the dataset is iterated.

    `model.fit` on numpy arrays shuffles with an op whose seed is fixed once
    `set_random_seed` has run, so every epoch would replay the first epoch's order; a
    seeded `shuffle(reshuffle_each_iteration=True)` draws a fresh order each epoch and
    the same sequence of orders for the same seed. Datasets derived from this one
    (`take`, `batch`) draw from the same sequence. `shuffle=False` keeps the given order.
    """
    tf = tensorflow()
    rows = tf.data.Dataset.from_tensor_slices((data.x_train, data.y_train))
    if not shuffle:
        return rows
    return rows.shuffle(data.n_train, seed=config.seed, reshuffle_each_iteration=True)


def _shuffled_batches(data: Dataset, config: TrialConfig) -> Any:
    """Whole epochs: a fresh order each, in batches with the last one partial."""
    return _rows(data, config, True).batch(config.batch_size)


class KerasProbe:
    """Gradient-noise and sharpness measurements on a Keras model (see probes.py)."""

    def __init__(self, model: Any, loss: Any) -> None:
        tf = tensorflow()
        self.model = model
        self.variables = list(model.trainable_variables)

        def grad_sq(xb: Any, yb: Any) -> Any:
            with tf.GradientTape() as tape:
                value = loss(yb, model(xb, training=True))
            grads = tape.gradient(value, self.variables)
            return tf.add_n([tf.reduce_sum(tf.square(g)) for g in grads])

        def hvp(x: Any, y: Any, vs: list[Any]) -> list[Any]:
            # Nested tapes: the gradient of (grad loss . v) is H v.
            with tf.GradientTape() as outer:
                with tf.GradientTape() as inner:
                    value = loss(y, model(x, training=False))
                grads = inner.gradient(value, self.variables)
                gv = tf.add_n([tf.reduce_sum(g * v) for g, v in zip(grads, vs, strict=True)])
            return outer.gradient(gv, self.variables)  # type: ignore[no-any-return]

        # Traced once per batch shape: hundreds of eager tapes would dominate a trial.
        self._grad_sq = tf.function(grad_sq)
        self._hvp = tf.function(hvp)

    def noise_norms(self, x: npt.NDArray[np.float32], y: npt.NDArray[np.float32],
                    rows: npt.NDArray[np.int64]) -> list[float]:
        """|G_B|^2 of the minibatch gradient on each row set of `rows` (repeats, B).

        The gradient is taken in training mode (as training takes it), which moves a
        BatchNormalization layer's moving statistics: they are put back afterwards, so a
        probe leaves the model as training left it."""
        state = [v.numpy() for v in self.model.non_trainable_variables]
        try:
            return [float(self._grad_sq(x[r], y[r])) for r in rows]
        finally:
            for v, value in zip(self.model.non_trainable_variables, state, strict=True):
                v.assign(value)

    def sharpness(self, x: npt.NDArray[np.float32], y: npt.NDArray[np.float32],
                  iterations: int) -> float:
        """The top Hessian eigenvalue of the mean loss on (x, y) at the model's weights."""
        tf = tensorflow()
        shapes = [tuple(v.shape) for v in self.variables]
        sizes = [int(np.prod(s)) for s in shapes]
        xt, yt = tf.constant(x), tf.constant(y)

        def product(flat: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
            parts = np.split(flat[0], np.cumsum(sizes)[:-1])
            vs = [tf.constant(p.reshape(s), tf.float32) for p, s in zip(parts, shapes, strict=True)]
            out = self._hvp(xt, yt, vs)
            return np.concatenate([np.asarray(h, np.float64).ravel() for h in out])[None, :]

        return float(top_eigenvalue(product, 1, sum(sizes), iterations)[0])


class KerasFit(NamedTuple):
    result: TrialResult
    initial: Weights  # the weights training started from
    final: Weights


def fit_trial(index: int, config: TrialConfig, data: Dataset, monitor: Monitor = no_monitor,
              *, initial_weights: Sequence[npt.ArrayLike] | None = None,
              shuffle: bool = True) -> KerasFit:
    """One trial by `model.fit`, under its budget (TrainSpec.plan).

    A budget that ends mid-epoch is a second `fit` of one epoch on the first rows of the
    next order (`take` on the same shuffled dataset, so it continues the sequence of
    orders). For tests that replay it: `initial_weights` replaces Keras's Glorot draw and
    `shuffle=False` trains the rows in the order given every epoch.
    """
    tensorflow()
    import keras

    keras.backend.clear_session()
    # Seeds the initial weights and every epoch's shuffle, so a trial is repeatable.
    keras.utils.set_random_seed(config.seed)
    n_outputs = output_width(config.train, data)
    model = build_model(config.model, data.input_shape, n_outputs)
    if initial_weights is not None:
        model.set_weights([np.asarray(w, np.float32) for w in initial_weights])
    initial = [np.array(w) for w in model.get_weights()]
    plan = config.plan(data.n_train)
    loss = make_loss(config.train, model)
    model.compile(optimizer=make_optimizer(config, plan.steps), loss=loss,
                  metrics=make_metrics(config.train, model))
    # The scale a blow-up is judged against: the initial weights' loss on the training
    # set, evaluated as the loss after training is (`full` below).
    limit = divergence_limit(config.train, float(model.evaluate(
        data.x_train, data.y_train, batch_size=data.n_train, verbose=0, return_dict=True)["loss"]))
    analysis: AnalysisSpec = config.analysis
    probe = KerasProbe(model, probe_loss(config.train, n_outputs, model)) \
        if analysis.noise or analysis.sharpness else None
    noise: dict[int, tuple[list[float], list[float]]] = {}

    def measure(epoch: int) -> None:
        assert probe is not None
        small, big = noise_rows(config.seed, epoch, analysis.noise_repeats,
                                analysis.noise_batches, data.n_train)
        noise[epoch] = (probe.noise_norms(data.x_train, data.y_train, small),
                        probe.noise_norms(data.x_train, data.y_train, big))

    if 0 in analysis.noise_epochs:
        measure(0)
    watch = _watch_class()(index, monitor, measure if analysis.noise else None,
                           set(analysis.noise_epochs), limit)
    every = config.curve_every(data.n_train)
    # Rows of epoch e (from 0): the budget's last epoch may be partial (TrainSpec.plan).
    curve = _step_curve_class()(every, config.batch_size, lambda e: (
        plan.last_rows if e == plan.epochs - 1 else data.n_train)) if every else None
    rows = _rows(data, config, shuffle)
    common: dict[str, Any] = dict(
        shuffle=False,  # the dataset reshuffles itself every epoch
        validation_data=(data.x_val, data.y_val),
        # One pass over the held-out set per epoch; batching it changes nothing.
        validation_batch_size=len(data.x_val),
        callbacks=[watch] if curve is None else [watch, curve],
        verbose=0,
    )
    start = time.perf_counter()
    whole = plan.epochs if plan.last_rows == data.n_train else plan.epochs - 1
    histories = []
    if whole:
        histories.append(model.fit(rows.batch(config.batch_size), epochs=whole, **common))
    if whole < plan.epochs and not watch.stopped:
        histories.append(model.fit(rows.take(plan.last_rows).batch(config.batch_size),
                                   initial_epoch=whole, epochs=plan.epochs, **common))
    train_curve = [float(v) for h in histories for v in h.history["loss"]]
    val_curve = [float(v) for h in histories for v in h.history.get("val_loss", [])]
    train_accuracy = [float(v) for h in histories for v in h.history.get("accuracy", [])]
    val_accuracy = [float(v) for h in histories for v in h.history.get("val_accuracy", [])]
    status: Status = (
        "diverged" if watch.diverged_epoch else "pruned" if watch.pruned else "complete"
    )
    full = float("nan")
    if watch.diverged_epoch is None:
        full = float(model.evaluate(data.x_train, data.y_train, batch_size=data.n_train,
                                    verbose=0, return_dict=True)["loss"])
    extras = noise_extras(analysis.noise_batches, noise)
    if probe is not None and analysis.sharpness and status == "complete":
        extras[SHARPNESS] = probe.sharpness(data.x_train, data.y_train,
                                            analysis.sharpness_iterations)
    seconds = time.perf_counter() - start
    result = TrialResult(
        status=status,
        train_curve=train_curve,
        val_curve=val_curve,
        full_train_loss=full,
        steps=plan.steps_after(len(train_curve)),
        seconds=seconds,
        diverged_epoch=watch.diverged_epoch,
        extras=extras,
        train_accuracy_curve=train_accuracy,
        val_accuracy_curve=val_accuracy,
        step_every=every,
        step_losses=[] if curve is None else curve.losses,
    )
    final = [np.array(w) for w in model.get_weights()]
    if config.train.keep_weights != "none" and status != "diverged":
        result.weights = final
    return KerasFit(result, initial, final)


class KerasTrainer:
    name = "keras"
    batch_limit = 1  # one model at a time; the runner tells each result as it lands

    def claim_size(self, pending: Sequence[TrialConfig], n_train: int, seconds: float) -> int:
        # One trial is the least a claim can be: a kill loses at most the trial in hand,
        # however long it is.
        return min(1, len(pending))

    def train(
        self, configs: Sequence[TrialConfig], data: Dataset, monitor: Monitor = no_monitor
    ) -> list[TrialResult]:
        return [fit_trial(i, config, data, monitor).result for i, config in enumerate(configs)]


@functools.cache
def _watch_class() -> type:
    tensorflow()
    import keras

    class Watch(keras.callbacks.Callback):  # type: ignore[misc]
        """Stops a fit when its loss diverges (NaN, inf or above `limit`, see
        base.diverges) or the monitor says prune; measures the noise scale after the
        epochs that ask for it."""

        def __init__(self, index: int, monitor: Monitor,
                     measure: Callable[[int], None] | None, at: set[int],
                     limit: float) -> None:
            super().__init__()
            self.index = index
            self.monitor = monitor
            self.measure = measure
            self.at = at
            self.limit = limit
            self.diverged_epoch: int | None = None
            self.pruned = False

        @property
        def stopped(self) -> bool:
            return self.diverged_epoch is not None or self.pruned

        def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
            logs = logs or {}
            loss = float(logs.get("loss", float("nan")))
            val = float(logs.get("val_loss", float("nan")))
            accuracy = float(logs.get("val_accuracy", float("nan")))
            if diverges(loss, self.limit):
                self.diverged_epoch = epoch + 1
                self.model.stop_training = True
                return
            if self.measure is not None and epoch + 1 in self.at:
                self.measure(epoch + 1)
            if self.monitor(self.index, epoch + 1, loss, val, accuracy):
                self.pruned = True
                self.model.stop_training = True

    return Watch


@functools.cache
def _step_curve_class() -> type:
    tensorflow()
    import keras

    class StepCurve(keras.callbacks.Callback):  # type: ignore[misc]
        """The mean batch loss of every `every` optimizer steps, counted across epochs
        (and across the fits of one trial) from its first step: `losses`, complete
        windows only.

        `logs["loss"]` after a batch is Keras 3's running mean over the epoch so far,
        weighted by rows (the loss tracker adds each batch's mean loss times its rows),
        so a batch's own loss is the change in the running total, mean x rows seen,
        over its rows; the epoch's last batch may be partial, which `rows` (the rows of
        epoch e, from 0) tells. The totals are taken in float64, so over whole batches
        a window's sum telescopes to the difference of two of them: its error is that
        of two float32 running means, not one per step. A partial batch of r rows
        after R is resolved to about float32's eps x (R / r) x running mean.
        """

        def __init__(self, every: int, batch_size: int, rows: Callable[[int], int]) -> None:
            super().__init__()
            self.every = every
            self.batch_size = batch_size
            self.rows = rows
            self.losses: list[float] = []
            self._window = 0.0  # the sum of the batch losses since the last record
            self._in_window = 0
            self._epoch_rows = self._seen = 0
            self._total = 0.0  # the epoch's running total before the batch

        def on_epoch_begin(self, epoch: int, logs: dict[str, float] | None = None) -> None:
            # model.fit resets its loss tracker at every epoch's start.
            self._epoch_rows, self._seen, self._total = self.rows(epoch), 0, 0.0

        def on_train_batch_end(self, batch: int, logs: dict[str, float] | None = None) -> None:
            mean = float((logs or {}).get("loss", float("nan")))
            n = max(1, min(self.batch_size, self._epoch_rows - self._seen))
            self._seen += n
            total = mean * self._seen
            self._window += (total - self._total) / n
            self._total = total
            self._in_window += 1
            if self._in_window == self.every:
                self.losses.append(self._window / self.every)
                self._window, self._in_window = 0.0, 0

    return StepCurve
