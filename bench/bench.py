"""`make bench`: the population trainer against the article's loop, keras and the matmul peak.

All of them side by side, from one run.

Every measurement is a real `study run` (the CLI's own `main`, the runner, SQLite in a
temporary directory) in a child process of its own, so each pays its own interpreter
start, imports and XLA compilation, as a user's run does. The child times, from the
inside, what the wall time went to: importing TensorFlow, training (the population
trainer's compiled calls, the first of each shape including XLA's compile), and every
Optuna storage call made on the main thread.

The baseline is the article's own experiment loop (bench/article_loop.py: 20 Keras
`model.fit`s one after another), run once per bench as a process of its own and timed
the same way, start to exit. Each population study's ratio is per trial: (the article
loop's wall / 20) / (the study's wall / its trials). The targets: article x 5 seeds (100
trials) >= 60x; article x 100 seeds (2000 trials) >= 200x, its GFLOP/s inside
`trainer.train` >= 40% of the peak; article x 500 seeds (10,000 trials) with storage
under 5% of its wall and `study report` and `study query scaling` on it under 30 s each.

    python bench/bench.py                   # everything (20-25 min on 2 quiet cores)
    python bench/bench.py --quick           # a smoke: no 400 / 2000 / 10,000-trial studies,
                                            # no 100k rows, the digits keras on 1 seed
    python bench/bench.py --keras-100       # also keras on article x 5 seeds (~10 min more)
    python bench/bench.py --write BENCHMARKS.md
    python bench/bench.py --only-big        # the peak and the 10,000-trial row alone
    python bench/bench.py --only digits     # only "Your own model and data": the digits
                                            # MLP x 5 seeds, population and keras; the CNN
    python bench/bench.py --only digits --digits-keras-seeds 1   # keras on 20 trials, scaled
    python bench/bench.py --only answer     # refinement against a flat grid (no TensorFlow)
    python bench/bench.py --only batchnorm  # a BatchNorm MLP, population against keras
    python bench/bench.py --only workers    # 2000 trials with 1, 8, 64 workers on PostgreSQL

(`--big` is still accepted: the 10,000-trial row it used to add is now in every run but
`--quick`'s, and `--quick --big` adds it back.)

The same run measures the machine's limit: a 4096 x 4096 float32 matrix product on every
core, through numpy and through TensorFlow's XLA, best of several. Each population row
gives its arithmetic (study/flops.py's count) per second of training as a share of it.

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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# This tree's `study`, in this process and its children, whatever the installed package
# points at (an editable install of another checkout).
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
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
    parts_seconds: dict[str, float] = field(default_factory=dict)  # population: see _parts


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
    # What the runner reads of the trials (ledger.py) and `study run`'s closing summary.
    from study import ledger, query

    ledger.Ledger.trials = timed(ledger.Ledger.trials, "ledger")  # type: ignore[method-assign]
    query.trial_rows = timed(query.trial_rows, "trial_rows")


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

    build = population.program.program_for
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

    setattr(population.program, "program_for", program)  # noqa: B010


def _instrument_parts(report: ChildReport) -> None:
    """The population trainer's work outside its compiled program: drawing the initial
    weights, and the eager full-set loss (each member's divergence limit before training,
    the final training loss after it)."""
    from study.trainers.population import trainer

    for name in ("glorot_weights", "initial_weights", "mean_loss"):
        f = getattr(trainer, name)

        def timed(*args: Any, _f: Any = f, _name: str = name, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                out = _f(*args, **kwargs)
                if _name == "mean_loss":
                    out.numpy()  # eager, but wait for it here rather than at the caller
                return out
            finally:
                part = "initial weights" if _name != "mean_loss" else "full-set losses"
                report.parts_seconds[part] = (report.parts_seconds.get(part, 0.0)
                                              + time.perf_counter() - start)

        setattr(trainer, name, timed)


def child(argv: Sequence[str], out: Path) -> None:
    report = ChildReport()
    from study.trainers.compile_cache import use_compile_cache

    use_compile_cache()  # as the population trainer does, before TensorFlow loads
    from study.trainers import _tf

    _tf.lean()  # as the command line does
    start = time.perf_counter()
    from study.trainers._tf import tensorflow

    tensorflow()
    report.tf_import_seconds = time.perf_counter() - start
    _instrument_storage(report)
    _instrument_training(report)
    _instrument_parts(report)
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
    flops: Any = None  # study.flops.Flops: the arithmetic the study asked for
    report_seconds: float | None = None  # `study report` on the finished study
    query_seconds: float | None = None  # `study query scaling` on it

    @property
    def gflops(self) -> float | None:
        """GFLOP per second inside `trainer.train` (compiles included), training and
        evaluation together."""
        if self.flops is None or not self.report.train_seconds:
            return None
        return float(self.flops.total) / self.report.train_seconds / 1e9

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


def study_flops(seeds: int, n_train: int, epochs: int) -> Any:
    """The arithmetic of the article's grid with `seeds` seeds (study/flops.py)."""
    from study import space
    from study.flops import Flops, trial_flops
    from study.spec import apply_overrides, from_table, load_spec, to_table

    spec = from_table(apply_overrides(to_table(load_spec("article")), [
        f"data.n_train={n_train}", f"train.epochs={epochs}",
        f"search.seeds=[{','.join(map(str, range(seeds)))}]"]))
    widths = [spec.data.n_features, *spec.model.hidden, 1]
    total = Flops(0.0, 0.0)
    for cell in space.grid_cells(spec):
        plan = spec.train.plan(cell.batch_size, n_train)
        total += trial_flops(widths, plan.examples, plan.epochs, n_train, spec.data.n_val)
    return total


