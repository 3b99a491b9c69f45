"""The /environments page in Chromium shows what ``binderless environments list`` prints
(the CLI and the page agree), with the uv cache on a line of its own; removes an
environment with its button, and never offers to remove one a running session uses. Its
table fits: keys on one line, the Remove buttons inside the card, and on a phone no
sideways scrolling."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from binderless.backends.protocols import SessionRecord
from binderless.catalogue import UV_MARKER
from binderless.catalogue_cli import run as run_cli
from binderless.cli import build_parser
from binderless.local import local_service
from binderless.settings import Settings
from tests.functional.inprocess import serve_in_thread

from . import browser as chromium
from .browser import DESKTOP, PHONE, new_context, screenshot

if TYPE_CHECKING:
    from playwright.sync_api import Browser

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

browser = chromium.browser

KEYS = {"1" * 20: 3000, "2" * 20: 5000, "3" * 20: 7000}
IN_USE = "3" * 20
STATE: dict[str, Path] = {}


def cli_list(state: Path) -> list[dict[str, Any]]:
    out = io.StringIO()
    args = build_parser().parse_args(["environments", "--state-dir", str(state), "list",
                                      "--json"])
    assert run_cli(args, out=out, environ={"BINDERLESS_BUILDER": "uv"}) == 0
    return list(json.loads(out.getvalue()))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    state: Path = tmp_path_factory.mktemp("catalogue") / "state"
    # The uv builder only: with an engine answering (dev.py test), auto would list the
    # engine's images too.
    service = local_service(Settings(state_dir=state, builder="uv"))
    store: Any = service.store
    for n, (key, size) in enumerate(KEYS.items(), start=1):
        folder = state / "envs" / key
        folder.mkdir(parents=True)
        (folder / "payload").write_bytes(b"x" * size)
        (folder / UV_MARKER).write_text(key + "\n")
        store.note_environment(key, 1000.0 * n, built=True, files=("requirements.txt",))
        for _ in range(n):
            store.note_environment(key, 1000.0 * n + 1, repo_url=f"https://github.com/o/r{n}",
                                   ref=f"{n}" * 40)
    cache = state / "cache" / "uv" / "wheels-v5"
    cache.mkdir(parents=True)
    (cache / "wheel").write_bytes(b"w" * 4096)
    STATE["dir"] = state
    with serve_in_thread(service) as base:
        # Added once the server has started (which closes sessions it finds at start).
        store.add_session(SessionRecord(
            session_id="5e55", launch_id="l", owner="", repo_url="https://github.com/o/r3",
            resolved_ref="3" * 40, image_key=IN_USE, home="", target="", token="t",
            backend_id="", status="running", created_at=1.0, last_activity=1.0))
        yield base


def visible_rows(page: Any) -> dict[str, list[str]]:
    rows = page.locator("#envs-body tr")
    found = {}
    for i in range(rows.count()):
        cells = [c.strip() for c in rows.nth(i).locator("td").all_inner_texts()]
        found[cells[0].split()[0]] = cells
    return found


def test_the_page_and_the_cli_agree_and_removing_one_works(server: str,
                                                            browser: Browser) -> None:
    context = new_context(browser, DESKTOP)
    try:
        page = context.new_page()
        page.goto(f"{server}/environments")
        page.locator("#envs-body tr").first.wait_for()
        listed = {item["key"]: item for item in cli_list(STATE["dir"])}
        rows = visible_rows(page)
        assert set(rows) == set(listed) == set(KEYS)
        for key, cells in rows.items():
            item = listed[key]
            assert cells[1] == f"{item['size_bytes'] / 1024:.1f} KiB"
            assert cells[4] == str(item["launches"])
            assert item["repos"][0]["repo_url"] in cells[5]
        assert rows[IN_USE][0].endswith("in use")
        assert all("uv environment" in cells[0] for cells in rows.values())
        in_use_button = page.locator(f"tr[data-key='{IN_USE}'] button")
        assert in_use_button.is_disabled()
        assert "uv cache" in page.locator("#cache-line").inner_text()
        assert "4.0 KiB" in page.locator("#cache-line").inner_text()
        assert_fits(page)
        screenshot(page, "environments-page")

        victim = "1" * 20
        page.locator(f"tr[data-key='{victim}'] button", has_text="Remove").click()
        page.locator(f"tr[data-key='{victim}']").wait_for(state="detached")
        assert "Removed 1" in page.locator("#prune-result").inner_text()
        assert set(visible_rows(page)) == {k for k in KEYS if k != victim}
        assert {item["key"] for item in cli_list(STATE["dir"])} == set(visible_rows(page))
        assert not (STATE["dir"] / "envs" / victim).exists()
    finally:
        context.close()


def assert_fits(page: Any) -> None:
    """Keys on one line, every button inside its card, nothing wider than the window."""
    layout = page.evaluate("""() => {
        const card = document.querySelector('#envs-table').closest('.card')
            .getBoundingClientRect();
        return {
            keyLines: [...document.querySelectorAll('#envs-body td.key code')]
                .map((code) => code.getClientRects().length),
            buttons: [...document.querySelectorAll('#envs-body button')].map((b) => {
                const box = b.getBoundingClientRect();
                return [box.left >= card.left, box.right <= card.right, box.width > 40];
            }),
            overflow: document.documentElement.scrollWidth - window.innerWidth,
        };
    }""")
    assert layout["keyLines"] and set(layout["keyLines"]) == {1}, layout
    assert all(all(fits) for fits in layout["buttons"]), layout
    assert layout["overflow"] <= 0, layout


def test_on_a_phone_each_environment_is_a_card_that_fits(server: str,
                                                         browser: Browser) -> None:
    context = new_context(browser, PHONE, phone=True)
    try:
        page = context.new_page()
        page.goto(f"{server}/environments")
        page.locator("#envs-body tr").first.wait_for()
        assert_fits(page)
        screenshot(page, "environments-page-phone")
    finally:
        context.close()


def test_another_site_cannot_read_the_catalogue(server: str) -> None:
    import httpx

    answer = httpx.get(f"{server}/api/environments",
                       headers={"Origin": "https://evil.example"})
    assert answer.status_code == 403
    assert "environments" not in answer.text.split("message")[0]
    assert "access-control-allow-origin" not in answer.headers
    deleted = httpx.delete(f"{server}/api/environments/{'2' * 20}",
                           headers={"Origin": "https://evil.example"})
    assert deleted.status_code == 403
    assert (STATE["dir"] / "envs" / ("2" * 20)).is_dir()
