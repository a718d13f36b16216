"""Guards on a builder's model (study/models.py, `check_output`), checked before anything
is written: a compiled model, or a last layer whose activation does not fit the loss, is
one line naming the layer and the fix. A sigmoid (binary) or softmax (multi-class)
output passes, and both trainers take it as probabilities: the same losses as each other
and as its twin with logit outputs. The built-in specs and the examples pass.
"""

from __future__ import annotations

import contextlib
import io
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

from study import cli
from study.errors import SpecError
from study.models import build_model, check_builder, check_output
from study.spec import ModelSpec, TrainSpec, load_spec
from tests.helpers import ROOT


def _train(loss: str) -> TrainSpec:
    return TrainSpec(loss=loss, optimizer="sgd")


def _check(name: str, outputs: int, loss: str | None) -> str | None:
    """The identity `check_builder` returns for `tests.builders:NAME`, or raises."""
    return check_builder(ModelSpec(builder=f"tests.builders:{name}"), (4,), outputs,
                         None if loss is None else _train(loss))


NAMED = "model.builder: 'tests.builders:{}': its last layer "
REFUSED = [
    # (builder, outputs, loss, the message's end)
    ("compiled", 1, "mse", "'tests.builders:compiled' returned a compiled model: return it "
     "uncompiled; the study compiles it with train.optimizer = 'sgd' at each trial's learning "
     "rate and train.loss = 'mse', so the optimizer and loss it was compiled with would be "
     "ignored"),
    ("softmax_output", 1, "cross_entropy", "(Dense) is a softmax over one unit, which is 1.0 "
     "whatever the input (a binary task trains to chance): drop the activation (one logit) or "
     "use activation='sigmoid'"),
    ("softmax_output", 1, None, "is a softmax over one unit"),
    ("relu_output", 1, "mse", "(Dense) has activation 'relu'; a regression output "
     "(train.loss = 'mse') takes no activation: drop it"),
    ("relu_output", 1, None, "(Dense) has activation 'relu'; an output is logits (no "
     "activation), or a sigmoid (binary) or softmax (multi-class) probability: drop it"),
    ("sigmoid_output", 1, "mse", "(Dense) has activation 'sigmoid'; a regression output "
     "(train.loss = 'mse') takes no activation: drop it"),
    ("softmax_output", 3, "mse", "has activation 'softmax'; a regression output"),
    ("sigmoid_output", 3, "sparse_cross_entropy", "(Dense) has activation 'sigmoid'; a "
     "multi-class output (train.loss = 'sparse_cross_entropy') is one logit per class (no "
     "activation) or a softmax over them: drop it"),
    ("relu_output", 1, "cross_entropy", "has activation 'relu'; a binary output (train.loss = "
     "'cross_entropy') is a logit (no activation) or a sigmoid probability: drop it"),
    ("softmax_output", 2, "cross_entropy", "has activation 'softmax'; a binary output"),
    ("custom_activation", 1, "mse", "has activation a custom function; a regression output"),
    ("softmax_layer_output", 3, "sparse_cross_entropy", "(Softmax) is a softmax the trainers "
     "do not see, so they would take its probabilities for logits: end the model itself in a "
     "layer with activation='softmax', or drop the softmax"),
    ("nested_sigmoid", 1, "cross_entropy", "(Dense) inside 'head' is a sigmoid the trainers "
     "do not see"),
]


@pytest.mark.filterwarnings("ignore:The object being serialized includes a `lambda`")
@pytest.mark.parametrize(("name", "outputs", "loss", "end"), REFUSED,
                         ids=[f"{r[0]}-{r[1]}-{r[2]}" for r in REFUSED])
def test_a_model_that_does_not_fit_its_loss_is_refused_naming_the_layer_and_the_fix(
        name: str, outputs: int, loss: str | None, end: str) -> None:
    with pytest.raises(SpecError) as info:
        _check(name, outputs, loss)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"model.builder: 'tests.builders:{name}'"), message
    if name != "compiled":
        assert message.startswith(NAMED.format(name)), message
    assert end in message, message


ACCEPTED = [
    ("mixed_activations", 1, "mse"),  # linear out, whatever comes before
    ("mixed_activations", 3, "sparse_cross_entropy"),
    ("sigmoid_output", 1, "cross_entropy"),
    ("sigmoid_output", 1, None),
    ("softmax_output", 3, "sparse_cross_entropy"),
    ("softmax_output", 2, "sparse_cross_entropy"),
    ("softmax_output", 3, None),
    ("small_cnn", 1, "mse"),
    ("residual", 1, "cross_entropy"),
    ("batchnorm", 1, "mse"),  # a BatchNormalization then a linear Dense
]


@pytest.mark.parametrize(("name", "outputs", "loss"), ACCEPTED,
                         ids=[f"{a[0]}-{a[1]}-{a[2]}" for a in ACCEPTED])
def test_logits_and_probabilities_that_fit_the_loss_pass(name: str, outputs: int,
                                                         loss: str | None) -> None:
    shape = (4, 4, 1) if name == "small_cnn" else (4,)
    identity = check_builder(ModelSpec(builder=f"tests.builders:{name}"), shape, outputs,
                             None if loss is None else _train(loss))
    assert identity is not None and identity.startswith('{"architecture":"sha256:')


