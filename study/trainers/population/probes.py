"""The gradient-noise and sharpness probes on a population's weights (see
study/trainers/probes.py for the estimators)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from study.trainers._tf import tensorflow
from study.trainers.population.layout import EVAL_BUDGET, _pool
from study.trainers.population.program import _gradients, _ProgramKey, mean_loss
from study.trainers.probes import hvp_of, top_eigenvalue

Tensor = Any  # a tf.Tensor; TensorFlow ships no type stubs
Weights = list[npt.NDArray[np.float32]]  # [kernel_1, bias_1, kernel_2, bias_2, ...]

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
    members at a time. The Hessian is the trained parameters' (as Keras' probe takes
    its trainable variables): BatchNormalization's moving statistics, constants of the
    evaluated loss, are not among its directions."""
    tf = tensorflow()
    columns = key.layout.trainable_columns()
    every = len(columns) == theta.shape[1]
    # Compiled: eager nested tapes spent most of their time dispatching small ops. Blocks
    # run side by side like the training tiles, the last padded to the block's shape.
    hvp = _hvp_program(key)
    starts = range(0, len(theta), block)

    def run(m0: int) -> list[float]:
        part = theta[m0:m0 + block]
        rows = tf.constant(np.concatenate([part, np.repeat(part[-1:], block - len(part), 0)]))

        def product(v: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
            if not every:
                full = np.zeros((block, theta.shape[1]))
                full[:, columns] = v
                v = full
            out = np.asarray(hvp(rows, tf.constant(v, tf.float32), x, y).numpy(), np.float64)
            return out if every else out[:, columns]

        return [float(v) for v in top_eigenvalue(product, block, len(columns),
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
