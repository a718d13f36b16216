"""Helpers for tests: drive the real CLI as a process, read the real database."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def cli_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("STUDY_VERBOSE", None)
    env["PYTHONUNBUFFERED"] = "1"
    # The tree under test, whatever the working directory (a test's tmp_path) or an
    # installed copy elsewhere.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    return env


def run_cli(args: Sequence[str], cwd: Path | None = None, timeout: float = 600
            ) -> subprocess.CompletedProcess[str]:
    """Run `python -m study ARGS` as a real process and capture what it prints."""
    return subprocess.run(
        [sys.executable, "-m", "study", *args],
        cwd=cwd or ROOT, env=cli_env(), capture_output=True, text=True, timeout=timeout,
    )


def _interactive_signals() -> None:
    # A command started from a terminal takes Ctrl-C. A shell without job control (a CI
    # runner's `cmd &`) starts its background jobs with SIGINT ignored, which the children
    # inherit and `study` honours (a pool member leaves Ctrl-C to its parent): give the
    # process under test the disposition a person's terminal gives it.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_cli(args: Sequence[str], cwd: Path | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "study", *args],
        cwd=cwd or ROOT, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=_interactive_signals,
    )


def sql(path: Path, query: str, params: Sequence[object] = ()) -> list[tuple[object, ...]]:
    """Read the Optuna schema directly, read-only, as a user with sqlite3 would."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return conn.execute(query, params).fetchall()
    finally:
        conn.close()


def trial_states(path: Path) -> dict[str, int]:
    return dict(sql(path, "SELECT state, COUNT(*) FROM trials GROUP BY state"))  # type: ignore[arg-type]


def dump(path: Path) -> list[str]:
    """Every row of every table as SQL text: equal dumps, equal contents (the file's bytes
    may differ when SQLite checkpoints its write-ahead log)."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return list(conn.iterdump())
    finally:
        conn.close()


def git(*args: str, cwd: Path) -> str:
    """`git ARGS` in `cwd`, as a person would type it; raises when git fails."""
    return subprocess.run(["git", "-c", "user.name=test", "-c", "user.email=test@example.org",
                           "-c", "commit.gpgsign=false", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=30, check=True).stdout.strip()


def checkout_revision() -> str:
    """What provenance should say for this source tree, asked of git directly: HEAD, with
    +dirty when a tracked file differs from it; "unknown" outside a git checkout."""
    try:
        rev = git("rev-parse", "HEAD", cwd=ROOT)
        dirty = git("status", "--porcelain", "--untracked-files=no", cwd=ROOT)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return rev + ("+dirty" if dirty else "")
