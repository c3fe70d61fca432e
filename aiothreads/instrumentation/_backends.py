"""What each backend offers the probes. Backends import their library lazily."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import contextvars
    from collections.abc import Callable, Mapping

__all__ = ["Events", "Metrics", "Series", "Tracing"]


class Series(Protocol):
    """The metric series of one decorated function (a function and a kind).

    Its methods run on every call, so probes call them unguarded: an
    implementation must never raise.
    """

    def submitted(self) -> None: ...
    def started(self, waited: float) -> None: ...
    def finished(self, outcome: str, duration: float) -> None: ...
    def skipped(self, outcome: str) -> None: ...
    def limit_waited(self, seconds: float) -> None: ...
    def thread_started(self) -> None: ...
    def thread_finished(self) -> None: ...
    def items_yielded(self, count: int) -> None: ...
    def backpressure(self, seconds: float) -> None: ...
    def generator_cancelled(self, reason: str) -> None: ...


class Metrics(Protocol):
    """Counts and times calls, threads and streams."""

    def series(self, kind: str, function: str) -> Series: ...
    def stream_opened(
        self, kind: str, function: str, capacity: int, depth: Callable[[], int]
    ) -> object: ...
    def stream_closed(self, token: object) -> None: ...


class Tracing(Protocol):
    """Opens one span per call or stream when its work starts, current where it runs."""

    def begin(
        self,
        name: str,
        attributes: Mapping[str, Any],
        start_ns: int,
        context: contextvars.Context | None,
    ) -> Any: ...
    def activate(self, span: Any) -> object: ...
    def deactivate(self, token: object) -> None: ...
    def annotate(self, span: Any, attributes: Mapping[str, Any]) -> None: ...
    def event(self, span: Any, name: str, attributes: Mapping[str, Any]) -> None: ...
    def end(
        self,
        span: Any,
        outcome: str,
        error: BaseException | None,
        attributes: Mapping[str, Any],
    ) -> None: ...
    def ids(self, span: Any) -> tuple[str, str] | None: ...


class Events(Protocol):
    """Emits structured log events."""

    def emit(self, level: str, event: str, fields: dict[str, Any]) -> None: ...
