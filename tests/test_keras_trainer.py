from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from study.data import make_dataset
from study.spec import load_spec
from study.trainers import TrialConfig
from study.trainers.keras import KerasTrainer, build_model, fit_trial

pytestmark = pytest.mark.slow

SPEC = load_spec("article", ["data.n_train=200", "data.n_val=100", "train.epochs=3",
                            "search.batch_size=[32]"])
DATA = make_dataset(SPEC.data)


def config(lr: float = 0.01, bs: int = 32, seed: int = 0) -> TrialConfig:
    return TrialConfig.of(SPEC, bs, lr, seed)


def test_model_is_the_articles_mlp() -> None:
    model = build_model(SPEC.model, 10)
    assert [layer.units for layer in model.layers] == [64, 32, 1]
    assert [layer.activation.__name__ for layer in model.layers] == ["relu", "relu", "linear"]


def test_the_output_layer_has_one_logit_per_class() -> None:
    model = build_model(SPEC.model, 10, 4)
    assert [layer.units for layer in model.layers] == [64, 32, 4]


def test_classification_records_accuracy_per_epoch_and_the_monitor_hears_it() -> None:
    spec = load_spec("article", ["data.n_train=200", "data.n_val=100", "train.epochs=2",
                                 "search.batch_size=[32]", "data.kind=classification",
                                 "data.n_classes=3", "train.loss=sparse_cross_entropy"])
    data = make_dataset(spec.data)
    heard: list[float] = []
    fit = fit_trial(0, TrialConfig.of(spec, 32, 0.01, 0), data,
                    lambda i, epoch, loss, val, acc: heard.append(acc) is None and False)
    r = fit.result
    assert len(r.train_accuracy_curve) == len(r.val_accuracy_curve) == 2
    assert heard == r.val_accuracy_curve
    # The validation accuracy is that of the final weights: the largest of 3 logits.
    h = data.x_val
    for j in range(0, 6, 2):
        h = (np.maximum(h, 0) if j else h) @ fit.final[j] + fit.final[j + 1]
    assert h.shape == (100, 3)
    assert r.val_accuracy == pytest.approx(np.mean(np.argmax(h, 1) == data.y_val[:, 0]), abs=1e-6)
    # A regression trial has none; its monitor hears NaN.
    seen: list[float] = []
    (mse,) = KerasTrainer().train([config()], DATA,
                                  lambda i, epoch, loss, val, acc: seen.append(acc) is None and False)
    assert mse.train_accuracy_curve == mse.val_accuracy_curve == []
    assert len(seen) == 3 and all(math.isnan(v) for v in seen)


def test_one_trial_records_everything() -> None:
    (r,) = KerasTrainer().train([config()], DATA)
    assert r.status == "complete"
    assert len(r.train_curve) == len(r.val_curve) == 3
    assert all(math.isfinite(v) for v in r.train_curve + r.val_curve)
    assert r.train_loss == r.train_curve[-1]
    assert r.steps == 3 * math.ceil(200 / 32)
    assert math.isfinite(r.full_train_loss) and r.seconds > 0


def test_same_seed_same_run_other_seed_other_run() -> None:
    a, b, c = KerasTrainer().train([config(seed=1), config(seed=1), config(seed=2)], DATA)
    assert a.train_curve == b.train_curve
    assert a.train_curve != c.train_curve


def test_divergence_stops_early_with_its_epoch() -> None:
    # Adam moves each weight by about lr per step: at 1e12 the outputs overflow float32.
    (r,) = KerasTrainer().train([config(lr=1e12)], DATA)
    assert r.status == "diverged" and r.diverged_epoch == 1
    assert len(r.train_curve) == 1 and not math.isfinite(r.train_curve[0])
    assert math.isnan(r.full_train_loss)


