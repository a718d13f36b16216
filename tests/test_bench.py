"""bench/bench.py's pure parts: the keras estimate from a subset, the spliced section,
the trial count of a spec, the ratios against the article's loop and their targets; and
bench/article_loop.py, the article's loop, on a sliver of its grid. (The measurements
themselves are `make bench`, never a test.)"""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _load(name: str, path: Path) -> ModuleType:
    # bench/ is a script folder, not a package: load the file itself.
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(name, module)
    spec.loader.exec_module(module)
    return module


bench = _load("study_bench", ROOT / "bench" / "bench.py")
article_loop = _load("study_bench_article_loop", ROOT / "bench" / "article_loop.py")


def test_scaled_wall_keeps_fixed_costs_and_scales_training() -> None:
    # 20 trials: 100 s, 80 of them training. 100 trials: the 20 s once, 400 s training.
    assert bench.scaled_wall(100.0, 80.0, 20, 100) == pytest.approx(420.0)
    assert bench.scaled_wall(100.0, 80.0, 100, 100) == pytest.approx(100.0)
    assert bench.scaled_wall(100.0, 0.0, 20, 100) == pytest.approx(100.0)


@pytest.mark.parametrize(("args", "match"), [
    ((100.0, 80.0, 0, 100), "measured=0"),
    ((100.0, 80.0, 20, -1), "wanted=-1"),
    ((100.0, 120.0, 20, 100), "train_seconds=120.0"),
    ((100.0, -1.0, 20, 100), "train_seconds=-1.0"),
])
def test_scaled_wall_refuses_impossible_inputs(args: tuple[float, float, int, int],
                                               match: str) -> None:
    with pytest.raises(ValueError, match=match):
        bench.scaled_wall(*args)


def test_replace_section_keeps_the_text_around_it() -> None:
    begin, end = "<!-- a -->", "<!-- /a -->"
    text = f"# T\n\nbefore\n{begin}\nold\n{end}\nafter\n"
    out = bench.replace_section(text, "new\n", begin, end)
    assert out == f"# T\n\nbefore\n{begin}\nnew\n{end}\nafter\n"
    # Another generated section is left alone.
    other = f"{bench.BEGIN}\nkeep\n{bench.END}\n"
    assert other in bench.replace_section(other + text, "x\n", begin, end)


def test_replace_section_appends_missing_markers() -> None:
    out = bench.replace_section("# T\n", "rows\n", "<!-- a -->", "<!-- /a -->")
    assert out == "# T\n\n<!-- a -->\nrows\n<!-- /a -->\n"


def test_spec_trials_counts_the_grid_times_seeds() -> None:
    assert bench.spec_trials("digits", range(5)) == 100
    assert bench.spec_trials("digits", None) == 20
    assert bench.spec_trials(str(bench.CNN_SPEC), None) == 9


def test_spec_flops_counts_the_shorthand_mlp_on_the_spec_data() -> None:
    one, five = bench.spec_flops("digits", [0]), bench.spec_flops("digits", range(5))
    assert one.training > 0 and one.evaluation > 0
    assert five.training == pytest.approx(5 * one.training)
    # A builder's model (the CNN) is not what the Dense count covers.
    assert bench.spec_flops(str(bench.CNN_SPEC), None) is None


# --------------------------------------------------------------------------- the article's loop


def _article(wall: float = 90.0, epochs: int = 50) -> object:
    return bench.ArticleLoop(wall, epochs, [0.1] * 20, 1.0, 1.5)


def _run(label: str, trials: int, wall: float, train_seconds: float = 1.0,
         gflop: float | None = None, trainer: str = "population") -> object:
    from study.flops import Flops

    report = bench.ChildReport(main_seconds=wall, train_seconds=train_seconds)
    flops = None if gflop is None else Flops(gflop * 1e9, 0.0)
    return bench.Run(label, trainer, trials, 1000, wall, report, 0.5, 0.7, flops)


def test_ratio_vs_article_is_per_trial() -> None:
    # The article: 90 s for 20 trials, 4.5 s each. 2000 trials in 60 s: 30 ms each, 150x.
    assert bench.ratio_vs_article(_article(90.0), _run("x", 2000, 60.0)) == pytest.approx(150.0)
    assert bench.ratio_vs_article(_article(90.0), _run("x", 20, 4.5)) == pytest.approx(20.0)


def test_against_article_pairs_population_rows_with_their_targets() -> None:
    runs = [_run("article", 20, 6.0), _run("article", 20, 100.0, trainer="keras"),
            _run("article x 5 seeds", 100, 9.0), _run("article x 100 seeds", 2000, 40.0)]
    rows = {row.label: row for row in bench.against_article(runs, _article(90.0))}
    assert list(rows) == [label for label, _ in bench.VS_ARTICLE]
    # The population run, never the keras one of the same label.
    assert rows["article"].ratio == pytest.approx(15.0) and rows["article"].met is None
    assert rows["article x 5 seeds"].ratio == pytest.approx(50.0)
    assert rows["article x 5 seeds"].target == 60.0 and rows["article x 5 seeds"].met is False
    assert rows["article x 100 seeds"].ratio == pytest.approx(225.0)
    assert rows["article x 100 seeds"].met is True
    assert rows["article x 100 seeds"].per_trial == pytest.approx(0.02)
    # Not run (--quick): its nominal trials, nothing measured, its target not judged.
    absent = rows["article x 500 seeds"]
    assert (absent.trials, absent.wall, absent.ratio, absent.met) == (10_000, None, None, None)
    # Without the article's loop (--only-big) there is no ratio at all.
    assert all(row.ratio is None for row in bench.against_article(runs, None))


