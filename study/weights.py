"""Keeping the trained model: `train.keep_weights = "best"`.

Which cell is best is known only once the study is finished, and a finished Optuna
trial can no longer be written to. So weights travel in two steps:

1. **Staged, per trial.** As each trial's result comes back from its trainer, its final
   weights (`TrialResult.weights`) are written to a staging folder, one `.npz` file per
   cell (batch size, learning rate, seed), atomically (a temporary file, then a rename):
   a kill loses at most the trials in hand, whose cells run again and overwrite theirs.
2. **Published, once the study is finished.** `publish` finds the best cell (the lowest
   mean objective, as `Results.best`), uploads each of its seeds' files to Optuna's
   artifact store as an artifact *of the study* (optuna-dashboard lists them on the
   study's page, named `weights-B<b>-lr<lr>-seed<s>.npz`) and records which artifact
   holds which seed in the study attribute `best_weights`. Staged files of other cells
   are then removed; the best cell's stay, so a study extended later with more seeds
   can publish again (a new best cell's earlier seeds are then missing: `publish` says
   which).

Where the files live: beside a SQLite database `x.db`, in `x.db.artifacts/`; for other
databases, in `storage/artifacts/` under the current directory (workers on several
machines must share that folder, or keep no weights). Optuna has no public way to delete
an artifact, so one published for an earlier best cell stays in the store, named by its
cell; `best_weights` names the current one.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from study.trainers.base import TrialConfig, TrialResult

BEST_WEIGHTS = "best_weights"  # study user attribute: the published cell and artifacts
META = "__study_meta__"  # the npz entry holding the weights' provenance (JSON)


def artifacts_dir(url: str) -> Path:
    """The artifact store's folder for the storage `url` (see the module docstring)."""
    from study.storage import sqlite_path

    db = sqlite_path(url)
    if db is not None:
        return db.with_name(db.name + ".artifacts")
    return Path("storage") / "artifacts"


def staging_dir(url: str, study_id: int) -> Path:
    return artifacts_dir(url) / "staging" / f"study-{study_id}"


def _cell_file(folder: Path, batch_size: int, learning_rate: float, seed: int) -> Path:
    # repr of a float is exact and file-name safe (digits, '.', 'e', '-').
    return folder / f"{batch_size}_{learning_rate!r}_{seed}.npz"


def stage(folder: Path, config: TrialConfig, result: TrialResult, input_shape: Sequence[int],
          outputs: int, n_train: int) -> Path | None:
    """Write one trial's weights (with what rebuilding its model needs) to `folder`;
    None when the trial has none (diverged, or weights were not asked for)."""
    if result.weights is None:
        return None
    folder.mkdir(parents=True, exist_ok=True)
    meta = {"batch_size": config.batch_size, "learning_rate": config.learning_rate,
            "seed": config.seed, "input_shape": list(input_shape), "outputs": outputs,
            "n_train": n_train, "val_loss": result.val_loss}
    arrays = {f"w{i:04d}": np.asarray(w) for i, w in enumerate(result.weights)}
    arrays[META] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    target = _cell_file(folder, config.batch_size, config.learning_rate, config.seed)
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)  # type: ignore[arg-type]
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


@dataclass(frozen=True)
class Kept:
    """A set of weights read back: the arrays in `get_weights()` order and their cell."""

    weights: list[np.ndarray[Any, Any]]
    batch_size: int
    learning_rate: float
    seed: int
    input_shape: tuple[int, ...]
    outputs: int
    n_train: int
    val_loss: float


def read(path: Path | str) -> Kept:
    with np.load(path) as z:
        meta = json.loads(bytes(z[META]).decode())
        weights = [np.array(z[k]) for k in sorted(k for k in z.files if k != META)]
    val = meta.get("val_loss")
    return Kept(weights, int(meta["batch_size"]), float(meta["learning_rate"]),
                int(meta["seed"]), tuple(int(d) for d in meta["input_shape"]),
                int(meta["outputs"]), int(meta["n_train"]),
                float(val) if isinstance(val, int | float) else math.nan)


