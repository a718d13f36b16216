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
