"""When aiothreads logs through structlog, and under which logger name."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest
import structlog

from aiothreads import instrumentation
from aiothreads.instrumentation._logs import StructlogEvents, structlog_is_configured


@pytest.fixture
def structlog_as_it_was() -> Iterator[None]:
    """Leave structlog's global configuration, and aiothreads', as the test found them."""
    was_configured = structlog.is_configured()
    before = structlog.get_config()
    structlog.reset_defaults()
    try:
        yield
    finally:
        instrumentation.reset()
        structlog.reset_defaults()
        if was_configured:
            structlog.configure(**before)


class NamedLogger:
    """A structlog logger that keeps what it was made with and what it was told."""

    made: ClassVar[list[tuple[Any, ...]]] = []

    def __init__(self, *args: Any) -> None:
        NamedLogger.made.append(args)
        self.events: list[dict[str, Any]] = []

    def debug(self, **event: Any) -> None:
        self.events.append(event)

    info = warning = error = debug


@pytest.mark.usefixtures("structlog_as_it_was")
def test_structlog_is_chosen_once_the_application_configured_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("AIOTHREADS_INSTRUMENTATION", raising=False)  # the choice left to aiothreads
    assert not structlog_is_configured()
    instrumentation.configure(prometheus=False, opentelemetry=False)
    assert instrumentation.enabled_backends() == []

    structlog.configure(processors=[structlog.processors.KeyValueRenderer()])
    assert structlog_is_configured()
    instrumentation.configure(prometheus=False, opentelemetry=False)
    assert instrumentation.enabled_backends() == ["structlog"]


def test_structlog_that_cannot_be_imported_counts_as_not_configured(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "structlog", None)
    assert not structlog_is_configured()


@pytest.mark.usefixtures("structlog_as_it_was")
def test_events_go_to_the_structlog_logger_named_aiothreads() -> None:
    NamedLogger.made.clear()
    structlog.configure(processors=[], logger_factory=NamedLogger)
    StructlogEvents().emit("debug", "call finished", {"outcome": "ok"})
    assert NamedLogger.made == [("aiothreads",)]
