"""The worker pool aiothreads installs as an asyncio loop's default executor."""

from __future__ import annotations

import asyncio
import os
import threading
import weakref
from collections.abc import Callable
from concurrent.futures import CancelledError, ThreadPoolExecutor
from queue import SimpleQueue
from typing import Any
from unittest import mock

import pytest

from aiothreads import ExecutorRefused, _asyncio_internals, _pool, threaded
from aiothreads._asyncio_internals import default_executor_of
from aiothreads._executor import default_executor
from aiothreads._pool import WorkerPool
from tests.waiting import turns_until


@threaded
def thread_name() -> str:
    return threading.current_thread().name


def test_pool_is_a_thread_pool_executor() -> None:
    with WorkerPool(max_workers=2) as pool:
        assert isinstance(pool, ThreadPoolExecutor)
        assert pool.submit(pow, 2, 10).result(5) == 1024
        assert list(pool.map(abs, [-1, -2, 3])) == [1, 2, 3]
        future = pool.submit(lambda: 1 / 0)
        with pytest.raises(ZeroDivisionError):
            future.result(5)
    with pytest.raises(RuntimeError, match="shutdown"):
        pool.submit(abs, 1)


def test_pool_never_exceeds_max_workers() -> None:
    release = threading.Event()
    with WorkerPool(max_workers=2) as pool:
        futures = [pool.submit(release.wait, 5) for _ in range(6)]
        assert len(pool._workers) == 2
        release.set()
        assert all(future.result(5) for future in futures)


def test_shutdown_can_cancel_queued_work() -> None:
    release = threading.Event()
    pool = WorkerPool(max_workers=1)
    running = pool.submit(release.wait, 5)
    queued = pool.submit(abs, -1)
    release.set()
    pool.shutdown(wait=True, cancel_futures=True)
    assert running.result(5)
    if queued.cancelled():
        with pytest.raises(CancelledError):
            queued.result()
    else:
        assert queued.result() == 1


def test_bad_size_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"^max_workers must be greater than 0$"):
        WorkerPool(max_workers=0)


@pytest.mark.parametrize(("cpus", "size"), [(2, 6), (64, 32), (None, 5)])
def test_default_size_is_the_standard_pools(
    monkeypatch: pytest.MonkeyPatch, cpus: int | None, size: int
) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: cpus)
    if hasattr(os, "process_cpu_count"):  # what ThreadPoolExecutor counts since 3.13
        monkeypatch.setattr(os, "process_cpu_count", lambda: cpus)
    assert ThreadPoolExecutor()._max_workers == size  # the standard library's own rule
    pool = WorkerPool()
    assert repr(pool) == f"<WorkerPool running workers=0/{size}>"
    pool.shutdown()
    assert repr(pool) == f"<WorkerPool shut down workers=0/{size}>"


def test_refusals_say_why(monkeypatch: pytest.MonkeyPatch) -> None:
    pool = WorkerPool(max_workers=1)
    pool.shutdown()
    with pytest.raises(RuntimeError, match=r"^cannot schedule new calls after shutdown$"):
        pool.submit(abs, 1)
    at_exit = WorkerPool(max_workers=1)
    monkeypatch.setattr(_pool, "_exiting", True)
    with pytest.raises(
        RuntimeError, match=r"^cannot schedule new calls after interpreter shutdown$"
    ):
        at_exit.submit(abs, 1)
    at_exit.shutdown()


def test_workers_are_daemons_named_after_the_prefix() -> None:
    with WorkerPool(max_workers=1, thread_name_prefix="checked") as pool:
        thread = pool.submit(threading.current_thread).result(5)
        assert thread in _pool._live_workers  # what exit waits for
    assert thread.name == "checked_0"
    assert thread.daemon is True  # an idle pool never holds the interpreter up


def test_submit_passes_keyword_arguments() -> None:
    with WorkerPool(max_workers=1) as pool:
        assert pool.submit(int, "ff", base=16).result(5) == 255


