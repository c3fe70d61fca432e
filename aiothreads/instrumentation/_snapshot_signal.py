"""Write the process's snapshot on a signal, for ``python -m aiothreads.inspect``.

Semantics:

* Opt-in, like ``faulthandler.register``: nothing is installed until
  ``install_snapshot_signal`` is called, from the main thread.
* On each delivery the snapshot (``aiothreads.snapshot(stacks=True)`` with
  versions and the process id) is written to the file, from a thread of its
  own; the handler itself only starts that thread.
* The handler it replaces is not called (as with ``faulthandler.register``
  without ``chain``). Pick a signal nothing else in the process uses.
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Final

from .._inspection import default_path, write_payload_soon

__all__ = ["install_snapshot_signal"]

_UNCATCHABLE: Final = frozenset(
    number for name in ("SIGKILL", "SIGSTOP") if (number := getattr(signal, name, None)) is not None
)


def install_snapshot_signal(
    signum: int = getattr(signal, "SIGUSR1", 10),
    file: str | os.PathLike[str] | None = None,
) -> str:
    """Write this process's snapshot to ``file`` each time it receives ``signum``.

    ``python -m aiothreads.inspect PID`` sends the signal and reads the
    result; this is how it reaches processes on Python 3.10 to 3.13, and
    processes whose main thread runs no Python code for a while on any Python.

    ```python
    import signal

    from aiothreads.instrumentation import install_snapshot_signal

    path = install_snapshot_signal(signal.SIGUSR1)
    assert path.endswith(".json")
    signal.signal(signal.SIGUSR1, signal.SIG_DFL)  # as it was, for this example
    ```

    Args:
        signum: The signal (``signal.SIGUSR1`` by default).
        file: Where to write; by default ``aiothreads-snapshot-PID.json`` in
            the temporary directory, where the command looks by default.

    Returns:
        The path written to.

    Raises:
        TypeError: ``signum`` is not a signal number.
        ValueError: called from a thread other than the main thread, or
            ``signum`` cannot be caught.
    """
    if isinstance(signum, bool) or not isinstance(signum, int):
        raise TypeError(f"signum must be a signal number, got {type(signum).__name__}")
    if signum in _UNCATCHABLE:
        raise ValueError(f"signal {signum} cannot be caught; use SIGUSR1 or SIGUSR2")
    if threading.current_thread() is not threading.main_thread():
        raise ValueError(
            "install_snapshot_signal() must be called from the main thread "
            "(Python runs signal handlers there)"
        )
    path = os.fspath(file) if file is not None else default_path(os.getpid())

    def write_snapshot(_signum: int, _frame: object) -> None:
        write_payload_soon(path)

    signal.signal(signum, write_snapshot)
    return path
