"""Names of decorated functions, for reprs, thread names and telemetry."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["copy_metadata", "qualified_name"]


def copy_metadata(target: object, func: Callable[..., Any]) -> str:
    """Give ``target`` the name and docstring of ``func``; return its qualified name."""
    functools.update_wrapper(target, func)  # type: ignore[arg-type]
    return qualified_name(func)


def qualified_name(func: Callable[..., Any]) -> str:
    """Return the qualified name of ``func``, looking through partials."""
    while isinstance(func, functools.partial):
        func = func.func
    name = getattr(func, "__qualname__", None)
    return name if isinstance(name, str) else type(func).__qualname__
