"""Open the built site in headless Chromium and check the pages render.

Usage: ``python docs/check_site.py site`` after ``mkdocs build``. Serves the
folder on 127.0.0.1, loads every page with Chromium's ``--dump-dom`` (the DOM
after scripts ran) and checks its title, navigation and content, that no raw
reStructuredText role (``:class:`...```) shows, and that every image loads; on
the reference page, that every public name has its rendered entry.

Every page of the navigation is then loaded again in windows 1280 and 390
pixels wide, with a script the server adds to the page, which measures it once
laid out: nothing of the content may reach past the window (the page would
scroll sideways), unless it sits in a box that scrolls by itself (a code
block; a table, in the box the theme wraps it in, which must fit).

Exits non-zero, naming the page, on the first failure.
"""

from __future__ import annotations

import contextlib
import functools
import html
import http.server
import json
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
WIDTHS = (1280, 390)
"""Window widths every page must fit: a laptop's, and a phone's."""
MEASURED = "?measure-width"
"""Asked with this query, the server adds ``MEASURE`` to a page."""
FRAMED = "/framed-at-width/"
"""``FRAMED + "<width>/<page>"``: a page that shows ``<page>``, measured, in a frame that wide.

Headless Chromium opens no window narrower than 500 pixels; a frame can be as
narrow as a phone, and the page in it lays itself out for the frame's width.
"""
FRAME = """<!doctype html>
<html><body style="margin: 0">
<iframe src="{page}{measured}" width="{width}" height="900" style="border: 0"></iframe>
</body></html>
"""
MEASURE = """
<script>
window.addEventListener("load", () => {
  const width = document.documentElement.clientWidth;
  const scrolls = (element) => ["auto", "scroll"].includes(getComputedStyle(element).overflowX);
  const fits = (element) => element.getBoundingClientRect().right <= width + 1;
  const scrollsInside = (element) => {
    for (let box = element.parentElement; box; box = box.parentElement) {
      if (scrolls(box) && fits(box)) return true;
    }
    return false;
  };
  const describe = (element) => {
    const text = (element.textContent || "").trim().slice(0, 60);
    return `${element.tagName.toLowerCase()}.${element.className || "-"} "${text}"`;
  };
  const offenders = [];
  for (const element of document.querySelectorAll(".md-content *")) {
    const box = element.getBoundingClientRect();
    if (box.width === 0 || fits(element) || scrollsInside(element)) continue;
    if (offenders.length < 5) offenders.push(`${describe(element)} ends at ${box.right}px`);
  }
  const tables = [];
  for (const table of document.querySelectorAll(".md-content table")) {
    if (!scrollsInside(table)) tables.push(describe(table));
  }
  const report = window.parent.document.createElement("pre");
  report.id = "width-report";
  report.textContent = JSON.stringify({
    width,
    page: document.documentElement.scrollWidth,
    offenders,
    tables,
  });
  window.parent.document.body.appendChild(report);
});
</script>
"""
WIDTH_REPORT = re.compile(r'<pre id="width-report">(.*?)</pre>', re.S)
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


def navigation(site: Path) -> list[str]:
    """Return the path of every page in the site's navigation (``mkdocs.yml``), as served."""
    config = (site.parent / "mkdocs.yml").read_text()
    listed = re.split(r"\n(?=\S)", config.split("\nnav:\n", 1)[1], maxsplit=1)[0]
    pages = re.findall(r"^\s+- [^:]+: (\S+)\.md$", listed, re.M)
    return ["" if page == "index" else f"{page}/" for page in pages]


def dump(url: str, profile: str, width: int = 1280) -> str:
    completed = subprocess.run(
        [
            browser(),
            *CHROMIUM_FLAGS,
            f"--window-size={width},900",
            f"--user-data-dir={profile}",
            url,
        ],
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

    def do_GET(self) -> None:
        """Serve the file; with ``MEASURED``, the page with ``MEASURE`` added.

        A path under ``FRAMED`` gets the page that frames another, measured.
        """
        path, _, query = self.path.partition("?")
        if path.startswith(FRAMED):
            width, _, page = path.removeprefix(FRAMED).partition("/")
            body = FRAME.format(page=f"/{page}", measured=MEASURED, width=int(width)).encode()
        elif f"?{query}" == MEASURED:
            page_file = Path(self.translate_path(path))
            if page_file.is_dir():
                page_file /= "index.html"
            body = page_file.read_bytes().replace(b"</body>", MEASURE.encode() + b"</body>", 1)
        else:
            super().do_GET()
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def width_problems(dom: str) -> list[str]:
    """Return what ``MEASURE`` found reaching past the window, from a page's DOM."""
    found = WIDTH_REPORT.search(dom)
    if found is None:
        return ["no width report (the measuring script did not run)"]
    report = json.loads(html.unescape(found[1]))
    problems = [f"{what} reaches past the window" for what in report["offenders"]]
    problems += [
        f"{table} is in no box that scrolls inside the window" for table in report["tables"]
    ]
    if report["page"] > report["width"]:
        problems.append(f"the page is {report['page']}px wide in a {report['width']}px window")
    return problems


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
                for path in navigation(site):
                    for width in WIDTHS:
                        framed = f"{base}{FRAMED.strip('/')}/{width}/{path}"
                        problems = width_problems(dump(framed, profile))
                        if problems:
                            sys.exit(f"/{path} at {width}px: {'; '.join(problems)}")
                    print(f"fits {' and '.join(map(str, WIDTHS))} px: /{path}")
        finally:
            server.shutdown()
            with contextlib.suppress(RuntimeError):
                serving.join(5)


if __name__ == "__main__":
    check(Path(sys.argv[1] if len(sys.argv) > 1 else "site"))
