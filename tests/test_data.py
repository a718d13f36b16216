from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from study.data import LABEL_NOISE, check_spec, fingerprint, from_arrays, make_dataset
from study.errors import DataError, SpecError
from study.spec import DataSpec, Spec, load_spec


def test_linear_is_the_articles_data_bit_for_bit() -> None:
    # The article's own calls, in its order.
    np.random.seed(0)
    x = np.random.rand(1000, 10)
    y = np.dot(x, np.random.rand(10, 1)) + np.random.rand(1000, 1)
    data = make_dataset(DataSpec())
    np.testing.assert_array_equal(data.x_train, x.astype(np.float32))
    np.testing.assert_array_equal(data.y_train, y.astype(np.float32))
    assert data.task == "regression"


def test_validation_shares_weights_but_not_samples() -> None:
    data = make_dataset(DataSpec())
    assert data.x_val.shape == (1000, 10) and data.y_val.shape == (1000, 1)
    assert not np.allclose(data.x_val, data.x_train)
    # Same true weights: least squares on either set recovers the same w (+ noise mean).
    def fit(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        a = np.hstack([x, np.ones((len(x), 1))])
        return np.linalg.lstsq(a, y, rcond=None)[0][:-1, 0]
    np.testing.assert_allclose(fit(data.x_train, data.y_train), fit(data.x_val, data.y_val),
                               atol=0.1)


def test_sizes_follow_the_spec() -> None:
    data = make_dataset(DataSpec(n_train=50, n_val=20, n_features=3))
    assert data.x_train.shape == (50, 3) and data.x_val.shape == (20, 3) and data.n_train == 50


def test_classification_is_seeded_balanced_and_noisy_as_documented() -> None:
    spec = DataSpec(kind="classification", n_train=4000, n_val=3000)
    data = make_dataset(spec)
    assert data.task == "binary"
    assert data.x_train.shape == (4000, 10) and data.y_train.shape == (4000, 1)
    assert data.x_val.shape == (3000, 10) and data.y_val.shape == (3000, 1)
    assert set(np.unique(data.y_train)) == {0.0, 1.0}
    assert 0.4 < data.y_train.mean() < 0.6  # the XOR of two half-spaces splits evenly
    again = make_dataset(spec)
    np.testing.assert_array_equal(again.x_train, data.x_train)
    np.testing.assert_array_equal(again.y_val, data.y_val)
    assert not np.allclose(data.x_val[:100], data.x_train[:100])
    other = make_dataset(DataSpec(kind="classification", n_train=4000, n_val=3000, val_seed=7))
    np.testing.assert_array_equal(other.x_train, data.x_train)  # the training set stays
    assert not np.array_equal(other.x_val, data.x_val)


def test_classification_labels_follow_the_rule_but_for_the_flips() -> None:
    spec = DataSpec(kind="classification", n_train=5000, n_val=10)
    data = make_dataset(spec)
    rng = np.random.RandomState(spec.seed)  # the generator's own draws: u, then v
    u, v = rng.standard_normal(10), rng.standard_normal(10)
    x = data.x_train.astype(np.float64)
    rule = ((x @ u) * (x @ v) > 0).astype(np.float32)
    flipped = float(np.mean(rule != data.y_train[:, 0]))
    assert abs(flipped - LABEL_NOISE) < 0.015
    # No linear model separates it: least squares on the labels explains almost nothing.
    a = np.c_[x, np.ones(len(x))]
    fit = a @ np.linalg.lstsq(a, data.y_train[:, 0], rcond=None)[0]
    assert np.mean((fit > 0.5) == (data.y_train[:, 0] > 0.5)) < 0.6


def test_multiclass_is_seeded_balanced_and_noisy_as_documented() -> None:
    spec = DataSpec(kind="classification", n_classes=4, n_train=8000, n_val=3000)
    data = make_dataset(spec)
    assert data.task == "multiclass" and data.n_classes == 4
    assert data.y_train.shape == (8000, 1) and data.y_train.dtype == np.float32
    counts = np.bincount(data.y_train[:, 0].astype(int))
    assert len(counts) == 4 and counts.min() > 0.2 * 8000  # about a quarter each
    again = make_dataset(spec)
    np.testing.assert_array_equal(again.x_train, data.x_train)
    np.testing.assert_array_equal(again.y_val, data.y_val)
    other = make_dataset(DataSpec(kind="classification", n_classes=4, n_train=8000, n_val=3000,
                                  val_seed=7))
    np.testing.assert_array_equal(other.y_train, data.y_train)  # the training set stays
    assert not np.array_equal(other.x_val, data.x_val)
    # The generator's own draws: the projections first, unit columns; the label is the one
    # of largest magnitude, but for LABEL_NOISE of the rows, moved to another class.
    u = np.random.RandomState(spec.seed).standard_normal((10, 4))
    u /= np.linalg.norm(u, axis=0)
    for x, y in ((data.x_train, data.y_train), (data.x_val, data.y_val)):
        rule = np.argmax(np.abs(x.astype(np.float64) @ u), axis=1)
        assert abs(float(np.mean(rule != y[:, 0])) - LABEL_NOISE) < 0.015
    # No linear model fits it: one least-squares fit per class (one-vs-rest) gets
    # little more than the largest class right.
    a = np.c_[data.x_train, np.ones(8000)]
    onehot = np.eye(4)[data.y_train[:, 0].astype(int)]
    fit = a @ np.linalg.lstsq(a, onehot, rcond=None)[0]
    assert np.mean(np.argmax(fit, axis=1) == data.y_train[:, 0]) < 0.35


def test_two_classes_are_the_binary_set_bit_for_bit() -> None:
    binary = make_dataset(DataSpec(kind="classification"))
    two = make_dataset(DataSpec(kind="classification", n_classes=2))
    for field in ("x_train", "y_train", "x_val", "y_val"):
        np.testing.assert_array_equal(getattr(two, field), getattr(binary, field))
    assert binary.n_classes == 2


# --------------------------------------------------------------------------- sources


def write_csv(path: Path, header: str, rows: list[list[float]]) -> None:
    path.write_text(header + "\n" + "".join(",".join(f"{v:g}" for v in r) + "\n" for r in rows))


def regression_rows(n: int = 40) -> list[list[float]]:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(n, 3)).round(3)
    y = x @ [1.0, -2.0, 0.5]
    return [[*r, t, 2 * t] for r, t in zip(x.tolist(), y.tolist(), strict=True)]


