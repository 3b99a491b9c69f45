"""Hostile requests, generated: shared by the hostile sweep and the fast path's
differential test.

``Sweep`` makes seeded, and so repeatable, probes: each is an ordinary request to one of
the server's routes with one hostile part (a path, a query, a header, a body, a method,
or a malformed request on the wire). ``send`` writes a probe to a server on loopback
(through aiohttp's client when a client library could send it, else byte for byte) and
``judge`` counts what came back; ``swept_service`` is a local service whose launches can
never leave the machine, and ``add_fake_session`` gives its proxy a running session.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import httpx
from aiohttp import web
from yarl import URL

from binderless.backends.protocols import Route, SessionRecord
from binderless.errors import UnsupportedRepository
from binderless.local import local_service
from binderless.providers import ProviderRegistry
from binderless.providers.base import ResolvedRepo
from binderless.providers.git import GitProvider
from binderless.service import LaunchService
from binderless.settings import Settings
from binderless.urlguard import UrlGuard

SEED = 20260412
SESSION = "cafe0123deadbeef"
TOKEN = "t0k3n" * 8

PROVIDERS = ["gh", "gl", "gist", "git", "zenodo", "figshare", "hydroshare", "dataverse",
             "ckan", "doi", "codecommit", "nope", "GH", "%67h", "..", "%2e%2e", ""]
#: Path segments, already as they go on the wire (percent-encoded where encoded).
SEGMENTS = [
    "a" * 256, "b" * 1024, "c" * 4000, "%00", "%2e%2e", "..", "%2E%2E%2F", "%2F", "%252F",
    "%ff", "%fe%ff", "%", "%zz", "%C3%A9", "%E2%80%AE", "%F0%9F%92%A9", "%ED%A0%80", "9" * 400,
    "-1", "0x10", "1e309", "NaN", "%0A", "%0D%0A", "%09", "%20", "~", "@", ":", ";", "'",
    "%22", "%3Cscript%3Ealert(1)%3C%2Fscript%3E", "$(id)", "%60id%60", "HEAD", ".git", "%5C",
    "%5C%5Cevil.example", "*", "%3F", "%23", "CON", "..;", ";x=1", "", "%25", "%2500",
    "file:%2F%2F%2Fetc", "file%3A%2F%2F%2Fetc%2Fpasswd", "%2Fetc", "https%3A%2F%2F169.254.169.254",
    "%C0%AE%C0%AE", "%E0%80%AF", "\u00e9", "\u202e", "\U0001f4a9", "\ud800", "\x7f",
    "%" + "9" * 30, "0" * 100, "\u0660\u0661", "\u00b2", "\u2168", "%c2%b2",
]
#: Values for numbers: after=, Last-Event-ID's sequence, session and launch ids.
NUMBERS = ["", "0", "-1", "1" * 19, "9" * 25, "9" * 5000, "\u0661\u0662", "\u00b2", "\u2168",
           "\u00bd", "1.5", "1e3", " 1", "1 ", "0x1", "+1", "NaN", "inf", "1_000", "\uff11",
           "%31", "\x00", "1\n2", "18446744073709551616", "9223372036854775808"]
URLPATHS = [
    "javascript:alert(1)//", "JaVaScRiPt:alert(1)", " javascript:alert(1)", "java\tscript:x",
    "data:text/html,<script>alert(1)</script>", "https://evil.example/", "//evil.example/",
    "///evil.example/", "\\\\evil.example\\", "/\\evil.example", "\t//evil.example",
    "/%09/evil.example", "%0A//evil.example", "%2F%2Fevil.example", "https:evil.example",
    "../../../../api/projects", "%2e%2e/%2e%2e/api/projects", "\u0000", "\ud800", "a" * 5000,
    "vbscript:msgbox", "/user/other/", "?token=x", "#x",
]
HOSTS = ["evil.example", "evil.example:{port}", "127.0.0.1.evil.example", "127.0.0.1:{port}",
         "localhost:{port}", "LOCALHOST:{port}", "[::1]:{port}", "127.0.0.1:99999",
         "127.0.0.1:{port}@evil.example", "", " ", "127.0.0.1:{port}, evil.example",
         "xn--evil-e0a.example", "0x7f000001:{port}", "2130706433:{port}", "127.1:{port}",
         "e" * 300, "[::ffff:127.0.0.1]:{port}", "127.0.0.1:{port}.", "binder.example",
         "binder.example:443", "[", "[::1", "a:b:c"]
ORIGINS = ["null", "https://evil.example", "http://127.0.0.1:{port}.evil.example",
           "http://127.0.0.1:{port}", "http://localhost:1", "file://", "::::", "http://[",
           "https://binder.example", "http://127.0.0.1:{port}/path", "*", "o" * 3000,
           "chrome-extension://abc", "http://evil.example:{port}", "http://127.0.0.1"]
AUTHS = ["token", "token ", "Bearer", "Bearer " + TOKEN, "token " + TOKEN, "Basic Zm9vOmJhcg==",
         "token " + "x" * 5000, "TOKEN " + TOKEN.upper(), "token\t" + TOKEN, "token  " + TOKEN,
         "Digest username=x", "=", "token " + TOKEN + " extra"]
SEC_FETCH = ["cross-site", "same-site", "same-origin", "none", "x", ""]
#: Bodies for the routes that read one (POST /api/launches, the sign-in form, ...).
BODIES: list[bytes] = [
    b"", b"{", b"[]", b"null", b"1e999", b"NaN", b'"x"', b"{}", b"[" * 50_000 + b"]" * 50_000,
    b"[" * 5_000 + b"]" * 5_000, b'{"a":' * 3_000 + b"1" + b"}" * 3_000,
    b'{"link": 1}', b'{"link": null, "provider": 1}', b'{"provider": "gh", "spec": ["a"]}',
    b'{"provider": "gh", "spec": "org/repo/HEAD", "build_only": "yes"}',
    b'{"link": "\\ud800"}', b'{"provider": "gh", "spec": "\\ud800/x/HEAD"}',
    b'{"provider": "\\ud800", "spec": "x/y/z"}', b'{"link": "' + b"a" * 60_000 + b'"}',
    b'{"link": "javascript:alert(1)"}', b'{"link": "file:///etc"}', b'{"link": "/etc"}',
    b'{"provider": "git", "spec": "%2Fetc/HEAD"}', b'{"provider": "git", "spec": "%2F/HEAD"}',
    b'{"link": "https://mybinder.org/v2/gh/org/repo/HEAD?urlpath=javascript:x"}',
    b'{"provider": "gh", "spec": "' + b"a/" * 3000 + b'HEAD"}', b"\xff\xfe\x00",
    b'{"link": "https://[::1/x"}', b'{"link": "https://\\u0000/"}', b"x=1&next=//evil",
    b"next=%2F%09%2Fevil.example%2Fx", b"next=" + b"a" * 70_000, b"\x00" * 100,
    b'{"provider": "gh", "spec": "org/repo/HEAD"}', b'{"link": "gh/org/repo/HEAD"}',
    b'{"provider": "gh", "spec": "org/repo/' + b"9" * 5000 + b'"}',
    b'{"provider": "gh", "spec": "org/repo/HEAD", "owner": "someone-else"}',
]
CONTENT_TYPES = ["application/json", "text/plain", "application/x-www-form-urlencoded",
                 "multipart/form-data; boundary=x", "multipart/form-data", "application/json; "
                 "charset=utf-16", "application/json; charset=nope", "\u00e9/\u00e9", ""]
METHODS = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT",
           "PROPFIND", "FOO", "get"]


@dataclass(frozen=True)
class Probe:
    """One request: ``kind`` names the hostile part for the report."""

    kind: str
    method: str
    target: str  # the request target as sent: percent-encoded, maybe with raw characters
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    raw: bytes = b""  # a whole request written to the socket as is (malformed ones)

    def describe(self) -> str:
        shown = self.raw[:160] if self.raw else f"{self.method} {self.target[:160]}".encode()
        extra = "" if self.raw else f" headers={[(k, v[:60]) for k, v in self.headers]}" + (
            f" body={self.body[:60]!r}" if self.body else "")
        return f"[{self.kind}] {shown!r}{extra}"


@dataclass
class Outcome:
    failures: list[str] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    unanswered: list[str] = field(default_factory=list)


# ----- the generator -------------------------------------------------------------------------

class Sweep:
    """Hostile probes for one server; ``port`` fills the Host and Origin templates."""

    def __init__(self, rng: random.Random, port: int, launch_id: str) -> None:
        self.rng = rng
        self.port = port
        self.launch_id = launch_id

    def pick(self, values: Sequence[str]) -> str:
        return self.rng.choice(values).replace("{port}", str(self.port))

    def segments(self, low: int = 1, high: int = 5) -> str:
        return "/".join(self.rng.choice(SEGMENTS) for _ in range(self.rng.randint(low, high)))

    def spec(self) -> str:
        """A spec for any provider: hostile parts, overlong ones, or a plain one."""
        choice = self.rng.randrange(6)
        if choice == 0:
            return "org/" + "r" * self.rng.choice([256, 1000, 5000]) + "/HEAD"
        if choice == 1:
            return "a/" * self.rng.choice([100, 1500]) + "HEAD"
        if choice == 2:
            return "org/repo/" + self.rng.choice(NUMBERS + SEGMENTS)
        if choice == 3:
            url = "https://example.org/" + "x" * self.rng.choice([10, 300, 3000])
            return quote(url, safe="") + "/" + self.rng.choice(["HEAD", "a" * 40, "0" * 40, ""])
        return self.segments()

    def route(self) -> str:
        """A path on one of the server's routes, with hostile parts."""
        provider = self.rng.choice(PROVIDERS)
        routes = [
            f"/v2/{provider}/{self.spec()}", f"/build/{provider}/{self.spec()}",
            f"/repo/{self.segments()}", f"/user/{SESSION}/{self.segments()}",
            f"/user/{self.segments(1, 2)}", f"/api/launches/{self.segments(1, 3)}",
            f"/api/launches/{self.launch_id}/{self.segments(1, 2)}",
            f"/api/projects/{self.segments(1, 3)}", f"/auth/{self.segments(1, 2)}",
            f"/assets/{self.segments()}", f"/{self.segments()}",
            f"/user/{SESSION}/.binderless/{self.segments(1, 2)}",
            "/versions", "/health", "/metrics", "/api/repoproviders", "/api/me", "/projects",
        ]
        return self.rng.choice(routes)

    def plain(self) -> str:
        return self.rng.choice([
            f"/build/gh/org/repo-{self.rng.randrange(50)}/HEAD", "/api/launches",
            f"/user/{SESSION}/api/status", f"/api/launches/{self.launch_id}/events",
            "/v2/gh/org/repo/HEAD", "/auth/login", "/api/projects", "/health", "/"])

    def probe(self) -> Probe:
        kind = self.rng.choices(
            ["path", "query", "host", "origin", "auth", "cookie", "event-id", "body", "method",
             "wire"], weights=[22, 14, 9, 8, 8, 6, 8, 12, 6, 7])[0]
        made: Probe = getattr(self, f"_{kind.replace('-', '_')}")()
        return made

    def _path(self) -> Probe:
        return Probe("path", self.rng.choice(["GET", "GET", "HEAD", "POST"]), self.route())

    def _query(self) -> Probe:
        name = self.rng.choice(["after", "last_event_id", "urlpath", "labpath", "filepath",
                                "next", "build_only", "token", "x" * 300, "%00"])
        value = self.rng.choice(NUMBERS + URLPATHS + SEGMENTS)
        if name == "last_event_id":
            value = f"{self.launch_id}:{value}"
        target = self.rng.choice([
            f"/api/launches/{self.launch_id}/events", "/build/gh/org/repo/HEAD",
            "/v2/gh/org/repo/HEAD", "/auth/login", f"/user/{SESSION}/lab",
            f"/api/launches/{self.rng.choice(NUMBERS + SEGMENTS)}/events", self.route()])
        encoded = value if self.rng.random() < 0.3 else quote(value.encode(
            "utf-8", "surrogatepass"), safe="")
        return Probe("query", "GET", f"{target}?{name}={encoded}")

    def _host(self) -> Probe:
        return Probe("host", self.rng.choice(["GET", "POST"]),
                     self.rng.choice([self.plain(), self.route()]),
                     (("Host", self.pick(HOSTS)),),
                     body=b'{"provider": "gh", "spec": "org/repo/HEAD"}')

    def _origin(self) -> Probe:
        headers = [("Origin", self.pick(ORIGINS))]
        if self.rng.random() < 0.5:
            headers.append(("Sec-Fetch-Site", self.rng.choice(SEC_FETCH)))
        if self.rng.random() < 0.3:
            headers = headers[1:]
        method = self.rng.choice(["GET", "POST", "OPTIONS"])
        body = self.rng.choice([b'{"provider": "git", "spec": "%2Fetc/HEAD"}',
                                b'{"link": "file:///etc"}', b"next=/projects",
                                b'{"provider": "gh", "spec": "org/repo/HEAD"}'])
        target = self.rng.choice([self.plain(), "/build/git/%2Fetc/HEAD",
                                  "/build/git/file%3A%2F%2F%2Fetc/HEAD", "/auth/logout",
                                  "/api/projects/x/stop", self.route()])
        return Probe("origin", method, target, tuple(headers), body)

    def _auth(self) -> Probe:
        return Probe("auth", self.rng.choice(["GET", "POST", "OPTIONS"]),
                     f"/user/{SESSION}/{self.rng.choice(['api/status', 'lab', '', 'api/kernels'])}",
                     (("Authorization", self.pick(AUTHS)),))

    def _cookie(self) -> Probe:
        value = self.rng.choice(["x", "", "a.b.c", "\u00e9", "=" * 50, "x" * 4000, TOKEN,
                                 "eyJ9.eyJ9.x", "%ff", "1|2|3", '"quoted"'])
        name = self.rng.choice(["binderless-identity", f"binderless-session-{SESSION}",
                                "binderless-signin", "_xsrf"])
        return Probe("cookie", self.rng.choice(["GET", "POST"]), self.plain(),
                     (("Cookie", f"{name}={value}"),))

    def _event_id(self) -> Probe:
        value = self.rng.choice(NUMBERS)
        last = self.rng.choice([f"{self.launch_id}:{value}", value, f":{value}",
                                f"{value}:{value}", f"{self.launch_id}:1:2"])
        return Probe("event-id", "GET", self.rng.choice(
            ["/build/gh/org/repo/HEAD", "/build/gh/org/repo-0/HEAD"]),
            (("Last-Event-ID", last), ("Accept", "text/event-stream")))

    def _body(self) -> Probe:
        target = self.rng.choice(["/api/launches", "/api/launches", "/auth/login",
                                  f"/api/launches/{self.launch_id}/cancel",
                                  f"/user/{SESSION}/api/contents/x?token={TOKEN}",
                                  "/api/projects/x/stop", "/auth/logout"])
        headers = [("Content-Type", self.rng.choice(CONTENT_TYPES))]
        if self.rng.random() < 0.3:
            headers.append(("Idempotency-Key", self.rng.choice(
                ["k", "k" * 300, "\u00e9", " ", "a\tb", str(self.rng.randrange(5))])))
        return Probe("body", self.rng.choice(["POST", "POST", "PUT"]), target, tuple(headers),
                     self.rng.choice(BODIES))

    def _method(self) -> Probe:
        return Probe("method", self.rng.choice(METHODS), self.rng.choice([self.plain(),
                                                                          self.route()]))

    def _wire(self) -> Probe:
        """A request only a raw socket sends: lying lengths, raw bytes, broken lines."""
        path = self.plain().encode()
        host = f"127.0.0.1:{self.port}".encode()
        json_body = b'{"provider": "gh", "spec": "org/repo/HEAD"}'
        choices = [
            b"POST /api/launches HTTP/1.1\r\nHost: " + host + b"\r\nContent-Type: "
            b"application/json\r\nContent-Length: 100\r\n\r\n" + json_body,
            b"POST /api/launches HTTP/1.1\r\nHost: " + host + b"\r\nContent-Length: 5\r\n\r\n"
            + json_body,
            b"POST /api/launches HTTP/1.1\r\nHost: " + host + b"\r\nContent-Length: -1\r\n\r\n",
            b"POST /api/launches HTTP/1.1\r\nHost: " + host + b"\r\nContent-Length: 3\r\n"
            b"Content-Length: 4\r\n\r\nabcd",
            b"POST /api/launches HTTP/1.1\r\nHost: " + host + b"\r\nContent-Length: "
            + b"9" * 30 + b"\r\n\r\n",
            b"POST /api/launches HTTP/1.1\r\nHost: " + host + b"\r\nTransfer-Encoding: "
            b"chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
            b"POST /api/launches HTTP/1.1\r\nHost: " + host + b"\r\nTransfer-Encoding: "
            b"chunked\r\nContent-Length: 3\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
            b"POST /auth/login HTTP/1.1\r\nHost: " + host + b"\r\nContent-Type: application/"
            b"x-www-form-urlencoded\r\nContent-Length: 50\r\n\r\nnext=/x",
            b"GET /v2/gh/\xc3\xa9/\xff/HEAD HTTP/1.1\r\nHost: " + host + b"\r\n\r\n",
            b"GET /build/gh/\xff\xfe/x/HEAD HTTP/1.1\r\nHost: " + host + b"\r\n\r\n",
            b"GET /build/gh/org/repo/HEAD HTTP/1.1\r\nHost: " + host
            + b"\r\nLast-Event-ID: \xff\xfe:1\r\n\r\n",
            b"GET /user/" + SESSION.encode() + b"/api/status HTTP/1.1\r\nHost: " + host
            + b"\r\nAuthorization: token \xc3\xa9\xff\r\n\r\n",
            b"GET /user/" + SESSION.encode() + b"/api/status?token=%C3%A9 HTTP/1.1\r\nHost: "
            + host + b"\r\n\r\n",
            b"GET /user/" + SESSION.encode() + b"/api/status HTTP/1.1\r\nHost: " + host
            + b"\r\nCookie: binderless-session-" + SESSION.encode() + b"=\xc3\xa9\r\n\r\n",
            b"GET " + path + b" HTTP/1.1\r\nHost: evil.example\r\nHost: " + host + b"\r\n\r\n",
            b"GET " + path + b" HTTP/1.0\r\n\r\n",
            b"GET " + path + b" HTTP/1.1\r\nHost: \xc3\xa9vil.example\r\n\r\n",
            b"GET " + path + b" HTTP/1.1\r\nHost: " + host + b"\r\nOrigin: https://\xff\r\n\r\n",
            b"GET " + path + b" HTTP/9.9\r\nHost: " + host + b"\r\n\r\n",
            b"GET " + path + b"\r\n\r\n",
            b"GET http://evil.example" + path + b" HTTP/1.1\r\nHost: " + host + b"\r\n\r\n",
            b"GET * HTTP/1.1\r\nHost: " + host + b"\r\n\r\n",
            b"CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n\r\n",
            b"GET " + path + b" HTTP/1.1\r\nHost: " + host + b"\r\nX: " + b"a" * 9000 + b"\r\n\r\n",
            b"GET " + path + b" HTTP/1.1\r\nHost: " + host + b"\r\n"
            + b"".join(b"X-%d: y\r\n" % i for i in range(200)) + b"\r\n",
            b"GET " + path + b" HTTP/1.1\r\nHost: " + host + b"\r\nBad Header: x\r\n\r\n",
            b"GET " + path + b" HTTP/1.1\r\nHost: " + host + b"\r\nX: a\nY: b\r\n\r\n",
            b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + b"\x00" * 64,
            b"GET /" + b"a" * 10_000 + b" HTTP/1.1\r\nHost: " + host + b"\r\n\r\n",
            b"GET " + path + b" HTTP/1.1\r\nHost: " + host + b"\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\n\r\n",
            b"GET /user/" + SESSION.encode() + b"/api/kernels/x/channels?token=" + TOKEN.encode()
            + b" HTTP/1.1\r\nHost: " + host + b"\r\nUpgrade: websocket\r\nConnection: Upgrade"
            b"\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: bad\r\n\r\n",
        ]
        return Probe("wire", "", "", raw=self.rng.choice(choices))

    def probes(self, count: int) -> list[Probe]:
        return [self.probe() for _ in range(count)]


