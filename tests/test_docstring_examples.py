"""Every example in a public docstring runs (the reference renders them)."""

from __future__ import annotations

import inspect
import re

import pytest

import aiothreads
from aiothreads import _iterable
from tests.python_process import run_python

FENCED = re.compile(r"```python\n(.*?)```", re.S)
DOCUMENTED = {name: getattr(aiothreads, name) for name in aiothreads.__all__}
DOCUMENTED["threaded_iterable"] = _iterable.threaded_iterable  # not the 1.x module
EXAMPLES = [
    pytest.param(example, id=f"{name}-{number}")
    for name, documented in sorted(DOCUMENTED.items())
    for number, example in enumerate(FENCED.findall(inspect.getdoc(documented) or ""), start=1)
]
MUST_HAVE_ONE = {
    "threaded",
    "threaded_separate",
    "threaded_iterable",
    "threaded_iterable_separate",
    "FromThreadChannel",
    "sync_await",
    "wait_coroutine",
    "sync_wait_coroutine",
}


def test_every_decorator_the_channel_and_the_bridge_have_an_example() -> None:
    with_examples = {str(param.id).rsplit("-", 1)[0] for param in EXAMPLES}
    assert with_examples >= MUST_HAVE_ONE


@pytest.mark.parametrize("example", EXAMPLES)
def test_example_runs(example: str) -> None:
    completed = run_python(example)
    assert completed.returncode == 0, completed.stderr
