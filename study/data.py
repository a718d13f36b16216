"""Data sets: each source becomes one validated, fingerprinted `Dataset` before any
database is touched. Nothing is downloaded.

Sources (`data.kind`):

- `linear`, `classification`: synthetic sets generated in memory (below);
- `npz`, `csv`: a file at `data.path` (relative paths are relative to the current
  directory);
- `python`: `data.loader = "module:function"`, a function of no arguments returning the
  arrays (`LOADER_CONTRACT`);
- `diabetes`, `digits`: scikit-learn's bundled copies (files inside the package).

`linear` is the article's regression set, drawn by the very same numpy calls in the
same order (seed, X, then w, then the noise), so `data.seed = 0` reproduces its X and y
bit for bit. The validation set reuses the true weights w and draws fresh inputs and
noise from `val_seed`.

`classification` is a binary set no linear model can fit: standard normal inputs,
labelled 1 where two random projections x.u and x.v have the same sign (an XOR of two
half-spaces through the origin), with `LABEL_NOISE` of the labels flipped so that, as
in the regression set, some loss is irreducible. The validation set shares u and v and
draws fresh inputs and flips from `val_seed`.

`classification` with `n_classes = k` above 2 is a multi-class set, again one no linear
model can fit: standard normal inputs, k random projections x.u_1 .. x.u_k (the columns
of one standard normal (n_features, k) matrix, drawn first, scaled to unit length), and
the label of a row is the projection of largest *magnitude*, argmax_j |x.u_j| (each
class a double cone, not a convex region; the classes are about equally frequent).
`LABEL_NOISE` of the labels are replaced by one of the k - 1 other classes, uniformly,
so the Bayes error is again `LABEL_NOISE`. The validation set shares the projections and
draws fresh inputs and flips from `val_seed`. Labels are float32 integers 0..k-1 in one
column, as the binary set's are. `n_classes = 2` (the default) is the binary set above,
bit for bit.

Every source goes through the same checks (`_finish`): numeric arrays, finite values,
as many targets as inputs, a non-empty set, a classification target with at least two
classes; then the validation split (`data.val_fraction`, when the source has none),
`data.standardize`, the cast to float32 and the fingerprint. Anything wrong is one
`DataError` line naming the file, array, column or row.
"""

from __future__ import annotations

import csv
import hashlib
import math
import os
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from study.errors import DataError
from study.spec import SYNTHETIC_KINDS, DataSpec, Spec, check_rows, check_task, resolve
from study.user_code import cwd_on_path, first_line, load_function

Array = npt.NDArray[np.float32]
Raw = npt.NDArray[Any]

# Share of `classification` labels flipped at random: the Bayes error of the set.
LABEL_NOISE = 0.1
# The arrays a data set is made of, in the order the fingerprint reads them.
ARRAYS = ("x_train", "y_train", "x_val", "y_val")
# Bounds on what a file or a loader may hand over: inputs up to (n, h, w, c), targets
# (n,) or (n, outputs).
MAX_INPUT_DIMS = 4
LOADER_CONTRACT = ("a tuple (x_train, y_train) or (x_train, y_train, x_val, y_val) of "
                   "numeric arrays, or a mapping with those keys")
FLOAT32_MAX = float(np.finfo(np.float32).max)


@dataclass(frozen=True)
class Dataset:
    """The arrays a study trains and validates on, float32, and what they are.

    Inputs are (rows, ...) of any shape: (rows, features) or (rows, h, w, c) images;
    targets are (rows, outputs). `task` is "regression", "binary" (0/1 targets) or
    "multiclass" (integer class labels, one column). `fingerprint` is `fingerprint()`
    of the four arrays.
    """

    x_train: Array
    y_train: Array
    x_val: Array
    y_val: Array
    task: str
    fingerprint: str = ""

    @property
    def n_train(self) -> int:
        return int(self.x_train.shape[0])

    @property
    def n_classes(self) -> int:
        """Classes of a classification set, whose labels are 0..k-1: the largest label
        of either split, plus one."""
        return int(max(np.max(self.y_train), np.max(self.y_val))) + 1

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.x_train.shape[1:])

    @property
    def n_features(self) -> int:
        return math.prod(self.input_shape)

    @property
    def n_outputs(self) -> int:
        """Columns of the target: one per regression output, one for a binary label."""
        return int(self.y_train.shape[1])

    def flat(self) -> Dataset:
        """The same data with inputs as (rows, features): what an MLP's Flatten sees."""
        if self.x_train.ndim == 2:
            return self
        return replace(self, x_train=self.x_train.reshape(self.n_train, -1),
                       x_val=self.x_val.reshape(len(self.x_val), -1))


