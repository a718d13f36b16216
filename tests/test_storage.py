from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy

from study import storage
from study.errors import StorageUsageError
from tests.helpers import ROOT, checkout_revision, git, sql


@pytest.mark.parametrize(("url", "message"), [
    ("not a url", r"^--storage: 'not a url' is not a database URL"),
    ("nosuch://host/db", r"^--storage: unknown database kind 'nosuch'"),
    ("sqlite:///no/such/dir/study.db", r"^--storage: directory 'no/such/dir' does not exist"),
    ("sqlite://", r"in-memory SQLite database"),
    ("sqlite:///:memory:", r"in-memory SQLite database"),
])
def test_bad_urls_are_named(url: str, message: str) -> None:
    with pytest.raises(StorageUsageError, match=message):
        storage.parse_url(url)


def test_password_is_masked() -> None:
    url = "postgresql+psycopg://user:s3cret@127.0.0.1:5432/db"
    assert "s3cret" not in storage.mask(url)
    assert storage.mask(url) == "postgresql+psycopg://user:***@127.0.0.1:5432/db"
    assert storage.scrub("failed for s3cret here", url) == "failed for *** here"


def test_open_storage_uses_wal(db_path: Path, db_url: str) -> None:
    storage.open_storage(db_url)
    assert sql(db_path, "PRAGMA journal_mode") == [("wal",)]
    assert ("studies",) in sql(db_path, "SELECT name FROM sqlite_master WHERE type='table'")


def test_read_only_cannot_write(db_path: Path, db_url: str) -> None:
    storage.open_storage(db_url)
    before = hashlib.sha256(db_path.read_bytes()).hexdigest()
    with storage.read_only(db_url) as conn, pytest.raises(sqlalchemy.exc.OperationalError,
                                                          match="readonly"):
        conn.execute(sqlalchemy.text("INSERT INTO studies (study_name) VALUES ('x')"))
    assert hashlib.sha256(db_path.read_bytes()).hexdigest() == before


def test_stored_attr_of_missing_file_is_none(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'absent.db'}"
    assert storage.stored_study_attr(url, "article", "spec") is None
    assert not (tmp_path / "absent.db").exists()


def test_claim_lock_excludes(db_url: str) -> None:
    storage.open_storage(db_url)
    inside: list[int] = []
    overlaps: list[bool] = []

    def hold(i: int) -> None:
        with storage.claim_lock(db_url, "s"):
            overlaps.append(bool(inside))
            inside.append(i)
            time.sleep(0.05)
            inside.remove(i)

    threads = [threading.Thread(target=hold, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert overlaps == [False] * 4


def test_provenance() -> None:
    import numpy
    import optuna
    import plotly
    from packaging.version import Version

    from study import optuna_compat

    versions = storage.package_versions()
    # Each as the imported module itself says, not from the metadata it was read from.
    for name, module in (("optuna", optuna), ("sqlalchemy", sqlalchemy), ("numpy", numpy),
                         ("plotly", plotly)):
        assert Version(versions[name]) == Version(module.__version__), name
    assert optuna_compat.is_supported(versions["optuna"])
    assert set(storage.PROVENANCE_PACKAGES) <= set(versions)
    assert storage.git_revision() == checkout_revision()


def _revision_of_copy(root: Path) -> str:
    """git_revision() as a copy of the package at `root` computes it, run from `root`;
    git may not look above `root`'s parent for a repository."""
    out = subprocess.run(
        [sys.executable, "-c", "from study.storage import git_revision; print(git_revision())"],
        cwd=root, capture_output=True, text=True, timeout=60, check=True,
        env={**os.environ, "GIT_CEILING_DIRECTORIES": str(root.parent), "PYTHONPATH": str(root)})
    return out.stdout.strip()


def test_git_revision_of_a_copy_in_and_out_of_a_checkout(tmp_path: Path) -> None:
    ignore = shutil.ignore_patterns("__pycache__")
    plain = tmp_path / "plain"
    shutil.copytree(ROOT / "study", plain / "study", ignore=ignore)
    assert _revision_of_copy(plain) == "unknown"

    repo = tmp_path / "repo"
    shutil.copytree(ROOT / "study", repo / "study", ignore=ignore)
    git("init", "-q", cwd=repo)
    git("add", "study", cwd=repo)
    git("commit", "-q", "-m", "copy", cwd=repo)
    head = git("rev-parse", "HEAD", cwd=repo)
    assert len(head) == 40 and _revision_of_copy(repo) == head
    (repo / "notes.txt").write_text("untracked files do not make a tree dirty\n")
    assert _revision_of_copy(repo) == head
    with (repo / "study" / "errors.py").open("a") as f:
        f.write("# a local change\n")
    assert _revision_of_copy(repo) == head + "+dirty"
