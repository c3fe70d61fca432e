"""Time one scenario on aiothreads 1.1.4: ``python -m benchmarks.old_child DIR SCENARIO N LOOP``.

``DIR`` holds the old release (``pip install --target``); it goes first on
``sys.path`` so ``import aiothreads`` finds it and never the current package.
"""

from __future__ import annotations

import sys

if __name__ == "__main__":
    folder, scenario, size, kind = sys.argv[1:5]
    sys.path.insert(0, folder)
    import aiothreads

    if not aiothreads.__file__ or not aiothreads.__file__.startswith(folder):
        sys.exit(f"expected aiothreads from {folder}, got {aiothreads.__file__}")

    from benchmarks import cases
    from benchmarks.run import run_case

    case = cases.SCENARIOS[scenario][2][cases.AIOTHREADS]
    print(run_case(case, int(size), kind))
