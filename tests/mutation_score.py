"""Print the mutation score per module from a finished ``mutmut run``: ``nox -s mutation``.

A mutant counts as caught when the tests failed or hung (mutmut's ``killed``
and ``timeout``). The table goes to standard output in Markdown.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

from mutmut.stats import status_by_exit_code

CAUGHT = ("killed", "timeout")
SHOWN = ("killed", "timeout", "survived", "no tests")


def tally(mutants: Path) -> dict[str, Counter[str]]:
    """Count the statuses of the mutants of each module under ``mutants``."""
    by_module: dict[str, Counter[str]] = {}
    for meta in sorted(mutants.rglob("*.py.meta")):
        module = str(meta.relative_to(mutants)).removesuffix(".py.meta").replace("/", ".")
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        by_module[module] = Counter(status_by_exit_code[code] for code in codes.values())
    return by_module


def report(by_module: dict[str, Counter[str]]) -> str:
    """Return the Markdown table: a row per module that had mutants checked, and the total."""
    lines = [
        "| module | mutants | " + " | ".join(SHOWN) + " | caught |",
        "| --- | ---: | " + " | ".join("---:" for _ in SHOWN) + " | ---: |",
    ]
    total: Counter[str] = Counter()
    for module, statuses in by_module.items():
        checked = sum(statuses.values()) - statuses["not checked"]
        if checked == 0:
            continue
        total += statuses
        lines.append(_row(module, statuses, checked))
    lines.append(_row("**all**", total, sum(total.values()) - total["not checked"]))
    return "\n".join(lines)


def _row(name: str, statuses: Counter[str], checked: int) -> str:
    caught = sum(statuses[status] for status in CAUGHT)
    counts = " | ".join(str(statuses[status]) for status in SHOWN)
    return f"| {name} | {checked} | {counts} | {caught / checked:.0%} |"


if __name__ == "__main__":
    print(report(tally(Path(sys.argv[1] if len(sys.argv) > 1 else "mutants"))))
