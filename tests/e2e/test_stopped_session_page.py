"""A stopped session's address, opened in a browser, shows a page that says what happened
and launches the same link again; API clients keep getting JSON (Chromium, desktop and
phone)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from binderless.backends.protocols import Route, SessionRecord
from binderless.local import local_service
from binderless.settings import Settings
from tests.functional.inprocess import serve_in_thread

from . import browser as chromium
from .browser import DESKTOP, PHONE, new_context, screenshot

if TYPE_CHECKING:
    from playwright.sync_api import Browser

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

browser = chromium.browser

SESSION = "5e55104f00d5e55"
RUNNING = "0ddba11c0ffee00"
LAUNCH = "a" * 32


# The server starts before the browser (``server`` comes first in each test's arguments):
# Playwright's sync API keeps an event loop running in this thread while it is open.
@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    state: Path = tmp_path_factory.mktemp("stopped") / "state"
    service = local_service(Settings(state_dir=state))
    store = service.store
    store.create_launch(LAUNCH, "gh", "binder-examples/requirements/HEAD", 1.0)
    store.add_session(SessionRecord(
        session_id=SESSION, launch_id=LAUNCH, owner="", repo_url="https://github.com/x/y",
        resolved_ref="abc", image_key="k", home="", target="", token="t", backend_id="",
        status="running", created_at=1.0, last_activity=1.0))
    store.update_session(SESSION, status="stopped", stopped_at=2.0, stop_reason="idle")
    with serve_in_thread(service) as base:
        # A running session, added once the server has started (which closes
        # sessions it finds at start). Its server is never asked: the token check comes first.
        store.add_session(SessionRecord(
            session_id=RUNNING, launch_id=LAUNCH, owner="", repo_url="https://github.com/x/y",
            resolved_ref="abc", image_key="k", home="", target="", token="t" * 64, backend_id="",
            status="starting", created_at=1.0, last_activity=1.0))
        service.routes.add(Route(session_id=RUNNING, target="http://127.0.0.1:9", token="t" * 64))
        yield base


@pytest.mark.parametrize(("viewport", "phone"), [(DESKTOP, False), (PHONE, True)],
                         ids=["desktop", "phone"])
def test_a_stopped_session_shows_a_page_that_launches_it_again(
        server: str, browser: Browser, viewport: dict[str, int], phone: bool) -> None:
    context = new_context(browser, viewport, phone=phone)
    try:
        page = context.new_page()
        response = page.goto(f"{server}/user/{SESSION}/lab/tree/index.ipynb")
        assert response is not None and response.status == 404
        heading = page.get_by_role("heading", name="This session has stopped")
        assert heading.is_visible()
        body = page.locator("main").inner_text()
        assert "idle for too long" in body and "{" not in body  # words, not JSON
        again = page.get_by_role("link", name="Launch it again")
        assert again.is_visible()
        box = again.bounding_box()
        assert box is not None and box["x"] + box["width"] <= viewport["width"]
        screenshot(page, f"stopped-session-{'phone' if phone else 'desktop'}")
        again.click()
        page.wait_for_url(f"{server}/v2/gh/binder-examples/requirements/HEAD")
    finally:
        context.close()


def test_an_unknown_session_says_so(server: str, browser: Browser) -> None:
    context = new_context(browser, DESKTOP)
    try:
        page = context.new_page()
        page.goto(f"{server}/user/0123456789abcdef/lab")
        assert page.get_by_role("heading", name="No session here").is_visible()
        assert page.get_by_role("link", name="Launch a repository").is_visible()
    finally:
        context.close()


def test_api_clients_keep_json(server: str) -> None:
    answer = httpx.get(f"{server}/user/{SESSION}/api/kernels",
                       headers={"Accept": "application/json"})
    assert answer.status_code == 404
    assert answer.headers["content-type"].startswith("application/json")
    assert answer.json()["status_code"] == 404


def test_a_running_session_without_its_token_shows_a_page(server: str, browser: Browser) -> None:
    context = new_context(browser, PHONE, phone=True)
    try:
        page = context.new_page()
        response = page.goto(f"{server}/user/{RUNNING}/lab")
        assert response is not None and response.status == 403
        assert page.get_by_role("heading", name="This address is missing its key").is_visible()
        assert "?token=" in page.locator("main").inner_text()
        assert page.get_by_role("link", name="Launch a repository").is_visible()
        screenshot(page, "session-without-token-phone")
    finally:
        context.close()
    api = httpx.get(f"{server}/user/{RUNNING}/api/kernels")
    assert api.status_code == 403 and "token" in api.json()["message"]
