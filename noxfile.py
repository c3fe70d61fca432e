"""Test, lint and type-check aiothreads on every supported Python: ``nox``."""

from __future__ import annotations

import nox

PYTHONS = ["3.10", "3.11", "3.12", "3.13"]

nox.options.sessions = ["tests", "lint", "typing"]
nox.options.error_on_missing_interpreters = True
nox.options.reuse_existing_virtualenvs = True


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """Run the test suite (each async test on asyncio's loop and on uvloop)."""
    session.install("-e", ".[test]")
    session.run("pytest", *session.posargs)


@nox.session(python=PYTHONS[0])
def lint(session: nox.Session) -> None:
    """Ruff lint and format checks."""
    session.install("ruff>=0.5")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python=PYTHONS[0])
def typing(session: nox.Session) -> None:
    """mypy --strict and pyright on the package, and the decorators' typing contract."""
    session.install("-e", ".[lint]", "typing_extensions")
    session.run("mypy")
    session.run("pyright")
    session.run("mypy", "--strict", "--warn-unused-ignores", "tests/typing/decorator_types.py")
    session.run(
        "pyright",
        "-p",
        "tests/typing/pyrightconfig.json",
        "--pythonpath",
        session.virtualenv.bin + "/python",
    )
