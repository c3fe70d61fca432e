"""Every 1.x behaviour a caller can observe still holds (aiomisc depends on them)."""

from __future__ import annotations

import asyncio
import functools
import inspect
import subprocess
import sys
import threading
from collections.abc import Callable, Generator, Iterator
from typing import Any

import pytest

import aiothreads
from aiothreads import (
    ChannelClosed,
    FromThreadChannel,
    NoEventLoopError,
    sync_await,
    sync_wait_coroutine,
    threaded,
    threaded_iterable,
    threaded_iterable_separate,
    threaded_separate,
    wait_coroutine,
)
from aiothreads import threads as threads_module
from aiothreads import types as types_module

ITERABLE_DECORATORS = [threaded_iterable, threaded_iterable_separate]


def numbers_generator(count: int) -> Generator[int, None, None]:
    yield from range(count)


def logged(func: Callable[..., Any]) -> Callable[..., Any]:
    """A decorator of the kind applications stack under aiothreads' own."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return func(*args, **kwargs)

    return wrapper


class Counting:
    """A callable object whose call returns an iterator."""

    def __call__(self, count: int) -> Iterator[int]:
        return iter(range(count))


ITERABLE_SOURCES: dict[str, Callable[[int], Any]] = {
    "generator function": numbers_generator,
    "wrapped generator function": logged(numbers_generator),
    "function returning a list": lambda count: list(range(count)),
    "function returning an iterator": lambda count: iter(range(count)),
    "function returning a generator": functools.partial(numbers_generator),
    "callable object": Counting(),
}


@pytest.mark.asyncio
@pytest.mark.parametrize("decorator", ITERABLE_DECORATORS)
@pytest.mark.parametrize("source", sorted(ITERABLE_SOURCES))
async def test_iterable_decorators_accept_any_callable_returning_an_iterable(
    decorator: Callable[..., Any], source: str
) -> None:
    decorated = decorator(ITERABLE_SOURCES[source], max_size=2)

    assert [item async for item in decorated(5)] == [0, 1, 2, 3, 4]


@pytest.mark.asyncio
@pytest.mark.parametrize("decorator", ITERABLE_DECORATORS)
async def test_an_error_from_the_callable_surfaces_at_iteration_with_its_type(
    decorator: Callable[..., Any],
) -> None:
    @decorator()
    def errored() -> list[int]:
        raise RuntimeError("no rows")

    iterator = errored()  # calling does not run it yet
    with pytest.raises(RuntimeError, match="no rows"):
        async for _ in iterator:
            pass


@pytest.mark.asyncio
@pytest.mark.parametrize("decorator", ITERABLE_DECORATORS)
async def test_leaving_early_does_not_close_iterators_that_cannot_close(
    decorator: Callable[..., Any],
) -> None:
    class Endless:
        """An iterator with no close() method."""

        def __init__(self) -> None:
            self.value = 0

        def __iter__(self) -> Endless:
            return self

        def __next__(self) -> int:
            self.value += 1
            return self.value

    endless = decorator(Endless, max_size=1)

    iterator = endless()
    async for item in iterator:
        if item == 3:
            break
    await iterator.close()  # raises if the producer called a close() that does not exist
    assert iterator.closed


@pytest.mark.asyncio
async def test_threaded_on_a_generator_function_that_returns_a_value_still_iterates() -> None:
    @threaded
    def arange(*args: int) -> Generator[int, None, None]:
        return (yield from range(*args))

    assert [item async for item in arange(3)] == [0, 1, 2]


def default_max_sizes(environment: dict[str, str]) -> list[str]:
    script = (
        "import aiothreads, aiothreads.threads as t; "
        "print(t.THREADED_ITERABLE_DEFAULT_MAX_SIZE, aiothreads.THREADED_ITERABLE_DEFAULT_MAX_SIZE)"
    )
    completed = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, env=environment
    )
    return completed.stdout.split()


def test_default_max_size_is_an_integer_read_from_the_environment() -> None:
    assert default_max_sizes({"PATH": ""}) == ["1024", "1024"]
    assert default_max_sizes({"THREADED_ITERABLE_DEFAULT_MAX_SIZE": "7"}) == ["7", "7"]


def test_channel_closed_is_a_runtime_error() -> None:
    assert issubclass(ChannelClosed, RuntimeError)
    channel: FromThreadChannel[int] = FromThreadChannel()
    channel.close()
    with pytest.raises(RuntimeError):
        channel.put(1)


async def hello() -> str:
    return "hello"


@pytest.mark.parametrize("catch", [LookupError, RuntimeError])
def test_no_known_loop_is_caught_as_lookup_error_and_as_runtime_error(
    catch: type[Exception],
) -> None:
    caught: list[BaseException] = []

    def outside_any_call() -> None:
        for attempt in (
            lambda: sync_await(hello),
            lambda: sync_wait_coroutine(None, hello),
            lambda: wait_coroutine(hello()),
        ):
            try:
                attempt()
            except catch as exc:
                caught.append(exc)

    thread = threading.Thread(target=outside_any_call)
    thread.start()
    thread.join()
    assert len(caught) == 3
    assert all(isinstance(exc, NoEventLoopError) for exc in caught)


def test_the_names_other_libraries_import_exist() -> None:
    for name in ("EVENT_LOOP", "P", "T", "F", "R", "S", "BP", "GenType"):
        assert hasattr(types_module, name), name
    assert issubclass(threads_module.ThreadPoolException, RuntimeError)
    assert aiothreads.ThreadPoolException is threads_module.ThreadPoolException


class Retry:
    """A callable object with attributes that clash with the decorators' own."""

    def __init__(self, func: Callable[[], Any]) -> None:
        self.func = func
        self.max_size = "not a size"
        self.calls = 0

    def __call__(self) -> Any:
        self.calls += 1
        return self.func()


