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
    """Return ``module.qualname`` of ``func``, looking through partials and ``ctx.run``.

    This is the ``function`` label of metrics and the ``code.function.name``
    of spans.
    """
    while isinstance(func, functools.partial):
        # partial(context.run, function, ...): name what the runner runs.
        runners_skipped = [
            candidate
            for candidate in (func.func, *func.args)
            if getattr(candidate, "__name__", None) != "run"
        ]
        func = runners_skipped[0] if runners_skipped else func.func
    name = getattr(func, "__qualname__", None)
    if not isinstance(name, str):
        name = type(func).__qualname__
    module = getattr(func, "__module__", None)
    return f"{module}.{name}" if isinstance(module, str) and module else name
