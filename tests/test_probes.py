"""The noise-scale and sharpness probes against closed forms, through both trainers' code.

Known answers: linear regression with Gaussian inputs, where |G|^2 and tr(Sigma) at given
weights have closed forms (McCandlish et al. 2018's B_simple; algebra in test_noise.py),
and quadratics and least squares, whose Hessians are known. `pytest -s` prints the
measured errors.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from study.data import Dataset, make_dataset
from study.noise import estimate_b_simple
from study.spec import ModelSpec, Spec, TrainSpec, load_spec
from study.trainers import TrialConfig, TrialResult
from study.trainers._tf import tensorflow
from study.trainers.keras import KerasProbe, build_model, fit_trial, make_loss, probe_loss
from study.trainers.population import (
    layout_of,
    noise_norms,
    program_key,
    sharpness,
    train_population,
)
from study.trainers.probes import hvp_of, noise_extras, noise_rows, top_eigenvalue

pytestmark = pytest.mark.slow

LINEAR = ModelSpec(hidden=())
MSE = TrainSpec(loss="mse")


def gaussian_regression(n: int, d: int, noise_sd: float, seed: int = 0
                        ) -> tuple[Dataset, np.ndarray]:
    """x ~ N(0, I_d), y = x.w* + N(0, noise_sd^2); returns the data and w*."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype(np.float32)
    w = rng.standard_normal(d) * 0.5
    y = (x @ w + noise_sd * rng.standard_normal(n)).astype(np.float32)[:, None]
    return Dataset(x, y, x[:10], y[:10], "regression"), w


def linear_truth(delta: np.ndarray, noise_sd: float) -> tuple[float, float]:
    """|G|^2 and tr(Sigma) of the loss (x.w + b - y)^2 at w = w* + delta, b = 0.

    The per-example gradient over (w, b) is g = 2 r (x, 1) with r = x.delta - eps, so
    G = 2 (delta, 0) and, by Gaussian fourth moments, E|g|^2 = 4 [(d + 3)|delta|^2 +
    (d + 1) s^2]: tr(Sigma) = E|g|^2 - |G|^2 = 4 [(d + 2)|delta|^2 + (d + 1) s^2].
    """
    d = delta.size
    g2 = float(delta @ delta)
    return 4 * g2, 4 * ((d + 2) * g2 + (d + 1) * noise_sd**2)


def keras_linear(weights: list[np.ndarray], d: int) -> KerasProbe:
    tensorflow()
    import keras

    keras.backend.clear_session()
    model = build_model(LINEAR, d)
    model.set_weights(weights)
    return KerasProbe(model, make_loss(MSE))


def test_lanczos_finds_the_top_eigenvalue_of_a_quadratic() -> None:
    # Two members, loss 0.5 theta' A_m theta, Hessian A_m. Member 1 also has an eigenvalue
    # of larger magnitude below zero, which power iteration would return instead.
    tf = tensorflow()
    rng = np.random.default_rng(3)
    dim = 60
    spectra = [np.r_[np.linspace(0.1, 5.0, dim - 1), 7.3],
               np.r_[np.linspace(-2.0, 2.9, dim - 2), -12.0, 3.1]]
    mats = []
    for lam in spectra:
        q, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
        mats.append(q @ np.diag(lam) @ q.T)
    a = tf.constant(np.stack(mats), tf.float32)
    hvp = hvp_of(lambda th: 0.5 * tf.einsum("mp,mpq,mq->m", th, a, th))
    theta = tf.constant(rng.standard_normal((2, dim)), tf.float32)
    top = top_eigenvalue(lambda v: hvp(theta, tf.constant(v, tf.float32)).numpy(), 2, dim, 20)
    errors = [abs(t - lam.max()) / lam.max() for t, lam in zip(top, spectra, strict=True)]
    print(f"\nsharpness of quadratics: top {top[0]:.4f} (truth 7.3), {top[1]:.4f} (truth 3.1); "
          f"relative errors {errors[0]:.1e}, {errors[1]:.1e}")
    assert max(errors) < 0.01


def test_lanczos_stops_when_the_krylov_space_is_exhausted() -> None:
    # A 3 x 3 operator, 20 iterations: the space stops growing after 3 and the answer is exact.
    mat = np.diag([1.0, 2.0, 5.0])
    top = top_eigenvalue(lambda v: v @ mat, 1, 3, 20)
    assert top[0] == pytest.approx(5.0, rel=1e-9)


