from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from study.errors import SpecError
from study.spec import (
    Range,
    Spec,
    apply_overrides,
    builtin_names,
    default_study_name,
    from_stored,
    from_table,
    identity_diff,
    load_spec,
    parse_override,
    resolve,
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
    # A user's spec states only what it changes; the rest is the article (its loss and
    # objective "auto" until the data's task is known: the article's is regression).
    assert to_table(resolve(Spec(), "regression")) == {**to_table(load_spec("article")),
                                                       "description": ""}
    assert from_table({}) == dataclasses.replace(load_spec("article"), description="")


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
    (["data.kind=csv"], r"^data\.path: data\.kind = 'csv' needs the path of the file"),
    (["data.kind=csv", "data.path=a.csv"], r"^data\.target: data\.kind = 'csv' needs the target"),
    (["data.kind=npz", "data.path=a.npz", "data.n_train=5"],
     r"^data\.n_train: only for the synthetic sets \(linear, classification\)"),
    (["data.path=a.csv"], r"^data\.path: 'a\.csv' is not used by data\.kind = 'linear'"),
    (["data.kind=npz", "data.path=a.npz", "data.features=['a']"],
     r"^data\.features: \('a',\) is not used by data\.kind = 'npz'"),
    (["data.kind=python", "data.loader=nocolon"], r"^data\.loader: expected 'module:function'"),
    (["data.kind=csv", "data.path=a.csv", "data.target=['y', 'y']"],
     r"^data\.target: value 'y' is listed twice"),
    (["data.task=ordinal"], r"^data\.task: unknown value 'ordinal'"),
    (["data.kind=diabetes", "data.task=binary"],
     r"^data\.task: 'binary' does not fit data\.kind = 'diabetes', whose task is 'regression'"),
    (["data.kind=diabetes", "data.val_fraction=1.5"],
     r"^data\.val_fraction: expected a fraction in \[0, 1\), got 1\.5"),
    (["data.val_fraction=0.2"], r"^data\.val_fraction: data\.kind = 'linear' draws its own"),
    (["data.kind=digits", "data.val_fraction=0.2", "train.loss=cross_entropy"],
     r"^train\.loss: 'cross_entropy' does not fit data\.kind = 'digits' "
     r"\(use 'sparse_cross_entropy', or leave train\.loss out to follow the data\)$"),
    (["nosuch.key=1"], r"^nosuch: unknown key \(known: analysis, data, description, model, "
                       r"name, run, search, train\)$"),
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
    (["model.hidden=[8, 0]"], r"^model\.hidden\[1\]: expected a positive number, got 0"),
    (["train.optimizer=adagrad"], r"^train\.optimizer: unknown value 'adagrad' \(expected one of: "
                                  r"adam, sgd, momentum, rmsprop\)"),
    (["train.loss=cross_entropy"], r"^train\.loss: 'cross_entropy' does not fit data\.kind = "
                                   r"'linear' \(use 'mse', or leave train\.loss out"),
    (["data.kind=classification", "train.loss=mse"],
     r"^train\.loss: 'mse' does not fit data\.kind = 'classification' \(use 'cross_entropy'"),
    (["data.kind=classification", "data.n_features=1", "train.loss=cross_entropy"],
     r"^data\.n_features: the classification set needs at least 2 features, got 1"),
    (["data.kind=classification", "data.n_classes=4", "train.loss=cross_entropy"],
     r"^train\.loss: 'cross_entropy' does not fit data\.kind = 'classification' "
     r"\(use 'sparse_cross_entropy', or leave train\.loss out to follow the data\)$"),
    (["data.kind=classification", "train.loss=sparse_cross_entropy"],
     r"^train\.loss: 'sparse_cross_entropy' does not fit data\.kind = 'classification' "
     r"\(use 'cross_entropy', or leave train\.loss out to follow the data\)$"),
    (["data.kind=classification", "data.n_classes=1", "train.loss=cross_entropy"],
     r"^data\.n_classes: expected at least 2 classes, got 1$"),
    (["data.n_classes=3"], r"^data\.n_classes: 3 is only for data\.kind = 'classification' "
                           r"\(the kind is 'linear'\)$"),
    (["train.loss=hinge"], r"^train\.loss: unknown value 'hinge' \(expected one of: auto, "
                           r"mse, cross_entropy, sparse_cross_entropy\)$"),
    (["train.objective=val_error"],
     r"^train\.objective: 'val_error' \(1 - validation accuracy\) needs a classification loss "
     r"\('cross_entropy' or 'sparse_cross_entropy'\), got train\.loss = 'mse'$"),
    (["train.objective=accuracy"], r"^train\.objective: unknown value 'accuracy' \(expected one "
                                   r"of: auto, train_loss, val_loss, val_error\)$"),
    (["train.budget=hours"], r"^train\.budget: unknown value 'hours'"),
    (["train.budget=steps"], r"^train\.steps: expected a positive number, got 0"),
    (["train.budget=examples", "train.examples=-3"],
     r"^train\.examples: expected a positive number, got -3"),
    (["train.steps=100"], r"^train\.steps: 100 is only for train\.budget = 'steps' "
                          r"\(the budget is 'epochs'\)"),
    (["train.budget=steps", "train.steps=10", "train.examples=5"],
     r"^train\.examples: 5 is only for train\.budget = 'examples'"),
    (["train.momentum=1.0"], r"^train\.momentum: expected a number in \[0, 1\), got 1\.0"),
    (["train.schedule=exponential"], r"^train\.schedule: unknown value 'exponential'"),
    (["train.schedule=warmup"], r"^train\.warmup_fraction: the warmup schedule needs a positive "
                                r"fraction, got 0\.0"),
    (["train.warmup_fraction=0.1"], r"^train\.warmup_fraction: 0\.1 is only for the warmup and "
                                    r"cosine schedules \(the schedule is 'constant'\)"),
    (["train.schedule=cosine", "train.warmup_fraction=1.0"],
     r"^train\.warmup_fraction: expected a fraction in \[0, 1\), got 1\.0"),
    (["train.decay_at=[0.5, 1.5]"], r"^train\.decay_at\[1\]: expected a fraction in \(0, 1\), "
                                    r"got 1\.5"),
    (["train.decay_at=[0.75, 0.5]"], r"^train\.decay_at: expected increasing fractions, "
                                     r"got \[0\.75, 0\.5\]"),
    (["train.schedule=step", "train.decay_at=[]"],
     r"^train\.decay_at: the step schedule needs at least one fraction, got \[\]"),
    (["train.decay_rate=0"], r"^train\.decay_rate: expected a positive number, got 0\.0"),
    (["train.divergence_factor=-5"], r"^train\.divergence_factor: expected 0 \(off\) or a finite "
                                     r"factor above 1, got -5\.0$"),
    (["train.divergence_factor=0.5"], r"^train\.divergence_factor: expected 0 \(off\) or a "
                                      r"finite factor above 1, got 0\.5$"),
    (["train.divergence_factor=inf"], r"^train\.divergence_factor: .* got inf$"),
    (["train.divergence_factor=nan"], r"^train\.divergence_factor: .* got nan$"),
    (["train.divergence_factor=huge"], r"^train\.divergence_factor: expected a number, "
                                       r"got 'huge'$"),
    (["train.divergence_factor=[10]"], r"^train\.divergence_factor: expected a number, "
                                       r"got \[10\]$"),
    (["train.budget=steps", "train.steps=100", "search.pruner=median"],
     r"^search\.pruner: 'median' compares trials epoch by epoch and needs train\.budget = "
     r"'epochs', got 'steps'"),
    (["analysis.noise_epochs=[1, -1]"],
     r"^analysis\.noise_epochs\[1\]: expected a non-negative integer, got -1"),
    (["analysis.noise_epochs=[3, 3]"], r"^analysis\.noise_epochs: value 3 is listed twice"),
    (["analysis.noise_epochs=[51]"], r"^analysis\.noise_epochs: epoch 51 is after the last one "
                                     r"\(50\)"),
    (["train.budget=examples", "train.examples=2500", "analysis.noise_epochs=[4]"],
     r"^analysis\.noise_epochs: epoch 4 is after the last one \(3\)"),
    (["analysis.noise_batches=[16]"], r"^analysis\.noise_batches: expected two batch sizes "
                                      r"\[small, big\], got \[16\]"),
    (["analysis.noise_batches=[64, 64]"], r"^analysis\.noise_batches: the second size must "
                                          r"exceed the first, got \[64, 64\]"),
    (["analysis.noise_batches=[0, 64]"],
     r"^analysis\.noise_batches\[0\]: expected a positive number, got 0"),
    (["analysis.noise_repeats=0"], r"^analysis\.noise_repeats: expected a positive number, got 0"),
    (["analysis.sharpness=1"], r"^analysis\.sharpness: expected true or false, got 1"),
    (["analysis.sharpness_iterations=0"],
     r"^analysis\.sharpness_iterations: expected a positive number, got 0"),
    (["train=5"], r"^train: expected a table, got 5"),
    (["train.epochs.x=5"], r"^--set: train\.epochs\.x: 'epochs' is not a section"),
    (["train.epochs"], r"^--set: expected SECTION\.KEY=VALUE, got 'train\.epochs'"),
    (["=5"], r"^--set: expected SECTION\.KEY=VALUE"),
    (["train..epochs=5"], r"^--set: expected SECTION\.KEY=VALUE"),
    (["data.n_train=0"], r"^data\.n_train: expected a positive number, got 0"),
    (["run.grace_seconds=1"], r"^run\.grace_seconds: 1 must exceed run\.heartbeat_seconds"),
    (["run.checkpoint_seconds=0"], r"^run\.checkpoint_seconds: expected a positive number, got 0"),
    (["run.checkpoint_seconds=-5"],
     r"^run\.checkpoint_seconds: expected a positive number, got -5"),
    (["run.checkpoint_seconds='soon'"], r"^run\.checkpoint_seconds: expected a number, got 'soon'"),
]


