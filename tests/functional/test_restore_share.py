"""Saved changes shared on purpose (``restore.py``, ``server/pages.py``), over HTTP.

An anonymous visitor's session ends and its changes are kept for its browser. Without a
share link another browser is refused; the owner's browser (and only it, and only from
this server's pages or a script) makes a share link, which lets any browser start a
session with the changes, while a changed link is refused and every link ends with the
saved copy. The launch flow, the server and the shelf are the real ones; the fetcher,
builder and spawner are ``launch_fakes``'s stand-ins, so nothing is built or run."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from binderless.service import LaunchService
from tests.conftest import FIXTURE_REPOS, file_spec, make_git_repo
from tests.functional.inprocess import serving
from tests.functional.launch_fakes import Rig, fake_jupyter

PAGE = {"Accept": "text/html,application/xhtml+xml"}
DAY = 86400.0


class Shared:
    """The served service, its event loop, and a clock the test moves forward."""

    def __init__(self, base: str, service: LaunchService, loop: asyncio.AbstractEventLoop,
                 spec: str) -> None:
        self.base, self.service, self.loop, self.spec = base, service, loop, spec
        self.offset = 0.0
        self.clients: list[httpx.Client] = []

    def client(self, *, visit: bool = True) -> httpx.Client:
        """A browser of its own: it loads a launch page first, which gives it its cookie."""
        client = httpx.Client(base_url=self.base, timeout=30)
        self.clients.append(client)
        if visit:
            assert client.get(f"/v2/{self.spec}", headers=PAGE).status_code == 200
        return client

    def stop(self, session_id: str) -> None:
        asyncio.run_coroutine_threadsafe(
            self.service.stop_session(session_id, reason="idle"), self.loop).result(30)


@pytest.fixture
def shared(tmp_path: Path) -> Iterator[Shared]:
    spec = file_spec(make_git_repo(FIXTURE_REPOS / "python-requirements", tmp_path / "repo"))
    rig = Rig(tmp_path, sign_in="off", final_linger_seconds=0.0)
    with serving(rig.service) as (base, loop):
        jupyter = fake_jupyter()
        rig.url = asyncio.run_coroutine_threadsafe(jupyter.__aenter__(), loop).result(30)
        served = Shared(base, rig.service, loop, spec)
        rig.service.clock = lambda: time.time() + served.offset
        try:
            yield served
        finally:
            for client in served.clients:
                client.close()
            asyncio.run_coroutine_threadsafe(jupyter.__aexit__(None, None, None),
                                             loop).result(30)


def launch(client: httpx.Client, path: str) -> dict[str, object]:
    """Follow ``/build/...`` (``path``: a ``/v2/`` link, query and all) to its final event."""
    parts = urlsplit(path)
    build = "/build/" + parts.path.removeprefix("/v2/") + (f"?{parts.query}" if parts.query
                                                           else "")
    with client.stream("GET", build, headers={"Accept": "text/event-stream"}) as stream:
        for line in stream.iter_lines():
            if line.startswith("data:"):
                event = json.loads(line[5:])
                if event.get("phase") in ("ready", "failed"):
                    return dict(event)
    raise AssertionError("the stream ended without a final event")


def session_of(event: dict[str, object]) -> str:
    assert event["phase"] == "ready", event
    return urlsplit(str(event["url"])).path.split("/")[2]


def test_a_share_link_lets_another_browser_restore_and_nothing_else_does(
        shared: Shared) -> None:
    owner, stranger = shared.client(), shared.client()
    service = shared.service
    first = session_of(launch(owner, f"/v2/{shared.spec}"))
    home = Path(service.store.get_session(first).home)
    (home / "notes.txt").write_text("the owner's own notes\n")
    shared.stop(first)
    assert service.restores is not None
    [saved] = service.restores.all()
    assert saved.files == ["notes.txt"]

    # Without a share link, another browser is refused the plain restore link.
    refused = launch(stranger, saved.restore_link)
    assert refused["phase"] == "failed" and refused["status_code"] == 403
    assert "belong to the browser whose session made them" in str(refused["message"])

    # Only the owner's browser may make a share link, and not from another site's page.
    share = f"/api/restores/{saved.restore_id}/share"
    assert stranger.post(share).status_code == 403
    assert owner.post(share, headers={"Origin": "http://elsewhere.example"}).status_code == 403
    assert owner.get(share).status_code == 404  # a POST only
    assert owner.post(f"/api/restores/{'x' * 32}/share").status_code == 404  # no such copy
    made = owner.post(share, headers={"Origin": shared.base})
    assert made.status_code == 200
    link = made.json()["link"]
    assert link.startswith(f"{shared.base}/v2/") and f"?restore={saved.restore_id}." in link
    assert made.json()["expires_at"] == saved.expires_at
    capability = link.rsplit(".", 1)[1]
    assert capability not in (Path(service.restores.root) / saved.restore_id /
                              "meta.json").read_text()  # only its digest is kept

    # The stopped session's page offers the owner to share; a form's POST gets a page.
    stopped = owner.get(f"/user/{first}/lab", headers=PAGE)
    assert f'<form method="post" action="{share}">' in stopped.text
    page = owner.post(share, headers={**PAGE, "Origin": shared.base})
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert f'value="{shared.base}/v2/' in page.text
    assert stranger.post(share, headers=PAGE).status_code == 403

    # A changed capability is refused, and so is a capability moved to another copy.
    tampered = link[:-1] + ("A" if link[-1] != "A" else "B")
    answer = launch(stranger, tampered.removeprefix(shared.base))
    assert answer["phase"] == "failed" and answer["status_code"] == 403
    assert "share link is not valid" in str(answer["message"])
    moved = launch(stranger, saved.restore_link.replace(saved.restore_id, "y" * 32)
                   + "." + capability)
    assert moved["phase"] == "failed" and moved["status_code"] == 404

    # The share link works in another browser: its session starts with the changes.
    second = session_of(launch(stranger, link.removeprefix(shared.base)))
    assert second != first
    restored = Path(service.store.get_session(second).home) / "notes.txt"
    assert restored.read_text() == "the owner's own notes\n"
    # ... and the owner's plain link still works for the owner.
    assert session_of(launch(owner, saved.restore_link)) not in (first, second)

    # Every share link ends with the saved copy.
    shared.offset += service.settings.restore_days * DAY + 60
    gone = launch(shared.client(visit=False), link.removeprefix(shared.base))
    assert gone["phase"] == "failed" and gone["status_code"] == 404
    assert "no longer kept" in str(gone["message"])
    assert owner.post(share).status_code == 404
