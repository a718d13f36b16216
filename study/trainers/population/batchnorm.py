"""keras.layers.BatchNormalization over a row's features (axis -1), fused on a population.

Each member normalizes by the statistics of its own batch while training and by its
own moving averages when evaluating, as Keras' layer does under `training=True` and
`training=False` (keras/src/layers/normalization/batch_normalization.py `call`):

- training: `tf.nn.moments` over the batch's rows (the variance biased, its gradient
  stopped at the mean), then `tf.nn.batch_normalization`: `inv = rsqrt(var + eps) *
  gamma`, `x * inv + (beta - mean * inv)`; and after each batch the moving statistics
  `moving * momentum + batch_statistic * (1 - momentum)`;
- evaluating: the same formula on the moving mean and variance.

A member's batch is its valid rows of a micro-batch (`rows`, 0/1): the last batch of an
epoch may be short, its padding rows counted in no statistic and given no gradient. The
statistics are a batch's only when the micro-batch is the whole batch, so a network with
BatchNormalization trains each batch size at its own micro-batch (layout.plan_groups).

The moving statistics are weights like the others in a member's parameter row (Keras'
`get_weights()` lists them after gamma and beta), but no optimizer touches them: the
program writes each batch's new values (`Layout.statistics`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

Tensor = Any  # a tf.Tensor; TensorFlow ships no type stubs


@dataclass(frozen=True)
class BatchNorm:
    """keras.layers.BatchNormalization(axis=-1) on rows of `width` features."""

    width: int
    epsilon: float
    momentum: float
    center: bool
    scale: bool

    @property
    def shapes(self) -> tuple[tuple[int, ...], ...]:
        # get_weights() order: gamma, beta (each if used), moving_mean, moving_variance.
        return ((self.width,),) * (self.trainable + 2)

    @property
    def trainable(self) -> int:
        """How many of its weights are trained (gamma, beta); the last two are statistics."""
        return int(self.scale) + int(self.center)


def forward(tf: Any, op: BatchNorm, params: Sequence[Tensor], x: Tensor, rows: Tensor | None
            ) -> tuple[Tensor, tuple[Tensor, ...]]:
    """The layer on `x` (members, rows, width) and what `backward` and `moving` need.

    `rows` (members, rows) 0/1: training on those rows' statistics; None: evaluating on
    the moving ones."""
    gamma = params[0][:, None, :] if op.scale else None
    beta = params[op.trainable - 1][:, None, :] if op.center else None
    if rows is None:
        mean = params[op.trainable][:, None, :]
        variance = params[op.trainable + 1][:, None, :]
        extra: tuple[Tensor, ...] = ()
    else:
        valid = rows[:, :, None]
        # At least one row: a micro-step past a member's rows holds none of them.
        count = tf.maximum(tf.reduce_sum(valid, axis=1, keepdims=True), 1.0)
        mean = tf.reduce_sum(x * valid, axis=1, keepdims=True) / count
        variance = tf.reduce_sum(tf.math.squared_difference(x, tf.stop_gradient(mean)) * valid,
                                 axis=1, keepdims=True) / count
    r = tf.math.rsqrt(variance + op.epsilon)
    inv = r * gamma if gamma is not None else r
    shift = beta - mean * inv if beta is not None else -mean * inv
    if rows is not None:
        extra = (mean, variance, r, valid, count)
    return x * inv + shift, extra


def moving(op: BatchNorm, params: Sequence[Tensor], extra: tuple[Tensor, ...]
           ) -> tuple[Tensor, Tensor]:
    """The moving mean and variance after a training batch, Keras' update in its op order."""
    mean, variance = extra[0][:, 0, :], extra[1][:, 0, :]
    moving_mean, moving_variance = params[op.trainable], params[op.trainable + 1]
    return (moving_mean * op.momentum + mean * (1.0 - op.momentum),
            moving_variance * op.momentum + variance * (1.0 - op.momentum))


def backward(tf: Any, op: BatchNorm, params: Sequence[Tensor], x: Tensor,
             extra: tuple[Tensor, ...], delta: Tensor, last: bool
             ) -> tuple[list[Tensor], Tensor]:
    """The gradients of gamma and beta (those used, in order), each (members, width), and
    d(loss)/dx (`delta` itself when `last`: nothing before needs it), given `delta` =
    d(loss)/d(output) of a training forward pass, zero on rows that are not the batch's.

    The textbook gradient through the batch statistics: with xhat = (x - mean) r and
    g = delta gamma, dx = r (g - mean(g) - xhat mean(g xhat)), means over the batch's
    rows; rows outside the batch get none.
    """
    mean, _variance, r, valid, count = extra
    xhat = (x - mean) * r
    grads = []
    if op.scale:
        grads.append(tf.reduce_sum(delta * xhat, axis=1))
    if op.center:
        grads.append(tf.reduce_sum(delta, axis=1))
    if last:
        return grads, delta
    g = delta * params[0][:, None, :] if op.scale else delta
    dx = r * (g - tf.reduce_sum(g, axis=1, keepdims=True) / count
              - xhat * (tf.reduce_sum(g * xhat, axis=1, keepdims=True) / count))
    return grads, dx * valid