@pytest.mark.parametrize(("overrides", "message"), BAD)
def test_bad_input_names_the_field(overrides: list[str], message: str) -> None:
    with pytest.raises(SpecError, match=message) as info:
        load_spec("article", overrides)
    assert "\n" not in str(info.value)


def test_unknown_spec_name() -> None:
    with pytest.raises(SpecError,
                       match=r"^spec: unknown spec 'nope' \(built-in: adam-surge, adam-vs-sgd, article"):
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
    assert identity_diff(a, to_table(load_spec("article", ["run.checkpoint_seconds=2"]))) is None
    diff = identity_diff(a, to_table(load_spec("article", ["train.epochs=3"])))
    assert diff == "train.epochs: study has 50, this run asks 3"
    diff = identity_diff(a, to_table(load_spec("article", ["analysis.sharpness=true"])))
    assert diff == "analysis.sharpness: study has False, this run asks True"
    # The threshold decides which trials are results: part of what a study is.
    diff = identity_diff(a, to_table(load_spec("article", ["train.divergence_factor=0"])))
    assert diff == "train.divergence_factor: study has 1000.0, this run asks 0.0"


def test_classification_tasks_and_the_validation_error_objective() -> None:
    binary = load_spec("classification")
    assert (binary.data.n_classes, binary.train.loss) == (2, "cross_entropy")
    multi = load_spec("multiclass")
    assert (multi.data.kind, multi.data.n_classes) == ("classification", 4)
    assert (multi.train.loss, multi.train.objective) == ("sparse_cross_entropy", "val_error")
    assert load_spec("classification", ["train.objective=val_error"]).train.objective == \
        "val_error"
    # The class count is part of what a study is; a spec stored before it existed had 2.
    a = to_table(binary)
    diff = identity_diff(a, to_table(load_spec("classification", [
        "data.n_classes=3", "train.loss=sparse_cross_entropy"])))
    assert diff == "data.n_classes: study has 2, this run asks 3"
    del a["data"]["n_classes"]
    assert identity_diff(a, to_table(binary)) is None and from_stored(a) == binary


