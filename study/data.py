"""Synthetic data sets, generated in memory: nothing is downloaded.

`linear` is the article's regression set, drawn by the very same numpy calls in the
same order (seed, X, then w, then the noise), so `data.seed = 0` reproduces its X and y
bit for bit. The validation set reuses the true weights w and draws fresh inputs and
noise from `val_seed`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from study.spec import DataSpec

Array = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Dataset:
    x_train: Array
    y_train: Array
    x_val: Array
    y_val: Array
    task: str  # "regression"; the trainers pick the loss from the spec

    @property
    def n_train(self) -> int:
        return int(self.x_train.shape[0])


def make_dataset(spec: DataSpec) -> Dataset:
    if spec.kind == "linear":
        return _linear(spec)
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
