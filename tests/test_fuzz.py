"""Generated specs and `--set` overrides: each runs, or fails with one line and exit 2.

Never exit 1 (an error we did not plan for), a refusal names its culprit, and an invalid
spec never creates or changes a database. Valid examples are kept tiny (a few samples, an
epoch or two) so they run.
`pytest tests/test_fuzz.py --hypothesis-show-statistics` shows how many examples ran
and how many were refused.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import math
import re
import shutil
import tempfile
import tomllib
import typing
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from study import cli
from study.spec import Spec
from tests.helpers import sql

pytestmark = pytest.mark.slow

EXAMPLES = 40

small_int = st.integers(min_value=-3, max_value=40)
weird = st.one_of(
    st.text(max_size=6), st.booleans(), st.floats(allow_nan=True, allow_infinity=True),
    st.lists(st.integers(-2, 3), max_size=3), st.dictionaries(st.sampled_from(["low", "high", "x"]),
                                                            st.integers(-2, 64), max_size=3),
)
# Known fields with values near their edges, plus anything at all.
FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "data.kind": st.sampled_from(["linear", "classification", "spiral", ""]),
    "data.n_train": st.integers(-1, 48),
    "data.n_val": st.integers(-1, 16),
    "data.n_features": st.integers(-1, 4),
    "data.n_classes": st.integers(0, 4),
    "data.seed": small_int,
    "model.hidden": st.lists(st.integers(-1, 6), max_size=2),
    "model.activation": st.sampled_from(["relu", "tanh", "linear", "gelu"]),
    "train.epochs": st.integers(-1, 2),
    "train.objective": st.sampled_from(["train_loss", "val_loss", "val_error", "accuracy"]),
    "train.optimizer": st.sampled_from(["adam", "sgd", "momentum", "rmsprop", "lion"]),
    "train.loss": st.sampled_from(["mse", "cross_entropy", "sparse_cross_entropy", "hinge"]),
    "train.budget": st.sampled_from(["epochs", "steps", "examples", "hours"]),
    "train.steps": st.integers(-1, 3),
    "train.examples": st.integers(-1, 40),
    "train.momentum": st.floats(-0.1, 1.0),
    "train.nesterov": st.booleans(),
    "train.schedule": st.sampled_from(["constant", "step", "cosine", "warmup", "cyclic"]),
    "train.warmup_fraction": st.floats(-0.1, 1.0),
    "train.decay_at": st.lists(st.floats(-0.1, 1.1), max_size=2),
    "train.decay_rate": st.floats(-0.1, 2.0),
    "analysis.noise_epochs": st.lists(st.integers(-1, 2), max_size=2),
    "analysis.noise_batches": st.lists(st.integers(-1, 8), max_size=3),
    "analysis.noise_repeats": st.integers(-1, 2),
    "analysis.sharpness": st.booleans(),
    "analysis.sharpness_iterations": st.integers(-1, 3),
    "search.sampler": st.sampled_from(["grid", "random", "anneal"]),
    "search.batch_size": st.one_of(st.lists(st.integers(-1, 60), max_size=2),
                                   st.fixed_dictionaries({"low": st.integers(-1, 8),
                                                          "high": st.integers(1, 60)})),
    "search.learning_rate": st.one_of(
        st.lists(st.one_of(st.floats(-0.1, 0.5), st.just(math.nan)), max_size=2),
        st.fixed_dictionaries({"low": st.floats(1e-4, 1e-2), "high": st.floats(1e-3, 1.0)})),
    "search.seeds": st.lists(st.integers(-1, 2), max_size=2),
    "search.n_trials": st.integers(-1, 2),
    "search.pruner": st.sampled_from(["none", "median", "always"]),
    "run.max_failures": st.integers(-1, 3),
    "nonsense.key": st.integers(),
    "train.nonsense": st.integers(),
}


def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k} = {toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(v)


def assignment(draw: st.DrawFn) -> tuple[str, Any]:
    key = draw(st.sampled_from(sorted(FIELDS)))
    value = draw(st.one_of(FIELDS[key], weird) if draw(st.booleans()) else FIELDS[key])
    return key, value


@st.composite
def cases(draw: st.DrawFn) -> tuple[str, list[str]]:
    """A spec file's text and a list of --set overrides."""
    # The base keeps valid examples cheap; generated assignments may override it.
    base = {"data.n_train": 32, "data.n_val": 8, "train.epochs": 1,
            "search.batch_size": [16], "search.learning_rate": [0.01]}
    file_fields = dict(base)
    for _ in range(draw(st.integers(0, 3))):
        key, value = assignment(draw)
        file_fields[key] = value
    sections: dict[str, list[str]] = {}
    for key, value in file_fields.items():
        section, name = key.split(".")
        sections.setdefault(section, []).append(f"{name} = {toml_value(value)}")
    text = "\n".join(f"[{s}]\n" + "\n".join(lines) for s, lines in sections.items()) + "\n"
    sets = []
    if draw(st.integers(0, 9)) == 0:
        # Sometimes not our TOML at all; if it parses, the base still keeps a run small.
        text = draw(st.text(max_size=30))
        sets += [f"{key}={toml_value(value)}" for key, value in base.items()]
    for _ in range(draw(st.integers(0, 2))):
        if draw(st.integers(0, 4)) == 0:
            sets.append(draw(st.sampled_from(["train.epochs", "=1", "a..b=1", ".x=1", "x.=2",
                                              "train.epochs=[", "model=3"])))
        else:
            key, value = assignment(draw)
            sets.append(f"{key}={toml_value(value)}")
    return text, sets


