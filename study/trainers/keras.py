"""The reference trainer: the article's loop, one `model.fit` per trial.

`tf.keras` `Sequential` + `model.fit`, `clear_session()` per trial, exactly as the
article trains; the other trainers are judged against this one.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Sequence
from typing import Any

from study.data import Dataset
from study.spec import ModelSpec
from study.trainers._tf import tensorflow
from study.trainers.base import Monitor, Status, TrialConfig, TrialResult, no_monitor


def build_model(model: ModelSpec, n_features: int) -> Any:
    """The article's MLP: Dense(h, activation) per hidden width, then Dense(1)."""
    tensorflow()
    import keras

    layers: list[Any] = [keras.Input(shape=(n_features,))]
    layers += [keras.layers.Dense(width, activation=model.activation) for width in model.hidden]
    layers.append(keras.layers.Dense(1))
    return keras.Sequential(layers)


def make_optimizer(config: TrialConfig) -> Any:
    import keras

    return keras.optimizers.Adam(learning_rate=config.learning_rate)


def _shuffled_batches(data: Dataset, config: TrialConfig) -> Any:
    """The training set, reshuffled every epoch, in batches with the last one partial.

    `model.fit` on numpy arrays shuffles with an op whose seed is fixed once
    `set_random_seed` has run, so every epoch would replay the first epoch's order; a
    seeded `shuffle(reshuffle_each_iteration=True)` draws a fresh order each epoch and
    the same sequence of orders for the same seed.
    """
    tf = tensorflow()
    n = data.n_train
    return (tf.data.Dataset.from_tensor_slices((data.x_train, data.y_train))
            .shuffle(n, seed=config.seed, reshuffle_each_iteration=True)
            .batch(config.batch_size))


class KerasTrainer:
    name = "keras"
    batch_limit = 1  # one model at a time; the runner tells each result as it lands

    def train(
        self, configs: Sequence[TrialConfig], data: Dataset, monitor: Monitor = no_monitor
    ) -> list[TrialResult]:
        return [self._train_one(i, config, data, monitor) for i, config in enumerate(configs)]

    def _train_one(
        self, index: int, config: TrialConfig, data: Dataset, monitor: Monitor
    ) -> TrialResult:
        tensorflow()
        import keras

        keras.backend.clear_session()
        # Seeds the initial weights and every epoch's shuffle, so a trial is repeatable.
        keras.utils.set_random_seed(config.seed)
        model = build_model(config.model, data.x_train.shape[1])
        model.compile(optimizer=make_optimizer(config), loss="mean_squared_error")
        watch = _watch_class()(index, monitor)
        start = time.perf_counter()
        history = model.fit(
            _shuffled_batches(data, config),
            shuffle=False,  # the dataset reshuffles itself every epoch
            epochs=config.train.epochs,
            validation_data=(data.x_val, data.y_val),
            # One pass over the held-out set per epoch; batching it changes nothing.
            validation_batch_size=len(data.x_val),
            callbacks=[watch],
            verbose=0,
        )
        train_curve = [float(v) for v in history.history["loss"]]
        val_curve = [float(v) for v in history.history.get("val_loss", [])]
        if watch.diverged_epoch is None:
            full = float(
                model.evaluate(data.x_train, data.y_train, batch_size=data.n_train, verbose=0)
            )
        else:
            full = float("nan")
        seconds = time.perf_counter() - start
        epochs_done = len(train_curve)
        steps = epochs_done * math.ceil(data.n_train / config.batch_size)
        status: Status = (
            "diverged" if watch.diverged_epoch else "pruned" if watch.pruned else "complete"
        )
        return TrialResult(
            status=status,
            train_curve=train_curve,
            val_curve=val_curve,
            full_train_loss=full,
            steps=steps,
            seconds=seconds,
            diverged_epoch=watch.diverged_epoch,
        )


@functools.cache
def _watch_class() -> type:
    tensorflow()
    import keras

    class Watch(keras.callbacks.Callback):  # type: ignore[misc]
        """Stops a fit when its loss turns NaN/inf (diverged) or the monitor says prune."""

        def __init__(self, index: int, monitor: Monitor) -> None:
            super().__init__()
            self.index = index
            self.monitor = monitor
            self.diverged_epoch: int | None = None
            self.pruned = False

        def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
            logs = logs or {}
            loss = float(logs.get("loss", float("nan")))
            val = float(logs.get("val_loss", float("nan")))
            if not math.isfinite(loss):
                self.diverged_epoch = epoch + 1
                self.model.stop_training = True
                return
            if self.monitor(self.index, epoch + 1, loss, val):
                self.pruned = True
                self.model.stop_training = True

    return Watch
