"""The `study` command: a thin layer over the library, one function per command.

Library errors become one line on stderr and an exit code here, and only here:
0 success, 2 usage or spec error, 1 anything else, 130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from study import __version__
from study.errors import StudyError
from study.storage import DEFAULT_STORAGE

if TYPE_CHECKING:
    from study.data import Dataset
    from study.spec import Spec
    from study.trainers import Trainer

EXIT_INTERRUPTED = 130


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (and exit 2), not usage text plus a line."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _quiet_libraries(verbose: bool) -> None:
    if verbose:
        os.environ["STUDY_VERBOSE"] = "1"
        return
    import optuna

    # Optuna logs every study load and trial at INFO; we print our own progress.
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", module="optuna")
    warnings.filterwarnings("ignore", category=UserWarning, module="keras")


def _seeds(text: str) -> list[int]:
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers like 0,1,2, got {text!r}"
        ) from None
    if not seeds:
        raise argparse.ArgumentTypeError(f"expected at least one seed, got {text!r}")
    return seeds


def _add_storage(p: argparse.ArgumentParser) -> None:
    p.add_argument("--storage", default=DEFAULT_STORAGE,
                   help=f"Optuna storage URL (default: {DEFAULT_STORAGE})")
    p.add_argument("--study-name", help="study name (default: the spec's name, else its data "
                   "source's: a file's stem, a loader's name)")


def _add_spec(p: argparse.ArgumentParser) -> None:
    p.add_argument("--spec", default="article",
                   help="built-in spec name or path to a TOML spec (default: article)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a spec field, e.g. --set train.epochs=5 (repeatable)")
    p.add_argument("--epochs", type=int, help="shortcut for --set train.epochs=N")
    p.add_argument("--seeds", type=_seeds, help="shortcut for --set search.seeds=[..], e.g. 0,1,2")
    p.add_argument("--trainer", help="auto (population when it supports the spec), population, "
                   "keras (the reference), or module:function, a trainer of your own "
                   "(default: the spec's, auto)")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="show TensorFlow and Optuna logs, and tracebacks")


def _spec_from_args(args: argparse.Namespace) -> object:
    from study.spec import load_spec

    overrides = list(args.overrides)
    if args.epochs is not None:
        overrides.append(f"train.epochs={args.epochs}")
    if args.seeds is not None:
        overrides.append(f"search.seeds=[{','.join(map(str, args.seeds))}]")
    if args.trainer is not None:
        overrides.append(f"run.trainer={args.trainer}")
    spec = load_spec(args.spec, overrides)
    if args.epochs is not None and spec.train.budget != "epochs":
        from study.errors import SpecError

        # train.epochs is read only by the epochs budget: the shortcut would do nothing.
        raise SpecError(f"--epochs: the spec's budget is {spec.train.budget!r}, not epochs "
                        f"(set train.{spec.train.budget} instead)")
    return spec


# --------------------------------------------------------------------------- commands


def cmd_run(args: argparse.Namespace) -> int:
    """Create or resume the study and run every pending trial, then print the grid.

    With --workers N, N local worker processes share the study (each cell still runs
    exactly once); more machines can join with `study worker` on the same storage.

    Example: study run --spec article --seeds 0,1,2 --storage sqlite:///storage/study.db
    """
    from study import api
    from study.spec import Spec

    spec = _spec_from_args(args)
    assert isinstance(spec, Spec)
    # The data set is loaded and checked, and a builder's model built once, before the
    # database is touched: bad data or a bad builder writes nothing.
    data = api.load_data(spec)
    spec = api.for_data(spec, data)
    builder_sha256 = api.check_model(spec, data)
    ctx = api.open_run(spec, args.storage, args.study_name, args.workers, data, builder_sha256)
    _train(ctx, args.workers, _worker_args(args), quiet=False, data=data)
    published = api.publish_weights(ctx)
    if published is not None:
        print(f"Kept the weights of the best cell (batch_size={published.batch_size}, "
              f"learning_rate={published.learning_rate:g}) for seeds "
              f"{', '.join(map(str, published.seeds)) or 'none'}"
              + (f"; none staged for seeds {', '.join(map(str, published.missing))}"
                 if published.missing else "") + ".", file=sys.stderr)
    if api.refresh_note(ctx):
        print("Refreshed the study's summary note for optuna-dashboard.", file=sys.stderr)
    _print_summary(ctx)
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    """Join an existing study as one more worker, from this or any machine.

    The worker reads the study's stored spec, claims cells no one else holds, and
    stops when none is left. Start as many as you like against the same storage.

    Example: study worker --storage postgresql+psycopg://user:pw@dbhost/study --study-name article
    """
    from study import api

    sets = list(args.overrides)
    if args.trainer is not None:
        sets.append(f"run.trainer={args.trainer}")
    if args.pool_member:
        # The pool's parent owns Ctrl-C and stops us with one SIGTERM.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    ctx, data = api.open_join(args.storage, args.study_name, sets, args.data_file,
                              args.model_file)
    _train(ctx, 1, [], quiet=args.pool_member, data=data)
    return 0


def _worker_args(args: argparse.Namespace) -> list[str]:
    """What a pool's workers need beyond the stored spec: run-only choices."""
    extra: list[str] = []
    for item in args.overrides:
        if item.strip().startswith("run."):
            extra += ["--set", item]
    if args.trainer is not None:
        extra += ["--trainer", args.trainer]
    if args.verbose:
        extra.append("--verbose")
    return extra


