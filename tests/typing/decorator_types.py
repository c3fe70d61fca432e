"""Static typing contract of the decorators, checked by mypy --strict and pyright.

Not run by pytest: ``nox -s typing`` type-checks this file. Lines that must be
rejected carry an ignore comment, and both checkers fail on an ignore that is
not needed, so each such line proves an error is reported.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Generator, Iterable, Iterator
from typing import ClassVar

from typing_extensions import assert_type

from aiothreads import (
    CapacityLimiter,
    FromThreadChannel,
    IteratorWrapper,
    check_cancelled,
    is_cancelled,
    sync_await,
    sync_wait_coroutine,
    threaded,
    threaded_iterable,
    threaded_iterable_separate,
    threaded_separate,
    wait_coroutine,
)


@threaded
def add(a: int, b: int) -> int:
    return a + b


@threaded_separate
def read_line(path: str) -> str:
    return path


@threaded_separate(detach=False)
def read_bytes(path: str) -> bytes:
    return path.encode()


@threaded_iterable
def count(limit: int) -> Generator[int, None, None]:
    yield from range(limit)


@threaded_iterable(max_size=8)
def words(text: str) -> Generator[str, None, None]:
    yield from text.split()


@threaded_iterable_separate(max_size=2)
def tail(path: str) -> Generator[bytes, None, None]:
    yield path.encode()


@threaded
def generated(limit: int) -> Generator[float, None, None]:
    yield float(limit)


@threaded(limit=2)
def limited(value: int) -> str:
    return str(value)


@threaded(limit=CapacityLimiter(3))
def limited_rows(count: int) -> Generator[bytes, None, None]:
    yield b"x" * count


@threaded_separate(limit=4)
def limited_separate(path: str) -> bytes:
    return path.encode()


@threaded_iterable(max_size=4, limit=2)
def limited_stream(count: int) -> Generator[int, None, None]:
    yield from range(count)


class Processor:
    factor: ClassVar[int] = 2

    @threaded
    def scale(self, value: int) -> int:
        return value * self.factor

    @threaded_iterable
    def chunks(self, size: int) -> Generator[bytes, None, None]:
        yield b"x" * size

    @threaded_separate
    def watch(self, path: str) -> str:
        return path


async def decorated_calls() -> None:
    assert_type(await add(1, 2), int)
    assert_type(await add.async_call(1, 2), int)
    assert_type(add.sync_call(1, 2), int)
    assert_type(add(1, 2), Awaitable[int])
    assert_type(await read_line("/tmp/x"), str)
    assert_type(await read_bytes("/tmp/x"), bytes)

    assert_type(await limited(1), str)
    assert_type(await limited_separate("p"), bytes)
    async for row in limited_rows(2):
        assert_type(row, bytes)
    async for number in limited_stream(2):
        assert_type(number, int)
    check_cancelled()
    assert_type(is_cancelled(), bool)

    add("1", 2)  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
    add(1)  # type: ignore[call-arg]  # pyright: ignore[reportCallIssue]


async def bound_methods() -> None:
    processor = Processor()
    assert_type(await processor.scale(3), int)
    assert_type(processor.scale.sync_call(3), int)
    assert_type(await processor.watch("/tmp"), str)
    async for chunk in processor.chunks(4):
        assert_type(chunk, bytes)

    processor.scale(processor, 3)  # type: ignore[arg-type,call-arg]  # pyright: ignore[reportCallIssue]


async def iterables() -> None:
    iterator: IteratorWrapper[..., int] = count(3)
    assert_type(await iterator.__anext__(), int)
    async for number in count(3):
        assert_type(number, int)
    async for word in words("a b"):
        assert_type(word, str)
    async with tail("/tmp/x") as lines:
        async for line in lines:
            assert_type(line, bytes)
    async for value in generated(2):
        assert_type(value, float)
    assert_type(count.sync_call(3), Iterable[int])


async def fetch(key: str) -> bytes:
    await asyncio.sleep(0)
    return key.encode()


def plain(count: int) -> str:
    return "x" * count


def bridge_calls(loop: asyncio.AbstractEventLoop) -> None:
    assert_type(sync_await(fetch, "k"), bytes)
    assert_type(sync_await(plain, 3), str)  # a plain callable, called on the loop
    assert_type(sync_await(asyncio.Event().set), None)
    assert_type(wait_coroutine(fetch("k")), bytes)
    assert_type(sync_wait_coroutine(loop, fetch, "k"), bytes)
    sync_await(fetch, 1)  # type: ignore[call-overload]  # pyright: ignore[reportCallIssue, reportArgumentType]


async def channels() -> None:
    channel: FromThreadChannel[int] = FromThreadChannel(maxsize=4)
    assert_type(await channel.get(), int)
    assert_type(await channel, int)


@threaded(name="loader", instrument=False)
def load_named(key: str) -> bytes:
    return key.encode()


@threaded_iterable(max_size=2, name="rows", instrument=False)
def named_rows(count: int) -> Generator[int, None, None]:
    yield from range(count)


async def named_and_opted_out() -> None:
    assert_type(await load_named("k"), bytes)
    async for row in named_rows(2):
        assert_type(row, int)


# Every annotation a generator or iterable function is written with: the
# items' type reaches ``async for``.


@threaded_iterable
def annotated_iterator(limit: int) -> Iterator[int]:
    yield from range(limit)


@threaded_iterable(max_size=2)
def annotated_iterable(limit: int) -> Iterable[str]:
    yield from map(str, range(limit))


@threaded_iterable
def annotated_generator(limit: int) -> Generator[float, str, bool]:
    yield float(limit)
    return True


@threaded_iterable_separate
def returned_list(limit: int) -> list[bytes]:
    return [b"x"] * limit


@threaded_iterable_separate(max_size=2)
def separate_iterator(limit: int) -> Iterator[int]:
    yield from range(limit)


@threaded
def threaded_iterator(limit: int) -> Iterator[int]:
    yield from range(limit)


@threaded(limit=2)
def limited_iterator(limit: int) -> Iterator[str]:
    yield from map(str, range(limit))


@threaded
def loaded_list(limit: int) -> list[int]:
    return list(range(limit))


class Table:
    @threaded_iterable
    def scan(self, limit: int) -> Iterator[bytes]:
        yield b"x" * limit

    @threaded
    def rows(self, limit: int) -> Iterator[int]:
        yield from range(limit)


async def annotated_iterables() -> None:
    async for number in annotated_iterator(2):
        assert_type(number, int)
    async for text in annotated_iterable(2):
        assert_type(text, str)
    async for real in annotated_generator(2):
        assert_type(real, float)
    async for chunk in returned_list(2):
        assert_type(chunk, bytes)
    async for item in separate_iterator(2):
        assert_type(item, int)
    async for row in threaded_iterator(2):
        assert_type(row, int)
    async for label in limited_iterator(2):
        assert_type(label, str)
    assert_type(await loaded_list(2), list[int])  # a list is a result, not a stream
    async for scanned in Table().scan(2):
        assert_type(scanned, bytes)
    async for value in Table().rows(2):
        assert_type(value, int)
    assert_type(annotated_iterator.sync_call(2), Iterable[int])


async def iterables_misused() -> None:
    # @threaded makes a generator function a threaded iterable at runtime, where
    # ``await`` raises TypeError: the types say so too.
    await threaded_iterator(3)  # type: ignore[misc]  # pyright: ignore[reportGeneralTypeIssues]
    await limited_iterator(3)  # type: ignore[misc]  # pyright: ignore[reportGeneralTypeIssues]
    await Table().rows(3)  # type: ignore[misc]  # pyright: ignore[reportGeneralTypeIssues]
    await annotated_iterator(3)  # type: ignore[misc]  # pyright: ignore[reportGeneralTypeIssues]
    for row in annotated_iterator(3):  # type: ignore[attr-defined]  # pyright: ignore[reportGeneralTypeIssues, reportUnknownVariableType]
        print(row)  # pyright: ignore[reportUnknownArgumentType]
