"""The demo, a real Prometheus, the dashboard's queries and the alert rules, end to end.

Starts ``python -m aiothreads.demo --overload`` and a Prometheus server on
127.0.0.1 scraping it every second, then evaluates every panel query of
``grafana/aiothreads.json`` (variables substituted) and every alert expression
of ``grafana/alerts.yml`` through Prometheus' HTTP API and asserts each returns
series. Also runs ``promtool`` on the exposition and the rules, and validates
the dashboard. Both processes are stopped and the temporary folder removed.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
GRAFANA = ROOT / "grafana"
sys.path.insert(0, str(GRAFANA))
from local_stack import JOB, local_stack  # noqa: E402 - lives beside the dashboard it serves

DEADLINE = 120.0
SUBSTITUTIONS = {
    "$__rate_interval": "15s",
    "$job": JOB,
    "$instance": ".*",
    "$kind": ".*",
    "$function": ".*",
    "$pool": ".*",
}

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

yaml = pytest.importorskip("yaml")
jsonschema = pytest.importorskip("jsonschema")


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:
        body: bytes = response.read()
        return body


def wait_until(
    check: Callable[[], Any],
    what: str,
    deadline: float,
    explain: Callable[[], object] | None = None,
) -> Any:
    """Ask an outside process until ``check()`` is truthy; it cannot notify us."""
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
        except (OSError, ValueError, KeyError) as exc:
            last_error = exc
            result = None
        if result:
            return result
        time.sleep(0.5)
    details = f"; now: {explain()}" if explain is not None else ""
    pytest.fail(f"gave up waiting for {what}: {last_error}{details}")


@dataclass
class Stack:
    demo_url: str
    prometheus_url: str

    def query(self, expression: str) -> list[dict[str, Any]]:
        url = f"{self.prometheus_url}/api/v1/query?" + urllib.parse.urlencode({"query": expression})
        answer = json.loads(get(url))
        if answer["status"] != "success":
            raise ValueError(answer)
        result: list[dict[str, Any]] = answer["data"]["result"]
        return result


SHORT_FOR = "5s"
"""The rules' ``for:`` in this test, so that firing is seen in seconds, not 15 minutes."""


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    if shutil.which("prometheus") is None:
        pytest.fail("the prometheus server is missing: .ci/run installs Debian's package")
    rules = tmp_path_factory.mktemp("rules") / "alerts.yml"
    shipped = (GRAFANA / "alerts.yml").read_text()
    rules.write_text(re.sub(r"for: \d+m", f"for: {SHORT_FOR}", shipped))
    with local_stack("--overload", "--duration", "300", rules=rules) as running:
        stack = Stack(running.demo_url, running.prometheus_url)
        deadline = time.monotonic() + DEADLINE
        wait_until(lambda: get(f"{stack.prometheus_url}/-/ready"), "Prometheus", deadline)
        wait_until(lambda: stack.query(f'up{{job="{JOB}"}} == 1'), "the first scrape", deadline)
        yield stack
    assert running.demo_exit_code == 0, running.final_output
    assert "Traceback" not in running.final_output, running.final_output
    assert not running.folder.exists()


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((GRAFANA / "aiothreads.json").read_text())
    return loaded


def panel_queries() -> list[tuple[str, str]]:
    return [
        (f"{panel['title']} / {target['refId']}", target["expr"])
        for panel in dashboard()["panels"]
        for target in panel.get("targets", [])  # rows have none
    ]


def alert_rules() -> list[tuple[str, str]]:
    rules = yaml.safe_load((GRAFANA / "alerts.yml").read_text())
    return [(rule["alert"], rule["expr"]) for group in rules["groups"] for rule in group["rules"]]


def substitute(expression: str) -> str:
    for variable, value in SUBSTITUTIONS.items():
        expression = expression.replace(variable, value)
    assert "$" not in expression, expression
    return expression


PANEL_QUERIES = panel_queries()
ALERT_RULES = alert_rules()


@pytest.mark.parametrize(("name", "expression"), PANEL_QUERIES, ids=[n for n, _ in PANEL_QUERIES])
def test_every_panel_query_returns_numbers(stack: Stack, name: str, expression: str) -> None:
    query = substitute(expression)

    def numbers() -> list[float]:
        values = [float(entry["value"][1]) for entry in stack.query(query)]
        return [value for value in values if not math.isnan(value)]

    assert wait_until(numbers, f"numbers for {name}: {query}", time.monotonic() + DEADLINE)


def test_the_error_ratio_is_a_number_for_every_function_with_calls(stack: Stack) -> None:
    (expression,) = [
        expression for name, expression in PANEL_QUERIES if name.startswith("Error ratio by")
    ]
    finished = f'sum by (function) (rate(aiothreads_calls_finished_total{{job="{JOB}"}}[15s])) > 0'

    def ratios() -> dict[str, float] | None:
        busy = {entry["metric"]["function"] for entry in stack.query(finished)}
        found = {
            entry["metric"]["function"]: float(entry["value"][1])
            for entry in stack.query(substitute(expression))
        }
        if not busy or busy - set(found):
            return None
        return found

    found = wait_until(ratios, "an error ratio for every function", time.monotonic() + DEADLINE)
    assert not [function for function, ratio in found.items() if math.isnan(ratio)]
    assert found["aiothreads.demo.render_invoice"] == 0.0  # healthy: 0%, not "no data"


def test_template_variables_find_values(stack: Stack) -> None:
    series = wait_until(
        lambda: stack.query(f'aiothreads_calls_started_total{{job="{JOB}"}}'),
        "series with a function label",
        time.monotonic() + DEADLINE,
    )
    functions = {entry["metric"]["function"] for entry in series}
    assert "aiothreads.demo.load_customer" in functions
    assert {entry["metric"]["instance"] for entry in series}
    kinds = {entry["metric"]["kind"] for entry in series}
    assert kinds == {"threaded", "separate", "iterable", "iterable_separate", "sync_await"}


