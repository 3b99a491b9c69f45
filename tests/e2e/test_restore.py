"""Bringing back an ended anonymous session, as its visitor does it (Chromium, real Jupyter).

A visitor launches a local repository, changes its notebook and adds a file, and the
session is culled as idle; opening the same link again offers "Start again with your
changes", which starts a new session of the same commit with both files back. Another
browser is never offered them and cannot use the restore link (unless the owner makes a
share link: tests/functional/test_restore_share.py); past the retention time the offer
is gone and the files are deleted.

Time is the service's injectable clock, moved forward instead of waited for.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import httpx
import pytest

from binderless.local import local_service
from binderless.service import LaunchService
from binderless.settings import Settings
from tests.conftest import file_spec
from tests.functional.inprocess import serving

from . import browser as chromium
from .browser import DESKTOP, new_context, screenshot

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

browser = chromium.browser

HOUR = 3600.0
DAY = 24 * HOUR


class Clock:
    """Real time plus an offset the test moves forward."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


class Served:
    def __init__(self, base: str, service: LaunchService, loop: asyncio.AbstractEventLoop,
                 clock: Clock, link: str) -> None:
        self.base, self.service, self.loop, self.clock, self.link = base, service, loop, clock, link

    def reconcile(self) -> None:
        """One pass of the culler (and the sweep of saved changes), on the server's loop."""
        asyncio.run_coroutine_threadsafe(self.service.reconcile(), self.loop).result(60)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    from tests.conftest import FIXTURE_REPOS, make_git_repo

    root = tmp_path_factory.mktemp("restore")
    repo = make_git_repo(FIXTURE_REPOS / "python-requirements", root / "repo")
    clock = Clock()
    service = local_service(Settings(state_dir=root / "state", sign_in="off",
                                     final_linger_seconds=1.0, cull_interval_seconds=3600.0),
                            clock=clock)
    with serving(service) as (base, loop):
        yield Served(base, service, loop, clock, f"/v2/{file_spec(repo)}")


def open_lab(page: Page, served: Served, url: str,
             click: Callable[[Page], object] | None = None) -> tuple[str, str]:
    """Load ``url`` (a launch link), optionally click something on it, and wait for
    JupyterLab; its session id and token (which JupyterLab takes off the address)."""
    page.goto(url)
    if click is not None:
        click(page)
    page.wait_for_url("**/user/*/lab**", timeout=180_000)
    session = urlsplit(page.url).path.split("/")[2]
    return session, served.service.store.get_session(session).token


def contents(base: str, session: str, token: str, path: str) -> httpx.Response:
    return httpx.get(f"{base}/user/{session}/api/contents/{path}",
                     headers={"Authorization": f"token {token}"}, timeout=30)


def put(base: str, session: str, token: str, path: str, model: dict[str, object]) -> None:
    answer = httpx.put(f"{base}/user/{session}/api/contents/{path}", json=model,
                       headers={"Authorization": f"token {token}"}, timeout=30)
    assert answer.status_code in (200, 201), answer.text


def test_an_ended_session_comes_back_with_its_changes_for_its_browser_only(
        served: Served, browser: Browser) -> None:
    mine = new_context(browser, DESKTOP)
    other = new_context(browser, DESKTOP)
    try:
        page = mine.new_page()
        first, token = open_lab(page, served, served.base + served.link)

        # The visitor edits the notebook and adds a file (what JupyterLab saves).
        notebook = contents(served.base, first, token, "index.ipynb").json()["content"]
        notebook["cells"].append({"cell_type": "markdown", "metadata": {},
                                  "source": "my own note, added in the session"})
        put(served.base, first, token, "index.ipynb",
            {"type": "notebook", "format": "json", "content": notebook})
        put(served.base, first, token, "analysis", {"type": "directory"})
        put(served.base, first, token, "analysis/results.txt",
            {"type": "file", "format": "text", "content": "42 is the answer\n"})

        # Idle past the limit: the culler stops it, and keeps the changes.
        served.clock.offset += 2 * HOUR
        served.reconcile()
        record = served.service.store.get_session(first)
        assert (record.status, record.stop_reason) == ("stopped", "idle")
        # The session's folder is gone as before; only the saved copy stays.
        assert not (served.service.sessions_dir / first).exists()
        shelf = served.service.restores
        assert shelf is not None
        [saved] = shelf.all()
        assert sorted(saved.files) == ["analysis/results.txt", "index.ipynb"]

        # The stopped session's page offers it, to this browser, and a link to share it.
        page.goto(f"{served.base}/user/{first}/lab")
        assert page.get_by_role("link", name="Start again with your changes").is_visible()
        page.get_by_role("button", name="Share these changes").click()
        share_link = page.get_by_label("Share link").input_value()
        assert share_link.startswith(served.base + saved.restore_link + ".")
        screenshot(page, "restore-share-link-desktop")

        # Another browser is offered nothing and cannot use the restore link.
        stranger = other.new_page()
        launch = served.link[1:]
        answer = stranger.request.get(f"{served.base}/api/restores?launch={launch}")
        assert answer.json()["restores"] == []
        stranger.goto(f"{served.base}/user/{first}/lab")
        assert stranger.get_by_role("link", name="Launch it again").is_visible()
        assert stranger.get_by_role("link", name="Start again with your changes").count() == 0
        stranger.goto(served.base + saved.restore_link)
        failure = stranger.locator("#failure-message")
        failure.wait_for()
        assert "belong to the browser whose session made them" in failure.inner_text()

        # The visitor opens the link again and chooses to start again with the changes.
        second, token2 = open_lab(page, served, served.base + served.link, lambda p: (
            p.get_by_role("link", name="Start again with your changes").wait_for(),
            screenshot(p, "restore-offer-desktop"),
            p.get_by_role("link", name="Start again with your changes").click()))
        assert second != first
        back = contents(served.base, second, token2, "index.ipynb").json()["content"]
        assert back["cells"][-1]["source"] == "my own note, added in the session"
        text = contents(served.base, second, token2, "analysis/results.txt").json()["content"]
        assert text == "42 is the answer\n"

        # Past the retention time the offer is gone and the files are deleted.
        folder = shelf.root / saved.restore_id
        assert folder.is_dir()
        served.clock.offset += served.service.settings.restore_days * DAY + HOUR
        served.reconcile()  # culls the second session too (its changes: a new save) ...
        served.clock.offset += served.service.settings.restore_days * DAY + HOUR
        served.reconcile()  # ... and sweeps every save past its time
        assert not folder.exists()
        assert shelf.all() == []
        answer = page.request.get(f"{served.base}/api/restores?launch={launch}")
        assert answer.json()["restores"] == []
        page.goto(f"{served.base}/user/{first}/lab")
        assert page.get_by_role("link", name="Launch it again").is_visible()
        assert page.get_by_role("link", name="Start again with your changes").count() == 0
        assert answer.json()["saves"] is True  # its next sessions' changes are kept too
    finally:
        mine.close()
        other.close()


