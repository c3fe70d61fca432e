"""The demo's HTTP endpoint: metrics on ``/metrics``, running threads on ``/debug/threads``.

``/debug/threads`` returns ``aiothreads.snapshot(stacks=True)`` as JSON:
function names, code locations and timings, never argument values. Bind it
to a private address (the demo's default is 127.0.0.1): it shows where the
service's code is, which is not for the public.
"""

from __future__ import annotations

import json
import threading
import time
from socketserver import ThreadingMixIn
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from ._inflight import snapshot

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

__all__ = ["THREADS_PATH", "Endpoint", "threads_document"]

THREADS_PATH = "/debug/threads"

StartResponse = Any


def threads_document() -> dict[str, Any]:
    """Return what ``/debug/threads`` serves: when, and what runs in threads now."""
    running = snapshot(stacks=True)
    return {"taken_at": time.time(), "running": [work.as_dict() for work in running]}


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Log nothing: scrapes every few seconds would fill the terminal."""


class Endpoint:
    """Serves ``metrics_app`` everywhere but ``/debug/threads``, on a thread of its own."""

    def __init__(self, host: str, port: int, metrics_app: Callable[..., Iterable[bytes]]) -> None:
        self._metrics_app = metrics_app
        self._server = make_server(host, port, self._app, _Server, _QuietHandler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="demo-http", daemon=True
        )
        self._thread.start()

    def _app(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == THREADS_PATH:
            body = json.dumps(threads_document(), indent=2).encode()
            start_response(
                "200 OK",
                [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
            )
            return [body]
        return self._metrics_app(environ, start_response)

    def close(self) -> None:
        """Stop serving and wait for the serving thread."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