# ----- the servers ---------------------------------------------------------------------------

def closed_network(request: httpx.Request) -> httpx.Response:
    return httpx.Response(404, json={"message": "Not Found"})


def no_git(cmd: Sequence[str]) -> str:
    raise subprocess.CalledProcessError(128, list(cmd), "", "fatal: repository not found")


class ClosedFetcher:
    """Nothing is fetched in the sweep (a spec that resolves, such as a git URL with a
    full sha, stops here rather than reaching the network)."""

    async def fetch(self, repo: ResolvedRepo, dest: Path, log: Any) -> None:
        raise UnsupportedRepository("Fetching is closed in this test.")


def swept_service(settings: Settings) -> LaunchService:
    client = httpx.Client(transport=httpx.MockTransport(closed_network))
    service = local_service(settings, http_client=client)
    service.providers = ProviderRegistry(settings, client, overrides={
        "git": GitProvider(allow_local=False, guard=UrlGuard(enforce=False), run_git=no_git)})
    service.fetcher = ClosedFetcher()
    return service


async def upstream_app(request: web.Request) -> web.StreamResponse:
    """The fake session's Jupyter server: answers everything plainly, WebSockets too."""
    if request.headers.get("Upgrade", "").lower() == "websocket":
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.close()
        return ws
    await request.read()
    return web.json_response({"ok": True, "path": request.raw_path[:100]})


