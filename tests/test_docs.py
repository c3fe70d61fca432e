"""Every Python block of the documentation runs (``nox -s docs`` also builds the site)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.python_process import run_python

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted((ROOT / "docs").glob("*.md"))
BLOCK = re.compile(r"```python\n(.*?)```", re.S)
BLOCKS = [
    pytest.param(block, id=f"{page.stem}-{number}")
    for page in PAGES
    for number, block in enumerate(BLOCK.findall(page.read_text()), start=1)
]


def test_the_docs_have_code() -> None:
    assert len(BLOCKS) >= 10


@pytest.mark.parametrize("block", BLOCKS)
def test_block_runs(block: str) -> None:
    completed = run_python(block)
    assert completed.returncode == 0, completed.stderr
