"""The population trainer against the keras reference: step for step, then in distribution."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from scipy import stats

from study.data import Dataset, make_dataset
from study.spec import Spec, load_spec
from study.trainers import TrialConfig, choose_trainer, get_trainer
from study.trainers._tf import tensorflow
from study.trainers.keras import KerasTrainer, fit_trial
from study.trainers.population import (
    PopulationTrainer,
    Weights,
    _programs,
    glorot_weights,
    plan_groups,
    tile_size,
    train_population,
    unsupported,
)
from study.trainers.population.layers import mix
from study.trainers.population.layout import OWN_PROGRAM, kind_of
from study.trainers.population.program import shuffle_orders

pytestmark = pytest.mark.slow

SMALL = ["data.n_train=200", "data.n_val=100", "search.batch_size=[16]"]
SPEC = load_spec("article", [*SMALL, "train.epochs=2"])
DATA = make_dataset(SPEC.data)


def config(spec: Spec, bs: int, lr: float, seed: int = 0) -> TrialConfig:
    return TrialConfig.of(spec, bs, lr, seed)


def permuted(data: Dataset, seed: int) -> Dataset:
    """The training rows in a fixed random order, so both trainers see the same batches."""
    order = np.random.default_rng(seed).permutation(data.n_train)
    return dataclasses.replace(data, x_train=data.x_train[order], y_train=data.y_train[order])


def rel(a: float, b: float) -> float:
    return abs(a - b) / abs(b)


# Every optimizer, schedule, budget and loss, against the keras trainer's own code path
# (fit_trial: Keras's optimizer and schedule classes, a second fit for a partial last
# epoch), combined so that each appears once at least. 200 rows and batch sizes 16, 48,
# 64 leave a partial last batch every epoch; 48 and 64 accumulate micro-batches of 16.
# The learning rates take large steps.
EXACT_CASES = {
    "adam, relu": [],
    # 500 rows: 2 epochs and 100 rows, the last batch of those 100 partial at every size.
    "adam, tanh, examples budget": ["model.activation='tanh'", "train.budget=examples",
                                    "train.examples=500"],
    # 30 steps: 3 epochs at B=16 (the last of 4 steps), 6 whole ones at B=48, 8 at B=64
    # (the last of 2 steps): three groups, each its own number of epochs.
    "adam, steps budget": ["train.budget=steps", "train.steps=30"],
    "sgd, step decay, linear model": ["train.optimizer=sgd", "train.schedule=step",
                                      "train.decay_at=[0.3, 0.6]", "train.decay_rate=0.2",
                                      "model.hidden=[]"],
    "momentum, warm-up": ["train.optimizer=momentum", "train.momentum=0.8",
                          "train.schedule=warmup", "train.warmup_fraction=0.3"],
    "nesterov, cosine": ["train.optimizer=momentum", "train.nesterov=true",
                         "train.schedule=cosine"],
    "rmsprop, cosine after warm-up": ["train.optimizer=rmsprop", "train.schedule=cosine",
                                      "train.warmup_fraction=0.2"],
    "adam, cross-entropy": ["data.kind=classification", "train.loss=cross_entropy"],
    "adam, softmax cross-entropy, 4 classes": ["data.kind=classification", "data.n_classes=4",
                                               "train.loss=sparse_cross_entropy"],
}
EXACT_LRS = {"sgd": (0.01, 0.03, 0.001), "momentum": (0.01, 0.02, 0.001)}


@pytest.mark.parametrize("case", list(EXACT_CASES))
def test_same_weights_same_batches_same_numbers_as_keras(case: str) -> None:
    spec = load_spec("article", [*SMALL, "train.epochs=2", *EXACT_CASES[case]])
    data = permuted(make_dataset(spec.data), seed=7)
    lrs = EXACT_LRS.get(spec.train.optimizer, (0.01, 0.1, 0.001))
    configs = [config(spec, bs, lr, seed) for bs, lr, seed in zip((16, 48, 64), lrs, (1, 2, 3),
                                                                  strict=True)]
    if spec.train.budget != "steps":
        assert len(plan_groups(configs, data.n_train)) == 1
    runs = [fit_trial(i, c, data, shuffle=False) for i, c in enumerate(configs)]
    final: list[Weights] = []
    results = train_population(configs, data, initial_weights=[r.initial for r in runs],
                               shuffle=False, final_weights=final)
    worst = 0.0
    for c, k, p, w in zip(configs, runs, results, final, strict=True):
        assert k.result.status == p.status == "complete"
        assert len(p.train_curve) == len(k.result.train_curve) == c.plan(data.n_train).epochs
        errors = [rel(a, b) for a, b in zip(p.train_curve, k.result.train_curve, strict=True)]
        errors += [rel(a, b) for a, b in zip(p.val_curve, k.result.val_curve, strict=True)]
        errors.append(rel(p.full_train_loss, k.result.full_train_loss))
        errors += [float(np.linalg.norm(a - b) / np.linalg.norm(b))
                   for a, b in zip(w, k.final, strict=True)]
        worst = max(worst, *errors)
        assert max(errors) < 1e-5, (case, c.batch_size, errors)
        assert p.steps == k.result.steps == c.plan(data.n_train).steps
    print(f"\nexactness ({case}): max relative error {worst:.2e} over losses, "
          "validation losses, full-set loss and weights")


def test_step_curve_is_keras_s_on_the_same_weights() -> None:
    """The step curve, compared as the exactness test compares the epoch curves.

    392 rows, 3236 of them trained: 8 epochs and 100 rows. At B=16 (25 steps an epoch,
    the last of 8 rows) that is 207 steps, a point every 2 (analysis.curve_every = 0:
    about CURVE_POINTS), so windows straddle epochs and, in chunks of 3 epochs (75
    steps), chunks; at B=48 (9 steps, the last of 8 rows, accumulated from micro-batches
    of 16) 75 steps, a point every step. Both in one program.
    """
    spec = load_spec("article", ["data.n_train=392", "data.n_val=100", "search.batch_size=[16]",
                                 "train.budget=examples", "train.examples=3236"])
    data = permuted(make_dataset(spec.data), seed=7)
    configs = [config(spec, 16, 0.01, 1), config(spec, 48, 0.03, 2)]
    assert len(plan_groups(configs, data.n_train)) == 1
    assert [c.curve_every(data.n_train) for c in configs] == [2, 1]
    runs = [fit_trial(i, c, data, shuffle=False) for i, c in enumerate(configs)]
    initial = [r.initial for r in runs]
    results = train_population(configs, data, initial_weights=initial, shuffle=False,
                               chunk_epochs=3)
    worst = 0.0
    for c, k, p in zip(configs, runs, results, strict=True):
        plan, every = c.plan(data.n_train), c.curve_every(data.n_train)
        assert p.step_every == k.result.step_every == every
        assert len(p.step_losses) == len(k.result.step_losses) == plan.steps // every
        # Keras logs a running mean, so the keras trainer's loss of a partial batch (8
        # rows) is the difference of two running totals over up to 392 rows: float32
        # resolves it to about 49 x eps x (running mean / its loss), 1e-5 and more
        # while the loss falls fast. Windows of whole batches are held to 1e-5.
        partial = [(epoch < plan.epochs - 1 and at + c.batch_size > data.n_train)
                   or (epoch == plan.epochs - 1 and at + c.batch_size > plan.last_rows)
                   for epoch in range(plan.epochs)
                   for at in range(0, data.n_train if epoch < plan.epochs - 1
                                   else plan.last_rows, c.batch_size)]
        assert len(partial) == plan.steps
        for i, (a, b) in enumerate(zip(p.step_losses, k.result.step_losses, strict=True)):
            whole = not any(partial[i * every:(i + 1) * every])
            worst = max(worst, rel(a, b)) if whole else worst
            assert rel(a, b) < (1e-5 if whole else 1e-4), (c.batch_size, i, a, b)
        assert p.step_losses[0] > p.step_losses[-1]  # it learned
    print(f"\nstep curve: max relative error {worst:.2e} over windows of whole batches")
    # Pruned in the middle of a chunk (epoch 5 of 4..6): it trained on to the chunk's
    # end, but keeps the windows of its 5 epochs only (125 steps: 62 points).
    pruned, _ = train_population(configs, data, lambda i, epoch, *_: i == 0 and epoch == 5,
                                 initial_weights=initial, shuffle=False, chunk_epochs=3)
    assert pruned.status == "pruned" and pruned.step_losses == results[0].step_losses[:62]
    # No member records (an interval longer than any trial): the program carries no
    # buffer, and trains as the recording one did.
    quiet = dataclasses.replace(spec, analysis=dataclasses.replace(spec.analysis,
                                                                   curve_every=10**9))
    plain = train_population([config(quiet, c.batch_size, c.learning_rate, c.seed)
                              for c in configs], data, initial_weights=initial, shuffle=False,
                             chunk_epochs=3)
    keys = {key.curve for key in _programs if key.chunk_epochs == 3 and key.micro == 16
            and key.layout.sizes == (10, 64, 32, 1)}
    assert keys == {True, False}
    for a, b in zip(plain, results, strict=True):
        assert a.step_every == 0 and a.step_losses == []
        np.testing.assert_allclose(a.train_curve, b.train_curve, rtol=1e-6)


def forward(weights: Weights, x: np.ndarray) -> np.ndarray:
    """The relu MLP's output logits, by numpy."""
    h = x
    for j in range(0, len(weights), 2):
        h = (np.maximum(h, 0) if j else h) @ weights[j] + weights[j + 1]
    return h


