from __future__ import annotations

from pathlib import Path

import pytest

from study.errors import SpecError
from study.spec import (
    Range,
    Spec,
    apply_overrides,
    builtin_names,
    identity_diff,
    load_spec,
    parse_override,
    to_table,
)


def test_article_is_the_papers_experiment() -> None:
    spec = load_spec("article")
    assert spec.name == "article"
    assert spec.data.n_train == 1000 and spec.data.n_features == 10 and spec.data.seed == 0
    assert spec.model.hidden == (64, 32) and spec.model.activation == "relu"
    assert spec.train.optimizer == "adam" and spec.train.loss == "mse"
    assert spec.train.epochs == 50 and spec.train.objective == "train_loss"
    assert spec.search.sampler == "grid"
    assert spec.search.batch_size == (16, 32, 64, 128, 256)
    assert spec.search.learning_rate == (0.1, 0.01, 0.001, 0.0001)
    assert spec.search.seeds == (0,)


def test_defaults_equal_the_article_file() -> None:
    # A user's spec states only what it changes; the rest is the article.
    assert to_table(Spec()) == {**to_table(load_spec("article")), "description": ""}


def test_builtins_listed() -> None:
    assert "article" in builtin_names()


def test_user_file_and_overrides(tmp_path: Path) -> None:
    path = tmp_path / "mine.toml"
    path.write_text('name = "mine"\n[search]\nbatch_size = [32, 64]\n[train]\nepochs = 7\n')
    spec = load_spec(str(path), ["train.epochs=3", "search.seeds=[0, 1, 2]",
                                 "model.activation=tanh"])
    assert spec.name == "mine"
    assert spec.search.batch_size == (32, 64)
    assert spec.train.epochs == 3  # CLI beats the file
    assert spec.search.seeds == (0, 1, 2)
    assert spec.model.activation == "tanh"  # bare words are strings
    assert spec.search.learning_rate == (0.1, 0.01, 0.001, 0.0001)  # default fills in


def test_parse_override_reads_toml_values() -> None:
    assert parse_override("train.epochs=5") == (["train", "epochs"], 5)
    assert parse_override("search.learning_rate=[1e-3, 1e-2]") == (
        ["search", "learning_rate"], [1e-3, 1e-2])
    assert parse_override("name=abc") == (["name"], "abc")


def test_apply_overrides_does_not_mutate() -> None:
    table = {"train": {"epochs": 5}}
    out = apply_overrides(table, ["train.epochs=6"])
    assert table == {"train": {"epochs": 5}} and out == {"train": {"epochs": 6}}


def test_ranges_for_other_samplers() -> None:
    spec = load_spec("article", [
        "search.sampler=tpe", "search.n_trials=10",
        "search.batch_size={low = 16, high = 256}",
        "search.learning_rate={low = 1e-4, high = 0.1}",
    ])
    assert spec.search.batch_size == Range(16.0, 256.0)
    assert spec.search.learning_rate == Range(1e-4, 0.1)


BAD = [
    (["nosuch.key=1"], r"^nosuch: unknown key"),
    (["train.epochz=1"], r"^train\.epochz: unknown key"),
    (["train.epochs=ten"], r"^train\.epochs: expected an integer, got 'ten'"),
    (["train.epochs=true"], r"^train\.epochs: expected an integer, got True"),
    (["train.epochs=0"], r"^train\.epochs: expected a positive number, got 0"),
    (["train.epochs=-5"], r"^train\.epochs: expected a positive number, got -5"),
    (["search.batch_size=[16, 0]"], r"^search\.batch_size\[1\]: expected a positive number, got 0"),
    (["search.batch_size=[16, 2000]"], r"^search\.batch_size: 2000 is larger than the training set"),
    (["search.batch_size=[16.5]"], r"^search\.batch_size\[0\]: expected an integer, got 16\.5"),
    (["search.learning_rate=[0.1, -1]"],
     r"^search\.learning_rate\[1\]: expected a positive number, got -1"),
    (["search.learning_rate=[0.1, nan]"],
     r"^search\.learning_rate\[1\]: expected a positive number, got nan"),
    (["search.learning_rate=[]"], r"^search\.learning_rate: the grid is empty"),
    (["search.batch_size=[]"], r"^search\.batch_size: the grid is empty"),
    (["search.seeds=[]"], r"^search\.seeds: expected at least one seed"),
    (["search.seeds=[1, 1]"], r"^search\.seeds: value 1 is listed twice"),
    (["search.sampler=annealing"], r"^search\.sampler: unknown value 'annealing'"),
    (["search.sampler=tpe"], r"^search\.n_trials: the tpe sampler needs a positive trial count"),
    (["search.learning_rate={low = 1e-4, high = 0.1}"],
     r"^search\.learning_rate: the grid sampler needs a list of values"),
    (["model.activation=swish"], r"^model\.activation: unknown value 'swish'"),
    (["model.hidden=[]"], r"^model\.hidden: expected at least one layer width"),
    (["train=5"], r"^train: expected a table, got 5"),
    (["train.epochs.x=5"], r"^--set: train\.epochs\.x: 'epochs' is not a section"),
    (["train.epochs"], r"^--set: expected SECTION\.KEY=VALUE, got 'train\.epochs'"),
    (["=5"], r"^--set: expected SECTION\.KEY=VALUE"),
    (["train..epochs=5"], r"^--set: expected SECTION\.KEY=VALUE"),
    (["data.n_train=0"], r"^data\.n_train: expected a positive number, got 0"),
    (["run.grace_seconds=1"], r"^run\.grace_seconds: 1 must exceed run\.heartbeat_seconds"),
]


@pytest.mark.parametrize(("overrides", "message"), BAD)
def test_bad_input_names_the_field(overrides: list[str], message: str) -> None:
    with pytest.raises(SpecError, match=message) as info:
        load_spec("article", overrides)
    assert "\n" not in str(info.value)


def test_unknown_spec_name() -> None:
    with pytest.raises(SpecError, match=r"^spec: unknown spec 'nope' \(built-in: article"):
        load_spec("nope")


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"^spec: file not found: .*missing\.toml"):
        load_spec(str(tmp_path / "missing.toml"))
    bad = tmp_path / "bad.toml"
    bad.write_text("[train\nepochs = 3\n")
    with pytest.raises(SpecError, match=r"^spec: .*bad\.toml is not valid TOML"):
        load_spec(str(bad))


def test_identity_diff_ignores_seeds_and_run() -> None:
    a = to_table(load_spec("article"))
    assert identity_diff(a, to_table(load_spec("article", ["search.seeds=[0,1]"]))) is None
    assert identity_diff(a, to_table(load_spec("article", ["run.trainer=keras"]))) is None
    diff = identity_diff(a, to_table(load_spec("article", ["train.epochs=3"])))
    assert diff == "train.epochs: study has 50, this run asks 3"
