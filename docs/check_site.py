"""Open the built site in headless Chromium and check the pages render.

Usage: ``python docs/check_site.py site`` after ``mkdocs build``. Serves the
folder on 127.0.0.1, loads every page with Chromium's ``--dump-dom`` (the DOM
after scripts ran) and checks its title, navigation and content, that no raw
reStructuredText role (``:class:`...```) shows, and that every image loads; on
the reference page, that every public name has its rendered entry. Exits
non-zero, naming the page, on the first failure.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import urllib.parse
import urllib.request
from pathlib import Path

import aiothreads
import aiothreads.instrumentation

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
MORE_PAGES = [
    "choosing/",
    "async-from-threads/",
    "limits-and-cancellation/",
    "migrating/",
    "free-threading/",
    "contributing/",
    "changelog/",
]
RAW_ROLE = re.compile(r":(class|meth|func|data|mod|attr|exc|obj):`")
IMAGE = re.compile(r'<img[^>]*\ssrc="([^"]+)"')
RENDERED_AS = {"threaded_iterable": "aiothreads._iterable.threaded_iterable"}
"""Public names documented under another path (the 1.x module of the same name)."""


def reference_entries() -> list[str]:
    """Return the element ids the reference page must have: one per public name."""
    names = [RENDERED_AS.get(name, f"aiothreads.{name}") for name in aiothreads.__all__]
    names += [f"aiothreads.instrumentation.{name}" for name in aiothreads.instrumentation.__all__]
    return names


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


def loads(page: str, source: str) -> bool:
    """Whether the image ``source`` on ``page`` is served, and is not empty."""
    url = urllib.parse.urljoin(page, source)
    if not url.startswith("http://127.0.0.1"):
        return True  # the site is checked offline: outside images are not ours to load
    with urllib.request.urlopen(url, timeout=10) as reply:
        return bool(reply.status == 200 and reply.read())


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
                base = f"http://127.0.0.1:{port}/"
                for path in [*PAGES, *MORE_PAGES]:
                    dom = dump(base + path, profile)
                    problems = [
                        what
                        for what, ok in (
                            ("title", "<title>" in dom and "aiothreads" in dom),
                            (f"heading {PAGES.get(path)!r}", PAGES.get(path, "") in dom),
                            ("navigation", 'class="md-nav' in dom),
                            *((f"nav link {name!r}", name in dom) for name in NAVIGATION),
                            ("no raw roles", not RAW_ROLE.search(dom)),
                            *(
                                (f"image {source}", loads(base + path, source))
                                for source in IMAGE.findall(dom)
                            ),
                        )
                        if not ok
                    ]
                    if path == "reference/":
                        problems += [
                            f"entry {name}"
                            for name in reference_entries()
                            if f'id="{name}"' not in dom
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
