"""A running process's snapshot, written where an inspecting process reads it.

Semantics:

* ``payload()`` is ``snapshot(stacks=True)`` with what a reader needs to
  trust it: the format, the aiothreads and Python versions, the process id
  and when it was taken. Like ``snapshot()``, it holds names, code locations
  and timings, never argument values or local variables.
* ``write_payload(path)`` writes it as JSON to ``path``. Where ``path`` is a
  FIFO that a reader holds open (``python -m aiothreads.inspect`` makes
  one), it is written there; a FIFO nobody reads is left alone at once, so a
  process never blocks on a reader that went away. Anything else is
  replaced whole (written beside it, then renamed).
* ``write_payload_soon(path)`` does it in a thread of its own: a signal
  handler or a ``sys.remote_exec`` script runs between two bytecodes of the
  main thread, which may hold a lock the snapshot needs.
* Neither ever raises: a failure is written in place of the snapshot.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
import sys
import tempfile
import threading
import time
from typing import Any, Final

from ._inflight import snapshot
from ._version import __version__

__all__ = ["FORMAT", "default_path", "payload", "write_payload", "write_payload_soon"]

FORMAT: Final = 1
"""The payload's format; a reader refuses one it does not know."""


def payload() -> dict[str, Any]:
    """Return this process's snapshot with stacks, and what it was taken with."""
    try:
        work = [entry.as_dict() for entry in snapshot(stacks=True)]
        error = None
    except Exception as exc:  # reported to the reader, never raised in the target
        work, error = [], f"{type(exc).__name__}: {exc}"
    return {
        "format": FORMAT,
        "aiothreads": __version__,
        "python": ".".join(map(str, sys.version_info[:3])),
        "pid": os.getpid(),
        "taken_at": time.time(),
        "error": error,
        "work": work,
    }


def default_path(pid: int) -> str:
    """Where process ``pid`` writes its snapshot on a signal unless told otherwise."""
    return os.path.join(tempfile.gettempdir(), f"aiothreads-snapshot-{pid}.json")


def write_payload_soon(path: str) -> None:
    """Write ``payload()`` to ``path`` from a new daemon thread; return at once."""
    thread = threading.Thread(
        target=write_payload, args=(path,), name="aiothreads-snapshot", daemon=True
    )
    with contextlib.suppress(RuntimeError):  # no new threads at interpreter exit
        thread.start()


def write_payload(path: str) -> None:
    """Write ``payload()`` as JSON to ``path`` (a FIFO with a reader, or a file)."""
    data = json.dumps(payload()).encode()
    with contextlib.suppress(OSError):
        if _is_fifo(path):
            _write_to_reader(path, data)
        else:
            _replace(path, data)


def _is_fifo(path: str) -> bool:
    try:
        return stat.S_ISFIFO(os.stat(path).st_mode)
    except OSError:
        return False


def _write_to_reader(path: str, data: bytes) -> None:
    import fcntl  # noqa: PLC0415 - POSIX only, as FIFOs are

    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # nobody reads it: the inspector went away
            return
        raise
    try:
        flags = fcntl.fcntl(descriptor, fcntl.F_GETFL)
        fcntl.fcntl(descriptor, fcntl.F_SETFL, flags & ~os.O_NONBLOCK)  # the reader drains it
        view = memoryview(data)
        while view:
            view = view[os.write(descriptor, view) :]
    finally:
        os.close(descriptor)


def _replace(path: str, data: bytes) -> None:
    partial = f"{path}.{os.getpid()}.partial"
    with open(partial, "wb") as file:
        file.write(data)
    os.replace(partial, path)
