"""The population trainer: many trials trained at once in one XLA-compiled TensorFlow program.

A study of the batch-size x learning-rate plane trains hundreds of tiny MLPs whose
arithmetic takes milliseconds; one `model.fit` each spends its time in Python, graph
building and per-step dispatch. Here trials are stacked on a leading *member* axis:
every weight, Adam slot, learning rate, seed, shuffle order and step count has one row
per trial, and the whole epoch loop, steps included, runs inside one
`tf.function(jit_compile=True)`, so no Python runs per step.

The math is the reference trainer's (`keras.py`), member by member:

- Glorot-uniform kernels, zero biases (`keras.layers.Dense` defaults);
- Keras 3's Adam (`keras/src/optimizers/adam.py`): `alpha = lr * sqrt(1 - b2^t) /
  (1 - b1^t)`, `m += (g - m)(1 - b1)`, `v += (g^2 - v)(1 - b2)`,
  `w -= m * alpha / (sqrt(v) + eps)`, with eps = 1e-7 outside the square root;
- a fresh shuffle every epoch, the last partial batch trained, not dropped;
- the epoch loss as `model.fit` reports it: Keras' `Mean` loss tracker weights each
  batch's mean loss by the batch's row count, i.e. the sum of squared errors over the
  epoch divided by the number of rows;
- validation on the held-out set after every epoch, and the loss on the whole
  training set after training;
- for the classification losses, the epoch's accuracy as `model.fit`'s accuracy metric
  reports it (the epoch's rows right, each batch judged before its own update, over
  the rows), and the held-out accuracy after every epoch.

One program serves several batch sizes. Each step processes a *micro-batch* of `b0`
rows per member, where `b0` divides every member's batch size; a member accumulates
the gradients of `batch_size / b0` micro-batches and applies its optimizer update on
the last one. Every member thus walks through the same number of micro-steps per
epoch (`ceil(n / b0)`) and computes on exactly its own rows, so the article's grid
(batch sizes 16..256) is one program and one compilation, not five. Batch sizes with
no common divisor worth using (a TPE study's 37 and 101) go to separate programs, and
so does a batch size with enough work in the study to pay for its compile (the article
x 100 seeds): a micro-batch as large as the batch is faster per row. Groups train side
by side, their tiles sharing the cores.

Each member's row order of an epoch is computed on the host (numpy's sort of a
counter-based hash of its seed, the epoch and the row) and handed to the program with
each chunk: XLA's sort on a CPU cost a quarter of the program's time.

Members that diverge (an epoch's loss NaN, inf, or above their limit: see
`base.diverges`) are frozen inside the program at the end of that epoch; members the
monitor prunes are frozen between chunks of epochs. Frozen members still ride along in
the arithmetic until their group ends, masked out of every update.

Nothing here pins a device: on a machine where TensorFlow sees a GPU, XLA compiles
the same program for it.

The package, one concern per module: `optimizers` (the update rules), `losses` (losses,
their derivatives, accuracy), `layout` (members' parameter rows, grouping, tiles),
`layers` (each fused layer's math; BatchNormalization's in `batchnorm`), `network` (the
model read as a chain of layers), `program` (the compiled epoch loop), `probes` (noise
scale and sharpness on a population), `support` (what it can train) and `trainer` (the
runner's seam).
"""

from __future__ import annotations

from study.trainers.population.layout import (
    Group,
    Layout,
    Weights,
    glorot_weights,
    plan_groups,
    tile_size,
)
from study.trainers.population.network import Net, layout_of, net_of
from study.trainers.population.probes import noise_norms, sharpness
from study.trainers.population.program import _programs, program_key
from study.trainers.population.support import unsupported
from study.trainers.population.trainer import (
    PopulationTrainer,
    train_population,
)

__all__ = [
    "Group",
    "Layout",
    "Net",
    "PopulationTrainer",
    "Weights",
    "_programs",
    "glorot_weights",
    "layout_of",
    "net_of",
    "noise_norms",
    "plan_groups",
    "program_key",
    "sharpness",
    "tile_size",
    "train_population",
    "unsupported",
]
