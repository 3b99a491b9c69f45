"""The launch pages in a real Chromium against a real ``binderless serve``.

Few and slow on purpose: a launch builds (or reuses) an environment and starts
JupyterLab. Each test saves screenshots to ``test-artifacts/screenshots/``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

import pytest

from ..conftest import LiveServer, file_spec
from . import browser as chromium
from .browser import PHONE, screenshot

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page, Route

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

# The fixtures live in browser.py; bind them here so that pytest finds them.
browser = chromium.browser
page = chromium.page

LAUNCH_TIMEOUT_MS = 180_000  # a first build of the environment included
LAB_TIMEOUT_MS = 60_000

# Reports every change of the loading page's phase and status text to Python, so the
# sequence survives the redirect into JupyterLab.
RECORD_STATUS = """
if (location.pathname.startsWith("/v2/")) {
  document.addEventListener("DOMContentLoaded", () => {
    const main = document.getElementById("launch");
    const status = document.getElementById("status");
    const report = () => window.recordStatus(main.dataset.phase || "", status.textContent);
    report();
    new MutationObserver(report).observe(main, { attributes: true, attributeFilter: ["data-phase"] });
    new MutationObserver(report).observe(status, { childList: true, characterData: true, subtree: true });
  });
}
"""

MISSING_REPO_SPEC = "git/" + quote("file:///nonexistent", safe="") + "/HEAD"


def record_statuses(page: Page) -> list[tuple[str, str]]:
    seen: list[tuple[str, str]] = []

    def record(phase: str, text: str) -> None:
        if not seen or seen[-1] != (phase, text):
            seen.append((phase, text))

    page.expose_function("recordStatus", record)
    page.add_init_script(RECORD_STATUS)
    return seen


def collect_page_errors(page: Page) -> list[str]:
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    return errors


def expect_failure_shown(page: Page) -> None:
    """The failure panel shows the server's message as text, and the log is open."""
    page.locator("#failure").wait_for(state="visible")
    message = page.locator("#failure-message")
    assert "/nonexistent" in message.inner_text()
    assert message.locator("*").count() == 0  # plain text, never markup
    assert page.locator("#status").inner_text() == "Launch failed."
    assert page.locator("#launch").get_attribute("data-state") == "failed"
    assert page.locator("#log").is_visible()
    assert page.locator("#log-toggle").get_attribute("aria-expanded") == "true"
    assert "/nonexistent" in page.locator("#log").inner_text()
    assert page.title().startswith("Failed: ")
    assert page.get_by_role("link", name="launch another repository").get_attribute("href") == "/"


def test_bundled_example_launches_into_jupyterlab(
    page: Page, live_server: LiveServer, fixture_repo: Callable[[str], Path]
) -> None:
    repo = fixture_repo("python-requirements")
    statuses = record_statuses(page)
    errors = collect_page_errors(page)
    navigations: list[str] = []
    page.on("request", lambda r: navigations.append(r.url) if r.is_navigation_request() else None)

    page.goto(live_server.url("/v2/" + file_spec(repo) + "?labpath=index.ipynb"))
    assert page.locator("#heading").inner_text().endswith("python-requirements")
    page.wait_for_function(
        "['fetching', 'building', 'built', 'launching']"
        ".includes(document.getElementById('launch').dataset.phase)")
    screenshot(page, "launch-in-progress")

    page.wait_for_url(re.compile(r"/user/[^/]+/(doc/tree/index\.ipynb|lab)"),
                      timeout=LAUNCH_TIMEOUT_MS)
    # The page went to the session with its token; Jupyter then swaps the token for a cookie.
    session = next(url for url in navigations if "/user/" in url)
    assert re.search(r"/user/[0-9a-f]+/doc/tree/index\.ipynb\?token=[0-9a-f]+$", session), session
    phases = [phase for phase, _ in statuses]
    texts = [text for _, text in statuses]
    assert "fetching" in phases and "launching" in phases, statuses
    assert phases.index("fetching") < phases.index("launching"), statuses
    assert "Fetching the repository…" in texts and "Starting JupyterLab…" in texts, statuses
    assert not errors, errors

    # JupyterLab opens the repository's notebook (its tab is hidden in single-document
    # mode, but present) and renders its code.
    page.locator(".jp-Notebook .jp-Cell").first.wait_for(timeout=LAB_TIMEOUT_MS)
    page.get_by_text("print(six.__name__)").first.wait_for(timeout=LAB_TIMEOUT_MS)
    tab = page.locator(".lm-TabBar-tab[data-type='document-title']", has_text="index.ipynb")
    tab.first.wait_for(state="attached", timeout=LAB_TIMEOUT_MS)

    # The kernel runs in the repository's environment (six comes from requirements.txt),
    # over the session proxy's WebSocket.
    # Run the cell once the kernel is connected and idle: JupyterLab ignores a run
    # requested while its session is still starting, as a person would see.
    page.get_by_text("Python 3 (ipykernel) | Idle").first.wait_for(timeout=LAB_TIMEOUT_MS)
    page.locator(".jp-Notebook .jp-Cell .jp-InputArea-editor").first.click()
    page.keyboard.press("Shift+Enter")
    output = page.locator(".jp-OutputArea-output", has_text="six")
    output.first.wait_for(timeout=LAB_TIMEOUT_MS)
    screenshot(page, "launch-jupyterlab")


def test_failed_launch_shows_message_and_log(page: Page, live_server: LiveServer) -> None:
    errors = collect_page_errors(page)
    page.goto(live_server.url("/v2/" + MISSING_REPO_SPEC))
    expect_failure_shown(page)
    screenshot(page, "failed-desktop")
    assert not errors, errors


