"""`make bench`: the keras reference and the population trainer, side by side, on `study run`.

Every measurement is a real `study run` (the CLI's own `main`, the runner, SQLite in a
temporary directory) in a child process of its own, so each pays its own interpreter
start, imports and XLA compilation, as a user's run does. The child times, from the
inside, what the wall time went to: importing TensorFlow, training (the population
trainer's compiled calls, the first of each shape including XLA's compile), and every
Optuna storage call made on the main thread.

    python bench/bench.py                   # everything (~15 min on 2 cores: keras x 100)
    python bench/bench.py --quick           # no keras 100-trial run, no 400 / 100k points
    python bench/bench.py --write BENCHMARKS.md

Numbers are only as quiet as the machine: the load average before and after each run
is printed and written with them.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"


# --------------------------------------------------------------------------- the child


@dataclass
class ChildReport:
    """What one `study run` spent its time on, measured inside its process."""

    main_seconds: float = 0.0  # cli.main, from the command line to the printed table
    tf_import_seconds: float = 0.0
    storage_seconds: float = 0.0  # Optuna storage calls on the main thread
    storage_calls: int = 0
    storage_by_call: dict[str, list[float]] = field(default_factory=dict)  # name: [calls, s]
    background_storage_seconds: float = 0.0  # the heartbeat thread's, concurrent
    train_seconds: float = 0.0  # inside trainer.train
    first_call_seconds: float = 0.0  # population: first call of each compiled shape
    later_call_seconds: list[float] = field(default_factory=list)  # per later call, that shape
    exit_code: int = 0


def _instrument_storage(report: ChildReport) -> None:
    """Time every public method of Optuna's RDB and cached storages, outermost call only."""
    import optuna
    from optuna.storages._cached_storage import _CachedStorage

    from study import optuna_compat, runner, storage

    local = threading.local()
    main = threading.main_thread()

    def timed(f: Callable[..., Any], name: str) -> Callable[..., Any]:
        @functools.wraps(f)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if getattr(local, "depth", 0):
                return f(*args, **kwargs)
            local.depth = 1
            start = time.perf_counter()
            try:
                return f(*args, **kwargs)
            finally:
                spent = time.perf_counter() - start
                local.depth = 0
                if threading.current_thread() is main:
                    report.storage_seconds += spent
                    report.storage_calls += 1
                    calls = report.storage_by_call.setdefault(name, [0, 0.0])
                    calls[0] += 1
                    calls[1] += spent
                else:
                    report.background_storage_seconds += spent

        return wrapper

    for cls in (optuna.storages.RDBStorage, _CachedStorage):
        for name, member in list(vars(cls).items()):
            if not name.startswith("_") and callable(member):
                setattr(cls, name, timed(member, name))
    # Our own storage functions: opening (Optuna creates or checks its schema), the
    # read-only spec check (the runner imported those by name), and the claims' writes
    # (the runner calls them through their module).
    for name in ("open_storage", "stored_study_attr"):
        wrapped = timed(getattr(storage, name), name)
        setattr(storage, name, wrapped)
        if hasattr(runner, name):
            setattr(runner, name, wrapped)
    for name in ("start_trials", "finish_trials"):
        setattr(optuna_compat, name, timed(getattr(optuna_compat, name), name))