def _timed_cli(argv: Sequence[str], cwd: str, label: str) -> float:
    """Seconds a `study` command takes as a process of its own."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "study", *argv], cwd=cwd, capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    if proc.returncode != 0:
        raise SystemExit(f"bench: {label}: study {argv[0]} failed:\n{proc.stderr[-3000:]}")
    return time.perf_counter() - start


def _child_env(cache: str | None) -> dict[str, str]:
    """The environment of a bench child: this tree's `study` (whatever the installed
    package points at), and `cache` as its STUDY_XLA_CACHE (None: the default cache)."""
    env = {k: v for k, v in os.environ.items() if k not in ("STUDY_XLA_CACHE", "TF_XLA_FLAGS")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    if cache:
        env["STUDY_XLA_CACHE"] = cache
    return env


def _child(label: str, trainer: str, argv: Sequence[str], tmp: str, env: dict[str, str]
           ) -> tuple[float, ChildReport, float]:
    """Run `study ARGV` in a timed child process in `tmp`: its wall time, its report, and
    the load average before it started."""
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
    return wall, report, load_before


def study_run(label: str, trainer: str, seeds: int, n_train: int, epochs: int,
              cache: str | None = "off", follow: bool = False, sets: Sequence[str] = ()) -> Run:
    """One `study run` in a child process; `cache` is its STUDY_XLA_CACHE (default: no
    compile cache, so that every run compiles); `follow` also times `study report` and
    `study query scaling` on the finished study; `sets` are more `--set KEY=VALUE`s."""
    env = _child_env(cache)
    with tempfile.TemporaryDirectory(prefix="study-bench-") as tmp:
        argv = ["run", "--storage", f"sqlite:///{tmp}/study.db", "--trainer", trainer,
                "--epochs", str(epochs), "--seeds", ",".join(map(str, range(seeds))),
                "--set", f"data.n_train={n_train}", *(a for kv in sets for a in ("--set", kv))]
        wall, report, load_before = _child(label, trainer, argv, tmp, env)
        run = Run(label, trainer, 20 * seeds, n_train, wall, report, load_before,
                  os.getloadavg()[0], study_flops(seeds, n_train, epochs))
        if follow:
            storage = ["--storage", f"sqlite:///{tmp}/study.db"]
            run.report_seconds = _timed_cli(["report", *storage, "--out", f"{tmp}/dashboards"],
                                            tmp, label)
            run.query_seconds = _timed_cli(["query", "scaling", *storage], tmp, label)
    print(f"  {label:28s} {trainer:10s} {wall:8.1f} s  storage {run.storage_share:5.1%}  "
          f"load {load_before:.1f}->{run.load_after:.1f}", flush=True)
    return run


# --------------------------------------------------------------------------- the article's loop

ARTICLE_LOOP = ROOT / "bench" / "article_loop.py"
ARTICLE_TRIALS = 20  # its grid: 5 batch sizes x 4 learning rates, one seed


@dataclass
class ArticleLoop:
    """The article's own loop (bench/article_loop.py), timed as a process of its own."""

    wall: float  # process start to exit
    epochs: int
    losses: list[float]  # each combination's final training loss, in the article's order
    load_before: float
    load_after: float
    trials: int = ARTICLE_TRIALS

    @property
    def per_trial(self) -> float:
        return self.wall / self.trials


def article_losses(stdout: str) -> list[float]:
    """The final losses article_loop.py prints as JSON on its last line, one per
    combination of its grid; ValueError naming what is wrong otherwise."""
    lines = stdout.strip().splitlines()
    if not lines:
        raise ValueError("the article's loop printed nothing")
    try:
        rows = json.loads(lines[-1])
        losses = [float(row["loss"]) for row in rows]
    except (ValueError, TypeError, KeyError) as e:
        raise ValueError(f"the article's loop's last line is not its losses: {lines[-1][:200]!r}"
                         ) from e
    if len(losses) != ARTICLE_TRIALS:
        raise ValueError(f"the article's loop gave {len(losses)} losses, not {ARTICLE_TRIALS}")
    return losses


