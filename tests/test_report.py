"""`study report`: the files it writes, what they say, and what it stores for optuna-dashboard."""

from __future__ import annotations

import dataclasses
import html
import json
import math
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import optuna
import pytest
from scipy import stats

from study import report
from study.errors import StorageUsageError
from study.spec import builtin_names, from_table, load_spec
from tests.helpers import ROOT, run_cli, sql
from tests.studies import make_study, spec

OURS = {"article.html", "scaling.html", "optimum.html", "heatmap_objective.html",
        "heatmap_val_loss.html", "generalization.html", "heatmap_gap.html", "noise.html",
        "critical.html", "sharpness.html"}
FIGURES = {*OURS, "contour.html",
           "slice.html", "history.html", "importances.html", "intermediate.html", "parallel.html",
           "rank.html"}


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path, report.Report]:
    root = tmp_path_factory.mktemp("report")
    url = f"sqlite:///{root / 'study.db'}"
    make_study(url)
    return url, root / "dashboards", report.write_report(url, None, root / "dashboards")


def _study(url: str, name: str = "article") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=url)


def test_every_figure_is_written_with_plotly_js_once(
        written: tuple[str, Path, report.Report]) -> None:
    from plotly.offline import get_plotlyjs

    _, out, result = written
    names = {p.name for p in out.iterdir()}
    assert names == FIGURES | {"index.html", "plotly.min.js"}
    assert result.skipped == {} and result.study == "article" and result.trials == 18
    assert (out / "plotly.min.js").read_text() == get_plotlyjs()
    for page in out.glob("*.html"):
        text = page.read_text()
        # plotly.js by relative path, once; nothing from a CDN or anywhere else.
        assert re.findall(r"<script[^>]*\bsrc=\"([^\"]+)\"", text) == ["plotly.min.js"], page
        assert not re.search(r"https?://", text), page
        assert page.stat().st_size < 200_000, page  # not a copy of plotly.js per page
        assert "Plotly.newPlot" in text, page


def test_index_says_what_the_study_is(written: tuple[str, Path, report.Report]) -> None:
    url, out, _ = written
    text = (out / "index.html").read_text()
    db = Path(url.removeprefix("sqlite:///"))
    (revision,) = sql(db, "SELECT value_json FROM study_user_attributes WHERE key='git_revision'")[0]
    assert "<h1>Study article</h1>" in text
    # The stored spec, as a TOML spec file that reads back to the spec the study ran.
    (stored,) = re.findall(r"<h2>Spec</h2>\n<pre>(.*?)</pre>", text, re.S)
    assert from_table(tomllib.loads(html.unescape(stored))) == spec()
    assert "batch_size = [16, 64, 256]" in text and "epochs = 4" in text
    assert json.loads(str(revision)) in text  # provenance
    assert "optuna-dashboard" in text and optuna.__version__ in text
    assert "18 trials. By state: 11 COMPLETE, 7 FAIL." in text
    assert "11 complete, 7 diverged" in text
    # The grid table: a diverged cell is a word with its own class, the partly diverged one
    # keeps its mean and says how many diverged.
    assert text.count('<td class="diverged">diverged</td>') == 3
    assert "0.9412 (1 div)" in text
    # The best cell, found by hand in the database: the lowest mean over cells where no
    # run diverged. With two seeds, a percentile bootstrap of the mean spans exactly the
    # two runs (a quarter of the resamples repeat each one).
    cells = _cells(db)
    (bs, lr), values = min(((k, v) for k, (v, diverged) in cells.items() if not diverged),
                           key=lambda kv: float(np.mean(kv[1])))
    assert (bs, lr) == (16, 0.01) and len(values) == 2
    mean, low, high = float(np.mean(values)), min(values), max(values)
    assert (f"batch_size=16, learning_rate=0.01: final training loss {mean:.4g} (mean of 2; "
            f"95% percentile bootstrap over seeds {low:.4g} .. {high:.4g})") in text
    assert f'<td class="best">{mean:.4g} [{low:.4g}, {high:.4g}]</td>' in text
    assert "Each cell: the mean over seeds [95% percentile bootstrap over seeds]" in text
    links = set(re.findall(r'<a href="([^"]+)">', text))
    assert links == FIGURES
    assert 'class="skipped"' not in text


