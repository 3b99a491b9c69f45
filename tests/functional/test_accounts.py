"""Signing in (local user, OpenID Connect against a provider on 127.0.0.1), sessions that
answer only their owner, and the projects API: an in-process server, a stand-in Jupyter."""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from binderless.backends.protocols import Route, SessionRecord
from binderless.errors import SignInFailed
from binderless.identity import IDENTITY_COOKIE
from binderless.local import local_service
from binderless.oidc import OidcClient
from binderless.service import LaunchService
from binderless.settings import Settings
from tests.functional.inprocess import serve_in_thread
from tests.oidc_provider import CLIENT_ID, CLIENT_SECRET, Provider, new_key, running_provider

REPO = "https://github.com/org/analysis"
LAB_PAGE = b"<!doctype html><html><head><title>JupyterLab</title></head><body>lab</body></html>"


#: The stand-in Jupyter's files, as its contents API lists them.
FILES = {"notes.md": b"hello", "data/table.csv": b"1,2,3\n" * 300}


def listing(folder: str) -> dict[str, Any]:
    prefix = folder + "/" if folder else ""
    entries: dict[str, str] = {}
    for path in FILES:
        if path.startswith(prefix):
            first = path[len(prefix):].split("/")[0]
            entries[prefix + first] = "directory" if "/" in path[len(prefix):] else "file"
    return {"type": "directory", "content": [
        {"name": p.rsplit("/", 1)[-1], "path": p, "type": t} for p, t in entries.items()]}