def test_divergence_factor_default_and_off() -> None:
    assert load_spec("article").train.divergence_factor == 1000.0
    assert load_spec("article", ["train.divergence_factor=0"]).train.divergence_factor == 0.0
    assert load_spec("article", ["train.divergence_factor=20"]).train.divergence_factor == 20.0


def test_identity_diff_reads_missing_fields_as_their_defaults() -> None:
    # A study stored before a field existed ran with its default: it resumes.
    old = to_table(load_spec("article"))
    del old["analysis"]
    for key in ("budget", "steps", "schedule", "momentum", "divergence_factor"):
        del old["train"][key]
    assert identity_diff(old, to_table(load_spec("article"))) is None
    diff = identity_diff(old, to_table(load_spec("article", ["train.optimizer=sgd"])))
    assert diff == "train.optimizer: study has 'adam', this run asks 'sgd'"


def test_a_stored_spec_is_read_as_the_spec_it_ran() -> None:
    spec = load_spec("article", ["train.optimizer=sgd", "search.seeds=[0, 1]"])
    assert from_stored(to_table(spec)) == spec
    assert from_stored(None) is None and from_stored("article") is None
    # Stored by an earlier version: fields added since take their defaults, which is what
    # that version ran with; a key this version does not know (since removed) is dropped.
    old = to_table(spec)
    del old["analysis"]
    for key in ("budget", "schedule", "momentum"):
        del old["train"][key]
    old["train"]["clip_norm"] = 1.0
    old["retired"] = "x"
    assert from_stored(old) == spec
    bad = to_table(spec)
    bad["train"]["epochs"] = "many"
    with pytest.raises(SpecError, match=r"^stored spec: train\.epochs: expected an integer, "
                                        r"got 'many'$"):
        from_stored(bad)


