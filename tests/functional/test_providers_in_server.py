"""Provider behaviour as a BinderHub client sees it through /build and /api/repoproviders."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from binderless.errors import RefNotFound
from binderless.local import local_service
from binderless.providers.base import ResolvedRepo
from binderless.settings import Settings
from tests.functional.inprocess import serve_in_thread
from tests.http_replay import Replay


class OfflineFetcher:
    """GitHub cannot be reached from here: the fetch step says so instead of cloning."""

    def __init__(self) -> None:
        self.fetched: list[ResolvedRepo] = []

    async def fetch(self, repo: ResolvedRepo, dest: Path, log: object) -> None:
        self.fetched.append(repo)
        raise RefNotFound(f"(test) {repo.repo_url} cannot be cloned without a network")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, OfflineFetcher, Replay]]:
    replay = Replay({
        "/repos/org/repo/commits/master": "github/ref-unknown.json",
        "/repos/org/repo/commits/HEAD": "github/commit-ok.json",
        "/repos/org/limited/commits/HEAD": "github/rate-limited.json",
    })
    settings = Settings(state_dir=tmp_path, final_linger_seconds=0.0, keepalive_seconds=0.5,
                        github_token="ghp_do_not_leak", banned_specs=("^banned-org/",))
    service = local_service(settings, http_client=replay.client())
    fetcher = OfflineFetcher()
    service.fetcher = fetcher
    with serve_in_thread(service) as base:
        yield base, fetcher, replay


def events(base: str, path: str) -> list[dict[str, object]]:
    text = httpx.get(base + path, headers={"Accept": "text/event-stream"}, timeout=30).text
    return [json.loads(line[5:]) for line in text.splitlines() if line.startswith("data:")]


def test_missing_master_falls_back_at_once_and_says_so(
        server: tuple[str, OfflineFetcher, Replay]) -> None:
    base, fetcher, _ = server
    got = events(base, "/build/gh/org/repo/master")
    waiting = [e["message"] for e in got if e["phase"] == "waiting"]
    assert any("no branch 'master'" in str(m) and "default branch" in str(m) for m in waiting)
    assert fetcher.fetched[0].resolved_ref == "0123456789abcdef0123456789abcdef01234567"


def test_provider_failures_reach_the_client_as_failed_events(
        server: tuple[str, OfflineFetcher, Replay]) -> None:
    base, _, replay = server
    limited = events(base, "/build/gh/org/limited/HEAD")[-1]
    assert limited["phase"] == "failed" and limited["status_code"] == 503
    assert "GitHub rate limit exceeded. Try again in" in str(limited["message"])
    banned = events(base, "/build/gh/banned-org/x/HEAD")[-1]
    assert banned["status_code"] == 403
    assert "Sorry, banned-org/x/HEAD is not allowed to launch" in str(banned["message"])
    # The token went to GitHub in a header, and nowhere else.
    assert all(r.headers.get("Authorization") == "token ghp_do_not_leak" for r in replay.requests)
    for path in ("/build/gh/org/limited/HEAD", "/build/gh/org/repo/master"):
        assert "ghp_do_not_leak" not in json.dumps(events(base, path))
    assert all("ghp_do_not_leak" not in str(r.url) for r in replay.requests)


def test_repoproviders_lists_every_provider(server: tuple[str, OfflineFetcher, Replay]) -> None:
    base, _, _ = server
    response = httpx.get(base + "/api/repoproviders")
    assert response.headers["access-control-allow-origin"] == "*"
    configs = response.json()
    ids = {c["id"] for c in configs}
    assert {"gh", "gist", "gl", "git", "codecommit"} <= ids
    for config in configs:
        assert config["displayName"] and config["spec"]["validateRegex"]


def test_a_zenodo_record_launches_end_to_end(tmp_path: Path) -> None:
    """DOI -> Zenodo record -> files downloaded and unpacked -> environment -> running server."""
    zenodo = "https://zenodo.org/api/records/3242074"
    replay = Replay({
        "https://doi.org/api/handles/10.5281/zenodo.3242074": "doi/handle-zenodo.json",
        zenodo: "zenodo/record-3242074.json",
        zenodo + "/files": "zenodo/files-3242074.json",
        zenodo + "/files/requirements-v1.0.zip/content": "zenodo/file-zip.json",
    })
    settings = Settings(state_dir=tmp_path, final_linger_seconds=0.0, keepalive_seconds=0.5)
    service = local_service(settings, http_client=replay.client())
    with serve_in_thread(service) as base:
        got = events(base, "/build/zenodo/10.5281/zenodo.3242074")
        ready = got[-1]
        assert ready["phase"] == "ready", got[-3:]
        messages = "".join(str(e["message"]) for e in got)
        assert "requirements-v1.0.zip" in messages and "built\n" in messages  # its postBuild
        assert ready["binder_persistent_request"] == "v2/zenodo/10.5281/zenodo.3242074"
        listing = httpx.get(f"{ready['url']}api/contents",
                            headers={"Authorization": f"token {ready['token']}"}).json()
        names = {item["name"] for item in listing["content"]}
        assert {"index.ipynb", "requirements.txt"} <= names  # the zip's top folder was unwrapped