def fingerprint(arrays: Mapping[str, npt.NDArray[Any]]) -> str:
    """sha256 over each array of `ARRAYS`, in that order: its name, dtype (numpy's
    `dtype.str`, e.g. '<f4'), shape, then its bytes in C order; as "sha256:HEX".

    One changed value, a reshape or a cast changes it; the same arrays give the same
    text on any machine of the same byte order.
    """
    h = hashlib.sha256()
    for name in ARRAYS:
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}|{a.dtype.str}|{','.join(map(str, a.shape))}|".encode())
        h.update(a.tobytes())
    return "sha256:" + h.hexdigest()


def describe(spec: DataSpec) -> str:
    """The data set in words, for messages: "csv file 'a.csv'", "loader 'm:f'"."""
    if spec.kind in ("npz", "csv"):
        return f"{spec.kind} file {spec.path!r}"
    if spec.kind == "python":
        return f"loader {spec.loader!r}"
    if spec.kind == "arrays":
        return "the arrays passed as data="
    return f"data.kind = {spec.kind!r}"


def check_spec(spec: Spec, data: Dataset) -> Spec:
    """The spec for these data: its checks that need them (every batch size fits in
    their rows, a named loss fits their task), then its defaults that follow the task
    (`spec.resolve`: train.loss and train.objective left "auto"). The returned spec is
    the one to run, store and compare on resume. SpecError names the field at fault."""
    check_task(spec, data.task, describe(spec.data))
    check_rows(spec, data.n_train, f"data.n_train = {data.n_train}" if spec.data.kind in
               SYNTHETIC_KINDS else f"{describe(spec.data)} has {data.n_train} training rows")
    return resolve(spec, data.task)


def make_dataset(spec: DataSpec) -> Dataset:
    """The spec's data set, checked, split, standardized and fingerprinted.

    Raises DataError (one line naming the culprit) for anything it cannot use.
    """
    if spec.kind == "linear":
        raw = _linear(spec)
    elif spec.kind == "classification":
        raw = _classification(spec)
    elif spec.kind == "npz":
        raw = _npz(spec)
    elif spec.kind == "csv":
        raw = _csv(spec)
    elif spec.kind == "python":
        raw = _python(spec)
    elif spec.kind in ("diabetes", "digits"):
        raw = _bundled(spec)
    elif spec.kind == "arrays":
        # Only the process that was handed them (and the workers it starts) has them.
        raise DataError("data.kind = 'arrays': arrays passed to study.run(data=...) exist only "
                        "in that process and the workers it starts; elsewhere use data in a "
                        "file (data.kind = 'npz' or 'csv') or a loader (data.kind = 'python')")
    else:
        raise DataError(f"data.kind: unknown data set {spec.kind!r}")  # validate() stops this first
    return _finish(spec, raw)


def from_arrays(spec: DataSpec, x_train: Any, y_train: Any, x_val: Any = None, y_val: Any = None,
                origin: str = "data") -> Dataset:
    """A Dataset of arrays in memory, through the same checks, split, standardization and
    fingerprint as a file's (`spec` gives val_fraction, seed, standardize and task;
    `origin` names the arrays in messages)."""
    if x_train is None or y_train is None:
        raise DataError(f"{origin}: x_train and y_train are both needed")
    if (x_val is None) != (y_val is None):
        raise DataError(f"{origin}: only one of x_val and y_val was given: give both or neither")
    return _finish(spec, _Raw(_array(x_train, "x_train", origin), _array(y_train, "y_train", origin),
                              _array(x_val, "x_val", origin), _array(y_val, "y_val", origin),
                              origin))


# --------------------------------------------------------------------------- synthetic


@dataclass(frozen=True)
class _Raw:
    """What a source hands over, before the common checks."""

    x_train: Raw
    y_train: Raw
    x_val: Raw | None
    y_val: Raw | None
    origin: str  # names the source in messages, e.g. "data.path: 'a.npz'"
    task: str = ""  # a task the source knows ("" : decided from the targets)