def add_fake_session(service: LaunchService, target: str) -> None:
    now = service.clock()
    service.store.add_session(SessionRecord(
        session_id=SESSION, launch_id="sweep", owner="", repo_url="https://example.org/r",
        resolved_ref="0" * 40, image_key="k", home="", target="", token=TOKEN, backend_id="",
        status="starting", created_at=now, last_activity=now))
    service.routes.add(Route(session_id=SESSION, target=target, token=TOKEN))


# ----- sending and judging -------------------------------------------------------------------

def judge(probe: Probe, status: int, body: bytes, outcome: Outcome) -> None:
    outcome.statuses[status] = outcome.statuses.get(status, 0) + 1
    if status >= 500:
        outcome.failures.append(f"{status} {probe.describe()} -> {body[:200]!r}")
        return
    for line in body.decode(errors="replace").splitlines():
        if not line.startswith("data:"):
            continue
        try:
            event = json.loads(line[5:])
        except ValueError:
            continue
        if isinstance(event, dict) and int(event.get("status_code") or 0) >= 500:
            outcome.failures.append(f"failed event {event['status_code']} {probe.describe()} "
                                    f"-> {event.get('message', '')!r}")


def printable(text: str, *, space: bool = True) -> bool:
    """Whether an HTTP client library would send ``text`` as it is (else: a raw socket)."""
    return all(0x20 < ord(c) < 0x7F or (space and c == " ") for c in text)