@pytest.mark.parametrize(("budget", "batch_size", "expected"), [
    # (epochs, last_rows, steps_per_epoch, steps, examples) on 1000 rows
    ("train.epochs=3", 16, (3, 1000, 63, 189, 3000)),
    ("train.steps=100", 16, (2, 37 * 16, 63, 100, 1000 + 37 * 16)),
    ("train.steps=126", 16, (2, 1000, 63, 126, 2000)),  # two whole epochs, last batch partial
    ("train.steps=100", 256, (25, 1000, 4, 100, 25000)),
    ("train.steps=3", 256, (1, 768, 4, 3, 768)),
    ("train.examples=2500", 16, (3, 500, 63, 126 + 32, 2500)),  # 500 rows: 31 batches + 4 rows
    ("train.examples=2500", 256, (3, 500, 4, 8 + 2, 2500)),
    ("train.examples=1000", 256, (1, 1000, 4, 4, 1000)),
])
def test_budget_plans(budget: str, batch_size: int, expected: tuple[int, ...]) -> None:
    kind = budget.split("=")[0].split(".")[1]
    sets = [budget] if kind == "epochs" else [f"train.budget={kind}", budget]
    plan = load_spec("article", sets).train.plan(batch_size, 1000)
    assert (plan.epochs, plan.last_rows, plan.steps_per_epoch, plan.steps, plan.examples) == expected
    assert plan.steps_after(plan.epochs) == plan.steps
    assert plan.steps_after(1) == min(plan.steps, plan.steps_per_epoch)


def test_builtin_specs_load_and_differ_as_documented() -> None:
    names = builtin_names()
    assert {"article", "article-seeds", "sgd-scaling", "adam-vs-sgd", "fixed-steps",
            "classification", "multiclass", "digits"} <= set(names)
    for name in names:
        spec = load_spec(name)
        assert spec.name == name and spec.description
    seeds = load_spec("article-seeds")
    assert len(seeds.search.seeds) == 5 and seeds.train == load_spec("article").train
    assert load_spec("sgd-scaling").train.optimizer == "sgd"
    assert load_spec("sgd-scaling").train.budget == "examples"
    assert load_spec("fixed-steps").train.budget == "steps"
    assert load_spec("classification").data.kind == "classification"


def test_a_csv_target_may_be_one_name_or_a_list() -> None:
    base = ["data.kind=csv", "data.path=a.csv", "data.val_fraction=0.2"]
    assert load_spec("article", [*base, "data.target=y"]).data.target == ("y",)
    two = load_spec("article", [*base, "data.target=['y', 'z']", "data.features=['a']"])
    assert two.data.target == ("y", "z") and two.data.features == ("a",)


