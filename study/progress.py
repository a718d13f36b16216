"""Progress of a run: trials done / total, the trial in hand, and an ETA.

The runner and the worker pool emit events (`detail`: the epoch in hand; `finish`: the
trials a claim finished, a note each; `advance`: trials counted without notes); a
renderer draws them. `Progress` writes text to a stream (stderr by default): on a
terminal it redraws one line; otherwise (CI logs, pipes) it prints a line per finished
trial so logs stay readable. `TqdmProgress` draws the same events as a tqdm bar, which
`tqdm.auto` makes a widget in a notebook. `pick` chooses between them for the Python
API; `in_notebook` says whether it runs in one.

The ETA is measured, not guessed: the trials left over the throughput so far (trials
finished by this run per second of its wall time). None is shown before a trial has
finished here ("?") or once none is left.
"""

from __future__ import annotations

import importlib
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, TextIO


def format_duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, s = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{s:02d}s"
    hours, m = divmod(minutes, 60)
    return f"{hours}h{m:02d}m"


class Progress:
    WIDTH = 24

    def __init__(self, total: int, done: int, stream: TextIO | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.total = total  # the runner raises it when a refinement round adds cells
        self.done = done
        self._done_at_start = done
        self._clock = clock
        self._start = clock()
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self._detail = ""
        self._last_draw = 0.0

    def rate(self) -> float | None:
        """Trials finished by this run per second of its wall time; None before any."""
        finished_here = self.done - self._done_at_start
        elapsed = self._clock() - self._start
        if finished_here <= 0 or elapsed <= 0:
            return None
        return finished_here / elapsed

    def eta(self) -> str:
        """The time left at the measured rate: "?" before a trial has finished here, ""
        when no trial is left."""
        left = self.total - self.done
        if left <= 0:
            return ""
        rate = self.rate()
        return "?" if rate is None else format_duration(left / rate)

    def _count(self) -> str:
        eta = self.eta()
        return f"{self.done}/{self.total} trials" + (f"  ETA {eta}" if eta else "")

    def line(self) -> str:
        frac = self.done / self.total if self.total else 1.0
        filled = round(frac * self.WIDTH)
        bar = "#" * filled + "-" * (self.WIDTH - filled)
        text = f"[{bar}] {self._count()}"
        return f"{text}  {self._detail}" if self._detail else text

    def detail(self, text: str) -> None:
        """What is training now; redrawn at most a few times a second."""
        self._detail = text
        now = self._clock()
        if self.tty and now - self._last_draw > 0.2:
            self._draw()

    def advance(self, n: int = 1, note: str = "") -> None:
        """`n` more trials finished (one line, with `note`)."""
        self.done = min(self.total, self.done + n)
        self._finished([note])

    def finish(self, notes: Sequence[str]) -> None:
        """Trials that finished together, a note each: counted at once (so the ETA is
        the rate after them all), a line each, the ETA on the last line only."""
        if not notes:
            return
        first = self.done
        self.done = min(self.total, self.done + len(notes))
        self._finished(list(notes), first)

    def _finished(self, notes: list[str], first: int | None = None) -> None:
        if self.tty:
            self._detail = ""
            self._draw()
            return
        if first is None:
            first = self.done - 1
        for i, note in enumerate(notes):
            suffix = f"  {note}" if note else ""
            if i == len(notes) - 1:
                print(f"{self._count()}{suffix}", file=self.stream)
            else:
                print(f"{min(self.total, first + i + 1)}/{self.total} trials{suffix}",
                      file=self.stream)

    def close(self) -> None:
        if self.tty:
            self._detail = ""
            self._draw()
            print(file=self.stream)

    def _draw(self) -> None:
        self._last_draw = self._clock()
        self.stream.write("\r\033[K" + self.line())
        self.stream.flush()


class TqdmProgress(Progress):
    """The same events drawn by a tqdm bar (`tqdm.auto`: a widget in a notebook, text
    on a terminal): the last finished trial's note, or the epoch in hand, as its
    postfix. Its ETA is tqdm's, at the average rate of this run (smoothing 0), as ours."""

    def __init__(self, total: int, done: int, bar: Any) -> None:
        super().__init__(total, done)
        self.tty = False
        self.bar = bar

    @classmethod
    def auto(cls, total: int, done: int) -> TqdmProgress:
        """A `tqdm.auto` bar; ImportError without tqdm (or, in a notebook, without the
        ipywidgets its widget needs)."""
        # By name: tqdm is optional and ships no type stubs.
        tqdm = importlib.import_module("tqdm.auto").tqdm
        return cls(total, done, tqdm(total=total, initial=done, unit="trial", smoothing=0,
                                     dynamic_ncols=True))

    def detail(self, text: str) -> None:
        self._detail = text
        now = self._clock()
        if now - self._last_draw > 0.2:
            self._last_draw = now
            self.bar.set_postfix_str(text)

    def _finished(self, notes: list[str], first: int | None = None) -> None:
        self.bar.total = self.total
        self.bar.update(self.done - self.bar.n)
        self.bar.set_postfix_str(notes[-1])

    def close(self) -> None:
        self.bar.close()


def in_notebook() -> bool:
    """Whether this process is a Jupyter kernel (IPython running under IPKernelApp), as
    tqdm.auto decides; False outside IPython, never importing it."""
    ipython = sys.modules.get("IPython")
    get = getattr(ipython, "get_ipython", None)
    shell = get() if callable(get) else None
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


def pick(total: int, done: int) -> Progress:
    """The renderer for the Python API: a `tqdm.auto` bar where tqdm is importable (a
    widget in a notebook), else our text lines on stderr."""
    try:
        return TqdmProgress.auto(total, done)
    except ImportError:  # no tqdm, or a notebook without ipywidgets
        return Progress(total, done)