def _train(ctx: object, workers: int, worker_args: list[str], quiet: bool, data: Dataset
           ) -> None:
    """`api.train`, with what a person sees: the plan, the progress bar, the trainer's
    fallback and killed workers (a pool's member says only the fallback)."""
    from study import api, runner
    from study.progress import Progress

    assert isinstance(ctx, runner.StudyContext)
    done, total = api.tally(ctx)
    if done >= total:
        if not quiet:
            print(f"Study {ctx.name!r} is complete ({done}/{total} trials); nothing to train.")
        return
    if not quiet:
        how = f", {workers} workers" if workers > 1 else ""
        print(f"Study {ctx.name!r}: {total - done} of {total} trials to run "
              f"(spec {ctx.spec.name!r}, storage {_masked(ctx.url)}{how}).", file=sys.stderr)
    progress = None if quiet else Progress(total, done)
    start = time.perf_counter()
    try:
        # Which trainer trains is never a silent choice, and said once per study: by a
        # pool's parent (api.train) or a worker on its own, never by a pool's members.
        killed = api.train(ctx, data, workers, worker_args, progress,
                           on_fallback=None if quiet else _say_fallback)
        if killed:
            print(f"\nstudy: {killed} worker(s) were killed; the others re-ran their trials.",
                  file=sys.stderr)
        if workers > 1:
            api.require_finished(ctx)
    finally:
        if progress is not None:
            progress.close()
    if not quiet and workers == 1:
        # What the database cost this run (the pool's workers each keep their own).
        wall = time.perf_counter() - start
        print(f"storage: {ctx.storage_seconds:.1f} s of {wall:.1f} s "
              f"({ctx.storage_seconds / max(wall, 1e-9):.1%}: claims and records)",
              file=sys.stderr)


def _say_fallback(line: str) -> None:
    print(f"study: {line}", file=sys.stderr)


def _trainer_factory(spec: Spec) -> Callable[[], Trainer]:
    """The trainer `study run` and `study worker` train with, saying on stderr when it
    falls back to the keras trainer."""
    from study import api

    return api.trainer_factory(spec, _say_fallback)


def _masked(url: str) -> str:
    from study.storage import mask

    return mask(url)


