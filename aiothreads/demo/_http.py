"""The demo's HTTP endpoint: its metrics, and what runs in threads now, for people and programs.

* ``/metrics``: the Prometheus exposition.
* ``/debug/threads``: ``aiothreads.snapshot(stacks=True)``. A browser, which
  asks for ``text/html`` first, gets a table that refreshes itself every
  ``REFRESH_SECONDS``; anything else (``Accept: application/json``, curl's
  ``*/*``, no ``Accept`` at all) gets the JSON document.
* ``/``: a page that links to both. Any other path answers 404.

Both forms of ``/debug/threads`` show function names, code locations and
timings, never argument values or local variables (a snapshot has none), and
the page escapes every value it shows. Bind it to a private address (the
demo's default is 127.0.0.1): it shows where the service's code is, which is
not for the public.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import threading
import time
from socketserver import ThreadingMixIn
from typing import TYPE_CHECKING, Any, Final, cast
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from .._inflight import snapshot

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

__all__ = [
    "METRICS_PATH",
    "REFRESH_SECONDS",
    "THREADS_PATH",
    "Endpoint",
    "threads_document",
    "threads_page",
    "wants_html",
]

METRICS_PATH: Final = "/metrics"
THREADS_PATH: Final = "/debug/threads"
REFRESH_SECONDS: Final = 2
"""How often the page of ``/debug/threads`` reloads its table."""

StartResponse = Any


def threads_document() -> dict[str, Any]:
    """Return what ``/debug/threads`` serves: when, and what runs in threads now."""
    running = snapshot(stacks=True)
    return {"taken_at": time.time(), "running": [work.as_dict() for work in running]}


def wants_html(accept: str) -> bool:
    """Whether an ``Accept`` header ranks ``text/html`` above ``application/json``.

    A tie goes to JSON, the form ``/debug/threads`` served first: no header and
    ``*/*`` get JSON, a browser's ``text/html,...,*/*;q=0.8`` gets the page.
    """
    return _quality(accept, "text/html") > _quality(accept, "application/json")


def _quality(accept: str, media_type: str) -> float:
    """Return the ``q`` the most specific range of ``accept`` that matches gives ``media_type``."""
    ranges = {"*/*": 0, f"{media_type.partition('/')[0]}/*": 1, media_type: 2}
    quality, specificity = 0.0, -1
    for entry in accept.split(","):
        media_range, *parameters = entry.split(";")
        level = ranges.get(media_range.strip().lower(), -1)
        if level <= specificity:
            continue
        quality, specificity = 1.0, level
        for parameter in parameters:
            name, _, value = parameter.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
    return quality


def threads_page(document: dict[str, Any], slow_after: float | None = None) -> str:
    """Return ``document`` (from ``threads_document()``) as the HTML page a person reads.

    Each piece of work is a row: function, kind, thread, running for, the
    task awaiting it, its top frame (its whole stack folded beneath) and its
    trace id. Rows of work running ``slow_after`` seconds or longer are
    highlighted. Fields a snapshot does not have (``awaited_by``,
    ``waiting_on`` on versions without them) show as a dash.
    """
    running: list[dict[str, Any]] = document["running"]
    taken_at = time.strftime("%H:%M:%S", time.localtime(document["taken_at"]))
    summary = f"{len(running)} running in threads at {taken_at}"
    if slow_after is not None:
        summary += f"; highlighted: running for {slow_after:g} s or longer"
    if running:
        rows = "".join(_row(work, slow_after) for work in running)
        content = f"<table><thead><tr>{_HEADINGS}</tr></thead><tbody>{rows}</tbody></table>"
    else:
        content = "<p>Nothing runs in threads now.</p>"
    return _page(
        "aiothreads demo: threads",
        '<header><h1>What runs in threads</h1><label><input type="checkbox" id="pause">'
        ' pause</label> <span id="note"></span></header>'
        f"<main><p>{_escape(summary)}.</p>{content}</main>",
        live=True,
    )


_HEADINGS: Final = "".join(
    f"<th>{heading}</th>"
    for heading in (
        "Function",
        "Kind",
        "Thread",
        "Running for",
        "Awaiting task",
        "Top frame",
        "Trace id",
    )
)


def _row(work: dict[str, Any], slow_after: float | None) -> str:
    running_for = float(work["running_for"])
    slow = slow_after is not None and running_for >= slow_after
    key = f"{work.get('thread_id')}:{work.get('started')}"  # which folds stay open on refresh
    cells = (
        f"<code>{_escape(work['function'])}</code>",
        _kind(work),
        _thread(work),
        _escape(_duration(running_for)),
        _tasks(work.get("awaited_by"), key),
        _frames(work, key),
        f"<code>{_escape(work['trace_id'])}</code>" if work.get("trace_id") else _DASH,
    )
    tds = "".join(f"<td>{cell}</td>" for cell in cells)
    return f'<tr class="slow">{tds}</tr>' if slow else f"<tr>{tds}</tr>"


_DASH: Final = '<span class="muted">-</span>'


def _kind(work: dict[str, Any]) -> str:
    kind = _escape(work["kind"])
    if work.get("items") is None:
        return kind
    items = f"{work['items']} items" + (
        ", waiting for room" if work.get("waiting_for_room") else ""
    )
    return f'{kind}<br><span class="muted">{_escape(items)}</span>'


def _thread(work: dict[str, Any]) -> str:
    if work.get("executor"):
        return f"{_escape(work['executor'])} (another process)"
    name, ident = _escape(work["thread_name"]), _escape(work.get("thread_id"))
    return f'<span title="thread id {ident}">{name}</span>'


def _frames(work: dict[str, Any], key: str) -> str:
    stack = [str(frame) for frame in work.get("stack") or ()]
    waiting_on = work.get("waiting_on")
    parts = [f"<code>{_escape(stack[-1])}</code>"] if stack else []
    if len(stack) > 1:
        parts.append(_folded(f"stack, {len(stack)} frames", stack, f"{key}:stack"))
    if waiting_on:
        parts.append(f"waits on task {_tasks(waiting_on, f'{key}:waiting_on')}")
    return "<br>".join(parts) or _DASH


def _tasks(tasks: Any, key: str) -> str:
    """Return a task, or a list of them, as ``as_dict()`` gives each: a name and a stack."""
    if not tasks:
        return _DASH
    listed = cast("list[Any]", tasks if isinstance(tasks, (list, tuple)) else [tasks])
    shown: list[str] = []
    for number, task in enumerate(listed):
        described = cast("dict[str, Any]", task if isinstance(task, dict) else {"name": task})
        stack = cast("list[Any]", described.get("stack") or [])
        named = f"<code>{_escape(described.get('name') or '?')}</code>"
        if stack:
            frames = [_text(frame) for frame in stack]
            named += _folded("where it awaits", frames, f"{key}:{number}")
        shown.append(named)
    return "<br>".join(shown)


def _folded(summary: str, lines: list[str], key: str) -> str:
    items = "".join(f"<li><code>{_escape(line)}</code></li>" for line in lines)
    return (
        f'<details data-key="{_escape(key)}"><summary>{_escape(summary)}</summary>'
        f"<ol>{items}</ol></details>"
    )


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, seconds = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def _escape(value: object) -> str:
    return html.escape(str(value), quote=True)


def _index_page() -> str:
    links = "".join(
        f'<li><a href="{path}">{path}</a>: {what}</li>'
        for path, what in (
            (
                THREADS_PATH,
                "what runs in threads now (JSON for <code>Accept: application/json</code>)",
            ),
            (METRICS_PATH, "Prometheus metrics"),
        )
    )
    return _page("aiothreads demo", f"<h1>aiothreads demo</h1><ul>{links}</ul>")


_STYLE: Final = (
    "body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}"
    "header{display:flex;gap:1em;align-items:baseline}h1{font-size:1.3em}"
    "table{border-collapse:collapse;width:100%}"
    "th,td{text-align:left;vertical-align:top;padding:.3em .6em;border-bottom:1px solid #ddd}"
    "th{background:#f4f4f4;position:sticky;top:0}"
    "code{font:12px/1.4 ui-monospace,monospace;overflow-wrap:anywhere}"
    "tr.slow{background:#fde8e8}.muted,#note{color:#777}"
    "summary{cursor:pointer;color:#555}ol{margin:.3em 0;padding-left:2em}"
)
_SCRIPT: Final = f"""
const pause = document.getElementById("pause");
const note = document.getElementById("note");
setInterval(async () => {{
  if (pause.checked) return;
  const folds = document.querySelectorAll("details[open]");
  const open = new Set(Array.from(folds, (d) => d.dataset.key));
  try {{
    const asked = {{headers: {{Accept: "text/html"}}, cache: "no-store"}};
    const reply = await fetch(location.pathname, asked);
    if (!reply.ok) throw new Error("HTTP " + reply.status);
    const page = new DOMParser().parseFromString(await reply.text(), "text/html");
    document.querySelector("main").replaceWith(page.querySelector("main"));
    for (const d of document.querySelectorAll("details")) d.open = open.has(d.dataset.key);
    note.textContent = "";
  }} catch (error) {{
    note.textContent = "not refreshed (" + error.message + "): is the demo still running?";
  }}
}}, {REFRESH_SECONDS * 1000});
"""


def _page(title: str, body: str, *, live: bool = False) -> str:
    """Return a whole page; a ``live`` one reloads its ``<main>`` every ``REFRESH_SECONDS``."""
    head = f'<meta charset="utf-8"><title>{_escape(title)}</title>'
    head += '<meta name="viewport" content="width=device-width, initial-scale=1">'
    head += f"<style>{_STYLE}</style>"
    if live:  # without scripts, the whole page reloads instead
        head += f'<noscript><meta http-equiv="refresh" content="{REFRESH_SECONDS}"></noscript>'
        body += f"<script>{_SCRIPT}</script>"
    return f'<!DOCTYPE html><html lang="en"><head>{head}</head><body>{body}</body></html>'


def _sha256(source: str) -> str:
    return base64.b64encode(hashlib.sha256(source.encode()).digest()).decode()


_PAGE_HEADERS: Final = [
    # The page runs its own script and style and nothing else, whatever a value in it says.
    (
        "Content-Security-Policy",
        f"default-src 'none'; script-src 'sha256-{_sha256(_SCRIPT)}'; "
        f"style-src 'sha256-{_sha256(_STYLE)}'; connect-src 'self'",
    ),
    ("X-Content-Type-Options", "nosniff"),
]
_INDEX: Final = _index_page().encode()


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Log nothing: scrapes every few seconds would fill the terminal."""