def test_the_stored_fingerprint_is_compared_only_when_both_sides_have_one() -> None:
    table = to_table(load_spec("article"))
    stamped = {**table, "data": {**table["data"], "fingerprint": "sha256:aa"}}
    other = {**table, "data": {**table["data"], "fingerprint": "sha256:bb"}}
    assert identity_diff(table, stamped) is None and identity_diff(stamped, table) is None
    assert identity_diff(stamped, stamped) is None
    assert identity_diff(stamped, other) == ("data.fingerprint: study has sha256:aa..., "
                                             "this run's data sha256:bb...")
    # A spec difference is named before the data's.
    moved = {**other, "data": {**other["data"], "seed": 5}}
    assert identity_diff(stamped, moved) == "data.seed: study has 0, this run asks 5"
    assert from_stored(stamped) == load_spec("article")  # not a field: dropped on reading


# --------------------------------------------------------------------------- defaults that follow the data


@pytest.mark.parametrize(("overrides", "loss", "objective"), [
    ([], "mse", "train_loss"),  # the article: its training loss
    (["data.kind=classification"], "cross_entropy", "train_loss"),
    (["data.kind=classification", "data.n_classes=4"], "sparse_cross_entropy", "train_loss"),
    (["data.kind=diabetes", "data.val_fraction=0.2"], "mse", "val_loss"),
    (["data.kind=digits", "data.val_fraction=0.2"], "sparse_cross_entropy", "val_error"),
    (["data.kind=csv", "data.path=h.csv", "data.target=y", "data.task=binary"],
     "cross_entropy", "val_error"),
    # Named values are kept.
    (["data.kind=digits", "data.val_fraction=0.2", "train.objective=val_loss"],
     "sparse_cross_entropy", "val_loss"),
    (["train.objective=val_loss"], "mse", "val_loss"),
])
def test_the_loss_and_objective_follow_the_task_the_spec_tells(
        overrides: list[str], loss: str, objective: str) -> None:
    spec = load_spec("article", overrides)
    assert (spec.train.loss, spec.train.objective) == (loss, objective)


@pytest.mark.parametrize(("task", "loss", "objective"), [
    ("regression", "mse", "val_loss"),
    ("binary", "cross_entropy", "val_error"),
    ("multiclass", "sparse_cross_entropy", "val_error"),
])
def test_own_data_whose_task_only_the_data_tell_resolve_once_loaded(
        task: str, loss: str, objective: str) -> None:
    spec = load_spec("article", ["data.kind=csv", "data.path=h.csv", "data.target=y",
                                 "data.val_fraction=0.2"])
    assert (spec.train.loss, spec.train.objective) == ("auto", "auto")  # not known yet
    resolved = resolve(spec, task)
    assert (resolved.train.loss, resolved.train.objective) == (loss, objective)
    assert resolve(resolved, task) == resolved
    # What a study stores, read back: the resolved values, as an old study holds them.
    assert from_stored(to_table(resolved)) == resolved


def test_a_named_loss_that_does_not_fit_the_task_is_still_refused() -> None:
    spec = load_spec("article", ["data.kind=csv", "data.path=h.csv", "data.target=y",
                                 "data.val_fraction=0.2", "train.loss=mse"])
    with pytest.raises(SpecError, match=r"^train\.loss: 'mse' does not fit data\.kind = 'csv' "
                       r"\(use 'cross_entropy', or leave train\.loss out to follow the data\)$"):
        resolve(spec, "binary")
    auto = load_spec("article", ["data.kind=csv", "data.path=h.csv", "data.target=y",
                                 "data.val_fraction=0.2", "train.objective=val_error"])
    with pytest.raises(SpecError, match=r"^train\.objective: 'val_error' .* got train\.loss = "
                       r"'mse'$"):
        resolve(auto, "regression")
    assert resolve(auto, "binary").train.loss == "cross_entropy"