def _linear(spec: DataSpec) -> _Raw:
    # The article: np.random.seed(0); X = rand(1000, 10);
    # y = X @ rand(10, 1) + rand(1000, 1). RandomState(seed) is the same stream.
    rng = np.random.RandomState(spec.seed)
    x = rng.rand(spec.n_train, spec.n_features)
    w = rng.rand(spec.n_features, 1)
    y = x @ w + rng.rand(spec.n_train, 1)

    val_rng = np.random.RandomState(spec.val_seed)
    x_val = val_rng.rand(spec.n_val, spec.n_features)
    y_val = x_val @ w + val_rng.rand(spec.n_val, 1)
    return _Raw(x, y, x_val, y_val, "data.kind = 'linear'", "regression")


def _classification(spec: DataSpec) -> _Raw:
    if spec.n_classes > 2:
        return _multiclass(spec)
    rng = np.random.RandomState(spec.seed)
    u = rng.standard_normal(spec.n_features)
    v = rng.standard_normal(spec.n_features)

    def draw(r: np.random.RandomState, n: int) -> tuple[Raw, Raw]:
        x = r.standard_normal((n, spec.n_features))
        label = (x @ u) * (x @ v) > 0
        flip = r.rand(n) < LABEL_NOISE
        return x.astype(np.float32), (label ^ flip).astype(np.float32)[:, None]

    x, y = draw(rng, spec.n_train)
    x_val, y_val = draw(np.random.RandomState(spec.val_seed), spec.n_val)
    return _Raw(x, y, x_val, y_val, "data.kind = 'classification'", "binary")


def _multiclass(spec: DataSpec) -> _Raw:
    k = spec.n_classes
    rng = np.random.RandomState(spec.seed)
    u = rng.standard_normal((spec.n_features, k))
    # Unit columns: every projection is N(0, 1), so no class wins by a longer vector.
    u /= np.linalg.norm(u, axis=0)

    def draw(r: np.random.RandomState, n: int) -> tuple[Array, Array]:
        x = r.standard_normal((n, spec.n_features))
        label = np.argmax(np.abs(x @ u), axis=1)
        # A flipped label moves to one of the other k - 1 classes, uniformly.
        flip = r.rand(n) < LABEL_NOISE
        label = np.where(flip, (label + r.randint(1, k, n)) % k, label)
        return x.astype(np.float32), label.astype(np.float32)[:, None]

    x, y = draw(rng, spec.n_train)
    x_val, y_val = draw(np.random.RandomState(spec.val_seed), spec.n_val)
    return _Raw(x, y, x_val, y_val, "data.kind = 'classification'", "multiclass")


# --------------------------------------------------------------------------- files


def _file(spec: DataSpec) -> Path:
    path = Path(spec.path)
    where = f"data.path: {spec.path!r}"
    if not spec.path:
        raise DataError(f"data.path: data.kind = {spec.kind!r} needs the path of a .{spec.kind} file")
    if path.is_dir():
        raise DataError(f"{where} is a directory, not a .{spec.kind} file")
    if not path.exists():
        raise DataError(f"{where}: file not found (relative paths are read from {os.getcwd()})")
    return path


def _npz(spec: DataSpec) -> _Raw:
    path = _file(spec)
    where = f"data.path: {spec.path!r}"
    if not zipfile.is_zipfile(path):
        raise DataError(f"{where} is not an npz file (numpy.savez writes one)")
    arrays: dict[str, Raw] = {}
    try:
        # allow_pickle=False: an npz may not run code through pickled objects.
        with np.load(path, allow_pickle=False) as z:
            names = list(z.files)
            for name in ARRAYS:
                if name in names:
                    arrays[name] = z[name]
    except ValueError as e:
        if "pickle" in str(e):
            raise DataError(f"{where}: an array holds Python objects (pickled); only numeric "
                            "arrays are read (allow_pickle=False)") from None
        raise DataError(f"{where} is not a readable npz file: {first_line(e)}") from None
    except (OSError, zipfile.BadZipFile, EOFError) as e:
        raise DataError(f"{where} is not a readable npz file: {first_line(e)}") from None
    for name in ("x_train", "y_train"):
        if name not in arrays:
            raise DataError(f"{where} has no array {name!r} (arrays: {', '.join(names) or 'none'})")
    if ("x_val" in arrays) != ("y_val" in arrays):
        have, lack = ("x_val", "y_val") if "x_val" in arrays else ("y_val", "x_val")
        raise DataError(f"{where} has {have!r} but no {lack!r}: give both or neither")
    return _Raw(arrays["x_train"], arrays["y_train"], arrays.get("x_val"), arrays.get("y_val"),
                where)


