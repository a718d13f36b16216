from __future__ import annotations

import numpy as np

from study.data import LABEL_NOISE, make_dataset
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


def test_classification_is_seeded_balanced_and_noisy_as_documented() -> None:
    spec = DataSpec(kind="classification", n_train=4000, n_val=3000)
    data = make_dataset(spec)
    assert data.task == "classification"
    assert data.x_train.shape == (4000, 10) and data.y_train.shape == (4000, 1)
    assert data.x_val.shape == (3000, 10) and data.y_val.shape == (3000, 1)
    assert set(np.unique(data.y_train)) == {0.0, 1.0}
    assert 0.4 < data.y_train.mean() < 0.6  # the XOR of two half-spaces splits evenly
    again = make_dataset(spec)
    np.testing.assert_array_equal(again.x_train, data.x_train)
    np.testing.assert_array_equal(again.y_val, data.y_val)
    assert not np.allclose(data.x_val[:100], data.x_train[:100])
    other = make_dataset(DataSpec(kind="classification", n_train=4000, n_val=3000, val_seed=7))
    np.testing.assert_array_equal(other.x_train, data.x_train)  # the training set stays
    assert not np.array_equal(other.x_val, data.x_val)


def test_classification_labels_follow_the_rule_but_for_the_flips() -> None:
    spec = DataSpec(kind="classification", n_train=5000, n_val=10)
    data = make_dataset(spec)
    rng = np.random.RandomState(spec.seed)  # the generator's own draws: u, then v
    u, v = rng.standard_normal(10), rng.standard_normal(10)
    x = data.x_train.astype(np.float64)
    rule = ((x @ u) * (x @ v) > 0).astype(np.float32)
    flipped = float(np.mean(rule != data.y_train[:, 0]))
    assert abs(flipped - LABEL_NOISE) < 0.015
    # No linear model separates it: least squares on the labels explains almost nothing.
    a = np.c_[x, np.ones(len(x))]
    fit = a @ np.linalg.lstsq(a, data.y_train[:, 0], rcond=None)[0]
    assert np.mean((fit > 0.5) == (data.y_train[:, 0] > 0.5)) < 0.6


def test_multiclass_is_seeded_balanced_and_noisy_as_documented() -> None:
    spec = DataSpec(kind="classification", n_classes=4, n_train=8000, n_val=3000)
    data = make_dataset(spec)
    assert data.task == "classification" and data.n_classes == 4
    assert data.y_train.shape == (8000, 1) and data.y_train.dtype == np.float32
    counts = np.bincount(data.y_train[:, 0].astype(int))
    assert len(counts) == 4 and counts.min() > 0.2 * 8000  # about a quarter each
    again = make_dataset(spec)
    np.testing.assert_array_equal(again.x_train, data.x_train)
    np.testing.assert_array_equal(again.y_val, data.y_val)
    other = make_dataset(DataSpec(kind="classification", n_classes=4, n_train=8000, n_val=3000,
                                  val_seed=7))
    np.testing.assert_array_equal(other.y_train, data.y_train)  # the training set stays
    assert not np.array_equal(other.x_val, data.x_val)
    # The generator's own draws: the projections first, unit columns; the label is the one
    # of largest magnitude, but for LABEL_NOISE of the rows, moved to another class.
    u = np.random.RandomState(spec.seed).standard_normal((10, 4))
    u /= np.linalg.norm(u, axis=0)
    for x, y in ((data.x_train, data.y_train), (data.x_val, data.y_val)):
        rule = np.argmax(np.abs(x.astype(np.float64) @ u), axis=1)
        assert abs(float(np.mean(rule != y[:, 0])) - LABEL_NOISE) < 0.015
    # No linear model fits it: one least-squares fit per class (one-vs-rest) gets
    # little more than the largest class right.
    a = np.c_[data.x_train, np.ones(8000)]
    onehot = np.eye(4)[data.y_train[:, 0].astype(int)]
    fit = a @ np.linalg.lstsq(a, onehot, rcond=None)[0]
    assert np.mean(np.argmax(fit, axis=1) == data.y_train[:, 0]) < 0.35


def test_two_classes_are_the_binary_set_bit_for_bit() -> None:
    binary = make_dataset(DataSpec(kind="classification"))
    two = make_dataset(DataSpec(kind="classification", n_classes=2))
    for field in ("x_train", "y_train", "x_val", "y_val"):
        np.testing.assert_array_equal(getattr(two, field), getattr(binary, field))
    assert binary.n_classes == 2
