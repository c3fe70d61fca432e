"""Telemetry never breaks a call: a backend that cannot be built is left out, once.

Each scenario runs in a fresh interpreter, because what it breaks (the default
Prometheus registry, the global tracer provider, an installed package) is
process-wide.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

CALLS = """
import asyncio, aiothreads
from aiothreads import instrumentation

@aiothreads.threaded
def double(value):
    return value * 2

@aiothreads.threaded_iterable(max_size=2)
def numbers():
    yield from range(3)

async def main():
    assert [await double(value) for value in range(3)] == [0, 2, 4]
    assert [item async for item in numbers()] == [0, 1, 2]

asyncio.run(main())
asyncio.run(main())
print("backends:", ",".join(instrumentation.enabled_backends()))
"""


def run(setup: str, *, path: Path | None = None, environment: str = "") -> tuple[str, str]:
    """Run ``setup`` then the calls; return (stdout, stderr). Fails if the process failed."""
    env = {"PATH": "", "AIOTHREADS_INSTRUMENTATION": environment}
    if path is not None:
        env["PYTHONPATH"] = str(path)
    completed = subprocess.run(
        [sys.executable, "-W", "default", "-c", textwrap.dedent(setup) + CALLS],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )
    assert completed.returncode == 0, completed.stderr
    return completed.stdout, completed.stderr


def test_a_metric_name_already_taken_leaves_prometheus_out_once() -> None:
    stdout, stderr = run(
        """
        import prometheus_client
        prometheus_client.Counter("aiothreads_calls_started", "someone else's")
        """
    )
    assert stderr.count("RuntimeWarning") == 1, stderr
    assert "prometheus is left out" in stderr
    assert "backends: opentelemetry" in stdout


def test_a_tracer_provider_that_raises_leaves_opentelemetry_out_once() -> None:
    stdout, stderr = run(
        """
        from opentelemetry import trace

        class Broken(trace.NoOpTracerProvider):
            def get_tracer(self, *args, **kwargs):
                raise RuntimeError("misconfigured exporter")

        trace.set_tracer_provider(Broken())
        """
    )
    assert stderr.count("RuntimeWarning") == 1, stderr
    assert "opentelemetry is left out" in stderr
    assert "misconfigured exporter" in stderr
    assert "backends: prometheus" in stdout


def test_a_tracer_provider_installed_later_that_raises_is_left_out_once() -> None:
    stdout, stderr = run(
        """
        import asyncio, aiothreads
        from opentelemetry import trace

        @aiothreads.threaded
        def first():
            return 1

        assert asyncio.run(first()) == 1  # resolved while no provider is installed

        class Broken(trace.NoOpTracerProvider):
            def get_tracer(self, *args, **kwargs):
                raise RuntimeError("exporter broke later")

        trace.set_tracer_provider(Broken())
        """
    )
    assert stderr.count("RuntimeWarning") == 1, stderr
    assert "opentelemetry is left out" in stderr
    assert "exporter broke later" in stderr
    assert "backends: prometheus" in stdout  # no longer named among the backends that are on


def test_enabled_backends_leaves_out_a_tracer_provider_installed_later_that_raises() -> None:
    stdout, stderr = run(
        """
        import asyncio, aiothreads
        from aiothreads import instrumentation
        from opentelemetry import trace

        @aiothreads.threaded
        def first():
            return 1

        assert asyncio.run(first()) == 1  # resolved while no provider is installed

        class Broken(trace.NoOpTracerProvider):
            def get_tracer(self, *args, **kwargs):
                raise RuntimeError("exporter broke later")

        trace.set_tracer_provider(Broken())
        print("before any call:", ",".join(instrumentation.enabled_backends()))
        """
    )
    assert "before any call: prometheus\n" in stdout  # asking finds the failure
    assert stderr.count("RuntimeWarning") == 1, stderr
    assert "backends: prometheus" in stdout


def test_a_broken_install_leaves_its_backend_out_once(tmp_path: Path) -> None:
    broken = tmp_path / "opentelemetry"
    broken.mkdir()
    (broken / "__init__.py").write_text("raise ImportError('half-installed')\n")
    stdout, stderr = run("", path=tmp_path)
    assert stderr.count("RuntimeWarning") == 1, stderr
    assert "half-installed" in stderr
    assert "backends: prometheus" in stdout


def test_a_typo_in_the_environment_warns_once_and_keeps_the_rest() -> None:
    stdout, stderr = run("", environment="prometheus,prometeus")
    assert stderr.count("RuntimeWarning") == 1, stderr
    assert "prometeus" in stderr
    assert "backends: prometheus" in stdout


@pytest.mark.parametrize(
    "flags",
    [{"opentelemetry": False, "structlog": False}, {}],
    ids=["with flags", "registry alone"],
)
def test_an_explicit_configure_still_raises_for_a_registry_it_cannot_use(
    flags: dict[str, bool],
) -> None:
    from prometheus_client import CollectorRegistry, Counter

    from aiothreads import instrumentation

    registry = CollectorRegistry()
    Counter("aiothreads_calls_started", "someone else's", registry=registry)
    try:
        # Passing the registry is asking for Prometheus, with or without a flag.
        with pytest.raises(ValueError, match="aiothreads_calls_started"):
            instrumentation.configure(registry=registry, **flags)
    finally:
        instrumentation.reset()
