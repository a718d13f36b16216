"""Layer math: each fused layer kind's forward pass and its backward pass, written out.

A network is a chain of ops on a population: `h` is (members, rows, width) (or, at the
input of an evaluation, (rows, width) shared by every member), each op's parameters
are views of the members' parameter rows (see layout.py). The backward passes are
written by hand rather than by the tape: one batched matmul per Dense and direction,
which XLA compiles smaller. Each op mirrors the Keras layer it stands for, in Keras'
op order, so that the two trainers agree to float rounding.

BatchNormalization's math, with its batch statistics and moving averages, is in
batchnorm.py.

Flatten and Reshape have no op: inputs are flat rows in row-major order, which is
Keras' order for both, and every fused op works on a row's features as one vector.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from study.trainers.population import batchnorm
from study.trainers.population.batchnorm import BatchNorm

Tensor = Any  # a tf.Tensor; TensorFlow ships no type stubs

# Element-wise activations fused anywhere: keras.activations' functions of these names.
ACTIVATIONS = ("relu", "tanh", "sigmoid", "gelu", "linear")
# Activations fused on the output layer only: the loss takes the logits before them, as
# Keras' cross-entropies do when the model's output carries them (see losses.py).
OUTPUT_ACTIVATIONS = ("softmax", "sigmoid")


@dataclass(frozen=True)
class Dense:
    """keras.layers.Dense without its activation (an `Activation` op follows it)."""

    units_in: int
    units: int
    bias: bool = True

    @property
    def shapes(self) -> tuple[tuple[int, ...], ...]:
        kernel = (self.units_in, self.units)
        return (kernel, (self.units,)) if self.bias else (kernel,)


@dataclass(frozen=True)
class Activation:
    """An element-wise activation, one of ACTIVATIONS other than linear."""

    name: str
    shapes: tuple[tuple[int, ...], ...] = ()


@dataclass(frozen=True)
class Dropout:
    """keras.layers.Dropout: inverted dropout while training, the identity otherwise.

    `index` numbers the network's Dropout layers, so that each draws its own mask.
    """

    rate: float
    width: int
    index: int
    shapes: tuple[tuple[int, ...], ...] = ()


@dataclass(frozen=True)
class LayerNorm:
    """keras.layers.LayerNormalization over a row's features (axis -1)."""

    width: int
    epsilon: float
    center: bool
    scale: bool

    @property
    def shapes(self) -> tuple[tuple[int, ...], ...]:
        # Keras creates gamma before beta: get_weights() lists them in that order.
        return ((self.width,),) * (int(self.scale) + int(self.center))


Op = Dense | Activation | Dropout | LayerNorm | BatchNorm


def activation(tf: Any, name: str) -> tuple[Callable[[Tensor], Tensor],
                                             Callable[[Tensor, Tensor], Tensor]]:
    """The activation and its derivative, the latter from pre-activation z and output a.

    gelu is Keras' default, the exact erf form (`keras.activations.gelu(approximate=False)`,
    tf.nn.gelu under the TensorFlow backend).
    """
    if name == "relu":
        return tf.nn.relu, lambda z, a: tf.cast(z > 0, z.dtype)
    if name == "tanh":
        return tf.tanh, lambda z, a: 1.0 - a * a
    if name == "sigmoid":
        return tf.sigmoid, lambda z, a: a * (1.0 - a)
    if name == "gelu":
        def gelu_grad(z: Tensor, a: Tensor) -> Tensor:
            cdf = 0.5 * (1.0 + tf.math.erf(z * (1.0 / math.sqrt(2.0))))
            return cdf + z * tf.exp(-0.5 * z * z) * (1.0 / math.sqrt(2.0 * math.pi))

        return (lambda z: tf.nn.gelu(z, approximate=False)), gelu_grad
    return (lambda z: z), (lambda z, a: tf.ones_like(z))


def mix(tf: Any, x: Tensor) -> Tensor:
    """A 32-bit integer hash (lowbias32): counter-based randomness, the same on any device."""
    x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, 16))
    x = x * tf.constant(0x7FEB352D, tf.uint32)
    x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, 15))
    x = x * tf.constant(0x846CA68B, tf.uint32)
    return tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, 16))


