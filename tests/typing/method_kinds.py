"""Typing of ``@staticmethod`` and ``@classmethod`` under the decorators.

Checked by pyright only: mypy solves the binding overloads' type variables by
joining, so it binds static methods as if they were instance methods. At
runtime both kinds behave as written here under either checker.
"""

from __future__ import annotations

from collections.abc import Generator

from typing_extensions import assert_type

from aiothreads import threaded, threaded_iterable


class Repository:
    @threaded
    @staticmethod
    def double(value: int) -> int:
        return value * 2

    @threaded
    @classmethod
    def create(cls, name: str) -> Repository:
        return cls()

    @threaded_iterable
    @classmethod
    def rows(cls, table: str) -> Generator[str, None, None]:
        yield table


async def method_kinds() -> None:
    repository = Repository()
    assert_type(await repository.double(3), int)
    assert_type(await Repository.double(3), int)
    assert_type(await Repository.create("x"), Repository)
    assert_type(await repository.create("x"), Repository)
    async for row in Repository.rows("t"):
        assert_type(row, str)
    Repository.double("3")  # pyright: ignore[reportArgumentType]
