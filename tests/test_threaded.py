"""``@threaded``: calls, context, cancellation, errors, executors and method binding."""

from __future__ import annotations

import abc
import asyncio
import contextvars
import threading
import traceback
from concurrent.futures import ThreadPoolExecutor

import pytest

import aiothreads
from aiothreads import EVENT_LOOP, BoundThreaded, Threaded, ThreadedBase, WorkerPool, threaded

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id")


@threaded
def current_thread_name() -> str:
    return threading.current_thread().name


@threaded
def add(a: int, b: int = 0) -> int:
    return a + b


@pytest.mark.asyncio
async def test_call_runs_in_a_worker_thread_and_returns_its_result() -> None:
    assert await add(2, b=3) == 5
    assert await current_thread_name() != threading.current_thread().name


@pytest.mark.asyncio
async def test_three_call_styles_agree() -> None:
    assert await add(1, 2) == 3
    assert await add.async_call(1, 2) == 3
    assert add.sync_call(1, 2) == 3


@pytest.mark.asyncio
async def test_sync_call_runs_inline() -> None:
    assert current_thread_name.sync_call() == threading.current_thread().name
    assert add.sync_call(1, b=2) == 3


def test_a_limited_call_made_outside_a_loop_runs_with_its_arguments_under_its_limit() -> None:
    limiter = aiothreads.CapacityLimiter(1)
    places_held: list[int] = []

    @threaded(limit=limiter)
    def scale(value: int, *, times: int) -> int:
        places_held.append(limiter.borrowed_tokens)
        return value * times

    pending = scale(3, times=2)  # no loop runs: submitted once awaited
    assert asyncio.run(pending) == 6  # type: ignore[arg-type]
    assert places_held == [1]
    assert limiter.borrowed_tokens == 0


@pytest.mark.asyncio
async def test_call_is_submitted_without_await() -> None:
    ran = threading.Event()

    @threaded
    def mark() -> None:
        ran.set()

    future = mark()
    assert isinstance(future, asyncio.Future)
    await asyncio.get_running_loop().run_in_executor(None, ran.wait, 5)
    assert ran.is_set()
    await future


@pytest.mark.asyncio
async def test_calls_run_concurrently() -> None:
    barrier = threading.Barrier(3, timeout=5)

    @threaded
    def meet() -> int:
        return barrier.wait()

    assert sorted(await asyncio.gather(meet(), meet(), meet())) == [0, 1, 2]


def test_call_outside_a_running_loop_returns_an_awaitable_for_asyncio_run() -> None:
    awaitable = add(20, 22)
    assert asyncio.run(awaitable) == 42  # type: ignore[arg-type]


@pytest.mark.asyncio
async def test_context_variables_reach_the_thread() -> None:
    request_id.set("r-1")

    @threaded
    def read() -> str:
        return request_id.get()

    assert await read() == "r-1"


@pytest.mark.asyncio
async def test_changes_in_the_thread_do_not_leak_back() -> None:
    request_id.set("outer")

    @threaded
    def overwrite() -> None:
        request_id.set("inner")

    await overwrite()
    assert request_id.get() == "outer"


@pytest.mark.asyncio
async def test_event_loop_is_set_in_the_thread() -> None:
    @threaded
    def loop_in_thread() -> asyncio.AbstractEventLoop:
        return EVENT_LOOP.get()

    assert await loop_in_thread() is asyncio.get_running_loop()


class _Boom(Exception):
    pass


@threaded
def explode() -> None:
    raise _Boom("from the thread")


@pytest.mark.asyncio
async def test_exception_keeps_type_message_and_thread_frames() -> None:
    with pytest.raises(_Boom, match="from the thread") as caught:
        await explode()
    frames = [frame.name for frame in traceback.extract_tb(caught.value.__traceback__)]
    assert "explode" in frames


@pytest.mark.asyncio
async def test_stop_iteration_arrives_as_runtime_error() -> None:
    @threaded
    def stop() -> None:
        raise StopIteration

    with pytest.raises(
        RuntimeError, match=r"^the threaded function raised StopIteration$"
    ) as caught:
        await stop()
    assert isinstance(caught.value.__cause__, StopIteration)