def _csv(spec: DataSpec) -> _Raw:
    path = _file(spec)
    where = f"data.path: {spec.path!r}"
    if not spec.target:
        raise DataError("data.target: data.kind = 'csv' needs the target column (a name, or a "
                        "list of names)")
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except UnicodeDecodeError:
        raise DataError(f"{where} is not a CSV file (not UTF-8 text)") from None
    except (OSError, csv.Error) as e:
        raise DataError(f"{where} is not a readable CSV file: {first_line(e)}") from None
    if not rows or not any(cell.strip() for cell in rows[0]):
        raise DataError(f"{where} is empty (expected a header row of column names, then rows)")
    header = [cell.strip() for cell in rows[0]]
    if all(_is_number(cell) for cell in header):
        raise DataError(f"{where}: the first line must be a header of column names, "
                        f"got numbers ({', '.join(header[:3])}...)")
    for i, name in enumerate(header):
        if not name:
            raise DataError(f"{where}: column {i + 1} has no name in the header")
        if header.index(name) != i:
            raise DataError(f"{where}: column {name!r} appears twice in the header")
    columns = ", ".join(header)
    for field, names in (("data.target", spec.target), ("data.features", spec.features)):
        for name in names:
            if name not in header:
                raise DataError(f"{field}: no column {name!r} in {spec.path!r} (columns: {columns})")
    features = list(spec.features) or [c for c in header if c not in spec.target]
    for name in features:
        if name in spec.target:
            raise DataError(f"data.features: column {name!r} is also the target")
    if not features:
        raise DataError(f"data.features: {spec.path!r} has no column left for inputs "
                        f"(columns: {columns})")
    body = [(line, row) for line, row in enumerate(rows[1:], start=2)
            if any(cell.strip() for cell in row)]  # blank lines are no rows
    values = np.empty((len(body), len(header)), np.float64)
    for r, (line, row) in enumerate(body):
        if len(row) != len(header):
            raise DataError(f"{where} line {line}: {len(row)} values for {len(header)} columns")
        for c, cell in enumerate(row):
            try:
                v = float(cell)
            except ValueError:
                if header[c] in spec.target:
                    # Class names ("cat", "dog"): which number each is is the user's call.
                    raise DataError(f"data.target: column {header[c]!r} of {spec.path!r} holds "
                                    f"text ({cell.strip()!r}, line {line}); labels must be "
                                    "numbers: encode the classes as 0, 1, 2, ... (0/1 for a "
                                    "binary target) in the file, or read it with a data.loader "
                                    "that does") from None
                raise DataError(f"{where} line {line}, column {header[c]!r}: {cell.strip()!r} "
                                "is not a number") from None
            if not math.isfinite(v) or abs(v) > FLOAT32_MAX:
                raise DataError(f"{where} line {line}, column {header[c]!r}: {cell.strip()!r} is "
                                "not a finite number")
            values[r, c] = v
    col = {name: i for i, name in enumerate(header)}
    x = values[:, [col[c] for c in features]]
    y = values[:, [col[c] for c in spec.target]]
    return _Raw(x, y, None, None, where)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


# --------------------------------------------------------------------------- a loader


def _python(spec: DataSpec) -> _Raw:
    where = f"data.loader: {spec.loader!r}"
    fn = load_function(spec.loader, "data.loader", DataError)
    # The loader is foreign code: whatever its call raises becomes one line naming it.
    try:
        with cwd_on_path():
            out = fn()
    except (Exception, SystemExit) as e:
        raise DataError(f"{where} raised {type(e).__name__}: {first_line(e)}") from None
    parts: dict[str, Any]
    if isinstance(out, Mapping):
        unknown = sorted(str(k) for k in out if k not in ARRAYS)
        if unknown:
            raise DataError(f"{where} returned unknown keys {unknown}; expected {LOADER_CONTRACT}")
        parts = dict(out)
    elif isinstance(out, tuple | list) and len(out) in (2, 4):
        parts = dict(zip(ARRAYS, out, strict=False))
    else:
        what = f"a {type(out).__name__}" + (f" of {len(out)}" if isinstance(out, tuple | list) else "")
        raise DataError(f"{where} returned {what}; expected {LOADER_CONTRACT}")
    for name in ("x_train", "y_train"):
        if name not in parts:
            raise DataError(f"{where} returned no {name!r}; expected {LOADER_CONTRACT}")
    if ("x_val" in parts) != ("y_val" in parts):
        raise DataError(f"{where} returned only one of 'x_val' and 'y_val': give both or neither")
    x, y, xv, yv = (_array(parts.get(name), name, where) for name in ARRAYS)
    return _Raw(x, y, xv, yv, where)