def _print_summary(ctx: object) -> None:
    from study.runner import StudyContext
    from study.store import trial_rows
    from study.summary import summary_lines

    assert isinstance(ctx, StudyContext)
    # Plain SQL without the curves, as `study query` reads: Optuna's reader builds every
    # trial whole, seconds for a study of 10,000.
    with ctx.storage.engine.connect() as conn:
        records = [row.record for row in trial_rows(conn, ctx.study_id)]
    for line in summary_lines(records, ctx.spec, ctx.study.user_attrs, ctx.name,
                              _masked(ctx.url)):
        print(line)
    for line in next_steps(ctx.url, ctx.name):
        print(line)


def self_command() -> str:
    """How to run `study` again from the current directory, as this process was run: the
    bare name when it is the one on PATH, else the script's path, else `python -m study`."""
    import shlex
    import shutil

    argv0 = sys.argv[0] if sys.argv else ""
    if os.path.basename(argv0) == "study":
        on_path = shutil.which("study")
        if on_path and os.path.realpath(on_path) == os.path.realpath(argv0):
            return "study"
        if os.path.exists(argv0):
            rel = os.path.relpath(argv0)
            return shlex.quote(rel if os.sep in rel else f".{os.sep}{rel}")
    return f"{shlex.quote(sys.executable)} -m study"


def storage_arg(url: str) -> str:
    """`--storage URL`, quoted for a shell (the password masked)."""
    import shlex

    return f"--storage {shlex.quote(_masked(url))}"


def study_args(url: str, name: str) -> str:
    """`--storage URL --study-name NAME`, quoted for a shell (the password masked)."""
    import shlex

    return f"{storage_arg(url)} --study-name {shlex.quote(name)}"


def next_steps(url: str, name: str) -> list[str]:
    """The commands a person runs next on this study, each working from here."""
    me, where = self_command(), study_args(url, name)
    return ["Next:",
            f"  {me} report {where}      figures (offline HTML) and the dashboard note",
            f"  {me} dashboard {storage_arg(url)}      browse it in optuna-dashboard",
            f"  {me} query trials {where}      every trial as a table (see README)"]


# --------------------------------------------------------------------------- results


def _add_study_storage(p: argparse.ArgumentParser) -> None:
    p.add_argument("--storage", default=DEFAULT_STORAGE,
                   help=f"Optuna storage URL (default: {DEFAULT_STORAGE})")
    p.add_argument("--study-name",
                   help="study name (default: 'article', or the storage's only study)")
    p.add_argument("-v", "--verbose", action="store_true", help="show tracebacks")


def cmd_report(args: argparse.Namespace) -> int:
    """Write the study's figures and an index page to dashboards/<study>/ (offline HTML), and store
    the article's chart, the heat map, the scaling chart and a summary note (opening with
    what the study found) on the study for optuna-dashboard.

    Example: study report --storage sqlite:///storage/study.db --out dashboards/article
    """
    from pathlib import Path

    from study.report import write_report

    name = args.study_name
    if name is None and args.spec is not None:
        from study.spec import default_study_name, load_spec

        name = default_study_name(load_spec(args.spec))
    out = Path(args.out) if args.out is not None else None
    report = write_report(args.storage, name, out, dashboard=not args.no_dashboard)
    print(f"Study {report.study!r} ({report.trials} trials): wrote {len(report.files)} files "
          f"({report.bytes / 1e6:.1f} MB) to {report.out}/ in {report.seconds:.1f}s.")
    for file, why in report.skipped.items():
        print(f"  not drawn: {file}: {why}")
    if report.dashboard:
        print("Stored the article's chart, the heat map, the scaling chart and a summary note "
              f"on the study; see them with: {self_command()} dashboard "
              f"{storage_arg(args.storage)}")
    print(f"Open {(report.out / 'index.html').resolve().as_uri()}")
    return 0


