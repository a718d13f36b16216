"""The article's own experiment loop, as it runs it: the baseline of `make bench`'s ratios.

One Keras model per combination of batch size and learning rate, built, compiled and fit
with `model.fit` one after another in this process, on the article's synthetic regression
set (numpy's global seed 0). `make bench` times this script as a process of its own,
start to exit, and divides by the 20 combinations: the article's seconds per trial, set
against a `study run`'s in the same run.

What the article does after the loop (plot the losses with matplotlib) is left out: no
plotting, so nothing here waits on a window. The 20 final training losses (the last
epoch's mean loss, `history.history['loss'][-1]`, as the article keeps) are printed as
JSON on the last line of the output.

    python bench/article_loop.py              # 50 epochs, as the article
    python bench/article_loop.py --epochs 2   # a smoke run
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
BATCH_SIZES = (16, 32, 64, 128, 256)
LEARNING_RATES = (0.1, 0.01, 0.001, 0.0001)
EPOCHS = 50


def positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def run(epochs: int, batch_sizes: Sequence[int] = BATCH_SIZES,
        learning_rates: Sequence[float] = LEARNING_RATES) -> list[dict[str, Any]]:
    """The article's loop with `epochs` epochs per combination: each combination's final
    training loss, in the article's order (batch sizes outer, learning rates inner). The
    script always runs the article's whole grid; a test passes a part of it."""
    # This checkout's `study`, which bench/bench.py imports TensorFlow through (quietly,
    # no compile cache when the bench sets STUDY_XLA_CACHE=off: Keras's `fit` does not
    # use XLA on a CPU anyway).
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from study.trainers._tf import tensorflow

    tf = tensorflow()

    np.random.seed(0)
    x = np.random.rand(1000, 10)
    y = np.dot(x, np.random.rand(10, 1)) + np.random.rand(1000, 1)

    def create_model() -> Any:
        return tf.keras.models.Sequential([
            tf.keras.layers.Dense(64, activation="relu", input_shape=(x.shape[1],)),
            tf.keras.layers.Dense(32, activation="relu"),
            tf.keras.layers.Dense(1),
        ])

    results = []
    for batch_size in batch_sizes:
        for lr in learning_rates:
            model = create_model()
            model.compile(optimizer=tf.keras.optimizers.Adam(learning_rate=lr),
                          loss="mean_squared_error")
            history = model.fit(x, y, epochs=epochs, batch_size=batch_size, verbose=0)
            results.append({"batch_size": batch_size, "learning_rate": lr,
                            "loss": float(history.history["loss"][-1])})
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=positive, default=EPOCHS,
                        help=f"epochs per combination (default: {EPOCHS}, the article's)")
    opts = parser.parse_args(argv)
    print(json.dumps(run(opts.epochs)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
