"""A trainer of our own for worker tests and benches: a fixed time per trial, fake losses.

`run.trainer = "tests.cheap_trainer:train"`. Each trial sleeps STUDY_CHEAP_SECONDS
(default 0.05 s) and returns losses that depend only on its cell, so a worker process
never loads TensorFlow and a test's cost is the runner's own. STUDY_CHEAP_MARK, when
set, names a folder where each process leaves a file `<pid>` as it trains its first
trial: a test that must catch a worker mid-training waits for it.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

_marked = False


def train(config: Any, data: Any) -> dict[str, float]:
    global _marked
    mark = os.environ.get("STUDY_CHEAP_MARK")
    if mark and not _marked:
        _marked = True
        (Path(mark) / str(os.getpid())).touch()
    time.sleep(float(os.environ.get("STUDY_CHEAP_SECONDS", "0.05")))
    loss = 1.0 + abs(math.log10(config.learning_rate) + 2.5) / config.batch_size ** 0.5 \
        + 0.001 * config.seed
    return {"train_loss": loss, "val_loss": loss * 1.1}
