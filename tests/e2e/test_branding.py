"""Operator branding as visitors see it (Chromium): the home and loading pages carry the
operator's name, logo, accent colour, announcement and footer, from settings alone, and
so does every other HTML page the server makes (not found, a stopped or missing session,
a session's refusals, sign-in, projects, environments), while a session's own pages are
never touched; and ``binderless serve`` refuses to start with an invalid branding setting."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from binderless.backends.protocols import Route, SessionRecord
from binderless.local import local_service
from binderless.service import LaunchService
from binderless.settings import Settings
from tests.functional.inprocess import serve_in_thread

from . import browser as chromium
from .browser import DESKTOP, PHONE, new_context, screenshot

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

browser = chromium.browser

ACCENT = "#a01060"
ACCENT_RGB = "rgb(160, 16, 96)"
LOGO = ("<svg xmlns='http://www.w3.org/2000/svg' width='28' height='28'>"
        "<rect width='28' height='28' fill='#a01060'/></svg>")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, LaunchService]]:
    root = tmp_path_factory.mktemp("branding")
    logo = root / "lab-logo.svg"
    logo.write_text(LOGO)
    service = local_service(Settings(
        state_dir=root / "state", sign_in="off", final_linger_seconds=1.0,
        brand_name="Lab Binder",
        brand_logo=str(logo), brand_accent=ACCENT,
        brand_announcement='Maintenance on Friday: <a href="/help.html">details</a>',
        brand_footer='Run by the Lab. <a href="https://lab.example/privacy">Privacy</a>'))
    with serve_in_thread(service) as base:
        yield base, service


@pytest.fixture(scope="module")
def server(served: tuple[str, LaunchService]) -> str:
    return served[0]


def check_branded(page: Page) -> None:
    brand = page.locator("header .brand")
    assert brand.inner_text().strip() == "Lab Binder"
    assert "binderless" not in brand.inner_text()
    logo = page.locator("header .brand img")
    assert logo.get_attribute("src") == "/branding/logo.svg"
    assert logo.evaluate("img => img.complete && img.naturalWidth > 0")  # served, and loads
    announcement = page.get_by_role("note")
    assert announcement.is_visible()
    assert announcement.inner_text() == "Maintenance on Friday: details"
    footer = page.locator("footer.brand-footer")
    assert footer.is_visible() and "Run by the Lab." in footer.inner_text()
    assert footer.get_by_role("link", name="Privacy").get_attribute("href") == \
        "https://lab.example/privacy"
    assert "Lab Binder" in page.title()


@pytest.mark.parametrize(("viewport", "phone"), [(DESKTOP, False), (PHONE, True)],
                         ids=["desktop", "phone"])
def test_the_home_page_wears_the_operators_branding(server: str, browser: Browser,
                                                    viewport: dict[str, int],
                                                    phone: bool) -> None:
    context = new_context(browser, viewport, phone=phone)
    try:
        page = context.new_page()
        page.goto(server + "/")
        check_branded(page)
        launch = page.locator("#launch")
        assert launch.evaluate("b => getComputedStyle(b).backgroundColor") == ACCENT_RGB
        screenshot(page, f"branding-home-{'phone' if phone else 'desktop'}")
    finally:
        context.close()


def test_the_loading_page_wears_it_from_its_first_paint(server: str, browser: Browser) -> None:
    context = new_context(browser, DESKTOP)
    try:
        page = context.new_page()
        # Before any script runs, the colours are already the operator's (no flash).
        page.goto(server + "/v2/git/file%3A%2F%2F%2Fnowhere%2Fat-all/HEAD",
                  wait_until="commit")
        page.wait_for_selector("main#launch", state="attached")
        colour = page.evaluate(
            "getComputedStyle(document.documentElement).getPropertyValue('--accent').trim()")
        assert colour == ACCENT
        page.wait_for_load_state("load")
        check_branded(page)
        page.locator("#failure").wait_for()  # the launch fails: nothing at that path
        retry = page.locator("#try-again")
        assert retry.evaluate("b => getComputedStyle(b).backgroundColor") == ACCENT_RGB
        screenshot(page, "branding-loading-desktop")
    finally:
        context.close()


def test_serve_refuses_to_start_with_an_invalid_branding_setting(tmp_path: Path) -> None:
    env = {**os.environ, "BINDERLESS_BRAND_ACCENT": "hotpink",
           "BINDERLESS_STATE_DIR": str(tmp_path / "state")}
    done = subprocess.run([sys.executable, "-m", "binderless", "serve", "--port", "9"],
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "brand_accent must be a colour" in done.stderr + done.stdout


# ----- the server's other pages (HTTP: what it sends is what any browser gets) -----------

PAGE = {"Accept": "text/html,application/xhtml+xml"}
SESSION_PAGE = b"<!doctype html><html><head><title>JupyterLab</title></head>" \
    b'<body><a class="brand" href="/">binderless</a></body></html>'


def assert_branded(text: str) -> None:
    """The operator's name in the header, the colours in the head, once, and the footer."""
    assert text.count('<style id="branding">') == 1
    assert f"--accent:{ACCENT};" in text
    header = re.search(r'<a class="brand" href="/">(.*?)</a>', text, re.DOTALL)
    assert header is not None and header.group(1).endswith("Lab Binder")
    assert 'src="/branding/logo.svg"' in header.group(1)
    assert "Maintenance on Friday" in text and "Run by the Lab." in text