def cmd_query(args: argparse.Namespace) -> int:
    """Ask the study database a question, read-only: a named query or your own SELECT.

    Named queries: trials (one row per trial), grid (mean objective per batch size x
    learning rate, with 95% bootstrap intervals over seeds), best-lr (best learning rate
    per batch size, refined, with its interval), scaling (lr* ~ B^alpha with its interval,
    verdicts on the inverse, constant, square-root and linear rules, McCandlish's fit, the
    noise scale, and the conclusion), curves (per-epoch losses; one trial with --trial N),
    studies (every study in the storage).
    The database is opened read-only; a statement that would write is refused (exit 2).

    Example: study query grid --format csv
    """
    from study import query
    from study.errors import UsageError

    if (args.name is None) == (args.sql is None):
        raise UsageError(f"give a query name ({', '.join(query.NAMED)}) or --sql \"SELECT ...\""
                         + (", not both" if args.name is not None else ""))
    if args.sql is not None:
        table = query.run_sql(args.storage, args.sql)
    else:
        table = query.run_named(args.storage, args.name, args.study_name, args.trial)
    text = query.render(table, args.format)
    try:
        if text:
            print(text, flush=True)
    except BrokenPipeError:
        # `study query trials | head`: the reader has what it wanted; say nothing more.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def cmd_dashboard(args: argparse.Namespace) -> int:
    """Browse the storage's studies in optuna-dashboard, with the figures and note that
    `study report` stored. Listens on 127.0.0.1 unless --host says otherwise; Ctrl-C stops it.

    Example: study dashboard --storage sqlite:///storage/study.db --port 8080
    """
    from study.dashboard import exposure_warning, serve

    warning = exposure_warning(args.host)
    if warning:
        print(f"study dashboard: {warning}", file=sys.stderr)
    serve(args.storage, args.host, args.port, announce=lambda line: print(line, flush=True))
    print("study dashboard: stopped.", file=sys.stderr)
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    """Delete a study, its trials and everything stored on it, from the storage. Asks
    first unless --yes; refused while the study's workers are running.

    Example: study delete --storage sqlite:///storage/study.db --study-name old --yes
    """
    from study import api
    from study.errors import UsageError
    from study.store import study_name as resolve

    resolve(args.storage, args.study_name)  # a missing study: one line before any question
    if not args.yes:
        if not sys.stdin.isatty():
            raise UsageError(f"--yes: deleting study {args.study_name!r} needs --yes when "
                             "no one is at the terminal to confirm")
        answer = input(f"Delete study {args.study_name!r} and all its trials from "
                       f"{_masked(args.storage)}? Type its name to confirm: ")
        if answer.strip() != args.study_name:
            print("study delete: not confirmed; nothing deleted.", file=sys.stderr)
            return 1
    n = api.delete(args.storage, args.study_name)
    print(f"Deleted study {args.study_name!r} ({n} trials) from {_masked(args.storage)}.")
    return 0