ACCURACY_CASES = {
    "binary": ["data.kind=classification", "train.loss=cross_entropy"],
    "4 classes": ["data.kind=classification", "data.n_classes=4",
                  "train.loss=sparse_cross_entropy"],
}


@pytest.mark.parametrize("case", list(ACCURACY_CASES))
def test_accuracy_per_epoch_is_keras_s_on_the_same_weights(case: str) -> None:
    spec = load_spec("article", [*SMALL, "train.epochs=3", *ACCURACY_CASES[case]])
    data = permuted(make_dataset(spec.data), seed=7)
    # B=48 accumulates micro-batches of 16, and its last batch of each epoch is partial.
    configs = [config(spec, 16, 0.01, 1), config(spec, 48, 0.03, 2)]
    runs = [fit_trial(i, c, data, shuffle=False) for i, c in enumerate(configs)]
    final: list[Weights] = []
    results = train_population(configs, data, initial_weights=[r.initial for r in runs],
                               shuffle=False, final_weights=final)
    for k, p, w in zip(runs, results, final, strict=True):
        ours, theirs = p, k.result
        assert len(ours.train_accuracy_curve) == len(theirs.train_accuracy_curve) == 3
        assert len(ours.val_accuracy_curve) == len(theirs.val_accuracy_curve) == 3
        # Shares of 200 and 100 rows: the same rows right, up to float32 rounding.
        np.testing.assert_allclose(ours.train_accuracy_curve, theirs.train_accuracy_curve,
                                   rtol=1e-6)
        np.testing.assert_allclose(ours.val_accuracy_curve, theirs.val_accuracy_curve, rtol=1e-6)
        assert ours.train_accuracy == ours.train_accuracy_curve[-1]
        # The validation accuracy after training is that of the final weights.
        logits = forward(w, data.x_val)
        guess = np.argmax(logits, axis=1) if logits.shape[1] > 1 else (logits[:, 0] > 0)
        assert ours.val_accuracy == pytest.approx(np.mean(guess == data.y_val[:, 0]), abs=1e-6)
        assert len(set(ours.train_accuracy_curve)) > 1  # it learned something
    # A regression loss has no accuracy.
    (mse,) = train_population([config(SPEC, 16, 0.01)], DATA)
    assert mse.train_accuracy_curve == mse.val_accuracy_curve == []


