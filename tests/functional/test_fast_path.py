"""The session proxy's fast path (``server/fastpath.py``) through the real listener.

Each request goes on a connection of its own, written byte for byte; afterwards the test
looks at whether the connection is still on the fast path or was handed to aiohttp. What
must hold: the fast path serves only plain, authorised requests to running sessions, and
everything else gets exactly the full path's answer.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from binderless.backends.protocols import Route, SessionRecord
from binderless.local import local_service
from binderless.server import create_app, fastpath
from binderless.server.connections import Listener, start_listener
from binderless.server.fastpath import parse_request
from binderless.server.proxy import private_set_cookie
from binderless.service import LaunchService
from binderless.settings import Settings


def upstream_app() -> web.Application:
    async def echo(request: web.Request) -> web.Response:
        response = web.json_response({"path": request.raw_path,
                                      "headers": [[k, v] for k, v in request.headers.items()]})
        response.headers.add("Set-Cookie", "binderless-user=forged; Path=/")
        response.headers.add("Set-Cookie", "own=1; Path=/")
        return response

    async def chunked(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        for piece in (b"first,", b"second,", b"third"):
            await response.write(piece)
        await response.write_eof()
        return response

    async def big(request: web.Request) -> web.Response:
        return web.Response(body=b"x" * 600_000)

    app = web.Application()
    app.router.add_get("/user/{sid}/chunked", chunked)
    app.router.add_get("/user/{sid}/big", big)
    app.router.add_route("*", "/{tail:.*}", echo)
    return app


@dataclass
class Server:
    port: int
    listener: Listener
    service: LaunchService
    upstream: str
    loop: asyncio.AbstractEventLoop

    def add_session(self, upstream: str = "", owner: str = "") -> tuple[str, str]:
        session_id, token = secrets.token_hex(8), secrets.token_hex(32)
        now = self.service.clock()
        self.service.store.add_session(SessionRecord(
            session_id=session_id, launch_id="l-" + session_id, owner=owner, repo_url="r",
            resolved_ref="a" * 40, image_key="k", home="", target="", token=token,
            backend_id="", status="starting", created_at=now, last_activity=now))
        self.service.routes.add(Route(session_id, upstream or self.upstream, token))
        return session_id, token

    def exchange(self, raw: bytes, *, wait_close: bool = False) -> tuple[bytes, bool]:
        """Send ``raw`` on a new connection; the answer, and whether the connection was
        still on the fast path once it came."""
        async def run() -> tuple[bytes, bool]:
            reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
            writer.write(raw)
            answer = b""
            try:
                async with asyncio.timeout(5):
                    while (wait_close or not _complete(answer, raw)) and (
                            chunk := await reader.read(65536)):
                        answer += chunk
            except TimeoutError:
                pass
            await asyncio.sleep(0.05)
            fast = bool(self.listener.guard.fast_connections())
            writer.close()
            return answer, fast
        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(20)


def _complete(answer: bytes, sent: bytes) -> bool:
    head, sep, body = answer.partition(b"\r\n\r\n")
    if not sep:
        return False
    if sent.startswith(b"HEAD "):
        return True
    for line in head.lower().split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name == b"content-length":
            return len(body) >= int(value)
        if name == b"transfer-encoding":
            return body.endswith(b"0\r\n\r\n")
    return head.startswith((b"HTTP/1.1 304", b"HTTP/1.1 204"))


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1]) if answer.startswith((b"HTTP/1.1 ", b"HTTP/1.0 ")) \
        else 0


@contextmanager
def running(tmp_path: Path, **settings: Any) -> Iterator[Server]:
    config = Settings(state_dir=tmp_path / "state", **settings)
    service = local_service(config)
    loop = asyncio.new_event_loop()

    async def start() -> tuple[Listener, web.AppRunner, int]:
        listener = await start_listener(create_app(service), config, port=0)
        runner = web.AppRunner(upstream_app())
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        return listener, runner, runner.addresses[0][1]

    listener, upstream_runner, upstream_port = loop.run_until_complete(start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield Server(listener.port, listener, service, f"http://127.0.0.1:{upstream_port}",
                     loop)
    finally:
        async def stop() -> None:
            await listener.close()
            await upstream_runner.cleanup()
        asyncio.run_coroutine_threadsafe(stop(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running(tmp_path_factory.mktemp("fast"), allow_origins=("https://thebe.example",),
                 idle_connection_seconds=0.5) as started:
        yield started


def request(target: str, *headers: str, method: str = "GET", host: str = "127.0.0.1:1",
            body: bytes = b"") -> bytes:
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


# What each request gets, and whether the fast path may keep it. ``{sid}`` and ``{token}``
# are a running session's; "fast": served on the fast path, "full": handed to aiohttp.
CASES: list[tuple[str, str, int, str]] = [
    ("cookie", "GET /user/{sid}/api/x HTTP/1.1\r\nHost: 127.0.0.1\r\n"
               "Cookie: a=1; binderless-session-{sid}={token}", 200, "fast"),
    ("query token", "GET /user/{sid}/api/x?token={token} HTTP/1.1\r\nHost: localhost:9",
     200, "fast"),
    ("authorization", "GET /user/{sid}/api/x HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                      "Authorization: token {token}", 200, "fast"),
    ("head", "HEAD /user/{sid}/api/x?token={token} HTTP/1.1\r\nHost: 127.0.0.1", 200, "fast"),
    ("chunked answer", "GET /user/{sid}/chunked?token={token} HTTP/1.1\r\nHost: 127.0.0.1",
     200, "fast"),
    ("streamed answer", "GET /user/{sid}/big?token={token} HTTP/1.1\r\nHost: 127.0.0.1",
     200, "fast"),
    ("allowed origin", "GET /user/{sid}/api/x?token={token} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                       "Origin: https://thebe.example", 200, "fast"),
    ("own origin", "GET /user/{sid}/api/x?token={token} HTTP/1.1\r\nHost: 127.0.0.1:7\r\n"
                   "Origin: http://127.0.0.1:7", 200, "fast"),
    # Refused or unusual: the full path answers, as it always did.
    ("no token", "GET /user/{sid}/api/x HTTP/1.1\r\nHost: 127.0.0.1", 403, "full"),
    ("wrong token", "GET /user/{sid}/api/x?token=nope HTTP/1.1\r\nHost: 127.0.0.1", 403,
     "full"),
    ("another session's token", "GET /user/{sid}/api/x?token={other} HTTP/1.1\r\n"
                                "Host: 127.0.0.1", 403, "full"),
    ("token twice", "GET /user/{sid}/api/x?token=nope&token={token} HTTP/1.1\r\n"
                    "Host: 127.0.0.1", 403, "full"),
    ("encoded token", "GET /user/{sid}/api/x?t%6Fken=nope HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                      "Cookie: binderless-session-{sid}={token}", 403, "full"),
    ("rebinding host", "GET /user/{sid}/api/x?token={token} HTTP/1.1\r\n"
                       "Host: evil.example", 403, "full"),
    ("two hosts", "GET /user/{sid}/api/x?token={token} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                  "Host: evil.example", 400, "full"),
    ("no host", "GET /user/{sid}/api/x?token={token} HTTP/1.1", 400, "full"),
    ("cross-site page", "GET /user/{sid}/api/x?token={token} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                        "Origin: https://evil.example", 403, "full"),
    ("cross-site fetch", "GET /user/{sid}/api/x?token={token} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                         "Sec-Fetch-Site: cross-site", 403, "full"),
    ("stopped session", "GET /user/{stopped}/api/x?token={token} HTTP/1.1\r\n"
                        "Host: 127.0.0.1", 404, "full"),
    ("owned session", "GET /user/{owned}/api/x?token={token} HTTP/1.1\r\n"
                      "Host: 127.0.0.1", 403, "full"),
    ("binderless's corner", "GET /user/{sid}/.binderless/status?token={token} HTTP/1.1\r\n"
                            "Host: 127.0.0.1", 200, "full"),
    ("banner page", "GET /user/{sid}/lab?token={token} HTTP/1.1\r\nHost: 127.0.0.1", 200,
     "full"),
    ("a body", "GET /user/{sid}/api/x?token={token} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
               "Content-Length: 2\r\n\r\nhi", 200, "full"),
    ("post", "POST /user/{sid}/api/x?token={token} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
             "Content-Length: 0", 200, "full"),
    ("http/1.0", "GET /user/{sid}/api/x?token={token} HTTP/1.0\r\nHost: 127.0.0.1", 200,
     "full"),
    ("absolute form", "GET http://127.0.0.1/user/{sid}/api/x?token={token} HTTP/1.1\r\n"
                      "Host: 127.0.0.1", 404, "full"),
    ("folded header", "GET /user/{sid}/api/x?token={token} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                      "X-A: 1\r\n 2", 400, "full"),
    ("no slash after the id", "GET /user/{sid}?token={token} HTTP/1.1\r\nHost: 127.0.0.1",
     200, "full"),
    # aiohttp reads no token after a "#": neither may the fast path.
    ("token in a fragment", "GET /user/{sid}/api/x?#&token={token} HTTP/1.1\r\n"
                            "Host: 127.0.0.1", 403, "full"),
    # What aiohttp refuses (400), the fast path never serves.
    ("user-agent twice", "GET /user/{sid}/api/x?token={token} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                         "User-Agent: a\r\nUser-Agent: b", 400, "full"),
    ("a value too long", "GET /user/{sid}/api/x?token={token} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                         "X-Long: " + "a" * 8191, 400, "full"),
    ("a target too long", "GET /user/{sid}/" + "a" * 8100 + "?token={token} HTTP/1.1\r\n"
                          "Host: 127.0.0.1", 400, "full"),
    ("129 headers", "GET /user/{sid}/api/x?token={token} HTTP/1.1\r\nHost: 127.0.0.1"
                    + "".join(f"\r\nX-{i}: y" for i in range(128)), 400, "full"),
    ("data after connection: close", "GET /user/{sid}/api/x?token={token} HTTP/1.1\r\n"
                                     "Host: 127.0.0.1\r\nConnection: close\r\n\r\n"
                                     "GET /versions HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
     400, "full"),
]


@pytest.mark.parametrize(("name", "raw", "status", "path"), CASES, ids=[c[0] for c in CASES])
def test_the_fast_path_serves_only_what_the_full_path_would(
        server: Server, name: str, raw: str, status: int, path: str) -> None:
    sid, token = server.add_session()
    other = server.add_session()[1]
    stopped, stopped_token = server.add_session()
    server.service.store.update_session(stopped, status="stopped")
    owned, owned_token = server.add_session(owner="someone")
    if "{stopped}" in raw or "{owned}" in raw:  # with their own tokens
        token = stopped_token if "{stopped}" in raw else owned_token
    text = raw.format(sid=sid, token=token, other=other, stopped=stopped, owned=owned)
    if "\r\n\r\n" not in text:
        text += "\r\n\r\n"
    answer, fast = server.exchange(text.encode())
    assert (status_of(answer), "fast" if fast else "full") == (status, path), answer[:300]
    head = answer.partition(b"\r\n\r\n")[0].lower()
    assert b"binderless-user=forged" not in head  # a session never signs anyone in


def test_answers_keep_their_headers_cookies_and_bodies(server: Server) -> None:
    sid, token = server.add_session()
    answer, fast = server.exchange(request(
        f"/user/{sid}/api/x%2Fy?a=1&token={token}",
        "Cookie: own=2; binderless-user=secret; binderless-session-x=y",
        "Connection: keep-alive, X-Drop", "X-Drop: 1", "X-Keep: 2", "Keep-Alive: 5"))
    head, _, body = answer.partition(b"\r\n\r\n")
    assert fast and status_of(answer) == 200
    # The token becomes the session's cookie, scoped to it; the session's own cookie passes.
    assert (f"Set-Cookie: binderless-session-{sid}={token}; HttpOnly; Path=/user/{sid}/; "
            "SameSite=Lax").encode() in head
    assert b"Set-Cookie: own=1; Path=/" in head
    seen = json.loads(body)
    assert seen["path"] == f"/user/{sid}/api/x%2Fy?a=1&token={token}"  # raw, %2F and all
    names = {k.lower(): v for k, v in seen["headers"]}
    assert names["cookie"] == "own=2; binderless-session-x=y"  # never the sign-in
    assert "x-drop" not in names and "keep-alive" not in names and names["x-keep"] == "2"
    assert names["x-forwarded-for"] == "127.0.0.1" and names["x-forwarded-host"] == "127.0.0.1:1"


def test_pipelined_requests_and_a_later_one_for_aiohttp_share_a_connection(
        server: Server) -> None:
    sid, token = server.add_session()
    cookie = f"Cookie: binderless-session-{sid}={token}"
    raw = (request(f"/user/{sid}/api/one", cookie) + request(f"/user/{sid}/chunked", cookie)
           + request("/health", "Connection: close"))
    answer, _ = server.exchange(raw, wait_close=True)
    assert answer.count(b"HTTP/1.1 200") == 3, answer
    assert b"/api/one" in answer and b"6\r\nfirst,\r\n" in answer and b"5\r\nthird\r\n0\r\n" in answer
    assert answer.rindex(b'"process"') > answer.index(b"first,")  # in order


def test_connection_close_and_idle_keep_alive_end_the_connection(server: Server) -> None:
    sid, token = server.add_session()
    answer, _ = server.exchange(request(f"/user/{sid}/api/x?token={token}",
                                        "Connection: close"), wait_close=True)
    assert status_of(answer) == 200 and b"Connection: close" in answer
    # Kept alive, then idle past idle_connection_seconds (0.5 s here): closed by the server.
    answer, _ = server.exchange(request(f"/user/{sid}/api/x?token={token}"), wait_close=True)
    assert answer.count(b"HTTP/1.1 200") == 1


def test_a_session_stopped_between_requests_is_never_served(server: Server) -> None:
    sid, token = server.add_session()

    async def run() -> list[int]:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        statuses = []
        for _ in range(2):
            writer.write(request(f"/user/{sid}/api/x?token={token}"))
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
            statuses.append(status_of(head))
            await asyncio.to_thread(server.service.store.update_session, sid,
                                    status="stopped")
        writer.close()
        return statuses

    assert asyncio.run_coroutine_threadsafe(run(), server.loop).result(20) == [200, 404]


def test_a_session_server_that_is_gone_gets_502(server: Server) -> None:
    sid, token = server.add_session(upstream="http://127.0.0.1:1")
    answer, fast = server.exchange(request(f"/user/{sid}/api/x?token={token}"))
    assert status_of(answer) == 502 and fast
    # To HEAD, without the body: a client reads the next bytes as the next answer.
    answer, _ = server.exchange(request(f"/user/{sid}/api/x?token={token}", method="HEAD")
                                + request("/versions", "Connection: close"), wait_close=True)
    first, _, rest = answer.partition(b"\r\n\r\n")
    assert status_of(first) == 502 and b"Content-Length: " in first
    assert status_of(rest) == 200 and b'"binderhub"' in rest, answer


def test_bytes_that_cannot_become_a_fast_head_go_to_aiohttp_at_once(server: Server) -> None:
    # A TLS hello has no blank line to wait for: aiohttp refuses it at once (400), where
    # waiting would hold the connection until the head deadline.
    answer, fast = server.exchange(b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03"
                                   + b"\x00" * 40)
    assert (status_of(answer), fast) == (400, False), answer


@pytest.mark.parametrize("head", [
    b"GET /user/a/b HTTP/1.1\r\nHost: x\r\nContent-Length: 0",
    b"GET /user/a/b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked",
    b"GET /user/a/b HTTP/1.1\r\nHost: x\r\nUpgrade: websocket",
    b"GET /user/a/b HTTP/1.1\r\nHost: x\r\nCookie: a\r\nCookie: b",
    b"GET /user/a/b HTTP/1.1\r\nHost: x\r\nX: \x00",
    b"GET /user/a/b HTTP/1.1\r\nHost: x\r\nX: caf\xc3\xa9",
    b"GET /user/a/b HTTP/1.1\r\nHost: x\r\nX : 1",
    b"GET /user/a/b HTTP/1.1\r\nHost: x\r\nX: 1\rY: 2",
    b"GET /user/a/b\x7f HTTP/1.1\r\nHost: x",
    b"GET  /user/a/b HTTP/1.1\r\nHost: x",
    b"get /user/a/b HTTP/1.1\r\nHost: x",
    b"OPTIONS /user/a/b HTTP/1.1\r\nHost: x",
])
def test_heads_the_fast_path_leaves_to_aiohttp(head: bytes) -> None:
    assert parse_request(head) is None
    assert parse_request(b"GET /user/a/b HTTP/1.1\r\nHost: x") is not None


def test_the_fast_paths_limits_are_aiohttps() -> None:
    """The listener keeps ``RequestHandler``'s defaults; if aiohttp changes them, the fast
    path's copies must follow (it must never serve a head aiohttp refuses)."""
    defaults = {name: parameter.default for name, parameter in
                inspect.signature(RequestHandler.__init__).parameters.items()}
    assert defaults["max_line_size"] >= fastpath.MAX_TARGET_BYTES
    assert defaults["max_field_size"] >= fastpath.MAX_HEADER_LINE_BYTES
    assert defaults["max_headers"] >= fastpath.MAX_HEADERS
    for name in ("User-Agent", "Content-Type", "ETag", "Host"):
        head = f"GET /user/a/b HTTP/1.1\r\nHost: x\r\n{name}: 1\r\n{name.lower()}: 1".encode()
        assert parse_request(head) is None, name


