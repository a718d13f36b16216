"""bench/bench.py's pure parts: the keras estimate from a subset, the spliced section,
the trial count of a spec. (The measurements themselves are `make bench`, never a test.)"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _bench() -> ModuleType:
    # bench/ is a script folder, not a package: load the file itself.
    spec = importlib.util.spec_from_file_location("study_bench", ROOT / "bench" / "bench.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("study_bench", module)
    spec.loader.exec_module(module)
    return module


bench = _bench()


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
