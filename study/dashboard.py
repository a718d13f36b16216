"""`study dashboard`: optuna-dashboard on the study's storage, served until Ctrl-C.

We use optuna-dashboard's own WSGI app (`optuna_dashboard.wsgi`) and serve it with
the standard library's threaded `wsgiref` server, as optuna-dashboard's CLI does, so
that we choose the bind address, report the real URL (port 0 picks a free one, which
the tests use), keep the request log quiet, and stop without a traceback.
"""

from __future__ import annotations

import ipaddress
import signal
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from socketserver import ThreadingMixIn
from types import FrameType
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from study.errors import StorageUsageError, UsageError
from study.storage import mask, open_storage, parse_url

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # an open browser tab must not keep the process alive after Ctrl-C


class _Server6(_Server):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    """No line per request on stderr: the terminal shows the URL and nothing else."""

    def log_message(self, format: str, *args: Any) -> None:
        pass


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def exposure_warning(host: str) -> str | None:
    """A warning when the dashboard would be reachable from other machines."""
    if is_loopback(host):
        return None
    return (f"warning: --host {host} makes the dashboard reachable from other machines; it has "
            "no login, and anyone who reaches it can read and edit (even delete) the studies "
            "in this storage")


def _check_storage(url: str) -> None:
    """Refuse what would open an empty new database instead of the study's."""
    parsed = parse_url(url)
    if parsed.get_backend_name() == "sqlite" and not Path(parsed.database or "").exists():
        raise StorageUsageError(f"--storage: no database at {parsed.database} "
                                "(run `study run` first, or pass --storage)")


def make_dashboard_server(url: str, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT
                          ) -> WSGIServer:
    """optuna-dashboard's app for `url`, bound to `host:port` (not yet serving)."""
    from optuna_dashboard import wsgi

    _check_storage(url)
    if not 0 <= port <= 65535:
        raise UsageError(f"--port: expected 0..65535, got {port}")
    # The kept weights (train.keep_weights, weights.py) are artifacts the dashboard lists
    # on the study's page, when the study has any.
    from optuna.artifacts import FileSystemArtifactStore

    from study.weights import artifacts_dir

    store = artifacts_dir(url)
    app = wsgi(open_storage(url, create_schema=False),
               artifact_store=FileSystemArtifactStore(str(store)) if store.is_dir() else None)
    server_class = _Server6 if ":" in host else _Server
    try:
        return make_server(host, port, app, server_class=server_class,
                           handler_class=_QuietHandler)
    except OSError as e:
        reason = e.strerror or str(e)
        raise UsageError(f"--host/--port: cannot listen on {host}:{port}: {reason}") from None


def url_of(server: WSGIServer) -> str:
    host, port = server.server_address[:2]
    host = host.decode() if isinstance(host, bytes) else str(host)
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/dashboard/"


def _stop_on(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def serve(url: str, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
          announce: Callable[[str], None] = lambda line: None) -> None:
    """Serve optuna-dashboard until Ctrl-C or SIGTERM, then return normally.

    `announce` receives the line that says where it is served; the caller decides
    whether and where to show it (and `exposure_warning(host)`, before calling).
    """
    server = make_dashboard_server(url, host, port)
    announce(f"optuna-dashboard for {mask(url)} at {url_of(server)}  (Ctrl-C to stop)")
    # Both signals stop the server the same way, also when the shell that started us
    # in the background left SIGINT ignored.
    previous = {sig: signal.signal(sig, _stop_on) for sig in (signal.SIGINT, signal.SIGTERM)} \
        if threading.current_thread() is threading.main_thread() else {}
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