def test_images_and_several_outputs_same_numbers_as_keras() -> None:
    """(n, h, w, c) inputs: the keras model's Flatten and the population trainer's
    reshape are the same math; two regression outputs: the mean of their squared errors."""
    rng = np.random.default_rng(5)
    x = rng.normal(size=(120, 4, 4, 1)).astype(np.float32)
    w = rng.normal(size=(16, 2)).astype(np.float32)
    y = (x.reshape(120, 16) @ w + 0.1 * rng.normal(size=(120, 2))).astype(np.float32)
    data = Dataset(x[:96], y[:96], x[96:], y[96:], "regression")
    spec = load_spec("article", ["search.batch_size=[16]", "train.epochs=2", "model.hidden=[8]"])
    configs = [config(spec, bs, lr, seed) for bs, lr, seed in ((16, 0.01, 1), (32, 0.003, 2))]
    runs = [fit_trial(i, c, data, shuffle=False) for i, c in enumerate(configs)]
    assert [a.shape for a in runs[0].initial] == [(16, 8), (8,), (8, 2), (2,)]
    final: list[Weights] = []
    results = train_population(configs, data, initial_weights=[r.initial for r in runs],
                               shuffle=False, final_weights=final)
    for k, p, fw in zip(runs, results, final, strict=True):
        errors = [rel(a, b) for a, b in zip(p.train_curve + p.val_curve,
                                            k.result.train_curve + k.result.val_curve, strict=True)]
        errors.append(rel(p.full_train_loss, k.result.full_train_loss))
        errors += [float(np.linalg.norm(a - b) / np.linalg.norm(b))
                   for a, b in zip(fw, k.final, strict=True)]
        assert max(errors) < 1e-5, errors


