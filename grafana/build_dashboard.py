"""Write ``grafana/aiothreads.json`` from the panels below: ``python grafana/build_dashboard.py``.

Keeping the dashboard as code keeps every panel's query, unit and description
in one reviewable place; a test checks that the JSON file matches this script.
It writes the copy the package ships (``python -m aiothreads.grafana
dashboard``) too, and a test checks that the two are the same.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DASHBOARD = HERE / "aiothreads.json"
SHIPPED = HERE.parent / "aiothreads" / "grafana" / "aiothreads.json"

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
SELECTOR = 'job=~"$job", instance=~"$instance", kind=~"$kind", function=~"$function"'
POOL_SELECTOR = 'job=~"$job", instance=~"$instance", pool=~"$pool"'
"""The pools' own series are labelled by pool, not by function and kind."""
RATE = "[$__rate_interval]"
ERRORS = 'outcome="error"'
TINY = "1e-9"
"""Divides a ratio whose every term is zero into 0, not NaN: no calls failed."""
POOLED = 'kind=~"threaded|iterable"'
ABNORMAL = 'reason=~"cancelled|collected|loop_closed|error"'

# The levels at which grafana/alerts.yml fires, drawn as lines on the panels.
POOL_WAIT_ALERT = 0.25
BACKLOG_ALERT = 50
SEPARATE_THREADS_ALERT = 50
ABNORMAL_STOPS_ALERT = 5
ERROR_RATIO_ALERT = 0.10
POOL_BUSY_ALERT = 0.9


def series(metric: str, extra: str = "") -> str:
    """``metric{<dashboard selector>[, extra]}``."""
    labels = SELECTOR + (f", {extra}" if extra else "")
    return f"{metric}{{{labels}}}"


def pool_series(metric: str, extra: str = "") -> str:
    """``metric{<the dashboard's pool selector>[, extra]}``."""
    labels = POOL_SELECTOR + (f", {extra}" if extra else "")
    return f"{metric}{{{labels}}}"


BUSY = "sum by (pool) ({})".format(pool_series("aiothreads_pool_threads", 'state="busy"'))
IDLE = "sum by (pool) ({})".format(pool_series("aiothreads_pool_threads", 'state="idle"'))
MAXIMUM = f"sum by (pool) ({pool_series('aiothreads_pool_threads_max')})"


def quantile(q: float, metric: str, by: str = "function") -> str:
    """Return the ``q`` quantile of a histogram, per ``by``."""
    return f"histogram_quantile({q}, sum by (le, {by}) (rate({series(metric + '_bucket')}{RATE})))"


OVERVIEW: list[dict[str, Any]] = [
    {
        "title": "Calls per second",
        "description": "Calls submitted to threads per second, every function and kind.",
        "unit": "ops",
        "targets": [(f"sum(rate({series('aiothreads_calls_started_total')}{RATE}))", "calls/s")],
    },
    {
        "title": "Error ratio",
        "description": "Share of finished calls that raised, every function; 0% when none did.",
        "unit": "percentunit",
        "threshold": ERROR_RATIO_ALERT,
        "targets": [
            (
                f"sum(rate({series('aiothreads_calls_finished_total', ERRORS)}{RATE}))"
                f" / clamp_min(sum(rate({series('aiothreads_calls_finished_total')}{RATE})), "
                f"{TINY})",
                "errors",
            )
        ],
    },
    {
        "title": "Calls queued",
        "description": "Calls waiting for a worker thread now.",
        "unit": "short",
        "threshold": BACKLOG_ALERT,
        "targets": [(f"sum({series('aiothreads_calls_queued')})", "queued")],
    },
    {
        "title": "Calls in flight",
        "description": "Calls running in threads now.",
        "unit": "short",
        "targets": [(f"sum({series('aiothreads_calls_in_flight')})", "running")],
    },
    {
        "title": "Separate threads alive",
        "description": "Dedicated threads alive now.",
        "unit": "short",
        "threshold": SEPARATE_THREADS_ALERT,
        "targets": [(f"sum({series('aiothreads_separate_threads_alive')})", "alive")],
    },
    {
        "title": "Active iterators",
        "description": "Threaded iterators whose generator has started and not ended.",
        "unit": "short",
        "targets": [(f"sum({series('aiothreads_iterators_active')})", "active")],
    },
]

