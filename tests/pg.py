"""A throwaway PostgreSQL server on 127.0.0.1 for the multi-worker tests.

`initdb` into a temp directory, `pg_ctl start` on a free port, password auth (so
the tests can check the password is masked), and `pg_ctl stop` at the end. PostgreSQL
refuses to run as root, so as root the server runs as the `postgres` user.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

USER = "study"
PASSWORD = "s3cret-pw"


def _bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if found:
        return found[-1]
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"PostgreSQL's {name} not found (apt-get install postgresql)")
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgServer:
    """`max_connections`: the server's setting; None leaves PostgreSQL's default (100)."""

    def __init__(self, max_connections: int | None = 200) -> None:
        self.max_connections = max_connections
        self.root = Path(tempfile.mkdtemp(prefix="study-pg-"))
        self.data = self.root / "data"
        self.port = _free_port()
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            shutil.chown(self.root, "postgres", "postgres")
            os.chmod(self.root, 0o700)

    def _run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        cmd = list(args)
        if self._as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=True,
                              cwd=self.root)

    def init(self) -> None:
        pwfile = self.root / "pw"
        pwfile.write_text(PASSWORD + "\n")
        if self._as_postgres:
            shutil.chown(pwfile, "postgres", "postgres")
        self._run(_bin("initdb"), "-D", str(self.data), "-U", USER, "--auth=scram-sha-256",
                  f"--pwfile={pwfile}", "-E", "UTF8", "--no-sync")
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write(f"listen_addresses = '127.0.0.1'\nport = {self.port}\n"
                       f"unix_socket_directories = '{self.root}'\nfsync = off\n")
            if self.max_connections is not None:
                conf.write(f"max_connections = {self.max_connections}\n")

    def start(self) -> None:
        self._run(_bin("pg_ctl"), "-D", str(self.data), "-l", str(self.root / "log"), "-w",
                  "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run(_bin("pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def url(self, db: str = "postgres") -> str:
        return f"postgresql+psycopg://{USER}:{PASSWORD}@127.0.0.1:{self.port}/{db}"

    def create_db(self, name: str) -> str:
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=self.port, user=USER, password=PASSWORD,
                             dbname="postgres", autocommit=True, connect_timeout=10) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def connections(self, db: str) -> int:
        """Client connections to database `db` now, as `pg_stat_activity` lists them."""
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=self.port, user=USER, password=PASSWORD,
                             dbname="postgres", autocommit=True, connect_timeout=10) as conn:
            row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s",
                               (db,)).fetchone()
        return int(row[0]) if row else 0

    @contextlib.contextmanager
    def peak_connections(self, db: str, every: float = 0.05) -> Iterator[list[int]]:
        """While the block runs, the most connections to `db` seen at once (sampled every
        `every` s), as the one item of the list yielded; this sampler's own is not counted
        (it connects to another database)."""
        import psycopg

        peak = [0]
        stop = threading.Event()

        def sample() -> None:
            with psycopg.connect(host="127.0.0.1", port=self.port, user=USER,
                                 password=PASSWORD, dbname="postgres", autocommit=True,
                                 connect_timeout=10) as conn:
                while not stop.is_set():
                    row = conn.execute("SELECT count(*) FROM pg_stat_activity "
                                       "WHERE datname = %s", (db,)).fetchone()
                    peak[0] = max(peak[0], int(row[0]) if row else 0)
                    stop.wait(every)

        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        try:
            yield peak
        finally:
            stop.set()
            thread.join(timeout=10)

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("PostgreSQL did not come up")

    def destroy(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def running_server(max_connections: int | None = 200) -> Iterator[PgServer]:
    """A new server, initialised and started; stopped and deleted afterwards."""
    server = PgServer(max_connections)
    server.init()
    server.start()
    try:
        yield server
    finally:
        server.destroy()
