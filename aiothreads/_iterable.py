"""``@threaded_iterable``: consume a blocking generator with ``async for``.

Calling the decorated generator function returns an
``IteratorWrapper``; see
``aiothreads._wrapper`` for when the generator starts, how backpressure
works and what stops it. ``@threaded_iterable_separate`` runs each iterator's
generator on a dedicated thread instead of a pool worker.
"""

from __future__ import annotations

import functools
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, Concatenate, Generic, overload

from ._binding import MethodBinder, unwrap_method
from ._decorating import decorate
from ._limits import as_limiter
from ._names import copy_metadata, qualified_name
from ._validate import (
    check_blocking_callable,
    check_flag,
    check_name,
    check_size,
    check_thread_executor,
)
from ._wrapper import IteratorWrapper, IteratorWrapperSeparate
from .types import BP, P, R, S, T

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from concurrent.futures import Executor

    from typing_extensions import Self

    from ._limits import CapacityLimiter

__all__ = [
    "BoundThreadedIterable",
    "ThreadedIterable",
    "ThreadedIterableBase",
    "ThreadedIterableSeparate",
    "threaded_iterable",
    "threaded_iterable_separate",
]

_WrapperClass = type[IteratorWrapper[Any, Any]]


class ThreadedIterableBase(Generic[P, T], ABC):
    """What every decorated generator function offers."""

    func: Callable[P, Iterable[T]]
    max_size: int
    _name: str
    _wrapper_class: _WrapperClass = IteratorWrapper
    _limiter: CapacityLimiter | None = None
    _executor: Executor | None = None
    _instrumented: bool = True

    @abstractmethod
    def __init__(self, *args: Any, **kwargs: Any) -> None: ...

    def sync_call(self, *args: P.args, **kwargs: P.kwargs) -> Iterable[T]:
        """Call the function inline and return its result: a generator function's generator."""
        return self.func(*args, **kwargs)

    def create_wrapper(self, *args: P.args, **kwargs: P.kwargs) -> IteratorWrapper[P, T]:
        """Return an async iterator that will run the generator in a thread."""
        return self._wrapper_class(
            functools.partial(self.func, *args, **kwargs),
            max_size=self.max_size,
            executor=self._executor,
            limiter=self._limiter,
            name=self._name,
            instrument=self._instrumented,
        )

    def async_call(self, *args: P.args, **kwargs: P.kwargs) -> IteratorWrapper[P, T]:
        """Return an async iterator over the generator, run in a thread."""
        return self.create_wrapper(*args, **kwargs)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> IteratorWrapper[P, T]:
        """Alias of ``async_call``."""
        return self.create_wrapper(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        # 1.x subclasses set only ``func`` and ``max_size``.
        if name == "_name" and "func" in vars(self):
            return qualified_name(self.func)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._name} max_size={self.max_size}>"

    def _prepare(
        self, func: Callable[..., Any], max_size: int, name: str | None, instrument: bool
    ) -> None:
        check_blocking_callable("threaded_iterable", func)
        self.max_size = check_size("max_size", max_size)
        self._instrumented = check_flag("instrument", instrument)
        copied = copy_metadata(self, func)
        self._name = check_name(name) or copied


class ThreadedIterable(ThreadedIterableBase[P, T]):
    """A generator function decorated with ``@threaded_iterable``."""

    def __init__(
        self,
        func: Callable[P, Iterable[T]],
        max_size: int = 0,
        *,
        limit: int | CapacityLimiter | None = None,
        executor: Executor | None = None,
        name: str | None = None,
        instrument: bool = True,
    ) -> None:
        kind, function = unwrap_method(func)
        self.func = function
        self._limiter = as_limiter(limit)
        self._executor = check_thread_executor(executor)
        if self._executor is not None and self._wrapper_class is not IteratorWrapper:
            raise TypeError(f"{type(self).__name__} runs on dedicated threads: no executor=")
        self._binder: MethodBinder[BoundThreadedIterable[..., T]] = MethodBinder(kind, self._bind)
        self._prepare(function, max_size, name, instrument)

    # See Threaded.__get__ for why the overloads look like this.
    @overload
    def __get__(
        self: ThreadedIterable[Concatenate[type[S], BP], R],
        instance: None,
        owner: type[S],
    ) -> BoundThreadedIterable[BP, R]: ...
    @overload
    def __get__(self, instance: None, owner: type[Any] | None = None) -> Self: ...
    @overload
    def __get__(
        self: ThreadedIterable[Concatenate[type[S], BP], R],
        instance: S,
        owner: type[Any] | None = None,
    ) -> BoundThreadedIterable[BP, R]: ...
    @overload
    def __get__(
        self: ThreadedIterable[Concatenate[S, BP], R],
        instance: S,
        owner: type[Any] | None = None,
    ) -> BoundThreadedIterable[BP, R]: ...
    @overload
    def __get__(self, instance: object, owner: type[Any] | None = None) -> Self: ...
    def __get__(self, instance: object, owner: type[Any] | None = None) -> Any:
        return self._binder.resolve(self, instance, owner)

    def _bind(self, instance: object) -> BoundThreadedIterable[..., T]:
        return BoundThreadedIterable(
            self.func,
            instance,
            self.max_size,
            wrapper_class=self._wrapper_class,
            limiter=self._limiter,
            executor=self._executor,
            name=self._name,
            instrument=self._instrumented,
        )


class ThreadedIterableSeparate(ThreadedIterable[P, T]):
    """A generator function decorated with ``@threaded_iterable_separate``."""

    _wrapper_class = IteratorWrapperSeparate


