"""Models (study/models.py): the MLP shorthand, a user's builder, its identity.

Hostile `model.builder` strings go through the real CLI (`cli.main` in this process, so
TensorFlow loads once) against real SQLite files: one line, exit 2, no database. A
changed builder source is refused on resume, and the study is left as it was.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from study import cli
from study.errors import SpecError, UsageError
from study.models import (
    build_model,
    builder_identity,
    check_builder,
    export_builder,
    import_builder,
    register,
)
from study.spec import ModelSpec
from tests.helpers import ROOT, dump, sql, trial_states

BUILDERS = '''
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


def test_a_changed_builder_source_is_refused_and_an_unchanged_one_resumes(builders: Path
                                                                          ) -> None:
    args = ["run", *TINY, "--set", f"model.builder={MODULE}:mlp", "--storage", "sqlite:///s.db"]
    rc, _, err = _main(args)
    assert rc == 0, err
    db = builders / "s.db"
    assert trial_states(db) == {"COMPLETE": 1}
    (stored,) = sql(db, "SELECT value_json FROM study_user_attributes WHERE key = 'spec'")
    model = json.loads(str(stored[0]))["model"]
    source = builders / f"{MODULE}.py"
    assert model["builder"] == f"{MODULE}:mlp"
    assert model["builder_sha256"] == "sha256:" + hashlib.sha256(source.read_bytes()).hexdigest()

    before = dump(db)
    rc, out, err = _main(args)  # unchanged: resumes, nothing left to train
    assert rc == 0 and "is complete (1/1 trials); nothing to train" in out, err
    assert dump(db) == before

    source.write_text(BUILDERS + "\n# a comment is a change too\n")
    rc, _, err = _main(args)
    assert rc == 2 and err.count("\n") == 1, err
    assert err.startswith(
        f"study run: error: study 'article' was run with another model than model.builder = "
        f"'{MODULE}:mlp' builds now: its source changed (model.builder_sha256: study has "
        f"{model['builder_sha256'][:19]}..., this run's builder sha256:"), err
    assert err.rstrip().endswith("pass --study-name NAME or another --storage to start a new "
                                 "study"), err
    assert dump(db) == before
    # Under another name the changed builder starts a new study.
    rc, _, err = _main([*args, "--study-name", "second"])
    assert rc == 0, err


def test_check_builder_returns_the_source_hash_and_none_for_the_shorthand(builders: Path
                                                                          ) -> None:
    digest = "sha256:" + hashlib.sha256((builders / f"{MODULE}.py").read_bytes()).hexdigest()
    assert check_builder(ModelSpec(builder=f"{MODULE}:mlp"), (4,), 3) == digest
    assert builder_identity(f"{MODULE}:mlp") == digest
    assert check_builder(ModelSpec(), (4,), 3) is None
    with pytest.raises(SpecError, match=r"^model.builder: 'builders_tm:boom' raised ValueError"):
        check_builder(ModelSpec(builder=f"{MODULE}:boom"), (4,), 3)


# --------------------------------------------------------------------------- callables


def top_level_builder(input_shape: tuple[int, ...], outputs: int) -> Any:
    import keras

    return keras.Sequential([keras.Input(shape=input_shape), keras.layers.Dense(outputs)])


def test_a_function_is_kept_under_its_module_and_qualname_with_its_file_hash() -> None:
    this = Path(__file__).read_bytes()
    top = register(top_level_builder)
    assert top.ref == "tests.test_models:top_level_builder"
    assert top.sha256 == "sha256:" + hashlib.sha256(this).hexdigest()
    assert top.import_root == str(ROOT)  # a fresh process imports it from the repository

    def local(input_shape: tuple[int, ...], outputs: int) -> Any:
        return top_level_builder(input_shape, outputs)

    inner = register(local)
    assert inner.ref.endswith(":test_a_function_is_kept_under_its_module_and_qualname_with_its_"
                              "file_hash.<locals>.local")
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
    payload["ref"] = "elsewhere:local"  # as a worker, which has only the payload
    import_builder(payload)
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
