"""How much arithmetic a study of dense networks does: an honest floating-point count.

The count, per row of data through a network of Dense layers (`widths`: inputs, each
hidden width, outputs):

- forward: 2 * inputs * outputs per Dense layer (a multiply and an add per weight);
  the bias adds and activations, a few per unit rather than per weight, are left out
  (under 2% for the article's 10-64-32-1);
- backward: the weight gradient of every layer (2 * in * out each) and the input
  gradient of every layer but the first (the data needs no gradient): about twice the
  forward;
- the optimizer's update (Adam: about a dozen elementwise operations per parameter per
  step) is not counted: it is memory-bound elementwise work, not the matrix products a
  matmul peak measures, and counting it would flatter a small batch size most.

Training is every row a trial's budget trains (forward and backward); evaluation is
the forward passes that measure it: the validation set after every epoch, and the
whole training set once after training (the full training loss). Rows only: padding a
trainer adds to fill a batch or a tile is work it chose, not work the study asked for.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Flops:
    training: float  # forward and backward passes of the trained rows
    evaluation: float  # forward passes over the validation and training sets

    @property
    def total(self) -> float:
        return self.training + self.evaluation

    def __add__(self, other: Flops) -> Flops:
        return Flops(self.training + other.training, self.evaluation + other.evaluation)


def _check(widths: Sequence[int]) -> None:
    if len(widths) < 2 or any(isinstance(w, bool) or not isinstance(w, int) or w < 1
                              for w in widths):
        raise ValueError(f"widths: expected at least two positive integers (inputs, ..., "
                         f"outputs), got {list(widths)!r}")


def forward_per_row(widths: Sequence[int]) -> int:
    """Forward FLOPs of one row: 2 * in * out summed over the Dense layers."""
    _check(widths)
    return sum(2 * a * b for a, b in itertools.pairwise(widths))


def backward_per_row(widths: Sequence[int]) -> int:
    """Backward FLOPs of one row: every layer's weight gradient, and the input gradient
    of every layer but the first."""
    _check(widths)
    layers = [2 * a * b for a, b in itertools.pairwise(widths)]
    return sum(layers) + sum(layers[1:])


def trial_flops(widths: Sequence[int], trained_rows: int, epochs: int, n_train: int,
                n_val: int) -> Flops:
    """One trial: `trained_rows` rows trained over `epochs` epochs (a plan's `examples`
    and `epochs`), validated on `n_val` rows after each epoch, and its final loss
    measured on the `n_train` training rows."""
    for name, v in (("trained_rows", trained_rows), ("epochs", epochs), ("n_train", n_train),
                    ("n_val", n_val)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ValueError(f"{name}: expected a non-negative integer, got {v!r}")
    forward = forward_per_row(widths)
    return Flops(training=float(trained_rows * (forward + backward_per_row(widths))),
                 evaluation=float((epochs * n_val + n_train) * forward))
