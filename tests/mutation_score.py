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
from dataclasses import dataclass, field
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


@dataclass
class ModuleTally:
    """A module's mutants by status, and the seconds the tests of the checked ones ran."""

    statuses: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0

    def __iadd__(self, other: ModuleTally) -> ModuleTally:
        self.statuses += other.statuses
        self.seconds += other.seconds
        return self

    @property
    def checked(self) -> int:
        """How many of the module's mutants have a result."""
        return sum(self.statuses.values()) - self.statuses["not checked"]


def tally(mutants: Path, equivalent: set[str]) -> tuple[dict[str, ModuleTally], list[str]]:
    """Count the statuses of each module's mutants; return them and the unexplained survivors.

    A survivor (or a mutant that timed out) listed in ``equivalent`` is
    counted as ``equivalent``.
    """
    by_module: dict[str, ModuleTally] = {}
    unexplained: list[str] = []
    for meta in sorted(mutants.rglob("*.py.meta")):
        module = str(meta.relative_to(mutants)).removesuffix(".py.meta").replace("/", ".")
        recorded = json.loads(meta.read_text())
        durations = recorded.get("durations_by_key", {})
        counted = ModuleTally()
        for name, code in recorded["exit_code_by_key"].items():
            status = status_by_exit_code[code]
            if name in equivalent and status in {"survived", "timeout"}:
                status = "equivalent"  # a timeout of one is the machine's, not a catch
            elif status == "survived":
                unexplained.append(name)
            counted.statuses[status] += 1
            if code is not None:
                counted.seconds += durations.get(name, 0.0)
        by_module[module] = counted
    return by_module, unexplained


def report(by_module: dict[str, ModuleTally]) -> str:
    """Return the Markdown table: a row per module that had mutants checked, and the total."""
    lines = [
        "| module | mutants | " + " | ".join(SHOWN) + " | equivalent | caught | minutes |",
        "| --- | ---: | " + " | ".join("---:" for _ in SHOWN) + " | ---: | ---: | ---: |",
    ]
    total = ModuleTally()
    for module, counted in by_module.items():
        if counted.checked == 0:
            continue
        total += counted
        lines.append(_row(module, counted))
    lines.append(_row("**all**", total))
    return "\n".join(lines)


def _row(name: str, counted: ModuleTally) -> str:
    statuses = counted.statuses
    caught = sum(statuses[status] for status in CAUGHT)
    counts = " | ".join(str(statuses[status]) for status in SHOWN)
    candidates = counted.checked - statuses["equivalent"]
    score = f"{caught / candidates:.1%}" if candidates else "-"
    minutes = counted.seconds / 60
    return (
        f"| {name} | {counted.checked} | {counts} | {statuses['equivalent']} | {score}"
        f" | {minutes:.0f} |"
    )


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
