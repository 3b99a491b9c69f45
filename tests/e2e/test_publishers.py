"""Publishers' pages, served from another origin, against one ``binderless serve``:

- thebe (the npm package's published bundle, loaded from tests/js/node_modules) starts a
  kernel through ``/build`` and runs a cell, configured with the block the home page writes;
- Jupyter Book's and MyST's launch links open JupyterLab at the file they name;
- MyST's server detection (``GET <server>/versions``, looking for ``binderhub``) works
  cross-origin;
- the three badge addresses serve an image other pages can show.

The publisher's origin is a second HTTP server on another 127.0.0.1 port, which binderless
is started to allow (``--allow-origin``); it also serves the book's repository over git's
HTTP protocol, since pages of other sites may launch only repositories that are not local
paths. Every request to a host other than this machine is refused and fails the test (thebe
must not need a CDN).
"""

from __future__ import annotations

import functools
import http.server
import json
import re
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote, urlsplit

import httpx
import pytest

from ..conftest import (
    FIXTURE_REPOS,
    LiveServer,
    free_port,
    make_git_repo,
    start_server,
    stop_server,
)
from . import browser as chromium
from .browser import DESKTOP, NODE_MODULES, guard_network, new_context, node_module, screenshot
from .pages import page_errors

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Page, Request

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

browser = chromium.browser

LAUNCH_MS = 180_000
LAB_MS = 60_000
BADGES = ("/badge_logo.svg", "/badge.svg", "/assets/images/badge.svg")


class PublisherHandler(http.server.SimpleHTTPRequestHandler):
    """Serves the publisher's pages, and thebe's bundle under ``/thebe/``."""

    def translate_path(self, path: str) -> str:
        if path.startswith("/thebe/"):
            lib = NODE_MODULES / "thebe" / "lib"
            target = (lib / path.split("?")[0].removeprefix("/thebe/")).resolve()
            return str(target) if target.is_relative_to(lib.resolve()) else str(lib / "missing")
        return super().translate_path(path)

    def log_message(self, format: str, *args: object) -> None:
        pass


class Publisher:
    """An HTTP server on another port: another origin than binderless."""

    def __init__(self, root: Path) -> None:
        self.root = root
        handler = functools.partial(PublisherHandler, directory=str(root))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def page(self, name: str, html: str) -> str:
        (self.root / name).write_text(html)
        return f"{self.base}/{name}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory,
           publisher: Publisher) -> Iterator[LiveServer]:
    live = start_server(tmp_path_factory.mktemp("publishers") / "state",
                        "--allow-origin", publisher.base)
    try:
        yield live
    finally:
        stop_server(live)


@pytest.fixture(scope="module")
def publisher(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Publisher]:
    node_module("thebe/lib/index.js")
    site = Publisher(tmp_path_factory.mktemp("publisher-site"))
    try:
        yield site
    finally:
        site.close()


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The python-requirements fixture (index.ipynb, six) as a git repository on ``main``."""
    return make_git_repo(FIXTURE_REPOS / "python-requirements",
                         tmp_path_factory.mktemp("publisher-repos") / "book")


@pytest.fixture(scope="module")
def remote_repo(publisher: Publisher, repo: Path) -> str:
    """``repo``, cloned bare into the publisher's site and served over git's (dumb) HTTP
    protocol: a repository on another host, as far as binderless can tell."""
    bare = publisher.root / "book.git"
    subprocess.run(["git", "clone", "--quiet", "--bare", str(repo), str(bare)], check=True)
    subprocess.run(["git", "update-server-info"], cwd=bare, check=True)
    return f"{publisher.base}/book.git"


@pytest.fixture
def context(browser: Browser) -> Iterator[tuple[BrowserContext, list[str]]]:
    opened = new_context(browser, DESKTOP)
    refused = guard_network(opened)
    try:
        yield opened, refused
    finally:
        opened.close()


def home_page_thebe_block(page: Page, server: LiveServer, repo_url: str) -> str:
    """The thebe configuration the home page writes for this repository at ``main``."""
    page.goto(server.url("/"))
    page.locator("#provider").select_option("git")
    page.locator("#repo").fill(repo_url)
    page.locator("#ref").fill("main")
    return page.locator("#snippet-thebe").inner_text()


THEBE_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>A page with live code</title>
{config}
<link rel="stylesheet" href="/thebe/thebe.css">
<script src="/thebe/index.js"></script>
</head>
<body>
<h1>A page with live code</h1>
<div class="thebe-activate"></div>
<div class="thebe-status"></div>
<pre data-executable="true" data-language="python">import six
print("answer", 6 * 7, six.__name__)</pre>
</body>
</html>
"""


