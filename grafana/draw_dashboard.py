"""Draw ``docs/dashboard.svg`` from ``aiothreads.json``: ``python grafana/draw_dashboard.py``.

The picture is a function of the dashboard alone: its rows, and each panel's
title, type, place in the grid, unit, legends and alert level. Series are
sample curves, made up from the panel's title and legend, not measured, so the
same dashboard always gives the same file, and a test redraws it and compares
it with the one in ``docs``: change the dashboard without running this script
and that test fails. ``python grafana/preview.py`` draws the panels with real
data instead, from the demo service and a Prometheus.
"""

from __future__ import annotations

import json
import math
import sys
import zlib
from pathlib import Path
from typing import Any, NamedTuple
from xml.sax.saxutils import escape

HERE = Path(__file__).resolve().parent
DASHBOARD = HERE / "aiothreads.json"
PICTURE = HERE.parent / "docs" / "dashboard.svg"

COLUMN = 40
"""Pixels per column of Grafana's 24-column grid: the picture is 960 wide."""
LINE = 30
"""Pixels per unit of height in the grid, as Grafana draws it."""
GAP = 4
HEADER = 36
"""Pixels above the first row, for the dashboard's title."""
COLOURS = ("#73bf69", "#f2cc0c", "#8ab8ff", "#ff780a", "#f2495c", "#5794f2", "#b877d9")
UNITS = {"s": "seconds", "ops": "per second", "short": "count", "percentunit": "percent"}
SAMPLE_LABELS = {"function": "fetch", "kind": "threaded", "pool": "default", "reason": "cancelled"}
"""The label values legends are shown with."""
STYLE = """
text { font-family: Inter, Helvetica, Arial, sans-serif; fill: #ccccdc; }
.dashboard { font-size: 16px; font-weight: 600; }
.row { font-size: 14px; font-weight: 600; }
.title { font-size: 12px; font-weight: 500; }
.small { font-size: 10px; fill: #8e8e9e; }
.panel { fill: #181b1f; stroke: #2c3235; }
.alert { stroke: #f2495c; stroke-width: 1; stroke-dasharray: 4 3; }
"""


class _Box(NamedTuple):
    """A rectangle of the picture, in pixels."""

    x: int
    y: int
    w: int
    h: int


def draw(dashboard: dict[str, Any]) -> str:
    """Return the SVG text of ``dashboard``, a dashboard document as Grafana stores it."""
    panels = dashboard["panels"]
    rows = max(panel["gridPos"]["y"] + panel["gridPos"]["h"] for panel in panels)
    width, height = 24 * COLUMN, HEADER + rows * LINE
    title = escape(dashboard["title"])
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="The {title} dashboard">',
        f"<title>The {title} dashboard: its rows and panels, with sample series</title>",
        f"<style>{STYLE}</style>",
        f'<rect width="{width}" height="{height}" fill="#111217"/>',
        f'<text class="dashboard" x="{GAP * 2}" y="24">{title}</text>',
    ]
    for panel in panels:
        parts.extend(_panel(panel))
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def _panel(panel: dict[str, Any]) -> list[str]:
    """Return the SVG elements of one row header or panel."""
    grid = panel["gridPos"]
    x, y = grid["x"] * COLUMN + GAP, HEADER + grid["y"] * LINE + GAP
    w, h = grid["w"] * COLUMN - 2 * GAP, grid["h"] * LINE - 2 * GAP
    title = escape(panel["title"])
    if panel["type"] == "row":
        return [f'<text class="row" x="{x + GAP}" y="{y + h - 4}">&#9662; {title}</text>']
    defaults = panel.get("fieldConfig", {}).get("defaults", {})
    unit = defaults.get("unit", "")
    levels = [step["value"] for step in defaults.get("thresholds", {}).get("steps", [])[1:]]
    parts = [
        f'<g id="panel-{panel["id"]}">',
        f'<rect class="panel" x="{x}" y="{y}" width="{w}" height="{h}" rx="2"/>',
        f'<text class="title" x="{x + 8}" y="{y + 17}">{title}</text>',
    ]
    legends = [target.get("legendFormat", "") for target in panel.get("targets", [])]
    if panel["type"] == "stat":
        parts.append(_stat(_Box(x, y, w, h), unit, levels, panel["title"]))
    else:
        curves = [
            (f"{panel['title']}{legend}{index}", legend) for index, legend in enumerate(legends)
        ]
        parts.extend(_timeseries(_Box(x + 8, y + 28, w - 16, h - 36), unit, levels, curves))
    parts.append("</g>")
    return parts


