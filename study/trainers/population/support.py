"""What the population trainer can train."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from study.spec import Spec
from study.trainers.population.losses import LOSSES
from study.trainers.population.optimizers import OPTIMIZERS

Tensor = Any  # a tf.Tensor; TensorFlow ships no type stubs
Weights = list[npt.NDArray[np.float32]]  # [kernel_1, bias_1, kernel_2, bias_2, ...]

ACTIVATIONS = ("relu", "tanh", "linear")
SCHEDULES = ("constant", "step", "cosine", "warmup")


def unsupported(spec: Spec) -> str | None:
    """Why the population trainer cannot train `spec` (None when it can)."""
    if spec.model.activation not in ACTIVATIONS:
        return f"model.activation = {spec.model.activation!r}"
    if spec.train.optimizer not in OPTIMIZERS:
        return f"train.optimizer = {spec.train.optimizer!r}"
    if spec.train.loss not in LOSSES:
        return f"train.loss = {spec.train.loss!r}"
    if spec.train.schedule not in SCHEDULES:
        return f"train.schedule = {spec.train.schedule!r}"
    return None