def article_loop(epochs: int) -> ArticleLoop:
    """bench/article_loop.py in a child process: the article's 20 `model.fit`s one after
    another, its wall time from process start to exit. Plain Keras: on a CPU `fit` does
    not compile with XLA, so there is no compile cache to be warm or cold (it is off)."""
    env = _child_env("off")
    with tempfile.TemporaryDirectory(prefix="study-bench-") as tmp:
        load_before = os.getloadavg()[0]
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, str(ARTICLE_LOOP), "--epochs", str(epochs)],
                              cwd=tmp, capture_output=True, text=True, env=env)
        wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"bench: the article's loop failed:\n{proc.stderr[-3000:]}")
    try:
        losses = article_losses(proc.stdout)
    except ValueError as e:
        raise SystemExit(f"bench: {e}") from None
    loop = ArticleLoop(wall, epochs, losses, load_before, os.getloadavg()[0])
    print(f"  {'the article loop':28s} {'keras fit':10s} {wall:8.1f} s  "
          f"{loop.per_trial:.2f} s per trial  load {load_before:.1f}->{loop.load_after:.1f}",
          flush=True)
    return loop


# The population rows set against the article's loop, and the issue's targets for them:
# a `study run`'s wall per trial that many times shorter than the article's.
VS_ARTICLE = (("article", 20), ("article x 5 seeds", 100), ("article x 20 seeds", 400),
              ("article x 100 seeds", 2000), ("article x 500 seeds", 10_000))
RATIO_TARGETS = {"article x 5 seeds": 60.0, "article x 100 seeds": 200.0}
# And the 2000-trial study's arithmetic per second inside `trainer.train`, as a share of
# the matmul peak measured in the same run.
SHARE_LABEL, SHARE_TARGET = "article x 100 seeds", 0.40


def ratio_vs_article(article: ArticleLoop, run: Run) -> float:
    """How many times shorter `run`'s wall per trial is than the article loop's."""
    return article.per_trial / (run.wall / run.trials)


@dataclass(frozen=True)
class VsArticle:
    """One row of "Against the article's own loop"; None where the run was not made."""

    label: str
    trials: int
    wall: float | None
    ratio: float | None
    target: float | None  # the ratio it should reach; None: no target

    @property
    def per_trial(self) -> float | None:
        return None if self.wall is None else self.wall / self.trials

    @property
    def met(self) -> bool | None:
        if self.target is None or self.ratio is None:
            return None
        return self.ratio >= self.target


def against_article(runs: Sequence[Run], article: ArticleLoop | None) -> list[VsArticle]:
    """The population rows of VS_ARTICLE, each with its ratio to the article loop."""
    by = {r.label: r for r in runs if r.trainer == "population"}
    rows = []
    for label, trials in VS_ARTICLE:
        run = by.get(label)
        rows.append(VsArticle(
            label, run.trials if run else trials, run.wall if run else None,
            ratio_vs_article(article, run) if run and article else None,
            RATIO_TARGETS.get(label)))
    return rows


def share_of_peak(run: Run | None, peak_gflops: float | None) -> float | None:
    """`run`'s GFLOP/s inside `trainer.train` as a share of the measured peak."""
    speed = run.gflops if run is not None else None
    if speed is None or not peak_gflops:
        return None
    return speed / peak_gflops


PEAK_SIZE = 4096
PEAK_PROGRAM = f"""
import json, time
import numpy as np
n = {PEAK_SIZE}
a = np.random.default_rng(0).random((n, n), dtype=np.float32)
b = np.random.default_rng(1).random((n, n), dtype=np.float32)
def best(f, tries=5):
    f()
    times = []
    for _ in range(tries):
        start = time.perf_counter(); f(); times.append(time.perf_counter() - start)
    return 2 * n ** 3 / min(times) / 1e9
out = {{"numpy": best(lambda: a @ b)}}
from study.trainers._tf import tensorflow
tf = tensorflow()
x, y = tf.constant(a), tf.constant(b)
mm = tf.function(lambda x, y: tf.matmul(x, y), jit_compile=True)
out["tensorflow"] = best(lambda: mm(x, y).numpy())
print(json.dumps(out))
"""


def _measured(program: str, what: str, prefix: Sequence[str] = ()) -> dict[str, float]:
    """Run a measuring `program` in a fresh interpreter (this tree's `study`, no compile
    cache), `prefix` before it (taskset, to pin it), and read its last line's JSON."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "STUDY_XLA_CACHE": "off"}
    proc = subprocess.run([*prefix, sys.executable, "-c", program], capture_output=True,
                          text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"bench: measuring {what} failed:\n{proc.stderr[-3000:]}")
    found: dict[str, float] = json.loads(proc.stdout.strip().splitlines()[-1])
    return found


def peak() -> dict[str, float]:
    """GFLOP/s of a large float32 matrix product on every core: numpy's and XLA's."""
    return _measured(PEAK_PROGRAM, "the matmul peak")


# The article's largest layer (64 -> 32) as the population trainer multiplies it: a tile
# of members, each its own rows and kernel, in a compiled loop (the product feeds the
# next iteration, so none is skipped), at the micro-batches of the smallest and largest
# batch sizes.
SHAPE_MEMBERS, SHAPE_ROWS = 29, (16, 256)
SHAPE_PROGRAM = f"""
import json, time
from study.trainers._tf import tensorflow
tf = tensorflow()
members, steps = {SHAPE_MEMBERS}, 400
out = {{}}
for rows in {SHAPE_ROWS}:
    a = tf.random.uniform([members, rows, 64])
    b = tf.random.uniform([members, 64, 32])
    def body(i, a):
        return i + 1, a + tf.reduce_sum(tf.matmul(a, b)) * 1e-12
    loop = tf.function(lambda a: tf.while_loop(lambda i, a: i < steps, body, (0, a))[1],
                       jit_compile=True)
    def empty(i, a):
        return i + 1, a + tf.reduce_sum(a[:, :1, :1]) * 1e-12
    base = tf.function(lambda a: tf.while_loop(lambda i, a: i < steps, empty, (0, a))[1],
                       jit_compile=True)
    def best(f):
        f(a).numpy()
        times = []
        for _ in range(5):
            start = time.perf_counter(); f(a).numpy(); times.append(time.perf_counter() - start)
        return min(times)
    seconds = max(best(loop) - best(base), 1e-9) / steps
    out[str(rows)] = 2 * members * rows * 64 * 32 / seconds / 1e9
