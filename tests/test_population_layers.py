"""The population trainer's fused layers against Keras: every layer kind it fuses, step
for step from the same initial weights; Dropout against autodiff under the same mask and
in distribution; and the fallback for a model it cannot fuse."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from scipy import stats

from study.data import Dataset, make_dataset
from study.spec import Spec, load_spec
from study.trainers import TrialConfig, choose_trainer
from study.trainers._tf import tensorflow
from study.trainers.base import output_width
from study.trainers.keras import KerasProbe, KerasTrainer, fit_trial, make_loss, probe_loss
from study.trainers.population import (
    PopulationTrainer,
    Weights,
    net_of,
    noise_norms,
    program_key,
    sharpness,
    train_population,
    unsupported,
)
from study.trainers.population import layers as fused
from study.trainers.population.network import initial_weights
from study.trainers.population.program import _gradients, mean_loss
from study.trainers.probes import noise_rows

pytestmark = pytest.mark.slow

SMALL = ["data.n_train=200", "data.n_val=100", "search.batch_size=[16]", "train.epochs=2"]
MULTICLASS = ["data.kind=classification", "data.n_classes=4", "train.loss=sparse_cross_entropy"]
BINARY = ["data.kind=classification", "train.loss=cross_entropy"]
NOISE = ["analysis.noise_epochs=[1]", "analysis.noise_batches=[8, 32]"]


def builder_spec(name: str, *overrides: str) -> Spec:
    return load_spec("article", [*SMALL, f"model.builder='tests.builders:{name}'", *overrides])


def permuted(data: Dataset, seed: int) -> Dataset:
    order = np.random.default_rng(seed).permutation(data.n_train)
    return dataclasses.replace(data, x_train=data.x_train[order], y_train=data.y_train[order])


def images() -> Dataset:
    rng = np.random.default_rng(5)
    x = rng.normal(size=(120, 4, 4, 1)).astype(np.float32)
    w = rng.normal(size=(16, 2)).astype(np.float32)
    y = (x.reshape(120, 16) @ w + 0.1 * rng.normal(size=(120, 2))).astype(np.float32)
    return Dataset(x[:96], y[:96], x[96:], y[96:], "regression")


def rel(a: float, b: float) -> float:
    return abs(a - b) / abs(b)


# Each fused layer kind in a builder model, with the loss its output calls for.
EXACT_CASES = {
    "relu, tanh, sigmoid, gelu, linear; no bias; Activation layer": ("mixed_activations", []),
    "softmax output, 4 classes": ("softmax_output", MULTICLASS),
    "sigmoid output, binary, functional chain": ("sigmoid_output", BINARY),
    "Reshape and Flatten on images": ("reshaped_images", []),
    "LayerNormalization": ("layernorm", []),
}


@pytest.mark.parametrize("case", list(EXACT_CASES))
def test_each_layer_kind_same_numbers_as_keras(case: str) -> None:
    name, overrides = EXACT_CASES[case]
    spec = builder_spec(name, *overrides)
    data = images() if name == "reshaped_images" else permuted(make_dataset(spec.data), 7)
    assert unsupported(spec, data) is None
    # B=48 accumulates micro-batches of 16; both leave a partial last batch.
    configs = [TrialConfig.of(spec, bs, lr, seed)
               for bs, lr, seed in ((16, 0.01, 1), (48, 0.03, 2))]
    runs = [fit_trial(i, c, data, shuffle=False) for i, c in enumerate(configs)]
    final: list[Weights] = []
    # No initial weights given: the population draws them as the keras trainer does.
    results = train_population(configs, data, shuffle=False, final_weights=final)
    worst = 0.0
    for k, p, w in zip(runs, results, final, strict=True):
        assert k.result.status == p.status == "complete"
        errors = [rel(a, b) for a, b in zip(p.train_curve + p.val_curve,
                                            k.result.train_curve + k.result.val_curve,
                                            strict=True)]
        errors.append(rel(p.full_train_loss, k.result.full_train_loss))
        errors += [float(np.linalg.norm(a - b) / np.linalg.norm(b))
                   for a, b in zip(w, k.final, strict=True)]
        worst = max(worst, *errors)
        assert max(errors) < 1e-5, (case, errors)
        np.testing.assert_allclose(p.train_accuracy_curve, k.result.train_accuracy_curve,
                                   rtol=1e-6)
        np.testing.assert_allclose(p.val_accuracy_curve, k.result.val_accuracy_curve, rtol=1e-6)
    print(f"\nexactness ({case}): max relative error {worst:.2e}")


def test_probability_outputs_compile_keras_losses_on_probabilities() -> None:
    """A softmax or sigmoid output: Keras' loss takes it with from_logits=False (and
    then computes from the logits it carries); a logit output, from_logits=True."""
    for name, overrides, logits in (("softmax_output", MULTICLASS, False),
                                    ("sigmoid_output", BINARY, False),
                                    ("mixed_activations", BINARY, True)):
        spec = builder_spec(name, *overrides)
        data = make_dataset(spec.data)
        from study.models import build_model

        model = build_model(spec.model, data.input_shape, output_width(spec.train, data))
        assert make_loss(spec.train, model).get_config()["from_logits"] is logits


@pytest.mark.parametrize("name, overrides", [("layernorm", []),
                                              ("softmax_output", MULTICLASS)])
def test_probes_measure_a_fused_model_as_keras_s(name: str, overrides: list[str]) -> None:
    """The noise-scale and sharpness probes on a builder's fused model (LayerNormalization;
    a softmax output) measure what the keras trainer's probes measure at the same weights."""
    tf = tensorflow()
    spec = builder_spec(name, *overrides)
    data = make_dataset(spec.data)
    outputs = output_width(spec.train, data)
    net = net_of(spec.model, data.input_shape, outputs)
    assert not isinstance(net, str)
    from study.models import build_model
    from study.trainers.population.network import with_loss

    net = with_loss(net, spec.train.loss)
    assert not isinstance(net, str)
    weights = initial_weights(spec.model, data.input_shape, outputs, 4)
    model = build_model(spec.model, data.input_shape, outputs)
    model.set_weights(weights)
    probe = KerasProbe(model, probe_loss(spec.train, outputs, model))
    rows = noise_rows(4, 1, 8, (16, 64), data.n_train)[1]
    keras_norms = probe.noise_norms(data.x_train, data.y_train, rows)
    keras_sharp = probe.sharpness(data.x_train, data.y_train, 10)
    key = program_key(spec.model, spec.train, data.n_features, n_outputs=outputs, net=net)
    theta = net.layout.flatten(weights)[None, :]
    x, y = tf.constant(data.x_train), tf.constant(data.y_train)
    ours = noise_norms(key, tf.constant(theta), x, y, rows[None])[0]
    (our_sharp,) = sharpness(key, theta, x, y, 10, 1)
    np.testing.assert_allclose(ours, keras_norms, rtol=1e-4)
    assert our_sharp == pytest.approx(keras_sharp, rel=1e-3) and our_sharp > 0