def _stat(box: _Box, unit: str, levels: list[float], title: str) -> str:
    """Return a stat panel's sample value, green: below its alert level, if it has one."""
    x, y, w, h = box
    value = 1 + _seed(title) % 9
    shown = f"{value / 100:.0%}" if unit == "percentunit" else str(value)
    centre_x, centre_y = x + w // 2, y + h // 2 + 16
    alert = "" if not levels else f" (red from {_number(levels[0], unit)})"
    return (
        f'<text x="{centre_x}" y="{centre_y}" text-anchor="middle" font-size="28" '
        f'style="fill: #73bf69">{shown}</text>'
        f'<text class="small" x="{centre_x}" y="{y + h - 8}" text-anchor="middle">'
        f"{escape(UNITS.get(unit, unit) + alert)}</text>"
    )


def _timeseries(
    box: _Box, unit: str, levels: list[float], curves: list[tuple[str, str]]
) -> list[str]:
    """Return a plot area, a sample curve and legend entry per (key, legend), and alert levels."""
    x, y, w, h = box
    plot_w = w * 2 // 3
    bottom = y + h - 12
    parts = [
        f'<line x1="{x}" y1="{bottom}" x2="{x + plot_w}" y2="{bottom}" stroke="#2c3235"/>',
        f'<text class="small" x="{x}" y="{y + h}">{escape(UNITS.get(unit, unit))}</text>',
    ]
    for level in levels:
        parts.append(
            f'<line class="alert" x1="{x}" y1="{y + 8}" x2="{x + plot_w}" y2="{y + 8}"/>'
            f'<text class="small" x="{x + plot_w - 4}" y="{y + 20}" text-anchor="end">'
            f"alert at {_number(level, unit)}</text>"
        )
    for index, (key, legend) in enumerate(curves):
        colour = COLOURS[index % len(COLOURS)]
        points = _curve(key, _Box(x, y + 12, plot_w, bottom - y - 14))
        parts.append(
            f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="1.5"/>'
        )
        label_y = y + 10 + index * 14
        parts.append(
            f'<rect x="{x + plot_w + 10}" y="{label_y - 7}" width="10" height="3" '
            f'fill="{colour}"/><text class="small" x="{x + plot_w + 24}" y="{label_y}">'
            f"{escape(_legend(legend))}</text>"
        )
    return parts


def _curve(key: str, box: _Box) -> str:
    """Return the points of a smooth sample curve in ``box``, the same for the same ``key``."""
    x, y, w, h = box
    seed = _seed(key)
    phase, level = seed % 628 / 100, 0.3 + seed % 5 / 10
    points = []
    for step in range(25):
        t = step / 24
        value = level + 0.2 * math.sin(6 * t + phase) + 0.1 * math.sin(17 * t + 2 * phase)
        value = min(max(value, 0.0), 1.0)
        points.append(f"{x + t * w:.1f},{y + (1 - value) * h:.1f}")
    return " ".join(points)


def _legend(template: str) -> str:
    """Return a legend as it shows for the sample labels."""
    for label, value in SAMPLE_LABELS.items():
        template = template.replace("{{" + label + "}}", value)
    return template


def _seed(text: str) -> int:
    """Return a number that depends on ``text`` only (not on the hash seed)."""
    return zlib.crc32(text.encode())


def _number(value: float, unit: str) -> str:
    """Return an alert level as its panel shows it."""
    if unit == "percentunit":
        return f"{value:.0%}"
    if unit == "s":
        return f"{value:g} s"
    return f"{value:g}"


def main() -> None:
    """Write the picture of ``grafana/aiothreads.json`` (or check it with ``--check``)."""
    picture = draw(json.loads(DASHBOARD.read_text()))
    if "--check" in sys.argv[1:]:
        if PICTURE.read_text() != picture:
            sys.exit(f"{PICTURE} is out of date: run python grafana/draw_dashboard.py")
        return
    PICTURE.write_text(picture)
    print(f"wrote {PICTURE}")


if __name__ == "__main__":
    main()