def test_shutdown_waits_for_running_work_by_default() -> None:
    started, release = threading.Event(), threading.Event()
    pool = WorkerPool(max_workers=1)

    def work() -> None:
        started.set()
        release.wait(5)

    pool.submit(work)
    assert started.wait(5)
    (worker,) = pool._workers
    shutting_down = threading.Thread(target=pool.shutdown)
    shutting_down.start()
    shutting_down.join(0.05)
    assert shutting_down.is_alive()  # still waiting: the work has not been released
    release.set()
    shutting_down.join(5)
    assert not worker.is_alive()


def test_shutdown_runs_the_queued_work_by_default() -> None:
    started, release = threading.Event(), threading.Event()
    pool = WorkerPool(max_workers=1)
    pool.submit(lambda: (started.set(), release.wait(5)))
    assert started.wait(5)
    queued = pool.submit(abs, -3)

    pool.shutdown(wait=False)  # the only worker is busy: the call is still queued
    release.set()

    assert queued.result(5) == 3
    pool.shutdown()


def test_a_second_shutdown_that_cancels_the_queued_work_still_lets_every_worker_stop() -> None:
    started, release = threading.Event(), threading.Event()
    pool = WorkerPool(max_workers=1, idle_timeout=None)
    running = pool.submit(lambda: (started.set(), release.wait(5)))
    assert started.wait(5)
    (worker,) = pool._workers
    try:
        queued = pool.submit(abs, -3)

        pool.shutdown(wait=False)  # its stop marker queues behind the call
        pool.shutdown(wait=False, cancel_futures=True)  # drops the call, not the marker
        release.set()

        assert queued.cancelled()
        assert running.result(5) == (None, True)
        worker.join(5)
        assert not worker.is_alive()
    finally:
        release.set()
        if worker.is_alive():  # left waiting for a stop marker that was lost
            pool._calls.put(None)


def test_work_cancelled_before_a_worker_took_it_never_runs() -> None:
    started, release = threading.Event(), threading.Event()
    ran: list[str] = []
    pool = WorkerPool(max_workers=1)
    try:
        pool.submit(lambda: (started.set(), release.wait(5)))
        assert started.wait(5)
        queued = pool.submit(ran.append, "queued")
        assert queued.cancel()
        release.set()
        assert pool.submit(abs, -1).result(5) == 1  # the only worker went past it
        assert ran == []
    finally:
        release.set()
        pool.shutdown()


def test_a_submitted_call_that_started_runs_on_and_cannot_be_cancelled() -> None:
    # As with ThreadPoolExecutor: once a worker takes it, the future is running.
    started, release = threading.Event(), threading.Event()
    pool = WorkerPool(max_workers=1)

    def work() -> str:
        started.set()
        release.wait(5)
        return "done"

    try:
        future = pool.submit(work)
        assert started.wait(5)
        assert future.running()
        assert not future.cancel()
        release.set()
        assert future.result(5) == "done"
    finally:
        release.set()
        pool.shutdown()


def test_the_shutdown_callback_runs_in_the_first_shutdown_only() -> None:
    pool = WorkerPool(max_workers=1)
    called: list[str] = []
    pool.call_on_shutdown(lambda: called.append("shutdown"))
    assert pool.submit(abs, -1).result(5) == 1
    pool.shutdown()
    pool.shutdown()
    pool.shutdown(cancel_futures=True)
    assert called == ["shutdown"]


@pytest.mark.asyncio
async def test_an_idle_worker_takes_the_next_call_instead_of_a_new_thread() -> None:
    with WorkerPool(max_workers=4) as pool:
        assert pool.submit(abs, -1).result(5) == 1
        await turns_until(lambda: len(pool._free) == 1, "the worker is idle again")
        assert pool.submit(abs, -2).result(5) == 2
        assert len(pool._workers) == 1


def test_no_worker_starts_after_shutdown_even_for_a_racing_submit() -> None:
    pool = WorkerPool(max_workers=2)
    pool.shutdown()
    pool._add_worker()  # what a submit that passed its check just before shutdown does
    assert pool._workers == []