def _instrument_training(report: ChildReport) -> None:
    from study.trainers import keras as keras_trainer
    from study.trainers import population

    for cls in (keras_trainer.KerasTrainer, population.PopulationTrainer):
        train = cls.train

        def timed_train(self: Any, *args: Any, _train: Any = train, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return _train(self, *args, **kwargs)
            finally:
                report.train_seconds += time.perf_counter() - start

        cls.train = timed_train  # type: ignore[method-assign]

    build = population.program._program
    seen: set[tuple[Any, ...]] = set()
    lock = threading.Lock()

    def program(key: Any) -> Callable[..., Any]:
        run = build(key)

        def timed_run(*args: Any) -> Any:
            # A shape's first call traces and compiles; tiles of one shape run side by
            # side, and all of them wait for that one compile.
            shape = (key, tuple(args[0].shape), int(args[7]))
            start = time.perf_counter()
            out = run(*args)
            out[3].numpy()
            spent = time.perf_counter() - start
            with lock:
                if shape in seen:
                    report.later_call_seconds.append(spent)
                else:
                    seen.add(shape)
                    report.first_call_seconds = max(report.first_call_seconds, spent)
            return out

        return timed_run

    setattr(population.program, "_program", program)  # noqa: B010


def child(argv: Sequence[str], out: Path) -> None:
    report = ChildReport()
    from study.trainers.population import use_compile_cache

    use_compile_cache()  # as the population trainer would, before TensorFlow loads
    start = time.perf_counter()
    from study.trainers._tf import tensorflow

    tensorflow()
    report.tf_import_seconds = time.perf_counter() - start
    _instrument_storage(report)
    _instrument_training(report)
    from study import cli

    start = time.perf_counter()
    with open(os.devnull, "w") as quiet:
        saved = sys.stdout
        sys.stdout = quiet
        try:
            report.exit_code = cli.main(list(argv))
        finally:
            sys.stdout = saved
    report.main_seconds = time.perf_counter() - start
    out.write_text(json.dumps(asdict(report)))


# --------------------------------------------------------------------------- the parent


@dataclass
class Run:
    label: str
    trainer: str
    trials: int
    n_train: int
    wall: float  # the child process, start to exit: what a user waits for
    report: ChildReport
    load_before: float
    load_after: float

    @property
    def storage_share(self) -> float:
        return self.report.storage_seconds / self.wall

    @property
    def compile_seconds(self) -> float | None:
        """The first call of a compiled shape minus a typical later call of it."""
        later = self.report.later_call_seconds
        if not self.report.first_call_seconds or not later:
            return None
        return max(0.0, self.report.first_call_seconds - statistics.median(later))


def study_run(label: str, trainer: str, seeds: int, n_train: int, epochs: int,
              cache: str | None = None) -> Run:
    """One `study run` in a child process; `cache` is a STUDY_XLA_CACHE directory."""
    env = {k: v for k, v in os.environ.items() if k not in ("STUDY_XLA_CACHE", "TF_XLA_FLAGS")}
    if cache:
        env["STUDY_XLA_CACHE"] = cache
    with tempfile.TemporaryDirectory(prefix="study-bench-") as tmp:
        argv = ["run", "--storage", f"sqlite:///{tmp}/study.db", "--trainer", trainer,
                "--epochs", str(epochs), "--seeds", ",".join(map(str, range(seeds))),
                "--set", f"data.n_train={n_train}"]
        out = Path(tmp) / "report.json"
        load_before = os.getloadavg()[0]
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, __file__, "--child", str(out), "--", *argv],
                              cwd=tmp, capture_output=True, text=True, env=env)
        wall = time.perf_counter() - start
        if proc.returncode != 0 or not out.exists():
            raise SystemExit(f"bench: {label} ({trainer}) failed:\n{proc.stderr[-3000:]}")
        report = ChildReport(**json.loads(out.read_text()))
        if report.exit_code != 0:
            raise SystemExit(f"bench: {label} ({trainer}): study run exited {report.exit_code}:\n"
                             f"{proc.stderr[-3000:]}")
    run = Run(label, trainer, 20 * seeds, n_train, wall, report, load_before, os.getloadavg()[0])
    print(f"  {label:28s} {trainer:10s} {wall:8.1f} s  storage {run.storage_share:5.1%}  "
          f"load {load_before:.1f}->{run.load_after:.1f}", flush=True)
    return run


def machine() -> dict[str, str]:
    from importlib import metadata

    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    tf = subprocess.run([sys.executable, "-c",
                         "from study.trainers._tf import tensorflow; tf = tensorflow(); "
                         "print(len(tf.config.list_physical_devices('GPU')))"],
                        capture_output=True, text=True)
    gpus = tf.stdout.strip() or "?"
    return {
        "cores": str(len(os.sched_getaffinity(0))),
        "cpu": cpu,
        "gpus seen by TensorFlow": gpus,
        "python": platform.python_version(),
        "tensorflow": metadata.version("tensorflow"),
        "keras": metadata.version("keras"),
        "optuna": metadata.version("optuna"),
        "git revision": subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                                       capture_output=True, text=True).stdout.strip() or "?",
    }


def fmt(x: float | None, spec: str = ".1f", suffix: str = " s") -> str:
    return "n/a" if x is None else f"{x:{spec}}{suffix}"


