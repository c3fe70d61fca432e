"""Print the mutation score per module from a finished ``mutmut run``: ``nox -s mutation``.

A mutant counts as caught when the tests failed or hung (mutmut's ``killed``
and ``timeout``). Mutants listed as equivalent in ``docs/mutation-equivalents.md``
(no test can tell them from the original) are counted apart, and the score is
the share caught of the rest. The table goes to standard output in Markdown,
followed by every survivor that is not listed there.

The "minutes" column adds up how long the tests ran for each checked mutant,
as mutmut recorded it: a run with ``--max-children N`` takes about that
divided by N, plus one run of the suite to map tests to functions.
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

    A survivor listed in ``equivalent`` is counted as ``equivalent``; the
    seconds the tests of the checked mutants ran are counted as ``seconds``.
    """
    by_module: dict[str, Counter[str]] = {}
    unexplained: list[str] = []
    for meta in sorted(mutants.rglob("*.py.meta")):
        module = str(meta.relative_to(mutants)).removesuffix(".py.meta").replace("/", ".")
        recorded = json.loads(meta.read_text())
        codes = recorded["exit_code_by_key"]
        durations = recorded.get("durations_by_key", {})
        statuses: Counter[str] = Counter()
        for name, code in codes.items():
            status = status_by_exit_code[code]
            if status == "survived":
                if name in equivalent:
                    status = "equivalent"
                else:
                    unexplained.append(name)
            statuses[status] += 1
            if code is not None:
                statuses["seconds"] += round(durations.get(name, 0.0))
        by_module[module] = statuses
    return by_module, unexplained


def report(by_module: dict[str, Counter[str]]) -> str:
    """Return the Markdown table: a row per module that had mutants checked, and the total."""
    lines = [
        "| module | mutants | " + " | ".join(SHOWN) + " | equivalent | caught | minutes |",
        "| --- | ---: | " + " | ".join("---:" for _ in SHOWN) + " | ---: | ---: | ---: |",
    ]
    total: Counter[str] = Counter()
    for module, statuses in by_module.items():
        checked = _checked(statuses)
        if checked == 0:
            continue
        total += statuses
        lines.append(_row(module, statuses, checked))
    lines.append(_row("**all**", total, _checked(total)))
    return "\n".join(lines)


def _checked(statuses: Counter[str]) -> int:
    return sum(statuses.values()) - statuses["not checked"] - statuses["seconds"]


def _row(name: str, statuses: Counter[str], checked: int) -> str:
    caught = sum(statuses[status] for status in CAUGHT)
    counts = " | ".join(str(statuses[status]) for status in SHOWN)
    candidates = checked - statuses["equivalent"]
    score = f"{caught / candidates:.1%}" if candidates else "-"
    minutes = statuses["seconds"] / 60
    return f"| {name} | {checked} | {counts} | {statuses['equivalent']} | {score} | {minutes:.0f} |"


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
