"""Method binding for the decorators: instance, class and static methods.

Decorators go above ``@staticmethod`` and ``@classmethod``; the decorated
object remembers which it wrapped and binds accordingly. A decorated function
accessed through an instance returns a bound object that is cached per
instance, so ``obj.method is obj.method`` holds while either is alive, also
when several threads bind it at once. The cache is keyed by identity and
holds bound objects weakly, so it works for unhashable instances and
``__slots__`` classes and never keeps an instance alive.
"""

from __future__ import annotations

import threading
import weakref
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar, cast

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["MethodBinder", "unwrap_method"]


class _Bound(Protocol):
    @property
    def __self__(self) -> object: ...


B = TypeVar("B", bound=_Bound)

# Reentrant: a collection while the lock is held may run code that binds too.
_publishing = threading.RLock()


class MethodBinder(Generic[B]):
    """Binds one decorated function the way its kind requires, caching per target.

    ``kind`` is ``"function"`` (binds to instances, like a method), ``"static"``
    (never binds) or ``"class"`` (binds to the class it is read from).
    """

    __slots__ = ("_bind", "_bound", "_kind")

    def __init__(self, kind: str, bind: Callable[[Any], B]) -> None:
        self._kind = kind
        self._bind = bind
        self._bound: weakref.WeakValueDictionary[int, B] = weakref.WeakValueDictionary()

    def resolve(self, unbound: object, instance: object, owner: type[Any] | None) -> object:
        """Return what attribute access yields: ``unbound`` or a cached bound object."""
        target: object
        if self._kind == "static":
            return unbound
        if self._kind == "class":
            target = owner if owner is not None else type(instance)
        elif instance is None:
            return unbound
        else:
            target = instance
        key = id(target)
        bound = self._bound.get(key)
        if bound is None or bound.__self__ is not target:
            made = self._bind(target)
            with _publishing:  # threads binding the same target at once all get the first
                bound = self._bound.get(key)
                if bound is None or bound.__self__ is not target:
                    bound = self._bound[key] = made
        return bound


def unwrap_method(func: object) -> tuple[str, Callable[..., Any]]:
    """Split ``func`` into its binding kind and the plain function to run.

    Raises:
        TypeError: ``func`` is not callable.
    """
    if isinstance(func, staticmethod):
        return "static", cast("staticmethod[..., Any]", func).__func__
    if isinstance(func, classmethod):
        return "class", cast("classmethod[Any, ..., Any]", func).__func__
    if not callable(func):
        raise TypeError(f"expected a function to decorate, got {type(func).__name__}")
    return "function", func