def test_csv_reads_target_features_and_several_outputs(tmp_path: Path) -> None:
    rows = regression_rows()
    write_csv(tmp_path / "d.csv", "a,b,c,y,z", rows)
    path = str(tmp_path / "d.csv")
    one = make_dataset(DataSpec(kind="csv", path=path, target=("y",), val_fraction=0.25))
    # The inputs are every other column: a, b, c and z.
    assert one.x_train.shape == (30, 4) and one.x_val.shape == (10, 4)
    assert one.y_train.shape == (30, 1) and one.task == "regression"
    # Every row lands on one side, with its own target.
    got = np.r_[np.c_[one.x_train, one.y_train], np.c_[one.x_val, one.y_val]]
    want = np.asarray(rows, np.float32)[:, [0, 1, 2, 4, 3]]
    assert sorted(map(tuple, got.tolist())) == sorted(map(tuple, want.tolist()))
    two = make_dataset(DataSpec(kind="csv", path=path, target=("y", "z"), features=("c", "a"),
                                val_fraction=0.25))
    assert two.x_train.shape == (30, 2) and two.n_outputs == 2
    np.testing.assert_allclose(two.y_train[:, 1], 2 * two.y_train[:, 0], rtol=1e-6)


def test_csv_of_0_1_targets_is_binary_and_its_split_is_stratified(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(100, 2)).round(3)
    y = (np.arange(100) < 20).astype(int)  # 20 ones, 80 zeros
    write_csv(tmp_path / "b.csv", "u,v,label", [[*r, t] for r, t in zip(x.tolist(), y, strict=True)])
    data = make_dataset(DataSpec(kind="csv", path=str(tmp_path / "b.csv"), target=("label",),
                                 val_fraction=0.25))
    assert data.task == "binary"
    assert (data.y_val == 1).sum() == 5 and (data.y_train == 1).sum() == 15  # 25% of each class


