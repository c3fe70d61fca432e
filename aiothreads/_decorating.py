"""The two spellings of a decorator, ``@decorator`` and ``@decorator(option=...)``.

For the decorators that always make one kind of object; ``threaded`` chooses
the kind by the function it gets, so it keeps its options until then.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from ._limits import as_limiter
from ._validate import check_flag, check_name

if TYPE_CHECKING:
    from collections.abc import Callable

    from ._limits import CapacityLimiter

__all__ = ["decorate"]


def decorate(
    kind: Callable[..., Any],
    func: Callable[..., Any] | None,
    *,
    limit: int | CapacityLimiter | None,
    name: str | None,
    instrument: bool,
    **checked: Any,
) -> Any:
    """Return ``kind(func, ...)``, or a decorator that makes it once ``func`` is given.

    The options every decorator has (``limit``, ``name``, ``instrument``) are
    checked here; those particular to ``kind`` come in ``checked``, already
    checked by the caller, so a bad option fails where the decorator is
    written, before any function is decorated.
    """
    options = {
        "limit": as_limiter(limit),
        "name": check_name(name),
        "instrument": check_flag("instrument", instrument),
        **checked,
    }
    if func is None:
        return functools.partial(kind, **options)
    return kind(func, **options)
