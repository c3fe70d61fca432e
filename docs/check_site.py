"""Open the built site in headless Chromium and check the main pages render.

Usage: ``python docs/check_site.py site`` after ``mkdocs build``. Serves the
folder on 127.0.0.1, loads each main page with Chromium's ``--dump-dom`` (the
DOM after scripts ran) and checks its title, navigation and content. Exits
non-zero, naming the page, on the first failure.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

PAGES = {
    "": "Why aiothreads",
    "getting-started/": "Getting started",
    "generators/": "Generators, backpressure and cleanup",
    "semantics/": "Cancellation and shutdown semantics",
    "observability/": "Observability",
    "performance/": "Performance",
    "reference/": "API reference",
}
NAVIGATION = ["Choosing a decorator", "Calling async code from threads", "Migrating", "Changelog"]
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--virtual-time-budget=3000",
    "--dump-dom",
]


def browser() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    sys.exit("no Chromium found: apt-get install chromium")


def dump(url: str, profile: str) -> str:
    completed = subprocess.run(
        [browser(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", url],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if completed.returncode != 0:
        sys.exit(f"chromium failed on {url}: {completed.stderr[-2000:]}")
    return completed.stdout


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        """Keep the request log out of the report."""


def check(site: Path) -> None:
    handler = functools.partial(_QuietHandler, directory=str(site))
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        port = server.server_address[1]
        serving = threading.Thread(target=server.serve_forever, daemon=True)
        serving.start()
        try:
            with tempfile.TemporaryDirectory(prefix="aiothreads-chromium-") as profile:
                for path, heading in PAGES.items():
                    dom = dump(f"http://127.0.0.1:{port}/{path}", profile)
                    problems = [
                        what
                        for what, ok in (
                            ("title", "<title>" in dom and "aiothreads" in dom),
                            (f"heading {heading!r}", heading in dom),
                            ("navigation", 'class="md-nav' in dom),
                            *((f"nav link {name!r}", name in dom) for name in NAVIGATION),
                        )
                        if not ok
                    ]
                    if problems:
                        sys.exit(f"/{path}: missing {', '.join(problems)}")
                    print(f"ok /{path}")
        finally:
            server.shutdown()
            with contextlib.suppress(RuntimeError):
                serving.join(5)


if __name__ == "__main__":
    check(Path(sys.argv[1] if len(sys.argv) > 1 else "site"))