# --------------------------------------------------------------------------- Dropout

def _keras_gradients(model: object, weights: Weights, x: np.ndarray, y: np.ndarray,
                     masks: list[np.ndarray], loss: object) -> list[np.ndarray]:
    """TensorFlow autodiff of the Keras model's mean loss, each Dropout layer applying
    the given mask (Keras' own inverted dropout: x * 1/(1 - rate), then the mask)."""
    import keras

    tf = tensorflow()
    assert isinstance(model, keras.Model)
    model.set_weights(weights)
    drops = iter(masks)
    with tf.GradientTape() as tape:
        h = tf.constant(x)
        for layer in model.layers:
            if isinstance(layer, keras.layers.Dropout):
                h = h * (1.0 / (1.0 - layer.rate)) * next(drops)
            else:
                h = layer(h, training=True)
        value = loss(y, h)  # type: ignore[operator]
    return [np.asarray(g) for g in tape.gradient(value, model.trainable_variables)]


def test_dropout_gradient_is_autodiff_s_under_the_same_mask() -> None:
    """The written-out backward pass through Dense, Dropout and LayerNormalization is
    TensorFlow's gradient of the Keras layers, given the same masks; the masks keep
    1 - rate of the units, differ by member, epoch and row, and repeat exactly."""
    tf = tensorflow()
    spec = builder_spec("mlp_dropout_layernorm")
    data = make_dataset(spec.data)
    net = net_of(spec.model, data.input_shape, 1)
    assert not isinstance(net, str)
    kinds = [type(op).__name__ for op in net.ops]
    assert kinds == ["Dense", "Activation", "Dropout", "LayerNorm", "Dense", "Activation",
                     "Dropout", "Dense"]
    key = program_key(spec.model, spec.train, data.n_features, net=net)
    seeds = [3, 4, 5]
    weights = [initial_weights(spec.model, data.input_shape, 1, s) for s in seeds]
    theta = tf.constant(np.stack([net.layout.flatten(w) for w in weights]))
    b = 24
    rows = np.stack([np.arange(b) + 10 * m for m in range(len(seeds))])
    xb, yb = tf.gather(data.x_train, rows), tf.gather(data.y_train, rows)
    base = tf.constant([0x1234, 0xBEEF, 0xF00D], tf.uint32)
    positions = tf.range(b) + 40
    # Compiled, as the program runs them (TensorFlow has no eager uint32 kernels).
    _, _, grad = tf.function(jit_compile=True)(
        lambda: _gradients(tf, key, theta, xb, yb, tf.ones([3, b]), tf.fill([3], 1.0 / b),
                           (base, positions)))()
    keep_mask = tf.function(jit_compile=True)(
        lambda op, base, positions: fused.dropout_keep(tf, op, base, positions))
    from study.models import build_model

    model = build_model(spec.model, data.input_shape, 1)
    drops = [op for op in net.ops if isinstance(op, fused.Dropout)]
    loss = make_loss(spec.train, model)
    for m in range(len(seeds)):
        masks = [keep_mask(op, base[m:m + 1], positions)[0].numpy() for op in drops]
        theirs = np.concatenate([g.ravel() for g in _keras_gradients(
            model, weights[m], data.x_train[rows[m]], data.y_train[rows[m]], masks, loss)])
        ours = grad[m].numpy()
        assert np.linalg.norm(ours - theirs) / np.linalg.norm(theirs) < 1e-5

    # The masks: 1 - rate kept, over 3 members x 1000 rows x 32 units (sd ~ 0.0013).
    many = tf.range(1000)
    keep = keep_mask(drops[0], base, many).numpy()
    assert keep.shape == (3, 1000, 32) and set(np.unique(keep)) == {0.0, 1.0}
    assert abs(keep.mean() - 0.8) < 0.01
    assert all(abs(keep[m].mean() - 0.8) < 0.015 for m in range(3))
    assert not np.array_equal(keep[0], keep[1])  # each member its own masks
    assert not np.array_equal(keep[0, 0], keep[0, 1])  # each row its own
    other = keep_mask(drops[1], base, many).numpy()[:, :, :16]
    assert not np.array_equal(keep[:, :, :16], other)  # each layer its own
    np.testing.assert_array_equal(keep, keep_mask(drops[0], base, many).numpy())
    # Units kept independently: pairs of units agree as often as chance says.
    assert abs(np.mean(keep[:, :, 0] == keep[:, :, 1]) - (0.8 ** 2 + 0.2 ** 2)) < 0.03


