"""Run blocking functions and generators in threads behind ``await`` and ``async for``.

The public API lives here; the implementation modules are private. The 1.x
module paths (``aiothreads.threads``, ``aiothreads.iterator_wrapper``,
``aiothreads.types``, ...) keep working.
"""

# Loaded first so that the 1.x submodule of the same name never shadows the
# threaded_iterable decorator bound below (a later import would re-set it).
# The 1.x submodules, loaded by ``import aiothreads`` as they were in 1.x.
from . import coroutine_waiter, iterator_wrapper, new_thread, threads, types  # noqa: F401  # pyright: ignore[reportUnusedImport]
from . import threaded_iterable as _threaded_iterable_module  # noqa: F401  # pyright: ignore[reportUnusedImport]
from ._bridge import sync_await, sync_wait_coroutine, wait_coroutine
from ._cancellation import check_cancelled, is_cancelled
from ._channel import ChannelClosed, ChannelTimeout, FromThreadChannel
from ._errors import ExecutorRefused, LoopClosedError, NoEventLoopError, ThreadPoolException
from ._inflight import AwaitingTask, CodeLocation, RunningWork, snapshot
from ._iterable import (
    BoundThreadedIterable,
    ThreadedIterable,
    ThreadedIterableBase,
    ThreadedIterableSeparate,
    threaded_iterable,
    threaded_iterable_separate,
)
from ._limits import CapacityLimiter
from ._pool import WorkerPool
from ._remote import runs_in_threads
from ._separate import ThreadedSeparate, threaded_separate
from ._threaded import (
    THREADED_ITERABLE_DEFAULT_MAX_SIZE,
    BoundThreaded,
    Threaded,
    ThreadedBase,
    threaded,
)
from ._version import __version__
from ._wrapper import IteratorWrapper
from .types import EVENT_LOOP

__all__ = [
    "EVENT_LOOP",
    "THREADED_ITERABLE_DEFAULT_MAX_SIZE",
    "AwaitingTask",
    "BoundThreaded",
    "BoundThreadedIterable",
    "CapacityLimiter",
    "ChannelClosed",
    "ChannelTimeout",
    "CodeLocation",
    "ExecutorRefused",
    "FromThreadChannel",
    "IteratorWrapper",
    "LoopClosedError",
    "NoEventLoopError",
    "RunningWork",
    "ThreadPoolException",
    "Threaded",
    "ThreadedBase",
    "ThreadedIterable",
    "ThreadedIterableBase",
    "ThreadedIterableSeparate",
    "ThreadedSeparate",
    "WorkerPool",
    "__version__",
    "check_cancelled",
    "is_cancelled",
    "runs_in_threads",
    "snapshot",
    "sync_await",
    "sync_wait_coroutine",
    "threaded",
    "threaded_iterable",
    "threaded_iterable_separate",
    "threaded_separate",
    "wait_coroutine",
]
