"""Shared fixtures: throwaway real SQLite files and a real PostgreSQL server."""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.pg import PgServer, running_server

# XLA's compile cache (study/trainers/compile_cache.py) is on by default. The tests run
# processes side by side that compile the same programs, and XLA writes a cache entry in
# place, so one process could read another's half-written entry and fail that compile:
# the suite keeps its processes off the shared cache (test_compile_cache.py turns it on
# for the processes it starts, in directories of its own).
os.environ["STUDY_XLA_CACHE"] = "off"

# The longest files first: under `make test` (pytest-xdist, --dist loadfile) each file runs
# in one of two processes, and these two starting at once lets both processes end together
# instead of one waiting on a long file started last.
LONGEST_FIRST = ("test_workers.py", "test_population.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: files keep their order


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "study.db"


@pytest.fixture
def db_url(db_path: Path) -> str:
    return f"sqlite:///{db_path}"


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """One real PostgreSQL server for the session, on 127.0.0.1 and a free port."""
    with running_server() as server:
        yield server


@pytest.fixture
def pg_url(pg_server: PgServer, request: pytest.FixtureRequest) -> str:
    """A fresh, empty database on the session's server."""
    name = "t_" + re.sub(r"[^a-z0-9]+", "_", request.node.name.lower())[:50]
    name += f"_{next(_db_counter)}"
    return pg_server.create_db(name)


_db_counter = itertools.count()
