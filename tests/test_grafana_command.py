"""The dashboard and alert rules shipped in the package, and the command that prints them."""

from __future__ import annotations

from pathlib import Path

import pytest

from aiothreads.grafana import FILES, read
from aiothreads.grafana.__main__ import main

GRAFANA = Path(__file__).resolve().parents[1] / "grafana"
SYNC_COMMANDS = {
    "dashboard": "python grafana/build_dashboard.py",
    "alerts": "cp grafana/alerts.yml aiothreads/grafana/alerts.yml",
}


@pytest.mark.parametrize("name", sorted(FILES))
def test_the_shipped_dashboard_and_alert_rules_are_the_ones_in_grafana(name: str) -> None:
    expected = (GRAFANA / FILES[name]).read_bytes()
    assert read(name) == expected, f"the package's copy is stale: {SYNC_COMMANDS[name]}"


def test_only_the_dashboard_and_the_alerts_are_shipped() -> None:
    assert FILES == {"dashboard": "aiothreads.json", "alerts": "alerts.yml"}
    with pytest.raises(KeyError):
        read("aiothreads.json")


@pytest.mark.parametrize("name", sorted(FILES))
def test_the_command_prints_the_file_it_is_named(
    name: str, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    assert main([name]) == 0
    printed = capsysbinary.readouterr()
    assert (printed.out, printed.err) == ((GRAFANA / FILES[name]).read_bytes(), b"")


def test_the_command_without_a_name_says_which_there_are(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as stopped:
        main([])
    assert stopped.value.code == 2
    error = capsys.readouterr().err
    assert error.startswith("usage: python -m aiothreads.grafana [-h] {alerts,dashboard}")


def test_the_commands_help_says_what_each_file_is_for(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(["--help"])
    assert stopped.value.code == 0
    shown = " ".join(capsys.readouterr().out.split())
    assert "Print the Grafana dashboard (JSON, to import into Grafana)" in shown
    assert "the Prometheus alerting rules (YAML, for rule_files)" in shown
    assert "which file to print" in shown
    assert "example: python -m aiothreads.grafana dashboard > aiothreads.json" in shown
