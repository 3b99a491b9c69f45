"""Attacks on a default local ``binderless serve`` (issue 12), as a stranger would try them.

- A page on another origin (another loopback port) opens ``/build`` for a local folder
  (``/etc``) and for a remote-looking repository, and posts to ``/api/launches``: it must
  read nothing, and no session may start. A server that names the page's origin in
  ``--allow-origin`` is the control: there the same page reads the stream.
- DNS rebinding: requests whose ``Host`` names another site (``evil.example``) are refused
  and never reach a running session, while the same requests with the server's own Host
  work.
- Every redirect trick in ``urlpath``, ``labpath`` and ``filepath`` goes through the real
  loading page in Chromium, with a ``ready`` event answered by the test: the browser must
  end on the server's origin inside ``/user/<id>/`` (or stay on the loading page), no
  script may run, and nothing may be asked of another origin.
- ``/auth/login?next=`` tricks, signed in through the real sign-in form: the browser ends
  on the server.

Nothing leaves the machine: GitHub's API is pointed at a closed loopback port, and every
browser request to another host is refused and recorded.
"""

from __future__ import annotations

import functools
import http.server
import json
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

import httpx
import pytest

from ..conftest import (
    FIXTURE_REPOS,
    LiveServer,
    file_spec,
    free_port,
    make_git_repo,
    start_server,
    stop_server,
)
from . import browser as chromium
from .browser import DESKTOP, new_context
from .streams import read_stream

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Page, Route

pytestmark = [pytest.mark.e2e]

browser = chromium.browser

LAUNCH_SECONDS = 240
FAKE_SESSION = "fa4e5e5510000000"
FAKE_TOKEN = "faketoken0123456789"
#: GitHub's API, as the servers here see it: a loopback port nothing listens on.
CLOSED_GITHUB = f"http://127.0.0.1:{free_port()}"


# ----- servers -------------------------------------------------------------------------------

def serve(root: Path, *extra: str) -> LiveServer:
    return start_server(root / "state", *extra,
                        env={"BINDERLESS_GITHUB_API_URL": CLOSED_GITHUB})


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A default local server: 127.0.0.1, local sign-in, local paths allowed."""
    live = serve(tmp_path_factory.mktemp("attacked"))
    try:
        yield live
    finally:
        stop_server(live)


class Site:
    """Another origin: a plain HTTP server on another loopback port."""

    def __init__(self, root: Path) -> None:
        self.root = root
        handler = functools.partial(_QuietHandler, directory=str(root))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def page(self, name: str) -> str:
        (self.root / name).write_text("<!doctype html><title>A stranger's page</title>"
                                      "<p>Nothing to see here.</p>")
        return f"{self.base}/{name}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def stranger(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    site = Site(tmp_path_factory.mktemp("stranger"))
    try:
        yield site
    finally:
        site.close()


def store_rows(live: LiveServer, sql: str) -> list[dict[str, Any]]:
    """Rows of the server's own SQLite store (read-only)."""
    db = sqlite3.connect(f"file:{live.state_dir / 'binderless.sqlite3'}?mode=ro", uri=True)
    db.row_factory = sqlite3.Row
    try:
        return [dict(row) for row in db.execute(sql)]
    finally:
        db.close()


def sessions(live: LiveServer) -> list[dict[str, Any]]:
    return store_rows(live, "SELECT session_id, launch_id, repo_url, status FROM sessions")


def launches_of(live: LiveServer, needle: str) -> list[dict[str, Any]]:
    return [row for row in store_rows(live, "SELECT launch_id, provider, spec, phase, "
                                            "session_id FROM launches")
            if needle in row["spec"]]


# ----- a page on another origin --------------------------------------------------------------

