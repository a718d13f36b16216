"""A pool of local worker processes on one study: `study run --workers N`.

Each worker is a `study worker` process: it loads the study's stored spec and claims
cells under the study's claim lock until none is left (see runner.py), so the pool
adds nothing to correctness; it only starts, watches and stops processes.

The parent creates the schema and the study before starting anyone (several
processes creating Optuna's schema at once race). Workers ignore SIGINT: the parent
gets Ctrl-C or SIGTERM and sends each worker one SIGTERM, which a worker treats as a
clean stop (its trials marked FAIL "interrupted", none left RUNNING). A worker killed
outright leaves its trial RUNNING; the others see its process is gone and re-run
the cell.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import sysconfig
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from study import runner
from study.errors import StudyError

if TYPE_CHECKING:
    from study.progress import Progress

STOP_TIMEOUT_S = 60.0  # a worker asked to stop gets this long to release its trials
POLL_S = 0.5


class WorkerFailed(StudyError):
    """A worker exited with an error, so the pool stopped the others."""


@dataclass
class PoolOutcome:
    exit_codes: list[int] = field(default_factory=list)
    interrupted: bool = False

    @property
    def killed(self) -> list[int]:
        """Workers ended by a signal they could not handle (kill -9, OOM killer)."""
        return [i for i, rc in enumerate(self.exit_codes) if rc < 0]


def worker_command(url: str, study_name: str, extra: Sequence[str] = ()) -> list[str]:
    return [sys.executable, "-m", "study", "worker", "--storage", url,
            "--study-name", study_name, "--pool-member", *extra]


def run_pool(
    ctx: runner.StudyContext,
    n: int,
    extra_args: Sequence[str] = (),
    progress: Progress | None = None,
    extra_env: Mapping[str, str] | None = None,
) -> PoolOutcome:
    """Start `n` workers on the (already created) study and wait for them all;
    `extra_env` adds to their environment (a PYTHONPATH to import a builder from)."""
    outcome = PoolOutcome()
    stop_requested: list[int] = []
    procs: list[subprocess.Popen[bytes]] = []
    signalled: set[int] = set()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        # Forward at once: a worker stops at its next epoch boundary, and every moment
        # of delay lets trials finish that the user asked to stop.
        stop_requested.append(signum)
        _stop(procs, signalled)

    # Python lets only the main thread set handlers; called from another thread (a
    # notebook's background job), the pool runs without them and the caller stops it.
    main = threading.current_thread() is threading.main_thread()
    saved = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)} \
        if main else {}
    try:
        cmd = worker_command(ctx.url, ctx.name, extra_args)
        # Workers learn the pool's size, so the first to claim leaves the others their
        # share before their heartbeats are in (see runner._fair_share).
        base = {**os.environ, **(extra_env or {})}
        env = {**base, runner.POOL_SIZE_ENV: str(n), **_same_package(base)}
        procs.extend(subprocess.Popen(cmd, stdin=subprocess.DEVNULL, env=env) for _ in range(n))
        failed: int | None = None
        stopping = False
        last_poll = 0.0
        while any(p.poll() is None for p in procs):
            if stop_requested and not stopping:
                stopping = outcome.interrupted = True
                _stop(procs, signalled)  # those started after the signal came
            for i, p in enumerate(procs):
                rc = p.poll()
                if rc is not None and rc > 0 and failed is None and not stopping:
                    # An error, not a kill: the study is broken for everyone; stop the rest.
                    failed = i
                    stopping = True
                    _stop(procs, signalled)
            if progress is not None and time.monotonic() - last_poll > 1.0:
                last_poll = time.monotonic()
                _update(ctx, progress)
            time.sleep(POLL_S)
        _wait_all(procs)
        outcome.exit_codes = [int(p.returncode) for p in procs]
        if progress is not None:
            _update(ctx, progress)
        if failed is not None and not outcome.interrupted:
            rc = outcome.exit_codes[failed]
            raise WorkerFailed(f"worker {failed + 1} of {n} exited with status {rc} "
                               "(its error is above); the other workers were stopped")
        return outcome
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def _same_package(environ: Mapping[str, str]) -> dict[str, str]:
    """PYTHONPATH for workers that import this very `study` package, not another one.

    `python -m study` imports whatever `study` its working directory and the installed
    packages offer: a script or notebook that imported a source checkout by its path
    (or from its own directory) would otherwise start workers running other code, or
    none. The directory holding this package goes first; an installed package's
    site-packages is on every worker's path already and is left where it is.
    """
    root = str(Path(__file__).resolve().parent.parent)
    installed = {str(Path(p).resolve()) for p in (sysconfig.get_paths()["purelib"],
                                                  sysconfig.get_paths()["platlib"])}
    if root in installed:
        return {}
    rest = environ.get("PYTHONPATH", "")
    return {"PYTHONPATH": os.pathsep.join([root, rest]) if rest else root}


def _stop(procs: Sequence[subprocess.Popen[bytes]], signalled: set[int]) -> None:
    """One SIGTERM per worker: a second one tells a worker to stop without cleaning up."""
    for p in list(procs):
        if p.pid not in signalled and p.poll() is None:
            signalled.add(p.pid)
            p.send_signal(signal.SIGTERM)


def _wait_all(procs: Sequence[subprocess.Popen[bytes]]) -> None:
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def _update(ctx: runner.StudyContext, progress: Progress) -> None:
    from study.storage import is_storage_error

    try:
        done = runner.count_finished(ctx, ctx.trials())
    except Exception as e:
        if is_storage_error(e):
            return  # the workers meet the same outage and report it; the bar just pauses
        raise
    if done > progress.done:
        progress.advance(done - progress.done)