def test_saved_copies_never_follow_links(tmp_path: Path) -> None:
    """A link the session made (to a file outside its folder) is never saved."""
    from binderless.restore import changed_files, write_manifest

    checkout = tmp_path / "s" / "home"
    checkout.mkdir(parents=True)
    (checkout / "kept.txt").write_text("repo file")
    write_manifest(checkout)
    secret = tmp_path / "secret"
    secret.write_text("server's own")
    (checkout / "escape").symlink_to(secret)
    (checkout / "folder").symlink_to(tmp_path, target_is_directory=True)
    (checkout / "new.txt").write_text("mine")
    manifest = json.loads((checkout.parent / "checkout-manifest.json").read_text())["files"]
    found = {rel for rel, _ in changed_files(checkout, manifest)}
    assert found == {"escape", "new.txt"}  # the link is listed, to be skipped, not entered


def test_the_shelf_keeps_changes_within_its_cap_and_puts_them_back_safely(
        tmp_path: Path) -> None:
    """Without a browser: what is saved (changed, not hidden, within the size cap), that
    only the owner's id puts it back, never through a link, and the sweep's clock."""
    from binderless.backends.protocols import SessionRecord
    from binderless.errors import AccessDenied
    from binderless.restore import RestoreShelf, write_manifest

    now = [1000.0]
    shelf = RestoreShelf(tmp_path / "restores", days=7, max_bytes=100, clock=lambda: now[0])
    home = tmp_path / "sessions" / "s1" / "home"
    (home / "data").mkdir(parents=True)
    (home / "nb.ipynb").write_text("original")
    (home / ".gitignore").write_text("x")
    write_manifest(home, "v2/gh/org/repo/" + "a" * 40)
    (home / "nb.ipynb").write_text("changed!")
    (home / ".gitignore").write_text("changed")  # hidden, but the repository's own
    (home / ".ipynb_checkpoints").mkdir()
    (home / ".ipynb_checkpoints" / "nb-checkpoint.ipynb").write_text("tool's own")
    (home / "data" / "big.bin").write_bytes(b"x" * 200)  # past the cap
    (home / "data" / "new.txt").write_text("new")
    visitor = "f" * 32
    record = SessionRecord(
        session_id="s1", launch_id="l1", owner="", repo_url="https://github.com/org/repo",
        resolved_ref="a" * 40, image_key="k", home=str(home), target="", token="t",
        backend_id="1", status="running", created_at=0.0, last_activity=0.0)
    launch = {"provider": "gh", "spec": "org/repo/HEAD",
              "request": json.dumps({"visitor": visitor})}
    work = shelf.save(record, launch)
    assert work is not None
    assert sorted(work.files) == [".gitignore", "data/new.txt", "nb.ipynb"]
    assert work.skipped == ["data/big.bin"]
    assert work.restore_link == f"/v2/gh/org/repo/{'a' * 40}?restore={work.restore_id}"
    assert shelf.save(record, {**launch, "request": "{}"}) is None  # no visitor: not kept

    fresh = tmp_path / "sessions" / "s2" / "home"
    fresh.mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (fresh / "data").symlink_to(outside, target_is_directory=True)  # the repository's link
    with pytest.raises(AccessDenied):
        shelf.prepare(fresh, restore_id=work.restore_id, visitor="e" * 32, provider="gh",
                      repo_url=record.repo_url, resolved_ref=record.resolved_ref)
    shelf.prepare(fresh, restore_id=work.restore_id, visitor=visitor, provider="gh",
                  repo_url=record.repo_url, resolved_ref=record.resolved_ref)
    assert (fresh / "nb.ipynb").read_text() == "changed!"
    assert list(outside.iterdir()) == []  # never written through the link

    now[0] += 7 * DAY - 1
    assert shelf.sweep() == [] and shelf.find(work.restore_id) is not None
    now[0] += 2
    assert shelf.find(work.restore_id) is None  # the offer is gone at once ...
    assert shelf.sweep() == [work.restore_id]  # ... and the files with the next sweep
    assert not (shelf.root / work.restore_id).exists()
