"""What the population trainer can train."""

from __future__ import annotations

from typing import TYPE_CHECKING

from study.spec import Spec
from study.trainers.base import output_width
from study.trainers.population.layers import ACTIVATIONS
from study.trainers.population.losses import LOSSES
from study.trainers.population.optimizers import OPTIMIZERS

if TYPE_CHECKING:
    from study.data import Dataset

SCHEDULES = ("constant", "step", "cosine", "warmup")


def unsupported(spec: Spec, data: Dataset | None = None) -> str | None:
    """Why the population trainer cannot train `spec` on `data` (None when it can), as
    a short phrase naming the culprit: a setting, or the first layer of the model it
    cannot fuse (see network.py).

    A builder's model is read for the data's input shape; without `data` it is not
    read, and the answer is a reason.
    """
    model = spec.model
    if not model.builder and model.activation not in ACTIVATIONS:
        return f"model.activation = {model.activation!r}"
    if spec.train.optimizer not in OPTIMIZERS:
        return f"train.optimizer = {spec.train.optimizer!r}"
    if spec.train.loss not in LOSSES:
        return f"train.loss = {spec.train.loss!r}"
    if spec.train.schedule not in SCHEDULES:
        return f"train.schedule = {spec.train.schedule!r}"
    if model.builder and data is None:
        return "model.builder without the data set its model is built for"
    if data is not None:
        from study.trainers.population.network import net_of, with_loss

        net = net_of(model, data.input_shape, output_width(spec.train, data))
        if not isinstance(net, str):
            net = with_loss(net, spec.train.loss)
        if isinstance(net, str):
            return net
        dropout = net.dropout
    else:
        dropout = model.dropout > 0
    if dropout and spec.analysis.noise:
        # The probe's minibatch gradients would need Dropout masks of their own; the
        # keras trainer measures them with Keras' masks.
        return "analysis.noise on a model with Dropout"
    return None