print(json.dumps(out))
"""


def shape_rates() -> dict[str, float]:
    """GFLOP/s of XLA's batched matrix product on the article's 64 x 32 layer, one core,
    by micro-batch rows: what the trainer's arithmetic can reach at those shapes."""
    return _measured(SHAPE_PROGRAM, "the layer's matmul", ("taskset", "-c", "0"))


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


def check(ok: bool | None) -> str:
    return "n/a" if ok is None else ("met" if ok else "missed")


def render_vs_article(runs: Sequence[Run], article: ArticleLoop | None,
                      peak_gflops: float | None) -> list[str]:
    """The section "Against the article's own loop": each population study's wall per
    trial against the article loop's, measured in the same run, and the 2000-trial
    study's share of the matmul peak."""
    lines = ["### Against the article's own loop", ""]
    if article is None:
        lines += ["The article's loop was not run (`--only-big`): no ratios.", ""]
    else:
        lines += [
            f"The article's own loop (bench/article_loop.py: its {article.trials} combinations, "
            f"one Keras `model.fit` of {article.epochs} epochs each, one after another in one "
            f"process), in this run: {article.wall:.1f} s from process start to exit, "
            f"{article.per_trial:.2f} s per trial (load {article.load_before:.1f}->"
            f"{article.load_after:.1f}). A study's ratio is the article loop's seconds per "
            "trial over the study's: (article wall / 20) / (`study run` wall / trials).",
            "",
        ]
    lines += [
        "| study | trials | wall | per trial | ratio vs article loop | target | |",
        "|---|---:|---:|---:|---:|---|---|",
    ]
    for row in against_article(runs, article):
        per_trial = fmt(None if row.per_trial is None else 1000 * row.per_trial, ".1f", " ms")
        target = "none" if row.target is None else f">= {row.target:.0f}x"
        met = "" if row.target is None else check(row.met)
        lines.append(f"| {row.label} | {row.trials:,} | {fmt(row.wall)} | {per_trial} | "
                     f"{fmt(row.ratio, '.1f', 'x')} | {target} | {met} |")
    run = next((r for r in runs if r.label == SHARE_LABEL and r.trainer == "population"), None)
    share = share_of_peak(run, peak_gflops)
    speed = run.gflops if run is not None else None
    measured = ("n/a" if share is None or speed is None or peak_gflops is None
                else f"{share:.0%} of peak ({speed:.0f} of {peak_gflops:.0f} GFLOP/s)")
    lines.append(
        f"| {SHARE_LABEL}: GFLOP/s inside `trainer.train` (training + evaluation, compiles "
        f"included), share of the matmul peak | {run.trials if run else dict(VS_ARTICLE)[SHARE_LABEL]:,} "
        f"| | | {measured} | "
        f">= {SHARE_TARGET:.0%} | {check(None if share is None else share >= SHARE_TARGET)} |")
    return lines