@pytest.mark.asyncio
async def test_decorating_an_object_with_attributes_still_calls_the_object() -> None:
    retry = Retry(lambda: "done")
    call_in_thread = threaded(retry)
    call_on_new_thread = threaded_separate(retry)

    assert await call_in_thread() == "done"
    assert await call_on_new_thread() == "done"
    assert retry.calls == 2
    assert call_in_thread.func is retry
    assert call_in_thread.__wrapped__ is retry  # type: ignore[attr-defined]


@pytest.mark.asyncio
@pytest.mark.parametrize("decorator", ITERABLE_DECORATORS)
async def test_decorating_an_iterable_object_with_attributes_keeps_the_options(
    decorator: Callable[..., Any],
) -> None:
    source = Retry(lambda: iter("ab"))
    decorated = decorator(source, max_size=3)

    assert decorated.max_size == 3
    assert [item async for item in decorated()] == ["a", "b"]
    assert source.calls == 1


@pytest.mark.asyncio
async def test_a_decorated_object_is_named_after_its_class_not_its_repr() -> None:
    call_on_new_thread = threaded_separate(Retry(threading.current_thread))

    assert repr(threaded(Retry(lambda: None))) == f"<Threaded {__name__}.Retry>"
    assert repr(call_on_new_thread) == f"<ThreadedSeparate {__name__}.Retry>"
    thread = await call_on_new_thread()
    assert thread.name == f"aiothreads-{__name__}.Retry"


def test_a_functions_own_attributes_are_still_copied() -> None:
    def tagged() -> None:
        pass

    tagged.route = "/health"  # type: ignore[attr-defined]

    assert threaded(tagged).route == "/health"  # type: ignore[attr-defined]


def run(anything: object) -> Generator[int, None, None]:
    """A generator function whose name is that of context.run."""
    yield 1


class Job:
    @threaded_iterable_separate
    def run(self) -> Generator[str, None, None]:
        yield threading.current_thread().name


@pytest.mark.asyncio
async def test_names_come_from_the_decorated_function_not_its_arguments() -> None:
    iterator = threaded_iterable(run)(object())
    assert f"{__name__}.run " in repr(iterator)
    assert [item async for item in iterator] == [1]

    thread_names = [name async for name in Job().run()]
    assert thread_names == [f"aiothreads-{__name__}.Job.run"]


@pytest.mark.asyncio
async def test_threaded_separate_takes_detach_positionally_as_in_1x() -> None:
    finished = threading.Event()

    @threaded_separate(False)
    def attached() -> bool:
        finished.set()
        return threading.current_thread().daemon

    assert await attached() is False
    assert finished.is_set()


