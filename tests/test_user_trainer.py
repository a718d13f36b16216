"""A trainer of your own (study/trainers/user.py): `run.trainer = "module:function"` or
`study.run(trainer=fn)`; the numpy example (examples/numpy_trainer.py) against the keras
trainer; its identity on resume; bad returns as one line each; no TensorFlow loaded."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import study
from study.data import make_dataset
from study.errors import SpecError, UsageError
from study.spec import identity_diff, load_spec, to_table
from study.trainers.base import TrialConfig
from study.trainers.user import TrainerError, UserTrainer, identify, load, to_result
from tests.helpers import ROOT, run_cli, sql, trial_states

# A grid of 4 cells, 3 epochs on 200 rows: a study of your own trains it in well under
# a second.
SMALL = ["data.n_train=200", "data.n_val=50", "train.epochs=3", "search.batch_size=[16,32]",
         "search.learning_rate=[0.1,0.01]", "search.seeds=[0]"]
SMALL_VALUES = {"data.n_train": 200, "data.n_val": 50, "train.epochs": 3,
                "search.batch_size": [16, 32], "search.learning_rate": [0.1, 0.01],
                "search.seeds": [0]}


def _spec(*extra: str) -> Any:
    return load_spec(str(ROOT / "examples" / "numpy_trainer.toml"), [*SMALL, *extra])


def _config(spec: Any = None, bs: int = 16, lr: float = 0.1, seed: int = 0) -> TrialConfig:
    return TrialConfig.of(spec or _spec(), bs, lr, seed)


def _data(spec: Any = None) -> study.Dataset:
    return make_dataset((spec or _spec()).data)


def constant(config: TrialConfig, data: study.Dataset) -> dict[str, Any]:
    """A trainer of your own at the top level of an importable module (this one)."""
    return {"train_loss": 1.0 / config.learning_rate, "val_loss": 2.0, "note": "fixed",
            "rows": data.n_train}


class Fused:
    """The class form: many trials per call."""

    batch_limit = 3

    def train(self, configs: Sequence[TrialConfig], data: study.Dataset) -> list[dict[str, Any]]:
        return [{"train_loss": c.learning_rate, "val_loss": c.batch_size / 100,
                 "train_curve": [1.0] * (c.plan(data.n_train).epochs - 1) + [c.learning_rate]}
                for c in configs]


# --------------------------------------------------------------------------- the contract


def test_a_full_result_is_read_as_ours() -> None:
    config, data = _config(), _data()
    out = {"train_loss": 0.5, "val_loss": 0.6, "train_curve": [2.0, 1.0, 0.5],
           "val_curve": [2.1, 1.1, 0.6], "val_accuracy": 0.75, "step_every": 4,
           "step_losses": [3.0, 2.0, 1.0], "steps": 39, "seconds": 1.5, "initial_loss": 4.0,
           "full_train_loss": 0.45, "lr_used": np.float32(0.1), "device": "cpu",
           "layers": [1, 2]}
    r = to_result("m:f", config, data, out, seconds=9.0)
    assert (r.status, r.train_curve, r.val_curve, r.steps, r.seconds) == (
        "complete", [2.0, 1.0, 0.5], [2.1, 1.1, 0.6], 39, 1.5)
    assert (r.train_loss, r.val_loss, r.full_train_loss) == (0.5, 0.6, 0.45)
    assert r.val_accuracy_curve[-1] == 0.75 and math.isnan(r.val_accuracy_curve[0])
    assert (r.step_every, r.step_losses) == (4, [3.0, 2.0, 1.0])
    # Anything else is a user attribute under `user.`; numbers reach the stored extras.
    assert r.extras == {"user.lr_used": pytest.approx(0.1)}
    assert r.attrs == {"user.lr_used": pytest.approx(0.1), "user.device": "cpu",
                       "user.layers": [1, 2]}


def test_without_curves_the_losses_stand_at_the_last_epoch() -> None:
    r = to_result("m:f", _config(), _data(), {"train_loss": 0.5, "val_loss": 0.6}, 2.0)
    assert r.status == "complete" and r.seconds == 2.0
    assert len(r.train_curve) == 3 and r.train_curve[-1] == 0.5 and r.val_curve[-1] == 0.6
    assert all(math.isnan(v) for v in r.train_curve[:2] + r.val_curve[:2])
    assert r.steps == _config().plan(200).steps and r.extras == {}


@pytest.mark.parametrize(("out", "epoch"), [
    ({"train_loss": math.nan, "val_loss": math.nan}, 3),  # no curve: its last epoch
    ({"train_loss": math.inf, "val_loss": 1.0, "train_curve": [1.0, math.inf]}, 2),
    # A finite blow-up diverges against initial_loss (train.divergence_factor = 1000)...
    ({"train_loss": 5e4, "val_loss": 1.0, "train_curve": [9.0, 5e4, 5e4],
      "initial_loss": 10.0}, 2),
])
def test_a_nan_or_a_blow_up_is_divergence_under_our_rule(out: dict[str, Any],
                                                         epoch: int) -> None:
    r = to_result("m:f", _config(), _data(), out, 1.0)
    assert (r.status, r.diverged_epoch, len(r.train_curve)) == ("diverged", epoch, epoch)
    assert math.isnan(r.full_train_loss)


def test_without_an_initial_loss_only_nan_and_inf_diverge() -> None:
    out = {"train_loss": 5e4, "val_loss": 1.0, "train_curve": [9.0, 5e4, 5e4]}
    assert to_result("m:f", _config(), _data(), out, 1.0).status == "complete"


def test_the_pruner_judges_the_curve_epoch_by_epoch() -> None:
    heard: list[tuple[int, int, float, float]] = []

    def monitor(index: int, epoch: int, train: float, val: float, acc: float) -> bool:
        heard.append((index, epoch, train, val))
        return epoch == 2

    out = {"train_loss": 0.5, "val_loss": 0.6, "train_curve": [2.0, 1.0, 0.5],
           "val_curve": [2.1, 1.1, 0.6], "step_every": 13, "step_losses": [3.0, 2.0, 1.0]}
    r = to_result("m:f", _config(), _data(), out, 1.0, monitor, index=4)
    assert heard == [(4, 1, 2.0, 2.1), (4, 2, 1.0, 1.1)]
    assert (r.status, r.train_curve, r.val_curve) == ("pruned", [2.0, 1.0], [2.1, 1.1])
    assert r.steps == 26 and r.step_losses == [3.0, 2.0]  # 13 steps per epoch of 200 rows


BAD: list[tuple[object, str]] = [
    ([0.5, 0.6], "returned a list; expected a mapping like {'train_loss': ..., 'val_loss': ...}"),
    ({"train_loss": 0.5}, "its result has no 'val_loss' (required: train_loss, val_loss)"),
    ({"train_loss": "0.5", "val_loss": 0.6}, "'train_loss' is a str ('0.5'); expected a number"),
    ({"train_loss": None, "val_loss": 0.6}, "'train_loss' is a NoneType (None); expected a number"),
    ({"train_loss": 0.5, "val_loss": np.ones(3)},
     "'val_loss' is a ndarray that is not one number"),
    ({"train_loss": 0.5, "val_loss": 0.6, "train_curve": [1.0, "x", 0.5]},
     "'train_curve[1]' is a str ('x'); expected a number"),
    ({"train_loss": 0.5, "val_loss": 0.6, "train_curve": [1.0, 0.7]},
     "'train_loss' is 0.5, but 'train_curve' ends in 0.7; its last value is the train_loss"),
    ({"train_loss": 0.5, "val_loss": 0.6, "train_curve": [1.0] * 4 + [0.5]},
     "'train_curve' has 5 values, but the trial's budget plans 3 epochs"),
    ({"train_loss": 0.5, "val_loss": 0.6, "step_losses": [1.0]},
     "'step_every' and 'step_losses' come together"),
    ({"train_loss": 0.5, "val_loss": 0.6, "val_accuracy": 1.5},
     "'val_accuracy' is 1.5; expected a share in [0, 1]"),
    ({"train_loss": 0.5, "val_loss": 0.6, "weights": object()},
     "'weights' is a object; anything beyond our keys is stored as a user attribute"),
    ({1: 0.5, "train_loss": 0.5, "val_loss": 0.6}, "key 1 is a int; keys are strings"),
]


@pytest.mark.parametrize(("out", "message"), BAD, ids=[b[1][:40] for b in BAD])
def test_a_bad_return_is_one_line_naming_the_trial_and_the_key(out: object,
                                                                message: str) -> None:
    with pytest.raises(TrainerError) as caught:
        to_result("mine:train", _config(bs=32, lr=0.01, seed=7), _data(), out, 1.0)
    text = str(caught.value)
    assert text.startswith("run.trainer 'mine:train', trial bs=32 lr=0.01 seed=7: "), text
    assert message in text and "\n" not in text


def test_a_val_error_objective_needs_the_accuracy() -> None:
    spec = load_spec("digits", ["train.epochs=2"])
    with pytest.raises(TrainerError, match=re.escape(
            "no 'val_accuracy' (or 'val_error'): train.objective = 'val_error' needs it")):
        to_result("m:f", TrialConfig.of(spec, 16, 0.1, 0), make_dataset(spec.data),
                  {"train_loss": 0.5, "val_loss": 0.6}, 1.0)


def test_the_class_form_takes_many_trials_per_call() -> None:
    trainer = UserTrainer(load("tests.test_user_trainer:Fused"))
    configs = [_config(bs=16, lr=lr) for lr in (0.1, 0.01, 0.001, 0.2)]
    assert (trainer.name, trainer.batch_limit) == ("tests.test_user_trainer:Fused", 3)
    assert trainer.claim_size(configs, 200, 30.0) == 3
    results = trainer.train(configs[:3], _data())
    assert [r.train_loss for r in results] == [0.1, 0.01, 0.001]


# --------------------------------------------------------------------------- the spec


@pytest.mark.parametrize(("override", "message"), [
    ("run.trainer=magic", "run.trainer: unknown value 'magic' (expected one of: auto, keras, "
                          "population, or 'module:function' naming a trainer of your own)"),
    ("run.trainer=mine:", "run.trainer: expected 'module:function', got 'mine:'"),
])
def test_run_trainer_is_ours_or_module_function(override: str, message: str) -> None:
    with pytest.raises(SpecError) as caught:
        load_spec("article", [override])
    assert str(caught.value) == message


def test_keeping_weights_is_refused_for_a_trainer_of_your_own() -> None:
    with pytest.raises(SpecError, match=re.escape(
            "train.keep_weights: 'best' keeps a Keras model's weights, which run.trainer = "
            "'m:f'")):
        load_spec("article", ["run.trainer=m:f", "train.keep_weights=best"])


def test_an_empty_hidden_list_is_a_linear_model() -> None:
    assert _spec().model.hidden == ()


def test_the_identity_is_the_code_not_its_comments(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    monkeypatch.syspath_prepend(str(tmp_path))
    _module(tmp_path, GOOD, "same_a")
    _module(tmp_path, GOOD.replace("# the simplest", "# still the simplest")
            .replace('"tag": "v1"}', '"tag": "v1",\n        }'), "same_b")
    _module(tmp_path, GOOD.replace("* 1.1", "* 1.2"), "other")
    a, b, c = (importlib.import_module(name).train for name in ("same_a", "same_b", "other"))
    assert identify(a) == identify(b) != identify(c)
    assert identify(a).startswith("sha256:") and len(identify(a)) == 71


@pytest.mark.parametrize(("stored", "current", "diff"), [
    ("", "m:f sha256:aa", "run.trainer: study was trained by ours, this run asks 'm:f' "
                          "(a trainer of your own)"),
    ("m:f sha256:aa", "", "run.trainer: study was trained by 'm:f', this run asks 'keras'"),
    ("m:f sha256:aa", "m:g sha256:aa", "run.trainer: study was trained by 'm:f', this run "
                                       "asks 'm:g'"),
    ("m:f sha256:aa", "m:f sha256:bb", "run.trainer: the code of 'm:f' changed since the "
                                       "study ran it (study has sha256:aa..., this run's "
                                       "sha256:bb...)"),
    ("m:f sha256:aa", "m:f sha256:aa", None),
])
def test_resuming_with_another_trainer_is_a_different_spec(stored: str, current: str,
                                                           diff: str | None) -> None:
    a, b = to_table(load_spec("article")), to_table(load_spec("article", ["run.trainer=keras"]))
    a["run"]["trainer_identity"], b["run"]["trainer_identity"] = stored, current
    assert identity_diff(a, b) == diff
    # Ours are interchangeable, and a study stored before this key has ours.
    del a["run"]["trainer_identity"]
    b["run"]["trainer_identity"] = ""
    assert identity_diff(a, b) is None


# --------------------------------------------------------------------------- studies


def _module(folder: Path, body: str, name: str = "mine") -> None:
    (folder / f"{name}.py").write_text(textwrap.dedent(body))


GOOD = """
    def train(config, data):
        # the simplest trainer of your own: a loss that falls with the learning rate
        loss = 1.0 / (1.0 + 100 * config.learning_rate) + config.seed * 0.01
        return {"train_loss": loss, "val_loss": loss * 1.1, "tag": "v1"}
