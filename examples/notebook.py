"""A notebook-style script: your own model and arrays through the Python API.

Each block is what a notebook cell would hold. The builder is defined here, in the
script (in a notebook: in a cell), and the data are numpy arrays in memory: `study.run`
takes both. Run from the repository root:

    python examples/notebook.py                     # the full grid (a few minutes)
    python examples/notebook.py --quick             # 2 x 2 cells, 2 epochs (seconds)
    python examples/notebook.py --workers 2         # two worker processes on this machine

It writes the study to storage/notebook.db (--storage), the article's figure and the
whole report to dashboards/notebook/ (--out), and prints the tables.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from sklearn.datasets import load_digits

import study

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--storage", default="sqlite:///storage/notebook.db")
parser.add_argument("--out", default="dashboards/notebook")
parser.add_argument("--quick", action="store_true", help="2 x 2 cells, 2 epochs")
parser.add_argument("--workers", type=int, default=1)
args = parser.parse_args()


# %% The model: a function (input_shape, outputs) -> an uncompiled keras.Model, logits out.
def build(input_shape: tuple[int, ...], outputs: int) -> Any:
    import keras

    return keras.Sequential([
        keras.Input(shape=input_shape),
        keras.layers.Dense(48, activation="tanh"),
        keras.layers.Dropout(0.1),
        keras.layers.Dense(outputs),
    ])


# %% The data: any arrays. Here the digits as rows of 64 pixels, integer labels 0-9.
digits = load_digits()
x, y = digits.data, digits.target

# %% The study: the batch size x learning rate grid, on this model and these arrays.
grid = {"search.batch_size": [16, 64, 256], "search.learning_rate": [0.01, 0.001, 0.0001],
        "train.epochs": 15}
if args.quick:
    grid = {"search.batch_size": [32, 128], "search.learning_rate": [0.01, 0.001],
            "train.epochs": 2}
if args.storage.startswith("sqlite:///storage/"):
    Path("storage").mkdir(exist_ok=True)
results = study.run(
    {"name": "notebook", "data": {"val_fraction": 0.2, "standardize": True},
     "train": {"loss": "sparse_cross_entropy", "objective": "val_error"}},
    model=build,
    data=(x, y),
    storage=args.storage,
    seeds=[0],
    workers=args.workers,
    overrides=grid,
    progress=True,  # the progress bar on stderr, and which trainer trains
)
for note in results.notes:  # with workers: what a study on several machines needs
    print("note:", note)

# %% The tables `study query` prints, as Python objects.
print(results.grid())
best = results.best_lr().to_dicts()
print("best learning rate per batch size:",
      [(row["batch_size"], row["learning_rate"]) for row in best])
assert results.spec is not None
print("model.builder stored with the study:", results.spec.model.builder)

# %% A figure (a plotly Figure: in a notebook, just show it) and the whole report.
out = Path(args.out)
out.mkdir(parents=True, exist_ok=True)
results.figure("article").write_html(out / "article-figure.html", include_plotlyjs="directory")
report = results.report(out)
print(f"report: {len(report.files)} files in {report.out}")
