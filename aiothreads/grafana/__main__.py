"""``python -m aiothreads.grafana dashboard|alerts``: print the dashboard or the alert rules."""

from __future__ import annotations

import argparse
import os
import sys

from . import FILES, read


def main(argv: list[str] | None = None) -> int:
    """Write the file named on the command line to standard output; return the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m aiothreads.grafana",
        description=(
            "Print the Grafana dashboard (JSON, to import into Grafana) or the "
            "Prometheus alerting rules (YAML, for rule_files) for aiothreads' metrics."
        ),
        epilog="example: python -m aiothreads.grafana dashboard > aiothreads.json",
    )
    parser.add_argument("file", choices=sorted(FILES), help="which file to print")
    arguments = parser.parse_args(argv)
    try:
        sys.stdout.buffer.write(read(arguments.file))
        sys.stdout.flush()
    except BrokenPipeError:  # `... | head`: the reader left, which is no error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


if __name__ == "__main__":
    sys.exit(main())
