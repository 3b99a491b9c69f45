"""The home page and the loading page in Chromium against one ``binderless serve``,
on a desktop and on a 375-pixel phone, checked with axe-core.

Launches use local fixture repositories; a "gated" one holds its build at ``Step 2/3``
until the test lets it go on, so that the page is seen mid-build without racing it.
Every request to a host other than this machine is refused and fails the test.
Screenshots go to ``test-artifacts/screenshots/``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from ..conftest import (
    FIXTURE_REPOS,
    LiveServer,
    file_spec,
    make_git_repo,
    start_server,
    stop_server,
)
from . import browser as chromium
from .browser import DESKTOP, NARROW_PHONE, axe_violations, guard_network, new_context, screenshot
from .pages import GatedRepo, Recorder, gated_repo, page_errors, paste, scroll_width
from .streams import read_stream

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Page, Route

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

browser = chromium.browser

LAUNCH_MS = 180_000  # a first build of the environment included
LAB_MS = 60_000
VIEWPORTS = {"desktop": (DESKTOP, False), "phone": (NARROW_PHONE, True)}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = start_server(tmp_path_factory.mktemp("launch-pages") / "state")
    try:
        yield live
    finally:
        stop_server(live)


@pytest.fixture(scope="module")
def repos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("repos")


@pytest.fixture
def gated(repos: Path) -> Iterator[Callable[[str], GatedRepo]]:
    """``gated("analysis")``: a gated repository ``examples/analysis`` (see ``gated_repo``)."""
    made: list[GatedRepo] = []

    def make(name: str) -> GatedRepo:
        made.append(gated_repo(repos / "examples", name))
        return made[-1]

    try:
        yield make
    finally:
        for repo in made:
            repo.release()  # never leave a build waiting


class Tab:
    """A page in its own context, with its network guard, errors and recorder."""

    def __init__(self, browser: Browser, viewport: str) -> None:
        size, phone = VIEWPORTS[viewport]
        self.name = viewport
        self.width = size["width"]
        self.context: BrowserContext = new_context(browser, size, phone=phone)
        self.refused = guard_network(self.context)
        self.page: Page = self.context.new_page()
        self.errors = page_errors(self.page)
        self.record = Recorder(self.page)

    def check_clean(self) -> None:
        assert not self.refused, f"requests to other hosts: {self.refused}"
        assert not self.errors, self.errors

    def check_fits(self) -> None:
        assert scroll_width(self.page) <= self.width, "wider than the screen"

    def check_axe(self, what: str) -> None:
        violations = axe_violations(self.page)
        assert not violations, f"{what} ({self.name}): {violations}"


@pytest.fixture
def tabs(browser: Browser) -> Iterator[dict[str, Tab]]:
    opened = {name: Tab(browser, name) for name in VIEWPORTS}
    try:
        yield opened
    finally:
        for tab in opened.values():
            tab.context.close()


def link_is(page: Page, link: str) -> None:
    page.wait_for_function("t => document.getElementById('link').textContent === t", arg=link,
                           timeout=10_000)


def status_has(page: Page, text: str, timeout: float = LAUNCH_MS) -> None:
    page.wait_for_function("t => document.getElementById('status').textContent.includes(t)",
                           arg=text, timeout=timeout)


# ----- the home page ------------------------------------------------------------------

@pytest.mark.parametrize("viewport", list(VIEWPORTS))
def test_home_page_turns_a_pasted_address_into_a_link_and_snippets(
        browser: Browser, server: LiveServer, viewport: str) -> None:
    tab = Tab(browser, viewport)
    page = tab.page
    origin = server.url("")
    try:
        page.goto(server.url("/"))
        tab.check_axe("home page")

        paste(page, "#repo", "https://github.com/binder-examples/requirements/blob/main/index.ipynb")
        link = f"{origin}/v2/gh/binder-examples/requirements/main?labpath=index.ipynb"
        link_is(page, link)  # the server reads the address (GET /api/resolve)
        assert page.locator("#provider").input_value() == "gh"
        assert page.locator("#repo").input_value() == "binder-examples/requirements"
        assert page.locator("#ref").input_value() == "main"
        assert page.locator("#path").input_value() == "index.ipynb"
        assert page.locator("#kind-file").is_checked()
        assert page.locator("#link").inner_text() == link
        assert "Filled in from the address" in page.locator("#fill-status").inner_text()
        badge = f"{origin}/badge_logo.svg"
        assert page.locator("#snippet-md").inner_text() == f"[![Binder]({badge})]({link})"
        assert page.locator("#snippet-rst").inner_text() == (
            f".. image:: {badge}\n   :target: {link}\n   :alt: Binder")
        assert page.locator("#snippet-html").inner_text() == (
            f'<a href="{link}"><img src="{badge}" alt="Launch Binder"></a>')
        assert page.locator("#snippet-myst").inner_text() == (
            f'jupyter:\n  binder:\n    url: "{origin}/"\n    repo: binder-examples/requirements\n'
            "    ref: main\n    provider: github")
        thebe = page.locator("#snippet-thebe").inner_text()
        assert thebe.startswith('<script type="text/x-thebe-config">') and thebe.endswith("</script>")
        assert '"binderUrl": "' + origin + '"' in thebe and '"repoProvider": "github"' in thebe
        assert page.locator("#badge-preview-link").get_attribute("href") == link
        tab.check_axe("home page, filled in")
        tab.check_fits()
        screenshot(page, f"home-{viewport}")

        # Each snippet's button copies exactly what is shown (keyboard: focus, Enter).
        page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=origin)
        for code in ("link", "snippet-rst", "snippet-thebe"):
            button = page.locator(f"[data-copy='{code}']")
            button.focus()
            page.keyboard.press("Enter")
            page.wait_for_function("b => b.textContent === 'Copied'", arg=button.element_handle())
            assert page.evaluate("navigator.clipboard.readText()") == page.locator(
                f"#{code}").inner_text()
        assert "copied to the clipboard" in page.locator("#copy-status").inner_text()

        # A record: no ref, and thebe and MyST cannot launch it.
        paste(page, "#repo", "https://zenodo.org/records/3242074")
        link_is(page, f"{origin}/v2/zenodo/10.5281/zenodo.3242074")
        assert page.locator("#provider").input_value() == "zenodo"
        assert page.locator("#repo").input_value() == "10.5281/zenodo.3242074"
        assert page.locator("#ref-field").is_hidden()
        assert page.locator("#path").input_value() == ""
        assert page.locator("#link").inner_text() == f"{origin}/v2/zenodo/10.5281/zenodo.3242074"
        assert page.locator("#thebe-note").is_visible()
        assert page.locator("[data-copy='snippet-thebe']").is_disabled()
        assert page.locator("[data-copy='snippet-myst']").is_disabled()

        # A link from another BinderHub: provider, encoded GitLab namespace, ref and urlpath.
        paste(page, "#repo", "https://mybinder.org/v2/gl/group%2Fproject/v1.0?urlpath=lab/tree/a.ipynb")
        link_is(page, f"{origin}/v2/gl/group%2Fproject/v1.0?urlpath=lab/tree/a.ipynb")
        assert page.locator("#provider").input_value() == "gl"
        assert page.locator("#repo").input_value() == "group/project"
        assert page.locator("#ref").input_value() == "v1.0"
        assert page.locator("#kind-url").is_checked()
        assert page.locator("#link").inner_text() == (
            f"{origin}/v2/gl/group%2Fproject/v1.0?urlpath=lab/tree/a.ipynb")
        assert '"repoProvider": "gitlab"' in page.locator("#snippet-thebe").inner_text()

        # Typed, not pasted: while it is typed the link never reads /v2/gl/https://...;
        # the address fills the form when typing pauses (the ref and path it does not name
        # are kept).
        page.locator("#repo").fill("")
        page.locator("#repo").focus()
        page.keyboard.type("https://codeberg.org/org/book.git")
        assert "https:/" not in page.locator("#link").inner_text().removeprefix(origin)
        link_is(page, f"{origin}/v2/git/https%3A%2F%2Fcodeberg.org%2Forg%2Fbook.git/v1.0"
                "?urlpath=lab/tree/a.ipynb")
        assert page.locator("#provider").input_value() == "git"
        tab.check_clean()
    finally:
        tab.context.close()


# ----- the loading page: a launch that builds -----------------------------------------

def test_loading_page_follows_a_build_into_jupyterlab(
        tabs: dict[str, Tab], server: LiveServer, gated: Callable[[str], GatedRepo]) -> None:
    repo = gated("analysis")
    link = server.url("/v2/" + file_spec(repo.path) + "?labpath=index.ipynb")
    # The desktop starts the build; the phone's launch follows the same build.
    for tab in tabs.values():
        tab.page.goto(link)
        status_has(tab.page, "step 2 of 3")

    for tab in tabs.values():
        page = tab.page
        assert page.locator("#launch").get_attribute("data-phase") == "building"
        assert page.locator("#steps li[aria-current='step']").inner_text() == "Build"
        # 25 % at the start of the build, 70 % at its end: step 2 of 3 is two thirds there.
        assert page.locator("#progress").get_attribute("aria-valuenow") == "55"
        assert "step 2 of 3" in page.locator("#progress").get_attribute("aria-valuetext")
        assert page.locator("#status").get_attribute("aria-live") == "polite"
        assert page.title().startswith("Building (2/3)… ")
        assert page.locator("#favicon").get_attribute("href") == "/favicon-building.svg"
        assert page.locator("#log").is_hidden()
        assert page.locator("#log-toggle").get_attribute("aria-expanded") == "false"
        assert page.get_by_role("button", name="Cancel launch").is_visible()
        assert page.locator("#tip").inner_text()
        page.locator("#estimate").wait_for()
        assert "not been built on this server before" in page.locator("#estimate").inner_text()
        tab.check_axe("loading page, building")
        tab.check_fits()
        screenshot(page, f"loading-building-{tab.name}")

    # The log, from the keyboard: open it, switch to the raw view and back.
    page = tabs["desktop"].page
    page.locator("#log-toggle").focus()
    page.keyboard.press("Enter")
    assert page.locator("#log").is_visible()
    shown = page.locator("#log").inner_text()
    assert "Step 2/3 : waiting" in shown and "\x1b[" not in shown
    page.locator("#log-raw-toggle").focus()
    page.keyboard.press("Enter")
    assert page.locator("#log-raw").is_visible() and page.locator("#log").is_hidden()
    assert "\x1b[1;32mStep 2/3" in page.locator("#log-raw").text_content()
    assert page.locator("#log-raw-toggle").get_attribute("aria-pressed") == "true"
    page.keyboard.press("Enter")
    assert page.locator("#log").is_visible()
    with page.expect_download() as download:
        page.locator("#log-download").click()
    assert "Step 2/3" in Path(download.value.path()).read_text()
    screenshot(page, "loading-building-log-desktop")

    repo.release()
    for tab in tabs.values():
        tab.page.wait_for_url(re.compile(r"/user/[0-9a-f]+/doc/tree/index\.ipynb"), timeout=LAUNCH_MS)
    for tab in tabs.values():
        tab.page.locator(".jp-Notebook .jp-Cell").first.wait_for(timeout=LAB_MS)
        statuses = tab.record.values("status")
        assert "Building the environment: step 1 of 3…" in statuses, statuses
        assert "Building the environment: step 3 of 3…" in statuses, statuses
        assert statuses[-1] == "Ready. Opening JupyterLab…", statuses
        assert tab.record.values("favicon")[-1] == "/favicon-ready.svg"
        assert tab.record.values("title")[-1].startswith("Ready: ")
        progress = [int(p) for p in tab.record.values("progress")]
        assert progress == sorted(progress) and progress[-1] == 100, progress
        tab.check_clean()
    screenshot(tabs["desktop"].page, "loading-ready-jupyterlab-desktop")


def test_a_later_launch_estimates_the_time_left_from_earlier_ones(
        tabs: dict[str, Tab], server: LiveServer, repos: Path) -> None:
    repo = make_git_repo(FIXTURE_REPOS / "python-requirements", repos / "estimate")
    spec = file_spec(repo)
    # A launch that builds, then one that finds the environment built: the first sample.
    assert read_stream(server.url(f"/build/{spec}")).final["phase"] == "ready"
    earlier = read_stream(server.url(f"/build/{spec}"))
    assert earlier.final["phase"] == "ready" and "building" not in earlier.phases
    launch_id = earlier.ids[0].split(":")[0]
    estimate = httpx.get(server.url(f"/api/launches/{launch_id}/estimate")).json()
    assert estimate["built"] is False and estimate["samples"] == 1  # finished: itself
    assert estimate["typical_seconds"] > 0 and estimate["remaining_seconds"] == 0

    tab = tabs["phone"]
    tab.page.goto(server.url(f"/v2/{spec}"))
    tab.page.wait_for_url(re.compile(r"/user/[0-9a-f]+/"), timeout=LAUNCH_MS)
    estimates = [e for e in tab.record.values("estimate") if e]
    assert estimates, tab.record.seen
    took = r"(\d+ seconds?|about \d+ minutes?)"
    assert re.fullmatch(
        rf"({took} left, going by 1 earlier launch of this environment \({took} in all\)\."
        rf"|Taking longer than the 1 earlier launch of this environment \({took} in all\)\. "
        r"It is still going\.)", estimates[0], re.IGNORECASE), estimates
    assert tab.record.values("favicon")[-1] == "/favicon-ready.svg"
    tab.check_clean()


# ----- the loading page: a build that fails -------------------------------------------

VISIBLE_TEXT = "() => document.body.innerText"


@pytest.mark.parametrize(("fixture", "file", "cause", "fix"), [
    ("failing-postbuild", "postBuild", "this step is broken", "postBuild failed (exit code 3)"),
    ("bad-requirements", "requirements.txt", "this-package-does-not-exist-binderless was not "
     "found", "Fix line 1 of requirements.txt"),
])
def test_a_build_the_repository_breaks_says_so_once_and_what_helps(
        tabs: dict[str, Tab], server: LiveServer, repos: Path, fixture: str, file: str,
        cause: str, fix: str) -> None:
    repo = make_git_repo(FIXTURE_REPOS / fixture, repos / f"broken-{fixture}")
    for tab in tabs.values():
        tab.page.goto(server.url("/v2/" + file_spec(repo)))
    for tab in tabs.values():
        page = tab.page
        page.locator("#failure").wait_for(timeout=LAUNCH_MS)
        assert page.locator("#status").inner_text() == "Launch failed."
        # Whose fault it is, in the heading; no server status for the repository's own typo.
        assert page.locator("#failure-heading").inner_text() == (
            f"The repository's {file} needs a fix")
        assert "status 500" not in page.evaluate(VISIBLE_TEXT)
        message = page.locator("#failure-message").inner_text()
        assert fix in message
        # The cause, once on the screen: the log stays closed, no second box repeats it.
        assert page.evaluate(VISIBLE_TEXT).count(cause) == 1
        assert page.locator("#failing").is_hidden() and page.locator("#log").is_hidden()
        assert page.locator("#log mark#log-failing-line").count() == 1  # for who opens it
        # A failure that will repeat: no Try again; the way on is another repository, and
        # the docs of the file at fault.
        assert page.locator("#try-again").is_hidden()
        another = page.locator("#launch-another")
        assert another.is_visible() and "primary" in (another.get_attribute("class") or "")
        assert page.locator("#docs-link").inner_text() == f"How to write {file}"
        assert page.locator("#docs-link").get_attribute("href", timeout=1000).startswith(
            "https://repo2docker.readthedocs.io/")
        assert "repo2docker to see the same error" not in page.evaluate(VISIBLE_TEXT)
        assert page.title().startswith("Failed: ")
        assert page.locator("#favicon").get_attribute("href") == "/favicon-failed.svg"
        assert page.evaluate("document.activeElement.id") == "failure-heading"
        assert page.locator("#cancel").is_hidden() and page.locator("#tips").is_hidden()
        box = page.locator("#failure-message").bounding_box()
        assert box is not None and box["width"] > 0 and box["x"] + box["width"] <= tab.width
        tab.check_axe("loading page, failed")
        tab.check_fits()
        screenshot(page, f"loading-failed-{fixture}-{tab.name}")

    # The log still opens on request, with the failing line marked.
    page = tabs["desktop"].page
    page.locator("#log-toggle").click()
    assert page.locator("#log").is_visible()
    for tab in tabs.values():
        tab.check_clean()


# ----- the loading page: cancel, tips -------------------------------------------------

def test_cancel_stops_the_launch_on_the_server(
        tabs: dict[str, Tab], server: LiveServer, gated: Callable[[str], GatedRepo]) -> None:
    tab = tabs["desktop"]
    page = tab.page
    spec = file_spec(gated("slow-build").path)
    page.goto(server.url(f"/v2/{spec}"))
    status_has(page, "step 2 of 3")
    with page.expect_response("**/api/launches/*/cancel") as answer:
        page.get_by_role("button", name="Cancel launch").click()
    assert answer.value.status == 202 and answer.value.json()["cancelled"] is True
    launch_id = answer.value.json()["launch_id"]

    assert page.locator("#cancelled").is_visible()
    assert page.locator("#status").inner_text() == "Launch cancelled."
    assert page.title().startswith("Cancelled: ")
    assert page.evaluate("document.activeElement.id") == "cancelled-heading"
    assert page.locator("#cancel").is_hidden()
    tab.check_axe("loading page, cancelled")
    screenshot(page, "loading-cancelled-desktop")

    # The server ended the launch: its stream, resumed, ends in a failed event that says so.
    resumed = read_stream(server.url(f"/build/{spec}?last_event_id={launch_id}:1"), timeout=60)
    assert resumed.final["phase"] == "failed", resumed.text()
    assert resumed.final["message"].startswith("The launch was cancelled."), resumed.final
    tab.check_clean()


def test_tips_rotate_pause_and_step_on(tabs: dict[str, Tab], server: LiveServer) -> None:
    tab = tabs["phone"]
    page = tab.page
    held: list[Route] = []
    page.route("**/build/**", lambda route: held.append(route))  # never answered: it waits
    page.clock.install()
    page.goto(server.url("/v2/gh/binder-examples/requirements/HEAD"))
    # The page first asks whether this browser has saved changes of the link; the tips
    # start with the connection, once it knows there are none.
    deadline = time.monotonic() + 30
    while not held and time.monotonic() < deadline:
        page.evaluate("0")  # lets Playwright deliver the routed request
        time.sleep(0.05)
    assert held, "the page never opened the event stream"
    assert page.locator("#status").inner_text() == "Connecting to the server…"
    tip = page.locator("#tip")
    first = tip.inner_text()
    page.clock.run_for(13_000)
    second = tip.inner_text()
    assert second != first

    page.get_by_role("button", name="Pause tips").click()
    assert page.locator("#tip-pause").get_attribute("aria-pressed") == "true"
    page.clock.run_for(60_000)
    assert tip.inner_text() == second
    page.get_by_role("button", name="Next tip").click()
    assert tip.inner_text() not in (second, "")
    tab.check_axe("loading page, connecting")
    tab.check_fits()
    screenshot(page, "loading-connecting-phone")

    # Cancelled before the server named the launch: nothing to tell the server.
    cancels: list[str] = []
    page.on("request", lambda r: cancels.append(r.url) if "/cancel" in r.url else None)
    page.get_by_role("button", name="Cancel launch").click()
    assert page.locator("#cancelled").is_visible()
    assert not cancels
    for route in held:
        route.abort()
    tab.check_clean()


# ----- binder.js, the pages' link functions -------------------------------------------

ADDRESSES = {
    "https://github.com/org/repo.git": {"provider": "gh", "repo": "org/repo"},
    "https://github.com/org/repo/tree/dev": {"provider": "gh", "repo": "org/repo", "ref": "dev"},
    "https://gitlab.com/group/sub/project/-/blob/v2/nb/a.ipynb": {
        "provider": "gl", "repo": "group/sub/project", "ref": "v2", "path": "nb/a.ipynb",
        "pathKind": "file"},
    "https://gist.github.com/jdoe/8f9c1b2a": {"provider": "gist", "repo": "jdoe/8f9c1b2a"},
    "10.5281/zenodo.3242074": {"provider": "zenodo", "repo": "10.5281/zenodo.3242074"},
    "doi:10.6084/m9.figshare.9782777.v1": {"provider": "doi",
                                            "repo": "10.6084/m9.figshare.9782777.v1"},
    "https://doi.org/10.7910/DVN/TJCLKP": {"provider": "doi", "repo": "10.7910/DVN/TJCLKP"},
    "https://sandbox.zenodo.org/record/12": {"provider": "zenodo", "repo": "10.5072/zenodo.12"},
    "https://figshare.com/articles/dataset/A_title/9782777/1": {
        "provider": "figshare", "repo": "10.6084/m9.figshare.9782777.v1"},
    "https://figshare.com/articles/A_title/9782777": {
        "provider": "figshare", "repo": "10.6084/m9.figshare.9782777"},
    "https://www.hydroshare.org/resource/8b826c43f55043f583c85ae312a8894f/": {
        "provider": "hydroshare", "repo": "8b826c43f55043f583c85ae312a8894f"},
    "https://dataverse.harvard.edu/dataset.xhtml?persistentId=doi:10.7910/DVN/TJCLKP": {
        "provider": "dataverse", "repo": "10.7910/DVN/TJCLKP"},
    "https://mybinder.org/v2/gh/org/repo/feature/x?labpath=a.ipynb": {
        "provider": "gh", "repo": "org/repo", "ref": "feature/x", "path": "a.ipynb",
        "pathKind": "file"},
    "https://mybinder.org/v2/git/https%3A//codeberg.org/org/book/main?urlpath=tree/a.ipynb": {
        "provider": "git", "repo": "https://codeberg.org/org/book", "ref": "main",
        "path": "tree/a.ipynb", "pathKind": "url"},
    "https://codeberg.org/org/repo.git?x=1#top": {"provider": "git",
                                                  "repo": "https://codeberg.org/org/repo.git"},
    "org/repo": None,
    "ftp://example.org/repo": None,
    "https://example.org/": None,
}

SPECS = [
    ("gh", "org/repo/feature/x", "org/repo", "feature/x", "org/repo"),
    ("gl", "group%2Fsub%2Fproject/feature/x", "group/sub/project", "feature/x", "group/sub/project"),
    ("gl", "group/sub/project/main", "group/sub/project", "main", "group/sub/project"),  # MyST
    ("git", "https%3A%2F%2Fhost.org%2Fr.git/feature/x", "https://host.org/r.git", "feature/x",
     "host.org/r"),
    ("git", "https%3A//codeberg.org/org/book/main", "https://codeberg.org/org/book", "main",
     "org/book"),  # Jupyter Book
    ("git", "file%3A///srv/books/one/main", "file:///srv/books/one", "main", "books/one"),
    ("gist", "jdoe/8f9c/HEAD", "jdoe/8f9c", "HEAD", "jdoe/8f9c"),
    ("zenodo", "10.5281/zenodo.3242074", "10.5281/zenodo.3242074", "", "10.5281/zenodo.3242074"),
]


def test_binder_js_reads_addresses_and_specs(tabs: dict[str, Tab], server: LiveServer) -> None:
    page = tabs["desktop"].page
    page.goto(server.url("/"))
    # Addresses are read by the server's parser (GET /api/resolve), which the page fills
    # its form from: see test_link_agreement.py for the page itself.
    for address, want in ADDRESSES.items():
        answer = httpx.get(server.url("/api/resolve"),
                           params={"link": address, "offline": "true"}).json()
        if want is None:
            assert answer["status_code"] == 400, address
            continue
        got = {"provider": answer["provider"], "repo": answer["repo"]}
        if answer["ref"] not in (None, "HEAD"):
            got["ref"] = answer["ref"]
        if answer["path"]:
            got.update(path=answer["path"], pathKind=answer["path_kind"])
        assert got == want, address
    split = page.evaluate("""async (specs) => {
        const js = await import("/assets/js/binder.js");
        return specs.map(([p, s]) => [js.splitSpec(p, s).repo, js.specRef(p, s), js.shortName(p, s)]);
    }""", [[p, s] for p, s, *_ in SPECS])
    assert split == [[repo, ref, name] for _, _, repo, ref, name in SPECS]
    steps = page.evaluate("""async (lines) => {
        const js = await import("/assets/js/binder.js");
        return lines.map((line) => js.buildStep(line));
    }""", ["Step 12/51 : RUN pip install -r requirements.txt",
           "#14 [stage-0 12/51] RUN pip install -r requirements.txt",
           "#6 [ 1/24] FROM docker.io/library/buildpack-deps:jammy",
           "#3 [internal] load metadata for docker.io/library/buildpack-deps:jammy",
           "Collecting six (Step 3 of the tutorial)", "Step 9/4 : nonsense"])
    assert steps == [{"n": 12, "m": 51}, {"n": 12, "m": 51}, {"n": 1, "m": 24}, None, None, None]
    # What the home page writes reads back as the same repository and ref.
    back = page.evaluate("""async () => {
        const js = await import("/assets/js/binder.js");
        const spec = js.buildSpec("git", "https://host.org/r.git", "feature/x").split("/").slice(1).join("/");
        return [spec, js.splitSpec("git", spec)];
    }""")
    assert back == ["https%3A%2F%2Fhost.org%2Fr.git/feature/x",
                    {"repo": "https://host.org/r.git", "ref": "feature/x"}]
