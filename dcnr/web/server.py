"""A threaded HTTP server for one WSGI application, living as long as the process object that owns it.

cheroot (CherryPy's production WSGI server) on a few worker threads of its own, so HTTP
never takes the gRPC servers' threads; `HttpServer` binds when constructed (an OSError names
a port that is taken), serves on a background thread, and `stop` closes it and joins it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from cheroot import wsgi
from prometheus_client import CollectorRegistry, make_wsgi_app

log = logging.getLogger("dcnr.web")

THREADS = 4  # workers of the orchestrator's HTTP server: the dashboard polls, Prometheus scrapes
TIMEOUT = 10  # seconds a connection may stay silent
MAX_REQUEST = 64 * 1024  # bytes of a request's headers, and of its body


class HttpServer:
    """Serving `app` on `address` (host:port; port 0: any free one) until `stop`; `port` is the one bound."""

    def __init__(self, app: Callable[..., Any], address: str, threads: int = THREADS, name: str = "http") -> None:
        host, _, port = address.rpartition(":")
        host = host.strip("[]") or "127.0.0.1"
        self._server = wsgi.Server((host, int(port)), app, numthreads=threads, server_name="dcnr", timeout=TIMEOUT,
                                   shutdown_timeout=2)
        self._server.max_request_header_size = self._server.max_request_body_size = MAX_REQUEST
        self._server.error_log = _error_log  # type: ignore[method-assign]
        try:
            self._server.prepare()  # binds
        except OSError as exc:
            raise OSError(f"cannot serve HTTP on {address}: {exc.strerror or exc}") from None
        self.port = int(self._server.bind_addr[1])
        self._thread = threading.Thread(target=self._server.serve, name=name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop accepting, finish or drop the calls in progress, end the threads."""
        self._server.stop()
        self._thread.join(10)


def serve_metrics(registry: CollectorRegistry, address: str) -> HttpServer:
    """Prometheus metrics of `registry` at /metrics (and any other path) on `address`, on two threads."""
    return HttpServer(make_wsgi_app(registry), address, threads=2, name="metrics")


def _error_log(msg: str = "", level: int = logging.INFO, traceback: bool = False) -> None:
    """cheroot's own log (a dropped connection, a malformed request) into ours, quietly."""
    log.log(min(level, logging.INFO), "%s", msg, exc_info=traceback)
