"""The one seam to the database: Optuna's RDB storage, opened and locked the same way.

Optuna owns the schema; we never alter its tables. What we add:
- validation of a storage URL before anything is created, with messages that name it
  (password masked, always);
- SQLite tuned for many small commits: WAL journal and `synchronous=NORMAL` (a
  commit survives the process being killed; only an OS crash could lose the last
  ones) and a generous busy timeout;
- a cross-process claim lock (an advisory lock on PostgreSQL, `flock` beside a SQLite
  file) so that workers never take the same grid cell;
- on PostgreSQL, one connection per process (`POOL`), which the runner, its heartbeat
  thread and the claim lock share;
- a read-only view of the schema for checks and queries that must not write.

Connections on PostgreSQL. Each process that opens a storage (a worker, the pool's
parent, `study query`) holds one: SQLAlchemy's pool of one connection with no overflow
(`POOL`), used in turn by the runner, its heartbeat thread and the claim lock (a
session-level advisory lock taken on that same connection, `claim_lock`); the checks
before anything is written open one more for a moment each, one after the other, and
close it. `study run --workers N` thus holds N + 1 connections: 17 measured in
`pg_stat_activity` for 16 workers, 65 for 64 (bench/workers.py; it was 3 a worker and
2 for the parent: 50 measured for 16; 194 for 64, twice what a default server takes).
A server with the default `max_connections = 100` keeps 3 of them for superusers, so it
takes about 90 workers with room for a dashboard and a `psql`. Beyond, raise
`max_connections` (each connection is a server process of a few MB). PgBouncer in
transaction mode will not do: a session-level advisory lock belongs to one server
connection, and transaction pooling hands each transaction of a claim to whichever
server connection is free, so the lock would not hold (nor be released where taken).
Session mode keeps the lock right but saves no connections.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import sqlite3
import subprocess
import time
import weakref
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from study.errors import StorageError, StorageUsageError

if TYPE_CHECKING:
    import optuna
    import sqlalchemy
    from sqlalchemy.engine import URL

# Relative to the current directory. Its folder is created when a study is first
# written there (`open_storage`), so `study run` works from any directory; a folder in
# a URL the user gave must exist already (a typo there would scatter databases).
DEFAULT_STORAGE = "sqlite:///storage/study.db"
SQLITE_BUSY_TIMEOUT_S = 60.0

# One connection per process, no overflow: the claim lock relies on every checkout
# getting that same connection (it holds a session-level advisory lock across the
# claim's transactions). A thread waits for it while another holds it, for a
# transaction at a time (`pool_timeout` bounds a wait that would mean a stuck one).
POOL: dict[str, Any] = {"pool_size": 1, "max_overflow": 0, "pool_timeout": 120}
# The engines made with `POOL`: every checkout of one gets the same connection.
_SINGLE: weakref.WeakSet[Any] = weakref.WeakSet()
# How long one attempt at the claim lock may hold the shared connection before
# giving it up for a moment (to the heartbeat thread) and trying again.
LOCK_SLICE_MS = 500


def parse_url(url: str) -> URL:
    """A SQLAlchemy URL for `url`, or a one-line error naming what is wrong with it."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        parsed = make_url(url)
    except ArgumentError:
        raise StorageUsageError(
            f"--storage: {url!r} is not a database URL (e.g. {DEFAULT_STORAGE})"
        ) from None
    try:
        parsed.get_dialect()
    except NoSuchModuleError:
        raise StorageUsageError(
            f"--storage: unknown database kind {parsed.drivername!r} in {mask(url)}"
        ) from None
    except ImportError as e:
        hint = " (pip install 'study[postgres]')" if parsed.get_backend_name() == "postgresql" else ""
        raise StorageUsageError(
            f"--storage: no driver for {parsed.drivername!r}: {e.name or e}{hint}"
        ) from None
    if parsed.get_backend_name() == "sqlite":
        db = parsed.database or ""
        if db in ("", ":memory:") or db.startswith("file::memory:"):
            raise StorageUsageError(
                f"--storage: {url!r} is an in-memory SQLite database; the study would be lost"
            )
        parent = Path(db).parent
        if not parent.is_dir() and url != DEFAULT_STORAGE:
            raise StorageUsageError(f"--storage: directory {str(parent)!r} does not exist ({url})")
    return parsed


def mask(url: str) -> str:
    """The URL with its password replaced by ***, for anything a human reads."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url


def scrub(text: str, url: str) -> str:
    """`text` with the URL's password, if any, replaced by ***."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        password = make_url(url).password
    except ArgumentError:
        return text
    return text.replace(str(password), "***") if password else text


