"""Instrumentation set up so that calls are counted and nothing more."""

from __future__ import annotations

from typing import Any

from aiothreads import instrumentation


def count_calls_only(registry: Any) -> None:
    """Record Prometheus metrics into ``registry``, and no spans nor structlog events.

    Calls are then recorded by metrics alone (the ``aiothreads`` logger is
    not enabled for DEBUG in the tests): they are counted with no probe.
    Undo it with ``instrumentation.reset()``.
    """
    instrumentation.configure(
        registry=registry,
        prometheus=True,
        opentelemetry=False,
        structlog=False,
        opentelemetry_metrics=False,
    )
