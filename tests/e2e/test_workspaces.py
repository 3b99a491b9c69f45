"""Persistent workspaces in the local mode: a real ``binderless serve``, real JupyterLab and
Debian's Chromium. Sign in, launch, write a file, let the session be culled (a short idle
limit, not a long sleep), relaunch the same link: the file is there. Nobody else reaches
the session or the files. Anonymous sessions offer their files as a zip instead.
"""

from __future__ import annotations

import io
import re
import sqlite3
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from binderless.identity import IDENTITY_COOKIE, CookieSigner, Identity

from ..conftest import (
    FIXTURE_REPOS,
    LiveServer,
    file_spec,
    make_git_repo,
    start_server,
    stop_server,
)
from . import browser as chromium
from .browser import DESKTOP, screenshot

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Page

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

browser = chromium.browser

SECRET = "e2e-workspaces-secret-0123456789abcdef"
IDLE_SECONDS = 6
LAUNCH_TIMEOUT_MS = 180_000
LAB_TIMEOUT_MS = 60_000
PROJECT = "python-requirements"
SESSION_URL = re.compile(r"/user/([0-9a-f]+)/lab")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    root = tmp_path_factory.mktemp("workspaces")
    running = start_server(root / "state", "--cull-idle", str(IDLE_SECONDS), env={
        "BINDERLESS_CULL_INTERVAL_SECONDS": "0.5",
        "BINDERLESS_AUTH_SECRET": SECRET,
        # The banner shows from the start: the idle limit is shorter than the warning.
        "BINDERLESS_CULL_WARNING_SECONDS": "600",
        "BINDERLESS_LOCAL_USER_NAME": "Ada",
    })
    try:
        yield running
    finally:
        stop_server(running)


@pytest.fixture(scope="module")
def link(tmp_path_factory: pytest.TempPathFactory) -> str:
    repo = make_git_repo(FIXTURE_REPOS / PROJECT, tmp_path_factory.mktemp("repo") / PROJECT)
    return "/v2/" + file_spec(repo)


def context_for(browser: Browser, identity: Identity | None = None) -> BrowserContext:
    context = browser.new_context(viewport=DESKTOP, accept_downloads=True)
    context.set_default_timeout(30_000)
    if identity is not None:  # a cookie this server signs: another signed-in person
        value = CookieSigner(SECRET.encode()).identity_cookie(identity, 3600)
        context.add_cookies([{"name": IDENTITY_COOKIE, "value": value,
                              "domain": "127.0.0.1", "path": "/"}])
    return context


def open_session(page: Page, server: LiveServer, link: str) -> tuple[str, str]:
    """Launch ``link`` from the browser; returns the session id and its token."""
    page.goto(server.url(link))
    return reach_session(page)


def reach_session(page: Page) -> tuple[str, str]:
    """Wait for the loading page to open the session; its id and token."""
    page.wait_for_url(SESSION_URL, timeout=LAUNCH_TIMEOUT_MS)
    match = SESSION_URL.search(page.url)
    assert match is not None
    page.locator(".jp-DirListing-content").first.wait_for(timeout=LAB_TIMEOUT_MS)
    token = page.evaluate(
        "JSON.parse(document.getElementById('jupyter-config-data').textContent).token")
    return match.group(1), str(token)


def contents(page: Page, session_id: str, token: str, method: str, path: str,
             body: str | None = None) -> dict[str, object]:
    """Jupyter's contents API, called from the page (its cookies included)."""
    return dict(page.evaluate("""async ([url, token, method, body]) => {
        const options = {method, headers: {Authorization: `token ${token}`,
                                           "Content-Type": "application/json"}};
        if (body !== null) options.body = JSON.stringify(
            {type: "file", format: "text", content: body});
        const answer = await fetch(url, options);
        return {status: answer.status, body: await answer.text()};
    }""", [f"/user/{session_id}/api/contents/{path}", token, method, body]))


def stop_reason(server: LiveServer, session_id: str) -> tuple[str, str]:
    with sqlite3.connect(server.state_dir / "binderless.sqlite3") as db:
        row = db.execute("SELECT status, stop_reason FROM sessions WHERE session_id = ?",
                         (session_id,)).fetchone()
    return tuple(row)  # type: ignore[return-value]


