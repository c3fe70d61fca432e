"""Method binding for the decorators: instance, class and static methods.

A decorated function accessed through an instance returns a bound object that
is cached per instance, so ``obj.method is obj.method`` holds while either is
alive. The cache is keyed by identity and holds bound objects weakly, so it
works for unhashable instances and ``__slots__`` classes and never keeps an
instance alive.
"""

from __future__ import annotations

import inspect
import weakref
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "BindingCache",
    "ThreadedClassMethod",
    "ThreadedStaticMethod",
    "check_blocking_callable",
    "unwrap_method",
]


class _Bound(Protocol):
    @property
    def __self__(self) -> object: ...


B = TypeVar("B", bound=_Bound)
D = TypeVar("D")


class BindingCache(Generic[B]):
    """Bound objects of one descriptor, one per live instance."""

    __slots__ = ("_bound",)

    def __init__(self) -> None:
        self._bound: weakref.WeakValueDictionary[int, B] = weakref.WeakValueDictionary()

    def get(self, instance: object, bind: Callable[[Any], B]) -> B:
        """Return the bound object for ``instance``, creating it with ``bind``."""
        key = id(instance)
        bound = self._bound.get(key)
        if bound is None or bound.__self__ is not instance:
            bound = bind(instance)
            self._bound[key] = bound
        return bound


class ThreadedStaticMethod(Generic[D]):
    """A decorated ``staticmethod``: every access returns the same decorated function."""

    __slots__ = ("__wrapped__",)

    def __init__(self, decorated: D) -> None:
        self.__wrapped__ = decorated

    def __get__(self, instance: object, owner: type[Any] | None = None) -> D:
        return self.__wrapped__


class ThreadedClassMethod(Generic[B]):
    """A decorated ``classmethod``: access binds the decorated function to the class."""

    __slots__ = ("_bind", "_cache")

    def __init__(self, bind: Callable[[type[Any]], B]) -> None:
        self._bind = bind
        self._cache: BindingCache[B] = BindingCache()

    def __get__(self, instance: object, owner: type[Any] | None = None) -> B:
        cls = owner if owner is not None else type(instance)
        return self._cache.get(cls, self._bind)


def unwrap_method(func: object) -> tuple[str, Callable[..., Any]]:
    """Split ``staticmethod``/``classmethod`` objects into a kind and their function."""
    if isinstance(func, staticmethod):
        return "static", func.__func__
    if isinstance(func, classmethod):
        return "class", func.__func__
    if not callable(func):
        raise TypeError(f"expected a function to decorate, got {type(func).__name__}")
    return "function", func


def check_blocking_callable(decorator: str, func: Callable[..., Any]) -> None:
    """Reject coroutine and async generator functions with a clear ``TypeError``."""
    if inspect.iscoroutinefunction(func) or inspect.isasyncgenfunction(func):
        name = getattr(func, "__qualname__", repr(func))
        raise TypeError(
            f"@{decorator} runs blocking code in threads, but {name} is an async function; "
            "await it directly instead"
        )
