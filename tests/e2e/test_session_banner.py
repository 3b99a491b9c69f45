"""The countdown banner inside JupyterLab, as a person sees it (Chromium).

The page and the status answers are served by Playwright's router (nothing leaves the
browser): a stand-in for a JupyterLab page with the banner's real script, and
``/user/<id>/.binderless/status`` answering what each case needs. What is asserted is what
shows: visibility, bounding boxes and text, at desktop and phone sizes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

from tests.conftest import ROOT

from . import browser as chromium
from .browser import DESKTOP, PHONE, new_context, screenshot

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page, Route

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

browser = chromium.browser

ORIGIN = "http://127.0.0.1:9"  # never reached: every request is answered by the router
SESSION = "abc123"
SCRIPT = (ROOT / "site" / "assets" / "js" / "session-banner.js").read_text()
LAB = f"""<!doctype html><html><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>JupyterLab</title>
<style>html, body {{ margin: 0; height: 100%; }}
#notebook {{ position: absolute; inset: 0; overflow: auto; font: 16px sans-serif; }}</style>
<script src="/assets/js/session-banner.js" defer data-binderless-session="{SESSION}"></script>
</head><body><main id="notebook">{"<p>In [1]: print('a cell of the notebook')</p>" * 60}
</main></body></html>"""


def status(**changes: Any) -> dict[str, Any]:
    base = {"session_id": SESSION, "running": True, "signed_in": False, "persistent": False,
            "project": None, "idle_seconds_left": 599.0, "age_seconds_left": 21000.0,
            "warning_seconds": 300.0, "download_url": f"/user/{SESSION}/.binderless/download",
            "projects_url": None}
    return {**base, **changes}


def open_lab(browser: Browser, viewport: dict[str, int], answer: dict[str, Any],
             *, phone: bool = False) -> Iterator[Page]:
    context = new_context(browser, viewport, phone=phone)
    current = {"status": answer}

    def serve(route: Route) -> None:
        path = route.request.url[len(ORIGIN):].split("?", 1)[0]
        if path == "/assets/js/session-banner.js":
            route.fulfill(body=SCRIPT, content_type="text/javascript")
        elif path.endswith("/.binderless/status") or path.endswith("/.binderless/keepalive"):
            route.fulfill(body=json.dumps(current["status"]), content_type="application/json")
        elif path == f"/user/{SESSION}/lab":
            route.fulfill(body=LAB, content_type="text/html")
        else:
            route.fulfill(status=404, body="")

    context.route("**/*", serve)
    page = context.new_page()
    page.goto(f"{ORIGIN}/user/{SESSION}/lab")
    page.wait_for_function(
        "document.getElementById('binderless-banner') !== null")
    # The first status answer has been read once the banner's timer has rendered it.
    page.wait_for_timeout(1200)
    try:
        yield page
    finally:
        context.close()


@pytest.mark.parametrize(("viewport", "phone"), [(DESKTOP, False), (PHONE, True)],
                         ids=["desktop", "phone"])
def test_no_banner_before_the_warning_window(browser: Browser, viewport: dict[str, int],
                                             phone: bool) -> None:
    for page in open_lab(browser, viewport, status(), phone=phone):
        banner = page.locator("#binderless-banner")
        assert not banner.is_visible()
        assert banner.bounding_box() is None  # it takes no room at all
        # Nothing covers the notebook: the element at the bottom centre is the notebook's.
        size = page.viewport_size or viewport
        covering = page.evaluate(
            "([x, y]) => document.elementFromPoint(x, y).closest('#notebook') !== null",
            [size["width"] // 2, size["height"] - 20])
        assert covering
        screenshot(page, f"banner-none-{'phone' if phone else 'desktop'}", full_page=False)


@pytest.mark.parametrize(("viewport", "phone"), [(DESKTOP, False), (PHONE, True)],
                         ids=["desktop", "phone"])
def test_the_warning_counts_down_with_text_and_no_projects_link_for_visitors(
        browser: Browser, viewport: dict[str, int], phone: bool) -> None:
    for page in open_lab(browser, viewport, status(idle_seconds_left=200.0), phone=phone):
        banner = page.locator("#binderless-banner")
        assert banner.is_visible()
        text = banner.inner_text()
        assert re.search(r"This session stops in 3:[0-2]\d if it stays idle\.", text), text
        assert "Its files will be gone then." in text
        assert page.get_by_role("button", name="Keep me running").is_visible()
        assert page.get_by_role("link", name="Download your work").is_visible()
        assert not page.get_by_role("link", name="Your projects").is_visible()
        box = banner.bounding_box()
        size = page.viewport_size or viewport
        assert box is not None and box["width"] <= size["width"]
        assert box["y"] + box["height"] <= size["height"]  # on screen, at the bottom
        screenshot(page, f"banner-warning-{'phone' if phone else 'desktop'}", full_page=False)


def test_signed_in_people_see_their_project_and_the_projects_link(browser: Browser) -> None:
    answer = status(idle_seconds_left=120.0, signed_in=True, persistent=True, project="book",
                    projects_url="/projects")
    for page in open_lab(browser, DESKTOP, answer):
        banner = page.locator("#binderless-banner")
        assert banner.is_visible()
        assert "Your files are kept in your project “book”." in banner.inner_text()
        assert page.get_by_role("link", name="Your projects").is_visible()
        assert not page.get_by_role("link", name="Download your work").is_visible()


def test_near_the_age_limit_keep_me_running_is_not_offered(browser: Browser) -> None:
    for page in open_lab(browser, DESKTOP, status(age_seconds_left=90.0)):
        banner = page.locator("#binderless-banner")
        assert banner.is_visible()
        assert "reaches its time limit in 1:" in banner.inner_text()
        assert not page.get_by_role("button", name="Keep me running").is_visible()


def test_a_stopped_session_says_so(browser: Browser) -> None:
    for page in open_lab(browser, PHONE, status(running=False), phone=True):
        banner = page.locator("#binderless-banner")
        assert banner.is_visible()
        assert banner.inner_text().strip() == "This session has stopped."
        assert not page.get_by_role("button", name="Keep me running").is_visible()
        screenshot(page, "banner-stopped-phone", full_page=False)