def test_every_built_in_spec_and_example_passes_the_guards() -> None:
    """The shorthand ends in a linear Dense, so no built-in spec is refused; the examples'
    builders end in logits."""
    from study.api import check_model, load_data, resolve_spec
    from study.trainers.base import output_width

    names = sorted(p.name[:-5] for p in resources.files("study.specs").iterdir()
                   if p.name.endswith(".toml"))
    assert "article" in names and "digits" in names
    for name in [*names, str(ROOT / "examples/digits_mlp.toml"),
                 str(ROOT / "examples/digits_cnn.toml")]:
        spec = resolve_spec(name)
        data = load_data(spec)
        width = output_width(spec.train, data)
        model = build_model(spec.model, data.input_shape, width)
        check_output(model, name, width, spec.train)
        identity = check_model(spec, data)
        assert (identity is None) == (not spec.model.builder), name


# --------------------------------------------------------------------------- the CLI


def _main(args: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        rc = cli.main(args)
    return rc, out.getvalue(), err.getvalue()


TINY = ["--set", "data.n_train=32", "--set", "data.n_val=8", "--set", "search.batch_size=[16]",
        "--set", "search.learning_rate=[0.01]", "--epochs", "1", "--seeds", "0",
        "--trainer", "keras"]
BINARY = ["--set", "data.kind=classification", "--set", "train.loss=cross_entropy"]

CLI = [
    ("compiled", [], "returned a compiled model: return it uncompiled"),
    ("relu_output", [], "its last layer 'dense"),
    ("softmax_output", BINARY, "is a softmax over one unit"),
]


@pytest.mark.parametrize(("name", "extra", "part"), CLI, ids=[c[0] for c in CLI])
def test_the_cli_refuses_a_bad_model_in_one_line_exit_2_and_no_database(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, extra: list[str],
        part: str) -> None:
    monkeypatch.chdir(tmp_path)
    rc, out, err = _main(["run", *TINY, *extra, "--set", f"model.builder=tests.builders:{name}",
                          "--storage", "sqlite:///s.db"])
    assert rc == 2, err
    assert err.startswith(f"study run: error: model.builder: 'tests.builders:{name}'"), err
    assert err.count("\n") == 1 and part in err, err
    assert "Traceback" not in out + err
    assert list(tmp_path.iterdir()) == []


def test_the_cli_refuses_a_sigmoid_on_a_regression_output(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    monkeypatch.chdir(tmp_path)
    rc, _, err = _main(["run", *TINY, "--set", "model.builder=tests.builders:sigmoid_output",
                        "--storage", "sqlite:///s.db"])
    assert rc == 2 and "has activation 'sigmoid'; a regression output" in err, err


# --------------------------------------------------------------------------- probabilities


def test_probability_outputs_train_as_their_logit_twins_on_both_trainers() -> None:
    """A sigmoid (binary) and a softmax (multi-class) output pass the guards, and are
    trained as probabilities: the keras trainer, the population trainer and the keras
    trainer on the same model with logit outputs (same initial weights: the same layers
    in the same order) give the same losses."""
    from study.data import make_dataset
    from study.trainers import TrialConfig
    from study.trainers.base import output_width
    from study.trainers.keras import fit_trial
    from study.trainers.population import train_population, unsupported

    small = ["data.n_train=64", "data.n_val=32", "search.batch_size=[16]", "train.epochs=2",
             "data.kind=classification"]
    for probabilities, logits, extra in (
            ("sigmoid_output", "sigmoid_logits", ["train.loss=cross_entropy"]),
            ("softmax_output", "softmax_logits", ["data.n_classes=3",
                                                  "train.loss=sparse_cross_entropy"])):
        spec, twin = (load_spec("article", [*small, *extra, f"model.builder='tests.builders:{n}'"])
                      for n in (probabilities, logits))
        data = make_dataset(spec.data)
        width = output_width(spec.train, data)
        check_output(build_model(spec.model, data.input_shape, width), probabilities, width,
                     spec.train)
        assert unsupported(spec, data) is None  # the population trainer fuses it
        config = TrialConfig.of(spec, 16, 0.05, 3)
        keras_run = fit_trial(0, config, data, shuffle=False).result
        (population,) = train_population([config], data, shuffle=False)
        logit_run = fit_trial(0, TrialConfig.of(twin, 16, 0.05, 3), data, shuffle=False).result
        assert keras_run.status == population.status == logit_run.status == "complete"
        curves = [keras_run.train_curve + keras_run.val_curve,
                  population.train_curve + population.val_curve,
                  logit_run.train_curve + logit_run.val_curve]
        assert len(curves[0]) == 4
        np.testing.assert_allclose(curves[1], curves[0], rtol=1e-5, err_msg=probabilities)
        np.testing.assert_allclose(curves[2], curves[0], rtol=1e-5, err_msg=probabilities)
        # Chance would be log(2) or log(3) at every epoch: these models learn.
        assert curves[0][1] < curves[0][0]
