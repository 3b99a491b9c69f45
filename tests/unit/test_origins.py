"""The Host allow-list and the page-origin rules (``origins.py``)."""

from __future__ import annotations

import socket

import pytest

from binderless.origins import OriginPolicy, host_name, names_local_path
from binderless.settings import Settings


def policy(**kw: object) -> OriginPolicy:
    return OriginPolicy.from_settings(Settings(**kw))  # type: ignore[arg-type]


@pytest.mark.parametrize(("header", "name"), [
    ("127.0.0.1:8585", "127.0.0.1"), ("[::1]:8585", "::1"), ("LocalHost", "localhost"),
    ("example.org.:443", "example.org"), ("[::1", ""), ("", ""),
])
def test_host_name(header: str, name: str) -> None:
    assert host_name(header) == name


@pytest.mark.parametrize("host", ["127.0.0.1:8585", "localhost:8585", "[::1]:8585",
                                  "127.0.0.2:8585", "LOCALHOST"])
def test_a_loopback_server_answers_its_loopback_names(host: str) -> None:
    assert policy().host_allowed(host)


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8585", "localhost.evil.example",
                                  "127.0.0.1.evil.example", "192.168.1.5:8585", "", None,
                                  "[::1", "0x7f.1"])
def test_a_loopback_server_refuses_other_names(host: str | None) -> None:
    # A rebinding page names its own host: never answered.
    assert not policy().host_allowed(host)


def test_public_url_and_allowed_hosts_are_answered() -> None:
    p = policy(host="127.0.0.1", public_url="https://binder.example.org/",
               allowed_hosts=("alias.example.org",))
    assert p.host_allowed("binder.example.org")
    assert p.host_allowed("alias.example.org:443")
    assert p.host_allowed("localhost:8585")  # the reverse proxy on this machine
    assert not p.host_allowed("evil.example")
    assert policy(allowed_hosts=("*",)).host_allowed("anything.example")


def test_a_server_on_every_address_answers_ip_literals_and_its_name() -> None:
    p = policy(host="0.0.0.0")
    assert p.host_allowed("10.1.2.3:8585")
    assert p.host_allowed("[fe80::1]:8585")
    assert p.host_allowed(socket.gethostname())
    assert not p.host_allowed("evil.example")


def test_page_origin() -> None:
    p = policy()
    own = ("http", "127.0.0.1:8585")
    assert p.page_origin({}, *own) is None  # the CLI, a script
    assert p.page_origin({"Origin": "http://127.0.0.1:8585"}, *own) is None
    assert p.page_origin({"Origin": "http://127.0.0.1:9999"}, *own) == "http://127.0.0.1:9999"
    assert p.page_origin({"Origin": "null"}, *own) == "null"
    assert p.page_origin({"Sec-Fetch-Site": "cross-site"}, *own) == "null"
    assert p.page_origin({"Sec-Fetch-Site": "same-site"}, *own) == "null"  # another port
    assert p.page_origin({"Sec-Fetch-Site": "same-origin"}, *own) is None
    behind = policy(host="127.0.0.1", public_url="https://binder.example.org")
    assert behind.page_origin({"Origin": "https://binder.example.org"}, *own) is None


def test_other_origins_follow_the_settings() -> None:
    # A single-user local server: sessions run as its user, so no other site may use them.
    assert not policy().origin_allowed("https://site.example")
    assert policy().cors_headers("https://site.example") == {"Vary": "Origin"}
    listed = policy(allow_origins=("https://site.example",))
    assert listed.origin_allowed("https://site.example")
    assert not listed.origin_allowed("https://other.example")
    assert listed.cors_headers("https://site.example")["Access-Control-Allow-Origin"] == \
        "https://site.example"
    # Where sessions are isolated (containers), every origin may, as on mybinder.org.
    isolated = policy(builder="docker", spawner="docker")
    assert isolated.origin_allowed("https://site.example")
    assert isolated.cors_headers("https://site.example")["Access-Control-Allow-Origin"] == "*"


@pytest.mark.parametrize(("provider", "spec", "local"), [
    ("git", "%2Fetc/HEAD", True),
    ("git", "file%3A%2F%2F%2Fetc/HEAD", True),
    ("git", "FILE%3A%2F%2F%2Fetc/HEAD", True),
    ("git", "~%2Frepo/HEAD", True),
    ("git", ".%2Frepo/HEAD", True),
    ("git", "repo/HEAD", True),
    ("git", "https%3A%2F%2Fgithub.com%2Forg%2Frepo/HEAD", False),
    ("git", "https%3A//github.com/org/repo/main", False),
    ("gh", "org/repo/HEAD", False),
    ("git", "nothing", False),
])
def test_names_local_path(provider: str, spec: str, local: bool) -> None:
    assert names_local_path(provider, spec) is local
