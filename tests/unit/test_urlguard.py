"""The URL guard refuses internal targets before any connection opens."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from urllib.parse import quote

import httpx
import pytest

from binderless.errors import SpecNotAllowed
from binderless.providers.git import GitProvider
from binderless.providers.github import GitHubProvider
from binderless.urlguard import UrlGuard, guarded_client


class ConnectionAttempted(AssertionError):
    pass


@pytest.fixture
def no_sockets(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[object]]:
    """Any attempt to open a connection fails the test (and is recorded)."""
    attempts: list[object] = []

    def refuse(*args: object, **kwargs: object) -> None:
        attempts.append(args)
        raise ConnectionAttempted(f"a connection was attempted: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    yield attempts
    assert attempts == []


FAKE_DNS = {
    "internal.example": ["10.1.2.3"],
    "rebind.example": ["93.184.216.34", "127.0.0.1"],
    "public.example": ["93.184.216.34"],
    "v6local.example": ["::1"],
    "mapped.example": ["::ffff:169.254.169.254"],
}


def resolver(host: str) -> list[str]:
    if host not in FAKE_DNS:
        raise socket.gaierror("unknown host")
    return FAKE_DNS[host]


def guard(**kw: object) -> UrlGuard:
    return UrlGuard(enforce=True, resolver=resolver, **kw)  # type: ignore[arg-type]


REFUSED = [
    "https://127.0.0.1/x", "https://localhost/x", "https://LOCALHOST./x", "https://[::1]/x",
    "https://10.0.0.8/x", "https://172.16.5.4/x", "https://192.168.1.1/x",
    "https://169.254.169.254/latest/meta-data/", "https://[fd00:ec2::254]/", "https://0.0.0.0/",
    "https://100.64.0.1/", "https://internal.example/repo.git", "https://rebind.example/x",
    "https://v6local.example/", "https://mapped.example/", "https://metadata.google.internal/",
    "http://public.example/x", "file:///etc/passwd", "ftp://public.example/x",
    "git://public.example/x", "https://2130706433/", "https://nowhere.example/",
]


@pytest.mark.parametrize("url", REFUSED)
def test_refuses_internal_and_non_https_targets(url: str, no_sockets: list[object]) -> None:
    with pytest.raises(SpecNotAllowed):
        guard().check(url)


def test_allows_public_https_and_optional_git(no_sockets: list[object]) -> None:
    guard().check("https://public.example/org/repo.git")
    guard(schemes=("https", "git")).check("git://public.example/org/repo.git")
    with pytest.raises(SpecNotAllowed, match="not allowed on this server"):
        guard(allowed_hosts=("github.com",)).check("https://public.example/x")


def test_redirect_to_an_internal_address_is_refused_before_connecting(
        no_sockets: list[object]) -> None:
    seen: list[str] = []

    def upstream(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return httpx.Response(302, headers={"Location": "http://169.254.169.254/latest/"})

    client = guarded_client(guard(), inner=httpx.MockTransport(upstream))
    with pytest.raises(SpecNotAllowed):
        client.get("https://public.example/start")
    assert seen == ["https://public.example/start"]  # the internal hop was never sent


def test_guarded_provider_refuses_before_any_request(no_sockets: list[object]) -> None:
    def upstream(request: httpx.Request) -> httpx.Response:
        raise ConnectionAttempted(str(request.url))

    client = guarded_client(guard(), inner=httpx.MockTransport(upstream))
    provider = GitHubProvider(client, api_url="https://169.254.169.254")
    with pytest.raises(SpecNotAllowed):
        provider.resolve("org/repo/HEAD")


def test_git_provider_checks_the_url_before_running_git(no_sockets: list[object]) -> None:
    calls: list[object] = []

    def run_git(cmd: object) -> str:
        calls.append(cmd)
        return ""

    provider = GitProvider(allow_local=False, guard=guard(), run_git=run_git)  # type: ignore[arg-type]
    for url in ("https://10.0.0.1/r.git", "https://localhost/r.git", "file:///srv/r.git",
                "/srv/repo"):
        with pytest.raises(SpecNotAllowed):
            provider.resolve(f"{quote(url, safe='')}/HEAD")
    assert calls == []


def test_local_mode_does_not_enforce(no_sockets: list[object]) -> None:
    UrlGuard(enforce=False).check("http://127.0.0.1/x")