def test_glorot_weights_have_keras_shapes_and_spread() -> None:
    w = glorot_weights(0, [10, 64, 32, 1])
    assert [a.shape for a in w] == [(10, 64), (64,), (64, 32), (32,), (32, 1), (1,)]
    limit = math.sqrt(6 / (10 + 64))
    assert np.abs(w[0]).max() <= limit and np.abs(w[0]).max() > 0.9 * limit
    assert not w[1].any() and not w[3].any()
    assert not np.array_equal(w[0], glorot_weights(1, [10, 64, 32, 1])[0])
    np.testing.assert_array_equal(w[0], glorot_weights(0, [10, 64, 32, 1])[0])


def test_groups_share_micro_batches() -> None:
    configs = [config(SPEC, bs, 0.01) for bs in (64, 16, 37, 32, 74, 256)]
    groups = plan_groups(configs, DATA.n_train)
    assert [(g.micro, [configs[i].batch_size for i in g.members]) for g in groups] == \
        [(16, [16, 32, 64, 256]), (37, [37, 74])]
    other = dataclasses.replace(SPEC.model, hidden=(8,))
    configs.append(dataclasses.replace(configs[0], model=other))
    assert len(plan_groups(configs, DATA.n_train)) == 3
    # Under a steps budget each batch size trains its own number of epochs: apart.
    steps = load_spec("article", [*SMALL, "train.budget=steps", "train.steps=40"])
    configs = [config(steps, bs, 0.01) for bs in (16, 32, 64, 48)]
    assert [[configs[i].batch_size for i in g.members]
            for g in plan_groups(configs, DATA.n_train)] == [[16], [32], [64], [48]]


def test_a_batch_size_with_enough_work_gets_its_own_program() -> None:
    # Enough member epochs of one batch size (OWN_PROGRAM) earn it its own micro-batch.
    many = OWN_PROGRAM // SPEC.train.epochs - 1  # with the claim's own, exactly enough
    configs = [config(SPEC, bs, 0.01) for bs in (16, 32, 64)]
    work = [*configs, *[config(SPEC, 64, 0.01, s) for s in range(many)]]
    assert [(g.micro, [configs[i].batch_size for i in g.members])
            for g in plan_groups(configs, DATA.n_train, work=work)] == [(16, [16, 32]), (64, [64])]
    # One member short of it: the claim's groups are weighed by `work`, not by themselves.
    work = work[:-1]
    assert [g.micro for g in plan_groups(configs, DATA.n_train, work=work)] == [16]
    # Offered micro-batches: an equal one first, else the largest that divides.
    kind = kind_of(configs[0], DATA.n_train)
    configs.append(config(SPEC, 128, 0.01))
    groups = plan_groups(configs, DATA.n_train, {kind: [16, 64, 32]})
    assert [(g.micro, [configs[i].batch_size for i in g.members]) for g in groups] == \
        [(16, [16]), (64, [64, 128]), (32, [32])]


