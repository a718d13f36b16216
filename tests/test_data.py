from __future__ import annotations

import numpy as np

from study.data import make_dataset
from study.spec import DataSpec


def test_linear_is_the_articles_data_bit_for_bit() -> None:
    # The article's own calls, in its order.
    np.random.seed(0)
    x = np.random.rand(1000, 10)
    y = np.dot(x, np.random.rand(10, 1)) + np.random.rand(1000, 1)
    data = make_dataset(DataSpec())
    np.testing.assert_array_equal(data.x_train, x.astype(np.float32))
    np.testing.assert_array_equal(data.y_train, y.astype(np.float32))
    assert data.task == "regression"


def test_validation_shares_weights_but_not_samples() -> None:
    data = make_dataset(DataSpec())
    assert data.x_val.shape == (1000, 10) and data.y_val.shape == (1000, 1)
    assert not np.allclose(data.x_val, data.x_train)
    # Same true weights: least squares on either set recovers the same w (+ noise mean).
    def fit(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        a = np.hstack([x, np.ones((len(x), 1))])
        return np.linalg.lstsq(a, y, rcond=None)[0][:-1, 0]
    np.testing.assert_allclose(fit(data.x_train, data.y_train), fit(data.x_val, data.y_val),
                               atol=0.1)


def test_sizes_follow_the_spec() -> None:
    data = make_dataset(DataSpec(n_train=50, n_val=20, n_features=3))
    assert data.x_train.shape == (50, 3) and data.x_val.shape == (20, 3) and data.n_train == 50