def _table(text: str, heading: str) -> dict[str, list[str]]:
    """The rows of the markdown table under `heading`, by their first cell."""
    section = text.split(heading, 1)[1].split("\n### ", 1)[0]
    rows = [line.strip("|").split(" | ") for line in section.splitlines()
            if line.startswith("| ") and not line.startswith("| study |")]
    return {cells[0].strip(): [c.strip() for c in cells[1:]] for cells in rows}


def test_render_shows_ratios_targets_and_the_share_of_peak() -> None:
    runs = [_run("article", 20, 6.0), _run("article x 5 seeds", 100, 1.0),
            _run("article x 100 seeds", 2000, 60.0, train_seconds=50.0, gflop=2500.0)]
    text = bench.render(runs, {"cores": "2"}, "bench", 50, {"numpy": 100.0, "tensorflow": 125.0},
                        _article(90.0), {"16": 31.4, "256": 77.0})
    assert "one core: 31 GFLOP/s at 16 rows, 77 GFLOP/s at 256 rows" in text
    assert "90.0 s from process start to exit, 4.50 s per trial (load 1.0->1.5)" in text
    table = _table(text, "### Against the article's own loop")
    assert table["article"] == ["20", "6.0 s", "300.0 ms", "15.0x", "none", ""]
    assert table["article x 5 seeds"] == ["100", "1.0 s", "10.0 ms", "450.0x", ">= 60x", "met"]
    assert table["article x 100 seeds"] == ["2,000", "60.0 s", "30.0 ms", "150.0x", ">= 200x",
                                            "missed"]
    assert table["article x 20 seeds"] == ["400", "n/a", "n/a", "n/a", "none", ""]
    # 2500 GFLOP in 50 s of training: 50 GFLOP/s, 40% of the best peak (125): met.
    share = next(cells for label, cells in table.items() if label.startswith("article x 100 seeds:"))
    assert share[-3:] == ["40% of peak (50 of 125 GFLOP/s)", ">= 40%", "met"]
    # The keras 100-trial run was not made: its targets read n/a, and the text says why.
    assert "| (b) 100 trials: population >= 50x faster than keras | n/a | n/a |" in text
    assert "`--keras-100`" in text
    assert "the article loop 1.0->1.5" in text


def test_render_without_the_article_loop_or_the_2000_trial_run() -> None:
    text = bench.render([_run("article x 500 seeds", 10_000, 300.0)], {}, "bench", 50, None)
    assert "batched product" not in text  # the layer's rates were not measured
    table = _table(text, "### Against the article's own loop")
    assert "was not run" in text
    assert table["article x 500 seeds"] == ["10,000", "300.0 s", "30.0 ms", "n/a", "none", ""]
    assert table["article x 5 seeds"][-1] == "n/a"
    share = next(cells for label, cells in table.items() if label.startswith("article x 100 seeds:"))
    assert share[-3:] == ["n/a", ">= 40%", "n/a"]


def test_article_losses_reads_the_last_line() -> None:
    rows = [{"batch_size": 16, "learning_rate": 0.1, "loss": 0.25}] * 20
    assert bench.article_losses("warming up\n" + json.dumps(rows) + "\n") == [0.25] * 20


@pytest.mark.parametrize(("stdout", "match"), [
    ("", "printed nothing"),
    ("not json\n", "last line is not its losses: 'not json'"),
    (json.dumps([{"loss": 1.0}] * 3), "gave 3 losses, not 20"),
    (json.dumps([{"batch_size": 16}] * 20), "last line is not its losses"),
])
def test_article_losses_refuses_other_output(stdout: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        bench.article_losses(stdout)


def test_article_loop_grid_is_the_article_spec_grid() -> None:
    # The baseline's 20 trials are the same 20 cells the `article` studies run per seed.
    from study.spec import load_spec

    search = load_spec("article").search
    assert search.batch_size == article_loop.BATCH_SIZES
    assert search.learning_rate == article_loop.LEARNING_RATES
    assert len(article_loop.BATCH_SIZES) * len(article_loop.LEARNING_RATES) == bench.ARTICLE_TRIALS


# The article passes `input_shape` to its first Dense layer, which Keras 3 warns about.
@pytest.mark.filterwarnings("ignore:Do not pass an `input_shape`")
def test_article_loop_trains_the_article_model_and_reports_its_final_loss() -> None:
    # Two combinations of the article's grid, one epoch each, in this process.
    rows = article_loop.run(1, batch_sizes=[256], learning_rates=[0.01, 0.001])
    assert [(r["batch_size"], r["learning_rate"]) for r in rows] == [(256, 0.01), (256, 0.001)]
    # One epoch from Glorot weights on y ~ 2.5 +- 0.8: trained, finite, not yet fitted.
    assert all(math.isfinite(r["loss"]) and r["loss"] > 0.01 for r in rows)


def test_article_loop_script_refuses_a_bad_epoch_count() -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "article_loop.py"), "--epochs", "0"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "argument --epochs: must be a positive integer, got '0'" in proc.stderr
    assert proc.stdout == ""
