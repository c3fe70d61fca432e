"""Names of decorated functions, for reprs, thread names and telemetry."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["copy_metadata", "qualified_name"]


def copy_metadata(target: object, func: Callable[..., Any]) -> str:
    """Give ``target`` the name, docstring and attributes of ``func``; return its qualified name.

    Like ``functools.update_wrapper``, except that an attribute of ``func``
    never replaces one ``target`` already has (its own or its class's): a
    decorator must keep calling what it wraps, even when that object has a
    ``func`` attribute of its own.
    """
    functools.update_wrapper(target, func, updated=())  # type: ignore[arg-type]
    own = vars(target)
    cls = type(target)
    for key, value in getattr(func, "__dict__", {}).items():
        if key not in own and not hasattr(cls, key):
            own[key] = value
    return qualified_name(func)


def qualified_name(func: Callable[..., Any]) -> str:
    """Return ``module.qualname`` of ``func``, looking through ``functools.partial``.

    Decorators compute it once, from the function they decorate, and pass it
    on: this is the ``function`` label of metrics and the
    ``code.function.name`` of spans.
    """
    while isinstance(func, functools.partial):
        func = func.func
    name = getattr(func, "__qualname__", None)
    if not isinstance(name, str):
        name = type(func).__qualname__
    module = getattr(func, "__module__", None)
    return f"{module}.{name}" if isinstance(module, str) and module else name