def test_dropout_is_the_identity_when_evaluating() -> None:
    """The validation and full-set losses see no Dropout: Keras' model.evaluate."""
    tf = tensorflow()
    spec = builder_spec("mlp_dropout_layernorm")
    data = make_dataset(spec.data)
    net = net_of(spec.model, data.input_shape, 1)
    assert not isinstance(net, str)
    key = program_key(spec.model, spec.train, data.n_features, net=net)
    weights = initial_weights(spec.model, data.input_shape, 1, 9)
    ours = float(mean_loss(key, tf.constant(net.layout.flatten(weights)[None]),
                           tf.constant(data.x_val), tf.constant(data.y_val))[0])
    from study.models import build_model

    model = build_model(spec.model, data.input_shape, 1)
    model.set_weights(weights)
    model.compile(loss=make_loss(spec.train, model))
    theirs = float(model.evaluate(data.x_val, data.y_val, batch_size=len(data.x_val), verbose=0))
    assert rel(ours, theirs) < 1e-6


def test_dropout_layernorm_builder_is_distributed_as_keras_s() -> None:
    """A builder with Dense, Dropout and LayerNormalization: the keras trainer's final
    losses over 8 seeds are distributed as the population trainer's over 32 (seeds 0-7
    among them; a population costs little per member, and the larger sample sharpens
    the comparison).

    Dropout and LayerNormalization on 128 rows spread the final training loss over
    seeds by ~14% and the validation loss by ~22%: Welch's t-test on both, and the
    training losses' means within 15% (about 2.7 standard errors of their difference).
    """
    spec = load_spec("article", ["data.n_train=128", "data.n_val=50", "train.epochs=10",
                                 "search.batch_size=[16]",
                                 "model.builder='tests.builders:mlp_dropout_layernorm'"])
    data = make_dataset(spec.data)
    theirs = KerasTrainer().train([TrialConfig.of(spec, 16, 0.01, s) for s in range(8)], data)
    ours = train_population([TrialConfig.of(spec, 16, 0.01, s) for s in range(32)], data)
    lines, failures = [], []
    for what, most in (("train_loss", 0.15), ("val_loss", math.inf)):
        k = np.array([getattr(r, what) for r in theirs])
        p = np.array([getattr(r, what) for r in ours])
        pvalue = float(stats.ttest_ind(k, p, equal_var=False).pvalue)
        gap = abs(p.mean() - k.mean()) / k.mean()
        lines.append(f"{what}: keras {k.mean():.4f}±{k.std(ddof=1):.4f}, "
                     f"population {p.mean():.4f}±{p.std(ddof=1):.4f}, "
                     f"Welch p={pvalue:.3f}, means {gap:.1%} apart")
        if not (pvalue > 0.01 and gap < most):
            failures.append(lines[-1])
    print("\nB=16, lr=0.01 (Dense, Dropout, LayerNormalization):\n" + "\n".join(lines))
    assert not failures, "\n".join(lines)


