"""Models (study/models.py): the MLP shorthand, a user's builder, its identity.

Hostile `model.builder` strings go through the real CLI (`cli.main` in this process, so
TensorFlow loads once) against real SQLite files: one line, exit 2, no database. A
builder's identity is what it builds: a comment resumes, another width is refused on
resume and the study is left as it was, in a module or in a script's `__main__`.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from study import cli
from study.errors import SpecError, UsageError
from study.models import (
    build_model,
    check_builder,
    export_builder,
    import_builder,
    register,
)
from study.spec import ModelSpec, builder_diff
from tests.helpers import ROOT, dump, sql, trial_states

BUILDERS = '''
import random

import keras

def mlp(input_shape, outputs):
    return keras.Sequential([keras.Input(shape=input_shape), keras.layers.Flatten(),
                             keras.layers.Dense(8, activation="relu"),
                             keras.layers.Dropout(0.1), keras.layers.Dense(outputs)])

def boom(input_shape, outputs):
    raise ValueError("no model today")

def leaves(input_shape, outputs):
    raise SystemExit(3)

def nothing(input_shape, outputs):
    return None

def wide(input_shape, outputs):
    return keras.Sequential([keras.Input(shape=input_shape), keras.layers.Dense(outputs + 1)])

def he(input_shape, outputs):
    return keras.Sequential([keras.Input(shape=input_shape), keras.layers.Flatten(),
                             keras.layers.Dense(8, activation="relu",
                                                kernel_initializer="he_normal"),
                             keras.layers.Dropout(0.1), keras.layers.Dense(outputs)])

def shifted(input_shape, outputs):
    random.random()  # draws before the layers: the same model, other initial weights
    return mlp(input_shape, outputs)

NOT_A_FUNCTION = 3
'''

# The module's name is unique to this file, so no other test's import is reused.
MODULE = "builders_tm"


@pytest.fixture
def builders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A builder module in the current directory, where `module:function` finds it."""
    (tmp_path / f"{MODULE}.py").write_text(BUILDERS)
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    sys.modules.pop(MODULE, None)