def _array(value: Any, name: str, origin: str) -> Any:
    if value is None:
        return None
    try:
        return np.asarray(value)
    except Exception as e:
        raise DataError(f"{origin}: {name} is not an array: {type(e).__name__}: "
                        f"{first_line(e)}") from None


# --------------------------------------------------------------------------- bundled sets


def _bundled(spec: DataSpec) -> _Raw:
    """scikit-learn's copies, read from files inside the package (nothing is fetched)."""
    try:
        from sklearn import datasets
    except ImportError:
        raise DataError(f"data.kind: {spec.kind!r} is read from scikit-learn's bundled files; "
                        "install it (pip install scikit-learn)") from None
    where = f"data.kind = {spec.kind!r}"
    if spec.kind == "diabetes":
        # 442 patients, 10 baseline variables (already centred and scaled by the
        # package), the disease progression a year later: a regression target.
        x, y = datasets.load_diabetes(return_X_y=True)
        return _Raw(np.asarray(x), np.asarray(y), None, None, where, "regression")
    # 1797 8x8 grey images (values 0..16) of the digits 0-9, as (n, 8, 8, 1).
    digits = datasets.load_digits()
    return _Raw(np.asarray(digits.images)[..., None], np.asarray(digits.target), None, None,
                where, "multiclass")


# --------------------------------------------------------------------------- checks


def _check_array(name: str, a: Raw, origin: str) -> Raw:
    if a.dtype.kind not in "biuf":
        what = "Python objects" if a.dtype.kind == "O" else f"{a.dtype} values"
        raise DataError(f"{origin}: {name} holds {what}; expected numbers")
    if a.ndim == 0:
        raise DataError(f"{origin}: {name} is a single value; expected one row per example")
    limit = MAX_INPUT_DIMS if name.startswith("x") else 2
    if a.ndim > limit:
        raise DataError(f"{origin}: {name} has shape {a.shape}; expected at most {limit} "
                        f"dimensions")
    if a.dtype.kind == "f":
        bad = ~np.isfinite(a) | (np.abs(a) > FLOAT32_MAX)
        if bad.any():
            at = tuple(int(i) for i in np.argwhere(bad)[0])
            raise DataError(f"{origin}: {name}[{', '.join(map(str, at))}] is {a[at].item()!r}; "
                            "expected finite numbers (float32)")
    elif a.size and np.abs(a.astype(np.float64)).max() > FLOAT32_MAX:
        raise DataError(f"{origin}: {name} holds integers too large for float32")
    return a


def _as_column(y: Raw) -> Raw:
    return y[:, None] if y.ndim == 1 else y


def _task_of(spec: DataSpec, raw: _Raw, y: Raw) -> str:
    """The task stated in the spec, else the source's, else the targets': 0/1 values in
    one column are binary; an integer-typed single column of labels is multi-class;
    anything else is regression."""
    if spec.task:
        return spec.task
    if raw.task:
        return raw.task
    values = np.unique(y)
    if y.shape[1] == 1 and values.size == 2 and set(values.tolist()) == {0, 1}:
        return "binary"
    if y.shape[1] == 1 and y.dtype.kind in "iub":
        return "multiclass"
    return "regression"


def _check_task(task: str, y: Raw, origin: str) -> None:
    if task == "regression":
        return
    if y.shape[1] != 1:
        raise DataError(f"{origin}: a {task} target is one column of labels, got {y.shape[1]}")
    values = np.unique(y)
    if values.size < 2:
        raise DataError(f"{origin}: y_train has a single class ({values[0]:g}); a {task} "
                        "target needs at least two")
    if task == "binary" and not set(values.tolist()) <= {0, 1}:
        raise DataError(f"{origin}: a binary target is 0 or 1, got {values[~np.isin(values, (0, 1))][0]:g}")
    if task == "multiclass" and (values.min() < 0 or not np.all(values == np.round(values))):
        bad = values[(values < 0) | (values != np.round(values))][0]
        raise DataError(f"{origin}: multi-class labels are integers 0, 1, 2, ..., got {bad:g}")


