"""Mistakes made with the decorators get messages that name the function and say what to do."""

from __future__ import annotations

import asyncio
import gc
import threading
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from aiothreads import (
    IteratorWrapper,
    threaded,
    threaded_iterable,
    threaded_iterable_separate,
    threaded_separate,
)

MODULE = __name__


@threaded
def fetch(key: str) -> str:
    return key


@threaded(limit=1)
def fetch_limited(key: str) -> str:
    return key


@threaded(limit=1)
def hold_the_place(release: threading.Event) -> bool:
    return release.wait(10)


@threaded_separate
def fetch_separate(key: str) -> str:
    return key


@threaded
def fail(message: str) -> None:
    raise ValueError(message)


@threaded_iterable
def rows(count: int) -> Iterator[int]:
    yield from range(count)


@threaded_iterable_separate
def lines(count: int) -> Iterator[str]:
    yield from map(str, range(count))


@threaded
def generated(count: int) -> Iterator[int]:
    yield from range(count)


class Table:
    @threaded
    def load(self, key: str) -> str:
        return key


def never_awaited_warnings(make: Callable[[], object]) -> list[str]:
    """The messages of the warnings Python gives when what ``make()`` returns is dropped."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        made = make()
        del made
        gc.collect()
    return [str(warning.message) for warning in caught]


@pytest.mark.parametrize(
    ("make", "name"),
    [
        (lambda: fetch("k"), f"{MODULE}.fetch"),
        (lambda: fetch_limited("k"), f"{MODULE}.fetch_limited"),
        (lambda: fetch_separate("k"), f"{MODULE}.fetch_separate"),
        (lambda: Table().load("k"), f"{MODULE}.Table.load"),
    ],
    ids=["threaded", "limited", "separate", "method"],
)
def test_a_call_outside_a_loop_never_awaited_is_reported_by_the_functions_name(
    make: Callable[[], object], name: str
) -> None:
    assert never_awaited_warnings(make) == [f"coroutine '{name}' was never awaited"]


def test_a_call_outside_a_loop_is_a_coroutine_named_after_the_function() -> None:
    call = fetch("k")
    assert f"<coroutine object {MODULE}.fetch at " in repr(call)
    assert asyncio.run(call) == "k"  # type: ignore[arg-type]


@pytest.mark.asyncio
async def test_a_forgotten_call_shows_the_function_in_its_repr() -> None:
    call = fetch("k")
    assert repr(call) == f"<ThreadCall pending {MODULE}.fetch>"
    assert await call == "k"
    assert repr(call) == f"<ThreadCall finished {MODULE}.fetch result='k'>"


@pytest.mark.asyncio
async def test_a_cancelled_call_shows_the_function_in_its_repr() -> None:
    call = fetch_separate("k")
    assert isinstance(call, asyncio.Future)
    call.cancel()
    assert repr(call) == f"<ThreadCall cancelled {MODULE}.fetch_separate>"


@pytest.mark.asyncio
async def test_an_exception_never_retrieved_is_reported_with_the_function() -> None:
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _, context: reported.append(context))
    try:
        call = fail("boom")
        assert isinstance(call, asyncio.Future)
        await asyncio.wait([call])  # done, and its exception never retrieved
        # What runs when the call is dropped; a pool worker may hold on to it a
        # while longer, so it is run here rather than waited for.
        call.__del__()
    finally:
        loop.set_exception_handler(None)
    call.exception()  # seen now: nothing more to report when it is collected
    assert [(context["message"], repr(context["future"])) for context in reported] == [
        (
            "ThreadCall exception was never retrieved",
            f"<ThreadCall finished {MODULE}.fail exception=ValueError('boom')>",
        )
    ]


@pytest.mark.asyncio
async def test_a_limited_call_waiting_for_a_place_is_a_task_named_after_the_function() -> None:
    release = threading.Event()
    holder = hold_the_place(release)
    waiting = hold_the_place(release)  # no place yet: it waits in a task
    assert isinstance(waiting, asyncio.Task)
    assert waiting.get_coro().__qualname__ == f"{MODULE}.hold_the_place"  # type: ignore[union-attr]
    release.set()
    assert (await holder, await waiting) == (True, True)


ITERABLES: dict[str, tuple[Callable[[int], IteratorWrapper[..., Any]], str]] = {
    "threaded_iterable": (rows, f"{MODULE}.rows"),
    "threaded_iterable_separate": (lines, f"{MODULE}.lines"),
    "threaded generator": (generated, f"{MODULE}.generated"),
}


@pytest.mark.asyncio
@pytest.mark.parametrize(("iterable", "name"), ITERABLES.values(), ids=ITERABLES)
async def test_a_threaded_iterable_is_not_awaitable_so_code_that_awaits_awaitables_iterates_it(
    iterable: Callable[[int], IteratorWrapper[..., Any]], name: str
) -> None:
    import inspect

    iterator = iterable(3)
    assert not inspect.isawaitable(iterator)
    assert [item async for item in iterator] == list(iterable.sync_call(3))  # type: ignore[attr-defined]


@pytest.mark.asyncio
@pytest.mark.parametrize(("iterable", "name"), ITERABLES.values(), ids=ITERABLES)
async def test_iterating_a_threaded_iterable_with_for_says_to_use_async_for(
    iterable: Callable[[int], IteratorWrapper[..., Any]], name: str
) -> None:
    message = (
        f"cannot iterate over {name}(...), an async iterator, with 'for': "
        "use 'async for item in ...' in an async function"
    )
    with pytest.raises(TypeError) as raised:
        for _ in iterable(3):  # type: ignore[attr-defined]
            pass
    assert str(raised.value) == message
    with pytest.raises(TypeError) as raised:
        list(iterable(3))  # type: ignore[call-overload]
    assert str(raised.value) == message


def test_a_threaded_iterable_is_an_async_iterable_only() -> None:
    # Libraries choose between sync and async iteration by these checks (httpx
    # takes request content that is an Iterable for a sync stream).
    from collections.abc import AsyncIterable, Iterable

    iterator = rows(1)
    assert isinstance(iterator, AsyncIterable)
    assert not isinstance(iterator, Iterable)
    iterator.close()


def blocking() -> int:
    return 1


def generating() -> Iterator[int]:
    yield 1


@pytest.mark.parametrize(
    ("decorator", "function"),
    [
        (threaded, blocking),
        (threaded_separate, blocking),
        (threaded_iterable, generating),
        (threaded_iterable_separate, generating),
    ],
    ids=["threaded", "separate", "iterable", "iterable_separate"],
)
@pytest.mark.parametrize("blank", ["", "   ", "\t\n"])
def test_a_blank_name_is_rejected_at_decoration(
    decorator: Callable[..., Any], function: Callable[..., Any], blank: str
) -> None:
    with pytest.raises(ValueError, match="name must not be empty"):
        decorator(name=blank)(function)


@pytest.mark.parametrize(
    "decorator",
    [threaded, threaded_separate, threaded_iterable, threaded_iterable_separate],
    ids=["threaded", "separate", "iterable", "iterable_separate"],
)
def test_a_bad_option_is_refused_where_the_decorator_is_written(
    decorator: Callable[..., Any],
) -> None:
    with pytest.raises(TypeError, match=r"^instrument must be a bool, got str$"):
        decorator(instrument="no")  # before any function is decorated