@pytest.mark.asyncio
async def test_installed_as_the_default_executor_of_loops_without_one() -> None:
    loop = asyncio.get_running_loop()
    name = await thread_name()
    assert isinstance(default_executor(loop), WorkerPool)
    assert name.startswith("aiothreads_")
    # Code that uses the loop's executor directly shares the same pool.
    assert (await asyncio.to_thread(lambda: threading.current_thread().name)).startswith(
        "aiothreads_"
    )


def test_a_call_after_its_loop_shut_the_default_executor_down_is_refused_in_asyncios_words(
    loop_factory: Callable[[], asyncio.AbstractEventLoop],
) -> None:
    loop = loop_factory()
    try:
        loop.run_until_complete(loop.shutdown_default_executor())  # before any call installed one
        with pytest.raises(ExecutorRefused) as refused:
            loop.run_until_complete(thread_name())
    finally:
        loop.close()
    assert isinstance(refused.value.__cause__, RuntimeError)
    assert str(refused.value.__cause__) == "Executor shutdown has been called"


@pytest.mark.asyncio
async def test_a_loop_that_hides_its_default_executor_runs_calls_through_run_in_executor(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    loop = asyncio.get_running_loop()
    hidden = ThreadPoolExecutor(1, thread_name_prefix="hidden")
    loop.set_default_executor(hidden)
    # As for a loop type that neither names its executor nor lets it be found.
    monkeypatch.setattr(_asyncio_internals, "_WITHOUT_ATTRIBUTE", {type(loop)})
    monkeypatch.setattr(_asyncio_internals, "_OPAQUE", {type(loop)})
    try:
        assert default_executor_of(loop) == (False, None)
        assert (await thread_name()).startswith("hidden")

        @threaded
        def fails() -> None:
            raise LookupError("raised in the thread")

        with pytest.raises(LookupError, match=r"^raised in the thread$"):
            await fails()
    finally:
        monkeypatch.undo()
        hidden.shutdown(wait=True)


@pytest.mark.asyncio
async def test_an_executor_set_after_the_first_call_is_used_from_then_on() -> None:
    loop = asyncio.get_running_loop()
    assert (await thread_name()).startswith("aiothreads_")
    executor = ThreadPoolExecutor(1, thread_name_prefix="set-later")
    loop.set_default_executor(executor)
    try:
        assert default_executor(loop) is executor
        assert (await thread_name()).startswith("set-later")
    finally:
        executor.shutdown(wait=True)


@pytest.mark.asyncio
async def test_an_executor_kept_as_an_attribute_of_the_loop_is_not_taken_for_its_default() -> None:
    loop = asyncio.get_running_loop()
    unrelated = ThreadPoolExecutor(1, thread_name_prefix="an-attribute")
    loop.aiothreads_test_pool = unrelated  # type: ignore[attr-defined]
    try:
        assert (await thread_name()).startswith("aiothreads_")
        replacement = ThreadPoolExecutor(1, thread_name_prefix="set-later")
        loop.set_default_executor(replacement)
        try:
            assert (await thread_name()).startswith("set-later")
        finally:
            replacement.shutdown(wait=True)
    finally:
        del loop.aiothreads_test_pool  # type: ignore[attr-defined]
        unrelated.shutdown(wait=True)


@pytest.mark.asyncio
async def test_the_remembered_default_executor_is_held_weakly() -> None:
    loop = asyncio.get_running_loop()
    await thread_name()
    remembered = getattr(loop, "_aiothreads_default_executor", None)
    if remembered is not None:  # only loops that hide their default executor
        assert isinstance(remembered, weakref.ref)
        assert remembered() is default_executor_of(loop)[1]


@pytest.mark.asyncio
async def test_executor_set_by_the_application_wins() -> None:
    loop = asyncio.get_running_loop()
    loop.set_default_executor(ThreadPoolExecutor(thread_name_prefix="app-pool"))
    assert (await thread_name()).startswith("app-pool")


@pytest.mark.asyncio
async def test_executor_replaced_after_first_use_wins() -> None:
    loop = asyncio.get_running_loop()
    await thread_name()
    loop.set_default_executor(ThreadPoolExecutor(thread_name_prefix="later-pool"))
    assert (await thread_name()).startswith("later-pool")


def test_asyncio_run_waits_for_running_calls() -> None:
    started, shutting_down, finished = threading.Event(), threading.Event(), threading.Event()

    @threaded
    def slow() -> None:
        started.set()
        shutting_down.wait(5)  # still running when asyncio.run shuts the pool down
        finished.set()

    async def main() -> None:
        slow()  # not awaited: asyncio.run still waits for it at shutdown
        await asyncio.get_running_loop().run_in_executor(None, started.wait, 5)
        known, pool = default_executor_of(asyncio.get_running_loop())
        assert known
        assert isinstance(pool, WorkerPool)
        shut_down = pool.shutdown

        def announce_then_shut_down(wait: bool = True, *, cancel_futures: bool = False) -> None:
            shutting_down.set()
            shut_down(wait, cancel_futures=cancel_futures)

        pool.shutdown = announce_then_shut_down  # type: ignore[method-assign]

    asyncio.run(main())
    assert shutting_down.is_set()
    assert finished.is_set()


def test_idle_workers_exit_after_ten_seconds_by_default() -> None:
    assert WorkerPool().idle_timeout == _pool.IDLE_TIMEOUT == 10.0
    assert WorkerPool(idle_timeout=None).idle_timeout is None
    assert WorkerPool(idle_timeout=1).idle_timeout == 1.0


@pytest.mark.parametrize(
    ("idle_timeout", "error", "message"),
    [
        (0, ValueError, r"^idle_timeout must be > 0 seconds \(None keeps idle workers\), got 0$"),
        (-1.5, ValueError, r"^idle_timeout must be > 0 seconds"),
        (float("nan"), ValueError, r"^idle_timeout must be > 0 seconds"),
        ("10", TypeError, r"^idle_timeout must be a number of seconds or None, got str$"),
        (True, TypeError, r"^idle_timeout must be a number of seconds or None, got bool$"),
    ],
)
def test_a_bad_idle_timeout_is_rejected(idle_timeout: object, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        WorkerPool(idle_timeout=idle_timeout)  # type: ignore[arg-type]


def _burst(pool: WorkerPool, size: int) -> list[threading.Thread]:
    """Run ``size`` calls that each wait for all the others: ``size`` workers at once."""
    together = threading.Barrier(size)

    def meet() -> threading.Thread:
        together.wait(5)
        return threading.current_thread()

    return [future.result(5) for future in [pool.submit(meet) for _ in range(size)]]


def test_the_pool_falls_back_to_no_thread_after_a_burst_and_grows_again() -> None:
    with WorkerPool(max_workers=4, idle_timeout=0.05) as pool:
        burst = _burst(pool, 4)
        assert len(set(burst)) == 4
        for worker in burst:
            worker.join(5)  # each leaves once idle for its timeout
            assert not worker.is_alive()
            assert worker not in _pool._live_workers
        assert repr(pool) == "<WorkerPool running workers=0/4>"
        assert not pool._free

        again = _burst(pool, 4)  # the pool grows again on demand, up to its maximum
        assert len(set(again)) == 4
        assert not set(again) & set(burst)


def test_an_idle_workers_thread_local_state_goes_with_it() -> None:
    local = threading.local()

    def remember() -> threading.Thread:
        local.value = "set in the first worker"
        return threading.current_thread()

    with WorkerPool(max_workers=1, idle_timeout=0.05) as pool:
        first = pool.submit(remember).result(5)
        first.join(5)
        assert not first.is_alive()
        assert pool.submit(lambda: getattr(local, "value", None)).result(5) is None


@pytest.mark.parametrize("submitters", [1, 4])
def test_a_call_that_arrives_as_its_worker_times_out_still_runs(submitters: int) -> None:
    # Idle timeouts so short that workers time out between nearly every two calls,
    # so calls keep arriving just as their worker decides to leave.
    with WorkerPool(max_workers=2, idle_timeout=1e-4) as pool:

        def submit_one_by_one() -> None:
            for value in range(300):
                assert pool.submit(abs, -value).result(5) == value

        submitting = [threading.Thread(target=submit_one_by_one) for _ in range(submitters)]
        for thread in submitting:
            thread.start()
        for thread in submitting:
            thread.join(30)
            assert not thread.is_alive()


def test_a_worker_that_takes_a_call_queued_for_a_full_pool_leaves_its_place_to_the_next(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No more idle places are counted than workers wait, however calls race in.

    In a full pool, a worker that ends its call looks at the queue, finds it
    empty and counts itself idle; meanwhile one caller queues a call for no
    worker in particular (the pool was full), and another counts on the idle
    worker for its own call. The worker then takes the first call: the second
    waits for whichever worker ends next. Counted twice, that place would
    outlive the workers, and a call made once they all left would wait for ever.
    """
    hold = [threading.Event(), threading.Event()]
    running = [threading.Event(), threading.Event()]
    race_in: list[Callable[[], object]] = []

    def blocked(index: int) -> int:
        running[index].set()
        hold[index].wait(5)
        return index

    class RacedQueue(SimpleQueue[Any]):
        def empty(self) -> bool:
            empty = super().empty()
            if race_in and threading.current_thread().name == "raced_0":
                race_in.pop(0)()  # after the look, before it counts itself idle
            return empty

        def get(self, block: bool = True, timeout: float | None = None) -> Any:
            if race_in and threading.current_thread().name == "raced_0":
                race_in.pop(0)()  # counted idle, not yet waiting
            return super().get(block, timeout)

    monkeypatch.setattr(_pool, "SimpleQueue", RacedQueue)
    pool = WorkerPool(max_workers=2, thread_name_prefix="raced", idle_timeout=0.01)
    try:
        calls = [pool.submit(blocked, 0), pool.submit(blocked, 1)]
        assert running[0].wait(5)
        assert running[1].wait(5)
        workers = list(pool._workers)
        race_in += [
            lambda: calls.append(pool.submit(abs, -2)),  # the pool is full: for any worker
            lambda: calls.append(pool.submit(abs, -3)),  # for the worker that counted itself idle
        ]
        hold[0].set()
        assert calls[0].result(5) == 0
        hold[1].set()
        assert [call.result(5) for call in calls[1:]] == [1, 2, 3]
        assert not race_in
        for worker in workers:  # both leave once idle for idle_timeout
            worker.join(5)
            assert not worker.is_alive()
        assert pool.submit(abs, -4).result(5) == 4  # a new worker starts for it
    finally:
        for event in hold:
            event.set()
        pool.shutdown(wait=True)


def test_without_an_idle_timeout_workers_wait_for_calls_for_ever(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    waits: list[float | None] = []

    class RecordingQueue(SimpleQueue[Any]):
        def get(self, block: bool = True, timeout: float | None = None) -> Any:
            waits.append(timeout)
            return super().get(block, timeout)

    monkeypatch.setattr(_pool, "SimpleQueue", RecordingQueue)
    with WorkerPool(max_workers=1, idle_timeout=None) as pool:
        assert pool.submit(abs, -1).result(5) == 1
    assert waits
    assert set(waits) == {None}  # as in 1.1: an idle worker stays until shutdown


@pytest.mark.asyncio
async def test_threaded_calls_grow_the_pool_and_it_falls_back_after_the_burst() -> None:
    pool = WorkerPool(max_workers=3, idle_timeout=0.05)
    asyncio.get_running_loop().set_default_executor(pool)
    together = threading.Barrier(3)

    @threaded
    def meet() -> threading.Thread:
        together.wait(5)
        return threading.current_thread()

    burst = await asyncio.gather(meet(), meet(), meet())
    assert len(set(burst)) == 3
    for worker in burst:
        worker.join(5)  # on the loop's thread: the pool must not start a worker to wait
        assert not worker.is_alive()
    assert repr(pool) == "<WorkerPool running workers=0/3>"
    assert len(set(await asyncio.gather(meet(), meet(), meet()))) == 3


def test_two_executors_the_loop_holds_out_of_sight_leave_the_choice_to_the_loop() -> None:
    uvloop = pytest.importorskip("uvloop")

    class LoopWithASidePool(uvloop.Loop):  # type: ignore[misc,name-defined]
        __slots__ = ("side_pool",)  # a slot is no attribute in __dict__: it looks like the default

    loop = LoopWithASidePool()
    side = ThreadPoolExecutor(1, thread_name_prefix="side")
    chosen = ThreadPoolExecutor(1, thread_name_prefix="chosen")
    try:
        loop.side_pool = side
        loop.set_default_executor(chosen)
        assert default_executor_of(loop) == (False, None)  # which one is the default: unknown

        @threaded
        def name() -> str:
            return threading.current_thread().name

        assert loop.run_until_complete(name()).startswith("chosen")  # the loop picked it
    finally:
        loop.close()
        side.shutdown(wait=True)
        chosen.shutdown(wait=True)


def test_a_worker_that_runs_a_queued_call_does_not_count_as_idle_meanwhile() -> None:
    """A call that waits on the one a worker took from the queue gets a thread of its own.

    The worker ends a call and finds another queued (behind a full pool): it
    runs it at once. Counted as idle meanwhile, it would take the next call
    for itself, which would wait behind the call it may have to unblock.
    """
    pool = WorkerPool(max_workers=2, idle_timeout=0.05, thread_name_prefix="dependent")
    first, second, third = threading.Event(), threading.Event(), threading.Event()
    third_runs, fourth_runs = threading.Event(), threading.Event()
    try:
        pool.submit(first.wait, 10)
        finished = pool.submit(lambda: (second.wait(10), threading.current_thread())[1])
        pool.submit(lambda: (third_runs.set(), third.wait(60)))  # queued: both workers busy

        first.set()  # the first worker ends its call and takes the queued one
        assert third_runs.wait(10)
        second.set()  # the second worker goes idle, then exits after its timeout
        idle_worker = finished.result(10)
        idle_worker.join(10)
        assert not idle_worker.is_alive()

        pool.submit(fourth_runs.set)  # room for one more thread: it starts at once
        assert fourth_runs.wait(10), "the fourth call waited behind the third"
    finally:
        third.set()
        pool.shutdown()


class PausingQueue(SimpleQueue[Any]):
    """A pool's queue whose ``empty()`` can hold a worker that found it empty.

    That is the moment a worker has ended a call, found nothing queued and is
    about to wait for the next: a call queued then finds no idle worker.
    """

    def __init__(self) -> None:
        super().__init__()
        self.armed = False
        self.paused = threading.Event()
        self.go_on = threading.Event()

    def empty(self) -> bool:
        found = super().empty()
        if found and self.armed:
            self.armed = False
            self.paused.set()
            self.go_on.wait(10)
        return found


def test_a_waiting_worker_that_takes_a_call_queued_behind_a_full_pool_counts_as_busy() -> None:
    """The call after it gets a thread of its own while the pool has room.

    A call queued while every worker was busy (and none waiting) may be taken
    by a worker that started to wait just after. That worker is busy then: a
    call that waits on it must not be left waiting behind it.
    """
    queue = PausingQueue()
    with mock.patch.object(_pool, "SimpleQueue", return_value=queue):
        pool = WorkerPool(max_workers=1, thread_name_prefix="taken-late")
    release, queued_runs, after_runs = threading.Event(), threading.Event(), threading.Event()
    try:
        pool.submit(release.wait, 10)
        queue.armed = True
        release.set()  # its worker ends the call, finds the queue empty...
        assert queue.paused.wait(10)
        unblock = threading.Event()
        pool.submit(lambda: (queued_runs.set(), unblock.wait(10)))  # ...no worker waits yet
        queue.go_on.set()  # ...and goes on to wait: it takes the queued call
        assert queued_runs.wait(10)
        pool._max_workers = 2  # room for one more thread from now on
        pool.submit(after_runs.set)
        assert after_runs.wait(10), "the call waited behind the busy worker"
        unblock.set()
    finally:
        queue.go_on.set()
        pool.shutdown()


class HeldPutQueue(SimpleQueue[Any]):
    """A pool's queue that holds one thread's ``put`` until told to go on.

    That is a submit that found the pool open and an idle worker's token, and
    has not queued its call yet: a shutdown can come in between.
    """

    def __init__(self) -> None:
        super().__init__()
        self.held: threading.Thread | None = None
        self.reached = threading.Event()
        self.go_on = threading.Event()
        self.a_worker_waits = threading.Event()
        """Set as a worker starts to wait for a call: it gave its token (it is idle)."""

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        if block:
            self.a_worker_waits.set()
        return super().get(block, timeout)

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        if threading.current_thread() is self.held:
            self.reached.set()
            assert self.go_on.wait(10), "the held put was never let go"
        super().put(item, block, timeout)


def submit_held_in(
    pool: WorkerPool, queue: HeldPutQueue, work: Callable[[], object]
) -> tuple[threading.Thread, list[object]]:
    """Submit ``work`` from a thread of its own, held just before it is queued.

    The list gets the future, or the exception ``submit`` raised.
    """
    outcome: list[object] = []

    def submit() -> None:
        try:
            outcome.append(pool.submit(work))
        except RuntimeError as refused:
            outcome.append(refused)

    submitter = threading.Thread(target=submit, name="held-submitter")
    queue.held = submitter
    submitter.start()
    assert queue.reached.wait(10)
    return submitter, outcome


def queued_behind_the_stop_markers(
    *, cancel_futures: bool, wait: bool
) -> tuple[object, WorkerPool]:
    """Submit a call that is queued behind a busy worker's stop marker; return its outcome.

    One worker is busy, the other idle; the submit takes the idle one's token,
    then the shutdown stops the idle worker before the call is queued. The
    outcome is the future, or the exception ``submit`` raised; the pool, shut
    down, is returned beside it, to wait for before the test ends.
    """
    queue = HeldPutQueue()
    with mock.patch.object(_pool, "SimpleQueue", return_value=queue):
        pool = WorkerPool(max_workers=2, idle_timeout=None)
    release = threading.Event()
    busy = pool.submit(release.wait, 10)
    pool.submit(abs, -1).result(10)  # a second worker, idle after this
    assert queue.a_worker_waits.wait(10)
    submitter, outcome = submit_held_in(pool, queue, lambda: "ran")
    pool.shutdown(wait=False, cancel_futures=cancel_futures)
    for worker in [worker for worker in pool._workers if worker.name.endswith("_1")]:
        worker.join(10)  # the idle worker took its stop marker
    queue.go_on.set()
    submitter.join(10)
    release.set()
    if wait:
        pool.shutdown(wait=True)
    assert busy.result(10) is True
    (found,) = outcome
    return found, pool


@pytest.mark.parametrize("wait", [True, False], ids=["shutdown waits", "shutdown returns"])
def test_a_call_queued_behind_the_stop_markers_of_a_shutdown_runs(wait: bool) -> None:
    """Accepted before the shutdown's last worker left: it runs, as ThreadPoolExecutor's would."""
    future, pool = queued_behind_the_stop_markers(cancel_futures=False, wait=wait)

    assert not isinstance(future, RuntimeError), "accepted while a worker was left: it runs"
    assert future.result(10) == "ran"  # type: ignore[attr-defined]
    pool.shutdown(wait=True)


def test_a_call_queued_after_the_last_worker_of_a_shutdown_left_is_refused() -> None:
    """No worker is left to run it: the submit raises, as after any shutdown, and drops nothing."""
    queue = HeldPutQueue()
    with mock.patch.object(_pool, "SimpleQueue", return_value=queue):
        pool = WorkerPool(max_workers=1, idle_timeout=None)
    pool.submit(abs, -1).result(10)  # one worker, idle after this
    assert queue.a_worker_waits.wait(10)
    submitter, outcome = submit_held_in(pool, queue, lambda: "ran")
    pool.shutdown(wait=True)  # the worker takes its stop marker and leaves
    queue.go_on.set()
    submitter.join(10)

    (refused,) = outcome
    assert isinstance(refused, RuntimeError)
    assert str(refused) == "cannot schedule new calls after shutdown"
    assert queue.empty()


def test_a_call_queued_behind_the_stop_markers_of_a_shutdown_that_cancels_is_dropped() -> None:
    future, _ = queued_behind_the_stop_markers(cancel_futures=True, wait=True)

    assert future.cancelled()  # type: ignore[attr-defined]
