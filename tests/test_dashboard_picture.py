"""The dashboard's picture in the docs is drawn from ``grafana/aiothreads.json``."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
GRAFANA = ROOT / "grafana"
sys.path.insert(0, str(GRAFANA))
import draw_dashboard  # noqa: E402 - lives beside the dashboard it draws


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((GRAFANA / "aiothreads.json").read_text())
    return loaded


def test_the_docs_picture_is_the_one_drawn_from_the_dashboard() -> None:
    committed = (ROOT / "docs" / "dashboard.svg").read_text()
    assert draw_dashboard.draw(dashboard()) == committed, (
        "docs/dashboard.svg is out of date: run python grafana/draw_dashboard.py"
    )


def test_the_picture_names_every_row_and_panel_of_the_dashboard() -> None:
    picture = draw_dashboard.draw(dashboard())
    for panel in dashboard()["panels"]:
        assert f"{panel['title']}</text>".replace("&", "&amp;") in picture


def test_a_panel_moved_renamed_or_added_changes_the_picture() -> None:
    original = dashboard()
    picture = draw_dashboard.draw(original)
    renamed, moved, added = (copy.deepcopy(original) for _ in range(3))
    renamed["panels"][1]["title"] = "Calls per minute"
    moved["panels"][1]["gridPos"]["x"] = 2
    added["panels"].append({**original["panels"][-1], "id": 99, "title": "New panel"})
    for changed in (renamed, moved, added):
        assert draw_dashboard.draw(changed) != picture


def test_drawing_twice_gives_the_same_bytes() -> None:
    assert draw_dashboard.draw(dashboard()) == draw_dashboard.draw(dashboard())


def test_the_docs_show_the_drawn_picture() -> None:
    page = (ROOT / "docs" / "observability.md").read_text()
    assert "](dashboard.svg)" in page
    assert not (ROOT / "docs" / "dashboard.png").exists()
