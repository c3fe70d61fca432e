"""The exceptions aiothreads raises, with the 1.x bases callers already catch."""

from __future__ import annotations

__all__ = [
    "ExecutorRefused",
    "LoopClosedError",
    "NoEventLoopError",
    "ThreadPoolException",
]


class NoEventLoopError(RuntimeError, LookupError):
    """No event loop is known to the calling thread.

    Raised by [`sync_await`][aiothreads.sync_await] and friends called outside any
    aiothreads call without a loop. aiothreads 1.x raised ``LookupError``
    here, so both ``except LookupError`` and ``except RuntimeError`` catch it.
    """


class LoopClosedError(RuntimeError):
    """The event loop a thread wants to run a coroutine on is closed (or closed meanwhile).

    A ``RuntimeError``, like the one ``loop.call_soon_threadsafe`` raises.
    """


class ThreadPoolException(RuntimeError):
    """Base of the errors about executors that cannot run a call (1.x name)."""


class ExecutorRefused(ThreadPoolException):
    """The executor refused or dropped a call before it ran.

    Raised through the call's future (or the iteration) when the executor
    was shut down (its ``submit()`` raised a plain ``RuntimeError``), no
    thread could be started, or the executor cancelled the queued work
    (``shutdown(cancel_futures=True)``). The executor's own error, if any,
    is the ``__cause__``. An exception of another type that ``submit()``
    raises (a load-shedding executor's own, say) reaches the caller as it
    is, as with ``loop.run_in_executor``.
    """


for _public in (NoEventLoopError, LoopClosedError, ThreadPoolException, ExecutorRefused):
    # Tracebacks, logs and spans' error.type name them where users import them from.
    _public.__module__ = "aiothreads"
del _public