FOLLOW_BUILD = """async ([server, path, waitMs]) => {
  const got = {events: [], error: false, read: null, readError: null};
  await new Promise((resolve) => {
    const source = new EventSource(server + path);
    const done = () => { source.close(); clearTimeout(timer); resolve(); };
    const timer = setTimeout(done, waitMs);
    source.onmessage = (event) => {
      got.events.push(event.data);
      const data = JSON.parse(event.data);
      if (data.phase === "ready" || data.phase === "failed") done();
    };
    source.onerror = () => { got.error = true; done(); };
  });
  const ready = got.events.map((e) => JSON.parse(e)).find((e) => e.phase === "ready");
  if (ready) {
    try {
      const answer = await fetch(ready.url + "api/contents/hostname?content=1&token="
                                 + ready.token);
      got.read = await answer.text();
    } catch (error) {
      got.readError = String(error);
    }
  }
  return got;
}"""

POST_LAUNCH = """async ([server, body]) => {
  // A "simple" request (text/plain, no preflight): the browser sends it cross-origin.
  try {
    await fetch(server + "/api/launches", {method: "POST", mode: "no-cors", body,
                                           headers: {"Content-Type": "text/plain"}});
    return "sent";
  } catch (error) {
    return String(error);
  }
}"""


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    opened = new_context(browser, DESKTOP)
    try:
        yield opened
    finally:
        opened.close()


def refuse_other_hosts(context: BrowserContext, allowed: set[str]) -> list[str]:
    """Abort every request to an origin outside ``allowed`` and list it (so nothing leaves
    the machine, and a test sees every attempt)."""
    refused: list[str] = []

    def check(route: Route) -> None:
        url = route.request.url
        parts = urlsplit(url)
        if parts.scheme in ("http", "https", "ws", "wss") and \
                f"{parts.scheme}://{parts.netloc}" not in allowed:
            refused.append(url)
            route.abort("blockedbyclient")
        else:
            route.fallback()

    context.route("**/*", check)
    return refused


@pytest.mark.browser
def test_a_page_on_another_origin_cannot_launch_a_local_folder(
        server: LiveServer, stranger: Site, context: BrowserContext) -> None:
    refuse_other_hosts(context, {server.base, stranger.base})
    page = context.new_page()
    page.goto(stranger.page("etc.html"))
    got = page.evaluate(FOLLOW_BUILD, [server.base, f"/build/git/{quote('/etc', safe='')}/HEAD",
                                       LAUNCH_SECONDS * 1000])
    # Nothing readable: no event (not even a refusal the page could read), so no token.
    assert got["events"] == [], got
    assert got["read"] is None, got
    for body in ('{"provider": "git", "spec": "%2Fetc/HEAD"}', '{"link": "file:///etc"}'):
        page.evaluate(POST_LAUNCH, [server.base, body])
    # The server started nothing for that page (each post was answered before evaluate
    # returned): no session, and every launch of /etc it may have recorded failed at once
    # without one.
    assert [s for s in sessions(server) if "etc" in s["repo_url"]] == []
    for launch in launches_of(server, "etc"):
        assert launch["phase"] == "failed" and not launch["session_id"], launch


@pytest.mark.browser
def test_a_page_on_another_origin_cannot_follow_a_remote_launch(
        server: LiveServer, stranger: Site, context: BrowserContext) -> None:
    refuse_other_hosts(context, {server.base, stranger.base})
    page = context.new_page()
    page.goto(stranger.page("remote.html"))
    got = page.evaluate(FOLLOW_BUILD, [server.base, "/build/gh/binder-examples/requirements/HEAD",
                                       30_000])
    assert got["events"] == [], got
    assert got["error"], got
    assert [s for s in sessions(server) if "binder-examples" in s["repo_url"]] == []


@pytest.mark.browser
def test_an_allowed_origin_reads_the_stream(
        tmp_path: Path, stranger: Site, context: BrowserContext) -> None:
    """The control: the same page reads the same stream once its origin is allowed (what
    thebe needs), so the tests above fail for the right reason."""
    live = serve(tmp_path, "--allow-origin", stranger.base)
    try:
        refuse_other_hosts(context, {live.base, stranger.base})
        page = context.new_page()
        page.goto(stranger.page("allowed.html"))
        got = page.evaluate(FOLLOW_BUILD, [live.base, "/build/gh/binder-examples/requirements/"
                                                      "HEAD", 30_000])
        events = [json.loads(e) for e in got["events"]]
        assert events and events[-1]["phase"] == "failed", got  # GitHub is closed here
        assert events[-1]["status_code"] != 403, events[-1]
    finally:
        stop_server(live)