def test_npz_with_and_without_a_validation_set(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(50, 4, 4, 1)), rng.normal(size=50)
    np.savez(tmp_path / "own.npz", x_train=x, y_train=y, x_val=x[:7], y_val=y[:7])
    own = make_dataset(DataSpec(kind="npz", path=str(tmp_path / "own.npz")))
    assert own.x_train.shape == (50, 4, 4, 1) and own.input_shape == (4, 4, 1)
    assert own.n_features == 16 and own.flat().x_train.shape == (50, 16)
    np.testing.assert_array_equal(own.x_val, x[:7].astype(np.float32))
    np.savez(tmp_path / "bare.npz", x_train=x, y_train=y)
    bare = make_dataset(DataSpec(kind="npz", path=str(tmp_path / "bare.npz"), val_fraction=0.2))
    assert bare.n_train == 40 and len(bare.x_val) == 10


def test_python_loader_tuple_or_mapping_from_the_current_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "my_loader_mod.py").write_text(
        "import numpy as np\n"
        "def pair():\n"
        "    return np.arange(20.0).reshape(10, 2), np.arange(10.0)\n"
        "def table():\n"
        "    x, y = pair()\n"
        "    return {'x_train': x, 'y_train': y, 'x_val': x[:3], 'y_val': y[:3]}\n")
    monkeypatch.chdir(tmp_path)
    pair = make_dataset(DataSpec(kind="python", loader="my_loader_mod:pair", val_fraction=0.3))
    assert pair.n_train == 7 and len(pair.x_val) == 3
    table = make_dataset(DataSpec(kind="python", loader="my_loader_mod:table"))
    assert table.n_train == 10 and table.x_val.tolist() == [[0, 1], [2, 3], [4, 5]]
    assert str(tmp_path) not in sys.path  # the directory was on the path only for the import