def test_signed_in_files_survive_culling_and_stay_private(browser: Browser, server: LiveServer,
                                                          link: str) -> None:
    ada = context_for(browser)
    page = ada.new_page()
    # Sign in from the projects page.
    page.goto(server.url("/projects"))
    page.locator("#sign-in").click()
    page.get_by_role("button", name="Sign in as Ada").click()
    page.wait_for_url(re.compile(r"/projects$"))
    page.get_by_text("Signed in as Ada.").wait_for()
    page.locator("#projects-empty").wait_for(state="visible")

    # Launch: the project folder is seeded, the server opens in it, the banner counts down.
    session_id, token = open_session(page, server, link + "?urlpath=lab/tree/index.ipynb")
    banner = page.locator("#binderless-banner")
    banner.wait_for(state="visible", timeout=LAB_TIMEOUT_MS)
    assert re.search(r"stops in \d+:\d\d if it stays idle", banner.inner_text())
    assert f"Your files are kept in your project “{PROJECT}”" in banner.inner_text()
    assert page.locator("#binderless-download").is_hidden()
    page.locator("#binderless-keep").click()
    screenshot(page, "workspaces-banner")
    written = contents(page, session_id, token, "PUT", "mine.txt", "kept across sessions")
    assert written["status"] in (200, 201), written
    home_file = server.state_dir / "homes" / "local" / PROJECT / "mine.txt"
    assert home_file.read_text() == "kept across sessions"

    # Nobody else reaches the session or the files: another signed-in person, or anyone
    # without a sign-in, gets 403 even with the token.
    other = context_for(browser, Identity("mallory", "Mallory", via="local"))
    try:
        intruder = other.new_page()
        answer = intruder.goto(server.url(f"/user/{session_id}/lab?token={token}"))
        assert answer is not None and answer.status == 403
        stolen = intruder.request.get(server.url(f"/user/{session_id}/.binderless/download"
                                                 f"?token={token}"))
        assert stolen.status == 403
        assert intruder.request.get(server.url("/api/projects")).json()["projects"] == []
        deleted = intruder.request.delete(server.url(f"/api/projects/{PROJECT}"))
        assert deleted.status == 404
    finally:
        other.close()
    anonymous = httpx.get(server.url(f"/user/{session_id}/api/contents/mine.txt"),
                          params={"token": token})
    assert anonymous.status_code == 403
    assert home_file.exists()

    # Leave JupyterLab: with no traffic the session is culled after the idle limit, and
    # the projects page shows it stopped. The files stay.
    page.goto(server.url("/projects"))
    row = page.locator(f"[data-project='{PROJECT}']")
    row.wait_for()
    row.locator(".state", has_text="stopped").wait_for(timeout=(IDLE_SECONDS + 20) * 1000)
    assert stop_reason(server, session_id) == ("stopped", "idle")
    assert home_file.read_text() == "kept across sessions"
    screenshot(page, "workspaces-projects")

    # Relaunch the same link (the projects page's Open is that link, with the path it
    # opened): the file is there, and the notebook opens again.
    reopen = row.get_by_role("link", name=f"Open {PROJECT}")
    assert reopen.get_attribute("href") == link + "?urlpath=lab/tree/index.ipynb"
    reopen.click()
    new_session, new_token = reach_session(page)
    assert "/lab/tree/index.ipynb" in page.url  # (JupyterLab drops ?token once loaded)
    assert new_session != session_id
    page.locator(".jp-DirListing-item", has_text="mine.txt").first.wait_for(
        timeout=LAB_TIMEOUT_MS)
    kept = contents(page, new_session, new_token, "GET", "mine.txt")
    assert kept["status"] == 200 and "kept across sessions" in str(kept["body"])
    screenshot(page, "workspaces-relaunched")

    # Delete (asks first): the folder goes, the session with it.
    page.goto(server.url("/projects"))
    row = page.locator(f"[data-project='{PROJECT}']")
    row.get_by_role("button", name=f"Delete {PROJECT}").click()
    page.get_by_role("button", name="Keep it").click()
    assert home_file.exists()
    row.get_by_role("button", name=f"Delete {PROJECT}").click()
    page.get_by_role("button", name="Delete for good").click()
    page.locator("#projects-empty").wait_for(state="visible")
    assert not home_file.parent.exists()
    assert stop_reason(server, new_session) == ("stopped", "stopped by its owner")
    ada.close()


def test_anonymous_session_offers_a_download_of_its_files(browser: Browser, server: LiveServer,
                                                          link: str) -> None:
    context = context_for(browser)
    try:
        page = context.new_page()
        session_id, token = open_session(page, server, link)
        banner = page.locator("#binderless-banner")
        banner.wait_for(state="visible", timeout=LAB_TIMEOUT_MS)
        # Its changes are kept for this browser (restore_days), not gone with it.
        assert "will be kept for this browser for 7 days" in banner.inner_text()
        assert page.locator("#binderless-keep").is_visible()
        with page.expect_download() as started:
            page.locator("#binderless-download").click()
        saved = Path(started.value.path())
        with zipfile.ZipFile(io.BytesIO(saved.read_bytes())) as archive:
            names = set(archive.namelist())
            assert {"README.md", "index.ipynb", "requirements.txt"} <= names, names
            assert archive.read("requirements.txt").decode().strip()
        assert httpx.get(server.url(f"/user/{session_id}/.binderless/status")).status_code == 403
        status = httpx.get(server.url(f"/user/{session_id}/.binderless/status"),
                           params={"token": token}).json()
        assert status["persistent"] is False and status["signed_in"] is False
    finally:
        context.close()