def _finish(spec: DataSpec, raw: _Raw) -> Dataset:
    origin = raw.origin
    x = _check_array("x_train", raw.x_train, origin)
    y = _as_column(_check_array("y_train", raw.y_train, origin))
    if x.ndim == 1:
        x = x[:, None]  # one feature
    if len(x) == 0:
        raise DataError(f"{origin}: the training set is empty (no rows)")
    if len(x) != len(y):
        raise DataError(f"{origin}: x_train has {len(x)} rows but y_train has {len(y)}")
    task = _task_of(spec, raw, y)
    _check_task(task, y, origin)
    if raw.x_val is not None and raw.y_val is not None:
        if spec.val_fraction:
            raise DataError(f"data.val_fraction: {describe(spec)} has its own validation set "
                            "(x_val, y_val); remove data.val_fraction")
        xv = _check_array("x_val", raw.x_val, origin)
        yv = _as_column(_check_array("y_val", raw.y_val, origin))
        if xv.ndim == 1:
            xv = xv[:, None]
        if len(xv) == 0:
            raise DataError(f"{origin}: the validation set is empty (no rows)")
        if len(xv) != len(yv):
            raise DataError(f"{origin}: x_val has {len(xv)} rows but y_val has {len(yv)}")
        if xv.shape[1:] != x.shape[1:]:
            raise DataError(f"{origin}: x_val rows have shape {xv.shape[1:]}, x_train rows "
                            f"{x.shape[1:]}")
        if yv.shape[1] != y.shape[1]:
            raise DataError(f"{origin}: y_val has {yv.shape[1]} columns, y_train {y.shape[1]}")
        if task != "regression":
            _check_labels(task, yv, origin)
    else:
        x, y, xv, yv = _split(spec, task, x, y)
    if spec.standardize:
        # Statistics of the training rows only: the validation set stays unseen.
        mean = x.astype(np.float64).mean(axis=0)
        std = x.astype(np.float64).std(axis=0)
        std[std == 0] = 1.0  # a constant input stays a constant (zero), not a NaN
        x, xv = (x - mean) / std, (xv - mean) / std
    arrays = {"x_train": x, "y_train": y, "x_val": xv, "y_val": yv}
    out = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in arrays.items()}
    return Dataset(**out, task=task, fingerprint=fingerprint(out))


def _check_labels(task: str, y: Raw, origin: str) -> None:
    ok = np.isin(y, (0, 1)) if task == "binary" else (y >= 0) & (y == np.round(y))
    if not ok.all():
        raise DataError(f"{origin}: y_val[{int(np.argwhere(~ok)[0][0])}] = "
                        f"{y[~ok][0]:g} is not a {task} label")


def _split(spec: DataSpec, task: str, x: Raw, y: Raw) -> tuple[Raw, Raw, Raw, Raw]:
    """Hold out `val_fraction` of the rows, drawn with `data.seed`; for a classification
    target, that fraction of each class (stratified), so both sides keep the classes'
    shares."""
    f = spec.val_fraction
    if not f:
        raise DataError(f"data.val_fraction: {describe(spec)} has no validation set; set "
                        "data.val_fraction (e.g. 0.2) to hold out that share of the rows")
    n = len(x)
    order = np.random.default_rng(spec.seed).permutation(n)
    if task == "regression":
        val = order[:round(n * f)]
    else:
        labels = y[order, 0]
        val = np.concatenate([order[labels == c][:round(int((labels == c).sum()) * f)]
                              for c in np.unique(labels)])
    if len(val) == 0:
        raise DataError(f"data.val_fraction: {f:g} of {n} rows leaves the validation set empty")
    if len(val) == n:
        raise DataError(f"data.val_fraction: {f:g} of {n} rows leaves no training rows")
    held = np.zeros(n, bool)
    held[val] = True
    train = order[~held[order]]
    val = order[held[order]]
    return x[train], y[train], x[val], y[val]