def render(runs: list[Run], info: dict[str, str], command: str, epochs: int,
           limit: dict[str, float] | None = None, article: ArticleLoop | None = None,
           shapes: dict[str, float] | None = None) -> str:
    by = {(r.label, r.trainer): r for r in runs}
    best = max(limit.values()) if limit else None
    lines = [
        f"Measured {datetime.datetime.now().isoformat(timespec='minutes')} by `{command}`; "
        f"every run is a fresh `study run` process ({epochs} epochs, SQLite in a temporary "
        "directory), timed from process start to exit; so is the article's own loop, a "
        "plain Python process.",
        "",
        "Machine: " + ", ".join(f"{k} {v}" for k, v in info.items()) + ".",
        "",
        *render_vs_article(runs, article, best),
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
    if k100 is None:
        lines += ["", "The keras reference on 100 trials (about 10 min) is measured only with "
                      "`--keras-100`; without it, the rows that need it read n/a."]
    lines += [
        "",
        "### Where the population trainer's time goes",
        "",
    ]
    if limit:
        lines += [
            f"The machine's limit, measured in this run: a {PEAK_SIZE} x {PEAK_SIZE} float32 "
            "matrix product on every core, best of 5: "
            + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in limit.items())
            + f"; the peak below is the best, {best:.0f} GFLOP/s. A row's GFLOP/s is the "
            "arithmetic its trials asked for (study/flops.py: forward 2 x in x out per Dense "
            "layer per row, backward about twice that, optimizer updates not counted; "
            "training, then evaluation: validation every epoch and the final training loss) "
            "over the seconds inside `trainer.train`, compiles included.",
            "",
        ]
    if shapes:
        lines += [
            "What the matrix products the trainer is made of reach, measured in this run: "
            f"XLA's batched product of the article's largest layer ({SHAPE_MEMBERS} members, "
            "each its own rows x 64 times its own 64 x 32 kernel), in a compiled loop on one "
            "core: " + ", ".join(f"{v:.0f} GFLOP/s at {k} rows" for k, v in shapes.items())
            + " (the peak above is on every core).",
            "",
        ]
    lines += [
        "| study | trials | rows | wall | TF import | training | of which 1st calls "
        "(compile) | storage | storage calls | rest (Python, Optuna, start) "
        "| GFLOP (train + eval) | GFLOP/s | of peak |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        if r.trainer != "population":
            continue
        rep = r.report
        rest = r.wall - rep.tf_import_seconds - rep.train_seconds - rep.storage_seconds
        work = (f"{r.flops.training / 1e9:.0f} + {r.flops.evaluation / 1e9:.0f}"
                if r.flops is not None else "n/a")
        speed = r.gflops
        share = fmt(speed / best if speed is not None and best else None, ".0%", "")
        lines.append(
            f"| {r.label} | {r.trials} | {r.n_train} | {fmt(r.wall)} | "
            f"{fmt(rep.tf_import_seconds)} | {fmt(rep.train_seconds)} | "
            f"{fmt(rep.first_call_seconds)} ({fmt(r.compile_seconds)}) | "
            f"{fmt(rep.storage_seconds)} ({r.storage_share:.0%}) | {rep.storage_calls} | "
            f"{fmt(rest)} | {work} | {fmt(speed, '.1f', '')} | {share} |")
    lines += step_curve_cost(by)
    followed = [r for r in runs if r.report_seconds is not None]
    if followed:
        lines += [
            "",
            "### Large studies: storage, report and query",
            "",
            "| study | trials | wall | storage | storage share | `study report` "
            "| `study query scaling` | targets (storage < 5%, each command < 30 s) |",
            "|---|---:|---:|---:|---:|---:|---:|---|",
        ]
        for r in followed:
            assert r.report_seconds is not None and r.query_seconds is not None
            ok = r.storage_share < 0.05 and r.report_seconds < 30 and r.query_seconds < 30
            lines.append(
                f"| {r.label} | {r.trials} | {fmt(r.wall)} | {fmt(r.report.storage_seconds)} | "
                f"{r.storage_share:.1%} | {fmt(r.report_seconds)} | {fmt(r.query_seconds)} | "
                f"{'met' if ok else 'missed'} |")
    lines += [
        "",
        "Load average (1 min) before -> after each run: "
        + "; ".join([*([f"the article loop {article.load_before:.1f}->{article.load_after:.1f}"]
                       if article else []),
                     *(f"{r.label} {r.trainer} {r.load_before:.1f}->{r.load_after:.1f}"
                       for r in runs)]) + ".",
    ]
    slowest = max((r for r in runs if r.trainer == "population"),
                  key=lambda r: r.report.storage_seconds, default=None)
    if slowest is not None:
        calls = sorted(slowest.report.storage_by_call.items(), key=lambda kv: -kv[1][1])[:6]
        lines += ["", f"Storage calls of the population run '{slowest.label}' "
                      f"({slowest.trials} trials), by time: "
                  + ", ".join(f"{name} {int(n)} x {s:.2f} s" for name, (n, s) in calls) + "."]
    return "\n".join(lines) + "\n"


# The study without step curves, and the one it is compared with: the same but for them.
NO_STEP_CURVE = "article x 5 seeds, no step curve"
STEP_CURVE_ROWS = ("article x 5 seeds", NO_STEP_CURVE)
STEP_CURVE_TARGET = 0.10  # the most the step curve may add to the training time


def step_curve_cost(by: Mapping[tuple[str, str], Run]) -> list[str]:
    """The sentence on what the step curve costs, from the two rows that differ in it
    only (none when either is missing)."""
    from study.spec import CURVE_POINTS

    on, off = (by.get((label, "population")) for label in STEP_CURVE_ROWS)
    if on is None or off is None or not off.report.train_seconds:
        return []
    extra = on.report.train_seconds / off.report.train_seconds - 1
    return ["", f"Recording each trial's step curve (analysis.curve_every, about "
                f"{CURVE_POINTS} points a trial by default) costs {extra:+.1%} of the training "
                f"time of '{on.label}' ({fmt(on.report.train_seconds)} against "
                f"{fmt(off.report.train_seconds)} in '{off.label}', compiles included; wall "
                f"{fmt(on.wall)} against {fmt(off.wall)}); target at most "
                f"{STEP_CURVE_TARGET:.0%}: {check(extra <= STEP_CURVE_TARGET)}."]


def write(path: Path, section: str) -> None:
    """Replace the generated section of `path`, keeping what people wrote around it."""
    text = path.read_text() if path.exists() else f"# Benchmarks\n\n{BEGIN}\n{END}\n"
    if BEGIN not in text or END not in text:
        text = text.rstrip() + f"\n\n{BEGIN}\n{END}\n"
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    path.write_text(f"{head}{BEGIN}\n{section}{END}{tail}")


# --------------------------------------------------------------------------- your own model and data

DIGITS_BEGIN, DIGITS_END = "<!-- bench:digits:begin -->", "<!-- bench:digits:end -->"
DIGITS_SEEDS = 5  # the digits MLP grid (20 cells) x 5 seeds: 100 trials
CNN_SPEC = ROOT / "examples" / "digits_cnn.toml"


def spec_trials(spec: str, seeds: Sequence[int] | None) -> int:
    """Trials a grid spec (a built-in name or a TOML path) asks for, with `seeds` if given."""
    from study import space
    from study.spec import load_spec

    overrides = [f"search.seeds=[{','.join(map(str, seeds))}]"] if seeds is not None else []
    return len(space.grid_cells(load_spec(spec, overrides)))


def spec_flops(spec: str, seeds: Sequence[int] | None) -> Any:
    """The arithmetic (study/flops.py) of a grid spec whose model is the `hidden`
    shorthand MLP, on the spec's own data; None for a builder's model, which that count
    does not cover."""
    from study import space
    from study.data import make_dataset
    from study.flops import Flops, trial_flops
    from study.spec import load_spec
    from study.trainers.base import output_width

    overrides = [f"search.seeds=[{','.join(map(str, seeds))}]"] if seeds is not None else []
    loaded = load_spec(spec, overrides)
    if loaded.model.builder:
        return None
    data = make_dataset(loaded.data)
    widths = [data.n_features, *loaded.model.hidden, output_width(loaded.train, data)]
    total = Flops(0.0, 0.0)
    for cell in space.grid_cells(loaded):
        plan = loaded.train.plan(cell.batch_size, data.n_train)
        total += trial_flops(widths, plan.examples, plan.epochs, data.n_train, len(data.x_val))
    return total


def scaled_wall(wall: float, train_seconds: float, measured: int, wanted: int) -> float:
    """A run of `measured` trials scaled to `wanted`: what it paid once (interpreter,
    imports, storage, summary) kept, its training time scaled per trial.

    Storage grows with trials too (about 1.5 ms each), which this leaves out: the
    estimate is slightly low, so a ratio against it is slightly low, never flattered.
    """
    if measured <= 0 or wanted <= 0:
        raise ValueError(f"trials must be positive, got measured={measured}, wanted={wanted}")
    if not 0 <= train_seconds <= wall:
        raise ValueError(f"train_seconds={train_seconds} must lie between 0 and wall={wall}")
    return wall + train_seconds * (wanted / measured - 1)


def spec_run(label: str, trainer: str, spec: str, seeds: Sequence[int] | None) -> Run:
    """One `study run --spec SPEC` in a child process (the spec's own data, model and
    budget), timed as `study_run` times the article's. The child imports this checkout's
    `study` and `examples` (PYTHONPATH), which a builder spec names by module."""
    env = _child_env("off")  # every run compiles, as a first run does
    trials = spec_trials(spec, seeds)
    with tempfile.TemporaryDirectory(prefix="study-bench-") as tmp:
        argv = ["run", "--spec", spec, "--storage", f"sqlite:///{tmp}/study.db",
                "--trainer", trainer]
        if seeds is not None:
            argv += ["--seeds", ",".join(map(str, seeds))]
        wall, report, load_before = _child(label, trainer, argv, tmp, env)
    run = Run(label, trainer, trials, 0, wall, report, load_before, os.getloadavg()[0],
              spec_flops(spec, seeds))
    print(f"  {label:28s} {trainer:10s} {wall:8.1f} s  {trials} trials  "
          f"load {load_before:.1f}->{run.load_after:.1f}", flush=True)
    return run


def digits_runs(keras_seeds: int) -> list[Run]:
    """The digits MLP grid x 5 seeds with the population trainer, the same grid with the
    keras reference (on its first `keras_seeds` seeds), and the CNN builder example."""
    runs = [spec_run("digits MLP", "population", "digits", range(DIGITS_SEEDS)),
            spec_run("digits MLP", "keras", "digits", range(keras_seeds)),
            spec_run("digits CNN (builder)", "keras", str(CNN_SPEC), None)]
    return runs


def render_digits(runs: list[Run], info: dict[str, str], command: str) -> str:
    """The section "Your own model and data": digits MLP side by side, the CNN per trial."""
    by = {(r.label, r.trainer): r for r in runs}
    pop, ker = by[("digits MLP", "population")], by[("digits MLP", "keras")]
    cnn = by.get(("digits CNN (builder)", "keras"))
    wanted = pop.trials
    if ker.trials == wanted:
        ker_wall = ker.wall
        ker_cell = f"{ker.wall:.1f} s"
    else:
        ker_wall = scaled_wall(ker.wall, ker.report.train_seconds, ker.trials, wanted)
        ker_cell = (f"{ker_wall:.1f} s (estimated: {ker.trials} trials measured, "
                    f"{ker.wall:.1f} s, training scaled per trial)")
    ratio = ker_wall / pop.wall
    lines = [
        f"Measured {datetime.datetime.now().isoformat(timespec='minutes')} by `{command}`; "
        "every run is a fresh `study run --spec ...` process (the spec's own data, model and "
        "budget; no compile cache; SQLite in a temporary directory), timed from process "
        "start to exit.",
        "",
        "Machine: " + ", ".join(f"{k} {v}" for k, v in info.items()) + ".",
        "",
        "| study | trials | keras | population | ratio | target (>= 30x) |",
        "|---|---:|---:|---:|---:|---|",
        f"| `digits` (built-in spec: its MLP, 10 classes), seeds 0-{DIGITS_SEEDS - 1} | "
        f"{wanted} | {ker_cell} | {pop.wall:.1f} s | {ratio:.1f}x | "
        f"{'met' if ratio >= 30 else 'missed'} |",
        "",
        "| run | trials | wall | TF import | training | of which 1st calls (compile) "
        "| initial weights | full-set losses | compiled member epochs | storage "
        "| rest (Python, Optuna, start) | per trial | GFLOP (train + eval) | GFLOP/s |",
        "|---|" + "---:|" * 13,
    ]
    for r in (pop, ker, cnn):
        if r is None:
            continue
        rep = r.report
        rest = r.wall - rep.tf_import_seconds - rep.train_seconds - rep.storage_seconds
        population = r.trainer == "population"
        first = f"{fmt(rep.first_call_seconds)} ({fmt(r.compile_seconds)})" if population else "n/a"
        parts = rep.parts_seconds
        initial = parts.get("initial weights", 0.0) if population else None
        losses = parts.get("full-set losses", 0.0) if population else None
        epochs = (rep.train_seconds - (r.compile_seconds or 0.0) - (initial or 0.0)
                  - (losses or 0.0)) if population else None
        work = (f"{r.flops.training / 1e9:.0f} + {r.flops.evaluation / 1e9:.0f}"
                if r.flops is not None else "n/a")
        lines.append(
            f"| {r.label}, {r.trainer} | {r.trials} | {fmt(r.wall)} | "
            f"{fmt(rep.tf_import_seconds)} | {fmt(rep.train_seconds)} | {first} | "
            f"{fmt(initial)} | {fmt(losses)} | {fmt(epochs)} | "
            f"{fmt(rep.storage_seconds)} ({r.storage_share:.0%}) | {fmt(rest)} | "
            f"{fmt(r.wall / r.trials, '.2f')} | {work} | {fmt(r.gflops, '.1f', '')} |")
    lines += [
        "",
        "*training* is the time inside `trainer.train`. For the population trainer: its "
        "first call of each compiled shape (tracing and XLA's compile; in brackets, that "
        "call minus a typical later one), drawing the initial weights, the eager full-set "
        "losses (each member's divergence limit before training, its training loss after), "
        "and what remains: the compiled member epochs (training steps and each epoch's "
        "validation, in one program) with the Python between calls. GFLOP counts the "
        "shorthand MLP's matrix products (study/flops.py), training and evaluation; "
        "GFLOP/s is that over the training time, compiles included.",
    ]
    if cnn is not None:
        lines += ["", f"The CNN row is examples/digits_cnn.toml as written (its builder "
                      f"`examples.digits_cnn:build`, Conv2D 8 and 16, {cnn.trials} trials of "
                      "10 epochs), with the keras trainer in one process: "
                      f"{cnn.wall / cnn.trials:.2f} s of wall time per trial, "
                      f"{cnn.report.train_seconds / cnn.trials:.2f} s of it training."]
    lines += [
        "",
        "Load average (1 min) before -> after each run: "
        + "; ".join(f"{r.label} {r.trainer} {r.load_before:.1f}->{r.load_after:.1f}"
                    for r in runs) + ".",
    ]
    return "\n".join(lines) + "\n"


def replace_section(text: str, section: str, begin: str, end: str) -> str:
    """`text` with what lies between `begin` and `end` replaced by `section`; the markers
    appended at the end when absent."""
    if begin not in text or end not in text:
        text = text.rstrip() + f"\n\n{begin}\n{end}\n"
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{begin}\n{section}{end}{tail}"


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    # This checkout's `study`, in this process and in the child (run as this script), not
    # whichever one the environment has installed.
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    if args[:1] == ["--child"]:
        child(args[3:], Path(args[1]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="a short smoke: no 400-, 2000- or 10,000-trial study, no 100k-row "
                             "point, the digits keras reference on 1 seed")
    parser.add_argument("--epochs", type=int, default=50,
                        help="epochs per trial, the article loop's too (default: 50)")
    parser.add_argument("--write", metavar="FILE", help="rewrite FILE's generated section")
    parser.add_argument("--keras-100", action="store_true",
                        help="also the keras reference on article x 5 seeds (100 trials, ~10 "
                             "min on 2 cores), for the keras-vs-population targets on 100 trials")
    parser.add_argument("--big", action="store_true",
                        help="the 10,000-trial study (article x 500 seeds, with `study report` "
                             "and `study query scaling` on it) is now part of every run but "
                             "--quick's; this adds it to --quick's too")
    parser.add_argument("--only-big", action="store_true",
                        help="the peak and the 10,000-trial row alone")
    parser.add_argument("--only", choices=["digits", *EXTRA],
                        help="digits: only the 'Your own model and data' rows (digits MLP x "
                             "5 seeds, population and keras; the CNN builder example)")
    parser.add_argument("--digits-keras-seeds", type=int, choices=range(1, DIGITS_SEEDS + 1),
                        metavar="N", default=None,
                        help=f"measure the digits keras reference on its first N seeds (20 "
                             f"trials each) and scale its training to {DIGITS_SEEDS} (default: "
                             f"{DIGITS_SEEDS}, 1 with --quick)")
    opts = parser.parse_args(args)
    keras_seeds = opts.digits_keras_seeds or (1 if opts.quick else DIGITS_SEEDS)
    command = "python bench/bench.py " + " ".join(args)
    info = machine()
    print("machine: " + ", ".join(f"{k} {v}" for k, v in info.items()), flush=True)
    if opts.only in EXTRA:
        return _extra(opts.only, opts.write)
    if opts.only == "digits":
        section = render_digits(digits_runs(keras_seeds), info, command)
        print()
        print(section)
        if opts.write:
            path = Path(opts.write)
            path.write_text(replace_section(path.read_text() if path.exists() else "# Benchmarks\n",
                                            section, DIGITS_BEGIN, DIGITS_END))
            print(f"wrote {opts.write}")
        return 0
    limit = peak()
    print("matmul peak: " + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in limit.items()),
          flush=True)
    shapes = shape_rates()
    print("the article's 64 x 32 layer, batched, one core: "
          + ", ".join(f"{v:.0f} GFLOP/s at {k} rows" for k, v in shapes.items()), flush=True)
    e = opts.epochs
    if opts.only_big:
        runs = [study_run("article x 500 seeds", "population", 500, 1000, e, follow=True)]
        section = render(runs, info, command, e, limit, shapes=shapes)
        print()
        print(section)
        return 0
    article = article_loop(e)
    runs = [study_run("article", "keras", 1, 1000, e),
            study_run("article", "population", 1, 1000, e),
            study_run("article x 5 seeds", "population", 5, 1000, e),
            # What recording each trial's step curve (on by default) costs: the same
            # study with an interval no trial reaches, so none records (`STEP_CURVE_ROWS`).
            study_run(NO_STEP_CURVE, "population", 5, 1000, e,
                      sets=("analysis.curve_every=1000000000",))]
    if not opts.quick:
        runs.append(study_run("article x 20 seeds", "population", 20, 1000, e))
        runs.append(study_run("article x 100 seeds", "population", 100, 1000, e))
    with tempfile.TemporaryDirectory(prefix="study-xla-") as cache:
        # Opt-in STUDY_XLA_CACHE: the first run fills it, the second loads its program.
        study_run("article, filling the XLA cache", "population", 1, 1000, e, cache)
        runs.append(study_run("article, warm XLA cache", "population", 1, 1000, e, cache))
    runs.append(study_run("article, 10k rows", "population", 1, 10_000, e))
    if not opts.quick:
        runs.append(study_run("article, 100k rows", "population", 1, 100_000, e))
    if not opts.quick or opts.big:
        runs.append(study_run("article x 500 seeds", "population", 500, 1000, e, follow=True))
    if opts.keras_100:
        runs.append(study_run("article x 5 seeds", "keras", 5, 1000, e))
    digits = render_digits(digits_runs(keras_seeds), info, command)
    section = render(runs, info, command, e, limit, article, shapes)
    print()
    print(section)
    print(digits)
    if opts.write:
        write(Path(opts.write), section)
        path = Path(opts.write)
        path.write_text(replace_section(path.read_text(), digits, DIGITS_BEGIN, DIGITS_END))
        print(f"wrote {opts.write}")
    for name in EXTRA:
        _extra(name, opts.write)
    return 0


# Sections of their own, each a module beside this file with `section() -> str` and its
# BEGIN / END markers: "The answer" (refinement against a flat grid), the BatchNorm MLP
# (population against keras), and the workers on PostgreSQL.
EXTRA = ("answer", "batchnorm", "workers")


def _extra(name: str, write_to: str | None) -> int:
    """Measure one section of its own (EXTRA) and, with `write_to`, put it in the file."""
    import importlib

    module = importlib.import_module(name)  # bench/<name>.py, beside this file
    section = module.section()
    print(section, flush=True)
    if write_to:
        path = Path(write_to)
        text = path.read_text() if path.exists() else "# Benchmarks\n"
        path.write_text(replace_section(text, section, module.BEGIN, module.END))
        print(f"wrote {write_to}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