def test_standardize_uses_the_training_rows_statistics_only(tmp_path: Path) -> None:
    rows = regression_rows()
    write_csv(tmp_path / "d.csv", "a,b,c,y,z", rows)
    spec = DataSpec(kind="csv", path=str(tmp_path / "d.csv"), target=("y",), features=("a", "b", "c"),
                    val_fraction=0.25)
    raw, scaled = make_dataset(spec), make_dataset(dataclasses.replace(spec, standardize=True))
    np.testing.assert_allclose(scaled.x_train.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(scaled.x_train.std(axis=0), 1, atol=1e-5)
    mean, std = raw.x_train.mean(axis=0), raw.x_train.std(axis=0)
    np.testing.assert_allclose(scaled.x_val, (raw.x_val - mean) / std, atol=1e-5)
    np.testing.assert_array_equal(scaled.y_train, raw.y_train)  # targets are left alone


def test_bundled_diabetes_and_digits_load_offline() -> None:
    diabetes = make_dataset(DataSpec(kind="diabetes", val_fraction=0.2))
    assert diabetes.task == "regression"
    assert diabetes.n_train + len(diabetes.x_val) == 442 and diabetes.input_shape == (10,)
    digits = make_dataset(DataSpec(kind="digits", val_fraction=0.2))
    assert digits.task == "multiclass" and digits.input_shape == (8, 8, 1)
    assert digits.n_train + len(digits.x_val) == 1797
    assert sorted(np.unique(digits.y_val).tolist()) == list(range(10))  # stratified


# --------------------------------------------------------------------------- fingerprints


def test_fingerprint_is_stable_and_changes_with_one_value(tmp_path: Path) -> None:
    x, y = np.arange(24.0).reshape(8, 3), np.arange(8.0)
    np.savez(tmp_path / "a.npz", x_train=x, y_train=y, x_val=x, y_val=y)
    spec = DataSpec(kind="npz", path=str(tmp_path / "a.npz"))
    first = make_dataset(spec).fingerprint
    assert first.startswith("sha256:") and len(first) == 7 + 64
    assert make_dataset(spec).fingerprint == first  # same file, same fingerprint
    arrays = {"x_train": x.astype(np.float32), "y_train": y.astype(np.float32)[:, None],
              "x_val": x.astype(np.float32), "y_val": y.astype(np.float32)[:, None]}
    assert fingerprint(arrays) == first  # the documented recipe, computed here
    x2 = x.copy()
    x2[5, 1] += 1.0
    np.savez(tmp_path / "a.npz", x_train=x2, y_train=y, x_val=x, y_val=y)
    assert make_dataset(spec).fingerprint != first
    # Same bytes, another shape: another fingerprint.
    assert fingerprint({**arrays, "x_train": arrays["x_train"].reshape(8, 3, 1)}) != first
    assert make_dataset(DataSpec()).fingerprint == make_dataset(DataSpec()).fingerprint
    assert make_dataset(DataSpec(seed=1)).fingerprint != make_dataset(DataSpec()).fingerprint


# --------------------------------------------------------------------------- bad data


def bad(spec: DataSpec, message: str) -> None:
    with pytest.raises(DataError, match=message):
        make_dataset(spec)


def test_bad_files_name_the_file_and_what_is_wrong(tmp_path: Path) -> None:
    bad(DataSpec(kind="csv", path=str(tmp_path / "no.csv"), target=("y",)),
        r"^data\.path: '.*no\.csv': file not found")
    bad(DataSpec(kind="npz", path=str(tmp_path)), r"is a directory, not a \.npz file")
    (tmp_path / "text.npz").write_text("hello")
    bad(DataSpec(kind="npz", path=str(tmp_path / "text.npz")), r"text\.npz' is not an npz file")
    np.savez(tmp_path / "obj.npz", x_train=np.array([{"a": 1}] * 3, dtype=object), y_train=np.ones(3))
    bad(DataSpec(kind="npz", path=str(tmp_path / "obj.npz")), r"holds Python objects \(pickled\)")
    np.savez(tmp_path / "nox.npz", inputs=np.ones((3, 2)), y_train=np.ones(3))
    bad(DataSpec(kind="npz", path=str(tmp_path / "nox.npz")),
        r"has no array 'x_train' \(arrays: inputs, y_train\)")
    (tmp_path / "bin.csv").write_bytes(b"\xff\xfe\x00garbage")
    bad(DataSpec(kind="csv", path=str(tmp_path / "bin.csv"), target=("y",)), r"is not a CSV file")
    write_csv(tmp_path / "d.csv", "a,b,y", [[1, 2, 3], [4, 5, 6]])
    bad(DataSpec(kind="csv", path=str(tmp_path / "d.csv"), target=("label",)),
        r"^data\.target: no column 'label' in .* \(columns: a, b, y\)")
    (tmp_path / "nan.csv").write_text("a,b,y\n1,2,3\n4,nan,6\n")
    bad(DataSpec(kind="csv", path=str(tmp_path / "nan.csv"), target=("y",)),
        r"nan\.csv' line 3, column 'b': 'nan' is not a finite number")
    (tmp_path / "word.csv").write_text("a,b,y\n1,2,3\n4,five,6\n")
    bad(DataSpec(kind="csv", path=str(tmp_path / "word.csv"), target=("y",)),
        r"word\.csv' line 3, column 'b': 'five' is not a number")
    (tmp_path / "nohead.csv").write_text("1,2,3\n4,5,6\n")
    bad(DataSpec(kind="csv", path=str(tmp_path / "nohead.csv"), target=("y",)),
        r"the first line must be a header of column names")


def test_bad_arrays_name_the_array_and_where(tmp_path: Path) -> None:
    def npz(name: str, **arrays: Any) -> DataSpec:
        np.savez(tmp_path / name, **arrays)
        return DataSpec(kind="npz", path=str(tmp_path / name), val_fraction=0.5)

    x = np.ones((4, 2))
    bad(npz("len.npz", x_train=x, y_train=np.ones(3)), r"x_train has 4 rows but y_train has 3")
    inf = x.copy()
    inf[2, 1] = np.inf
    bad(npz("inf.npz", x_train=inf, y_train=np.ones(4)), r"x_train\[2, 1\] is inf")
    bad(npz("empty.npz", x_train=np.ones((0, 2)), y_train=np.ones(0)), r"the training set is empty")
    bad(npz("text.npz", x_train=np.array([["a", "b"]] * 4), y_train=np.ones(4)),
        r"x_train holds <U1 values; expected numbers")
    one = DataSpec(kind="npz", path=str(tmp_path / "one.npz"), val_fraction=0.5, task="binary")
    np.savez(tmp_path / "one.npz", x_train=x, y_train=np.ones(4))
    bad(one, r"y_train has a single class \(1\)")
    tiny = npz("tiny.npz", x_train=x, y_train=np.arange(4.0))
    bad(dataclasses.replace(tiny, val_fraction=0.1),
        r"^data\.val_fraction: 0\.1 of 4 rows leaves the validation set empty")
    bad(DataSpec(kind="npz", path=str(tmp_path / "tiny.npz")),
        r"^data\.val_fraction: npz file .* has no validation set; set data\.val_fraction")


def test_a_hostile_loader_is_one_line_naming_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "broken_syntax_mod.py").write_text("def f(:\n")
    (tmp_path / "exits_mod.py").write_text("import sys\nsys.exit(3)\n")
    (tmp_path / "odd_mod.py").write_text(
        "import numpy as np\n"
        "def boom():\n    raise RuntimeError('disk on fire\\nsecond line')\n"
        "def three():\n    return 1, 2, 3\n"
        "def objects():\n    return np.array([object()] * 3), np.ones(3)\n"
        "def half():\n"
        "    return {'x_train': np.ones((3, 1)), 'y_train': np.ones(3), 'x_val': np.ones((1, 1))}\n"
        "not_callable = 5\n")
    monkeypatch.chdir(tmp_path)

    def loader(text: str, message: str) -> None:
        bad(DataSpec(kind="python", loader=text, val_fraction=0.5), message)

    loader("no_such_mod_xyz:f", r"^data\.loader: 'no_such_mod_xyz:f' does not import: "
           r"ModuleNotFoundError")
    loader("broken_syntax_mod:f", r"does not import: SyntaxError")
    loader("exits_mod:f", r"does not import: SystemExit: 3")
    loader("odd_mod:missing", r"module 'odd_mod' has no 'missing'")
    loader("odd_mod:not_callable", r"'not_callable' is not a function")
    loader("odd_mod:boom", r"^data\.loader: 'odd_mod:boom' raised RuntimeError: disk on fire$")
    loader("odd_mod:three", r"returned a tuple of 3; expected a tuple \(x_train, y_train\)")
    loader("odd_mod:objects", r"x_train holds Python objects; expected numbers")
    loader("odd_mod:half", r"returned only one of 'x_val' and 'y_val'")