def test_a_resumed_article_study_compares_resolved_values() -> None:
    # Every study stored before "auto" holds mse and train_loss explicitly.
    stored = to_table(load_spec("article"))
    assert (stored["train"]["loss"], stored["train"]["objective"]) == ("mse", "train_loss")
    assert identity_diff(stored, to_table(load_spec("article"))) is None
    diff = identity_diff(stored, to_table(load_spec("article", ["train.objective=val_loss"])))
    assert diff == "train.objective: study has 'train_loss', this run asks 'val_loss'"


def test_every_builtin_spec_loads_resolved() -> None:
    for name in builtin_names():
        spec = load_spec(name)
        assert spec.train.loss != "auto" and spec.train.objective != "auto", name
        # The article's synthetic sets keep its training loss unless a spec says otherwise.
        if spec.data.kind in ("linear", "classification") and name not in (
                "adam-surge", "multiclass"):
            assert spec.train.objective == "train_loss", name


@pytest.mark.parametrize(("overrides", "name"), [
    ([], "article"),
    (["data.kind=csv", "data.path=data/houses.csv", "data.target=y"], "houses"),
    (["data.kind=npz", "data.path=/tmp/x/cells.npz"], "cells"),
    (["data.kind=python", "data.loader=mymod.sub:load_things"], "load_things"),
    (["data.kind=digits"], "digits"),
    (["data.kind=classification"], "classification"),
    (["name=mine", "data.kind=csv", "data.path=houses.csv", "data.target=y"], "mine"),
])
def test_default_study_name_follows_the_spec_or_the_data_source(
        overrides: list[str], name: str) -> None:
    spec = from_table(apply_overrides({}, overrides))
    assert default_study_name(spec) == name


def test_default_study_name_of_builtin_and_file_specs(tmp_path: Path) -> None:
    assert default_study_name(load_spec("digits")) == "digits"
    assert default_study_name(load_spec("multiclass")) == "multiclass"
    # A built-in spec's name is kept only on its own kind of data.
    assert default_study_name(load_spec("article", ["data.kind=csv", "data.path=h.csv",
                                                    "data.target=y"])) == "h"
    assert default_study_name(load_spec("article", ["data.seed=3"])) == "article"
    # Arrays handed to study.run(data=...): the spec's data section becomes kind "arrays".
    assert default_study_name(from_table({"data": {"kind": "arrays"}})) == "arrays"
    # A spec file that names no study is named by its stem.
    path = tmp_path / "sweep-2.toml"
    path.write_text('[data]\nkind = "csv"\npath = "h.csv"\ntarget = "y"\n')
    assert load_spec(str(path)).name == "sweep-2"
    assert default_study_name(load_spec(str(path))) == "sweep-2"


# --------------------------------------------------------------------------- unknown keys


def test_every_unknown_key_is_named_at_once_with_the_closest_known_key(tmp_path: Path) -> None:
    path = tmp_path / "typos.toml"
    path.write_text('nmae = "x"\n[trian]\nepochs = 3\n[model]\nhiden = [8]\nactivation = "tanh"\n'
                    '[search]\nbatchsize = [16]\n')
    with pytest.raises(SpecError) as e:
        load_spec(str(path), ["train.seeds=[1]", "train.zzz=1"])
    assert str(e.value) == (
        "unknown keys: nmae (did you mean name?), trian.epochs (did you mean train.epochs?), "
        "model.hiden (did you mean model.hidden?), search.batchsize (did you mean "
        "search.batch_size?), train.seeds (did you mean search.seeds?), train.zzz")
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(("overrides", "message"), [
    (["train.epochz=1"], "train.epochz: unknown key (did you mean train.epochs?)"),
    (["trian.epochs=1"], "trian.epochs: unknown key (did you mean train.epochs?)"),
    (["search.epochs=1"], "search.epochs: unknown key (did you mean train.epochs?)"),
    (["train.zzz=1"], "train.zzz: unknown key (known: budget, decay_at, decay_rate, "
     "divergence_factor, epochs, examples, keep_weights, loss, momentum, nesterov, objective, "
     "optimizer, schedule, steps, warmup_fraction)"),
])
def test_one_unknown_key_names_it_and_the_closest(overrides: list[str], message: str) -> None:
    with pytest.raises(SpecError) as e:
        load_spec("article", overrides)
    assert str(e.value) == message
