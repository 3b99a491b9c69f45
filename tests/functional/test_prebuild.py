"""``POST /api/prebuild`` on the local server: a signed push webhook for a repository served
over git's HTTP protocol on loopback builds its environment (the real uv builder), and the
next launch of the link finds it and builds nothing. Unsigned, wrongly signed, replayed,
oversized and non-push deliveries are refused and start nothing."""

from __future__ import annotations

import functools
import hashlib
import hmac
import http.server
import json
import socket
import subprocess
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from binderless import cli
from binderless.local import local_service
from binderless.prebuild import Delivery, push_body
from binderless.service import LaunchService
from binderless.settings import Settings
from tests.conftest import FIXTURE_REPOS, git, make_git_repo
from tests.e2e.streams import read_stream
from tests.functional.inprocess import serve_in_thread

SECRET = "s3cret-prebuild-webhook-0123456789"
MAX_BYTES = 8192


class QuietFiles(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@dataclass
class Rig:
    base: str
    service: LaunchService
    clone_url: str
    sha: str

    def launches(self) -> int:
        db = self.service.store.db  # type: ignore[attr-defined]
        return int(db.query("SELECT COUNT(*) AS n FROM launches")[0]["n"])

    def spec(self, ref: str = "main") -> str:
        return f"git/{quote(self.clone_url, safe='')}/{ref}"


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    """One server (webhook secret set) and one repository served over dumb HTTP, as a
    repository on another host looks to binderless."""
    root = tmp_path_factory.mktemp("prebuild")
    repo = make_git_repo(FIXTURE_REPOS / "empty-repo", root / "work")
    sha = git("rev-parse", "HEAD", cwd=repo)
    site = root / "site"
    site.mkdir()
    subprocess.run(["git", "clone", "--quiet", "--bare", str(repo), str(site / "book.git")],
                   check=True)
    subprocess.run(["git", "update-server-info"], cwd=site / "book.git", check=True)
    files = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(QuietFiles, directory=str(site)))
    threading.Thread(target=files.serve_forever, daemon=True).start()
    settings = Settings(state_dir=root / "state", webhook_secret=SECRET,
                        webhook_max_bytes=MAX_BYTES, final_linger_seconds=0.0,
                        keepalive_seconds=0.2)
    service = local_service(settings)
    try:
        with serve_in_thread(service) as base:
            yield Rig(base, service, f"http://127.0.0.1:{files.server_address[1]}/book.git",
                      sha)
    finally:
        files.shutdown()
        files.server_close()


def github_push(rig: Rig, ref: str = "refs/heads/main", **extra: Any) -> bytes:
    """A push payload as GitHub sends it (the fields binderless reads, and a few more)."""
    return json.dumps({
        "ref": ref, "before": "0" * 39 + "1", "after": rig.sha, "created": False,
        "deleted": False, "forced": False,
        "repository": {"full_name": "publisher/book", "html_url": rig.clone_url[:-4],
                       "clone_url": rig.clone_url, "default_branch": "main"},
        "pusher": {"name": "publisher"}, "head_commit": {"id": rig.sha}, **extra,
    }).encode()


def signed(body: bytes, event: str = "push", delivery: str = "",
           secret: str = SECRET) -> dict[str, str]:
    """GitHub's headers: the body's HMAC-SHA256 with the secret, the event, a delivery id."""
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {"Content-Type": "application/json", "X-GitHub-Event": event,
            "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
            "X-Hub-Signature-256": f"sha256={digest}", "User-Agent": "GitHub-Hookshot/test"}