def test_arrays_in_memory_go_through_the_same_checks_as_a_file(tmp_path: Path) -> None:
    x, y = np.arange(20.0).reshape(10, 2), np.arange(10.0)
    np.savez(tmp_path / "a.npz", x_train=x, y_train=y)
    spec = DataSpec(kind="npz", path=str(tmp_path / "a.npz"), val_fraction=0.3)
    assert from_arrays(spec, x, y).fingerprint == make_dataset(spec).fingerprint
    assert from_arrays(spec, x.tolist(), y.tolist()).fingerprint == make_dataset(spec).fingerprint
    with pytest.raises(DataError, match=r"^arrays: x_train has 10 rows but y_train has 9$"):
        from_arrays(spec, x, y[:9], origin="arrays")
    with pytest.raises(DataError, match=r"only one of x_val and y_val"):
        from_arrays(spec, x, y, x_val=x)


# --------------------------------------------------------------------------- the spec meets the data


def _own(kind: str, path: Path, *extra: str) -> Spec:
    sets = [f"data.kind={kind}", f"data.path='{path}'", "data.val_fraction=0.25",
            "search.batch_size=[4]", *extra]
    return load_spec("article", [*sets, "data.target=y"] if kind == "csv" else sets)


@pytest.mark.parametrize(("labels", "task", "loss", "objective"), [
    ([0.5 * i for i in range(40)], "regression", "mse", "val_loss"),
    ([i % 2 for i in range(40)], "binary", "cross_entropy", "val_error"),
])
def test_a_csv_with_no_loss_named_gets_its_tasks_loss_and_objective(
        tmp_path: Path, labels: list[float], task: str, loss: str, objective: str) -> None:
    write_csv(tmp_path / "own.csv", "a,y", [[i, v] for i, v in enumerate(labels)])
    spec = _own("csv", tmp_path / "own.csv")
    assert (spec.train.loss, spec.train.objective) == ("auto", "auto")
    data = make_dataset(spec.data)
    resolved = check_spec(spec, data)
    assert data.task == task
    assert (resolved.train.loss, resolved.train.objective) == (loss, objective)