HANDED_OVER = {"AiothreadsPoolSaturated": "AiothreadsPoolFull"}
"""Rules that leave instances whose pools report their maximum (the demo's) to another rule."""


@pytest.mark.parametrize(("alert", "expression"), ALERT_RULES, ids=[a for a, _ in ALERT_RULES])
def test_every_alert_fires_under_overload(stack: Stack, alert: str, expression: str) -> None:
    if alert in HANDED_OVER:  # its own condition holds, and the other rule fires instead
        own, _, _ = expression.partition("unless")
        assert wait_until(
            lambda: stack.query(own), f"{alert}'s condition", time.monotonic() + DEADLINE
        )
        alert = HANDED_OVER[alert]
        (expression,) = [found for name, found in ALERT_RULES if name == alert]
    condition = expression.rsplit(">", 1)[0]  # the measured value, for the failure message
    firing = f'ALERTS{{alertname="{alert}", alertstate="firing"}}'
    result = wait_until(
        lambda: stack.query(firing),
        f"{alert} to be firing (its for: shortened to {SHORT_FOR})",
        time.monotonic() + DEADLINE,
        explain=lambda: _safe_query(stack, condition),
    )
    assert result


def test_the_debug_endpoint_shows_the_hanging_call_and_where_it_waits(stack: Stack) -> None:
    def hanging_exports() -> list[dict[str, Any]]:
        document = json.loads(get(f"{stack.demo_url}/debug/threads"))
        assert isinstance(document["taken_at"], float)
        return [
            work
            for work in document["running"]
            if work["function"] == "aiothreads.demo.export_report"
        ]

    found = wait_until(
        hanging_exports, "the hanging export in /debug/threads", time.monotonic() + DEADLINE
    )
    (work,) = found
    assert work["kind"] == "separate"
    assert work["running_for"] >= 0
    source = (ROOT / "aiothreads" / "demo" / "__init__.py").read_text().splitlines()
    line = 1 + next(i for i, text in enumerate(source) if "return stop.wait(hang_for)" in text)
    assert any(
        frame.endswith(f"demo/__init__.py:{line} in export_report") for frame in work["stack"]
    )
    text = get(f"{stack.demo_url}/debug/threads").decode()
    assert "threading.Event object" not in text  # arguments never leave


def _safe_query(stack: Stack, expression: str) -> object:
    try:
        return [entry["value"] for entry in stack.query(expression)]
    except (OSError, ValueError, KeyError) as exc:
        return exc


def test_promtool_accepts_the_demo_exposition(stack: Stack) -> None:
    exposition = get(f"{stack.demo_url}/metrics")
    checked = subprocess.run(
        ["promtool", "check", "metrics"],
        input=exposition,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.strip() == b""


def promtool(*arguments: str) -> str:
    """Run ``promtool *arguments``; return its output, failing the test if it fails."""
    completed = subprocess.run(
        ["promtool", *arguments], capture_output=True, text=True, timeout=60, check=False
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    return completed.stdout


def test_promtool_accepts_the_rules() -> None:
    assert "SUCCESS: 7 rules found" in promtool("check", "rules", str(GRAFANA / "alerts.yml"))


def test_every_rule_is_quiet_below_its_threshold_and_fires_after_its_for() -> None:
    promtool("test", "rules", str(GRAFANA / "alerts_test.yml"))
    tests = yaml.safe_load((GRAFANA / "alerts_test.yml").read_text())["tests"]
    covered = {case["alertname"] for test in tests for case in test["alert_rule_test"]}
    assert covered == {alert for alert, _ in ALERT_RULES}


def test_dashboard_matches_the_schema_and_its_generator() -> None:
    schema = json.loads((ROOT / "tests" / "grafana_dashboard.schema.json").read_text())
    jsonschema.validate(dashboard(), schema)
    import build_dashboard

    assert build_dashboard.render() == (GRAFANA / "aiothreads.json").read_text()


def test_dashboard_has_a_panel_for_every_metric() -> None:
    from aiothreads.instrumentation import METRICS

    expressions = " ".join(expression for _, expression in panel_queries())
    for metric in METRICS:
        assert metric in expressions, f"no panel shows {metric}"


def test_every_panel_a_runbook_names_is_on_the_dashboard() -> None:
    page = (ROOT / "docs" / "observability.md").read_text()
    named = re.findall(r'"([^"]+)"\s+panel', page)
    assert named, "the runbooks name no panel: is the pattern still right?"
    titles = {panel.get("title") for panel in dashboard()["panels"]}
    for title in named:
        assert " ".join(title.split()) in titles, f"no panel is titled {title!r}"


def test_provisioning_points_at_the_dashboard() -> None:
    datasources = yaml.safe_load(
        (GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )
    assert datasources["datasources"][0]["type"] == "prometheus"
    providers = yaml.safe_load(
        (GRAFANA / "provisioning" / "dashboards" / "aiothreads.yml").read_text()
    )
    assert providers["providers"][0]["type"] == "file"


def test_the_import_dialog_asks_for_the_data_source() -> None:
    document = dashboard()
    (wanted,) = document["__inputs"]
    assert wanted["type"] == "datasource"
    assert wanted["pluginId"] == "prometheus"
    variable = document["templating"]["list"][0]
    assert variable["type"] == "datasource"
    assert variable["current"]["value"] == "${" + wanted["name"] + "}"
    kinds = [entry for entry in document["templating"]["list"] if entry["name"] == "kind"]
    assert kinds, "no kind variable"