@dataclass(frozen=True)
class Published:
    """What `publish` did."""

    batch_size: int
    learning_rate: float
    seeds: tuple[int, ...]  # seeds whose weights the study now holds
    missing: tuple[int, ...]  # seeds of the best cell with no staged weights
    uploaded: int  # artifacts uploaded by this call (0: already published)


def publish(url: str, study_name: str) -> Published | None:
    """Upload the best cell's staged weights as study artifacts (see the module
    docstring); None when the study has no best cell yet. Call it only once every
    trial is finished: the best cell may change while trials are left."""
    import optuna
    from optuna.artifacts import FileSystemArtifactStore, upload_artifact

    from study.api import load
    from study.storage import open_storage

    best = load(url, study_name).best
    if best is None:
        return None
    storage = open_storage(url, create_schema=False)
    study = optuna.load_study(study_name=study_name, storage=storage)
    study_id = storage.get_study_id_from_name(study_name)
    folder = staging_dir(url, study_id)
    store_dir = artifacts_dir(url)
    store_dir.mkdir(parents=True, exist_ok=True)
    store = FileSystemArtifactStore(str(store_dir))
    previous = study.user_attrs.get(BEST_WEIGHTS)
    held: dict[str, str] = {}
    if (isinstance(previous, dict) and previous.get("batch_size") == best.batch_size
            and previous.get("learning_rate") == best.learning_rate):
        held = {str(k): str(v) for k, v in dict(previous.get("seeds", {})).items()}
    uploaded, missing = 0, []
    for seed in best.seed_values:
        if str(seed) in held:
            continue
        staged = _cell_file(folder, best.batch_size, best.learning_rate, seed)
        if not staged.exists():
            missing.append(seed)
            continue
        # The artifact's file name says its cell: the dashboard lists it by that name.
        with tempfile.TemporaryDirectory(dir=store_dir) as tmp:
            named = Path(tmp) / (f"weights-B{best.batch_size}-lr{best.learning_rate:g}"
                                 f"-seed{seed}.npz")
            shutil.copyfile(staged, named)
            held[str(seed)] = upload_artifact(study_or_trial=study, file_path=str(named),
                                              artifact_store=store)
        uploaded += 1
    study.set_user_attr(BEST_WEIGHTS, {"batch_size": best.batch_size,
                                       "learning_rate": best.learning_rate, "seeds": held})
    if folder.is_dir():  # the best cell's files stay; no other cell's are needed again
        keep = {_cell_file(folder, best.batch_size, best.learning_rate, s).name
                for s in best.seed_values}
        for f in folder.iterdir():
            if f.suffix == ".npz" and f.name not in keep:
                f.unlink(missing_ok=True)
    seeds = tuple(sorted(int(s) for s in held))
    return Published(best.batch_size, best.learning_rate, seeds, tuple(missing), uploaded)


def download(url: str, study_name: str, seed: int | None = None) -> Kept:
    """The published weights of the best cell's `seed` (None: its lowest seed)."""
    import optuna
    from optuna.artifacts import FileSystemArtifactStore, download_artifact

    from study.errors import UsageError
    from study.storage import open_storage

    study = optuna.load_study(study_name=study_name,
                              storage=open_storage(url, create_schema=False))
    held = study.user_attrs.get(BEST_WEIGHTS)
    if not isinstance(held, dict) or not held.get("seeds"):
        raise UsageError(f"study {study_name!r} keeps no weights: run it with "
                         "train.keep_weights = \"best\" (the weights are published when "
                         "every trial is finished)")
    seeds = {int(k): str(v) for k, v in dict(held["seeds"]).items()}
    if seed is None:
        seed = min(seeds)
    if seed not in seeds:
        raise UsageError(f"seed: {seed!r} has no kept weights in study {study_name!r} "
                         f"(seeds with weights: {', '.join(map(str, sorted(seeds)))})")
    store = FileSystemArtifactStore(str(artifacts_dir(url)))
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / "weights.npz"
        download_artifact(artifact_store=store, file_path=str(target), artifact_id=seeds[seed])
        return read(target)
