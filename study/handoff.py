"""What a local pool's workers need that the study's stored spec cannot give them: arrays
handed to `study.run(data=...)`, and a builder function they cannot import.

The parent writes them to a temporary directory before starting the pool, and each
`study worker` it starts reads them (its hidden `--data-file` and `--model-file`). The
data file holds the arrays as the study trains on them (already split and
standardized); the worker recomputes their fingerprint, which `runner.open_study`
compares with the study's, so a file changed on the way is refused like other data.
The model file holds the model's Keras config (models.py, `export_builder`).

Only workers on this machine can read them: a study with workers on other machines
needs its data in a file or a loader and an importable `module:function` builder
(`remote_needs` says which).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from study.data import ARRAYS, Dataset, fingerprint
from study.errors import DataError, SpecError
from study.user_code import first_line

DATA_FILE = "data.npz"
MODEL_FILE = "model.json"


def write(directory: Path, data: Dataset | None, model: dict[str, Any] | None) -> list[str]:
    """Write what is given to `directory`; returns the `study worker` options naming it."""
    args: list[str] = []
    if data is not None:
        path = directory / DATA_FILE
        np.savez(path, **{name: getattr(data, name) for name in ARRAYS},
                 task=np.array(data.task))
        args += ["--data-file", str(path)]
    if model is not None:
        path = directory / MODEL_FILE
        path.write_text(json.dumps(model), encoding="utf-8")
        args += ["--model-file", str(path)]
    return args


def read_data(path: str | os.PathLike[str]) -> Dataset:
    """The arrays `write` saved, fingerprinted afresh."""
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {name: np.ascontiguousarray(f[name], dtype=np.float32) for name in ARRAYS}
            task = str(f["task"])
    except Exception as e:
        raise DataError(f"--data-file: {os.fspath(path)!r} cannot be read: "
                        f"{type(e).__name__}: {first_line(e)}") from None
    return Dataset(**arrays, task=task, fingerprint=fingerprint(arrays))


def read_model(path: str | os.PathLike[str]) -> None:
    """Register the builder `write` saved (models.py, `import_builder`)."""
    from study.models import import_builder

    try:
        payload = json.loads(Path(path).read_text(encoding="utf-8"))
        if not isinstance(payload, dict) or not {"ref", "config"} <= set(payload):
            raise ValueError("expected an object with 'ref' and 'config'")
    except Exception as e:
        raise SpecError(f"--model-file: {os.fspath(path)!r} cannot be read: "
                        f"{type(e).__name__}: {first_line(e)}") from None
    import_builder(payload)


def remote_needs(in_memory_data: bool, local_model: str | None) -> str | None:
    """One line on what workers on other machines would need, or None when they could
    join as the study stands. `local_model` is a builder's ref that only this machine
    can rebuild (None: none)."""
    needs = []
    if in_memory_data:
        needs.append("its data in a file or a loader (data.kind = 'npz', 'csv' or 'python') "
                     "instead of arrays passed as data=")
    if local_model is not None:
        needs.append(f"model.builder = 'module:function' naming a function in a module they "
                     f"can import, instead of {local_model!r}")
    if not needs:
        return None
    return ("the workers on this machine got what they need from a temporary file; "
            "`study worker` on other machines needs " + " and ".join(needs))
