"""BatchNormalization fused in the population trainer (study/trainers/population/batchnorm.py)
against Keras' own layer: the same weights and batches give the same losses and moving
statistics; what it cannot fuse is named. And the trained weights a population returns
(`train.keep_weights = "best"`) give a Keras model the trial's validation loss."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from study.data import Dataset, make_dataset
from study.spec import Spec, load_spec
from study.trainers import TrialConfig
from study.trainers.base import output_width
from study.trainers.keras import fit_trial, make_loss
from study.trainers.population import (
    Weights,
    net_of,
    plan_groups,
    train_population,
    unsupported,
)
from study.trainers.population.batchnorm import BatchNorm
from study.trainers.population.network import batch_statistics

pytestmark = pytest.mark.slow

SMALL = ["data.n_train=200", "data.n_val=100", "search.batch_size=[16]", "train.epochs=2"]


def _keras() -> Any:
    from study.trainers._tf import tensorflow

    tensorflow()
    import keras

    return keras


# --------------------------------------------------------------------------- builders

def bn_mlp(shape: Sequence[int], outputs: int) -> Any:
    """BatchNormalization after Dense layers: Keras' defaults, one without center (and
    its own momentum and epsilon), one without scale (after a relu).

    The Dense layers right before a BatchNormalization have no bias by default (the
    usual way to write it: the normalization subtracts it again). With one, its gradient
    is zero in exact arithmetic and rounding noise in float32, which Adam's division by
    the gradient's own scale turns into steps of about 1% of the learning rate: Keras'
    noise and ours, both right, walk such a bias (and the moving mean that tracks it)
    apart, though every loss of training agrees (the losses on the moving statistics
    then differ by 1e-4 to 5e-3 after two epochs)."""
    keras = _keras()
    layers = keras.layers
    return keras.Sequential([
        keras.Input(shape=tuple(shape)),
        layers.Dense(16, use_bias=False), layers.BatchNormalization(), layers.Activation("relu"),
        layers.Dense(8, use_bias=False),
        layers.BatchNormalization(center=False, momentum=0.9, epsilon=1e-5),
        layers.Activation("tanh"),
        layers.Dense(8, activation="relu"), layers.BatchNormalization(scale=False),
        layers.Dense(outputs)])


def relu_mlp(shape: Sequence[int], outputs: int) -> Any:
    keras = _keras()
    return keras.Sequential([keras.Input(shape=tuple(shape)),
                             keras.layers.Dense(16, activation="relu"),
                             keras.layers.Dense(outputs)])


def bn_renorm(shape: Sequence[int], outputs: int) -> Any:
    keras = _keras()
    return keras.Sequential([keras.Input(shape=tuple(shape)), keras.layers.Dense(8),
                             keras.layers.BatchNormalization(renorm=True),
                             keras.layers.Dense(outputs)])


def bn_synchronized(shape: Sequence[int], outputs: int) -> Any:
    keras = _keras()
    return keras.Sequential([keras.Input(shape=tuple(shape)), keras.layers.Dense(8),
                             keras.layers.BatchNormalization(synchronized=True),
                             keras.layers.Dense(outputs)])


def bn_on_images(shape: Sequence[int], outputs: int) -> Any:
    """BatchNormalization of an image's channels (axis -1 of a 3-d input)."""
    keras = _keras()
    return keras.Sequential([keras.Input(shape=tuple(shape)),
                             keras.layers.BatchNormalization(),
                             keras.layers.Flatten(), keras.layers.Dense(outputs)])


def spec_of(builder: str, *overrides: str) -> Spec:
    ref = builder if ":" in builder else f"tests.test_population_batchnorm:{builder}"
    return load_spec("article", [*SMALL, f"model.builder='{ref}'", *overrides])


def permuted(data: Dataset, seed: int) -> Dataset:
    order = np.random.default_rng(seed).permutation(data.n_train)
    return dataclasses.replace(data, x_train=data.x_train[order], y_train=data.y_train[order])


def images() -> Dataset:
    rng = np.random.default_rng(5)
    x = rng.normal(size=(60, 4, 4, 2)).astype(np.float32)
    y = rng.normal(size=(60, 1)).astype(np.float32)
    return Dataset(x[:48], y[:48], x[48:], y[48:], "regression")


