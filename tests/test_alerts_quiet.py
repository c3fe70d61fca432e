"""In normal mode the demo trips no alert: the rules do not cry wolf.

Starts ``python -m aiothreads.demo`` (normal mode) and a Prometheus server on
127.0.0.1 with the rules loaded, lets 75 seconds of data build up, and asks
Prometheus whether any rule's condition was true at any moment of the last 45.
To judge the short run strictly, rates and averages look at 30 seconds instead
of the rules' five or ten minutes, which makes them jumpier, never calmer.
"""

from __future__ import annotations

import re
import shutil
import sys
import time
import urllib.parse

import pytest

from tests.test_end_to_end import ALERT_RULES, GRAFANA, Stack, get, wait_until

sys.path.insert(0, str(GRAFANA))
from local_stack import JOB, local_stack  # lives beside the dashboard it serves

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(420)]

RUN = 75
"""Seconds of demo time the rules are judged on."""
WINDOW = 30
"""Seconds every rate and average looks at here."""


def shortened(expression: str) -> str:
    return re.sub(r"\[(5|10)m\]", f"[{WINDOW}s]", expression)


def test_no_rule_is_ever_true_while_the_demo_runs_normally() -> None:
    if shutil.which("prometheus") is None:
        pytest.fail("the prometheus server is missing: .ci/run installs Debian's package")
    with local_stack("--duration", str(RUN + 60), rules=GRAFANA / "alerts.yml") as running:
        stack = Stack(running.demo_url, running.prometheus_url)
        deadline = time.monotonic() + RUN + 120
        wait_until(lambda: get(f"{stack.prometheus_url}/-/ready"), "Prometheus", deadline)
        wait_until(
            lambda: stack.query(f'count_over_time(up{{job="{JOB}"}}[{RUN}s]) >= {RUN - 5}'),
            f"{RUN} seconds of scrapes",
            deadline,
        )
        ever_true = {
            alert: stack.query(f"count_over_time(({shortened(expression)})[{RUN - WINDOW}s:5s])")
            for alert, expression in ALERT_RULES
        }
        traffic = stack.query(
            f'sum(rate(aiothreads_calls_started_total{{job="{JOB}"}}[{WINDOW}s]))'
        )
    assert float(traffic[0]["value"][1]) > 10  # the demo did work
    assert ever_true == {alert: [] for alert, _ in ALERT_RULES}, urllib.parse.unquote(
        str(ever_true)
    )