def is_sqlite(url: str) -> bool:
    return parse_url(url).get_backend_name() == "sqlite"


def sqlite_path(url: str) -> Path | None:
    parsed = parse_url(url)
    return Path(parsed.database or "") if parsed.get_backend_name() == "sqlite" else None


def _sqlite_engine_kwargs(path: str) -> dict[str, Any]:
    def connect() -> sqlite3.Connection:
        # check_same_thread=False: SQLAlchemy's pool hands connections between the
        # runner and its heartbeat thread, never to two at once.
        conn = sqlite3.connect(path, timeout=SQLITE_BUSY_TIMEOUT_S, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn

    return {"creator": connect}


def open_storage(url: str, *, create_schema: bool = True) -> optuna.storages.RDBStorage:
    """Optuna's RDB storage for `url`; the schema is created only when asked."""
    import optuna
    import sqlalchemy.exc

    parsed = parse_url(url)
    kwargs: dict[str, Any] = {}
    if parsed.get_backend_name() == "sqlite":
        path = Path(parsed.database or "")
        if path.exists():
            check_sqlite_file(path)
        elif url == DEFAULT_STORAGE and create_schema:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise StorageUsageError(f"--storage: cannot create {str(path.parent)!r} for "
                                        f"the default {url}: {e.strerror or e}") from None
        kwargs = _sqlite_engine_kwargs(parsed.database or "")
    else:
        kwargs = {"pool_pre_ping": True}
    # On PostgreSQL one connection per process (`POOL`). Optuna's schema check opens a
    # second while a session holds the first (`check_table_schema_compatibility`), which
    # a pool of one would wait on forever: a storage that joins (its schema made) checks
    # the schema's version itself; one that may create the schema (the pool's parent, a
    # single process) opens with Optuna's default pool and then moves to one connection.
    joins = parsed.get_backend_name() == "postgresql" and not create_schema
    try:
        storage = optuna.storages.RDBStorage(
            url, engine_kwargs={**kwargs, **POOL} if joins else kwargs,
            skip_table_creation=not create_schema, skip_compatibility_check=joins,
        )
        if joins:
            _SINGLE.add(storage.engine)
            current, head = storage.get_current_version(), storage.get_head_version()
    except (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError) as e:
        raise StorageUsageError(f"--storage: cannot open {mask(url)}: {_first_line(e, url)}") from None
    if joins and current != head:
        raise StorageUsageError(
            f"--storage: {mask(url)} has Optuna's schema {current}; this Optuna needs {head} "
            "(optuna storage upgrade --storage URL)")
    if parsed.get_backend_name() == "postgresql" and not joins:
        _one_connection(storage)
    return storage


def _one_connection(storage: optuna.storages.RDBStorage) -> None:
    """Give `storage` an engine of one connection (`POOL`) once it is open: past its
    opening, every query of the storage goes through `engine` and `scoped_session`, both
    replaced here; the engine that opened it is closed."""
    import sqlalchemy

    from study.optuna_compat import use_engine

    kwargs: dict[str, Any] = {"pool_pre_ping": True, **POOL}
    engine = sqlalchemy.create_engine(storage.url, **kwargs)
    _SINGLE.add(engine)
    use_engine(storage, engine, kwargs)


def is_storage_error(e: BaseException) -> bool:
    """Whether `e` comes from the database (or its driver) rather than from our code."""
    import optuna
    import sqlalchemy.exc

    if isinstance(e, sqlalchemy.exc.SQLAlchemyError | optuna.exceptions.StorageInternalError
                  | sqlite3.Error):
        return True
    return type(e).__module__.split(".")[0] in ("psycopg", "psycopg2")


def _first_line(e: BaseException, url: str) -> str:
    # Optuna wraps the driver's error in StorageInternalError with a generic message;
    # the driver's own first line (e.g. "connection refused") is the useful one.
    while e.__cause__ is not None and not hasattr(e, "orig"):
        e = e.__cause__
    orig = getattr(e, "orig", None) or e
    lines = str(orig).strip().splitlines() or [type(orig).__name__]
    return scrub(lines[0].strip(), url)


def describe_error(e: BaseException, url: str) -> str:
    """One masked line for a storage failure in the middle of a run."""
    return f"storage {mask(url)} failed: {_first_line(e, url)}"


# --------------------------------------------------------------------------- locking


@contextlib.contextmanager
def claim_lock(url: str, study_name: str, engine: sqlalchemy.engine.Engine | None = None
               ) -> Iterator[None]:
    """Hold a lock that every worker of `study_name` on this storage takes to claim cells.

    On PostgreSQL, a session-level advisory lock: it dies with its connection, so a
    killed worker never leaves it held. With `engine` (the storage's, whose pool is
    one connection, `POOL`) the lock is taken on that connection, which the block's own
    queries then use: no connection of its own. Without, on a connection kept for it.
    """
    parsed = parse_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        lock_path = f"{parsed.database}.lock"
        fd = os.open(lock_path, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
    elif backend == "postgresql" and engine is not None and _single(engine):
        with _shared_lock(engine, _lock_key(study_name), url):
            yield
    elif backend == "postgresql":
        from sqlalchemy import text

        key = _lock_key(study_name)
        with _lock_engine(url).connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": key})
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                conn.commit()
    else:
        yield


def _single(engine: sqlalchemy.engine.Engine) -> bool:
    """Whether every checkout of `engine` gets the same connection (`POOL`)."""
    return engine in _SINGLE


@contextlib.contextmanager
def _shared_lock(engine: sqlalchemy.engine.Engine, key: int, url: str) -> Iterator[None]:
    """The advisory lock `key`, taken on the engine's one connection and kept there while
    the block runs its own transactions on it.

    The wait is cut into slices (`lock_timeout`): between them the connection goes back
    to the pool, so the heartbeat thread can beat while this worker queues behind 63
    others. Should the connection be replaced meanwhile (the server dropped it, the
    pool's ping made a new one), the lock went with it: the block's work was not
    protected, which is said as a storage error rather than passed over.
    """
    import sqlalchemy
    from sqlalchemy import text

    held: object = None
    while held is None:
        with engine.connect() as conn:
            try:
                conn.execute(text(f"SET LOCAL lock_timeout = {LOCK_SLICE_MS}"))
                conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": key})
                conn.commit()
                held = conn.connection.dbapi_connection
            except sqlalchemy.exc.OperationalError as e:
                if _sqlstate(e) != "55P03":  # lock_not_available: the slice ran out
                    raise
                conn.rollback()
        if held is None:
            time.sleep(0.002)  # let a waiting thread take the connection first
    ok = False
    try:
        yield
        ok = True
    finally:
        with engine.connect() as conn:
            same = conn.connection.dbapi_connection is held
            if same:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                conn.commit()
        if not same and ok:
            raise StorageError(f"storage {mask(url)} failed: the claim lock's connection was "
                               "lost during a claim")


def _sqlstate(e: BaseException) -> str | None:
    orig = getattr(e, "orig", None)
    return getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)


def supports_workers(url: str) -> bool:
    return parse_url(url).get_backend_name() in ("sqlite", "postgresql")


def _lock_key(study_name: str) -> int:
    digest = hashlib.sha256(f"study:{study_name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


_lock_engines: dict[str, sqlalchemy.engine.Engine] = {}


def _lock_engine(url: str) -> sqlalchemy.engine.Engine:
    import sqlalchemy

    if url not in _lock_engines:
        _lock_engines[url] = sqlalchemy.create_engine(url, pool_size=1, pool_pre_ping=True)
    return _lock_engines[url]


# --------------------------------------------------------------------------- read-only


SQLITE_HEADER = b"SQLite format 3\x00"
# Optuna's RDB storage always has these; a file with tables but not these is someone else's.
OPTUNA_TABLES = frozenset({"studies", "version_info"})


def check_sqlite_file(path: Path) -> None:
    """Refuse, in one line, a path that exists but is not a SQLite database.

    SQLite itself opens anything and fails only at the first query ("file is not a
    database"), which would read as a storage without studies. An empty file is an
    empty database, as SQLite treats it.
    """
    if path.is_dir():
        raise StorageUsageError(f"--storage: {path} is a directory, not a SQLite database")
    try:
        with path.open("rb") as f:
            head = f.read(len(SQLITE_HEADER))
    except OSError as e:
        raise StorageUsageError(f"--storage: cannot read {path}: {e.strerror}") from None
    if head and head != SQLITE_HEADER:
        raise StorageUsageError(f"--storage: {path} is not a database (not a SQLite file)")


def _sqlite_tables(path: Path) -> set[str]:
    conn = sqlite3.connect(f"file:{path.resolve()}?mode=ro", uri=True,
                           timeout=SQLITE_BUSY_TIMEOUT_S)
    try:
        return {str(r[0]) for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}
    finally:
        conn.close()


def check_sqlite_target(url: str) -> None:
    """Before `study run` creates Optuna's schema in a SQLite file: the file must be new,
    empty, or an Optuna storage (other tables beside Optuna's are fine), never another
    application's database, which Optuna would otherwise fill with its tables."""
    path = sqlite_path(url)
    if path is None or not path.exists():
        return
    check_sqlite_file(path)
    try:
        tables = _sqlite_tables(path)
    except sqlite3.Error as e:
        raise StorageUsageError(f"--storage: cannot read {mask(url)}: {e}") from None
    if tables and not OPTUNA_TABLES.issubset(tables):
        shown = ", ".join(sorted(tables)[:5]) + (", ..." if len(tables) > 5 else "")
        raise StorageUsageError(
            f"--storage: {path} is another application's SQLite database (tables: {shown}), "
            "not an Optuna storage; give a new file"
        )


def _read_only_options(parsed: URL) -> dict[str, Any]:
    """libpq connect options that make every transaction of the session read-only.

    `SET TRANSACTION READ ONLY` covers one transaction only, which a COMMIT ends; the
    session default holds for whatever transaction comes next.
    """
    if parsed.get_backend_name() != "postgresql" or \
            parsed.get_driver_name() not in ("psycopg", "psycopg2"):
        return {}
    given = parsed.query.get("options")
    options = "-c default_transaction_read_only=on"
    if isinstance(given, str) and given.strip():
        options = f"{given} {options}"
    return {"connect_args": {"options": options}}


@contextlib.contextmanager
def read_only(url: str) -> Iterator[sqlalchemy.engine.Connection]:
    """A connection that cannot write: SQLite opened `mode=ro`; PostgreSQL a session whose
    every transaction is read-only; others a read-only transaction."""
    import sqlalchemy

    parsed = parse_url(url)
    if parsed.get_backend_name() == "sqlite":
        path = Path(parsed.database or "")
        if not path.exists():
            raise StorageUsageError(f"--storage: no database at {path}")
        check_sqlite_file(path)
        uri = f"file:{path.resolve()}?mode=ro"
        engine = sqlalchemy.create_engine(
            "sqlite://",
            creator=lambda: sqlite3.connect(uri, uri=True, timeout=SQLITE_BUSY_TIMEOUT_S),
        )
    else:
        engine = sqlalchemy.create_engine(url, **_read_only_options(parsed))
    try:
        try:
            conn = engine.connect()
        except sqlalchemy.exc.DBAPIError as e:
            # Cannot reach or log in to the storage as named: a usage error.
            raise StorageUsageError(f"--storage: cannot open {mask(url)}: {_first_line(e, url)}"
                                    ) from None
        with conn:
            if parsed.get_backend_name() in ("postgresql", "mysql"):
                conn.execute(sqlalchemy.text("SET TRANSACTION READ ONLY"))
            yield conn
            conn.rollback()
    except sqlalchemy.exc.OperationalError as e:
        raise StorageError(describe_error(e, url)) from None
    finally:
        engine.dispose()


def stored_study_attr(url: str, study_name: str, key: str) -> Any | None:
    """A study user attribute read without writing anything; None if absent.

    Used before a run opens the storage for writing, so a spec that does not match
    the stored study is refused without touching the file.
    """
    import json

    import sqlalchemy

    parsed = parse_url(url)
    if parsed.get_backend_name() == "sqlite":
        check_sqlite_target(url)
        path = Path(parsed.database or "")
        if not path.exists() or not _sqlite_tables(path):
            return None  # a new or empty file: nothing stored yet
    query = sqlalchemy.text(
        "SELECT a.value_json FROM study_user_attributes a JOIN studies s "
        "ON s.study_id = a.study_id WHERE s.study_name = :name AND a.key = :key"
    )
    try:
        with read_only(url) as conn:
            row = conn.execute(query, {"name": study_name, "key": key}).first()
    except StorageError:
        raise
    except sqlalchemy.exc.SQLAlchemyError:
        return None  # no Optuna schema yet: nothing stored
    return None if row is None else json.loads(row[0])


# --------------------------------------------------------------------------- provenance


PROVENANCE_PACKAGES = (
    "study", "optuna", "optuna-dashboard", "tensorflow", "keras", "numpy", "plotly", "sqlalchemy",
)


def package_versions() -> dict[str, str]:
    import platform

    versions = {"python": platform.python_version()}
    for name in PROVENANCE_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def git_revision() -> str:
    """The source tree's commit (with `+dirty` when it has uncommitted changes), or 'unknown'."""
    here = Path(__file__).resolve().parent
    for where in (here, Path.cwd()):
        try:
            rev = subprocess.run(
                ["git", "-C", str(where), "rev-parse", "HEAD"],
                capture_output=True, text=True, timeout=5, check=True,
            ).stdout.strip()
            dirty = subprocess.run(
                ["git", "-C", str(where), "status", "--porcelain", "--untracked-files=no"],
                capture_output=True, text=True, timeout=5, check=True,
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            continue
        return rev + ("+dirty" if dirty else "")
    return "unknown"