def test_the_shuffle_is_the_counter_hash_sorted() -> None:
    """Each member's order of an epoch is its rows sorted by mix(mix(mix(seed) + epoch x
    golden) ^ mix(row)), computed here in TensorFlow's uint32 arithmetic."""
    tf = tensorflow()
    seeds, n = np.array([0, 7, -3, 2**31 - 1], np.int32), 50
    orders = shuffle_orders(seeds, 4, 2, n, 3)
    assert orders.shape == (4, 3, n)
    golden = tf.constant(0x9E3779B9, tf.uint32)
    for e, epoch in enumerate((4, 5, 5)):  # a chunk of 2 epochs in 3 slots repeats the last
        base = mix(tf, mix(tf, tf.cast(tf.constant(seeds), tf.uint32))
                   + tf.constant(epoch, tf.uint32) * golden)
        keys = mix(tf, tf.bitwise.bitwise_xor(base[:, None],
                                              mix(tf, tf.cast(tf.range(n), tf.uint32))[None, :]))
        np.testing.assert_array_equal(orders[:, e], tf.argsort(keys, axis=1, stable=True).numpy())
    assert sorted(orders[1, 0]) == list(range(n)) and not (orders[0, 0] == orders[1, 0]).all()
    assert (shuffle_orders(seeds, 4, 2, n, 3, shuffle=False) == np.arange(n)).all()


