"""Every Python block of the README runs, and prints what the README shows after it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
PRINTED = re.findall(r"```python\n(.*?)```\n[^`]*```text\n(.*?)```", README.read_text(), re.S)
"""Blocks followed by the output they print (the first ``text`` block after them)."""


def test_readme_has_python_blocks() -> None:
    assert BLOCKS


@pytest.mark.parametrize("block", BLOCKS, ids=lambda block: block.splitlines()[0][:40])
def test_block_runs(block: str) -> None:
    exec(compile(block, str(README), "exec"), {"__name__": "__readme__"})


def test_the_quick_start_shows_what_it_prints() -> None:
    assert PRINTED


@pytest.mark.parametrize(("block", "output"), PRINTED, ids=lambda text: text.splitlines()[0][:40])
def test_block_prints_what_the_readme_shows(
    block: str, output: str, capsys: pytest.CaptureFixture[str]
) -> None:
    exec(compile(block, str(README), "exec"), {"__name__": "__readme__"})
    assert capsys.readouterr().out == output
