"""A progress bar on stderr: trials done / total, the trial in hand, and an ETA.

On a terminal it redraws one line; otherwise (CI logs, pipes) it prints a line per
finished trial so logs stay readable.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


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

    def __init__(self, total: int, done: int, stream: TextIO | None = None) -> None:
        self.total = total
        self.done = done
        self._done_at_start = done
        self._start = time.monotonic()
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self._detail = ""
        self._last_draw = 0.0

    def eta(self) -> str:
        finished_here = self.done - self._done_at_start
        if finished_here <= 0:
            return "?"
        rate = (time.monotonic() - self._start) / finished_here
        return format_duration(rate * (self.total - self.done))

    def line(self) -> str:
        frac = self.done / self.total if self.total else 1.0
        filled = round(frac * self.WIDTH)
        bar = "#" * filled + "-" * (self.WIDTH - filled)
        text = f"[{bar}] {self.done}/{self.total} trials  ETA {self.eta()}"
        return f"{text}  {self._detail}" if self._detail else text

    def detail(self, text: str) -> None:
        """What is training now; redrawn at most a few times a second."""
        self._detail = text
        now = time.monotonic()
        if self.tty and now - self._last_draw > 0.2:
            self._draw()

    def advance(self, n: int = 1, note: str = "") -> None:
        self.done = min(self.total, self.done + n)
        if self.tty:
            self._detail = ""
            self._draw()
        else:
            suffix = f"  {note}" if note else ""
            print(f"{self.done}/{self.total} trials  ETA {self.eta()}{suffix}", file=self.stream)

    def close(self) -> None:
        if self.tty:
            self._detail = ""
            self._draw()
            print(file=self.stream)

    def _draw(self) -> None:
        self._last_draw = time.monotonic()
        self.stream.write("\r\033[K" + self.line())
        self.stream.flush()