# --------------------------------------------------------------------------- fallback

def test_a_convolution_falls_back_to_the_keras_trainer_which_trains_it() -> None:
    spec = builder_spec("small_cnn", "train.epochs=1")
    data = images()
    assert unsupported(spec, data) == "layer 'conv2d' (Conv2D)"
    trainer, why = choose_trainer("auto", spec, data)
    assert isinstance(trainer, KerasTrainer)
    assert why == ("the population trainer does not support layer 'conv2d' (Conv2D); "
                   "training with the keras trainer")
    (result,) = trainer.train([TrialConfig.of(spec, 16, 0.01, 0)], data)
    assert result.status == "complete" and math.isfinite(result.train_loss)
    # A model the population trainer fuses is its own.
    fused_spec = builder_spec("mlp_dropout_layernorm")
    assert isinstance(choose_trainer("auto", fused_spec, data)[0], PopulationTrainer)


def test_what_falls_back_is_named() -> None:
    data = make_dataset(builder_spec("layernorm").data)
    cases = {
        "residual": "a model that is not a chain of layers",
        "regularized": "layer 'dense' (Dense) with a kernel_regularizer",
        "selu": "layer 'dense' (Dense) with activation 'selu'",
    }
    for name, reason in cases.items():
        assert unsupported(builder_spec(name), data) == reason
    # Dense on an image's last axis is not a row's features.
    assert unsupported(builder_spec("dense_on_images"), images()) == \
        "layer 'dense' (Dense) on a 3-d input (4, 4, 1)"
    assert unsupported(builder_spec("softmax_output"), data) == \
        "a softmax output layer under train.loss = 'mse'"
    assert unsupported(builder_spec("layernorm")) == \
        "model.builder without the data set its model is built for"
    noisy = builder_spec("mlp_dropout_layernorm", *NOISE)
    assert unsupported(noisy, data) == "analysis.noise on a model with Dropout"
    shorthand = load_spec("article", [*SMALL, "model.dropout=0.1", *NOISE])
    assert unsupported(shorthand) == "analysis.noise on a model with Dropout"
    assert unsupported(load_spec("article", [*SMALL, "model.activation='gelu'",
                                             "model.dropout=0.1"]), data) is None