@pytest.fixture(scope="module")
def existing_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real study that invalid specs are also thrown at: it must not change."""
    path = tmp_path_factory.mktemp("existing") / "s.db"
    spec = path.parent / "spec.toml"
    spec.write_text("[data]\nn_train = 32\nn_val = 8\n[train]\nepochs = 1\n"
                    "[search]\nbatch_size = [16]\nlearning_rate = [0.01]\n")
    rc = cli.main(["run", "--spec", str(spec), "--trainer", "keras", "--storage",
                   f"sqlite:///{path}"])
    assert rc == 0
    return path


def _schema() -> set[str]:
    """Every section and `section.key` of the spec (and its top-level keys)."""
    hints = typing.get_type_hints(Spec)
    out = set()
    for f in dataclasses.fields(Spec):
        out.add(f.name)
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp) and isinstance(tp, type):
            out |= {f"{f.name}.{g.name}" for g in dataclasses.fields(tp)}
    return out


SCHEMA = _schema()


def case_keys(text: str, sets: list[str]) -> set[str]:
    """The sections and `section.key`s a case writes, in its file and its --set flags."""
    keys = {s.split("=", 1)[0].strip() for s in sets}
    with contextlib.suppress(tomllib.TOMLDecodeError):
        for section, body in tomllib.loads(text).items():
            keys.add(section)
            if isinstance(body, dict):
                keys |= {f"{section}.{k}" for k in body}
    return keys | {k.split(".")[0] for k in keys}


def run_main(args: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = cli.main(args)
    return rc, err.getvalue()


@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(case=cases())
def test_generated_specs_run_or_fail_cleanly(existing_db: Path, case: tuple[str, list[str]]
                                            ) -> None:
    text, sets = case
    with tempfile.TemporaryDirectory() as tmp:
        spec = Path(tmp) / "spec.toml"
        spec.write_text(text)
        db = Path(tmp) / "new.db"
        args = ["run", "--spec", str(spec), "--trainer", "keras"]
        for s in sets:
            args += ["--set", s]
        rc, err = run_main([*args, "--storage", f"sqlite:///{db}"])
        assert rc in (0, 2), err  # 1 is an error we did not plan for
        if rc == 2:
            event("refused with exit 2")
            assert len(err.strip().splitlines()) == 1, err
            # The line names its culprit first: a field of the spec's schema, a key the
            # case wrote (an unknown one names itself), or the flag or file it came from.
            culprit = err.split("study run: error: ", 1)[1].split(": ", 1)[0]
            field = ".".join(re.sub(r"\[\d+\]", "", culprit).split(".")[:2])
            assert field in SCHEMA | case_keys(text, sets) | {"spec", "--set"}, err
            assert not db.exists(), "an invalid spec created a database"
            # And it leaves an existing study's file alone, byte for byte.
            copy = Path(tmp) / "existing.db"
            shutil.copy(existing_db, copy)
            before = hashlib.sha256(copy.read_bytes()).hexdigest()
            rc2, err2 = run_main([*args, "--storage", f"sqlite:///{copy}",
                                  "--study-name", "article"])
            assert rc2 == 2 and err2 == err.replace(str(db), str(copy)), err2
            assert hashlib.sha256(copy.read_bytes()).hexdigest() == before
        else:
            event("ran")
            states = {s for (s,) in sql(db, "SELECT state FROM trials")}
            assert states and states <= {"COMPLETE", "FAIL", "PRUNED"}