@pytest.fixture(scope="module")
def session_server() -> Iterator[str]:
    """A stand-in for a session's Jupyter server: the same HTML page at every address."""
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # http.server's name for GET
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(SESSION_PAGE)))
            self.end_headers()
            self.wfile.write(SESSION_PAGE)

        def log_message(self, *_args: object) -> None:
            pass

    upstream = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=upstream.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{upstream.server_address[1]}"
    finally:
        upstream.shutdown()
        upstream.server_close()


def running(service: LaunchService, session_id: str, target: str, token: str,
            owner: str = "") -> None:
    """A session the store knows as running at ``target`` (no launch behind it)."""
    now = service.clock()
    service.store.add_session(SessionRecord(
        session_id=session_id, launch_id="l-" + session_id, owner=owner,
        repo_url="https://example.org/repo", resolved_ref="a" * 40, image_key="k", home="",
        target="", token=token, backend_id="", status="starting", created_at=now,
        last_activity=now))
    service.routes.add(Route(session_id=session_id, target=target, token=token, owner=owner))


def test_every_page_the_server_makes_wears_the_branding(
        served: tuple[str, LaunchService], session_server: str) -> None:
    base, service = served
    running(service, "a1" * 8, session_server, "tok-" + "1" * 28)
    running(service, "b2" * 8, session_server, "tok-" + "2" * 28, owner="someone")
    pages = {
        "/no/such/page": ("Nothing here", 404),
        "/user/" + "c3" * 8 + "/lab": ("No session here", 404),
        "/user/" + "a1" * 8 + "/lab": ("This address is missing its key", 403),
        "/user/" + "b2" * 8 + "/lab": ("This session belongs to someone else", 403),
        "/projects": ("Your projects", 200),
        "/environments": ("Environments", 200),
    }
    with httpx.Client(base_url=base, headers=PAGE, timeout=30) as client:
        for path, (title, status) in pages.items():
            answer = client.get(path)
            assert answer.status_code == status, path
            assert answer.headers["content-type"].startswith("text/html"), path
            assert title in answer.text, path
            assert_branded(answer.text)
            assert f"<title>{title}" in answer.text and "| Lab Binder</title>" in answer.text
        # Sign-in is off here: its page says so, in the operator's colours and footer.
        signin = client.get("/auth/login")
        assert signin.status_code == 401
        assert '<style id="branding">' in signin.text and "Run by the Lab." in signin.text
        # A session's own pages are its server's, not the operator's: never branded.
        lab = client.get("/user/" + "a1" * 8 + "/lab?token=tok-" + "1" * 28)
        assert lab.status_code == 200
        assert "branding" not in lab.text and ">binderless</a>" in lab.text
        # API clients still get JSON.
        missing = client.get("/user/" + "c3" * 8 + "/api/status",
                             headers={"Accept": "application/json"})
        assert missing.status_code == 404 and missing.json()["status_code"] == 404


def test_a_server_page_shows_the_operators_colours_in_a_browser(server: str,
                                                                 browser: Browser) -> None:
    context = new_context(browser, DESKTOP)
    try:
        page = context.new_page()
        page.goto(server + "/user/" + "d4" * 8 + "/lab")
        assert page.get_by_role("heading", name="No session here").is_visible()
        check_branded(page)
        button = page.get_by_role("link", name="Launch a repository")
        assert button.evaluate("b => getComputedStyle(b).backgroundColor") == ACCENT_RGB
        screenshot(page, "branding-no-session-desktop")
    finally:
        context.close()