# ----- DNS rebinding -------------------------------------------------------------------------

@dataclass
class Session:
    url: str
    token: str
    session_id: str


@pytest.fixture(scope="module")
def running(server: LiveServer, tmp_path_factory: pytest.TempPathFactory) -> Session:
    """A real session of a small repository, launched as the CLI does (no Origin)."""
    repo = make_git_repo(FIXTURE_REPOS / "python-requirements",
                         tmp_path_factory.mktemp("attack-repos") / "requirements")
    stream = read_stream(server.url(f"/build/{file_spec(repo)}"), timeout=LAUNCH_SECONDS)
    ready = stream.final
    assert ready["phase"] == "ready", stream.text()
    return Session(ready["url"], ready["token"], ready["url"].rstrip("/").rsplit("/", 1)[1])


REBOUND_HOSTS = ["evil.example", "evil.example:{port}", "127.0.0.1.evil.example:{port}",
                 "EVIL.example:{port}", "localhost.evil.example:{port}"]


@pytest.mark.parametrize("host", REBOUND_HOSTS)
def test_rebinding_host_headers_are_refused(server: LiveServer, running: Session,
                                            host: str) -> None:
    host = host.replace("{port}", str(urlsplit(server.base).port))
    before = store_rows(server, "SELECT count(*) AS n FROM launches")[0]["n"]
    headers = {"Host": host}
    token = {"token": running.token}
    with httpx.Client(base_url=server.base, headers=headers, timeout=30) as rebound:
        answers = {
            "session": rebound.get(f"/user/{running.session_id}/api/status", params=token),
            "session files": rebound.get(f"/user/{running.session_id}/api/contents",
                                         params=token),
            "build": rebound.get("/build/gh/org/repo/HEAD",
                                 headers={"Accept": "text/event-stream"}),
            "local build": rebound.get(f"/build/git/{quote('/etc', safe='')}/HEAD"),
            "launches": rebound.post("/api/launches",
                                     json={"provider": "git", "spec": "%2Fetc/HEAD"}),
            "loading page": rebound.get("/v2/gh/org/repo/HEAD"),
        }
    for what, answer in answers.items():
        assert answer.status_code in (400, 403, 421), (what, answer.status_code,
                                                       answer.text[:300])
        # Not Jupyter's answer (its status has last_activity, its contents a "type").
        assert "last_activity" not in answer.text and '"type"' not in answer.text, (
            what, answer.text[:300])
        assert running.token not in answer.text, what
    assert store_rows(server, "SELECT count(*) AS n FROM launches")[0]["n"] == before
    # The control: the server's own Host reaches the same session.
    own = httpx.get(f"{running.url}api/status", params=token, timeout=30)
    assert own.status_code == 200 and "started" in own.json(), own.text


# ----- redirect targets ----------------------------------------------------------------------

