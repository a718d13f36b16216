"""The quickstart from Python: your builder and your arrays through `study.run`, then
what a notebook asks of the results. From this folder:

    python quickstart.py

The targets are 0/1, so the task is binary: the loss defaults to cross_entropy and the
objective to the validation error (README: "Defaults that follow your data").
"""

from __future__ import annotations

import numpy as np
from build import build  # build.py, beside this script

import study

rng = np.random.default_rng(0)
x = rng.normal(size=(600, 8)).astype("float32")
y = (x[:, 0] * x[:, 1] + np.sin(2 * x[:, 2]) > 0).astype("int64")  # 0/1 labels

results = study.run(
    model=build,
    data=(x, y),
    seeds=[0],
    overrides={
        "data.val_fraction": 0.25,
        "train.epochs": 5,
        "train.keep_weights": "best",
        "search.batch_size": [16, 64],
        "search.learning_rate": [0.03, 0.01, 0.003],
    },
)
print(results)
print(results.spec.train.loss, results.spec.train.objective)  # chosen from the data
print(results.best)
print(results.grid())

model = results.model()  # the best cell's trained Keras model, compiled as it trained
print(type(model).__name__, model.count_params(), "parameters;",
      "first 8 predictions:", (model.predict(x[:8], verbose=0).ravel() > 0).astype(int),
      "labels:", y[:8])
print(results.scaling())

print(results.optuna_study.best_trial.params)
print(results.trials().to_pandas()[["batch_size", "learning_rate", "objective"]].head(3))