class Endpoint:
    """Serves the paths above on ``host:port``, on a thread of its own, from construction on.

    ``metrics_app`` is the WSGI application that serves ``/metrics``. The page
    of ``/debug/threads`` highlights work running ``slow_after`` seconds or
    longer. Port 0 picks a free port: ``port`` says which.

    Raises:
        OSError: ``host:port`` cannot be served (the port is in use, the
            address is not this machine's).
    """

    def __init__(
        self,
        host: str,
        port: int,
        metrics_app: Callable[..., Iterable[bytes]],
        *,
        slow_after: float | None = None,
    ) -> None:
        self._metrics_app = metrics_app
        self._slow_after = slow_after
        self._server = make_server(host, port, self._app, _Server, _QuietHandler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="demo-http", daemon=True
        )
        self._thread.start()

    @property
    def port(self) -> int:
        """The port it serves on."""
        return self._server.server_port

    def _app(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == METRICS_PATH:
            return self._metrics_app(environ, start_response)
        headers = [("Cache-Control", "no-store")]
        if path == THREADS_PATH:
            headers.append(("Vary", "Accept"))
            document = threads_document()
            if wants_html(environ.get("HTTP_ACCEPT", "")):
                status, content_type = "200 OK", "text/html; charset=utf-8"
                body = threads_page(document, self._slow_after).encode()
                headers = [*headers, *_PAGE_HEADERS]
            else:
                status, content_type = "200 OK", "application/json"
                body = json.dumps(document, indent=2).encode()
        elif path == "/":
            status, content_type, body = "200 OK", "text/html; charset=utf-8", _INDEX
        else:
            status, content_type = "404 Not Found", "text/plain; charset=utf-8"
            body = f"not found; this demo serves {METRICS_PATH} and {THREADS_PATH}\n".encode()
        headers += [("Content-Type", content_type), ("Content-Length", str(len(body)))]
        start_response(status, headers)
        return [] if environ.get("REQUEST_METHOD") == "HEAD" else [body]

    def close(self) -> None:
        """Stop serving and wait for the serving thread."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