def test_thebe_runs_a_cell_through_binderless_from_another_origin(
        context: tuple[BrowserContext, list[str]], server: LiveServer, publisher: Publisher,
        remote_repo: str) -> None:
    browser_context, refused = context
    page = browser_context.new_page()
    errors = page_errors(page)
    config = home_page_thebe_block(page, server, remote_repo)
    assert json.loads(config.split("\n", 1)[1].rsplit("\n", 1)[0])["binderOptions"] == {
        "binderUrl": server.base, "repoProvider": "git", "repo": remote_repo, "ref": "main"}

    sessions: list[dict[str, object]] = []
    builds: list[str] = []

    def watch(request: Request) -> None:
        if "/build/" in request.url:
            builds.append(request.url)
        if request.method == "POST" and urlsplit(request.url).path.endswith("/api/sessions"):
            sessions.append(json.loads(request.post_data or "{}"))

    page.on("request", watch)
    page.goto(publisher.page("thebe.html", THEBE_PAGE.format(config=config)))
    assert page.evaluate("window.thebe.version")
    page.get_by_role("button", name="Activate").click()

    # thebe renders the cell with its run button, launches through /build, starts a kernel
    # and attaches it to the page's cells (a run before that is ignored, as for a reader).
    run = page.locator(".thebe-run-button").first
    run.wait_for(timeout=LAUNCH_MS)
    page.wait_for_function("Boolean(window.thebe.session)", timeout=LAUNCH_MS)
    page.locator(".thebe-status", has_text=re.compile("kernel connected", re.I)).wait_for()
    run.click()
    output = page.locator(".jp-OutputArea-output", has_text="answer 42 six")
    output.first.wait_for(timeout=LAB_MS)
    screenshot(page, "publisher-thebe")

    assert builds == [f"{server.base}/build/git/{quote(remote_repo, safe='')}/main"], builds
    # What thebe 0.9.3 really sends to create its session: with "type", which Jupyter Server
    # requires, and the kernel named by the block's kernelOptions.kernelName.
    assert sessions == [{"name": "thebe.ipynb", "path": "/", "type": "notebook",
                         "kernel": {"name": "python3"}}], sessions
    assert not refused, f"requests to other hosts: {refused}"
    assert not errors, errors


def book_page(server: LiveServer, repo: Path) -> str:
    """Launch buttons as Jupyter Book (sphinx-book-theme) writes them for a git repository
    on another host: ``git/<quote(url)>/<branch>``, where quote() keeps the slashes."""
    hub = server.base
    git_url = quote(f"file://{repo}")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>A Jupyter Book chapter</title></head>
<body>
<h1>A Jupyter Book chapter</h1>
<a id="launch-lab" href="{hub}/v2/git/{git_url}/main?urlpath=lab/tree/index.ipynb"><img
  src="{hub}/badge_logo.svg" alt="Launch Binder"></a>
</body></html>
"""


MYST_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>A MyST article</title></head>
<body>
<h1>A MyST article</h1>
<p id="provider">detecting…</p>
<a id="launch" href="#">Launch</a>
<script>
// What MyST's launch dialog does: detect a BinderHub by GET <base>versions (looking for
// the "binderhub" key), then link to <base>v2/<provider stub>?urlpath=/lab/tree/<file>.
const base = {base};
const binder = {{ provider: "git", repo: {repo}, ref: "main" }};
(async () => {{
  let kind = "error";
  try {{
    const data = await (await fetch(`${{base}}versions`)).json();
    if ("binderhub" in data) kind = "binderhub";
  }} catch (err) {{
    kind = "error: " + err;
  }}
  document.getElementById("provider").textContent = kind;
  const stub = `git/${{encodeURIComponent(binder.repo)}}/${{encodeURIComponent(binder.ref)}}`;
  const query = `urlpath=${{encodeURIComponent("/lab/tree/index.ipynb")}}`;
  document.getElementById("launch").href = `${{base}}v2/${{stub}}?${{query}}`;
}})();
</script>
</body></html>
"""


@pytest.mark.parametrize("publisher_kind", ["jupyter-book", "myst"])
def test_jupyter_book_and_myst_links_launch_jupyterlab(
        context: tuple[BrowserContext, list[str]], server: LiveServer, publisher: Publisher,
        repo: Path, publisher_kind: str) -> None:
    browser_context, refused = context
    page = browser_context.new_page()
    if publisher_kind == "myst":
        url = publisher.page("myst.html", MYST_PAGE.format(
            base=json.dumps(server.base + "/"), repo=json.dumps(f"file://{repo}")))
        page.goto(url)
        # Detection ran cross-origin and found a BinderHub.
        page.wait_for_function("document.getElementById('provider').textContent !== 'detecting…'")
        assert page.locator("#provider").inner_text() == "binderhub"
        link = page.locator("#launch")
        assert link.get_attribute("href") == (
            f"{server.base}/v2/git/{quote(f'file://{repo}', safe='')}/main"
            "?urlpath=%2Flab%2Ftree%2Findex.ipynb")
    else:
        page.goto(publisher.page("book.html", book_page(server, repo)))
        link = page.locator("#launch-lab")
        assert page.locator("img").evaluate("img => img.complete && img.naturalWidth > 0")
    link.click()
    page.wait_for_url(re.compile(r"/user/[0-9a-f]+/lab/tree/index\.ipynb"), timeout=LAUNCH_MS)
    page.get_by_text("print(six.__name__)").first.wait_for(timeout=LAB_MS)
    screenshot(page, f"publisher-{publisher_kind}-jupyterlab")
    assert not refused, f"requests to other hosts: {refused}"


def test_badges_are_served_and_shown_on_other_sites(
        context: tuple[BrowserContext, list[str]], server: LiveServer,
        publisher: Publisher) -> None:
    for path in BADGES:
        answer = httpx.get(server.url(path))
        assert answer.status_code == 200, path
        assert answer.headers["content-type"].split(";")[0] == "image/svg+xml", path
        assert answer.text.lstrip().startswith("<svg") and "launch" in answer.text, path
    browser_context, refused = context
    page = browser_context.new_page()
    images = "".join(f'<img src="{server.base}{path}" alt="Launch Binder">' for path in BADGES)
    page.goto(publisher.page("readme.html", f"<!doctype html><title>README</title>{images}"))
    page.wait_for_load_state("load")
    widths = page.locator("img").evaluate_all("imgs => imgs.map(i => i.naturalWidth)")
    assert all(width > 0 for width in widths), widths
    assert not refused
