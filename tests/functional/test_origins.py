"""Host and origin checks on a real in-process server: DNS rebinding, pages of other sites,
local paths, body limits (docs/security.md)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from binderless.local import local_service
from binderless.service import LaunchService
from binderless.settings import Settings
from tests.functional.inprocess import serve_in_thread

EVIL = "http://127.0.0.1:9"  # another origin (another port of this machine)
LOCAL_ETC = "/build/git/" + quote("/etc", safe="") + "/HEAD"
REMOTE = "/build/gh/org/repo/HEAD"


def github_404(request: httpx.Request) -> httpx.Response:
    return httpx.Response(404, json={"message": "Not Found"})


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator:  # type: ignore[type-arg]
    services: list[LaunchService] = []

    def make(**kw: object) -> LaunchService:
        settings = Settings(state_dir=tmp_path / f"state{len(services)}", keepalive_seconds=0.2,
                            final_linger_seconds=0.0, **kw)  # type: ignore[arg-type]
        service = local_service(settings, http_client=httpx.Client(
            transport=httpx.MockTransport(github_404)))
        services.append(service)
        return service

    yield make


def sse(base: str, path: str, **headers: str) -> tuple[httpx.Response, list[dict[str, object]]]:
    response = httpx.get(base + path, headers={"Accept": "text/event-stream", **headers},
                         timeout=30)
    events = [json.loads(line[5:]) for line in response.text.splitlines()
              if line.startswith("data:")]
    return response, events


def launches(service: LaunchService) -> int:
    return int(service.store.metrics()["in_progress"]) + sum(  # type: ignore[call-overload]
        n for *_rest, n, _total in service.store.metrics()["launches"])  # type: ignore[misc]


@pytest.mark.parametrize("path", ["/", "/build/gh/org/repo/HEAD", "/api/launches",
                                  "/user/abc/api/kernels", "/v2/gh/org/repo/HEAD"])
@pytest.mark.parametrize("host", ["evil.example", "evil.example:8585", "127.0.0.1.evil.example"])
def test_a_rebinding_host_is_refused_everywhere(make_server, path: str, host: str) -> None:  # type: ignore[no-untyped-def]
    service = make_server()
    with serve_in_thread(service) as base:
        response = httpx.request("POST" if path == "/api/launches" else "GET", base + path,
                                 headers={"Host": host}, json={"provider": "gh"}, timeout=10)
    assert response.status_code == 403
    assert "does not answer for the host name" in response.json()["message"]
    assert launches(service) == 0


def test_a_page_of_another_site_cannot_launch_a_local_path(make_server) -> None:  # type: ignore[no-untyped-def]
    # The original attack: EventSource from another origin, /etc as a "repository".
    service = make_server(allow_origins=("*",))  # even where other sites are allowed
    with serve_in_thread(service) as base:
        for headers in ({"Origin": EVIL}, {"Sec-Fetch-Site": "cross-site"}):
            response, events = sse(base, LOCAL_ETC, **headers)
            assert response.status_code == 200
            assert events[-1]["phase"] == "failed" and events[-1]["status_code"] == 403
            assert "own pages" in str(events[-1]["message"])
            assert "token" not in json.dumps(events)
    assert launches(service) == 0


def test_a_single_user_server_refuses_other_sites_and_lets_them_read_nothing(make_server) -> None:  # type: ignore[no-untyped-def]
    service = make_server()
    with serve_in_thread(service) as base:
        response, events = sse(base, REMOTE, Origin=EVIL)
        assert "access-control-allow-origin" not in response.headers  # unreadable to the page
        assert events[-1]["status_code"] == 403 and "--allow-origin" in str(events[-1]["message"])
        posted = httpx.post(base + "/api/launches", json={"provider": "gh", "spec": "o/r/HEAD"},
                            headers={"Origin": EVIL}, timeout=10)
        assert posted.status_code == 403 and "access-control-allow-origin" not in posted.headers
        proxied = httpx.get(base + "/user/abc/api/kernels?token=x", headers={"Origin": EVIL},
                            timeout=10)
        assert proxied.status_code == 403
        preflight = httpx.options(base + "/api/launches", headers={
            "Origin": EVIL, "Access-Control-Request-Method": "POST"}, timeout=10)
        assert "access-control-allow-origin" not in preflight.headers
    assert launches(service) == 0


def test_pages_of_an_allowed_origin_launch_remote_repositories(make_server) -> None:  # type: ignore[no-untyped-def]
    service = make_server(allow_origins=("https://book.example",))
    with serve_in_thread(service) as base:
        response, events = sse(base, REMOTE, Origin="https://book.example")
        assert response.headers["access-control-allow-origin"] == "https://book.example"
        # It got as far as the provider (which answers 404 here): the launch was made.
        assert events[-1]["status_code"] == 404, events[-1]
        refused, _ = sse(base, REMOTE, Origin="https://other.example")
        assert "access-control-allow-origin" not in refused.headers
    assert launches(service) == 1


def test_own_pages_and_clients_without_origin_still_launch(make_server) -> None:  # type: ignore[no-untyped-def]
    service = make_server()
    with serve_in_thread(service) as base:
        _, own = sse(base, REMOTE, Origin=base)
        _, cli = sse(base, REMOTE)
        _, navigated = sse(base, "/build/git/" + quote("/nonexistent-binderless", safe="")
                           + "/HEAD", **{"Sec-Fetch-Site": "same-origin"})
    assert own[-1]["status_code"] == 404 and cli[-1]["status_code"] == 404
    # Refused because the folder does not exist, not because of where the request came from.
    assert navigated[-1]["status_code"] == 404, navigated[-1]
    assert launches(service) == 3


def test_a_server_behind_a_public_url_drops_the_local_machine_defaults(make_server) -> None:  # type: ignore[no-untyped-def]
    service = make_server(public_url="https://binder.example.org")
    assert service.settings.sign_in_method == "off"
    assert service.settings.enforce_url_guard
    with serve_in_thread(service) as base:
        _, events = sse(base, LOCAL_ETC, Host="binder.example.org")
        assert events[-1]["phase"] == "failed"
        assert "does not launch local paths" in str(events[-1]["message"])
    with pytest.raises(ValueError, match=r"only for a server on 127\.0\.0\.1"):
        Settings(public_url="https://binder.example.org", sign_in="local").validate()


def test_bodies_are_bounded_and_odd_json_is_a_clear_400(make_server) -> None:  # type: ignore[no-untyped-def]
    service = make_server()
    with serve_in_thread(service) as base:
        big = httpx.post(base + "/api/launches", content=b"{" + b" " * (1 << 20) + b"}",
                         headers={"Content-Type": "application/json"}, timeout=30)
        assert big.status_code == 413

        def chunks() -> Iterator[bytes]:
            for _ in range(200):
                yield b" " * 1024

        chunked = httpx.post(base + "/api/launches", content=chunks(), timeout=30)
        assert chunked.status_code == 413
        nested = httpx.post(base + "/api/launches", content=b"[" * 50_000 + b"]" * 50_000,
                            timeout=30)
        assert nested.status_code == 413  # over the limit before it is parsed
        deep = httpx.post(base + "/api/launches", content=b"[" * 30_000 + b"]" * 30_000,
                          timeout=30)
        assert deep.status_code == 400 and deep.json()["message"]
    assert launches(service) == 0


@pytest.mark.parametrize("header", ["x" * 40 + ":1", "0" * 32 + ":" + "9" * 400,
                                    "0" * 32 + ":\u0663", "0" * 32 + ":-1"])
def test_a_mangled_last_event_id_starts_a_new_launch(make_server, header: str) -> None:  # type: ignore[no-untyped-def]
    service = make_server()
    with serve_in_thread(service) as base:
        response = httpx.get(base + REMOTE, timeout=30, headers=[
            (b"Accept", b"text/event-stream"), (b"Last-Event-ID", header.encode())])
        events = [json.loads(line[5:]) for line in response.text.splitlines()
                  if line.startswith("data:")]
    assert response.status_code == 200 and events[-1]["status_code"] == 404


def test_overlong_paths_are_not_found_not_errors(make_server) -> None:  # type: ignore[no-untyped-def]
    service = make_server()
    with serve_in_thread(service) as base:
        for path in ("/" + "a" * 300, "/assets/" + "b" * 5000 + "/x.css", "/a%00b",
                     "/api/launches/" + "c" * 300 + "/events?after=" + "9" * 400):
            assert httpx.get(base + path, timeout=10).status_code == 404, path