CALLS: list[dict[str, Any]] = [
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
        "title": "Error ratio by function",
        "description": "Share of finished calls that raised, by function; the line is "
        "where AiothreadsErrorRatioHigh fires.",
        "unit": "percentunit",
        "threshold": ERROR_RATIO_ALERT,
        "targets": [
            (
                "sum by (function) "
                f"(rate({series('aiothreads_calls_finished_total', ERRORS)}{RATE}))"
                " / clamp_min(sum by (function) "
                f"(rate({series('aiothreads_calls_finished_total')}{RATE})), {TINY})",
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
        "title": "Slow calls",
        "description": "Calls, and stalls of generators, that the watchdog found running "
        "past the slow-call threshold; AiothreadsSlowCalls fires on any. Each one's "
        '"slow threaded call" log event has its thread and stack.',
        "unit": "short",
        "targets": [
            (
                "sum by (function, kind) "
                f"(increase({series('aiothreads_calls_slow_total')}{RATE}))",
                "{{function}} ({{kind}})",
            )
        ],
    },
    {
        "title": "Time waiting under limit= (p95)",
        "description": "How long calls and iterators waited for a place under their "
        "limit= before they started.",
        "unit": "s",
        "targets": [(quantile(0.95, "aiothreads_limit_wait_seconds"), "p95 {{function}}")],
    },
]

POOL: list[dict[str, Any]] = [
    {
        "title": "Pool saturation (busy / maximum)",
        "description": "Share of each pool's threads that run a call, out of the most it "
        "may have; the line is where AiothreadsPoolFull fires (on its 10-minute average). "
        "Pools whose maximum aiothreads cannot read are not drawn.",
        "unit": "percentunit",
        "threshold": POOL_BUSY_ALERT,
        "targets": [(f"{BUSY} / {MAXIMUM}", "{{pool}}")],
    },
    {
        "title": "Pool threads: busy, idle and maximum",
        "description": "Worker threads of each pool running a call and waiting for one, "
        "and the most it may have; idle workers of aiothreads' pool exit after 10 s.",
        "unit": "short",
        "targets": [
            (BUSY, "busy {{pool}}"),
            (IDLE, "idle {{pool}}"),
            (MAXIMUM, "max {{pool}}"),
        ],
    },
    {
        "title": "Calls waiting for a pool thread",
        "description": "Calls queued in each pool for a worker, from aiothreads and any "
        "other submitter (asyncio.to_thread, loop.run_in_executor).",
        "unit": "short",
        "targets": [(f"sum by (pool) ({pool_series('aiothreads_pool_queued')})", "{{pool}}")],
    },
    {
        "title": "Calls refused by pools",
        "description": "Calls a pool refused or dropped before they ran, per second: "
        "shut_down (the pool was shut down), rejected (its submit() raised its own "
        "exception, e.g. load shedding), dropped (queued, then dropped).",
        "unit": "ops",
        "targets": [
            (
                "sum by (pool, reason) "
                f"(rate({pool_series('aiothreads_pool_refused_total')}{RATE}))",
                "{{reason}} {{pool}}",
            )
        ],
    },
    {
        "title": "Time waiting for a worker (p95)",
        "description": "How long pooled calls waited for a pool thread to pick them up; "
        "the line is where AiothreadsPoolSaturated fires (for instances whose pools do not "
        "report both busy threads and their maximum).",
        "unit": "s",
        "threshold": POOL_WAIT_ALERT,
        "targets": [
            (
                "histogram_quantile(0.95, sum by (le, function) (rate("
                f"{series('aiothreads_call_wait_seconds_bucket', POOLED)}{RATE})))",
                "p95 {{function}}",
            )
        ],
    },
    {
        "title": "Calls in flight and queued",
        "description": "Calls running in threads now, and calls waiting for a worker; "
        "the line is the backlog at which AiothreadsCallBacklog fires (on its average).",
        "unit": "short",
        "threshold": BACKLOG_ALERT,
        "targets": [
            (f"sum by (function) ({series('aiothreads_calls_in_flight')})", "running {{function}}"),
            (f"sum by (function) ({series('aiothreads_calls_queued')})", "queued {{function}}"),
        ],
    },
]

STREAMS: list[dict[str, Any]] = [
    {
        "title": "Channel depth vs capacity",
        "description": "Items buffered between generator threads and consumers, against "
        "the capacity of the bounded channels (unbounded ones have none to draw).",
        "unit": "short",
        "targets": [
            (f"sum by (function) ({series('aiothreads_channel_depth')})", "depth {{function}}"),
            (
                f"sum by (function) ({series('aiothreads_channel_capacity')} < +Inf)",
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
        "title": "Generators stopped early, by reason",
        "description": "Generators stopped before their end per second. break and closed "
        "are normal; the line is where AiothreadsGeneratorsStoppedAbnormally fires on "
        "the sum of the others.",
        "unit": "ops",
        "threshold": ABNORMAL_STOPS_ALERT,
        "targets": [
            (
                "sum by (reason) "
                f"(rate({series('aiothreads_generator_cancellations_total')}{RATE}))",
                "{{reason}}",
            ),
            (
                f"sum (rate({series('aiothreads_generator_cancellations_total', ABNORMAL)}{RATE}))",
                "abnormal",
            ),
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

THREADS: list[dict[str, Any]] = [
    {
        "title": "Separate threads",
        "description": "Dedicated threads alive now, and started per second "
        "(@threaded_separate, @threaded_iterable_separate); the line is where "
        "AiothreadsSeparateThreadsPilingUp fires (on its average).",
        "unit": "short",
        "threshold": SEPARATE_THREADS_ALERT,
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
]

ROWS: list[tuple[str, str, list[dict[str, Any]]]] = [
    ("Overview", "stat", OVERVIEW),
    ("Calls", "timeseries", CALLS),
    ("Pool", "timeseries", POOL),
    ("Streams", "timeseries", STREAMS),
    ("Dedicated threads", "timeseries", THREADS),
]
"""(row title, panel type, panels): the dashboard from top to bottom."""


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


def thresholds(spec: dict[str, Any]) -> dict[str, Any]:
    """Return green below the panel's alert level (if it has one), red from it."""
    steps: list[dict[str, Any]] = [{"color": "green", "value": None}]
    if "threshold" in spec:
        steps.append({"color": "red", "value": spec["threshold"]})
    return {"mode": "absolute", "steps": steps}


def targets(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """Return the panel's queries."""
    return [
        {
            "refId": chr(ord("A") + index),
            "datasource": DATASOURCE,
            "expr": expr,
            "legendFormat": legend,
            "range": True,
        }
        for index, (expr, legend) in enumerate(spec["targets"])
    ]


def row(number: int, title: str, y: int) -> dict[str, Any]:
    """Return an (expanded) row header at height ``y``."""
    return {
        "id": number,
        "type": "row",
        "title": title,
        "collapsed": False,
        "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
        "panels": [],
    }


def stat(number: int, spec: dict[str, Any], x: int, y: int) -> dict[str, Any]:
    """Return a stat panel, 4 columns wide, coloured by its alert level."""
    return {
        "id": number,
        "type": "stat",
        "title": spec["title"],
        "description": spec["description"],
        "datasource": DATASOURCE,
        "gridPos": {"h": 4, "w": 4, "x": x, "y": y},
        "fieldConfig": {
            "defaults": {"unit": spec["unit"], "thresholds": thresholds(spec)},
            "overrides": [],
        },
        "options": {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "value",
            "graphMode": "area",
            "textMode": "value",
        },
        "targets": targets(spec),
    }


def timeseries(number: int, spec: dict[str, Any], x: int, y: int) -> dict[str, Any]:
    """Return a time series panel, half the width; its alert level drawn as a line."""
    line = "line" if "threshold" in spec else "off"
    return {
        "id": number,
        "type": "timeseries",
        "title": spec["title"],
        "description": spec["description"],
        "datasource": DATASOURCE,
        "gridPos": {"h": 8, "w": 12, "x": x, "y": y},
        "fieldConfig": {
            "defaults": {
                "unit": spec["unit"],
                "min": 0,
                "thresholds": thresholds(spec),
                "custom": {
                    "lineWidth": 1,
                    "fillOpacity": 10,
                    "thresholdsStyle": {"mode": line},
                },
            },
            "overrides": [],
        },
        "options": {
            "legend": {"displayMode": "table", "placement": "right", "showLegend": True},
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
        "targets": targets(spec),
    }


def panels() -> list[dict[str, Any]]:
    """Return every row and its panels, laid out top to bottom."""
    laid_out: list[dict[str, Any]] = []
    y = 0
    for title, kind, specs in ROWS:
        laid_out.append(row(len(laid_out) + 1, title, y))
        y += 1
        width, height = (4, 4) if kind == "stat" else (12, 8)
        per_line = 24 // width
        for index, spec in enumerate(specs):
            x = (index % per_line) * width
            place_y = y + (index // per_line) * height
            make = stat if kind == "stat" else timeseries
            laid_out.append(make(len(laid_out) + 1, spec, x, place_y))
        y += ((len(specs) + per_line - 1) // per_line) * height
    return laid_out


def dashboard() -> dict[str, Any]:
    """Return the whole dashboard document."""
    return {
        # Grafana's import dialog asks for these; provisioning falls back to
        # the default Prometheus data source.
        "__inputs": [
            {
                "name": "DS_PROMETHEUS",
                "label": "Prometheus",
                "description": "The Prometheus that scrapes the services using aiothreads",
                "type": "datasource",
                "pluginId": "prometheus",
                "pluginName": "Prometheus",
            }
        ],
        "__requires": [
            {"type": "grafana", "id": "grafana", "name": "Grafana", "version": "10.0.0"},
            {"type": "datasource", "id": "prometheus", "name": "Prometheus", "version": "1.0.0"},
            {"type": "panel", "id": "timeseries", "name": "Time series", "version": ""},
            {"type": "panel", "id": "stat", "name": "Stat", "version": ""},
        ],
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
                    "current": {
                        "selected": False,
                        "text": "Prometheus",
                        "value": "${DS_PROMETHEUS}",
                    },
                    "hide": 0,
                },
                variable("job", "job", "label_values(aiothreads_calls_started_total, job)"),
                variable(
                    "instance",
                    "instance",
                    'label_values(aiothreads_calls_started_total{job=~"$job"}, instance)',
                ),
                variable(
                    "kind",
                    "kind",
                    'label_values(aiothreads_calls_started_total{job=~"$job", '
                    'instance=~"$instance"}, kind)',
                ),
                variable(
                    "function",
                    "function",
                    "label_values(aiothreads_calls_started_total"
                    '{job=~"$job", instance=~"$instance", kind=~"$kind"}, function)',
                ),
                variable(
                    "pool",
                    "pool",
                    "label_values(aiothreads_pool_refused_total"
                    '{job=~"$job", instance=~"$instance"}, pool)',
                ),
            ]
        },
        "panels": panels(),
    }


def render() -> str:
    """Return the dashboard as the JSON text stored in the repository."""
    return json.dumps(dashboard(), indent=2) + "\n"


if __name__ == "__main__":
    for path in (DASHBOARD, SHIPPED):
        path.write_text(render())
        print(f"wrote {path}")
