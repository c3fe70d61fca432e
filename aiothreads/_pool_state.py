"""The thread pools that run aiothreads' calls, and what they hold now: read when asked.

Semantics:

* Watched pools: every ``WorkerPool`` (from its construction), and every other
  executor aiothreads hands a call to (from its first call). A pool that was
  shut down, or collected, is no longer reported, but for its refusals: every
  pool name seen is reported with them from then on. A pool found shut down is
  no longer looked at, even while something keeps it alive.
* Each pool has a bounded name, the ``pool`` label of its metrics: ``default``
  for a loop's default executor (the ``WorkerPool`` aiothreads installs, or one
  the application set), else its thread-name prefix, else (no prefix given)
  its class name.
  Pools of one name are added up.
* ``pool_states()`` reports, per name: worker threads busy and idle (free
  for the next call), as the pool itself knows them (the workers a
  ``WorkerPool`` marks as running a call; a ``ThreadPoolExecutor``'s
  semaphore of idle workers, none while calls wait in its queue: an
  approximation, since a worker that took a queued call still counts there
  as idle once the queue is empty); the maximum; the
  calls waiting for a worker; the calls refused, by reason. Nothing is counted
  per call: asking costs a look at each pool, not asking costs nothing. The
  threads' stacks are never read for it (CPython 3.11 cannot always read them
  safely while the threads run).
* A ``ThreadPoolExecutor`` keeps its numbers private: they are read from its
  attributes ``_max_workers``, ``_threads``, ``_work_queue``, ``_shutdown``,
  ``_idle_semaphore``
  and ``_thread_name_prefix`` (checked on CPython 3.10 to 3.15); where one is
  missing, that number is left out (``None``). Of any other executor only the
  refusals are known.
* Refusals are those of aiothreads' own calls (``count_refusal``), by reason:
  ``shut_down`` (``submit()`` raised a plain ``RuntimeError``: the executor, or
  the loop's default executor, was shut down), ``rejected`` (``submit()``
  raised an exception of its own type, or failed the future before the call
  ran) and ``dropped`` (the executor dropped the queued call:
  ``shutdown(cancel_futures=True)``, or it cancelled its future). A
  ``WorkerPool`` also counts the ``submit()`` calls it drops.
* Where no scrape reaches the process (prometheus-client's multiprocess mode),
  one observer (``observe``) hears of each refusal, and of each moment the set
  of pools changes (a pool watched, a ``WorkerPool`` shut down), so that it can
  write them as they change. Busy and idle threads and queued calls change
  with every call and are not told: the observer reads ``pool_states()`` when
  calls come and go (see ``instrumentation._pool_publisher``).
"""

from __future__ import annotations

import functools
import re
import threading
import weakref
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Final, NamedTuple, Protocol, runtime_checkable

from ._outcomes import Refusal

if TYPE_CHECKING:
    from concurrent.futures import Executor

__all__ = [
    "DEFAULT_POOL",
    "PoolObserver",
    "PoolState",
    "WatchedPool",
    "count_refusal",
    "observe",
    "pool_name",
    "pool_states",
    "pools_changed",
    "refusal_of",
    "watch",
]

DEFAULT_POOL: Final = "default"
"""The name of a loop's default executor."""

_NUMBERED: Final = re.compile(r"ThreadPoolExecutor-\d+")
"""The thread-name prefix a ``ThreadPoolExecutor`` makes up when given none."""


@runtime_checkable
class WatchedPool(Protocol):
    """What a pool of aiothreads' own offers to be reported (``WorkerPool``)."""

    @property
    def pool_name(self) -> str:
        """Its ``pool`` label."""
        ...

    def pool_threads(self) -> tuple[list[threading.Thread], int, int, int, bool]:
        """Return its live workers, the idle ones, its maximum, its queue, and if shut down."""
        ...


class PoolObserver(Protocol):
    """Told of refusals and of changes to the set of pools, as they happen."""

    def refused(self, name: str, reason: Refusal) -> None:
        """Count one call the pool named ``name`` refused or dropped for ``reason``."""
        ...

    def pools_changed(self) -> None:
        """Hear that a pool was watched or shut down: ``pool_states()`` may differ."""
        ...


class PoolState(NamedTuple):
    """What the pools of one name hold now; ``None`` where it cannot be known."""

    name: str
    busy: int | None
    idle: int | None
    maximum: int | None
    queued: int | None
    refused: dict[Refusal, int]


_lock = threading.Lock()
_watched: weakref.WeakKeyDictionary[Executor, str] = weakref.WeakKeyDictionary()
_refused: dict[tuple[str, Refusal], int] = {}
_seen: dict[tuple[int, bool], weakref.ref[Executor]] = {}
"""The executors ``watch`` was given, by id and defaultness: found again without a lock."""
_observer: PoolObserver | None = None


def observe(observer: PoolObserver | None) -> None:
    """Tell ``observer`` (alone; ``None``: nobody) of refusals and pools changing from now on."""
    global _observer  # noqa: PLW0603 - one observer at a time, set by the backend
    _observer = observer