def rel(a: float, b: float) -> float:
    return abs(a - b) / abs(b)


# --------------------------------------------------------------------------- support

def test_batchnorm_is_fused_and_what_it_cannot_fuse_is_named() -> None:
    spec = spec_of("bn_mlp")
    data = make_dataset(spec.data)
    assert unsupported(spec, data) is None
    assert unsupported(spec_of("tests.builders:batchnorm"), data) is None
    net = net_of(spec.model, data.input_shape, 1)
    assert not isinstance(net, str)
    assert [op for op in net.ops if isinstance(op, BatchNorm)] == [
        BatchNorm(16, 1e-3, 0.99, True, True), BatchNorm(8, 1e-5, 0.9, False, True),
        BatchNorm(8, 1e-3, 0.99, True, False)]
    # gamma, beta, moving_mean, moving_variance: the last two are statistics.
    assert net.layout.statistics == (3, 4, 7, 8, 12, 13)
    assert batch_statistics(spec.model)
    assert not batch_statistics(load_spec("article", SMALL).model)
    cases = {
        "bn_renorm": "layer 'batch_normalization' (BatchNormalization) with renorm",
        "bn_synchronized": "layer 'batch_normalization' (BatchNormalization) with synchronized",
    }
    for name, reason in cases.items():
        assert unsupported(spec_of(name), data) == reason
    assert unsupported(spec_of("bn_on_images"), images()) == \
        "layer 'batch_normalization' (BatchNormalization) over axis -1 of a 3-d input"


def test_each_batch_size_of_a_batchnorm_model_is_its_own_micro_batch() -> None:
    """A micro-batch's statistics are not its batch's: no accumulation across them."""
    spec = spec_of("bn_mlp")
    plain = spec_of("relu_mlp")
    data = make_dataset(spec.data)
    for s in (spec, plain):
        net_of(s.model, data.input_shape, 1)  # read: batch_statistics knows it
    for s, micros in ((spec, [16, 32, 64]), (plain, [16])):
        configs = [TrialConfig.of(s, bs, 0.01, 0) for bs in (16, 32, 64)]
        groups = plan_groups(configs, 200, {}, whole=batch_statistics)
        assert sorted(g.micro for g in groups) == micros


# --------------------------------------------------------------------------- exactness

def test_same_weights_same_batches_same_numbers_as_keras() -> None:
    """Losses, validation losses (moving statistics), the full-set loss, and the final
    weights with the moving statistics, as Keras' model.fit gives them. 200 rows leave
    a partial last batch at both batch sizes (its statistics are its 8 rows')."""
    spec = spec_of("bn_mlp")
    data = permuted(make_dataset(spec.data), 3)
    configs = [TrialConfig.of(spec, bs, lr, seed)
               for bs, lr, seed in ((16, 0.01, 1), (48, 0.03, 2))]
    runs = [fit_trial(i, c, data, shuffle=False) for i, c in enumerate(configs)]
    final: list[Weights] = []
    results = train_population(configs, data, shuffle=False, final_weights=final)
    worst = 0.0
    for k, p, w in zip(runs, results, final, strict=True):
        assert k.result.status == p.status == "complete"
        errors = [rel(a, b) for a, b in zip(p.train_curve + p.val_curve,
                                            k.result.train_curve + k.result.val_curve,
                                            strict=True)]
        errors.append(rel(p.full_train_loss, k.result.full_train_loss))
        assert [np.shape(a) for a in w] == [np.shape(b) for b in k.final]
        errors += [float(np.linalg.norm(a - b) / np.linalg.norm(b))
                   for a, b in zip(w, k.final, strict=True)]
        worst = max(worst, *errors)
        assert max(errors) < 1e-5, errors
        # The moving statistics moved: they are not their initial zeros and ones.
        assert not np.allclose(w[3], 0.0) and not np.allclose(w[4], 1.0)
    print(f"\nBatchNormalization exactness: max relative error {worst:.2e}")


# --------------------------------------------------------------------------- weights

