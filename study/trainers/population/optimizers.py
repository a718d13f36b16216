"""Optimizers as pure element-wise updates of a population's parameter rows, each
written as Keras 3 writes it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from study.spec import TrainSpec
from study.trainers._tf import tensorflow

Tensor = Any  # a tf.Tensor; TensorFlow ships no type stubs
Weights = list[npt.NDArray[np.float32]]  # [kernel_1, bias_1, kernel_2, bias_2, ...]

# Keras 3's defaults (keras.optimizers.Adam, RMSprop).
ADAM_BETA_1 = 0.9
ADAM_BETA_2 = 0.999
ADAM_EPSILON = 1e-7
RMSPROP_RHO = 0.9
RMSPROP_EPSILON = 1e-7


Slots = tuple[Tensor, ...]


class Optimizer(NamedTuple):
    """An optimizer as a pure, element-wise update, the same for every parameter tensor,
    in two halves: `slots(grad, slots, lr, step) -> slots` updates its state, then
    `param(param, grad, new_slots, lr, step) -> param` the parameter from the new state,
    as Keras orders them. `lr` (this update's rate, after the schedule) and `step` (the
    update's 1-based count, float) broadcast against `param`, one value per member.
    """

    n_slots: int  # state tensors per parameter, each shaped like it, zero at the start
    slots: Callable[[Tensor, Slots, Tensor, Tensor], Slots]
    param: Callable[[Tensor, Tensor, Slots, Tensor, Tensor], Tensor]


def _adam_slots(grad: Tensor, slots: Slots, lr: Tensor, step: Tensor) -> Slots:
    # Written exactly as keras/src/optimizers/adam.py `update_step`, same op order.
    tf = tensorflow()
    m, v = slots
    return m + (grad - m) * (1.0 - ADAM_BETA_1), v + (tf.square(grad) - v) * (1.0 - ADAM_BETA_2)


def _adam_param(param: Tensor, grad: Tensor, slots: Slots, lr: Tensor, step: Tensor) -> Tensor:
    tf = tensorflow()
    m, v = slots
    alpha = lr * tf.sqrt(1.0 - tf.pow(ADAM_BETA_2, step)) / (1.0 - tf.pow(ADAM_BETA_1, step))
    return param - (m * alpha) / (tf.sqrt(v) + ADAM_EPSILON)


def _no_slots(grad: Tensor, slots: Slots, lr: Tensor, step: Tensor) -> Slots:
    return ()


def _sgd_param(param: Tensor, grad: Tensor, slots: Slots, lr: Tensor, step: Tensor) -> Tensor:
    # keras/src/optimizers/sgd.py with momentum 0: `assign_sub(variable, gradient * lr)`.
    return param - grad * lr


def _momentum(momentum: float, nesterov: bool) -> Optimizer:
    # keras/src/optimizers/sgd.py: m = m * momentum - g * lr; then w += m, or with
    # Nesterov w += m * momentum - g * lr.
    def slots(grad: Tensor, slots: Slots, lr: Tensor, step: Tensor) -> Slots:
        (m,) = slots
        return (m * momentum - grad * lr,)

    def param(param: Tensor, grad: Tensor, slots: Slots, lr: Tensor, step: Tensor) -> Tensor:
        (m,) = slots
        return param + (m * momentum - grad * lr) if nesterov else param + m

    return Optimizer(1, slots, param)


def _rmsprop_slots(grad: Tensor, slots: Slots, lr: Tensor, step: Tensor) -> Slots:
    # keras/src/optimizers/rmsprop.py (momentum 0, not centered): v = rho v + (1 - rho) g^2;
    # w -= lr g / sqrt(v + eps), epsilon *inside* the square root (Adam's is outside).
    tf = tensorflow()
    (v,) = slots
    return (RMSPROP_RHO * v + (1 - RMSPROP_RHO) * tf.square(grad),)


def _rmsprop_param(param: Tensor, grad: Tensor, slots: Slots, lr: Tensor, step: Tensor
                   ) -> Tensor:
    tf = tensorflow()
    (v,) = slots
    return param - (lr * grad) / tf.sqrt(v + RMSPROP_EPSILON)


# Each optimizer from the spec's training section (for its hyperparameters).
OPTIMIZERS: dict[str, Callable[[TrainSpec], Optimizer]] = {
    "adam": lambda t: Optimizer(2, _adam_slots, _adam_param),
    "sgd": lambda t: Optimizer(0, _no_slots, _sgd_param),
    "momentum": lambda t: _momentum(t.momentum, t.nesterov),
    "rmsprop": lambda t: Optimizer(1, _rmsprop_slots, _rmsprop_param),
}
