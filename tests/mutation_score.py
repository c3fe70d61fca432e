"""Print the mutation score per module from a finished ``mutmut run``: ``nox -s mutation``.

A mutant counts as caught when the tests failed or hung (mutmut's ``killed``
and ``timeout``). Mutants listed as equivalent in ``docs/mutation-equivalents.md``
(no test can tell them from the original) are counted apart, and the score is
the share caught of the rest. The table goes to standard output in Markdown,
followed by every survivor that is not listed there.
"""

from __future__ import annotations

import json
import re
import sys
from collections import Counter
from pathlib import Path

from mutmut.stats import status_by_exit_code

CAUGHT = ("killed", "timeout")
SHOWN = ("killed", "timeout", "survived", "no tests")
EQUIVALENTS = Path("docs/mutation-equivalents.md")
_LISTED = re.compile(r"^\| `([^`]+)` \|")


def equivalents(listing: Path = EQUIVALENTS) -> set[str]:
    """Return the names of the mutants the listing's table says are equivalent."""
    if not listing.exists():
        return set()
    lines = listing.read_text(encoding="utf-8").splitlines()
    return {match.group(1) for line in lines if (match := _LISTED.match(line))}


def tally(mutants: Path, equivalent: set[str]) -> tuple[dict[str, Counter[str]], list[str]]:
    """Count the statuses of each module's mutants; return them and the unexplained survivors.

    A survivor listed in ``equivalent`` is counted as ``equivalent``.
    """
    by_module: dict[str, Counter[str]] = {}
    unexplained: list[str] = []
    for meta in sorted(mutants.rglob("*.py.meta")):
        module = str(meta.relative_to(mutants)).removesuffix(".py.meta").replace("/", ".")
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        statuses: Counter[str] = Counter()
        for name, code in codes.items():
            status = status_by_exit_code[code]
            if status == "survived":
                if name in equivalent:
                    status = "equivalent"
                else:
                    unexplained.append(name)
            statuses[status] += 1
        by_module[module] = statuses
    return by_module, unexplained


def report(by_module: dict[str, Counter[str]]) -> str:
    """Return the Markdown table: a row per module that had mutants checked, and the total."""
    lines = [
        "| module | mutants | " + " | ".join(SHOWN) + " | equivalent | caught |",
        "| --- | ---: | " + " | ".join("---:" for _ in SHOWN) + " | ---: | ---: |",
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
    candidates = checked - statuses["equivalent"]
    score = f"{caught / candidates:.1%}" if candidates else "-"
    return f"| {name} | {checked} | {counts} | {statuses['equivalent']} | {score} |"


def main() -> None:
    """Print the table, then the survivors that are neither caught nor listed as equivalent."""
    mutants = Path(sys.argv[1] if len(sys.argv) > 1 else "mutants")
    by_module, unexplained = tally(mutants, equivalents())
    print(report(by_module))
    if unexplained:
        print(f"\n{len(unexplained)} survivors neither caught nor listed as equivalent:")
        for name in unexplained:
            print(f"- {name}")


if __name__ == "__main__":
    main()
