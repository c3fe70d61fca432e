"""Render a preview of the dashboard with real data: ``python grafana/preview.py``.

Starts the demo service and a Prometheus server on 127.0.0.1 (Debian's
``prometheus`` package), lets them run for ``--seconds``, then draws every panel
of ``aiothreads.json`` from Prometheus' range queries into ``dashboard-preview.png``
with matplotlib, in the dashboard's own grid. Both processes are stopped and
their temporary folder removed. The picture in the docs is not this one: it is
drawn from the dashboard alone by ``draw_dashboard.py``, so that a test can
check it.
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
        "$kind": ".*",
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
    from matplotlib.ticker import PercentFormatter

    dashboard = json.loads((ROOT / "grafana" / "aiothreads.json").read_text())
    panels = dashboard["panels"]
    title_space = 1.5  # grid units above the first row, for the figure's title
    height = max(panel["gridPos"]["y"] + panel["gridPos"]["h"] for panel in panels) + title_space
    figure = plt.figure(figsize=(10, 0.36 * height))  # about the width of a docs page
    figure.patch.set_facecolor("#181b1f")

    def place(grid: dict[str, int], pad: float) -> list[float]:
        return [
            grid["x"] / 24 + pad / 2 / 10,
            1 - (grid["y"] + title_space + grid["h"]) / height + pad / height,
            grid["w"] / 24 - pad / 10,
            grid["h"] / height - 1.6 * pad / height,
        ]

    for panel in panels:
        grid = panel["gridPos"]
        if panel["type"] == "row":
            figure.text(
                0.005,
                1 - (grid["y"] + title_space + 0.8) / height,
                panel["title"],
                color="white",
                fontsize=11,
            )
            continue
        axis = figure.add_axes(place(grid, 0.9))
        axis.set_facecolor("#111217")
        axis.set_title(panel["title"], color="white", fontsize=10, loc="left")
        unit = panel["fieldConfig"]["defaults"]["unit"]
        if panel["type"] == "stat":
            axis.set_xticks([])
            axis.set_yticks([])
            target = panel["targets"][0]
            result = query_range(base, substitute(target["expr"]), start, end)
            value = float(result[0]["values"][-1][1]) if result else float("nan")
            shown = f"{value:.0%}" if unit == "percentunit" else f"{value:,.1f}"
            levels = panel["fieldConfig"]["defaults"]["thresholds"]["steps"][1:]
            alarming = any(value >= step["value"] for step in levels)
            color = "#f2495c" if alarming else "#73bf69"
            axis.text(0.5, 0.4, shown, color=color, fontsize=16, ha="center", va="center")
            continue
        axis.tick_params(colors="#bbbbbb", labelsize=8)
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
        steps = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
        for step in steps[1:]:
            axis.axhline(step["value"], color="#f2495c", linewidth=0.8, linestyle="--")
        axis.set_xlabel("seconds", color="#aaaaaa", fontsize=8)
        axis.set_ylabel(UNITS.get(unit, unit), color="#aaaaaa", fontsize=8)
        if unit == "percentunit":
            axis.yaxis.set_major_formatter(PercentFormatter(1.0))
        if axis.get_legend_handles_labels()[0]:
            axis.legend(fontsize=7.5, loc="upper left", framealpha=0.6)
    figure.suptitle("aiothreads dashboard, rendered from the demo (--overload)", color="white")
    figure.savefig(output, dpi=100, facecolor=figure.get_facecolor())


UNITS = {
    "s": "seconds",
    "ops": "per second",
    "short": "count",
    "percentunit": "percent",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--output", type=Path, default=Path("dashboard-preview.png"))
    arguments = parser.parse_args()
    with local_stack("--overload") as stack:
        start = time.time()
        time.sleep(arguments.seconds)  # let the demo run and Prometheus scrape it
        render(stack.prometheus_url, start, time.time(), arguments.output)
    print(f"wrote {arguments.output}")


if __name__ == "__main__":
    main()