# --------------------------------------------------------------------------- main


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "run": cmd_run, "worker": cmd_worker,
    "report": cmd_report, "query": cmd_query, "dashboard": cmd_dashboard,
    "delete": cmd_delete,
}


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="study",
        description="Study how batch size and learning rate interact when a network trains.",
        epilog="Example: study run --spec article --epochs 5",
    )
    parser.add_argument("--version", action="version", version=f"study {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    p = sub.add_parser("run", help="create or resume a study and run its pending trials",
                       description=cmd_run.__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_spec(p)
    _add_storage(p)
    p.add_argument("--workers", type=int, default=1,
                   help="local worker processes sharing the study (default 1: in this process)")
    p = sub.add_parser("worker", help="join an existing study as one more worker",
                       description=cmd_worker.__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_storage(p)
    p.add_argument("--trainer", help="override the stored spec's trainer (a study of your own "
                   "trainer refuses another)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a run setting, e.g. --set run.heartbeat_seconds=2")
    p.add_argument("--pool-member", action="store_true", help=argparse.SUPPRESS)
    # From a pool started by study.run(data=..., model=fn): see handoff.py.
    p.add_argument("--data-file", help=argparse.SUPPRESS)
    p.add_argument("--model-file", help=argparse.SUPPRESS)
    p.add_argument("-v", "--verbose", action="store_true",
                   help="show TensorFlow and Optuna logs, and tracebacks")
    _add_result_commands(sub)
    return parser


def _add_result_commands(sub: Any) -> None:
    from study.dashboard import DEFAULT_HOST, DEFAULT_PORT
    from study.query import FORMATS, NAMED

    raw = argparse.RawDescriptionHelpFormatter
    p = sub.add_parser("report", help="write dashboards/<study>/ (figures, index) and store our figures "
                       "in optuna-dashboard", description=cmd_report.__doc__, formatter_class=raw)
    _add_study_storage(p)
    p.add_argument("--out", help="directory to write (default: dashboards/<study name>)")
    p.add_argument("--spec", help="report the study named by this spec (built-in name or path), "
                   "unless --study-name says otherwise")
    p.add_argument("--no-dashboard", action="store_true",
                   help="only write the files; store nothing on the study")
    p = sub.add_parser("query", help="read-only queries: trials, grid, best-lr, scaling, curves, "
                       "studies, or --sql", description=cmd_query.__doc__, formatter_class=raw)
    p.add_argument("name", nargs="?", choices=NAMED, metavar="NAME",
                   help=f"a named query: {', '.join(NAMED)}")
    p.add_argument("--sql", help="your own read-only statement, exactly one, e.g. "
                   "\"SELECT COUNT(*) FROM trials\"")
    p.add_argument("--trial", type=int, metavar="N", help="curves: only trial number N")
    p.add_argument("--format", choices=FORMATS, default="table",
                   help="table (default), csv or json")
    _add_study_storage(p)
    p = sub.add_parser("dashboard", help="browse the storage in optuna-dashboard",
                       description=cmd_dashboard.__doc__, formatter_class=raw)
    p.add_argument("--storage", default=DEFAULT_STORAGE,
                   help=f"Optuna storage URL (default: {DEFAULT_STORAGE})")
    p.add_argument("--host", default=DEFAULT_HOST,
                   help=f"address to listen on (default: {DEFAULT_HOST}, this machine only)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT,
                   help=f"port (default: {DEFAULT_PORT}; 0 picks a free one)")
    p.add_argument("-v", "--verbose", action="store_true", help="show tracebacks")
    p = sub.add_parser("delete", help="delete a study and its trials",
                       description=cmd_delete.__doc__, formatter_class=raw)
    p.add_argument("--storage", default=DEFAULT_STORAGE,
                   help=f"Optuna storage URL (default: {DEFAULT_STORAGE})")
    p.add_argument("--study-name", required=True, help="the study to delete (no default)")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p.add_argument("-v", "--verbose", action="store_true", help="show tracebacks")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from study.trainers import _tf

    _tf.lean()  # a command's process never uses what TensorFlow's import loads for others
    verbose = bool(getattr(args, "verbose", False))
    _quiet_libraries(verbose)
    storage = getattr(args, "storage", "")
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print("\nstudy: interrupted; finished trials are kept. Run the same command again "
              "to continue.", file=sys.stderr)
        return EXIT_INTERRUPTED
    except StudyError as e:
        print(f"study {args.command}: error: {_scrub(str(e), storage)}", file=sys.stderr)
        return e.exit_code
    except Exception as e:
        if verbose:
            raise
        message = _describe_unexpected(e, storage)
        print(f"study {args.command}: error: {message}", file=sys.stderr)
        return 1


def _scrub(text: str, url: str) -> str:
    from study.storage import scrub

    return scrub(text, url) if url else text


def _describe_unexpected(e: Exception, url: str) -> str:
    """One line for an error we did not plan for; storage failures get their own wording."""
    from study.storage import describe_error, is_storage_error

    if is_storage_error(e):
        return describe_error(e, url)
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return _scrub(f"{type(e).__name__}: {text} (rerun with --verbose for the traceback)", url)