@pytest.mark.parametrize("builder", ["relu_mlp", "tests.builders:layernorm", "bn_mlp"])
def test_kept_weights_give_keras_the_trials_validation_loss(builder: str) -> None:
    """`train.keep_weights = "best"`: each trial's weights, set into a fresh Keras model
    of its builder, give that model the validation loss the trial recorded."""
    from study.models import build_model

    spec = spec_of(builder, "train.keep_weights='best'")
    data = make_dataset(spec.data)
    configs = [TrialConfig.of(spec, 16, 0.01, seed) for seed in (0, 1)]
    results = train_population(configs, data)
    n_outputs = output_width(spec.train, data)
    model = build_model(spec.model, data.input_shape, n_outputs)
    model.compile(loss=make_loss(spec.train, model))
    for r in results:
        assert r.status == "complete" and r.weights is not None
        assert [w.shape for w in r.weights] == [w.shape for w in model.get_weights()]
        model.set_weights(r.weights)
        val = float(model.evaluate(data.x_val, data.y_val, batch_size=len(data.x_val),
                                   verbose=0))
        assert rel(val, r.val_loss) < 1e-5, (val, r.val_loss)


def test_the_shorthand_s_kept_weights_fit_the_keras_trainer_s_model() -> None:
    """The shorthand's weights in the order of the keras trainer's model (models.py);
    none without keep_weights."""
    from study.models import build_model

    spec = load_spec("article", [*SMALL, "train.keep_weights='best'"])
    data = make_dataset(spec.data)
    plain = load_spec("article", SMALL)
    result, none = train_population([TrialConfig.of(spec, 16, 0.01, 0),
                                     TrialConfig.of(plain, 16, 0.01, 0)], data)
    assert none.weights is None and none.val_loss == result.val_loss
    model = build_model(spec.model, data.input_shape, 1)
    model.compile(loss=make_loss(spec.train, model))
    assert result.weights is not None
    model.set_weights(result.weights)
    val = float(model.evaluate(data.x_val, data.y_val, batch_size=len(data.x_val), verbose=0))
    assert rel(val, result.val_loss) < 1e-5


def test_probes_measure_a_batchnorm_model_as_keras_s() -> None:
    """The noise-scale probe (gradients in training mode, on each minibatch's statistics)
    and the sharpness (of the loss on the moving statistics, over the trained weights
    alone) measure what the keras trainer's probes measure at the same weights."""
    from study.models import build_model
    from study.trainers._tf import tensorflow
    from study.trainers.keras import KerasProbe, probe_loss
    from study.trainers.population import noise_norms, program_key, sharpness
    from study.trainers.population.network import initial_weights
    from study.trainers.probes import noise_rows

    tf = tensorflow()
    spec = spec_of("bn_mlp")
    data = make_dataset(spec.data)
    net = net_of(spec.model, data.input_shape, 1)
    assert not isinstance(net, str)
    weights = initial_weights(spec.model, data.input_shape, 1, 4)
    # Moving statistics away from their initial zeros and ones, as after training.
    rng = np.random.default_rng(0)
    stats = net.layout.statistics
    for mean, variance in zip(stats[0::2], stats[1::2], strict=True):
        weights[mean] = rng.normal(0, 0.3, weights[mean].shape).astype(np.float32)
        weights[variance] = rng.uniform(0.5, 1.5, weights[variance].shape).astype(np.float32)
    model = build_model(spec.model, data.input_shape, 1)
    model.set_weights(weights)
    probe = KerasProbe(model, probe_loss(spec.train, 1, model))
    rows = noise_rows(4, 1, 8, (16, 64), data.n_train)[1]
    # The sharpness first: Keras' noise probe calls the model in training mode, which
    # moves its moving statistics.
    keras_sharp = probe.sharpness(data.x_train, data.y_train, 10)
    keras_norms = probe.noise_norms(data.x_train, data.y_train, rows)
    key = program_key(spec.model, spec.train, data.n_features, net=net)
    theta = net.layout.flatten(weights)[None, :]
    x, y = tf.constant(data.x_train), tf.constant(data.y_train)
    ours = noise_norms(key, tf.constant(theta), x, y, rows[None])[0]
    (our_sharp,) = sharpness(key, theta, x, y, 10, 1)
    np.testing.assert_allclose(ours, keras_norms, rtol=1e-4)
    assert our_sharp == pytest.approx(keras_sharp, rel=1e-3) and our_sharp > 0