def test_version_stays_on_the_1x_line() -> None:
    major, minor, _ = (int(part) for part in aiothreads.__version__.split("."))
    assert (major, minor) >= (1, 2)
    assert major == 1


@pytest.mark.asyncio
async def test_an_iterator_created_outside_any_loop_iterates_later() -> None:
    iterator = await asyncio.to_thread(lambda: threaded_iterable(numbers_generator)(2))
    assert [item async for item in iterator] == [0, 1]


@pytest.mark.asyncio
async def test_a_subclass_may_run_the_producer_with_a_helper_that_reads_its_name() -> None:
    from aiothreads.iterator_wrapper import IteratorWrapper

    def run_named(func: Callable[[], None]) -> asyncio.Future[None]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()

        def target() -> None:
            func()
            loop.call_soon_threadsafe(future.set_result, None)

        threading.Thread(target=target, name=func.__name__).start()
        return future

    class OwnThread(IteratorWrapper[Any, int]):
        def _run(self) -> Any:
            return run_named(self._in_thread)

    wrapper = OwnThread(functools.partial(numbers_generator, 3))
    assert [item async for item in wrapper] == [0, 1, 2]
    await wrapper.wait_closed()


def test_importing_the_package_loads_the_1x_submodules() -> None:
    script = (
        "import aiothreads; "
        "print(aiothreads.threads.THREADED_ITERABLE_DEFAULT_MAX_SIZE, "
        "aiothreads.iterator_wrapper.IteratorWrapper.__name__, "
        "aiothreads.coroutine_waiter.sync_await.__name__, "
        "aiothreads.new_thread.run_in_new_thread.__name__, "
        "aiothreads.threaded_iterable.__name__)"
    )
    completed = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert completed.stdout.split() == [
        "1024",
        "IteratorWrapper",
        "sync_await",
        "run_in_new_thread",
        "threaded_iterable",
    ]


@pytest.mark.asyncio
async def test_threaded_takes_its_function_by_keyword() -> None:
    doubled = threaded(func=lambda value: value * 2)
    assert await doubled(4) == 8


@pytest.mark.asyncio
async def test_a_threaded_call_tells_the_callers_context_its_loop_as_in_1x() -> None:
    @threaded
    def nothing() -> None:
        pass

    def via_to_thread() -> str:
        return sync_await(hello)

    await nothing()
    assert await asyncio.to_thread(via_to_thread) == "hello"


@pytest.mark.asyncio
async def test_the_1x_run_in_executor_outside_a_loop_returns_a_coroutine() -> None:
    pending = await asyncio.to_thread(threads_module.run_in_executor, lambda: 5)
    assert inspect.iscoroutine(pending)
    assert await pending == 5


@pytest.mark.asyncio
async def test_a_1x_style_subclass_that_sets_only_func_still_calls() -> None:
    class Legacy(aiothreads.ThreadedBase[[int], int]):
        def __init__(self, func: Callable[[int], int]) -> None:
            self.func = func

    legacy = Legacy(lambda value: value + 1)
    assert await legacy(1) == 2
    assert "lambda" in repr(legacy)
    with pytest.raises(AttributeError, match="'Legacy' object has no attribute 'missing'"):
        legacy.missing  # the look-up is the test


@pytest.mark.asyncio
async def test_a_1x_style_iterable_subclass_that_sets_only_func_and_max_size_still_iterates() -> (
    None
):
    class LegacyIterable(aiothreads.ThreadedIterableBase[[int], int]):
        def __init__(self, func: Callable[[int], Iterator[int]], max_size: int = 0) -> None:
            self.func = func
            self.max_size = max_size

    def count_to(stop: int) -> Iterator[int]:
        yield from range(stop)

    legacy = LegacyIterable(count_to, max_size=2)
    assert [item async for item in legacy(3)] == [0, 1, 2]
    assert repr(legacy) == f"<LegacyIterable {__name__}.{count_to.__qualname__} max_size=2>"
    with pytest.raises(AttributeError, match="'LegacyIterable' object has no attribute 'missing'"):
        legacy.missing  # the look-up is the test


def test_threaded_separate_rejects_generator_functions_as_1x_did() -> None:
    with pytest.raises(TypeError, match="threaded_iterable_separate"):
        threaded_separate(numbers_generator)