def test_a_finite_blow_up_diverges_at_the_first_epoch_above_the_limit() -> None:
    # Plain SGD on a linear model above its stability limit: the loss grows ~30-fold per
    # epoch and stays finite, so only train.divergence_factor can stop it.
    spec = load_spec("article", ["data.n_train=200", "data.n_val=100", "model.hidden=[]",
                                 "train.optimizer=sgd", "train.epochs=6",
                                 "train.divergence_factor=1000", "search.batch_size=[16]"])
    seen: list[int] = []
    fit = fit_trial(0, TrialConfig.of(spec, 16, 0.3, 0), DATA,
                    lambda i, epoch, loss, val, acc: seen.append(epoch) is not None)
    r = fit.result
    kernel, bias = fit.initial
    limit = 1000 * float(np.mean((DATA.x_train @ kernel + bias - DATA.y_train) ** 2))
    assert r.status == "diverged" and r.diverged_epoch is not None
    assert 2 <= r.diverged_epoch < 6 and len(r.train_curve) == r.diverged_epoch
    assert all(math.isfinite(v) for v in r.train_curve)
    assert max(r.train_curve[:-1]) < limit < r.train_curve[-1]
    assert math.isnan(r.full_train_loss) and r.steps == r.diverged_epoch * 13
    # The monitor (the pruner's ear) never hears the diverged epoch, as with NaN.
    assert seen == list(range(1, r.diverged_epoch))
    # Off, the same trial trains its whole budget to a finite blow-up.
    off = dataclasses.replace(spec, train=dataclasses.replace(spec.train, divergence_factor=0.0))
    free = fit_trial(0, TrialConfig.of(off, 16, 0.3, 0), DATA).result
    assert free.status == "complete" and len(free.train_curve) == 6
    assert math.isfinite(free.train_loss) and free.train_loss > limit


def test_monitor_sees_every_epoch_and_can_prune() -> None:
    seen: list[tuple[int, int, float, float]] = []

    def monitor(i: int, epoch: int, loss: float, val: float, acc: float) -> bool:
        seen.append((i, epoch, loss, val))
        return epoch == 2

    (r,) = KerasTrainer().train([config()], DATA, monitor)
    assert r.status == "pruned" and len(r.train_curve) == 2
    assert [(i, e) for i, e, _, _ in seen] == [(0, 1), (0, 2)]
    np.testing.assert_allclose([s[2] for s in seen], r.train_curve)
    np.testing.assert_allclose([s[3] for s in seen], r.val_curve)


def test_every_epoch_draws_a_fresh_shuffle_repeatable_by_seed() -> None:
    from study.trainers.keras import _shuffled_batches

    def orders(seed: int) -> list[list[float]]:
        batches = _shuffled_batches(DATA, config(seed=seed, bs=200))
        return [next(iter(batches))[1].numpy().ravel().tolist() for _ in range(3)]

    first = orders(0)
    assert first[0] != first[1] != first[2]  # a new order each epoch
    assert sorted(first[0]) == sorted(DATA.y_train.ravel().tolist())
    assert orders(0) == first  # and the same orders for the same seed
    assert orders(1) != first


def test_a_budget_that_ends_mid_epoch_trains_the_next_orders_first_rows() -> None:
    import keras

    from study.trainers.keras import _rows

    def orders(partial: bool) -> list[list[float]]:
        keras.utils.set_random_seed(0)
        rows = _rows(DATA, config(seed=3), True)
        out = [np.concatenate([b[1].numpy().ravel() for b in rows.batch(64)]).tolist()
               for _ in range(2)]
        last = rows.take(50) if partial else rows
        out.append(np.concatenate([b[1].numpy().ravel() for b in last.batch(64)]).tolist())
        return out

    whole, cut = orders(False), orders(True)
    assert cut[:2] == whole[:2] and cut[2] == whole[2][:50]  # the same sequence of orders


def test_steps_and_examples_budgets() -> None:
    # 200 rows at B=32: 7 steps an epoch. 20 steps: 2 whole epochs and 6 steps.
    steps = load_spec("article", ["data.n_train=200", "data.n_val=100", "search.batch_size=[32]",
                                  "train.budget=steps", "train.steps=20"])
    (r,) = KerasTrainer().train([TrialConfig.of(steps, 32, 0.01, 0)], DATA)
    assert r.status == "complete" and len(r.train_curve) == len(r.val_curve) == 3 and r.steps == 20
    # 450 rows: 2 epochs and 50 rows (32 + 18): 7 + 7 + 2 steps.
    rows = load_spec("article", ["data.n_train=200", "data.n_val=100", "search.batch_size=[32]",
                                 "train.budget=examples", "train.examples=450"])
    (r,) = KerasTrainer().train([TrialConfig.of(rows, 32, 0.01, 0)], DATA)
    assert len(r.train_curve) == 3 and r.steps == 16 and math.isfinite(r.full_train_loss)