@pytest.mark.asyncio
async def test_call_cancelled_before_a_worker_picks_it_up_never_runs() -> None:
    release = threading.Event()
    ran = threading.Event()
    executor = ThreadPoolExecutor(max_workers=1)
    loop = asyncio.get_running_loop()
    loop.set_default_executor(executor)

    @threaded
    def occupy() -> None:
        release.wait(5)

    @threaded
    def must_not_run() -> None:
        ran.set()

    blocker = occupy()
    queued = must_not_run()
    queued.cancel()
    release.set()
    await blocker
    await loop.run_in_executor(None, lambda: None)  # the single worker drained its queue
    assert not ran.is_set()
    with pytest.raises(asyncio.CancelledError):
        await queued


@pytest.mark.asyncio
async def test_a_call_cancelled_while_queued_in_aiothreads_pool_never_runs() -> None:
    """Without a limit or telemetry nothing settles it on cancel: its worker must skip it."""
    pool = WorkerPool(max_workers=1)
    release = threading.Event()
    ran: list[str] = []

    @threaded(executor=pool)
    def occupy() -> None:
        release.wait(5)

    @threaded(executor=pool, instrument=False)
    def must_not_run() -> None:
        ran.append("ran")

    @threaded(executor=pool)
    def after_it() -> None:
        pass

    try:
        blocker = occupy()
        queued = must_not_run()  # behind the blocker, on the only worker
        queued.cancel()
        release.set()
        await blocker
        await after_it()  # the only worker went past the cancelled call
        assert ran == []
        with pytest.raises(asyncio.CancelledError):
            await queued
    finally:
        release.set()
        await asyncio.to_thread(pool.shutdown)


@pytest.mark.asyncio
async def test_cancelling_a_running_call_abandons_its_result() -> None:
    started = threading.Event()
    release = threading.Event()

    @threaded
    def slow() -> int:
        started.set()
        release.wait(5)
        return 1

    future = slow()
    await asyncio.get_running_loop().run_in_executor(None, started.wait, 5)
    future.cancel()
    with pytest.raises(asyncio.CancelledError):
        await future
    release.set()


@pytest.mark.asyncio
async def test_set_default_executor_controls_where_calls_run() -> None:
    executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="custom-pool")
    asyncio.get_running_loop().set_default_executor(executor)
    assert (await current_thread_name()).startswith("custom-pool")


@pytest.mark.asyncio
async def test_shut_down_executor_fails_the_call_clearly() -> None:
    executor = ThreadPoolExecutor(max_workers=1)
    asyncio.get_running_loop().set_default_executor(executor)
    await add(1)
    executor.shutdown()
    with pytest.raises(RuntimeError, match="shutdown"):
        await add(1)


class Account:
    def __init__(self, balance: int) -> None:
        self.balance = balance

    @threaded
    def deposit(self, amount: int) -> int:
        self.balance += amount
        return self.balance

    @threaded
    @staticmethod
    def double(value: int) -> int:
        return value * 2

    @threaded
    @classmethod
    def open(cls, balance: int) -> Account:
        return cls(balance)


@pytest.mark.asyncio
async def test_instance_methods_bind_self() -> None:
    account = Account(10)
    assert await account.deposit(5) == 15
    assert account.deposit.sync_call(5) == 20
    assert isinstance(account.deposit, BoundThreaded)


@pytest.mark.asyncio
async def test_static_and_class_methods() -> None:
    account = Account(0)
    assert await account.double(21) == 42
    assert await Account.double(21) == 42
    opened = await Account.open(7)
    assert isinstance(opened, Account)
    assert opened.balance == 7
    assert (await account.open(3)).balance == 3


@pytest.mark.asyncio
async def test_a_class_method_got_from_an_instance_with_no_owner_binds_the_instances_class() -> (
    None
):
    class Savings(Account):
        pass

    # ``descriptor.__get__(instance)``, as code that binds by hand calls it.
    opened = await Account.__dict__["open"].__get__(Savings(0))(4)
    assert type(opened) is Savings
    assert opened.balance == 4


def test_class_access_returns_the_decorated_function() -> None:
    assert isinstance(Account.__dict__["deposit"], Threaded)
    assert Account.deposit is Account.__dict__["deposit"]