def render(runs: list[Run], info: dict[str, str], command: str, epochs: int) -> str:
    by = {(r.label, r.trainer): r for r in runs}
    lines = [
        f"Measured {datetime.datetime.now().isoformat(timespec='minutes')} by `{command}`; "
        f"every run is a fresh `study run` process ({epochs} epochs, SQLite in a temporary "
        "directory), timed from process start to exit.",
        "",
        "Machine: " + ", ".join(f"{k} {v}" for k, v in info.items()) + ".",
        "",
        "### Keras reference vs population trainer",
        "",
        "| study | trials | keras | population | ratio | storage share (keras / population) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for label, trials in (("article", 20), ("article x 5 seeds", 100)):
        k, p = by.get((label, "keras")), by.get((label, "population"))
        ratio = f"{k.wall / p.wall:.1f}x" if k and p else "n/a"
        share = " / ".join(fmt(r.storage_share if r else None, ".1%", "") for r in (k, p))
        lines.append(f"| {label} | {trials} | {fmt(k.wall if k else None)} | "
                     f"{fmt(p.wall if p else None)} | {ratio} | {share} |")
    k20, p20 = by.get(("article", "keras")), by.get(("article", "population"))
    k100, p100 = by.get(("article x 5 seeds", "keras")), by.get(("article x 5 seeds", "population"))

    def check(ok: bool | None) -> str:
        return "n/a" if ok is None else ("met" if ok else "missed")

    r20 = k20.wall / p20.wall if k20 and p20 else None
    r100 = k100.wall / p100.wall if k100 and p100 else None
    lines += [
        "",
        "| target | measured | |",
        "|---|---:|---|",
        f"| (a) article: population >= 20x faster than keras | {fmt(r20, '.1f', 'x')} | "
        f"{check(None if r20 is None else r20 >= 20)} |",
        f"| (a) article: whole `study run` < 20 s | {fmt(p20.wall if p20 else None)} | "
        f"{check(None if p20 is None else p20.wall < 20)} |",
        f"| (b) 100 trials: population >= 50x faster than keras | {fmt(r100, '.1f', 'x')} | "
        f"{check(None if r100 is None else r100 >= 50)} |",
        f"| 100 trials: storage < 15% of wall | "
        f"{fmt(p100.storage_share if p100 else None, '.1%', '')} | "
        f"{check(None if p100 is None else p100.storage_share < 0.15)} |",
    ]
    lines += [
        "",
        "### Where the population trainer's time goes",
        "",
        "| study | trials | rows | wall | TF import | training | of which 1st calls "
        "(compile) | storage | storage calls | rest (Python, Optuna, start) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        if r.trainer != "population":
            continue
        rep = r.report
        rest = r.wall - rep.tf_import_seconds - rep.train_seconds - rep.storage_seconds
        lines.append(
            f"| {r.label} | {r.trials} | {r.n_train} | {fmt(r.wall)} | "
            f"{fmt(rep.tf_import_seconds)} | {fmt(rep.train_seconds)} | "
            f"{fmt(rep.first_call_seconds)} ({fmt(r.compile_seconds)}) | "
            f"{fmt(rep.storage_seconds)} ({r.storage_share:.0%}) | {rep.storage_calls} | "
            f"{fmt(rest)} |")
    lines += [
        "",
        "Load average (1 min) before -> after each run: "
        + "; ".join(f"{r.label} {r.trainer} {r.load_before:.1f}->{r.load_after:.1f}"
                    for r in runs) + ".",
    ]
    slowest = max((r for r in runs if r.trainer == "population"),
                  key=lambda r: r.report.storage_seconds, default=None)
    if slowest is not None:
        calls = sorted(slowest.report.storage_by_call.items(), key=lambda kv: -kv[1][1])[:6]
        lines += ["", f"Storage calls of the population run '{slowest.label}' "
                      f"({slowest.trials} trials), by time: "
                  + ", ".join(f"{name} {int(n)} x {s:.2f} s" for name, (n, s) in calls) + "."]
    return "\n".join(lines) + "\n"


def write(path: Path, section: str) -> None:
    """Replace the generated section of `path`, keeping what people wrote around it."""
    text = path.read_text() if path.exists() else f"# Benchmarks\n\n{BEGIN}\n{END}\n"
    if BEGIN not in text or END not in text:
        text = text.rstrip() + f"\n\n{BEGIN}\n{END}\n"
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    path.write_text(f"{head}{BEGIN}\n{section}{END}{tail}")


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["--child"]:
        child(args[3:], Path(args[1]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="skip the keras 100-trial run and the 400-trial / 100k-row points")
    parser.add_argument("--epochs", type=int, default=50, help="epochs per trial (default: 50)")
    parser.add_argument("--write", metavar="FILE", help="rewrite FILE's generated section")
    opts = parser.parse_args(args)
    command = "python bench/bench.py " + " ".join(args)
    info = machine()
    print("machine: " + ", ".join(f"{k} {v}" for k, v in info.items()), flush=True)
    e = opts.epochs
    runs = [study_run("article", "keras", 1, 1000, e),
            study_run("article", "population", 1, 1000, e),
            study_run("article x 5 seeds", "population", 5, 1000, e)]
    with tempfile.TemporaryDirectory(prefix="study-xla-") as cache:
        # Opt-in STUDY_XLA_CACHE: the first run fills it, the second loads its program.
        study_run("article, filling the XLA cache", "population", 1, 1000, e, cache)
        runs.append(study_run("article, warm XLA cache", "population", 1, 1000, e, cache))
    if not opts.quick:
        runs.append(study_run("article x 5 seeds", "keras", 5, 1000, e))
        runs.append(study_run("article x 20 seeds", "population", 20, 1000, e))
    runs.append(study_run("article, 10k rows", "population", 1, 10_000, e))
    if not opts.quick:
        runs.append(study_run("article, 100k rows", "population", 1, 100_000, e))
    section = render(runs, info, command, e)
    print()
    print(section)
    if opts.write:
        write(Path(opts.write), section)
        print(f"wrote {opts.write}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
