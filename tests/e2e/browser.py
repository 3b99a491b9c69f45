"""Debian's Chromium driven by Python Playwright, as pytest fixtures.

Playwright's own browser download is never used (``playwright install`` needs the
internet): the system ``chromium`` package is launched through ``executable_path``.
Screenshots go to ``test-artifacts/screenshots/`` (git-ignored).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Page, Route

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
#: The narrowest phone the pages are made for.
NARROW_PHONE = {"width": 375, "height": 740}
#: npm packages the browser tests load (``npm ci`` in tests/js; ``python3 dev.py test`` runs it).
NODE_MODULES = Path(__file__).resolve().parents[1] / "js" / "node_modules"
LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}

__all__ = [
    "CHROMIUM", "DESKTOP", "NARROW_PHONE", "NODE_MODULES", "PHONE", "SCREENSHOTS", "axe_violations",
    "browser", "guard_network", "new_context", "node_module", "page", "screenshot",
]


def screenshot(page: Page, name: str, *, full_page: bool = True) -> Path:
    """Save a screenshot of ``page`` as ``test-artifacts/screenshots/<name>.png``."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / (re.sub(r"[^A-Za-z0-9_.-]+", "-", name) + ".png")
    page.screenshot(path=str(path), full_page=full_page)
    return path


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    # Module scope, not session: Playwright's sync API keeps an asyncio loop running in
    # this thread while it is open, which would break every later test using asyncio.run.
    """One headless Chromium for the whole test session."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: install Debian's chromium "
                    "(apt-get install -y chromium); never `playwright install`")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS,
        )
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh desktop-sized page in its own browser context (no shared storage)."""
    context = browser.new_context(viewport=DESKTOP)
    context.set_default_timeout(30_000)
    tab = context.new_page()
    try:
        yield tab
    finally:
        context.close()


def node_module(relative: str) -> Path:
    """A file of the browser tests' npm packages; fails, saying how to install them."""
    path = NODE_MODULES / relative
    if not path.is_file():
        pytest.fail(f"{path} is missing: run `python3 dev.py test`, or `npm ci --prefix tests/js`")
    return path


def guard_network(context: BrowserContext) -> list[str]:
    """Refuse every request from ``context`` to a host other than this machine, and list
    them: a test asserts the list is empty (pages must load nothing from a CDN)."""
    refused: list[str] = []

    def check(route: Route) -> None:
        url = route.request.url
        host = urlsplit(url).hostname or ""
        if url.startswith(("http:", "https:", "ws:", "wss:")) and host not in LOOPBACK:
            refused.append(url)
            route.abort("blockedbyclient")
        else:
            route.fallback()

    context.route("**/*", check)
    return refused


def new_context(browser: Browser, viewport: dict[str, int], *,
                phone: bool = False) -> BrowserContext:
    """A fresh browser context of that size (a phone: touch, mobile layout, 2x pixels)."""
    extra: dict[str, Any] = (
        {"is_mobile": True, "has_touch": True, "device_scale_factor": 2} if phone else {})
    context = browser.new_context(viewport=viewport, **extra)
    context.set_default_timeout(30_000)
    return context


def axe_violations(page: Page, impacts: tuple[str, ...] = ("serious", "critical")
                   ) -> list[dict[str, Any]]:
    """Run axe-core (from npm) on the page as it is now; the violations of those impacts,
    each as ``{"id", "impact", "help", "targets"}``."""
    if not page.evaluate("typeof window.axe === 'object'"):
        page.add_script_tag(content=node_module("axe-core/axe.min.js").read_text())
    result = page.evaluate("""async () => {
        const r = await axe.run(document, {resultTypes: ["violations"]});
        return r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
            targets: v.nodes.map(n => n.target.join(" "))}));
    }""")
    return [v for v in result if v["impact"] in impacts]