def test_noise_scale_of_linear_regression_through_both_trainers() -> None:
    """B_simple of a linear model on Gaussian data, measured by each trainer's gradient code
    (the keras trainer's GradientTape on its Keras model, the population trainer's
    backpropagation on stacked rows), within 10% of the closed form."""
    d, noise_sd, n = 10, 0.5, 20_000
    data, w_star = gaussian_regression(n, d, noise_sd)
    delta = np.random.default_rng(1).standard_normal(d) * 0.3
    w = (w_star + delta).astype(np.float32)
    g2, trace = linear_truth(delta, noise_sd)
    truth = trace / g2
    batches = (8, 256)
    small, big = noise_rows(0, 0, 2000, batches, n)
    probe = keras_linear([w[:, None], np.zeros(1, np.float32)], d)
    keras_est = estimate_b_simple(*batches, probe.noise_norms(data.x_train, data.y_train, small),
                                  probe.noise_norms(data.x_train, data.y_train, big))
    tf = tensorflow()
    key = program_key(LINEAR, MSE, d)
    theta = tf.constant(np.r_[w, 0.0][None, :].astype(np.float32))
    x, y = tf.constant(data.x_train), tf.constant(data.y_train)
    ours = estimate_b_simple(*batches, noise_norms(key, theta, x, y, small[None])[0],
                             noise_norms(key, theta, x, y, big[None])[0])
    lines = []
    for name, est in (("keras", keras_est), ("population", ours)):
        error = abs(est.b_simple - truth) / truth
        lines.append(f"{name}: B_simple {est.b_simple:.2f} (truth {truth:.2f}, error {error:.1%}); "
                     f"|G|^2 {est.grad_sq:.3f} ({g2:.3f}), tr(Sigma) {est.trace_sigma:.2f} "
                     f"({trace:.2f})")
        assert error < 0.10, lines[-1]
        assert est.grad_sq == pytest.approx(g2, rel=0.15)
        assert est.trace_sigma == pytest.approx(trace, rel=0.10)
    print("\nnoise scale, linear regression (2000 pairs of batches 8 and 256):\n" + "\n".join(lines))


def test_sharpness_of_least_squares_through_both_trainers() -> None:
    # The Hessian of mean (x.w + b - y)^2 is (2/n) [x 1]'[x 1], whatever the weights.
    d, n = 10, 2000
    data, _ = gaussian_regression(n, d, 0.5)
    data = dataclasses.replace(data, x_train=data.x_train + np.linspace(0, 1, d, dtype=np.float32))
    xa = np.c_[data.x_train, np.ones(n)].astype(np.float64)
    truth = float(np.linalg.eigvalsh(2.0 / n * xa.T @ xa)[-1])
    w = np.random.default_rng(2).standard_normal(d).astype(np.float32)
    keras_top = keras_linear([w[:, None], np.ones(1, np.float32)], d).sharpness(
        data.x_train, data.y_train, 20)
    tf = tensorflow()
    (ours,) = sharpness(program_key(LINEAR, MSE, d), np.r_[w, 1.0][None, :].astype(np.float32),
                        tf.constant(data.x_train), tf.constant(data.y_train), 20, 1)
    errors = [abs(keras_top - truth) / truth, abs(ours - truth) / truth]
    print(f"\nsharpness, least squares: truth {truth:.4f}; keras {keras_top:.4f} "
          f"({errors[0]:.1e}), population {ours:.4f} ({errors[1]:.1e})")
    assert max(errors) < 0.01


def test_both_trainers_measure_the_same_at_the_same_weights() -> None:
    # An MLP at Keras's initial weights: the same rows give the same squared norms, and
    # the same Lanczos start gives the same sharpness, up to float32 rounding.
    spec = load_spec("article", ["data.n_train=200", "data.n_val=50", "search.batch_size=[16]"])
    data = make_dataset(spec.data)
    tensorflow()
    import keras

    keras.backend.clear_session()
    keras.utils.set_random_seed(4)
    model = build_model(spec.model, 10)
    probe = KerasProbe(model, make_loss(spec.train))
    rows = noise_rows(4, 1, 8, (16, 64), data.n_train)[1]
    keras_norms = probe.noise_norms(data.x_train, data.y_train, rows)
    keras_sharp = probe.sharpness(data.x_train, data.y_train, 10)
    tf = tensorflow()
    key = program_key(spec.model, spec.train, 10)
    theta = layout_of(spec.model, 10).flatten(model.get_weights())[None, :]
    x, y = tf.constant(data.x_train), tf.constant(data.y_train)
    ours = noise_norms(key, tf.constant(theta), x, y, rows[None])[0]
    (our_sharp,) = sharpness(key, theta, x, y, 10, 1)
    np.testing.assert_allclose(ours, keras_norms, rtol=1e-4)
    assert our_sharp == pytest.approx(keras_sharp, rel=1e-3)