@pytest.mark.asyncio
async def test_bound_method_is_cached_per_instance() -> None:
    first, second = Account(0), Account(0)
    assert first.deposit is first.deposit
    assert first.deposit is not second.deposit
    assert Account.open is Account.open


@pytest.mark.asyncio
async def test_a_bound_method_stays_the_same_object_while_other_instances_bind_it() -> None:
    first, second = Account(0), Account(0)
    bound = first.deposit
    assert second.deposit is not bound
    assert first.deposit is bound
    assert await bound(2) == 2
    assert (first.balance, second.balance) == (2, 0)


def test_threads_binding_one_instance_at_once_all_get_the_first_bound_object() -> None:
    """Threads that miss the cache together publish once: every one gets the first bound object."""
    from aiothreads._binding import MethodBinder

    both_missed = threading.Barrier(2, timeout=5)

    class Bound:
        def __init__(self, target: object) -> None:
            self.__self__ = target

    def bind(target: object) -> Bound:
        both_missed.wait()  # neither thread publishes before both made their own
        return Bound(target)

    binder: MethodBinder[Bound] = MethodBinder("function", bind)
    account = Account(0)
    got: list[object] = []
    threads = [
        threading.Thread(target=lambda: got.append(binder.resolve(None, account, Account)))
        for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(got) == 2
    assert got[0] is got[1]
    assert binder.resolve(None, account, Account) is got[0]


class Unhashable:
    __hash__ = None  # type: ignore[assignment]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Unhashable)

    @threaded
    def name(self) -> str:
        return "unhashable"


class Slotted:
    __slots__ = ("value",)

    def __init__(self, value: int) -> None:
        self.value = value

    @threaded
    def read(self) -> int:
        return self.value


@pytest.mark.asyncio
async def test_unhashable_and_slotted_instances_work() -> None:
    instance = Unhashable()
    assert await instance.name() == "unhashable"
    assert instance.name is instance.name
    slotted = Slotted(4)
    assert await slotted.read() == 4
    assert slotted.read is slotted.read


class Storage(abc.ABC):
    @abc.abstractmethod
    def load(self, key: str) -> str: ...


class DiskStorage(Storage):
    @threaded
    def load(self, key: str) -> str:  # type: ignore[override]
        return f"disk:{key}"


@pytest.mark.asyncio
async def test_abstract_method_override() -> None:
    storage = DiskStorage()
    assert await storage.load("k") == "disk:k"  # type: ignore[misc]


def test_bound_cache_does_not_keep_instances_alive() -> None:
    import gc
    import weakref

    account = Account(1)
    _ = account.deposit
    ref = weakref.ref(account)
    del account, _
    gc.collect()
    assert ref() is None


def test_metadata_is_copied() -> None:
    assert add.__name__ == "add"
    assert add.__wrapped__.__name__ == "add"  # type: ignore[attr-defined]
    assert "add" in repr(add)
    assert isinstance(add, ThreadedBase)


async def _coroutine_function() -> None:
    return None


async def _async_generator() -> object:  # pragma: no cover - never iterated
    yield None


@pytest.mark.parametrize("bad", [_coroutine_function, _async_generator])
def test_async_functions_are_rejected(bad: object) -> None:
    with pytest.raises(TypeError, match="async function"):
        threaded(bad)  # type: ignore[call-overload]


def test_non_callables_are_rejected() -> None:
    with pytest.raises(TypeError, match="expected a function"):
        threaded(42)  # type: ignore[call-overload]


def test_public_names() -> None:
    expected = {
        "threaded",
        "threaded_separate",
        "threaded_iterable",
        "threaded_iterable_separate",
        "Threaded",
        "BoundThreaded",
        "ThreadedBase",
        "ThreadedSeparate",
        "ThreadedIterable",
        "BoundThreadedIterable",
        "ThreadedIterableBase",
        "ThreadedIterableSeparate",
        "FromThreadChannel",
        "ChannelClosed",
        "ChannelTimeout",
        "sync_await",
        "wait_coroutine",
        "sync_wait_coroutine",
        "EVENT_LOOP",
    }
    assert expected <= set(aiothreads.__all__)
    assert all(hasattr(aiothreads, name) for name in aiothreads.__all__)
    assert aiothreads.__version__ >= "1.2.0"