def post(rig: Rig, body: bytes, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(f"{rig.base}/api/prebuild", content=body, headers=headers, timeout=30)


def phases(events: list[dict[str, Any]]) -> list[str]:
    return [str(e.get("phase", "")) for e in events]


def test_a_signed_push_builds_and_the_next_launch_finds_it(rig: Rig) -> None:
    before = rig.launches()
    answer = post(rig, body := github_push(rig), signed(body))
    assert answer.status_code == 202, answer.text
    accepted = answer.json()
    assert accepted["status"] == "building"
    assert (accepted["provider"], accepted["spec"]) == ("git", rig.spec("main").partition("/")[2])
    assert accepted["resolved_ref"] == rig.sha
    assert accepted["launch_url"] == f"{rig.base}/v2/{rig.spec('main')}"

    prebuilt = read_stream(accepted["stream_url"], timeout=240)
    assert prebuilt.final["phase"] == "ready", prebuilt.final
    assert "building" in phases(prebuilt.events)  # this one built the environment
    assert "Built the environment" in " ".join(e["message"] for e in prebuilt.events)
    assert rig.launches() == before + 1  # a build-only launch, nothing else started

    # The next launch of that repository (another link form of the same commit) finds the
    # environment: no building phase, BinderHub's "found" message.
    again = read_stream(f"{rig.base}/build/{rig.spec('HEAD')}?build_only=true", timeout=120)
    assert again.final["phase"] == "ready", again.final
    assert "building" not in phases(again.events)
    built = [e for e in again.events if e.get("phase") == "built"]
    assert built and built[0]["message"].startswith("Found the built environment")
    assert built[0]["imageName"] == prebuilt.final["imageName"]


@pytest.mark.parametrize(("case", "status", "says"), [
    ("unsigned", 401, "not signed"),
    ("sha1 only", 401, "X-Hub-Signature-256"),
    ("wrong secret", 403, "does not match"),
    ("body changed", 403, "does not match"),
    ("not a push", 400, "push events only"),
    ("no delivery id", 400, "X-GitHub-Delivery"),
    ("gitlab wrong token", 403, "X-Gitlab-Token"),
    ("bearer wrong", 403, "bearer token"),
    ("too large", 413, "larger than"),
])
def test_refused_deliveries_build_nothing(rig: Rig, case: str, status: int,
                                          says: str) -> None:
    before = rig.launches()
    body = github_push(rig)
    headers = signed(body)
    if case == "unsigned":
        del headers["X-Hub-Signature-256"]
    elif case == "sha1 only":
        headers["X-Hub-Signature"] = "sha1=" + headers.pop("X-Hub-Signature-256")[7:47]
    elif case == "wrong secret":
        headers = signed(body, secret="another-secret-of-enough-length")
    elif case == "body changed":
        body = body.replace(b"refs/heads/main", b"refs/heads/evil")
    elif case == "not a push":
        headers = signed(body, event="issues")
    elif case == "no delivery id":
        del headers["X-GitHub-Delivery"]
    elif case == "gitlab wrong token":
        headers = {"X-Gitlab-Token": SECRET + "x", "X-Gitlab-Event": "Push Hook",
                   "X-Gitlab-Event-UUID": str(uuid.uuid4())}
    elif case == "bearer wrong":
        headers = {"Authorization": "Bearer " + SECRET[:-1]}
    elif case == "too large":
        body = github_push(rig, padding="x" * MAX_BYTES)
        headers = signed(body)
    answer = post(rig, body, headers)
    assert answer.status_code == status, answer.text
    assert says in answer.json()["message"]
    assert answer.json()["status_code"] == status
    assert rig.launches() == before


def test_a_replayed_delivery_is_refused(rig: Rig) -> None:
    """The same delivery id again, and the same signed body under a new id (GitHub does not
    sign its delivery header), are both replays. A branch that does not exist keeps the
    first delivery from building anything."""
    before = rig.launches()
    body = github_push(rig, ref="refs/heads/no-such-branch")
    headers = signed(body)
    first = post(rig, body, headers)
    assert first.status_code == 404, first.text  # accepted, then its ref is not found
    assert "Could not resolve ref" in first.json()["message"]
    again = post(rig, body, headers)
    assert again.status_code == 409, again.text
    assert "received before" in again.json()["message"]
    renamed = post(rig, body, signed(body))
    assert renamed.status_code == 409, renamed.text
    assert rig.launches() == before


def test_a_huge_body_is_refused_before_it_is_read(rig: Rig) -> None:
    """A body announcing 100 MB gets its 413 while most of it has not been sent, and a
    body of unknown length (chunked) is cut off once it passes the cap."""
    host, port = rig.base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=20) as sock:
        sock.sendall(b"POST /api/prebuild HTTP/1.1\r\nHost: " + rig.base[7:].encode() +
                     b"\r\nContent-Type: application/json\r\nX-Hub-Signature-256: sha256=0"
                     b"\r\nContent-Length: 100000000\r\n\r\n{\"ref\":")
        head = sock.recv(4096).decode("latin-1")
    assert head.startswith("HTTP/1.1 413"), head

    def chunks() -> Iterator[bytes]:
        for _ in range(4 * MAX_BYTES // 1024):
            yield b" " * 1024

    before = rig.launches()
    answer = httpx.post(f"{rig.base}/api/prebuild", content=chunks(),
                        headers=signed(b"whatever"), timeout=30)
    assert answer.status_code == 413, answer.text
    assert rig.launches() == before


def test_pings_and_deleted_branches_build_nothing(rig: Rig) -> None:
    before = rig.launches()
    ping = json.dumps({"zen": "Keep it logically awesome.", "hook_id": 1}).encode()
    answer = post(rig, ping, signed(ping, event="ping"))
    assert answer.status_code == 200 and answer.json()["status"] == "ignored"
    deleted = github_push(rig, ref="refs/heads/old")
    deleted = deleted.replace(b'"deleted": false', b'"deleted": true')
    answer = post(rig, deleted, signed(deleted))
    assert answer.status_code == 200, answer.text
    assert "deleted" in answer.json()["message"]
    assert rig.launches() == before


def test_gitlab_pushes_and_ci_calls_start_a_prebuild(rig: Rig,
                                                     capsys: pytest.CaptureFixture[str],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """GitLab's token header, and the plain form for CI (bearer token, a link), both start
    a build-only launch of the same link; ``binderless prebuild`` is that plain form."""
    body = json.dumps({
        "object_kind": "push", "ref": "refs/heads/main", "after": rig.sha,
        "checkout_sha": rig.sha,
        "project": {"path_with_namespace": "publisher/book", "web_url": rig.clone_url[:-4],
                    "git_http_url": rig.clone_url},
    }).encode()
    answer = post(rig, body, {"X-Gitlab-Token": SECRET, "X-Gitlab-Event": "Push Hook",
                              "X-Gitlab-Event-UUID": str(uuid.uuid4()),
                              "Content-Type": "application/json"})
    assert answer.status_code == 202, answer.text
    assert answer.json()["spec"] == rig.spec("main").partition("/")[2]

    ci = httpx.post(f"{rig.base}/api/prebuild", json={"link": rig.spec("main")},
                    headers={"Authorization": f"Bearer {SECRET}"}, timeout=30)
    assert ci.status_code == 202, ci.text
    assert ci.json()["resolved_ref"] == rig.sha

    monkeypatch.setenv("BINDERLESS_WEBHOOK_SECRET", SECRET)
    with pytest.raises(SystemExit) as done:
        cli.main(["prebuild", rig.spec("main"), "--server", rig.base])
    assert done.value.code == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["resolved_ref"] == rig.sha and printed["status"] == "building"
    for started in (answer.json(), ci.json(), printed):
        assert read_stream(started["stream_url"], timeout=240).final["phase"] == "ready"

    monkeypatch.setenv("BINDERLESS_WEBHOOK_SECRET", "not-the-secret-of-this-server")
    with pytest.raises(SystemExit) as refused:
        cli.main(["prebuild", rig.spec("main"), "--server", rig.base])
    assert refused.value.code == 1
    assert "bearer token" in capsys.readouterr().err


def test_without_a_secret_the_route_is_off(tmp_path: Path) -> None:
    with serve_in_thread(local_service(Settings(state_dir=tmp_path / "state"))) as base:
        body = b'{"ref": "refs/heads/main"}'
        answer = httpx.post(f"{base}/api/prebuild", content=body, headers=signed(body))
    assert answer.status_code == 404
    assert "Prebuilds are off" in answer.json()["message"]
    assert "BINDERLESS_WEBHOOK_SECRET" in answer.json()["message"]


def test_a_short_secret_is_refused_at_start() -> None:
    with pytest.raises(ValueError, match="webhook_secret needs at least 16"):
        Settings(webhook_secret="short").validate()


def test_pushes_to_github_and_gitlab_name_their_own_providers() -> None:
    """What a launch of the same repository would use: gh/ and gl/ links on the configured
    hosts (the payloads as those services send them), a git/ link elsewhere."""
    settings = Settings(gitlab_host="gitlab.example.org")
    github = {"ref": "refs/heads/feature/x", "after": "a" * 40,
              "repository": {"full_name": "org/repo", "html_url": "https://github.com/org/repo",
                             "clone_url": "https://github.com/org/repo.git"}}
    assert push_body(Delivery("github", "push", "d1"), github, settings) == {
        "provider": "gh", "spec": "org/repo/feature/x"}
    gitlab = {"object_kind": "tag_push", "ref": "refs/tags/v1.0", "after": "b" * 40,
              "project": {"path_with_namespace": "group/sub/proj",
                          "web_url": "https://gitlab.example.org/group/sub/proj",
                          "git_http_url": "https://gitlab.example.org/group/sub/proj.git"}}
    assert push_body(Delivery("gitlab", "Tag Push Hook", "u1"), gitlab, settings) == {
        "provider": "gl", "spec": "group%2Fsub%2Fproj/v1.0"}
    elsewhere = {**gitlab, "project": {**gitlab["project"],  # type: ignore[dict-item]
                                       "web_url": "https://code.example.com/group/sub/proj",
                                       "git_http_url": "https://code.example.com/g/p.git"}}
    assert push_body(Delivery("gitlab", "Push Hook", "u2"), elsewhere, settings) == {
        "provider": "git", "spec": "https%3A%2F%2Fcode.example.com%2Fg%2Fp.git/v1.0"}
