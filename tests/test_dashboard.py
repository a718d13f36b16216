"""`study dashboard`: optuna-dashboard served on a real study file, started and stopped for real."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import threading
import urllib.request
from pathlib import Path

import pytest

from study import dashboard
from study.errors import StorageUsageError, UsageError
from tests.helpers import ROOT, cli_env, run_cli, start_cli
from tests.studies import make_study


@pytest.fixture(scope="module")
def study_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('dashboard') / 'study.db'}"
    make_study(url)
    return url


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as response:
        assert response.status == 200
        return bytes(response.read())


def test_loopback_or_a_warning() -> None:
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        assert dashboard.is_loopback(host) and dashboard.exposure_warning(host) is None, host
    for host in ("0.0.0.0", "192.168.1.10", "::", "example.org"):
        warning = dashboard.exposure_warning(host)
        assert warning is not None and f"--host {host} makes the dashboard reachable" in warning


def test_a_missing_database_is_not_created(tmp_path: Path) -> None:
    with pytest.raises(StorageUsageError, match=r"--storage: no database at .*none\.db"):
        dashboard.make_dashboard_server(f"sqlite:///{tmp_path / 'none.db'}", port=0)
    assert list(tmp_path.iterdir()) == []


def test_a_port_in_use_is_one_clear_error(study_url: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(UsageError, match=f"--host/--port: cannot listen on 127.0.0.1:{port}: "
                                             "Address already in use"):
            dashboard.make_dashboard_server(study_url, port=port)
    with pytest.raises(UsageError, match=r"--port: expected 0\.\.65535, got 70000"):
        dashboard.make_dashboard_server(study_url, port=70000)


def test_serves_the_study_on_loopback(study_url: str) -> None:
    server = dashboard.make_dashboard_server(study_url, port=0)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1})
    thread.start()
    try:
        base = dashboard.url_of(server)
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/dashboard/", base)
        root = base.removesuffix("dashboard/")
        studies = json.loads(_get(root + "api/studies"))["study_summaries"]
        assert [s["study_name"] for s in studies] == ["article"]
        detail = json.loads(_get(f"{root}api/studies/{studies[0]['study_id']}?after=0"))
        assert len(detail["trials"]) == 18
        assert b"<html" in _get(base).lower()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def _wait_for_url(proc: subprocess.Popen[str], timeout: float = 60) -> str:
    """The URL the command prints first; a reader thread keeps the wait bounded."""
    assert proc.stdout is not None
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.append(proc.stdout.readline()),  # type: ignore[union-attr]
                              daemon=True)
    reader.start()
    reader.join(timeout)
    match = re.search(r"http://\S+/dashboard/", lines[0]) if lines else None
    assert match, (lines, proc.poll())
    return match.group(0)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_cli_prints_the_url_and_stops_cleanly(study_url: str, sig: int) -> None:
    proc = start_cli(["dashboard", "--storage", study_url, "--port", "0"])
    try:
        url = _wait_for_url(proc)
        assert url.startswith("http://127.0.0.1:")
        assert b"<html" in _get(url).lower()
    finally:
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode in (0, 130), err
    assert "Traceback" not in err and "stopped" in err
    assert "warning" not in err


@pytest.mark.slow
def test_cli_warns_when_not_loopback_and_make_dashboard_runs_it(study_url: str) -> None:
    proc = start_cli(["dashboard", "--storage", study_url, "--host", "0.0.0.0", "--port", "0"])
    try:
        url = _wait_for_url(proc)
        port = url.split(":")[2].split("/")[0]
        assert b"<html" in _get(f"http://127.0.0.1:{port}/dashboard/").lower()
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    assert "study dashboard: warning: --host 0.0.0.0 makes the dashboard reachable" in err
    assert proc.returncode == 0

    # `make dashboard`, stopped the way a terminal's Ctrl-C does: SIGINT to the process group.
    make = subprocess.Popen(["make", "-s", "-o", ".venv/.installed", "dashboard",
                             f"STORAGE={study_url}", "ARGS=--port 0"],
                            cwd=ROOT, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        url = _wait_for_url(make)
        assert url.startswith("http://127.0.0.1:")
        assert b"<html" in _get(url).lower()
    finally:
        os.killpg(make.pid, signal.SIGINT)
        _, err = make.communicate(timeout=30)
    assert "Traceback" not in err and "study dashboard: stopped." in err


def test_help_has_an_example() -> None:
    out = run_cli(["dashboard", "--help"])
    assert out.returncode == 0 and "Example: study dashboard" in out.stdout
    assert "default: 127.0.0.1" in out.stdout