def complete(answer: bytes) -> bool:
    """Whether ``answer`` holds a whole response (the connection may stay open after it)."""
    head, sep, body = answer.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.lower().split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name == b"content-length" and value.strip().isdigit():
            return len(body) >= int(value)
        if name == b"transfer-encoding" and b"chunked" in value:
            return body.endswith(b"0\r\n\r\n")
    return False


async def send_raw(port: int, probe: Probe, outcome: Outcome) -> None:
    """Write the request as it is and read until the server closes (or 2 s go by: a request
    that lies about its length may rightly be left waiting for the rest of its body)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    answer = b""
    try:
        writer.write(probe.raw)
        await writer.drain()
        async with asyncio.timeout(2):
            while not complete(answer) and (chunk := await reader.read(65536)):
                answer += chunk
    except (ConnectionError, TimeoutError):
        pass
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    if not answer:
        outcome.unanswered.append(probe.describe())
        return
    head = answer.split(b"\r\n", 1)[0].split()
    status = int(head[1]) if len(head) > 1 and head[1].isdigit() else 0
    judge(probe, status, answer.partition(b"\r\n\r\n")[2], outcome)


async def send(http: aiohttp.ClientSession, port: int, probe: Probe, outcome: Outcome) -> None:
    # A request line longer than aiohttp parses is answered by aiohttp itself (400, with a
    # body even to HEAD, which aiohttp's client rejects): read such answers off the socket.
    if probe.raw or len(probe.target) > 8000 or not printable(probe.target, space=False) or \
            not all(printable(v) for _, v in probe.headers):
        target = probe.target.encode("utf-8", "surrogatepass") if probe.target else b""
        if not probe.raw:
            lines = [probe.method.encode() + b" " + target + b" HTTP/1.1"]
            names = {k.lower() for k, _ in probe.headers}
            if "host" not in names:
                lines.append(f"Host: 127.0.0.1:{port}".encode())
            lines += [f"{k}: ".encode() + v.encode("utf-8", "surrogatepass")
                      for k, v in probe.headers]
            lines.append(b"Content-Length: %d" % len(probe.body))
            lines.append(b"Connection: close")
            probe = Probe(probe.kind, "", "", raw=b"\r\n".join(lines) + b"\r\n\r\n" + probe.body)
        await send_raw(port, probe, outcome)
        return
    url = URL(f"http://127.0.0.1:{port}{probe.target}", encoded=True)
    try:
        async with http.request(probe.method, url, headers=list(probe.headers),
                                data=probe.body or None, allow_redirects=False,
                                skip_auto_headers=["Content-Type"]) as response:
            body = await response.read()
            judge(probe, response.status, body, outcome)
    except (TimeoutError, aiohttp.ClientError) as exc:
        outcome.unanswered.append(f"{type(exc).__name__} {probe.describe()}")


def log_problems(records: Sequence[logging.LogRecord]) -> list[str]:
    """Log records at ERROR or with a traceback, one line per kind with its count."""
    counts: dict[str, int] = {}
    for record in records:
        if record.levelno >= logging.ERROR or record.exc_info:
            error = record.exc_info[1] if record.exc_info else None
            what = f"{type(error).__name__}: {str(error).splitlines()[0][:120]}" if error \
                else ""
            key = f"{record.levelname} {record.name}: {record.getMessage()[:120]} | {what}"
            counts[key] = counts.get(key, 0) + 1
    return [f"{n} x {key}" for key, n in sorted(counts.items(), key=lambda kv: -kv[1])]