def watch(executor: Executor, *, default: bool = False) -> None:
    """Report ``executor`` from now on, as the default pool or by its own name.

    Called for every call handed to an executor other than aiothreads' pool:
    once the executor is known, this is a dictionary look-up.
    """
    key = (id(executor), default)
    seen = _seen.get(key)
    if seen is not None and seen() is executor:
        return
    name = DEFAULT_POOL if default else pool_name(executor)
    with _lock:
        if _watched.get(executor) != DEFAULT_POOL:  # once the default, always the default
            _watched[executor] = name
            _count_from_zero(name)
    _seen[key] = weakref.ref(executor, functools.partial(_forget, key))
    pools_changed()


def _forget(key: tuple[int, bool], seen: weakref.ref[Executor]) -> None:
    """Drop a collected executor's entry from ``_seen`` (unless its id was reused meanwhile)."""
    if _seen.get(key) is seen:
        del _seen[key]


def watch_own(pool: WatchedPool) -> None:
    """Report ``pool`` (a ``WorkerPool``)."""
    with _lock:
        _watched[pool] = pool.pool_name  # type: ignore[index]  # a WorkerPool is an Executor
        _count_from_zero(pool.pool_name)
    pools_changed()


def pools_changed() -> None:
    """Tell the observer, if any, that a pool was watched or shut down (hold no pool's lock)."""
    observer = _observer
    if observer is not None:
        observer.pools_changed()


def _count_from_zero(name: str) -> None:
    """Report the refusals of the pool named ``name`` from now on, 0 until there are some."""
    for reason in Refusal:
        _refused.setdefault((name, reason), 0)


def pool_name(executor: Executor | None) -> str:
    """Return the ``pool`` label of ``executor`` (the default pool's for ``None``)."""
    if executor is None:
        return DEFAULT_POOL
    with _lock:
        known = _watched.get(executor)
    if known is not None:
        return known
    prefix = getattr(executor, "_thread_name_prefix", None)  # ThreadPoolExecutor's (private)
    if not isinstance(prefix, str) or not prefix or _NUMBERED.fullmatch(prefix):
        return type(executor).__name__  # one name for all unnamed pools, however many
    return prefix


def refusal_of(error: BaseException) -> Refusal:
    """Return why ``submit()`` refused a call, judged by what it raised."""
    return Refusal.SHUT_DOWN if type(error) is RuntimeError else Refusal.REJECTED


def count_refusal(name: str, reason: Refusal) -> None:
    """Count one call that the pool named ``name`` refused or dropped."""
    with _lock:
        _refused[name, reason] = _refused.get((name, reason), 0) + 1
    observer = _observer
    if observer is not None:
        observer.refused(name, reason)


def pool_states() -> list[PoolState]:
    """Return what every watched pool holds now, added up by name (see the module docstring)."""
    with _lock:
        watched = list(_watched.items())
        refused = dict(_refused)
    states: dict[str, PoolState] = {}
    shut_down: list[Executor] = []
    for executor, name in watched:
        state = _state_of(executor, name)
        if state is None:
            shut_down.append(executor)
        else:
            states[name] = _added(states.get(name), state)
    if shut_down:  # for good: no later read need look at them, however long they live
        with _lock:
            for executor in shut_down:
                _watched.pop(executor, None)
    for (name, reason), count in refused.items():
        state = states.get(name) or PoolState(name, None, None, None, None, {})
        states[name] = state._replace(refused={**state.refused, reason: count})
    return list(states.values())


def _state_of(executor: Executor, name: str) -> PoolState | None:
    """Read one pool; ``None`` if it is shut down.

    Idle workers are counted by the pool itself (``WorkerPool``), or read from
    a ``ThreadPoolExecutor``'s semaphore of idle workers: never from the
    threads' stacks, which CPython 3.11 cannot always read safely while the
    threads run, and which a free-threaded build may not read at all.
    """
    threads: list[threading.Thread]
    maximum: int | None
    queued: int | None
    idle: int | None
    if isinstance(executor, WatchedPool):
        threads, idle, maximum, queued, shut_down = executor.pool_threads()
    elif isinstance(executor, ThreadPoolExecutor):
        shut_down = bool(getattr(executor, "_shutdown", False))
        threads = list(getattr(executor, "_threads", ()))
        maximum = getattr(executor, "_max_workers", None)
        work_queue = getattr(executor, "_work_queue", None)
        queued = None if work_queue is None else work_queue.qsize()
        idle = getattr(getattr(executor, "_idle_semaphore", None), "_value", None)
        if idle is not None and queued:  # a worker with a call to take is not idle
            idle = 0
    else:
        return PoolState(name, None, None, None, None, {})
    if shut_down:
        return None
    live = sum(1 for thread in threads if thread.is_alive())
    if idle is None:
        return PoolState(name, None, None, maximum, queued, {})
    idle = max(0, min(idle, live))
    return PoolState(name, live - idle, idle, maximum, queued, {})


def _added(known: PoolState | None, more: PoolState) -> PoolState:
    """Add up two pools of one name (a number unknown for either stays unknown)."""
    if known is None:
        return more

    def plus(a: int | None, b: int | None) -> int | None:
        return None if a is None or b is None else a + b

    return PoolState(
        known.name,
        plus(known.busy, more.busy),
        plus(known.idle, more.idle),
        plus(known.maximum, more.maximum),
        plus(known.queued, more.queued),
        {},
    )