def _cells(db: Path) -> dict[tuple[int, float], tuple[list[float], int]]:
    """(batch size, learning rate) -> (completed runs' objective values, diverged runs), read
    from Optuna's tables with SQL."""
    out: dict[tuple[int, float], tuple[list[float], int]] = {}
    for trial_id, state in sql(db, "SELECT trial_id, state FROM trials"):
        params = dict(sql(db, "SELECT param_name, param_value FROM trial_params "
                              "WHERE trial_id = ?", (trial_id,)))
        key = (int(params["batch_size"]), float(params["learning_rate"]))  # type: ignore[arg-type]
        values, diverged = out.setdefault(key, ([], 0))
        if state == "COMPLETE":
            (value,) = sql(db, "SELECT value FROM trial_values WHERE trial_id = ?",
                           (trial_id,))[0]
            values.append(float(value))  # type: ignore[arg-type]
        else:
            out[key] = (values, diverged + 1)
    return out


def _expected_finding(db: Path) -> str:
    """The summary's first line, computed here from the database with numpy: the best
    learning rate per batch size, the OLS slope of log lr* on log B with its Student t
    interval (the seed bootstrap's is inside it: each best cell is the best for every
    resample of its two seeds), and the pooled noise scale of those cells."""
    cells = _cells(db)
    sizes = sorted({b for b, _ in cells})
    best = {b: min((lr for (bb, lr), (_, div) in cells.items() if bb == b and not div),
                   key=lambda lr: float(np.mean(cells[(b, lr)][0]))) for b in sizes}
    assert best == {16: 0.01, 64: 0.001, 256: 0.01}
    x, y = np.log(sizes), np.log([best[b] for b in sizes])
    slope, intercept = np.polyfit(x, y, 1)
    residual = y - (intercept + slope * x)
    se = math.sqrt(float(residual @ residual) / (len(x) - 2) / float(((x - x.mean()) ** 2).sum()))
    half = float(stats.t.ppf(0.975, len(x) - 2)) * se
    rows = sql(db, "SELECT a.trial_id, a.key, a.value_json FROM trial_user_attributes a "
                   "WHERE a.key IN ('noise_trace_sigma', 'noise_grad_sq')")
    by_trial: dict[object, dict[str, float]] = {}
    for tid, key, value in rows:
        by_trial.setdefault(tid, {})[str(key)] = json.loads(str(value))
    at_best = []
    for tid, attrs in by_trial.items():
        params = dict(sql(db, "SELECT param_name, param_value FROM trial_params "
                              "WHERE trial_id = ?", (tid,)))
        if best[int(params["batch_size"])] == params["learning_rate"]:  # type: ignore[arg-type]
            at_best.append(attrs)
    critical = sum(a["noise_trace_sigma"] for a in at_best) / \
        sum(a["noise_grad_sq"] for a in at_best)
    assert abs(slope) < 1e-9  # optima 0.01, 0.001, 0.01 at equally spaced log B: flat
    # B=64's optimum is on the grid's edge, so only two are refined: no shape is fitted
    # (McCandlish's included), and the slope's interval is the regression's.
    return (f"**Best LR stays flat as B^0.00 [{-half:.2f}, {half:.2f}] (Adam, 2 seeds; too "
            "few refined optima to compare shapes): consistent with the inverse, constant, "
            "square-root and linear rules (the square-root rule is the one expected for "
            "Adam).** The measured gradient noise scale B_simple is "
            f"{critical:.3g} INTERVAL, the predicted critical batch size.")


@pytest.mark.parametrize("name", [*builtin_names(), "range"])
def test_the_spec_text_is_toml_that_reads_back_to_the_spec(name: str, tmp_path: Path) -> None:
    if name == "range":
        s = load_spec("article", ["search.sampler=tpe", "search.batch_size={low=16, high=256}",
                                  "search.learning_rate={low=1e-5, high=0.5}",
                                  "search.n_trials=6"])
        # Strings with every character TOML makes us escape, and some it does not.
        s = dataclasses.replace(s, description='a "quoted" \\path\\ \t\n\x01\x7f é, ✓')
    else:
        s = load_spec(name)
    text = report.spec_text(s)
    assert from_table(tomllib.loads(text)) == s
    (tmp_path / "my.toml").write_text(text, encoding="utf-8")
    assert load_spec(str(tmp_path / "my.toml")) == s  # saved, it is a spec `study run` takes
    if name == "range":
        assert "batch_size = { low = 16.0, high = 256.0 }" in text
        assert "learning_rate = { low = 1e-05, high = 0.5 }" in text
        assert 'description = "a \\"quoted\\" \\\\path\\\\ \\t\\n\\u0001\\u007F é, ✓"' in text