EVIL = "https://evil.example"
#: (parameter, value) pairs a launch link may carry; each must end inside the session.
REDIRECT_TRICKS: list[tuple[str, str]] = [
    ("urlpath", "javascript:window.pwned(document.domain)//"),
    ("urlpath", "JaVaScRiPt:window.pwned(1)//"),
    ("urlpath", " javascript:window.pwned(2)//"),
    ("urlpath", "java\tscript:window.pwned(3)//"),
    ("urlpath", "java\nscript:window.pwned(4)//"),
    ("urlpath", "\x01javascript:window.pwned(5)//"),
    ("urlpath", "data:text/html,<script>window.pwned(6)</script>"),
    ("urlpath", "data:text/html;base64,PHNjcmlwdD53aW5kb3cucHduZWQoNyk8L3NjcmlwdD4="),
    ("urlpath", f"{EVIL}/"),
    ("urlpath", "HTTPS://evil.example/"),
    ("urlpath", "https:evil.example/"),
    ("urlpath", "//evil.example/"),
    ("urlpath", "///evil.example/"),
    ("urlpath", "////evil.example/"),
    ("urlpath", "\\\\evil.example\\"),
    ("urlpath", "/\\evil.example/"),
    ("urlpath", "\\/evil.example/"),
    ("urlpath", "/\t/evil.example/"),
    ("urlpath", "\t//evil.example/"),
    ("urlpath", "/\n/evil.example/"),
    ("urlpath", "%2F%2Fevil.example/"),
    ("urlpath", "%5C%5Cevil.example/"),
    ("urlpath", "%09//evil.example/"),
    ("urlpath", "/%09/evil.example/"),
    ("urlpath", "%0A//evil.example/"),
    ("urlpath", "javascript%3Awindow.pwned(8)//"),
    ("urlpath", "https://127.0.0.1:1/"),
    ("urlpath", "http://evil.example@127.0.0.1:1/"),
    ("urlpath", "../../../api/projects"),
    ("urlpath", "%2e%2e/%2e%2e/api/me"),
    ("urlpath", ".%2e/.%2e/api/me"),
    ("urlpath", "lab/tree/../../../../auth/logout"),
    ("labpath", "../../../../../api/me"),
    ("labpath", "//evil.example/"),
    ("labpath", "javascript:window.pwned(9)//"),
    ("labpath", "%2e%2e/%2e%2e/%2e%2e/%2e%2e/api/me"),
    ("filepath", "../../../api/me"),
    ("filepath", "/\\evil.example/"),
    ("filepath", "https://evil.example/"),
]


@dataclass
class Watch:
    """What a page did: scripts the attack ran, requests to other origins, navigations."""

    pwned: list[str] = field(default_factory=list)
    navigations: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)


def fake_ready(server: LiveServer) -> str:
    """A ``/build`` stream that says the launch is ready in ``FAKE_SESSION``."""
    ready = {"phase": "ready", "message": "server running\n",
             "url": f"{server.base}/user/{FAKE_SESSION}/", "token": FAKE_TOKEN,
             "image": "fake", "repo_url": "https://example.org/r"}
    return (f"id: fakelaunch:1\ndata: {json.dumps({'phase': 'launching', 'message': 'x'})}\n\n"
            f"id: fakelaunch:2\ndata: {json.dumps(ready)}\n\n")


def watch_context(context: BrowserContext, server: LiveServer) -> Watch:
    """Refuse and record requests to other origins; record calls of ``window.pwned``."""
    watch = Watch()
    watch.refused = refuse_other_hosts(context, {server.base})
    context.expose_function("pwned", lambda value=None: watch.pwned.append(str(value)))
    return watch


def open_launch_link(context: BrowserContext, server: LiveServer, query: str,
                     watch: Watch) -> Page:
    page = context.new_page()
    page.route("**/build/**", lambda route: route.fulfill(
        status=200, headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"},
        body=fake_ready(server)))
    page.route(f"**/user/{FAKE_SESSION}/**", lambda route: route.fulfill(
        status=200, content_type="text/html",
        body="<!doctype html><title>session</title><p id=session>the session</p>"))
    page.on("framenavigated", lambda frame: watch.navigations.append(frame.url)
            if frame == page.main_frame else None)
    page.goto(f"{server.base}/v2/gh/org/repo/HEAD?{query}")
    return page


def settle(page: Page, watch: Watch, loading: str) -> None:
    """Wait until the loading page has acted on ``ready``: it left for another address, or
    it shows the launch as failed."""
    for _ in range(150):
        if watch.pwned or watch.refused or any(not url.startswith(loading)
                                               for url in watch.navigations[1:]):
            break
        try:
            state = page.evaluate("document.getElementById('launch')?.dataset.state || ''")
        except Exception:  # navigating: the page's context is being replaced
            state = ""
        if state == "failed":
            break
        page.wait_for_timeout(100)
    page.wait_for_load_state()


