"""A trainer of your own: plain minibatch SGD on a linear model, in numpy.

    study run --spec examples/numpy_trainer.toml --storage sqlite:///storage/examples.db

or from Python: `study.run("examples/numpy_trainer.toml", trainer=train)`.

It follows the contract of `run.trainer = "module:function"` (study/trainers/user.py):
`train(config, data)` trains one trial and returns a mapping with at least
`train_loss` and `val_loss`. The model is linear whatever the spec's [model] section
says (it ignores `model.hidden`, `activation` and `dropout`), the optimizer plain SGD
whatever `train.optimizer` says, and the loss the mean squared error (regression data);
with `model.hidden = []` and `train.optimizer = "sgd"` the keras trainer trains the same
model the same way, and a test (tests/test_user_trainer.py) checks that their final
losses agree within seed noise. It never imports TensorFlow.

What it does as the keras trainer does: Glorot-uniform initial weights and zero biases
drawn from `config.seed`, which also draws each epoch's order of the training rows;
the trial's budget (`config.plan(data.n_train)`: the epochs, the last one possibly
partial); `train_loss` is the last epoch's mean batch loss weighted by the batches' rows,
each batch's loss taken before its update (as `model.fit` reports it); `val_loss` the
loss on the validation set after each epoch. It stops at the first epoch whose loss is
not finite, and hands back the initial weights' loss so the study judges a blow-up by
its own rule (`train.divergence_factor`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from study import Dataset, TrialConfig


def train(config: TrialConfig, data: Dataset) -> dict[str, Any]:
    if data.task != "regression":
        raise ValueError(f"this example fits regression data (mse), not a {data.task} task")
    x, y = data.flat().x_train.astype(np.float64), data.y_train.astype(np.float64)
    xv, yv = data.flat().x_val.astype(np.float64), data.y_val.astype(np.float64)
    n, features = x.shape
    outputs = y.shape[1]
    rng = np.random.default_rng(config.seed)
    limit = np.sqrt(6.0 / (features + outputs))  # Glorot uniform, Keras' Dense default
    w = rng.uniform(-limit, limit, size=(features, outputs))
    b = np.zeros(outputs)
    lr = config.learning_rate

    def loss(xs: np.ndarray, ys: np.ndarray) -> float:
        return float(np.mean((xs @ w + b - ys) ** 2))

    plan = config.plan(n)
    every = config.curve_every(n)
    train_curve: list[float] = []
    val_curve: list[float] = []
    step_losses: list[float] = []
    window: list[float] = []
    initial = loss(x, y)
    with np.errstate(over="ignore", invalid="ignore"):
        for epoch in range(plan.epochs):
            order = rng.permutation(n)
            if epoch == plan.epochs - 1:
                order = order[:plan.last_rows]  # the budget ends inside this epoch
            total = 0.0
            for start in range(0, len(order), config.batch_size):
                rows = order[start:start + config.batch_size]
                error = x[rows] @ w + b - y[rows]
                batch_loss = float(np.mean(error ** 2))
                total += batch_loss * len(rows)
                if every:
                    window.append(batch_loss)
                    if len(window) == every:
                        step_losses.append(float(np.mean(window)))
                        window = []
                # The gradient of the mean over rows and outputs of the squared error.
                grad = 2.0 * error / error.size
                w -= lr * (x[rows].T @ grad)
                b -= lr * grad.sum(axis=0)
            train_curve.append(total / len(order))
            val_curve.append(loss(xv, yv))
            if not np.isfinite(train_curve[-1]):
                break  # diverged: the study says so from the curve
        full, norm = loss(x, y), float(np.linalg.norm(w))
    result: dict[str, Any] = {
        "train_loss": train_curve[-1],
        "val_loss": val_curve[-1],
        "train_curve": train_curve,
        "val_curve": val_curve,
        "initial_loss": initial,
        "full_train_loss": full,
        "weight_norm": norm,  # not ours: stored as the user attribute user.weight_norm
    }
    if every:
        result["step_every"] = every
        result["step_losses"] = step_losses
    return result