def test_optuna_figures_use_log_axes_for_batch_size_and_learning_rate(
        written: tuple[str, Path, report.Report]) -> None:
    url = written[0]
    study = _study(url)
    pages = {p.file: p for p in report.optuna_pages(study, report.load_view(study, url))}
    contour = pages["contour.html"].figure
    assert contour is not None
    assert contour.layout.xaxis.title.text == "batch_size"
    assert contour.layout.yaxis.title.text == "learning_rate"
    assert (contour.layout.xaxis.type, contour.layout.yaxis.type) == ("log", "log")
    slices = pages["slice.html"].figure
    assert slices is not None
    assert {slices.layout.xaxis.type, slices.layout.xaxis2.type} == {"log"}
    assert all(p.figure is not None for p in pages.values())


def test_our_figures_and_note_are_stored_for_optuna_dashboard(
        written: tuple[str, Path, report.Report]) -> None:
    from optuna_dashboard import get_note, save_note
    from optuna_dashboard._custom_plot_data import get_plotly_graph_objects

    url = written[0]
    study = _study(url)
    stored = get_plotly_graph_objects(study._storage.get_study_system_attrs(study._study_id))
    assert set(stored) == {"article-chart", "heatmap-objective", "scaling-chart"}
    article = json.loads(stored["article-chart"])
    assert article["layout"]["title"]["text"].startswith("Final loss against batch size")
    heat = json.loads(stored["heatmap-objective"])
    assert heat["data"][0]["type"] == "heatmap"
    note = get_note(study)
    assert note.startswith("## article: summary by `study report`")
    assert "| 16 | diverged |" in note and report.NOTE_END in note
    # A user's own words below the summary survive the next report; the summary is replaced.
    # The note opens with what the study found, as the index does.
    assert re.fullmatch(re.escape(_expected_finding(Path(url.removeprefix("sqlite:///"))))
                        .replace(re.escape("INTERVAL"), r"\[[0-9.e+]+, [0-9.e+]+\]"),
                        note.splitlines()[2]), note.splitlines()[2]
    assert "| 64 | 0.001 | 0.001 [0.001, 0.01] | the grid's smallest learning rate is best" in note
    assert "| square-root rule (Krizhevsky 2014; Malladi et al. 2022 (Adam, RMSprop)) | 0.5 |" \
        in note
    save_note(study, note + "\nMy own words.\n")
    report.write_report(url, None, written[1])
    again = get_note(_study(url))
    assert again.count("My own words.") == 1 and again.count(report.NOTE_END) == 1
    stored = get_plotly_graph_objects(study._storage.get_study_system_attrs(study._study_id))
    assert set(stored) == {"article-chart", "heatmap-objective", "scaling-chart"}  # replaced, not added


