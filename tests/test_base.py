"""The divergence rule both trainers apply (study/trainers/base.py)."""

from __future__ import annotations

import math

import numpy as np

from study.spec import TrainSpec
from study.trainers.base import divergence_limit, diverges


def test_limit_is_the_factor_times_the_initial_loss_in_float32() -> None:
    assert divergence_limit(TrainSpec(divergence_factor=1000.0), 8.0) == 8000.0
    # 1000 / 3 is no float32; the limit is the float32 nearest, what a compiled program
    # comparing in float32 holds.
    limit = divergence_limit(TrainSpec(divergence_factor=1000.0), 1 / 3)
    assert limit != 1000 / 3 and limit == 333.3333435058594
    assert limit == float(np.float32(1000 / 3))


def test_no_limit_when_off_or_without_a_scale() -> None:
    assert divergence_limit(TrainSpec(divergence_factor=0.0), 8.0) == math.inf
    for initial in (0.0, -1.0, math.nan, math.inf, 1e38):  # 1e38 x 1000 is past float32
        assert divergence_limit(TrainSpec(divergence_factor=1000.0), initial) == math.inf


def test_diverges_above_the_limit_or_when_not_finite() -> None:
    assert not diverges(100.0, 100.0) and diverges(100.00001, 100.0)
    assert diverges(math.nan, math.inf) and diverges(math.inf, math.inf)
    assert diverges(-math.inf, 100.0) and not diverges(1e30, math.inf)
