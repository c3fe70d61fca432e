"""Every example of the package page runs unmodified, on asyncio's loop and on uvloop."""

from __future__ import annotations

import asyncio
import runpy
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.seed_extract import EXAMPLES_DIR, SEED_PAGE, extract

EXAMPLES = sorted(EXAMPLES_DIR.glob("example_*.py"))


def test_the_page_has_all_its_examples_stored() -> None:
    assert len(EXAMPLES) == 19


@pytest.mark.skipif(not SEED_PAGE.exists(), reason="the package page is not beside this checkout")
def test_stored_examples_match_the_page() -> None:
    stored = [path.read_text() for path in EXAMPLES]
    assert stored == extract(SEED_PAGE.read_text())


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda path: path.stem)
def test_example_runs(
    example: Path,
    loop_factory: Callable[[], asyncio.AbstractEventLoop],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    loops: list[asyncio.AbstractEventLoop] = []

    def new_event_loop() -> asyncio.AbstractEventLoop:
        loops.append(loop_factory())
        return loops[-1]

    monkeypatch.setattr(asyncio.events, "new_event_loop", new_event_loop)
    runpy.run_path(str(example), run_name="__main__")
    assert loops, "the example did not run an event loop"
    assert all(type(loop) is type(loops[0]) for loop in loops)
    probe = loop_factory()
    probe.close()
    assert type(loops[0]) is type(probe)