def test_tiles_are_balanced() -> None:
    for members in (1, 3, 20, 100, 400):
        tile = tile_size(members)
        tiles = -(-members // tile)
        assert tiles * tile - members < tiles  # at most one padding member per tile


def test_results_come_back_in_config_order_and_repeat_by_seed() -> None:
    configs = [config(SPEC, 64, 0.01, 1), config(SPEC, 16, 0.01, 1), config(SPEC, 64, 0.01, 2),
               config(SPEC, 64, 0.01, 1)]
    a, b, c, d = PopulationTrainer().train(configs, DATA)
    assert [r.steps for r in (a, b, c)] == [2 * 4, 2 * 13, 2 * 4]
    assert a.train_curve == d.train_curve and a.train_curve != c.train_curve
    # The same trial trained alone gives the same numbers as in company.
    (alone,) = PopulationTrainer().train([configs[0]], DATA)
    np.testing.assert_allclose(alone.train_curve, a.train_curve, rtol=1e-5)
    assert all(r.status == "complete" and r.seconds > 0 for r in (a, b, c, d))


def test_mixed_shapes_in_one_call() -> None:
    wide = dataclasses.replace(SPEC, model=dataclasses.replace(SPEC.model, hidden=(8,),
                                                              activation="tanh"))
    longer = dataclasses.replace(SPEC, train=dataclasses.replace(SPEC.train, epochs=3))
    configs = [config(SPEC, 16, 0.01), config(wide, 16, 0.01), config(longer, 48, 0.01),
               config(SPEC, 32, 0.01)]
    assert len(plan_groups(configs, DATA.n_train)) == 3
    results = train_population(configs, DATA)
    assert [len(r.train_curve) for r in results] == [2, 2, 3, 2]
    for c, r in zip(configs, results, strict=True):
        (alone,) = train_population([c], DATA)
        np.testing.assert_allclose(alone.train_curve, r.train_curve, rtol=1e-5)


def test_divergence_is_masked_and_dated() -> None:
    configs = [config(SPEC, 16, 1e12), config(SPEC, 16, 0.01)]
    bad, good = train_population(configs, DATA)
    assert bad.status == "diverged" and bad.diverged_epoch == 1
    assert len(bad.train_curve) == 1 and not math.isfinite(bad.train_curve[0])
    assert math.isnan(bad.full_train_loss)
    assert good.status == "complete" and len(good.train_curve) == 2
    (alone,) = train_population([configs[1]], DATA)
    np.testing.assert_allclose(alone.train_curve, good.train_curve, rtol=1e-5)


# Plain SGD on a linear model above its stability limit (lr about 2 / the top eigenvalue
# of the loss's Hessian, ~0.4 on these inputs): the loss grows ~30-fold per epoch and
# stays finite for many epochs, so only the threshold can stop it.
BLOW_UP = [*SMALL, "model.hidden=[]", "train.optimizer=sgd", "train.epochs=5",
           "train.divergence_factor=1000"]


def initial_mse(weights: Weights, data: Dataset) -> float:
    """A linear model's mean squared error on the training set, by numpy."""
    kernel, bias = weights
    return float(np.mean((data.x_train @ kernel + bias - data.y_train) ** 2))


def test_a_finite_blow_up_diverges_at_the_same_epoch_as_keras() -> None:
    spec = load_spec("article", BLOW_UP)
    data = permuted(make_dataset(spec.data), seed=7)
    configs = [config(spec, 16, 0.3, 1), config(spec, 16, 0.01, 2)]
    runs = [fit_trial(i, c, data, shuffle=False) for i, c in enumerate(configs)]
    final: list[Weights] = []
    bad, good = train_population(configs, data, initial_weights=[r.initial for r in runs],
                                 shuffle=False, final_weights=final)
    limit = 1000 * initial_mse(runs[0].initial, data)
    for r in (runs[0].result, bad):
        assert r.status == "diverged" and r.diverged_epoch is not None
        # Stopped at the first epoch above the limit, every loss finite: not an overflow.
        assert 2 <= r.diverged_epoch < 5 and len(r.train_curve) == r.diverged_epoch
        assert all(math.isfinite(v) for v in r.train_curve)
        assert max(r.train_curve[:-1]) < limit < r.train_curve[-1]
        assert math.isnan(r.full_train_loss)
    assert bad.diverged_epoch == runs[0].result.diverged_epoch
    np.testing.assert_allclose(bad.train_curve, runs[0].result.train_curve, rtol=1e-4)
    # Frozen at that epoch, as model.fit stopped there: the same weights as Keras's.
    for a, b in zip(final[0], runs[0].final, strict=True):
        assert np.linalg.norm(a - b) / np.linalg.norm(b) < 1e-4
    assert good.status == runs[1].result.status == "complete" and len(good.train_curve) == 5
    # With the factor off, the same trial trains its whole budget to a finite blow-up.
    off = dataclasses.replace(configs[0], train=dataclasses.replace(spec.train,
                                                                    divergence_factor=0.0))
    (free,) = train_population([off], data, initial_weights=[runs[0].initial], shuffle=False)
    assert free.status == "complete" and len(free.train_curve) == 5
    assert math.isfinite(free.train_loss) and free.train_loss > limit


def test_the_articles_grid_stays_far_below_the_divergence_threshold() -> None:
    # The threshold must change no cell of the article: every trial completes, and its
    # largest epoch loss stays a hundred times below the limit (measured: 1.2 times the
    # initial loss at most, the limit being 1000 times it).
    spec = load_spec("article")
    data = make_dataset(spec.data)
    sizes, rates = spec.search.batch_size, spec.search.learning_rate
    assert isinstance(sizes, tuple) and isinstance(rates, tuple)
    configs = [config(spec, bs, lr) for bs in sizes for lr in rates]
    results = train_population(configs, data)
    weights = glorot_weights(0, [10, 64, 32, 1])
    h = data.x_train
    for j in range(0, 6, 2):
        h = (np.maximum(h, 0) if j else h) @ weights[j] + weights[j + 1]
    initial = float(np.mean((h - data.y_train) ** 2))
    assert [r.status for r in results] == ["complete"] * 20
    worst = max(max(r.train_curve) for r in results) / initial
    assert worst < spec.train.divergence_factor / 100, worst


def test_monitor_sees_every_epoch_in_order_and_prunes() -> None:
    spec = load_spec("article", [*SMALL, "train.epochs=5"])
    configs = [config(spec, 16, 0.01, 0), config(spec, 32, 0.01, 1)]
    seen: list[tuple[int, int]] = []

    def monitor(i: int, epoch: int, loss: float, val: float, acc: float) -> bool:
        seen.append((i, epoch))
        return i == 1 and epoch == 3

    kept, pruned = train_population(configs, make_dataset(spec.data), monitor, chunk_epochs=2)
    assert [s for s in seen if s[0] == 0] == [(0, e) for e in range(1, 6)]
    assert [s for s in seen if s[0] == 1] == [(1, 1), (1, 2), (1, 3)]
    assert pruned.status == "pruned" and len(pruned.train_curve) == 3
    # Pruned at the first epoch of a chunk of two: it trained on, so its weights are not
    # those of epoch 3 and its full-set loss is unknown rather than wrong.
    assert math.isnan(pruned.full_train_loss)
    assert kept.status == "complete" and len(kept.train_curve) == 5
    assert math.isfinite(kept.full_train_loss)


def test_pruned_at_a_chunk_end_keeps_its_weights() -> None:
    spec = load_spec("article", [*SMALL, "train.epochs=4", "search.pruner=median"])
    trainer = get_trainer("auto", spec)
    assert isinstance(trainer, PopulationTrainer) and trainer.chunk_epochs == 1
    data = make_dataset(spec.data)
    c = config(spec, 32, 0.01)
    (pruned,) = trainer.train([c], data, lambda i, epoch, loss, val, acc: epoch == 2)
    short = dataclasses.replace(c, train=dataclasses.replace(c.train, epochs=2))
    (two,) = trainer.train([short], data)
    assert pruned.status == "pruned" and pruned.train_curve == pytest.approx(two.train_curve)
    assert pruned.full_train_loss == pytest.approx(two.full_train_loss, rel=1e-5)


def test_trainer_choice(capsys: pytest.CaptureFixture[str]) -> None:
    from study.cli import _trainer_factory

    assert get_trainer("auto", SPEC).name == "population"
    assert get_trainer("population", SPEC).name == "population"
    assert get_trainer("keras", SPEC).name == "keras"
    assert choose_trainer("auto", SPEC)[1] is None
    odd = dataclasses.replace(SPEC, model=dataclasses.replace(SPEC.model, activation="selu"))
    assert unsupported(odd) == "model.activation = 'selu'"
    trainer, why = choose_trainer("population", odd)
    assert isinstance(trainer, KerasTrainer) and isinstance(get_trainer("auto", odd), KerasTrainer)
    assert why == ("the population trainer does not support model.activation = 'selu'; "
                   "training with the keras trainer")
    assert capsys.readouterr() == ("", "")  # the library says nothing; the CLI does
    assert isinstance(_trainer_factory(SPEC)(), PopulationTrainer)
    assert capsys.readouterr() == ("", "")
    auto = dataclasses.replace(odd, run=dataclasses.replace(odd.run, trainer="auto"))
    assert isinstance(_trainer_factory(auto)(), KerasTrainer)
    assert capsys.readouterr() == ("", f"study: {why}\n")


# (batch size, learning rate) cells whose final losses vary over seeds by 5-15%, so that
# 8 seeds can tell two trainers apart, after 10 epochs on 256 rows (cheap for Keras).
# Both trainers draw a fresh shuffle every epoch (see keras._rows).
STAT_CELLS = {"adam": [(16, 0.01), (32, 0.003)],
              "sgd": [(16, 0.03), (32, 0.03)]}


@pytest.mark.parametrize("optimizer", list(STAT_CELLS))
def test_final_losses_are_distributed_as_keras_s(optimizer: str) -> None:
    spec = load_spec("article", ["data.n_train=256", "data.n_val=100", "train.epochs=10",
                                 "search.batch_size=[16]", f"train.optimizer={optimizer}"])
    data = make_dataset(spec.data)
    cells = STAT_CELLS[optimizer]
    configs = [config(spec, bs, lr, seed) for bs, lr in cells for seed in range(8)]
    keras_losses = np.array([r.train_loss for r in KerasTrainer().train(configs, data)])
    ours = np.array([r.train_loss for r in train_population(configs, data)])
    lines, failures = [], []
    for i, (bs, lr) in enumerate(cells):
        k, p = keras_losses[i * 8:(i + 1) * 8], ours[i * 8:(i + 1) * 8]
        pvalue = float(stats.ttest_ind(k, p, equal_var=False).pvalue)
        gap = abs(p.mean() - k.mean()) / k.mean()
        lines.append(f"bs={bs} lr={lr:g}: keras {k.mean():.4f}±{k.std(ddof=1):.4f}, "
                     f"population {p.mean():.4f}±{p.std(ddof=1):.4f}, "
                     f"Welch p={pvalue:.3f}, means {gap:.1%} apart")
        if not (pvalue > 0.01 and gap < 0.10):
            failures.append(lines[-1])
    print(f"\nfinal training loss over 8 seeds, 10 epochs, 256 rows ({optimizer}):\n"
          + "\n".join(lines))
    assert not failures, "\n".join(lines)
