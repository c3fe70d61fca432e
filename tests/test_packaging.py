"""What ``pip install aiothreads`` gets: the wheel and the sdist, the license, the dashboard."""

from __future__ import annotations

import email
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from aiothreads import __version__
from aiothreads.grafana import FILES

ROOT = Path(__file__).resolve().parents[1]
GRAFANA = ROOT / "grafana"
DIST_INFO = f"aiothreads-{__version__}.dist-info"
SDIST_ROOT = f"aiothreads-{__version__}"
DEVELOPMENT_ONLY = {"test", "test-core", "docs", "bench", "lint"}
"""Dependency groups, never extras a user could install."""


@pytest.mark.parametrize("name", sorted(FILES))
def test_python_m_aiothreads_grafana_prints_the_file(name: str) -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "aiothreads.grafana", name],
        capture_output=True,
        check=False,
        timeout=60,
    )
    assert (completed.returncode, completed.stderr) == (0, b"")
    assert completed.stdout == (GRAFANA / FILES[name]).read_bytes()


def test_python_m_aiothreads_grafana_into_a_pipe_nobody_reads_is_quiet() -> None:
    reader, writer = os.pipe()
    os.close(reader)  # the reader left before anything was written, as `| head -0` does
    try:
        completed = subprocess.run(
            [sys.executable, "-m", "aiothreads.grafana", "dashboard"],
            stdout=writer,
            stderr=subprocess.PIPE,
            check=False,
            timeout=60,
        )
    finally:
        os.close(writer)
    assert (completed.returncode, completed.stderr) == (0, b"")


def test_python_m_aiothreads_grafana_without_a_name_says_which_there_are() -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "aiothreads.grafana"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert completed.returncode == 2
    assert "{alerts,dashboard}" in completed.stderr


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The sdist and the wheel built from it, as a release builds them (offline)."""
    pytest.importorskip("build", reason="building needs the test dependency group")
    pytest.importorskip("hatchling", reason="building needs the test dependency group")
    out = tmp_path_factory.mktemp("dist")
    completed = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(ROOT)],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    (sdist,) = out.glob("*.tar.gz")
    (wheel,) = out.glob("*.whl")
    return sdist, wheel


def wheel_metadata(wheel: Path) -> email.message.Message:
    with zipfile.ZipFile(wheel) as archive:
        return email.message_from_bytes(archive.read(f"{DIST_INFO}/METADATA"))


def test_the_wheel_holds_the_package_its_license_and_nothing_else(built: tuple[Path, Path]) -> None:
    _, wheel = built
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        license_text = archive.read(f"{DIST_INFO}/licenses/LICENSE")
    assert {name.split("/")[0] for name in names} == {"aiothreads", DIST_INFO}
    assert "aiothreads/py.typed" in names
    assert license_text == (ROOT / "LICENSE").read_bytes()
    assert not [name for name in names if "/tests/" in name or "/benchmarks/" in name]


def test_the_wheel_ships_the_dashboard_and_alert_rules_of_grafana(
    built: tuple[Path, Path],
) -> None:
    _, wheel = built
    with zipfile.ZipFile(wheel) as archive:
        for name in FILES.values():
            assert archive.read(f"aiothreads/grafana/{name}") == (GRAFANA / name).read_bytes()
        assert "aiothreads/grafana/__main__.py" in archive.namelist()


def test_the_wheels_metadata_names_the_license_and_no_development_extras(
    built: tuple[Path, Path],
) -> None:
    _, wheel = built
    metadata = wheel_metadata(wheel)
    assert metadata["License-Expression"] == "Apache-2.0"
    assert metadata.get_all("License-File") == ["LICENSE"]
    extras = set(metadata.get_all("Provides-Extra") or [])
    assert {"all", "opentelemetry", "prometheus", "structlog"} <= extras
    assert not extras & DEVELOPMENT_ONLY


def test_the_sdist_holds_the_license_the_tests_and_what_they_read(
    built: tuple[Path, Path],
) -> None:
    sdist, _ = built
    with tarfile.open(sdist) as archive:
        names = {name.removeprefix(f"{SDIST_ROOT}/") for name in archive.getnames()}
    assert {
        "LICENSE",
        "PKG-INFO",
        "pyproject.toml",
        "README.md",
        "aiothreads/py.typed",
        "aiothreads/grafana/aiothreads.json",
        "aiothreads/grafana/alerts.yml",
        "tests/conftest.py",
        "grafana/aiothreads.json",
        "grafana/alerts.yml",
        "grafana/local_stack.py",
    } <= names


def test_twine_finds_nothing_to_fix_in_either(built: tuple[Path, Path]) -> None:
    pytest.importorskip("twine", reason="twine is in the test dependency group")
    completed = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", *map(str, built)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr


def test_the_sdists_tests_collect_and_those_of_its_files_pass(
    built: tuple[Path, Path], tmp_path: Path
) -> None:
    sdist, _ = built
    with tarfile.open(sdist) as archive:
        if hasattr(tarfile, "data_filter"):
            archive.extractall(tmp_path, filter="data")
        else:  # Pythons older than 3.11.4: our own archive, built above
            archive.extractall(tmp_path)
    source = tmp_path / SDIST_ROOT
    pytest_in_sdist = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q"]
    collected = subprocess.run(
        [*pytest_in_sdist, "--collect-only"],
        cwd=source,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert collected.returncode == 0, collected.stdout[-3000:] + collected.stderr
    ran = subprocess.run(
        [
            *pytest_in_sdist,
            "tests/test_grafana_command.py",
            "tests/test_structure.py",
            "-W",
            "error",
        ],
        cwd=source,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr
    imported = subprocess.run(
        [sys.executable, "-c", "import aiothreads; print(aiothreads.__file__)"],
        cwd=source,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert imported.stdout.startswith(f"{source}/"), "the sdist's tests test its own package"