def trick_outcome(page: Page, watch: Watch, server: LiveServer) -> str:
    """What went wrong with one trick ("" when the browser stayed where it should)."""
    loading = f"{server.base}/v2/"
    if watch.pwned:
        return f"ran script on the server's origin: {watch.pwned}"
    if watch.refused:
        return f"sent the browser to another origin: {watch.refused}"
    final = page.url
    if not final.startswith((f"{server.base}/user/{FAKE_SESSION}/", loading)):
        return f"ended outside the session: {final} (after {watch.navigations})"
    if final.startswith(loading) and \
            page.locator("#launch").get_attribute("data-state") not in ("failed", "ready"):
        return "stayed on the loading page without saying why"
    strange = [url for url in watch.navigations
               if urlsplit(url).scheme not in ("http", "https", "about")]
    return f"navigated to {strange}" if strange else ""


@pytest.mark.browser
def test_redirect_tricks_stay_inside_the_session(server: LiveServer,
                                                 context: BrowserContext) -> None:
    """Every trick in the table, each through a fresh loading page in the same browser."""
    watch = watch_context(context, server)
    failures: dict[str, str] = {}
    for param, value in REDIRECT_TRICKS:
        watch.pwned.clear()
        watch.refused.clear()
        watch.navigations.clear()
        page = open_launch_link(context, server, f"{param}={quote(value, safe='')}", watch)
        settle(page, watch, f"{server.base}/v2/")
        problem = trick_outcome(page, watch, server)
        if problem:
            failures[f"{param}={value!r}"] = problem
        page.close()
    assert failures == {}, "\n".join(f"{k}: {v}" for k, v in failures.items())


@pytest.mark.browser
def test_a_plain_urlpath_still_opens_its_file(server: LiveServer,
                                              context: BrowserContext) -> None:
    """The control for the tricks: an ordinary urlpath lands where it says, token and all."""
    watch = watch_context(context, server)
    page = open_launch_link(context, server, "urlpath=lab/tree/index.ipynb", watch)
    settle(page, watch, f"{server.base}/v2/")
    assert page.url == (f"{server.base}/user/{FAKE_SESSION}/lab/tree/index.ipynb"
                        f"?token={FAKE_TOKEN}")
    assert page.locator("#session").inner_text() == "the session"


# ----- sign-in redirects ---------------------------------------------------------------------

NEXT_TRICKS = ["/%09/evil.example/x", "/\t/evil.example/x", "//evil.example/x",
               "///evil.example/x", "\\\\evil.example/x", "/\\evil.example/x", "\\/evil.example",
               "https://evil.example/x", "javascript:window.pwned(1)//", "data:text/html,x",
               "/%5Cevil.example", "/%2F/evil.example", "/\n/evil.example", "http:evil.example",
               " //evil.example", "%2F%2Fevil.example"]


@pytest.mark.browser
def test_sign_in_next_stays_on_the_server(server: LiveServer, context: BrowserContext) -> None:
    """Each ``next`` trick through the real sign-in form; then the same form posted
    straight, its Location read by the browser's own URL parser."""
    watch = watch_context(context, server)
    failures: dict[str, str] = {}
    for target in NEXT_TRICKS:
        watch.pwned.clear()
        watch.refused.clear()
        page = context.new_page()
        page.goto(f"{server.base}/auth/login?next={quote(target, safe='')}")
        with page.expect_navigation(wait_until="commit"):
            page.locator("#sign-in").click()
        answer = httpx.post(server.url("/auth/login"), data={"next": target},
                            headers={"Origin": server.base}, follow_redirects=False)
        resolved = page.evaluate("([loc, base]) => new URL(loc, base).origin",
                                 [answer.headers.get("location", ""), server.base])
        if watch.pwned or watch.refused or not page.url.startswith(server.base + "/"):
            failures[repr(target)] = f"browser: {page.url} {watch.pwned} {watch.refused}"
        elif answer.status_code not in (302, 303) or resolved != server.base:
            failures[repr(target)] = f"post: {answer.status_code} {answer.headers}"
        page.close()
    assert failures == {}, "\n".join(f"{k}: {v}" for k, v in failures.items())