@pytest.mark.parametrize(("value", "private"), [
    ("binderless-identity=x; Path=/", True), (" binderless-session-a=b", True),
    ("\tbinderless-signin=1", True), ("=binderless-identity=x", True),
    (" = binderless-identity=x", True), ("binderless-identity", True),
    ("BINDERLESS-identity=1", True), ("own=1; Path=/", False), ("a=binderless-x", False),
    ("=own=1", False), ("own=1; binderless-x=1", False),
])
def test_which_session_cookies_count_as_binderless_own(value: str, private: bool) -> None:
    # A name-less cookie ("=a=b") comes back from browsers as "a=b".
    assert private_set_cookie(value) is private


def test_the_fast_path_stands_in_for_every_middleware(tmp_path: Path) -> None:
    """The fast path answers before the application's middlewares: each one must have
    been checked against it. When this fails, review fastpath.py for the new one (does it
    refuse, change or log a request to a session?), then add it here."""
    reviewed = {
        "known_hosts": "the same OriginPolicy.host_allowed",
        "no_tracebacks": "FastConnection._serve: one log line and a 500",
        "brand": "brands binderless's own pages only, never a proxied answer",
    }
    app = create_app(local_service(Settings(state_dir=tmp_path / "state")))
    assert {getattr(m, "__name__", repr(m)) for m in app.middlewares} == set(reviewed)
    assert not list(app.on_response_prepare)
