"""The Grafana dashboard and Prometheus alert rules for aiothreads' metrics, as installed.

``python -m aiothreads.grafana dashboard > aiothreads.json`` writes the
dashboard, to import into Grafana (Dashboards → New → Import);
``python -m aiothreads.grafana alerts > aiothreads-alerts.yml`` writes the
alerting rules, for Prometheus's ``rule_files``. They are byte for byte the
``grafana/aiothreads.json`` and ``grafana/alerts.yml`` of the source
repository, where the provisioning files and the rules' tests live too; the
observability guide describes every panel and rule.
"""

from __future__ import annotations

from importlib.resources import files
from typing import Final

__all__ = ["FILES", "read"]

FILES: Final = {"dashboard": "aiothreads.json", "alerts": "alerts.yml"}
"""The files shipped here, by the name ``python -m aiothreads.grafana`` takes."""


def read(name: str) -> bytes:
    """Return a shipped file, exactly as it is in the repository's ``grafana/``.

    Args:
        name: ``"dashboard"`` (the Grafana dashboard, JSON) or ``"alerts"``
            (the Prometheus alerting rules, YAML).

    Raises:
        KeyError: ``name`` is neither of those.
    """
    return files(__name__).joinpath(FILES[name]).read_bytes()