class FakeJupyter(BaseHTTPRequestHandler):
    """Answers like a Jupyter server behind the proxy: HTML for /lab, the contents API and
    /files/ for FILES, JSON otherwise."""

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        path = self.path.split("?")[0]
        is_page = "/lab" in path
        body = LAB_PAGE if is_page else json.dumps({"path": self.path}).encode()
        if "/api/contents" in path:
            body = json.dumps(listing(path.split("/api/contents", 1)[1].strip("/"))).encode()
        elif "/files/" in path:
            body = FILES[path.split("/files/", 1)[1]]
        self.send_response(200)
        if path.endswith("/echo-cookies"):  # a hostile server: reads and sets cookies
            body = json.dumps({"cookie": self.headers.get("Cookie", "")}).encode()
            self.send_header("Set-Cookie", f"{IDENTITY_COOKIE}=forged; Path=/")
            self.send_header("Set-Cookie", "_xsrf=fine; Path=/")
        self.send_header("Content-Type", "text/html" if is_page else "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def jupyter() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeJupyter)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class Clients:
    """HTTP clients (browsers, in effect) closed at the end of the test."""

    def __init__(self) -> None:
        self.made: list[httpx.Client] = []

    def __call__(self, **options: Any) -> httpx.Client:
        client = httpx.Client(timeout=10, **options)
        self.made.append(client)
        return client


@pytest.fixture
def clients() -> Iterator[Clients]:
    made = Clients()
    try:
        yield made
    finally:
        for client in made.made:
            client.close()


@pytest.fixture
def provider() -> Iterator[Provider]:
    with running_provider() as running:
        yield running


def service_for(tmp_path: Path, **settings: Any) -> LaunchService:
    return local_service(Settings(state_dir=tmp_path / "state", **settings))


def add_session(service: LaunchService, owner: str, target: str, repo_url: str = REPO) -> tuple[str, str]:
    session_id, token = secrets.token_hex(8), secrets.token_hex(32)
    now = service.clock()
    service.store.add_session(SessionRecord(
        session_id=session_id, launch_id="l-" + session_id, owner=owner, repo_url=repo_url,
        resolved_ref="a" * 40, image_key="k", home="", target="", token=token, backend_id="",
        status="starting", created_at=now, last_activity=now))
    service.routes.add(Route(session_id=session_id, target=target, token=token, owner=owner))
    return session_id, token


def sign_in_oidc(clients: Clients, base: str, provider: Provider, sub: str,
                 name: str) -> httpx.Client:
    provider.next_user = {"sub": sub, "name": name, "email": f"{name.lower()}@example.org"}
    client = clients(follow_redirects=True)
    page = client.get(base + "/auth/login?next=/api/me")
    assert page.status_code == 200, page.text
    assert page.json()["user"]["name"] == name
    return client


def oidc_settings(provider: Provider) -> dict[str, Any]:
    return {"oidc_issuer": provider.issuer, "oidc_client_id": CLIENT_ID,
            "oidc_client_secret": CLIENT_SECRET}


def test_a_session_answers_only_its_owner(tmp_path: Path, provider: Provider, jupyter: str,
                                          clients: Clients) -> None:
    service = service_for(tmp_path, **oidc_settings(provider))
    with serve_in_thread(service) as base:
        alice = sign_in_oidc(clients, base, provider, "alice-sub", "Alice")
        bob = sign_in_oidc(clients, base, provider, "bob-sub", "Bob")
        alice_id = alice.get(base + "/api/me").json()["user"]["id"]
        assert alice_id != bob.get(base + "/api/me").json()["user"]["id"]
        cookie = alice.cookies.get(IDENTITY_COOKIE, domain="127.0.0.1")
        assert cookie and "Alice" not in cookie  # signed, and not plain text

        session_id, token = add_session(service, alice_id, jupyter)
        url = f"{base}/user/{session_id}/"
        assert alice.get(url + "api/status", params={"token": token}).status_code == 200
        # Everyone else gets 403, with the token or without, over HTTP and WebSocket.
        for client in (bob, clients()):
            assert client.get(url + "api/status", params={"token": token}).status_code == 403
            assert client.get(url + "api/status").status_code == 403
            upgrade = client.get(url + "api/kernels/x/channels", params={"token": token},
                                 headers={"Upgrade": "websocket", "Connection": "Upgrade"})
            assert upgrade.status_code == 403
            assert client.get(url + ".binderless/download", params={"token": token}
                              ).status_code == 403
        # A forged cookie (another user's id, no valid signature) is nobody.
        tampered = ("B" if cookie[0] != "B" else "C") + cookie[1:]
        forged = clients(cookies={IDENTITY_COOKIE: tampered})
        assert forged.get(url + "api/status", params={"token": token}).status_code == 403

        # The session's server never sees the sign-in, and cannot set one.
        echoed = alice.get(url + "echo-cookies", params={"token": token})
        assert IDENTITY_COOKIE not in echoed.json()["cookie"]
        set_cookies = echoed.headers.get_list("set-cookie")
        assert "_xsrf=fine; Path=/" in set_cookies
        assert not any(c.startswith(IDENTITY_COOKIE) for c in set_cookies), set_cookies
        assert alice.cookies.get(IDENTITY_COOKIE, domain="127.0.0.1") == cookie

        # Jupyter's pages get the countdown banner; other answers pass unchanged.
        lab = alice.get(url + "lab", params={"token": token})
        assert lab.status_code == 200
        assert f'data-binderless-session="{session_id}"' in lab.text
        assert lab.text.index("session-banner.js") < lab.text.index("</head>")
        assert "session-banner" not in alice.get(url + "api/contents").text

        # The banner's status poll does not count as use; "keep me running" does.
        record = service.store.get_session(session_id)
        before = service.last_activity(record)
        status = alice.get(url + ".binderless/status").json()
        assert service.last_activity(service.store.get_session(session_id)) == before
        assert status["signed_in"] is True and status["running"] is True
        assert 0 < status["idle_seconds_left"] <= 600
        time.sleep(0.05)
        kept = alice.post(url + ".binderless/keepalive")
        assert kept.status_code == 200
        assert service.store.get_session(session_id).last_activity > before


def test_projects_api_shows_and_touches_only_your_own(tmp_path: Path, provider: Provider,
                                                      jupyter: str, clients: Clients) -> None:
    service = service_for(tmp_path, **oidc_settings(provider))
    assert service.workspaces is not None
    source = tmp_path / "checkout"
    source.mkdir()
    (source / "notes.md").write_text("hello")
    with serve_in_thread(service) as base:
        alice = sign_in_oidc(clients, base, provider, "alice-sub", "Alice")
        bob = sign_in_oidc(clients, base, provider, "bob-sub", "Bob")
        ids = {name: c.get(base + "/api/me").json()["user"]["id"]
               for name, c in (("alice", alice), ("bob", bob))}
        for user in ids.values():
            service.workspaces.open(user, repo_url=REPO, resolved_ref="a" * 40,
                                    launch_path="v2/gh/org/analysis/HEAD", checkout=source,
                                    open_path="doc/tree/notes.md")
        session_id, token = add_session(service, ids["alice"], jupyter)

        listing = alice.get(base + "/api/projects").json()
        assert listing["limit"] == 10
        [project] = listing["projects"]
        assert project["name"] == "analysis" and project["repo_url"] == REPO
        assert project["state"] == "running" and project["size"] == 5
        # Open goes where the link that made the project opened (its labpath), running or not.
        assert project["launch_url"] == "/v2/gh/org/analysis/HEAD?urlpath=doc/tree/notes.md"
        assert project["open_url"] == f"/user/{session_id}/doc/tree/notes.md?token={token}"
        assert "open_url" not in bob.get(base + "/api/projects").json()["projects"][0]

        assert httpx.get(base + "/api/projects").status_code == 401
        # Bob's "analysis" is his own: deleting it leaves Alice's folder and session alone.
        alice_folder = service.workspaces.home(ids["alice"]) / "analysis"
        assert bob.delete(base + "/api/projects/analysis").status_code == 200
        assert alice_folder.is_dir()
        assert bob.delete(base + "/api/projects/analysis").status_code == 404
        assert bob.delete(base + "/api/projects/..%2F" + ids["alice"]).status_code == 404
        # Another site cannot make Alice's browser delete or stop anything.
        evil = {"Origin": "https://evil.example"}
        assert alice.delete(base + "/api/projects/analysis", headers=evil).status_code == 403
        assert alice.post(base + "/api/projects/analysis/stop", headers=evil).status_code == 403
        assert alice_folder.is_dir()

        stopped = alice.post(base + "/api/projects/analysis/stop")
        assert stopped.json() == {"stopped": [session_id]}
        assert alice.get(f"{base}/user/{session_id}/api/status",
                         params={"token": token}).status_code == 404
        assert alice_folder.is_dir()  # stopping keeps the files
        assert alice.get(base + "/api/projects").json()["projects"][0]["state"] == "stopped"
        assert alice.delete(base + "/api/projects/analysis").status_code == 200
        assert not alice_folder.exists()
        assert alice.get(base + "/api/projects").json()["projects"] == []


def test_broken_or_foreign_sign_ins_are_refused(tmp_path: Path, provider: Provider,
                                                clients: Clients) -> None:
    service = service_for(tmp_path, **oidc_settings(provider))
    with serve_in_thread(service) as base:
        client = clients()
        start = client.get(base + "/auth/login?next=//evil.example/")
        assert start.status_code == 302 and start.headers["location"].startswith(provider.issuer)
        # A callback with another state than the one this browser started is refused.
        answer = client.get(base + "/auth/callback?code=x&state=forged")
        assert answer.status_code == 401 and "Sign-in problem" in answer.text
        assert IDENTITY_COOKIE not in answer.headers.get("set-cookie", "")
        refused = client.get(base + "/auth/callback?error=access_denied&state=x")
        assert refused.status_code == 401 and "access_denied" in refused.text
        # The login redirect never leaves for another host afterwards.
        signed = clients()
        first = signed.get(base + "/auth/login?next=//evil.example/")
        back = signed.get(first.headers["location"])
        done = signed.get(back.headers["location"])
        assert done.status_code == 303 and done.headers["location"] == "/projects"
        assert provider.token_requests >= 1
        assert "Traceback" not in answer.text + refused.text


def test_id_tokens_are_checked(provider: Provider, clients: Clients) -> None:
    client = OidcClient(provider.issuer, CLIENT_ID, CLIENT_SECRET, clients())
    good = provider.id_token({"sub": "alice-sub", "nonce": "n", "name": "Alice"})
    identity = client.identity(good, "n")
    assert identity.name == "Alice" and identity.via == "oidc"
    now = int(time.time())
    bad = {
        "wrong nonce": provider.id_token({"sub": "a", "nonce": "other"}),
        "other audience": provider.id_token({"sub": "a", "nonce": "n", "aud": "someone"}),
        "other issuer": provider.id_token({"sub": "a", "nonce": "n", "iss": "https://x"}),
        "expired": provider.id_token({"sub": "a", "nonce": "n", "exp": now - 600,
                                      "iat": now - 900}),
        "foreign key": provider.id_token({"sub": "a", "nonce": "n"}, key=new_key()),
        "unknown key id": provider.id_token({"sub": "a", "nonce": "n"}, kid="other"),
        "access token": provider.id_token({"sub": "a", "nonce": "n", "token_use": "access"}),
        "garbage": "not-a-token",
    }
    for what, token in bad.items():
        with pytest.raises(SignInFailed):
            client.identity(token, "n")
            pytest.fail(f"accepted a token with {what}")


def test_local_user_signs_in_from_this_server_only(tmp_path: Path, clients: Clients) -> None:
    service = service_for(tmp_path, local_user_name="Ada")
    with serve_in_thread(service) as base:
        client = clients()
        assert client.get(base + "/api/me").json()["signed_in"] is False
        page = client.get(base + "/auth/login?next=/projects")
        assert page.status_code == 200 and "Sign in as Ada" in page.text
        cross = client.post(base + "/auth/login", data={"next": "/projects"},
                            headers={"Origin": "https://evil.example"})
        assert cross.status_code == 403 and IDENTITY_COOKIE not in client.cookies
        signed = client.post(base + "/auth/login", data={"next": "/projects"},
                             headers={"Origin": base})
        assert signed.status_code == 303 and signed.headers["location"] == "/projects"
        assert "httponly" in signed.headers["set-cookie"].lower()
        assert "samesite=lax" in signed.headers["set-cookie"].lower()
        me = client.get(base + "/api/me").json()
        assert me["signed_in"] and me["user"] == {"id": "local", "name": "Ada", "email": "",
                                                  "via": "local"}
        assert "Your projects" in client.get(base + "/projects").text
        out = client.post(base + "/auth/logout", headers={"Origin": base})
        assert out.status_code == 303
        assert client.get(base + "/api/me").json()["signed_in"] is False


def test_sign_in_can_be_turned_off(tmp_path: Path) -> None:
    service = service_for(tmp_path, sign_in="off")
    with serve_in_thread(service) as base:
        me = httpx.get(base + "/api/me").json()
        assert me["sign_in"] == "off" and me["login_url"] is None
        answer = httpx.get(base + "/auth/login")
        assert answer.status_code == 401 and "not available" in answer.text


def test_download_your_work_zips_the_session_files(tmp_path: Path, jupyter: str,
                                                   clients: Clients) -> None:
    service = service_for(tmp_path, download_max_bytes=1000)
    with serve_in_thread(service) as base:
        session_id, token = add_session(service, "", jupyter)
        client = clients()
        url = f"{base}/user/{session_id}/.binderless/"
        assert client.get(url + "status").status_code == 403  # the token is still needed
        status = client.get(url + "status", params={"token": token}).json()
        assert status["persistent"] is False and status["signed_in"] is False
        assert status["download_url"] == f"/user/{session_id}/.binderless/download"
        # Larger than this server hands out: a clear refusal, no half-made zip left.
        refused = client.get(url + "download", params={"token": token})
        assert refused.status_code == 413
        assert "larger than" in refused.json()["message"]
        assert "Traceback" not in refused.text
        small = {"notes.md": b"hello", "data/table.csv": b"1,2,3\n"}
        large = dict(FILES)
        FILES.clear()
        FILES.update(small)
        try:
            answer = client.get(url + "download", params={"token": token})
        finally:
            FILES.clear()
            FILES.update(large)
        assert answer.status_code == 200
        assert answer.headers["content-type"] == "application/zip"
        import io
        import zipfile

        with zipfile.ZipFile(io.BytesIO(answer.content)) as archive:
            assert {n: archive.read(n) for n in archive.namelist()} == small
        assert client.get(url + "nothing", params={"token": token}).status_code == 404