def _main(args: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        rc = cli.main(args)
    return rc, out.getvalue(), err.getvalue()


TINY = ["--set", "data.n_train=32", "--set", "data.n_val=8", "--set", "search.batch_size=[16]",
        "--set", "search.learning_rate=[0.01]", "--epochs", "1", "--seeds", "0",
        "--trainer", "keras"]


# --------------------------------------------------------------------------- the shorthand


def test_the_shorthand_is_dense_layers_with_dropout_and_a_flatten_for_images() -> None:
    model = build_model(ModelSpec(hidden=(8, 4), activation="tanh", dropout=0.25), (3, 3, 1), 5)
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds == ["Flatten", "Dense", "Dropout", "Dense", "Dropout", "Dense"]
    assert [layer.units for layer in model.layers if hasattr(layer, "units")] == [8, 4, 5]
    assert all(layer.rate == 0.25 for layer in model.layers if hasattr(layer, "rate"))
    assert model.layers[1].activation.__name__ == "tanh"
    assert model.layers[-1].activation.__name__ == "linear"  # logits out
    assert [type(la).__name__ for la in build_model(ModelSpec(hidden=()), 4, 1).layers] == ["Dense"]


# --------------------------------------------------------------------------- hostile strings


HOSTILE = [
    ("nope_module_tm:build", "model.builder: 'nope_module_tm:build' does not import: "
                             "ModuleNotFoundError: No module named 'nope_module_tm'"),
    (f"{MODULE}:missing", f"model.builder: '{MODULE}:missing': module '{MODULE}' has no 'missing'"),
    (f"{MODULE}:NOT_A_FUNCTION", f"'{MODULE}:NOT_A_FUNCTION': 'NOT_A_FUNCTION' is not a function"),
    (f"{MODULE}:keras", "'keras' is not a function"),
    (f"{MODULE}:boom", f"model.builder: '{MODULE}:boom' raised ValueError: no model today"),
    (f"{MODULE}:leaves", f"model.builder: '{MODULE}:leaves' raised SystemExit: 3"),
    (f"{MODULE}:nothing", f"'{MODULE}:nothing' returned a NoneType; expected a keras.Model"),
    (f"{MODULE}:wide", f"'{MODULE}:wide' returned a model whose output shape is (None, 2); "
                       "expected (None, 1)"),
    ("os.path:join", "model.builder: 'os.path:join' raised TypeError"),
    ("../../etc/passwd:x", "model.builder: '../../etc/passwd:x' does not import"),
    ("/etc/passwd:x", "model.builder: '/etc/passwd:x' does not import"),
    ("a..b:c", "model.builder: 'a..b:c' does not import"),
    (f"{MODULE}:mlp:x", f"module '{MODULE}' has no 'mlp:x'"),
    (MODULE, f"model.builder: expected 'module:function', got '{MODULE}'"),
    (":mlp", "model.builder: expected 'module:function', got ':mlp'"),
]


@pytest.mark.parametrize(("builder", "message"), HOSTILE, ids=[h[0] for h in HOSTILE])
def test_a_hostile_builder_is_one_line_exit_2_and_no_database(
        builders: Path, builder: str, message: str) -> None:
    rc, out, err = _main(["run", *TINY, "--set", f"model.builder={builder}",
                          "--storage", "sqlite:///s.db"])
    assert rc == 2, err
    assert err.startswith("study run: error: ") and err.count("\n") == 1, err
    assert message in err, err
    assert "Traceback" not in err + out
    assert [p.name for p in builders.iterdir() if p.name.startswith("s.db")] == []


def test_a_real_cli_process_says_one_line_for_a_wrong_model(builders: Path) -> None:
    from tests.helpers import run_cli

    out = run_cli(["run", *TINY, "--set", f"model.builder={MODULE}:wide",
                   "--storage", "sqlite:///s.db"], cwd=builders)
    assert out.returncode == 2
    assert out.stderr == (f"study run: error: model.builder: '{MODULE}:wide' returned a model "
                          "whose output shape is (None, 2); expected (None, 1)\n")
    assert not [p for p in builders.iterdir() if p.name.startswith("s.db")]


# --------------------------------------------------------------------------- identity


def _reimport(builders: Path, source: str) -> None:
    """Edit the builder module; the next run imports it afresh, as a new process would."""
    (builders / f"{MODULE}.py").write_text(source)
    sys.modules.pop(MODULE, None)
    importlib.invalidate_caches()


def _stored_model(db: Path) -> dict[str, Any]:
    (stored,) = sql(db, "SELECT value_json FROM study_user_attributes WHERE key = 'spec'")
    model = json.loads(str(stored[0]))["model"]
    assert isinstance(model, dict)
    return model


def test_a_builder_resumes_after_a_comment_and_is_refused_after_a_width_change(builders: Path
                                                                              ) -> None:
    args = ["run", *TINY, "--set", f"model.builder={MODULE}:mlp", "--storage", "sqlite:///s.db"]
    rc, _, err = _main(args)
    assert rc == 0, err
    db = builders / "s.db"
    assert trial_states(db) == {"COMPLETE": 1}
    model = _stored_model(db)
    assert model["builder"] == f"{MODULE}:mlp" and "builder_sha256" not in model
    identity = json.loads(model["builder_identity"])
    assert identity["layers"][1].startswith("Dense(units=8, activation='relu') #")
    assert identity["architecture"].startswith("sha256:")
    assert identity["weights"].startswith("sha256:")

    before = dump(db)
    rc, out, err = _main(args)  # unchanged: resumes, nothing left to train
    assert rc == 0 and "is complete (1/1 trials); nothing to train" in out, err
    assert dump(db) == before

    # A comment, a reformat and an unrelated function build the same model: it resumes.
    edited = BUILDERS.replace("def boom(", "# a comment changes nothing\n\n\ndef boom(")
    _reimport(builders, edited + "\n\ndef unrelated():\n    return   1\n")
    rc, out, err = _main(args)
    assert rc == 0 and "is complete (1/1 trials); nothing to train" in out, err
    assert dump(db) == before

    # Another width is another model: refused, naming the layer; nothing written.
    _reimport(builders, edited.replace("Dense(8,", "Dense(16,"))
    rc, _, err = _main(args)
    assert rc == 2 and err.count("\n") == 1, err
    assert err.startswith("study run: error: study 'article' "), err
    assert ("was run with another model than model.builder = 'builders_tm:mlp' builds now "
            "(architecture: layer 2: Dense(units=8, activation='relu') -> Dense(units=16, "
            "activation='relu')); pass --study-name NAME") in err, err
    assert dump(db) == before
    # Under another name the changed builder starts a new study.
    rc, _, err = _main([*args, "--study-name", "second"])
    assert rc == 0, err


def test_a_study_stored_with_the_source_hash_resumes_and_gets_the_identity(builders: Path
                                                                           ) -> None:
    args = ["run", *TINY, "--set", f"model.builder={MODULE}:mlp", "--storage", "sqlite:///s.db"]
    rc, _, err = _main(args)
    assert rc == 0, err
    db = builders / "s.db"
    table = json.loads(str(sql(db, "SELECT value_json FROM study_user_attributes "
                                   "WHERE key = 'spec'")[0][0]))
    identity = table["model"].pop("builder_identity")
    table["model"]["builder_sha256"] = "sha256:" + "0" * 64  # as stored before identities
    with sqlite3.connect(db) as con:
        con.execute("UPDATE study_user_attributes SET value_json = ? WHERE key = 'spec'",
                    (json.dumps(table),))
    rc, out, err = _main(args)
    assert rc == 0 and "nothing to train" in out, err
    model = _stored_model(db)
    assert model["builder_identity"] == identity and "builder_sha256" not in model


def test_the_identity_is_what_the_builder_builds(builders: Path) -> None:
    mlp = check_builder(ModelSpec(builder=f"{MODULE}:mlp"), (4,), 3)
    assert mlp is not None
    # Built again in this process (its layers named dense_2, ... now): the same.
    assert check_builder(ModelSpec(builder=f"{MODULE}:mlp"), (4,), 3) == mlp
    assert check_builder(ModelSpec(), (4,), 3) is None  # the shorthand: the spec says it all

    def table(identity: str | None) -> dict[str, Any]:
        return {"model": {"builder_identity": identity}}

    he = check_builder(ModelSpec(builder=f"{MODULE}:he"), (4,), 3)
    assert builder_diff(table(mlp), table(he)) == (
        "model.builder: the model it builds changed (architecture: layer 2, Dense(units=8, "
        "activation='relu'): another of its settings changed (an initializer, a "
        "regularizer, its input shape...))")
    shifted = check_builder(ModelSpec(builder=f"{MODULE}:shifted"), (4,), 3)
    assert json.loads(str(shifted))["architecture"] == json.loads(mlp)["architecture"]
    assert str(builder_diff(table(mlp), table(shifted))).startswith(
        "model.builder: the model it builds changed (initial weights: study has sha256:")
    assert builder_diff(table(mlp), table(mlp)) is None
    assert builder_diff(table(mlp), table(None)) is None
    assert builder_diff({"model": {"builder_sha256": "sha256:00"}}, table(mlp)) is None
    with pytest.raises(SpecError, match=r"^model.builder: 'builders_tm:boom' raised ValueError"):
        check_builder(ModelSpec(builder=f"{MODULE}:boom"), (4,), 3)


SCRIPT = """
import sys

import keras
import numpy as np

import study


def build(input_shape, outputs):
    return keras.Sequential([keras.Input(shape=input_shape),
                             keras.layers.Dense(WIDTH, activation="tanh"),
                             keras.layers.Dense(outputs)])


x = np.random.default_rng(0).normal(size=(48, 3)).astype("float32")
y = x @ np.array([[1.0], [-2.0], [0.5]], dtype="float32")
study.run({"name": "script"}, model=build, data=(x, y), storage=sys.argv[1], seeds=[0],
          trainer="keras", overrides={"search.batch_size": [16], "search.learning_rate": [0.01],
                                      "train.epochs": 1, "data.val_fraction": 0.25})
print("ran")
"""


def test_a_builder_in_a_scripts_main_resumes_after_a_comment(tmp_path: Path) -> None:
    from tests.helpers import cli_env

    script = tmp_path / "script.py"
    url = f"sqlite:///{tmp_path / 's.db'}"

    def run(source: str) -> subprocess.CompletedProcess[str]:
        script.write_text(source)
        return subprocess.run([sys.executable, str(script), url], cwd=tmp_path, env=cli_env(),
                              capture_output=True, text=True, timeout=300)

    first = run(SCRIPT.replace("WIDTH", "8"))
    assert first.returncode == 0 and "ran" in first.stdout, first.stderr
    model = _stored_model(tmp_path / "s.db")
    assert model["builder"] == "__main__:build"
    # A comment: a file hash would differ, what the function builds does not.
    again = run("# the same model, commented\n" + SCRIPT.replace("WIDTH", "8"))
    assert again.returncode == 0 and "ran" in again.stdout, again.stderr
    assert _stored_model(tmp_path / "s.db") == model
    wider = run(SCRIPT.replace("WIDTH", "12"))
    assert wider.returncode != 0
    assert ("builds now (architecture: layer 1: Dense(units=8, activation='tanh') -> "
            "Dense(units=12, activation='tanh')); pass --study-name NAME") in wider.stderr, \
        wider.stderr


# --------------------------------------------------------------------------- callables


def top_level_builder(input_shape: tuple[int, ...], outputs: int) -> Any:
    import keras

    return keras.Sequential([keras.Input(shape=input_shape), keras.layers.Dense(outputs)])


def test_a_function_is_kept_under_its_module_and_qualname() -> None:
    top = register(top_level_builder)
    assert top.ref == "tests.test_models:top_level_builder"
    assert top.identity is None  # computed by building it (check_builder)
    assert top.import_root == str(ROOT)  # a fresh process imports it from the repository

    def local(input_shape: tuple[int, ...], outputs: int) -> Any:
        return top_level_builder(input_shape, outputs)

    inner = register(local)
    assert inner.ref.endswith(":test_a_function_is_kept_under_its_module_and_qualname."
                              "<locals>.local")
    assert inner.import_root is None  # no other process can import a closure
    assert build_model(ModelSpec(builder=inner.ref), (3,), 2).output_shape == (None, 2)
    with pytest.raises(UsageError, match=r"^model: expected a function \(input_shape, outputs\) "
                                         r"-> keras.Model or a 'module:function' string, got int$"):
        register(42)


def test_a_function_no_worker_can_import_travels_as_its_keras_config() -> None:
    import keras

    def local(input_shape: tuple[int, ...], outputs: int) -> Any:
        return keras.Sequential([keras.Input(shape=input_shape),
                                 keras.layers.Dense(6, activation="tanh"),
                                 keras.layers.Dropout(0.2), keras.layers.Dense(outputs)])

    spec = ModelSpec(builder=register(local).ref)
    payload = json.loads(json.dumps(export_builder(spec, (5,), 3)))  # as the file holds it
    assert payload["identity"] == check_builder(spec, (5,), 3)
    payload["ref"] = "elsewhere:local"  # as a worker, which has only the payload
    import_builder(payload)
    # The worker's identity is the parent's, whatever its rebuilt model draws.
    assert check_builder(ModelSpec(builder="elsewhere:local"), (5,), 3) == payload["identity"]
    rebuilt = build_model(ModelSpec(builder="elsewhere:local"), (5,), 3)
    assert [type(la).__name__ for la in rebuilt.layers] == ["Dense", "Dropout", "Dense"]
    assert rebuilt.layers[1].rate == 0.2 and rebuilt.output_shape == (None, 3)

    def custom(input_shape: tuple[int, ...], outputs: int) -> Any:
        inputs = keras.Input(shape=input_shape)
        return keras.Model(inputs, keras.layers.Dense(outputs)(
            keras.layers.Lambda(lambda t: t * 2.0)(inputs)))

    with pytest.raises(UsageError, match=r"^model: '.*custom' is defined where worker processes "
                                         r"cannot import it, and Keras cannot rebuild its model "
                                         r"from its config .*; define it in an importable "
                                         r"module, or use workers=1$"):
        export_builder(ModelSpec(builder=register(custom).ref), (5,), 3)