def test_integer_labels_in_an_npz_are_multiclass_with_softmax_cross_entropy(tmp_path: Path) -> None:
    np.savez(tmp_path / "three.npz", x_train=np.arange(60.0).reshape(30, 2),
             y_train=np.arange(30) % 3)
    spec = _own("npz", tmp_path / "three.npz")
    resolved = check_spec(spec, make_dataset(spec.data))
    assert (resolved.train.loss, resolved.train.objective) == ("sparse_cross_entropy",
                                                                "val_error")


def test_the_article_keeps_its_loss_and_training_loss_objective() -> None:
    spec = load_spec("article")
    assert check_spec(spec, make_dataset(spec.data)) == spec
    assert (spec.train.loss, spec.train.objective) == ("mse", "train_loss")


def test_a_named_loss_that_does_not_fit_the_data_is_refused(tmp_path: Path) -> None:
    write_csv(tmp_path / "binary.csv", "a,y", [[i, i % 2] for i in range(40)])
    spec = _own("csv", tmp_path / "binary.csv", "train.loss=mse")
    with pytest.raises(SpecError, match=r"^train\.loss: 'mse' does not fit csv file '.*binary\.csv' "
                       r"\(use 'cross_entropy', or leave train\.loss out to follow the data\)$"):
        check_spec(spec, make_dataset(spec.data))


def test_a_csv_of_text_labels_says_to_encode_them(tmp_path: Path) -> None:
    (tmp_path / "pets.csv").write_text("a,y\n1,0\n2,dog\n3,cat\n")
    bad(DataSpec(kind="csv", path=str(tmp_path / "pets.csv"), target=("y",), task="multiclass"),
        r"^data\.target: column 'y' of '.*pets\.csv' holds text \('dog', line 3\); labels must be "
        r"numbers: encode the classes as 0, 1, 2, \.\.\. \(0/1 for a binary target\) in the "
        r"file, or read it with a data\.loader that does$")
