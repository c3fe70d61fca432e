"""Start the demo service and a Prometheus server scraping it, both on 127.0.0.1.

Used by ``grafana/preview.py`` and the end-to-end test. Needs Debian's
``prometheus`` package. Everything lives in a temporary folder that is removed,
with both processes stopped, when the context manager exits.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
JOB = "aiothreads-demo"


@dataclass
class LocalStack:
    """The running processes and where to reach them."""

    demo: subprocess.Popen[bytes]
    prometheus: subprocess.Popen[bytes]
    demo_url: str
    prometheus_url: str
    folder: Path
    demo_exit_code: int | None = None
    final_output: str = ""

    def demo_output(self) -> str:
        """Return what the demo printed so far."""
        return (self.folder / "demo.log").read_text(errors="replace")


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nobody listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def stop(process: subprocess.Popen[bytes], how: int = signal.SIGTERM) -> int | None:
    """Ask ``process`` to stop with ``how``; kill it if it does not within 15 s."""
    if process.poll() is None:
        process.send_signal(how)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
    return process.returncode


@contextlib.contextmanager
def local_stack(*demo_arguments: str, rules: Path | None = None) -> Iterator[LocalStack]:
    """Run ``python -m aiothreads.demo *demo_arguments`` and Prometheus (1 s scrapes).

    Raises:
        FileNotFoundError: the ``prometheus`` server is not installed.
    """
    server = shutil.which("prometheus")
    if server is None:
        raise FileNotFoundError("the prometheus server is missing: apt-get install prometheus")
    folder = Path(tempfile.mkdtemp(prefix="aiothreads-stack-"))
    demo_port, prometheus_port = free_port(), free_port()
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(rules)] if rules is not None else [],
        "scrape_configs": [
            {"job_name": JOB, "static_configs": [{"targets": [f"127.0.0.1:{demo_port}"]}]}
        ],
    }
    (folder / "prometheus.yml").write_text(json.dumps(config))
    with (
        (folder / "demo.log").open("wb") as demo_log,
        (folder / "prometheus.log").open("wb") as prometheus_log,
    ):
        demo = subprocess.Popen(
            [sys.executable, "-m", "aiothreads.demo", "--port", str(demo_port), *demo_arguments],
            stdout=demo_log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        prometheus = subprocess.Popen(
            [
                server,
                f"--config.file={folder / 'prometheus.yml'}",
                f"--storage.tsdb.path={folder / 'data'}",
                f"--web.listen-address=127.0.0.1:{prometheus_port}",
                "--log.level=warn",
            ],
            stdout=prometheus_log,
            stderr=subprocess.STDOUT,
        )
        stack = LocalStack(
            demo,
            prometheus,
            f"http://127.0.0.1:{demo_port}",
            f"http://127.0.0.1:{prometheus_port}",
            folder,
        )
        try:
            yield stack
        finally:
            stack.demo_exit_code = stop(demo, signal.SIGINT)
            stop(prometheus)
            stack.final_output = stack.demo_output()
            shutil.rmtree(folder, ignore_errors=True)
