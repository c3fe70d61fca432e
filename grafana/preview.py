"""Render a preview of the dashboard with real data: ``python grafana/preview.py``.

Starts the demo service and a Prometheus server on 127.0.0.1 (Debian's
``prometheus`` package), lets them run for ``--seconds``, then draws every panel
of ``aiothreads.json`` from Prometheus' range queries into ``docs/dashboard.png``
with matplotlib, in the dashboard's own grid. Both processes are stopped and
their temporary folder removed.
"""

from __future__ import annotations

import argparse
import json
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from local_stack import JOB, ROOT, local_stack


def query_range(base: str, expression: str, start: float, end: float) -> list[dict[str, Any]]:
    parameters = urllib.parse.urlencode(
        {"query": expression, "start": start, "end": end, "step": "2"}
    )
    with urllib.request.urlopen(f"{base}/api/v1/query_range?{parameters}", timeout=10) as reply:
        answer = json.loads(reply.read())
    result: list[dict[str, Any]] = answer["data"]["result"]
    return result


def substitute(expression: str) -> str:
    for variable, value in {
        "$__rate_interval": "15s",
        "$job": JOB,
        "$instance": ".*",
        "$function": ".*",
    }.items():
        expression = expression.replace(variable, value)
    return expression


def legend(template: str, labels: dict[str, str]) -> str:
    for key, value in labels.items():
        template = template.replace("{{" + key + "}}", value.removeprefix("aiothreads.demo."))
    return template


def render(base: str, start: float, end: float, output: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dashboard = json.loads((ROOT / "grafana" / "aiothreads.json").read_text())
    panels = dashboard["panels"]
    rows = max(panel["gridPos"]["y"] // 8 for panel in panels) + 1
    figure, axes = plt.subplots(rows, 2, figsize=(14, 3.0 * rows), squeeze=False)
    figure.patch.set_facecolor("#181b1f")
    for panel in panels:
        grid = panel["gridPos"]
        axis = axes[grid["y"] // 8][grid["x"] // 12]
        axis.set_facecolor("#111217")
        axis.set_title(panel["title"], color="white", fontsize=9, loc="left")
        axis.tick_params(colors="#bbbbbb", labelsize=6)
        for target in panel["targets"]:
            for series in query_range(base, substitute(target["expr"]), start, end)[:6]:
                times = [float(t) - start for t, _ in series["values"]]
                values = [float(v) for _, v in series["values"]]
                axis.plot(
                    times,
                    values,
                    linewidth=1,
                    label=legend(target["legendFormat"], series["metric"]),
                )
        axis.set_xlabel(
            f"seconds  ({panel['fieldConfig']['defaults']['unit']})", color="#888888", fontsize=6
        )
        if axis.get_legend_handles_labels()[0]:
            axis.legend(fontsize=5, loc="upper left", framealpha=0.3)
    for row in axes:
        for axis in row:
            if not axis.has_data():
                axis.set_visible(False)
    figure.suptitle("aiothreads dashboard, rendered from the demo (--overload)", color="white")
    figure.tight_layout()
    figure.savefig(output, dpi=90, facecolor=figure.get_facecolor())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "dashboard.png")
    arguments = parser.parse_args()
    with local_stack("--overload") as stack:
        start = time.time()
        time.sleep(arguments.seconds)  # let the demo run and Prometheus scrape it
        render(stack.prometheus_url, start, time.time(), arguments.output)
    print(f"wrote {arguments.output}")


if __name__ == "__main__":
    main()