def test_a_study_without_results_says_why_figures_are_missing(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    make_study(url)
    out = tmp_path / "dashboards"
    report.write_report(url, "article", out)
    # Every run of this study diverges: no completed trial for Optuna's plots.
    from study import runner
    from study.data import make_dataset
    from tests.studies import DivergingTrainer

    bad = spec("[0]", "search.learning_rate=[0.1]")
    ctx = runner.open_study(bad, url, "all-diverged", create=True)
    runner.work(ctx, DivergingTrainer, lambda: make_dataset(bad.data))
    result = report.write_report(url, "all-diverged", out, dashboard=False)
    assert set(result.skipped) == {"contour.html", "slice.html", "history.html",
                                   "importances.html", "intermediate.html", "parallel.html",
                                   "rank.html", "noise.html", "critical.html", "sharpness.html"}
    assert result.skipped["contour.html"] == "needs 2 completed trial(s), the study has 0"
    assert result.skipped["noise.html"] == ("no trial recorded a noise scale (noise_scale); turn "
                                            "it on in the spec's [analysis] section")
    # The previous study's Optuna pages are gone, so none can pass for this study's.
    assert {p.name for p in out.iterdir()} == {
        "index.html", "plotly.min.js", "article.html", "scaling.html", "optimum.html",
        "heatmap_objective.html", "heatmap_val_loss.html", "generalization.html",
        "heatmap_gap.html"}
    index = (out / "index.html").read_text()
    assert "Contour: batch size x learning rate: not drawn (needs 2 completed trial(s)" in index
    assert "No completed trial yet." in index
    assert ("No scaling law (Adam, 0 seeds): a scaling fit needs optima at two or more batch "
            "sizes; this study has 0.") in index
    pages = {p.file: p for p in report.our_pages(report.load_view(_study(url, "all-diverged"),
                                                                   url))}
    heat = pages["heatmap_objective.html"].figure
    assert heat is not None and all(v is None for row in heat.data[0].z for v in row)
    # --no-dashboard (dashboard=False) stored nothing on that study.
    study = _study(url, "all-diverged")
    attrs = study._storage.get_study_system_attrs(study._study_id)
    assert not [k for k in attrs if k.startswith("dashboard:")]


def test_wrong_storage_or_name_writes_nothing(tmp_path: Path) -> None:
    with pytest.raises(StorageUsageError, match="--storage: no database at"):
        report.write_report(f"sqlite:///{tmp_path / 'none.db'}", None, tmp_path / "out")
    url = f"sqlite:///{tmp_path / 's.db'}"
    make_study(url, "mine")
    with pytest.raises(StorageUsageError, match=r"--study-name: no study 'article' in .* "
                                                r"\(studies: 'mine'\)"):
        report.write_report(url, "article", tmp_path / "out")
    assert not (tmp_path / "out").exists() and not (tmp_path / "none.db").exists()


@pytest.mark.slow
def test_cli_report_without_tensorflow(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    make_study(url)
    probe = subprocess.run([sys.executable, "-c", (
        "import sys; from study.cli import main; "
        f"rc = main(['report', '--storage', {url!r}, '--out', {str(tmp_path / 'd')!r}]); "
        "print(rc, 'tensorflow' in sys.modules, file=sys.stderr)")],
        cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert probe.stderr.strip().splitlines()[-1] == "0 False", probe.stderr
    assert "Study 'article' (18 trials): wrote 19 files" in probe.stdout
    assert f"Open {(tmp_path / 'd' / 'index.html').as_uri()}" in probe.stdout
    out = run_cli(["report", "--help"])
    assert out.returncode == 0 and "Example: study report" in out.stdout
    out = run_cli(["report", "--storage", url, "--spec", "nope"], cwd=tmp_path)
    assert out.returncode == 2 and "spec: unknown spec 'nope'" in out.stderr
    # `make study` reports after it runs (-n: print the commands; -o: no virtualenv setup).
    plan = subprocess.run(["make", "-n", "-o", ".venv/.installed", "study"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60).stdout.splitlines()
    assert [line.split()[1] for line in plan if line.startswith(".venv/bin/study")] == \
        ["run", "report"]


def test_a_search_that_is_not_a_grid(tmp_path: Path) -> None:
    from study import runner
    from study.data import make_dataset
    from tests.scripted import ScriptedTrainer

    url = f"sqlite:///{tmp_path / 's.db'}"
    tpe = spec("[0]", "search.sampler='tpe'", "search.batch_size={low=16, high=256}",
               "search.learning_rate={low=0.001, high=0.1}", "search.n_trials=6")
    ctx = runner.open_study(tpe, url, "tpe", create=True)
    runner.work(ctx, ScriptedTrainer, lambda: make_dataset(tpe.data))
    result = report.write_report(url, None, tmp_path / "out")
    # Our grid figures do not pretend six single trials are a grid; Optuna's are drawn.
    assert set(result.skipped) == OURS
    assert all("the tpe sampler, not a grid" in why for why in result.skipped.values())
    assert {"contour.html", "slice.html", "importances.html"} <= {p.name for p in result.files}
    index = (tmp_path / "out" / "index.html").read_text()
    assert "Trials, not a grid" in index and "<h2>Grid" not in index
    from optuna_dashboard import get_note
    from optuna_dashboard._custom_plot_data import get_plotly_graph_objects

    study = _study(url, "tpe")
    assert get_plotly_graph_objects(study._storage.get_study_system_attrs(study._study_id)) == {}
    assert "The tpe sampler searched ranges, not a grid." in get_note(study)


def _plotted(t: optuna.trial.FrozenTrial) -> tuple[object, ...]:
    return (t.number, t.state, t.values, t.params, t.distributions, t.intermediate_values)


def test_optunas_figures_get_what_they_read_and_at_most_so_many_trials(
        written: tuple[str, Path, report.Report], monkeypatch: pytest.MonkeyPatch) -> None:
    url = written[0]
    study = _study(url)
    trials = study.get_trials()
    copy, note = report.plot_study(study, url)
    assert note is None and copy.directions == study.directions
    assert [_plotted(t) for t in copy.get_trials()] == [_plotted(t) for t in trials]
    # Over the bound, a grid keeps its first seeds, every cell of them.
    monkeypatch.setattr(report, "OPTUNA_TRIALS", 10)
    copy, note = report.plot_study(study, url)
    assert note == "drawn from the 9 trials of the first 1 of 2 seeds, numbered anew"
    assert [_plotted(t)[1:] for t in copy.get_trials()] == \
        [_plotted(t)[1:] for t in trials if t.params["seed"] == 0]
    (page,) = report.optuna_pages(copy, report.load_view(study, url, url), "slice.html", note)
    assert page.caption.endswith(f"({note})") and page.figure is not None