class BoundThreadedIterable(ThreadedIterableBase[P, T]):
    """A decorated generator function bound to an instance (or class)."""

    __self__: object

    def __init__(
        self,
        func: Callable[..., Iterable[T]],
        instance: object,
        max_size: int = 0,
        *,
        wrapper_class: _WrapperClass = IteratorWrapper,
        limiter: CapacityLimiter | None = None,
        executor: Executor | None = None,
        name: str | None = None,
        instrument: bool = True,
    ) -> None:
        self.func = functools.partial(func, instance)
        self.__self__ = instance
        self._wrapper_class = wrapper_class
        self._limiter = limiter
        self._executor = executor
        self._prepare(func, max_size, name, instrument)


@overload
def threaded_iterable(
    func: Callable[P, Iterable[T]],
    *,
    max_size: int = 0,
    limit: int | CapacityLimiter | None = None,
    executor: Executor | None = None,
    name: str | None = None,
    instrument: bool = True,
) -> ThreadedIterable[P, T]: ...
@overload
def threaded_iterable(
    func: None = None,
    *,
    max_size: int = 0,
    limit: int | CapacityLimiter | None = None,
    executor: Executor | None = None,
    name: str | None = None,
    instrument: bool = True,
) -> Callable[[Callable[P, Iterable[T]]], ThreadedIterable[P, T]]: ...
def threaded_iterable(
    func: Any = None,
    *,
    max_size: int = 0,
    limit: int | CapacityLimiter | None = None,
    executor: Executor | None = None,
    name: str | None = None,
    instrument: bool = True,
) -> Any:
    """Turn a blocking generator function into one that returns an async iterator.

    The generator runs in the loop's thread pool; items reach ``async for``
    through a channel of ``max_size`` items (``0``: unbounded) that blocks the
    generator while full. Leaving the loop early stops the generator. Usable
    bare or as ``@threaded_iterable(max_size=N)``; put it above
    ``@staticmethod`` or ``@classmethod``.

    ```python
    import asyncio

    from aiothreads import threaded_iterable


    @threaded_iterable(max_size=8)
    def lines(count: int):
        for number in range(count):
            yield f"line {number}"


    async def main() -> list[str]:
        return [line async for line in lines(3)]


    assert asyncio.run(main()) == ["line 0", "line 1", "line 2"]
    ```

    Args:
        func: The generator function, or any callable whose call returns an
            iterable (a list, an iterator, a generator object); it is called
            in the thread, so an error it raises reaches ``async for``.
        max_size: Items buffered ahead of the consumer; ``0`` is unbounded.
        limit: At most this many generators running at once (an int or a shared
            [`CapacityLimiter`][aiothreads.CapacityLimiter]); iteration waits for a place.
        executor: Run the generator on this executor instead of the loop's
            default one; it must run work in this process's threads.
        name: The name in metric labels, span names, reprs and thread names,
            instead of the function's qualified name.
        instrument: ``False`` keeps these iterators out of metrics, spans and
            log events.

    Raises:
        TypeError: ``func`` is not callable, is a coroutine or async generator
            function; ``executor`` runs work in other processes (see
            [`runs_in_threads`][aiothreads.runs_in_threads]); an option has
            the wrong type.
        ValueError: ``max_size`` is negative, or ``limit`` less than 1.
    """
    return decorate(
        ThreadedIterable,
        func,
        limit=limit,
        name=name,
        instrument=instrument,
        max_size=check_size("max_size", max_size),
        executor=check_thread_executor(executor),
    )


@overload
def threaded_iterable_separate(
    func: Callable[P, Iterable[T]],
    *,
    max_size: int = 0,
    limit: int | CapacityLimiter | None = None,
    name: str | None = None,
    instrument: bool = True,
) -> ThreadedIterableSeparate[P, T]: ...
@overload
def threaded_iterable_separate(
    func: None = None,
    *,
    max_size: int = 0,
    limit: int | CapacityLimiter | None = None,
    name: str | None = None,
    instrument: bool = True,
) -> Callable[[Callable[P, Iterable[T]]], ThreadedIterableSeparate[P, T]]: ...
def threaded_iterable_separate(
    func: Any = None,
    *,
    max_size: int = 0,
    limit: int | CapacityLimiter | None = None,
    name: str | None = None,
    instrument: bool = True,
) -> Any:
    """[`threaded_iterable`][aiothreads._iterable.threaded_iterable], a thread per iterator.

    Use it for generators that may block for long (pipes, sockets, tails), so
    they never hold a pool worker.

    ```python
    import asyncio

    from aiothreads import threaded_iterable_separate


    @threaded_iterable_separate(max_size=2)
    def ticks():
        number = 0
        while True:  # runs until its consumer leaves
            yield number
            number += 1


    async def main() -> list[int]:
        taken = []
        async for tick in ticks():
            taken.append(tick)
            if len(taken) == 3:
                break  # stops the generator and ends its thread
        return taken


    assert asyncio.run(main()) == [0, 1, 2]
    ```

    Args:
        func: The generator function, or any callable whose call returns an
            iterable.
        max_size: Items buffered ahead of the consumer; ``0`` is unbounded.
        limit: At most this many generators (so threads) running at once.
        name: The name in metric labels, span names, reprs and thread names,
            instead of the function's qualified name.
        instrument: ``False`` keeps these iterators out of metrics, spans and
            log events.

    Raises:
        TypeError: ``func`` is not callable, is a coroutine or async generator
            function, or an option has the wrong type.
        ValueError: ``max_size`` is negative, or ``limit`` less than 1.
    """
    return decorate(
        ThreadedIterableSeparate,
        func,
        limit=limit,
        name=name,
        instrument=instrument,
        max_size=check_size("max_size", max_size),
    )