def test_failed_launch_on_a_phone(browser: Browser, live_server: LiveServer) -> None:
    context = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True,
                                  device_scale_factor=2)
    try:
        phone = context.new_page()
        errors = collect_page_errors(phone)
        phone.goto(live_server.url("/v2/" + MISSING_REPO_SPEC))
        expect_failure_shown(phone)
        # Nothing wider than the screen: no sideways scrolling on a phone.
        width = phone.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"], width
        screenshot(phone, "failed-phone")
        assert not errors, errors
    finally:
        context.close()


def test_lost_connection_offers_a_retry_and_does_not_loop(
    page: Page, live_server: LiveServer
) -> None:
    errors = collect_page_errors(page)
    builds: list[str] = []

    def drop(route: Route) -> None:
        builds.append(route.request.url)
        route.abort("connectionreset")

    page.route("**/build/**", drop)
    page.goto(live_server.url("/v2/gh/binder-examples/requirements/main"))
    lost = page.locator("#lost")
    lost.wait_for(state="visible")
    assert "Lost connection to the server" in lost.inner_text()
    assert page.title().startswith("Disconnected: binder-examples/requirements")
    page.wait_for_timeout(1500)  # EventSource would have reconnected by itself by now
    assert len(builds) == 1, builds
    screenshot(page, "lost-connection")

    page.get_by_role("button", name="Retry").click()
    page.wait_for_function("document.getElementById('launch').dataset.state === 'lost'")
    assert len(builds) == 2, builds
    assert builds[0].endswith("/build/gh/binder-examples/requirements/main")
    assert not errors, errors


def test_home_page_builds_link_and_badge_from_a_pasted_github_url(
    page: Page, live_server: LiveServer
) -> None:
    errors = collect_page_errors(page)
    page.goto(live_server.url("/"))
    origin = live_server.url("")
    repo_field = page.locator("#repo")
    repo_field.focus()
    # A real paste event, as the browser fires it for Ctrl+V.
    repo_field.evaluate(
        """(field, text) => {
             const data = new DataTransfer();
             data.setData("text/plain", text);
             field.dispatchEvent(new ClipboardEvent("paste", {clipboardData: data, bubbles: true,
                                                              cancelable: true}));
           }""",
        "https://github.com/binder-examples/requirements/tree/main",
    )

    link = f"{origin}/v2/gh/binder-examples/requirements/main"
    # The server reads the address (GET /api/resolve) and the page fills its form.
    page.wait_for_function("t => document.getElementById('link').textContent === t", arg=link)
    assert page.locator("#provider").input_value() == "gh"
    assert repo_field.input_value() == "binder-examples/requirements"
    assert page.locator("#ref").input_value() == "main"
    assert page.locator("#link").inner_text() == link
    assert page.locator("#snippet-md").inner_text() == (
        f"[![Binder]({origin}/badge_logo.svg)]({link})")

    # A file to open becomes labpath=; the URL toggle makes it urlpath=.
    page.locator("#path").fill("notebooks/intro.ipynb")
    assert page.locator("#link").inner_text() == link + "?labpath=notebooks/intro.ipynb"
    page.get_by_text("URL", exact=True).click()
    page.locator("#path").fill("lab")
    assert page.locator("#link").inner_text() == link + "?urlpath=lab"
    screenshot(page, "home")

    # The copy button puts the link on the clipboard.
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=origin)
    page.locator("#copy-link").click()
    expect_text = link + "?urlpath=lab"
    page.wait_for_function("document.getElementById('copy-link').textContent === 'Copied'")
    assert page.evaluate("navigator.clipboard.readText()") == expect_text

    # git and gl specs carry their repository as one encoded path segment.
    page.locator("#path").fill("")
    page.locator("#provider").select_option("git")
    repo_field.fill("https://example.org/org/repo.git")
    page.wait_for_function("t => document.getElementById('link').textContent === t",
                           arg=f"{origin}/v2/git/https%3A%2F%2Fexample.org%2Forg%2Frepo.git/main")
    page.locator("#provider").select_option("gl")
    repo_field.fill("group/sub/project")
    assert page.locator("#link").inner_text() == f"{origin}/v2/gl/group%2Fsub%2Fproject/main"
    assert not errors, errors


def test_readme_first_command_serves_home_and_launches_the_example(page: Page,
                                                                  tmp_path: Path) -> None:
    """``python3 dev.py serve`` as the README says: home page, then the bundled example."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from binderless.cli import example_link

    from ..conftest import ROOT, free_port

    port = free_port()
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "dev.py", "serve", "--port", str(port), "--state-dir",
             str(tmp_path / "state")], cwd=ROOT, stdout=out, stderr=out,
            env={**os.environ, "BINDERLESS_FINAL_LINGER_SECONDS": "0"})
    try:
        deadline = time.monotonic() + LAUNCH_TIMEOUT_MS / 1000
        while "The example is running" not in log.read_text() and time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()
            time.sleep(0.25)
        base = f"http://127.0.0.1:{port}"
        assert f"{base}{example_link()}" in log.read_text()

        page.goto(base + "/")
        page.get_by_role("button", name=re.compile("launch", re.IGNORECASE)).first.wait_for()
        screenshot(page, "readme-home")

        statuses = record_statuses(page)
        page.goto(base + example_link())
        page.wait_for_url(re.compile(r"/user/[^/]+/doc/tree/welcome\.ipynb"),
                          timeout=LAUNCH_TIMEOUT_MS)
        phases = [phase for phase, _ in statuses]
        assert "fetching" in phases and "launching" in phases, statuses
        heading = page.locator(".jp-RenderedMarkdown h1", has_text="Welcome to binderless")
        heading.first.wait_for(timeout=LAB_TIMEOUT_MS)
        screenshot(page, "readme-example-jupyterlab")
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    assert "Stopping" in log.read_text()