"""


def _spec_file(folder: Path, trainer: str = "mine:train") -> Path:
    path = folder / "mine.toml"
    path.write_text(textwrap.dedent(f"""
        name = "mine"
        [data]
        kind = "linear"
        n_train = 200
        n_val = 50
        [train]
        epochs = 3
        [search]
        batch_size = [16, 32]
        learning_rate = [0.1, 0.01]
        [run]
        trainer = "{trainer}"
    """))
    return path


@pytest.mark.slow
def test_a_study_of_your_own_runs_reports_resumes_and_refuses_a_changed_function(
        tmp_path: Path) -> None:
    _module(tmp_path, GOOD)
    spec = _spec_file(tmp_path)
    url = f"sqlite:///{tmp_path / 's.db'}"
    first = run_cli(["run", "--spec", str(spec), "--storage", url], cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert trial_states(tmp_path / "s.db") == {"COMPLETE": 4}
    attrs = dict(sql(tmp_path / "s.db", "SELECT key, value_json FROM trial_user_attributes "
                                        "WHERE trial_id = 1"))
    assert json.loads(attrs["trainer"]) == "mine:train"
    assert json.loads(attrs["train_loss"]) == pytest.approx(0.5)  # its first cell: lr=0.01
    stored = study.load(url, "mine").spec
    assert stored is not None and stored.run.trainer_identity.startswith("mine:train sha256:")
    report = run_cli(["report", "--storage", url, "--out", str(tmp_path / "report")],
                     cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    assert (tmp_path / "report" / "index.html").exists()
    again = run_cli(["run", "--spec", str(spec), "--storage", url], cwd=tmp_path)
    assert again.returncode == 0 and "is complete (4/4 trials); nothing to train" in again.stdout
    # A comment is no change; a changed line of code is, and writes nothing.
    _module(tmp_path, GOOD.replace("# the simplest", "# still the simplest"))
    assert run_cli(["run", "--spec", str(spec), "--storage", url, "--seeds", "0,1"],
                   cwd=tmp_path).returncode == 0
    assert trial_states(tmp_path / "s.db") == {"COMPLETE": 8}
    _module(tmp_path, GOOD.replace("* 1.1", "* 1.2"))
    before = sql(tmp_path / "s.db", "SELECT COUNT(*) FROM trial_user_attributes")
    changed = run_cli(["run", "--spec", str(spec), "--storage", url, "--seeds", "0,1,2"],
                      cwd=tmp_path)
    assert changed.returncode == 2
    line = changed.stderr.strip()
    assert "\n" not in line and line.startswith(
        "study run: error: study 'mine' exists with a different spec: run.trainer: the code of "
        "'mine:train' changed since the study ran it (study has sha256:"), line
    assert sql(tmp_path / "s.db", "SELECT COUNT(*) FROM trial_user_attributes") == before
    # ...as is one of ours in its place.
    keras = run_cli(["run", "--spec", str(spec), "--storage", url, "--trainer", "keras"],
                    cwd=tmp_path)
    assert keras.returncode == 2 and "run.trainer: study was trained by 'mine:train', this " \
                                      "run asks 'keras'" in keras.stderr


@pytest.mark.slow
def test_bad_returns_are_one_line_and_the_study_resumes_once_fixed(tmp_path: Path) -> None:
    _module(tmp_path, """
        def train(config, data):
            return {"train_loss": 0.5}
    """)
    spec = _spec_file(tmp_path)
    url = f"sqlite:///{tmp_path / 's.db'}"
    bad = run_cli(["run", "--spec", str(spec), "--storage", url], cwd=tmp_path)
    assert bad.returncode == 1
    message = ("TrainerError: run.trainer 'mine:train', trial bs=16 lr=0.01 seed=0: its "
               "result has no 'val_loss' (required: train_loss, val_loss)")
    # The runner retries a failed cell at once, and stops after run.max_failures.
    assert bad.stderr.strip().splitlines()[-1] == (
        f"study run: error: stopped after 3 failed trials in a row; last error: {message}")
    errors = sql(tmp_path / "s.db", "SELECT value_json FROM trial_user_attributes "
                                    "WHERE key = 'error' ORDER BY trial_id")
    assert [json.loads(str(e)) for (e,) in errors] == [message] * 3
    assert trial_states(tmp_path / "s.db") == {"FAIL": 3}  # nothing left RUNNING
    # A new function is refused until the study is started anew; the study of a good one
    # then finishes every cell.
    _module(tmp_path, GOOD)
    fixed = run_cli(["run", "--spec", str(spec), "--storage", url, "--study-name", "fixed"],
                    cwd=tmp_path)
    assert fixed.returncode == 0, fixed.stderr


@pytest.mark.slow
def test_a_load_error_is_one_line_before_anything_is_written(tmp_path: Path) -> None:
    spec = _spec_file(tmp_path, "nowhere:train")
    url = f"sqlite:///{tmp_path / 's.db'}"
    out = run_cli(["run", "--spec", str(spec), "--storage", url], cwd=tmp_path)
    assert out.returncode == 2 and out.stderr.strip() == (
        "study run: error: run.trainer: 'nowhere:train' does not import: "
        "ModuleNotFoundError: No module named 'nowhere'")
    assert not (tmp_path / "s.db").exists()


def test_study_run_takes_a_function_from_python(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path / 's.db'}"
    r = study.run({"name": "py"}, trainer=constant, storage=url, overrides=SMALL_VALUES)
    rows = r.trials().to_dicts()
    assert len(rows) == 4 and {row["status"] for row in rows} == {"complete"}
    assert r.spec is not None and r.spec.run.trainer == "tests.test_user_trainer:constant"
    attrs = dict(sql(tmp_path / "s.db", "SELECT key, value_json FROM trial_user_attributes "
                                        "WHERE trial_id = 1"))
    assert json.loads(attrs["user.rows"]) == 200.0
    again = study.run({"name": "py"}, trainer=constant, storage=url, overrides=SMALL_VALUES)
    assert len(again.trials().rows) == 4
    with pytest.raises(SpecError, match=re.escape(
            "run.trainer: study was trained by 'tests.test_user_trainer:constant', this run "
            "asks 'auto'")):
        study.run({"name": "py"}, storage=url, overrides=SMALL_VALUES)


def test_a_notebook_function_trains_here_and_is_refused_to_workers(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)

    def local(config: TrialConfig, data: study.Dataset) -> dict[str, float]:
        return {"train_loss": config.learning_rate, "val_loss": 1.0}

    url = f"sqlite:///{tmp_path / 's.db'}"
    with pytest.raises(UsageError) as caught:
        study.run({"name": "nb"}, trainer=local, storage=url, overrides=SMALL_VALUES,
                  workers=2)
    assert str(caught.value).startswith(
        "trainer: 'tests.test_user_trainer:test_a_notebook_function_trains_here_and_is_refused"
        "_to_workers.<locals>.local' is defined in the script or notebook that called "
        "study.run, which worker processes cannot import; define it in an importable module, "
        "or use workers=1")
    assert list(tmp_path.iterdir()) == []
    r = study.run({"name": "nb"}, trainer=local, storage=url, overrides=SMALL_VALUES)
    assert len(r.trials().rows) == 4
    group = sql(tmp_path / "s.db", "SELECT DISTINCT value_json FROM trial_user_attributes "
                                   "WHERE key = 'group_size'")
    assert group == [("1",)]
    fused = study.run({"name": "fused"}, trainer=Fused, storage=url, overrides=SMALL_VALUES)
    assert len(fused.trials().rows) == 4


@pytest.mark.slow
def test_a_worker_of_a_numpy_trainer_never_imports_tensorflow(tmp_path: Path) -> None:
    probe = textwrap.dedent(f"""
        import sys
        from study.cli import main
        for args in (["run", "--spec", {str(ROOT / "examples" / "numpy_trainer.toml")!r},
                      "--storage", "sqlite:///{tmp_path / 's.db'}", "--set",
                      "search.batch_size=[64]", "--seeds", "0"],
                     ["report", "--storage", "sqlite:///{tmp_path / 's.db'}", "--out",
                      {str(tmp_path / 'report')!r}]):
            try:
                main(args)
            except SystemExit as e:
                assert not e.code, e.code
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras")
                       or m in ("study.trainers.keras", "study.trainers.population",
                                "study.models"))
        print("HEAVY", heavy)
    """)
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "HEAVY []"
    assert trial_states(tmp_path / "s.db") == {"COMPLETE": 3, "FAIL": 2}  # 2 diverged
    # The step curve the example returns is stored for steps-to-target, its weight norm
    # as a user attribute.
    keys = dict(sql(tmp_path / "s.db", "SELECT key, COUNT(*) FROM trial_user_attributes "
                                       "GROUP BY key"))
    assert keys["step_curve"] == 5 and keys["user.weight_norm"] == 5


# --------------------------------------------------------------------------- the numpy example


@pytest.mark.slow
def test_the_numpy_trainer_s_final_losses_are_distributed_as_keras_s() -> None:
    """The example trains the keras trainer's model (`model.hidden = []`) with the keras
    trainer's optimizer (`sgd`) on the same data: over 8 seeds per cell their final
    training losses agree within seed noise (Welch's t-test, as tests/test_population.py
    judges the population trainer)."""
    from scipy import stats

    from examples.numpy_trainer import train
    from study.trainers.keras import KerasTrainer

    spec = load_spec(str(ROOT / "examples" / "numpy_trainer.toml"),
                     ["data.n_train=256", "data.n_val=100", "train.epochs=6",
                      "run.trainer=keras"])
    data = make_dataset(spec.data)
    cells = [(16, 0.03), (64, 0.1)]
    configs = [TrialConfig.of(spec, bs, lr, seed) for bs, lr in cells for seed in range(8)]
    keras_losses = np.array([r.train_loss for r in KerasTrainer().train(configs, data)])
    ours = np.array([to_result("numpy", c, data, train(c, data), 0.0).train_loss
                     for c in configs])
    lines, failures = [], []
    for i, (bs, lr) in enumerate(cells):
        k, p = keras_losses[i * 8:(i + 1) * 8], ours[i * 8:(i + 1) * 8]
        pvalue = float(stats.ttest_ind(k, p, equal_var=False).pvalue)
        gap = abs(p.mean() - k.mean()) / k.mean()
        lines.append(f"bs={bs} lr={lr:g}: keras {k.mean():.4f}±{k.std(ddof=1):.4f}, "
                     f"numpy {p.mean():.4f}±{p.std(ddof=1):.4f}, Welch p={pvalue:.3f}, "
                     f"means {gap:.1%} apart")
        if not (pvalue > 0.01 and gap < 0.10):
            failures.append(lines[-1])
    print("\nfinal training loss over 8 seeds, 6 epochs, 256 rows (sgd, linear):\n"
          + "\n".join(lines))
    assert not failures, "\n".join(lines)


def test_trial_config_is_exported_and_read_only() -> None:
    import dataclasses

    assert study.TrialConfig is TrialConfig
    with pytest.raises(dataclasses.FrozenInstanceError):
        _config().batch_size = 8  # type: ignore[misc]