def test_both_trainers_measure_the_same_on_a_multiclass_model() -> None:
    # Softmax cross-entropy over 3 logits: TensorFlow's fused op has no second
    # derivative, so both probes differentiate the same function written out.
    spec = load_spec("article", ["data.n_train=200", "data.n_val=50", "search.batch_size=[16]",
                                 "data.kind=classification", "data.n_classes=3",
                                 "train.loss=sparse_cross_entropy"])
    data = make_dataset(spec.data)
    tensorflow()
    import keras

    keras.backend.clear_session()
    keras.utils.set_random_seed(4)
    model = build_model(spec.model, 10, 3)
    probe = KerasProbe(model, probe_loss(spec.train, 3))
    # The probe's loss is the trained loss.
    logits = model(data.x_train)
    assert float(probe_loss(spec.train, 3)(data.y_train, logits)) == \
        pytest.approx(float(make_loss(spec.train)(data.y_train, logits)), rel=1e-6)
    rows = noise_rows(4, 1, 8, (16, 64), data.n_train)[1]
    keras_norms = probe.noise_norms(data.x_train, data.y_train, rows)
    keras_sharp = probe.sharpness(data.x_train, data.y_train, 10)
    tf = tensorflow()
    key = program_key(spec.model, spec.train, 10, n_outputs=3)
    theta = layout_of(spec.model, 10, 3).flatten(model.get_weights())[None, :]
    x, y = tf.constant(data.x_train), tf.constant(data.y_train)
    ours = noise_norms(key, tf.constant(theta), x, y, rows[None])[0]
    (our_sharp,) = sharpness(key, theta, x, y, 10, 1)
    np.testing.assert_allclose(ours, keras_norms, rtol=1e-4)
    assert our_sharp == pytest.approx(keras_sharp, rel=1e-3) and our_sharp > 0


def test_noise_extras_pool_before_dividing_and_keep_each_epoch() -> None:
    by_epoch = {1: ([4.0, 6.0], [2.0, 2.0]), 5: ([3.0, 3.5], [1.0, 1.5])}
    out = noise_extras((1, 3), by_epoch)
    pooled = estimate_b_simple(1, 3, [4.0, 6.0, 3.0, 3.5], [2.0, 2.0, 1.0, 1.5])
    assert out["noise_scale"] == pooled.b_simple
    assert out["noise_grad_sq"] == pooled.grad_sq
    assert out["noise_trace_sigma"] == pooled.trace_sigma
    assert out["noise_scale_epoch_5"] == estimate_b_simple(1, 3, *by_epoch[5]).b_simple
    assert set(out) == {f"noise_{q}{s}" for q in ("scale", "grad_sq", "trace_sigma")
                        for s in ("", "_epoch_1", "_epoch_5")}
    assert noise_extras((1, 3), {}) == {}


def test_rows_are_the_trials_own_and_drawn_with_replacement() -> None:
    a_small, a_big = noise_rows(3, 10, 5, (4, 300), 200)
    assert a_small.shape == (5, 4) and a_big.shape == (5, 300)
    assert a_big.max() < 200 and len(np.unique(a_big[0])) < 300  # repeats: with replacement
    np.testing.assert_array_equal(noise_rows(3, 10, 5, (4, 300), 200)[1], a_big)
    assert not np.array_equal(noise_rows(3, 11, 5, (4, 300), 200)[1], a_big)


@pytest.mark.parametrize("trainer", ["keras", "population"])
def test_probes_during_training_change_nothing_and_are_recorded(trainer: str) -> None:
    base = ["data.n_train=200", "data.n_val=50", "search.batch_size=[16]", "train.epochs=3"]
    plain = load_spec("article", base)
    probed = load_spec("article", [*base, "analysis.noise_epochs=[0, 2]", "analysis.sharpness=true",
                                   "analysis.noise_repeats=4", "analysis.noise_batches=[4, 32]"])
    data = make_dataset(plain.data)

    def run(spec_: Spec, lrs: tuple[float, ...]) -> list[TrialResult]:
        configs = [TrialConfig.of(spec_, 32, lr, 1) for lr in lrs]
        if trainer == "keras":
            return [fit_trial(i, c, data).result for i, c in enumerate(configs)]
        return train_population(configs, data)

    lrs = (0.01, 1e12)  # the second diverges in its first epoch
    (a, _), (b, bad) = run(plain, lrs), run(probed, lrs)
    assert a.train_curve == b.train_curve and a.val_curve == b.val_curve
    assert a.extras == {}
    assert {"noise_scale", "noise_grad_sq", "noise_trace_sigma", "sharpness",
            "noise_scale_epoch_0", "noise_scale_epoch_2"} <= set(b.extras)
    assert all(math.isfinite(b.extras[k]) for k in ("noise_grad_sq", "noise_trace_sigma",
                                                     "sharpness"))
    assert b.extras["sharpness"] > 0
    # Diverged in epoch 1: measured before training only, and no sharpness.
    assert bad.status == "diverged"
    assert set(bad.extras) == {"noise_scale", "noise_grad_sq", "noise_trace_sigma",
                               "noise_scale_epoch_0", "noise_grad_sq_epoch_0",
                               "noise_trace_sigma_epoch_0"}