def mix_host(x: npt.NDArray[np.uint32]) -> npt.NDArray[np.uint32]:
    """`mix` in numpy, bit for bit (uint32 arithmetic wraps in both)."""
    x = x ^ (x >> np.uint32(16))
    x = x * np.uint32(0x7FEB352D)
    x = x ^ (x >> np.uint32(15))
    x = x * np.uint32(0x846CA68B)
    return x ^ (x >> np.uint32(16))


def dropout_keep(tf: Any, op: Dropout, base: Tensor, positions: Tensor) -> Tensor:
    """Which units a Dropout op keeps, 0/1 (members, rows, width).

    Counter-based, like the shuffle: a hash of the member's `base` (its seed and the
    epoch, see program.py), the row's position in the epoch's order, the layer and the
    unit. A member's masks thus depend on its seed alone, not on the micro-batch or the
    tile it trains in. Kept with probability 1 - rate, as Keras' `uniform >= rate`.
    """
    u32 = tf.uint32
    layer = mix(tf, base + tf.constant(((op.index + 1) * 0x85EBCA6B) & 0xFFFFFFFF, u32))
    rows = mix(tf, tf.bitwise.bitwise_xor(layer[:, None], mix(tf, tf.cast(positions, u32))[None]))
    units = mix(tf, tf.cast(tf.range(op.width), u32) + tf.constant(0x9E3779B9, u32))
    keys = mix(tf, tf.bitwise.bitwise_xor(rows[:, :, None], units[None, None, :]))
    uniform = tf.cast(tf.bitwise.right_shift(keys, 8), tf.float32) * (1.0 / (1 << 24))
    return tf.cast(uniform >= op.rate, tf.float32)


@dataclass
class Cache:
    """What an op's backward pass needs from its forward pass."""

    x: Tensor  # its input
    out: Tensor  # its output
    extra: tuple[Tensor, ...] = ()


def forward(tf: Any, ops: Sequence[Op], views: Sequence[Tensor], h: Tensor,
            masks: Sequence[Tensor | None] | None = None, caches: list[Cache] | None = None,
            rows: Tensor | None = None) -> Tensor:
    """The chain's output on `h`. `masks` (one per op; a Dropout's keep mask, else None)
    trains; without them Dropout is the identity, as Keras evaluates. `rows` (members,
    rows) 0/1, the rows of each member's batch, trains BatchNormalization on their
    statistics; without them it normalizes by its moving ones, as Keras evaluates.
    `caches`, if given, receives each op's `Cache` for `backward`."""
    at = 0
    if len(h.shape) == 2 and not (ops and isinstance(ops[0], Dense)):
        members = views[0].shape[0] if views else 1
        h = tf.broadcast_to(h[None], [members, *h.shape])
    for i, op in enumerate(ops):
        params = views[at:at + len(op.shapes)]
        at += len(op.shapes)
        extra: tuple[Tensor, ...] = ()
        x = h
        if isinstance(op, Dense):
            kernel = params[0]
            h = (tf.einsum("nf,mfo->mno", x, kernel) if len(x.shape) == 2
                 else tf.matmul(x, kernel))
            if op.bias:
                h = h + params[1][:, None, :]
        elif isinstance(op, Activation):
            h = activation(tf, op.name)[0](x)
        elif isinstance(op, Dropout):
            mask = masks[i] if masks is not None else None
            if mask is not None:
                # tf.nn.experimental.stateless_dropout's order: scale, then mask.
                h = x * (1.0 / (1.0 - op.rate)) * mask
                extra = (mask,)
        elif isinstance(op, BatchNorm):
            h, extra = batchnorm.forward(tf, op, params, x, rows)
        else:
            h, extra = _layer_norm(tf, op, params, x)
        if caches is not None:
            caches.append(Cache(x, h, extra))
    return h


