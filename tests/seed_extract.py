"""Pull the runnable examples out of the package page the API was specified by.

An example is every block that starts with an ``import`` line and ends with
``asyncio.run(main())``, kept byte for byte.
"""

from __future__ import annotations

import re
from pathlib import Path

EXAMPLES_DIR = Path(__file__).parent / "seed_examples"
SEED_PAGE = Path(__file__).resolve().parents[2] / "shared" / "seed" / "000_f92763555fd0963d.txt"

_EXAMPLE = re.compile(r"^(?:import|from) [^\n]*\n.*?^asyncio\.run\(main\(\)\)\n", re.M | re.S)


def extract(page: str) -> list[str]:
    """Return the examples of ``page`` in order."""
    return [match.group(0) for match in _EXAMPLE.finditer(page)]


def write_examples(page: str) -> None:
    """Store the examples of ``page`` as ``seed_examples/NN.py``."""
    for old in EXAMPLES_DIR.glob("example_*.py"):
        old.unlink()
    for number, example in enumerate(extract(page), start=1):
        (EXAMPLES_DIR / f"example_{number:02d}.py").write_text(example)


if __name__ == "__main__":
    write_examples(SEED_PAGE.read_text())
