"""The progress renderers: measured ETAs, a line per finished trial, tqdm where it exists."""

from __future__ import annotations

import importlib
import io
import sys
import types
from typing import Any

import pytest

from study import progress as P


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def text_progress(total: int, done: int = 0) -> tuple[P.Progress, io.StringIO, Clock]:
    stream, clock = io.StringIO(), Clock()
    return P.Progress(total, done, stream=stream, clock=clock), stream, clock


def test_the_eta_is_the_trials_left_at_the_rate_measured_so_far() -> None:
    bar, _, clock = text_progress(10, done=2)  # two finished before this run: not its rate
    assert bar.eta() == "?" and bar.rate() is None
    clock.now += 8.0
    bar.advance(2)
    assert bar.rate() == pytest.approx(0.25)  # 2 trials in 8 s
    assert bar.eta() == "24s"  # 6 left at 4 s each
    clock.now += 100.0
    bar.advance(6)
    assert bar.eta() == ""  # nothing left: no ETA


def test_trials_finished_together_get_a_line_each_and_one_eta_after_them() -> None:
    bar, stream, clock = text_progress(5)
    clock.now += 10.0
    bar.finish(["a", "b", "c"])
    clock.now += 5.0
    bar.finish(["d", "e"])
    assert stream.getvalue().splitlines() == [
        "1/5 trials  a", "2/5 trials  b", "3/5 trials  ETA 7s  c",  # 3 in 10 s, 2 left
        "4/5 trials  d", "5/5 trials  e",  # done: no ETA after the work
    ]
    bar.finish([])
    assert stream.getvalue().count("\n") == 5


def test_counted_trials_without_notes_still_get_a_line() -> None:
    bar, stream, clock = text_progress(4)
    clock.now += 2.0
    bar.advance(2)  # the worker pool counts what its workers told
    assert stream.getvalue() == "2/4 trials  ETA 2s\n"


class FakeBar:
    def __init__(self, total: int, initial: int) -> None:
        self.total, self.n = total, initial
        self.postfix = ""
        self.closed = False

    def update(self, n: int) -> None:
        self.n += n

    def set_postfix_str(self, text: str) -> None:
        self.postfix = text

    def close(self) -> None:
        self.closed = True


def test_the_tqdm_renderer_draws_the_same_events() -> None:
    bar = FakeBar(4, 1)
    progress = P.TqdmProgress(4, 1, bar)
    progress.detail("bs=16 lr=0.1 seed=0 epoch 1/4")
    assert bar.postfix == "bs=16 lr=0.1 seed=0 epoch 1/4"
    progress.total = 6  # a refinement round adds cells
    progress.finish(["x", "y"])
    assert (bar.n, bar.total, bar.postfix) == (3, 6, "y")
    progress.advance(1)
    assert bar.n == 4
    progress.close()
    assert bar.closed


def test_pick_takes_tqdm_auto_where_it_imports(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[dict[str, Any]] = []
    fake = types.ModuleType("tqdm.auto")
    fake.tqdm = lambda **kw: made.append(kw) or FakeBar(kw["total"], kw["initial"])  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "tqdm.auto", fake)
    chosen = P.pick(10, 3)
    assert isinstance(chosen, P.TqdmProgress)
    assert made == [{"total": 10, "initial": 3, "unit": "trial", "smoothing": 0,
                     "dynamic_ncols": True}]


def test_pick_falls_back_to_text_without_tqdm(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.import_module

    def no_tqdm(name: str, package: str | None = None) -> types.ModuleType:
        if name.startswith("tqdm"):
            raise ImportError(f"No module named {name!r}")
        return real(name, package)

    monkeypatch.setattr(P.importlib, "import_module", no_tqdm)
    chosen = P.pick(10, 3)
    assert type(chosen) is P.Progress and chosen.stream is sys.stderr


def test_in_notebook_asks_ipython_only_when_it_is_loaded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "IPython", raising=False)
    assert not P.in_notebook()
    shell = types.SimpleNamespace(config={"IPKernelApp": {}})
    ipython = types.ModuleType("IPython")
    ipython.get_ipython = lambda: shell  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "IPython", ipython)
    assert P.in_notebook()
    shell.config = {}  # a terminal IPython
    assert not P.in_notebook()
