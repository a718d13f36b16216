"""Learning-rate schedules: our description against Keras's own schedule classes."""

from __future__ import annotations

import numpy as np
import pytest

from study.spec import load_spec
from study.trainers._tf import tensorflow
from study.trainers.keras import keras_schedule
from study.trainers.schedule import Schedule

pytestmark = pytest.mark.slow

CASES = {
    "constant": [],
    "step": ["train.schedule=step", "train.decay_at=[0.25, 0.5, 0.75]", "train.decay_rate=0.5"],
    "cosine": ["train.schedule=cosine"],
    "cosine after warm-up": ["train.schedule=cosine", "train.warmup_fraction=0.1"],
    "warm-up": ["train.schedule=warmup", "train.warmup_fraction=0.2"],
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("total", [1, 7, 100])
def test_schedule_is_keras_schedule_at_every_step(case: str, total: int) -> None:
    tensorflow()
    s = Schedule.of(load_spec("article", CASES[case]).train, 0.05, total)
    keras_lr = keras_schedule(s)
    for step in range(total + 3):  # past the end too: Keras clamps, so do we
        expected = float(keras_lr(np.int64(step))) if callable(keras_lr) else keras_lr
        # Keras computes in float32: near the end of a cosine, 1 + cos(...) cancels, so
        # the tolerance is relative to the peak rate there.
        assert s.at(step) == pytest.approx(expected, rel=1e-6, abs=1e-6 * 0.05), (case, step)


def test_schedule_lengths_are_fractions_of_the_trials_steps() -> None:
    train = load_spec("article", CASES["step"]).train
    s = Schedule.of(train, 0.1, 200)
    assert s.boundaries == (50, 100, 150)
    assert s.values == pytest.approx((0.1, 0.05, 0.025, 0.0125))
    # Keras's convention: step b is still at the old rate, step b + 1 at the new one.
    assert s.at(50) == 0.1 and s.at(51) == 0.05
    warm = Schedule.of(load_spec("article", CASES["warm-up"]).train, 0.1, 200)
    assert warm.warmup == 40 and warm.at(0) == 0.0 and warm.at(20) == pytest.approx(0.05)
    assert warm.at(40) == warm.at(199) == pytest.approx(0.1)
    cosine = Schedule.of(load_spec("article", CASES["cosine"]).train, 0.1, 200)
    assert cosine.at(0) == 0.1 and cosine.at(100) == pytest.approx(0.05)
    assert 0 < cosine.at(199) < 1e-4
    # A warm-up of any positive fraction lasts at least one step.
    assert Schedule.of(load_spec("article", ["train.schedule=warmup", "train.warmup_fraction=0.01"]
                                 ).train, 0.1, 10).warmup == 1
