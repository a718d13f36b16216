"""The FLOP count of study/flops.py, on hand-worked networks."""

from __future__ import annotations

import pytest

from study.flops import Flops, backward_per_row, forward_per_row, trial_flops
from study.spec import load_spec


def test_the_articles_network_by_hand() -> None:
    widths = [10, 64, 32, 1]  # the article's MLP
    # 2 * (10*64 + 64*32 + 32*1) = 2 * 2720
    assert forward_per_row(widths) == 5440
    # Weight gradients of all three layers, input gradients of the last two only.
    assert backward_per_row(widths) == 5440 + 2 * (64 * 32 + 32 * 1)
    assert forward_per_row([3, 1]) == 6 and backward_per_row([3, 1]) == 6  # linear model


def test_one_trial_of_the_article() -> None:
    spec = load_spec("article")
    plan = spec.train.plan(16, 1000)
    f = trial_flops([10, 64, 32, 1], plan.examples, plan.epochs, 1000, 1000)
    assert plan.examples == 50 * 1000 and plan.epochs == 50
    assert f.training == 50_000 * (5440 + 9600)
    assert f.evaluation == (50 * 1000 + 1000) * 5440
    # About 23 MFLOP per member-epoch (training and validation), as issue 12 estimated.
    assert 20e6 < (f.training + 50 * 1000 * 5440) / 50 < 23e6
    both = f + f
    assert both.total == 2 * f.total and both.training == 2 * f.training


@pytest.mark.parametrize("widths", [[10], [], [10, 0, 1], [10, 2.5, 1], [True, 1]])
def test_bad_widths_are_refused(widths: list[object]) -> None:
    with pytest.raises(ValueError, match="widths"):
        forward_per_row(widths)  # type: ignore[arg-type]


def test_bad_counts_are_refused() -> None:
    with pytest.raises(ValueError, match="n_val"):
        trial_flops([2, 1], 10, 1, 10, -1)
    assert Flops(1.0, 2.0).total == 3.0
