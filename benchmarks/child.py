"""Time one case in a process of its own.

``python -m benchmarks.child SCENARIO IMPLEMENTATION N LOOP [OLD_RELEASE_DIR]``
prints the seconds that ``N`` operations took. With ``OLD_RELEASE_DIR`` (a
``pip install --target`` folder) that folder goes first on ``sys.path``, so
``import aiothreads`` finds aiothreads 1.1.4 and never the current package.

Every case runs in a fresh process, so none inherits another's threads
(anyio keeps idle workers for seconds), heap or imports.
"""

from __future__ import annotations

import sys

if __name__ == "__main__":
    scenario, implementation, size, kind = sys.argv[1:5]
    if len(sys.argv) > 5:
        folder = sys.argv[5]
        sys.path.insert(0, folder)
        import aiothreads

        if not aiothreads.__file__ or not aiothreads.__file__.startswith(folder):
            sys.exit(f"expected aiothreads from {folder}, got {aiothreads.__file__}")

    from benchmarks import cases
    from benchmarks.run import run_case

    case = cases.SCENARIOS[scenario][2][implementation]
    print(run_case(case, int(size), kind))