def test_optimizers_and_schedules_are_keras_own() -> None:
    import keras

    from study.trainers.keras import make_optimizer

    def built(*sets: str) -> object:
        spec = load_spec("article", ["search.batch_size=[32]", *sets])
        return make_optimizer(TrialConfig.of(spec, 32, 0.05, 0), 100)

    assert isinstance(built(), keras.optimizers.Adam)
    sgd = built("train.optimizer=sgd")
    assert isinstance(sgd, keras.optimizers.SGD) and sgd.momentum == 0.0
    nesterov = built("train.optimizer=momentum", "train.nesterov=true")
    assert nesterov.momentum == 0.9 and nesterov.nesterov
    rms = built("train.optimizer=rmsprop")
    assert isinstance(rms, keras.optimizers.RMSprop) and rms.rho == 0.9 and rms.epsilon == 1e-7
    step = built("train.schedule=step")
    assert isinstance(step._learning_rate, keras.optimizers.schedules.PiecewiseConstantDecay)
    assert step._learning_rate.boundaries == [50, 75]
    cosine = built("train.schedule=cosine", "train.warmup_fraction=0.1")
    assert isinstance(cosine._learning_rate, keras.optimizers.schedules.CosineDecay)
    assert cosine._learning_rate.warmup_steps == 10 and cosine._learning_rate.decay_steps == 90


def test_step_curve_is_the_mean_batch_loss_of_every_k_steps() -> None:
    """A linear model under plain SGD, replayed step by step in numpy: each batch's mean
    squared error before its update, averaged over windows of 3 steps that cross epochs
    and hold the partial batches (50 rows at B=16: 16, 16, 16, 2; 130 rows: two epochs
    and 30 rows, 16 + 14), so 10 steps and 3 windows; the 10th step is in none."""
    spec = load_spec("article", ["model.hidden=[]", "train.optimizer=sgd",
                                 "train.budget=examples", "train.examples=130",
                                 "analysis.curve_every=3", "search.batch_size=[16]"])
    data = dataclasses.replace(DATA, x_train=DATA.x_train[:50], y_train=DATA.y_train[:50])
    c = TrialConfig.of(spec, 16, 0.05, 0)
    assert c.curve_every(50) == 3 and c.plan(50).steps == 10
    fit = fit_trial(0, c, data, shuffle=False)
    r = fit.result
    assert r.status == "complete" and r.steps == 10 and r.step_every == 3
    kernel, bias = (np.asarray(w, np.float64) for w in fit.initial)
    x, y = data.x_train.astype(np.float64), data.y_train.astype(np.float64)
    losses = []
    for rows in (50, 50, 30):
        for at in range(0, rows, 16):
            xb, yb = x[at:min(at + 16, rows)], y[at:min(at + 16, rows)]
            err = xb @ kernel + bias - yb
            losses.append(float(np.mean(err ** 2)))
            kernel = kernel - 0.05 * 2 * xb.T @ err / len(xb)
            bias = bias - 0.05 * 2 * err.sum(axis=0) / len(xb)
    assert len(losses) == 10
    want = [float(np.mean(losses[i:i + 3])) for i in (0, 3, 6)]
    np.testing.assert_allclose(r.step_losses, want, rtol=1e-5)
    np.testing.assert_allclose(fit.final[0], kernel, rtol=1e-4)  # the same steps were taken
    # Pruned after epoch 2 (8 steps): the complete windows it reached, the same values.
    pruned = fit_trial(0, c, data, lambda i, epoch, *_: epoch == 2, shuffle=False).result
    assert pruned.status == "pruned" and pruned.steps == 8
    assert pruned.step_every == 3 and pruned.step_losses == r.step_losses[:2]
    # An interval longer than the trial records nothing (and costs nothing); 0 is about
    # CURVE_POINTS points, at least one step each.
    for every, want_every in ((10, 10), (11, 0), (0, 1)):
        analysis = dataclasses.replace(spec.analysis, curve_every=every)
        assert dataclasses.replace(c, analysis=analysis).curve_every(50) == want_every


def test_the_noise_probe_leaves_batch_normalization_s_moving_statistics_alone() -> None:
    """The probe takes gradients in training mode, which moves BatchNormalization's
    moving statistics; they are put back, so measuring the noise changes no result."""
    spec = dataclasses.replace(
        SPEC, model=dataclasses.replace(SPEC.model, builder="tests.builders:batchnorm"))
    plain = TrialConfig.of(spec, 32, 0.01, 0)
    probed = dataclasses.replace(plain, analysis=dataclasses.replace(
        plain.analysis, noise_epochs=(0, 1, 2, 3), noise_batches=(8, 64)))
    a, b = fit_trial(0, plain, DATA), fit_trial(0, probed, DATA)
    assert b.result.extras  # the probe measured
    assert b.result.val_curve == a.result.val_curve
    for x, y in zip(a.final, b.final, strict=True):
        np.testing.assert_array_equal(x, y)
