"""Per-row losses, their derivatives with respect to the output, and accuracy, as
Keras computes them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from study.trainers._tf import tensorflow

Tensor = Any  # a tf.Tensor; TensorFlow ships no type stubs
Weights = list[npt.NDArray[np.float32]]  # [kernel_1, bias_1, kernel_2, bias_2, ...]

def _mse(pred: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """Per-row loss (members, rows, 1) and its derivative with respect to `pred` (its
    shape). With several outputs, the mean over them, as keras.losses.MeanSquaredError."""
    err = pred - y
    outputs = int(pred.shape[-1])
    if outputs == 1:
        return err * err, 2.0 * err
    tf = tensorflow()
    return tf.reduce_mean(err * err, axis=-1, keepdims=True), err * (2.0 / outputs)


def _cross_entropy(pred: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """Binary cross-entropy of a logit, as keras.losses.BinaryCrossentropy(from_logits=True)
    computes it (tf.nn.sigmoid_cross_entropy_with_logits); its derivative sigmoid - y."""
    tf = tensorflow()
    y = tf.broadcast_to(y, tf.shape(pred))  # the held-out labels are shared by all members
    return tf.nn.sigmoid_cross_entropy_with_logits(labels=y, logits=pred), tf.sigmoid(pred) - y


def _sparse_cross_entropy(pred: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """Softmax cross-entropy of the logits `pred` (members, rows, classes) against the
    integer labels `y` (rows, 1 per member, or shared), as
    keras.losses.SparseCategoricalCrossentropy(from_logits=True) computes it: per row
    logsumexp(logits) - logits[label], (members, rows, 1); its derivative softmax - onehot.

    Written out rather than by tf.nn.sparse_softmax_cross_entropy_with_logits (Keras'
    op): the fused op has no second derivative, which the sharpness probe takes.
    """
    tf = tensorflow()
    labels = tf.cast(tf.broadcast_to(y, tf.concat([tf.shape(pred)[:-1], [1]], 0)), tf.int32)
    picked = tf.gather(pred, labels, axis=2, batch_dims=2)
    loss = tf.reduce_logsumexp(pred, axis=2, keepdims=True) - picked
    onehot = tf.one_hot(labels[:, :, 0], tf.shape(pred)[2], dtype=pred.dtype)
    return loss, tf.nn.softmax(pred) - onehot


# Per-row loss (members, rows, 1) and d(loss)/d(pred) (the shape of `pred`), beside a
# linear output layer.
LOSSES: dict[str, Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]] = {
    "mse": _mse, "cross_entropy": _cross_entropy, "sparse_cross_entropy": _sparse_cross_entropy}


def _correct(loss: str, pred: Tensor, y: Tensor) -> Tensor:
    """Per row, 1.0 where the prediction is the label, (members, rows): Keras'
    BinaryAccuracy(threshold=0) on a logit, or SparseCategoricalAccuracy (the largest
    logit) for integer labels."""
    tf = tensorflow()
    label = tf.cast(y[..., 0], tf.float32)
    if loss == "cross_entropy":
        hit = tf.equal(tf.cast(pred[:, :, 0] > 0.0, tf.float32), label)
    else:
        hit = tf.equal(tf.cast(tf.argmax(pred, axis=2), tf.float32), label)
    return tf.cast(hit, tf.float32)