def _layer_norm(tf: Any, op: LayerNorm, params: Sequence[Tensor], x: Tensor
                ) -> tuple[Tensor, tuple[Tensor, ...]]:
    # keras/src/ops/nn.py `_layer_normalization` (not rms_scaling), with tf.nn.moments,
    # whose variance stops the gradient at the mean: the first derivative is the same
    # either way, but the sharpness probe differentiates this twice, as Keras' does.
    mean = tf.reduce_mean(x, axis=-1, keepdims=True)
    variance = tf.reduce_mean(tf.math.squared_difference(x, tf.stop_gradient(mean)), axis=-1,
                              keepdims=True)
    r = tf.math.rsqrt(variance + op.epsilon)
    inv = r * params[0][:, None, :] if op.scale else r
    res = -mean * inv
    if op.center:
        res = res + params[-1][:, None, :]
    return x * inv + res, (mean, r)


def backward(tf: Any, ops: Sequence[Op], views: Sequence[Tensor], caches: Sequence[Cache],
             delta: Tensor) -> list[Tensor | None]:
    """Each parameter's gradient, (members, size of it), in the order of `views`, given
    `delta` = d(loss)/d(output of the chain); None for BatchNormalization's moving
    statistics, which are not trained (see `moving_statistics`)."""
    members = caches[0].x.shape[0]
    grads: list[Tensor | None] = [None] * len(views)
    ends = [sum(len(o.shapes) for o in ops[:i + 1]) for i in range(len(ops))]
    # Ops before the first with parameters need no delta.
    first = next((i for i, o in enumerate(ops) if o.shapes), len(ops))
    for i in range(len(ops) - 1, first - 1, -1):
        op, cache, end = ops[i], caches[i], ends[i]
        params = views[end - len(op.shapes):end]
        last = i == first
        if isinstance(op, Dense):
            at = end - len(op.shapes)
            grads[at] = tf.reshape(tf.matmul(cache.x, delta, transpose_a=True), [members, -1])
            if op.bias:
                grads[at + 1] = tf.reduce_sum(delta, axis=1)
            if not last:
                delta = tf.matmul(delta, params[0], transpose_b=True)
        elif isinstance(op, Activation):
            delta = delta * activation(tf, op.name)[1](cache.x, cache.out)
        elif isinstance(op, Dropout):
            if cache.extra:
                delta = delta * (1.0 / (1.0 - op.rate)) * cache.extra[0]
        elif isinstance(op, BatchNorm):
            at = end - len(op.shapes)
            trained, delta = batchnorm.backward(tf, op, params, cache.x, cache.extra, delta, last)
            grads[at:at + op.trainable] = trained
        else:
            delta = _layer_norm_backward(tf, op, params, cache, delta, grads, end, last)
    return grads


def moving_statistics(ops: Sequence[Op], views: Sequence[Tensor], caches: Sequence[Cache]
                      ) -> dict[int, Tensor]:
    """BatchNormalization's moving statistics after a training forward pass (`caches`
    from `forward` with `rows`), by their index in `views`."""
    out: dict[int, Tensor] = {}
    at = 0
    for op, cache in zip(ops, caches, strict=True):
        if isinstance(op, BatchNorm):
            params = views[at:at + len(op.shapes)]
            out[at + op.trainable], out[at + op.trainable + 1] = batchnorm.moving(
                op, params, cache.extra)
        at += len(op.shapes)
    return out


def _layer_norm_backward(tf: Any, op: LayerNorm, params: Sequence[Tensor], cache: Cache,
                         delta: Tensor, grads: list[Tensor | None], end: int, last: bool
                         ) -> Tensor:
    mean, r = cache.extra
    xhat = (cache.x - mean) * r
    at = end - len(op.shapes)
    if op.scale:
        grads[at] = tf.reduce_sum(delta * xhat, axis=1)
    if op.center:
        grads[end - 1] = tf.reduce_sum(delta, axis=1)
    if last:
        return delta
    g = delta * params[0][:, None, :] if op.scale else delta
    return r * (g - tf.reduce_mean(g, axis=-1, keepdims=True)
                - xhat * tf.reduce_mean(g * xhat, axis=-1, keepdims=True))
