"""Synthetic data sets, generated in memory: nothing is downloaded.

`linear` is the article's regression set, drawn by the very same numpy calls in the
same order (seed, X, then w, then the noise), so `data.seed = 0` reproduces its X and y
bit for bit. The validation set reuses the true weights w and draws fresh inputs and
noise from `val_seed`.

`classification` is a binary set no linear model can fit: standard normal inputs,
labelled 1 where two random projections x.u and x.v have the same sign (an XOR of two
half-spaces through the origin), with `LABEL_NOISE` of the labels flipped so that, as
in the regression set, some loss is irreducible. The validation set shares u and v and
draws fresh inputs and flips from `val_seed`.

`classification` with `n_classes = k` above 2 is a multi-class set, again one no linear
model can fit: standard normal inputs, k random projections x.u_1 .. x.u_k (the columns
of one standard normal (n_features, k) matrix, drawn first, scaled to unit length), and
the label of a row is the projection of largest *magnitude*, argmax_j |x.u_j| (each
class a double cone, not a convex region; the classes are about equally frequent).
`LABEL_NOISE` of the labels are replaced by one of the k - 1 other classes, uniformly,
so the Bayes error is again `LABEL_NOISE`. The validation set shares the projections and
draws fresh inputs and flips from `val_seed`. Labels are float32 integers 0..k-1 in one
column, as the binary set's are. `n_classes = 2` (the default) is the binary set above,
bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from study.spec import DataSpec

Array = npt.NDArray[np.float32]

# Share of `classification` labels flipped at random: the Bayes error of the set.
LABEL_NOISE = 0.1


@dataclass(frozen=True)
class Dataset:
    x_train: Array
    y_train: Array
    x_val: Array
    y_val: Array
    task: str  # "regression" | "classification"; the trainers take the loss from the spec

    @property
    def n_train(self) -> int:
        return int(self.x_train.shape[0])

    @property
    def n_classes(self) -> int:
        """Classes of a classification set, whose labels are 0..k-1: the largest label
        of either split, plus one."""
        return int(max(np.max(self.y_train), np.max(self.y_val))) + 1


def make_dataset(spec: DataSpec) -> Dataset:
    if spec.kind == "linear":
        return _linear(spec)
    if spec.kind == "classification":
        return _classification(spec)
    raise ValueError(f"data.kind: unknown data set {spec.kind!r}")  # validate() stops this first


def _linear(spec: DataSpec) -> Dataset:
    # The article: np.random.seed(0); X = rand(1000, 10);
    # y = X @ rand(10, 1) + rand(1000, 1). RandomState(seed) is the same stream.
    rng = np.random.RandomState(spec.seed)
    x = rng.rand(spec.n_train, spec.n_features)
    w = rng.rand(spec.n_features, 1)
    y = x @ w + rng.rand(spec.n_train, 1)

    val_rng = np.random.RandomState(spec.val_seed)
    x_val = val_rng.rand(spec.n_val, spec.n_features)
    y_val = x_val @ w + val_rng.rand(spec.n_val, 1)
    return Dataset(
        x_train=x.astype(np.float32),
        y_train=y.astype(np.float32),
        x_val=x_val.astype(np.float32),
        y_val=y_val.astype(np.float32),
        task="regression",
    )


def _classification(spec: DataSpec) -> Dataset:
    if spec.n_classes > 2:
        return _multiclass(spec)
    rng = np.random.RandomState(spec.seed)
    u = rng.standard_normal(spec.n_features)
    v = rng.standard_normal(spec.n_features)

    def draw(r: np.random.RandomState, n: int) -> tuple[Array, Array]:
        x = r.standard_normal((n, spec.n_features))
        label = (x @ u) * (x @ v) > 0
        flip = r.rand(n) < LABEL_NOISE
        return x.astype(np.float32), (label ^ flip).astype(np.float32)[:, None]

    x, y = draw(rng, spec.n_train)
    x_val, y_val = draw(np.random.RandomState(spec.val_seed), spec.n_val)
    return Dataset(x_train=x, y_train=y, x_val=x_val, y_val=y_val, task="classification")


def _multiclass(spec: DataSpec) -> Dataset:
    k = spec.n_classes
    rng = np.random.RandomState(spec.seed)
    u = rng.standard_normal((spec.n_features, k))
    # Unit columns: every projection is N(0, 1), so no class wins by a longer vector.
    u /= np.linalg.norm(u, axis=0)

    def draw(r: np.random.RandomState, n: int) -> tuple[Array, Array]:
        x = r.standard_normal((n, spec.n_features))
        label = np.argmax(np.abs(x @ u), axis=1)
        # A flipped label moves to one of the other k - 1 classes, uniformly.
        flip = r.rand(n) < LABEL_NOISE
        label = np.where(flip, (label + r.randint(1, k, n)) % k, label)
        return x.astype(np.float32), label.astype(np.float32)[:, None]

    x, y = draw(rng, spec.n_train)
    x_val, y_val = draw(np.random.RandomState(spec.val_seed), spec.n_val)
    return Dataset(x_train=x, y_train=y, x_val=x_val, y_val=y_val, task="classification")
