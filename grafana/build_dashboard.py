"""Write ``grafana/aiothreads.json`` from the panels below: ``python grafana/build_dashboard.py``.

Keeping the dashboard as code keeps every panel's query, unit and description
in one reviewable place; a test checks that the JSON file matches this script.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DASHBOARD = HERE / "aiothreads.json"

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
SELECTOR = 'job=~"$job", instance=~"$instance", function=~"$function"'
RATE = "[$__rate_interval]"
ERRORS = 'outcome="error"'


def series(metric: str, extra: str = "") -> str:
    """``metric{<dashboard selector>[, extra]}``."""
    labels = SELECTOR + (f", {extra}" if extra else "")
    return f"{metric}{{{labels}}}"


def quantile(q: float, metric: str, by: str = "function") -> str:
    """Return the ``q`` quantile of a histogram, per ``by``."""
    return f"histogram_quantile({q}, sum by (le, {by}) (rate({series(metric + '_bucket')}{RATE})))"


PANELS: list[dict[str, Any]] = [
    {
        "title": "Call rate",
        "description": "Calls submitted to threads per second, by function and kind "
        "(threaded, separate, iterable, iterable_separate, sync_await).",
        "unit": "ops",
        "targets": [
            (
                f"sum by (function, kind) (rate({series('aiothreads_calls_started_total')}{RATE}))",
                "{{function}} ({{kind}})",
            )
        ],
    },
    {
        "title": "Error ratio",
        "description": "Share of finished calls that raised, by function.",
        "unit": "percentunit",
        "targets": [
            (
                "sum by (function) "
                f"(rate({series('aiothreads_calls_finished_total', ERRORS)}{RATE}))"
                " / sum by (function) "
                f"(rate({series('aiothreads_calls_finished_total')}{RATE}))",
                "{{function}}",
            )
        ],
    },
    {
        "title": "Call latency (p50 / p95 / p99)",
        "description": "Time calls ran in their thread, from aiothreads_call_duration_seconds.",
        "unit": "s",
        "targets": [
            (quantile(q, "aiothreads_call_duration_seconds"), f"p{round(q * 100)} {{{{function}}}}")
            for q in (0.5, 0.95, 0.99)
        ],
    },
    {
        "title": "Time waiting for a worker (p95)",
        "description": "How long calls waited for a pool thread to pick them up; "
        "growth means the pool is saturated.",
        "unit": "s",
        "targets": [(quantile(0.95, "aiothreads_call_wait_seconds"), "p95 {{function}}")],
    },
    {
        "title": "Time waiting under limit= (p95)",
        "description": "How long calls and iterators waited for a place under their "
        "limit= before they started.",
        "unit": "s",
        "targets": [(quantile(0.95, "aiothreads_limit_wait_seconds"), "p95 {{function}}")],
    },
    {
        "title": "Calls in flight and queued",
        "description": "Calls running in threads now, and calls waiting for a worker.",
        "unit": "short",
        "targets": [
            (f"sum by (function) ({series('aiothreads_calls_in_flight')})", "running {{function}}"),
            (f"sum by (function) ({series('aiothreads_calls_queued')})", "queued {{function}}"),
        ],
    },
    {
        "title": "Separate threads",
        "description": "Dedicated threads alive now, and started per second "
        "(@threaded_separate, @threaded_iterable_separate).",
        "unit": "short",
        "targets": [
            (
                f"sum by (function) ({series('aiothreads_separate_threads_alive')})",
                "alive {{function}}",
            ),
            (
                "sum by (function) "
                f"(rate({series('aiothreads_separate_threads_started_total')}{RATE}))",
                "started/s {{function}}",
            ),
        ],
    },
    {
        "title": "Channel depth vs capacity",
        "description": "Items buffered between generator threads and consumers, against "
        "the channels' capacity (+Inf when unbounded).",
        "unit": "short",
        "targets": [
            (f"sum by (function) ({series('aiothreads_channel_depth')})", "depth {{function}}"),
            (
                f"sum by (function) ({series('aiothreads_channel_capacity')})",
                "capacity {{function}}",
            ),
        ],
    },
    {
        "title": "Backpressure",
        "description": "Share of time generator threads spent blocked on a full channel "
        "(seconds blocked per second; above 100% when several producers block).",
        "unit": "percentunit",
        "targets": [
            (
                "sum by (function) "
                f"(rate({series('aiothreads_producer_blocked_seconds_total')}{RATE}))",
                "{{function}}",
            )
        ],
    },
    {
        "title": "Items per second",
        "description": "Items generators handed to their consumers per second.",
        "unit": "ops",
        "targets": [
            (
                f"sum by (function) (rate({series('aiothreads_items_yielded_total')}{RATE}))",
                "{{function}}",
            )
        ],
    },
    {
        "title": "Generator cancellations by reason",
        "description": "Generators stopped before their end per second: break, closed, "
        "cancelled, collected, loop_closed, error.",
        "unit": "ops",
        "targets": [
            (
                "sum by (reason) "
                f"(rate({series('aiothreads_generator_cancellations_total')}{RATE}))",
                "{{reason}}",
            )
        ],
    },
    {
        "title": "Active iterators",
        "description": "Threaded iterators whose generator has started and not ended.",
        "unit": "short",
        "targets": [
            (f"sum by (function) ({series('aiothreads_iterators_active')})", "{{function}}")
        ],
    },
]


def variable(name: str, label: str, query: str) -> dict[str, Any]:
    """Return a query variable over ``label`` values, multi-select, "All" as ``.*``."""
    return {
        "name": name,
        "label": label.capitalize(),
        "type": "query",
        "datasource": DATASOURCE,
        "query": {"query": query, "refId": f"{name}-values"},
        "definition": query,
        "refresh": 2,
        "includeAll": True,
        "allValue": ".*",
        "multi": True,
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "sort": 1,
    }


def panel(number: int, spec: dict[str, Any]) -> dict[str, Any]:
    """Return a time series panel placed in a two-column grid."""
    return {
        "id": number + 1,
        "type": "timeseries",
        "title": spec["title"],
        "description": spec["description"],
        "datasource": DATASOURCE,
        "gridPos": {"h": 8, "w": 12, "x": (number % 2) * 12, "y": (number // 2) * 8},
        "fieldConfig": {
            "defaults": {"unit": spec["unit"], "custom": {"lineWidth": 1, "fillOpacity": 10}},
            "overrides": [],
        },
        "options": {
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
        "targets": [
            {
                "refId": chr(ord("A") + index),
                "datasource": DATASOURCE,
                "expr": expr,
                "legendFormat": legend,
                "range": True,
            }
            for index, (expr, legend) in enumerate(spec["targets"])
        ],
    }


def dashboard() -> dict[str, Any]:
    """Return the whole dashboard document."""
    return {
        "uid": "aiothreads",
        "title": "aiothreads",
        "description": "Threaded calls, separate threads and threaded generators of "
        "services that use aiothreads.",
        "tags": ["aiothreads", "asyncio", "python"],
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"},
        "timezone": "browser",
        "annotations": {"list": []},
        "links": [],
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Data source",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                    "hide": 0,
                },
                variable("job", "job", "label_values(aiothreads_calls_started_total, job)"),
                variable(
                    "instance",
                    "instance",
                    'label_values(aiothreads_calls_started_total{job=~"$job"}, instance)',
                ),
                variable(
                    "function",
                    "function",
                    "label_values(aiothreads_calls_started_total"
                    '{job=~"$job", instance=~"$instance"}, function)',
                ),
            ]
        },
        "panels": [panel(number, spec) for number, spec in enumerate(PANELS)],
    }


def render() -> str:
    """Return the dashboard as the JSON text stored in the repository."""
    return json.dumps(dashboard(), indent=2) + "\n"


if __name__ == "__main__":
    DASHBOARD.write_text(render())
    print(f"wrote {DASHBOARD}")
