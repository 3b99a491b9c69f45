"""The session proxy and the server's connections under load and abuse: sessions never wait
for each other, WebSockets are pinged, idle and half-sent connections are closed, bodies
are limited, hostile tokens get 403, and running out of file descriptors is survived.

An in-process server (``start_listener``, as ``binderless serve`` runs it) in front of a
trivial aiohttp stand-in for Jupyter, except for the file-descriptor test, which runs a
real ``binderless serve`` under ``RLIMIT_NOFILE`` 1024.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import resource
import secrets
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest
from aiohttp import WSMsgType, web

from binderless.backends.protocols import Route, SessionRecord
from binderless.local import local_service
from binderless.server import create_app
from binderless.server.connections import QuietExceptionHandler, connection_cap, start_listener
from binderless.service import LaunchService
from binderless.settings import Settings
from tests.conftest import ROOT, free_port


@dataclass
class Upstream:
    """What the stand-in Jupyter saw."""

    pings: int = 0
    bodies: list[int] = field(default_factory=list)
    #: The proxy's connections that requests came on (their client ports).
    peers: set[int] = field(default_factory=set)


def upstream_app(seen: Upstream) -> web.Application:
    async def status(request: web.Request) -> web.Response:
        seen.peers.add(request.transport.get_extra_info("peername")[1]
                       if request.transport else 0)
        response = web.json_response({"path": request.path})
        # A session's server may set its own cookies, never binderless's.
        response.headers.add("Set-Cookie", "binderless-user=forged; Path=/")
        response.headers.add("Set-Cookie", "own=1; Path=/")
        return response

    async def chunked(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()  # no length: sent chunked
        response.headers["X-Pieces"] = "3"
        await response.prepare(request)
        for piece in (b"first,", b"second,", b"third"):
            await response.write(piece)
            await asyncio.sleep(0.01)
        await response.write_eof()
        return response

    async def upload(request: web.Request) -> web.Response:
        size = 0
        async for chunk in request.content.iter_any():
            size += len(chunk)
        seen.bodies.append(size)
        return web.json_response({"size": size})

    async def slow(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        with contextlib.suppress(ConnectionResetError):  # the proxy's client left
            for _ in range(50):
                await response.write(b"x" * 65536)
                await asyncio.sleep(0.01)
        return response

    async def echo(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=False)
        await ws.prepare(request)
        async for message in ws:
            if message.type == WSMsgType.PING:
                seen.pings += 1
                await ws.pong(message.data)
            elif message.type == WSMsgType.TEXT:
                await ws.send_str(message.data)
        return ws

    async def headers(request: web.Request) -> web.Response:
        return web.json_response([[k, v] for k, v in request.headers.items()])

    app = web.Application()
    app.router.add_get("/user/{sid}/headers", headers)
    app.router.add_get("/user/{sid}/api/status", status)
    app.router.add_get("/user/{sid}/chunked", chunked)
    app.router.add_post("/user/{sid}/upload", upload)
    app.router.add_get("/user/{sid}/slow", slow)
    app.router.add_get("/user/{sid}/ws", echo)
    return app


@dataclass
class Proxy:
    base: str
    service: LaunchService
    upstream: str
    seen: Upstream
    loop: asyncio.AbstractEventLoop

    def add_session(self, upstream: str = "") -> tuple[str, str]:
        """A running session routed to ``upstream`` (default: the stand-in Jupyter)."""
        session_id, token = secrets.token_hex(8), secrets.token_hex(32)
        now = self.service.clock()
        self.service.store.add_session(SessionRecord(
            session_id=session_id, launch_id="l-" + session_id, owner="", repo_url="r",
            resolved_ref="a" * 40, image_key="k", home="", target="", token=token,
            backend_id="", status="starting", created_at=now, last_activity=now))
        self.service.routes.add(Route(session_id, upstream or self.upstream, token))
        return session_id, token


@contextmanager
def proxy_server(tmp_path: Path, **settings: Any) -> Iterator[Proxy]:
    """A binderless server with its connection limits, and a stand-in Jupyter, on their
    own event loop in a thread."""
    config = Settings(state_dir=tmp_path / "state", **settings)
    service = local_service(config)
    seen = Upstream()
    loop = asyncio.new_event_loop()

    async def start() -> tuple[Any, web.AppRunner, int]:
        listener = await start_listener(create_app(service), config, port=0)
        runner = web.AppRunner(upstream_app(seen))
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        return listener, runner, runner.addresses[0][1]

    listener, upstream_runner, upstream_port = loop.run_until_complete(start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield Proxy(f"http://127.0.0.1:{listener.port}", service,
                    f"http://127.0.0.1:{upstream_port}", seen, loop)
    finally:
        async def stop() -> None:
            await listener.close()
            await upstream_runner.cleanup()
        asyncio.run_coroutine_threadsafe(stop(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


@pytest.fixture
def proxy(tmp_path: Path) -> Iterator[Proxy]:
    with proxy_server(tmp_path, max_upload_bytes=100_000) as running:
        yield running


async def open_websockets(session: aiohttp.ClientSession, url: str, count: int,
                          ) -> tuple[list[aiohttp.ClientWebSocketResponse], list[str]]:
    """``count`` WebSockets to ``url``, each echoing one message; and the failures."""
    async def one(i: int) -> aiohttp.ClientWebSocketResponse:
        ws = await session.ws_connect(url)
        await ws.send_str(f"hello {i}")
        message = await ws.receive(timeout=20)
        assert message.data == f"hello {i}"
        return ws

    results = await asyncio.gather(*(one(i) for i in range(count)), return_exceptions=True)
    sockets = [r for r in results if isinstance(r, aiohttp.ClientWebSocketResponse)]
    return sockets, [repr(r) for r in results if isinstance(r, BaseException)]



def client_session() -> aiohttp.ClientSession:
    # No cap on the test's own side either: it stands for many browsers.
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                 timeout=aiohttp.ClientTimeout(total=30))


def test_websockets_held_to_one_session_never_block_another(proxy: Proxy) -> None:
    busy, busy_token = proxy.add_session()
    other, other_token = proxy.add_session()

    async def scenario() -> tuple[list[str], int]:
        async with client_session() as session:
            sockets, errors = await asyncio.wait_for(open_websockets(
                session, f"{proxy.base}/user/{busy}/ws?token={busy_token}", 120), 30)
            # aiohttp's default client limit (100 connections for all sessions) made
            # this wait forever.
            async with session.get(f"{proxy.base}/user/{other}/api/status",
                                   params={"token": other_token},
                                   timeout=aiohttp.ClientTimeout(total=10)) as response:
                status = response.status
            for ws in sockets:
                await ws.close()
            return errors, status

    assert asyncio.run(scenario()) == ([], 200)


@pytest.mark.skipif(resource.getrlimit(resource.RLIMIT_NOFILE)[1] < 6000,
                    reason="needs 4,000 descriptors in this process (both ends, both hops)")
def test_a_thousand_websockets_through_the_proxy(proxy: Proxy) -> None:
    session_id, token = proxy.add_session()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 6000), hard))

    async def scenario() -> tuple[list[str], int]:
        async with client_session() as session:
            sockets, errors = await open_websockets(
                session, f"{proxy.base}/user/{session_id}/ws?token={token}", 1000)
            # Every one still carries a second message.
            for i, ws in enumerate(sockets):
                await ws.send_str(f"again {i}")
            again = 0
            for i, ws in enumerate(sockets):
                message = await ws.receive(timeout=20)
                again += message.data == f"again {i}"
            for ws in sockets:
                await ws.close()
            return errors, again

    try:
        assert asyncio.run(scenario()) == ([], 1000)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_pings_reach_both_ends_of_an_idle_websocket(tmp_path: Path) -> None:
    with proxy_server(tmp_path, websocket_ping_seconds=0.2) as proxy:
        pings = pinged(proxy)
    assert pings >= 2
    assert proxy.seen.pings >= 1  # the session's end was pinged too


def pinged(proxy: Proxy) -> int:
    """How many pings an idle WebSocket through the proxy receives."""
    session_id, token = proxy.add_session()

    async def scenario() -> int:
        pings = 0
        async with client_session() as session, session.ws_connect(
                f"{proxy.base}/user/{session_id}/ws?token={token}", autoping=False) as ws:
            deadline = asyncio.get_running_loop().time() + 10
            while pings < 2 and asyncio.get_running_loop().time() < deadline:
                message = await ws.receive(timeout=10)
                if message.type == WSMsgType.PING:
                    pings += 1
                    await ws.pong(message.data)
            # The idle connection is still open and still carries messages.
            await ws.send_str("still here")
            assert (await ws.receive(timeout=5)).data == "still here"
        return pings

    return asyncio.run(scenario())


def closed_by_server(sock: socket.socket, wait: float = 10.0) -> bool:
    """Whether the server closes ``sock`` within ``wait`` seconds (reading what it sends)."""
    sock.settimeout(wait)
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        return False
    except ConnectionResetError:
        pass
    return True


def test_idle_and_half_sent_connections_are_closed(tmp_path: Path) -> None:
    with proxy_server(tmp_path, header_timeout_seconds=0.5,
                      idle_connection_seconds=0.5) as proxy:
        closed_after_timeouts(proxy)


def closed_after_timeouts(proxy: Proxy) -> None:
    host, port = "127.0.0.1", int(proxy.base.rsplit(":", 1)[1])
    with socket.create_connection((host, port)) as silent, \
            socket.create_connection((host, port)) as partial, \
            socket.create_connection((host, port)) as kept_alive:
        partial.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        kept_alive.sendall(f"GET /health HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
        kept_alive.settimeout(5)
        assert kept_alive.recv(65536).startswith(b"HTTP/1.1 200")
        # aiohttp's defaults kept all three open for an hour.
        assert closed_by_server(silent)
        assert closed_by_server(partial)
        assert closed_by_server(kept_alive)
    # The server still answers new connections.
    assert httpx.get(proxy.base + "/health").status_code == 200


def test_bodies_past_the_upload_limit_get_413(proxy: Proxy) -> None:
    session_id, token = proxy.add_session()
    url = f"{proxy.base}/user/{session_id}/upload?token={token}"
    with httpx.Client(timeout=10) as client:
        assert client.post(url, content=b"x" * 50_000).json() == {"size": 50_000}
        declared = client.post(url, content=b"x" * 100_001)
        assert declared.status_code == 413
        assert "larger than" in declared.json()["message"]

        def chunks() -> Iterator[bytes]:  # no Content-Length: cut off on the way
            for _ in range(40):
                yield b"y" * 8192

        streamed = client.post(url, content=chunks())
        assert streamed.status_code == 413
        assert "larger than" in streamed.json()["message"]
    assert 100_001 not in proxy.seen.bodies and 40 * 8192 not in proxy.seen.bodies


def test_hostile_tokens_get_403_never_500(proxy: Proxy) -> None:
    session_id, token = proxy.add_session()
    url = f"{proxy.base}/user/{session_id}/api/status"
    with httpx.Client(timeout=10) as client:
        assert client.get(url, params={"token": token}).status_code == 200
        for raw in ("?token=%FF%FE", "?token=%C3%A9", "?token=%00", "?token=%ED%B3%BF"):
            assert client.get(url + raw).status_code == 403, raw
        hostile: list[tuple[dict[str, str], dict[bytes, bytes]]] = [
            ({"token": "é" * 64}, {}),
            ({}, {b"Authorization": b"token " + "é".encode() * 32}),
            ({}, {b"Authorization": b"token \xff\xfe"}),
            ({}, {b"Cookie": f"binderless-session-{session_id}=é".encode()})]
        for params, headers in hostile:
            response = client.get(url, params=params, headers=headers)
            assert response.status_code == 403, (params, headers)


def test_a_client_leaving_mid_download_is_no_error(proxy: Proxy,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    session_id, token = proxy.add_session()
    caplog.set_level(logging.DEBUG)
    for _ in range(3):
        with httpx.stream("GET", f"{proxy.base}/user/{session_id}/slow",
                          params={"token": token}, timeout=10) as response:
            assert response.status_code == 200
            next(response.iter_raw())
    time.sleep(0.5)  # the server notices the closed connections
    assert httpx.get(proxy.base + "/health").status_code == 200
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]


def hold_connections(port: int, count: int) -> list[socket.socket]:
    """``count`` connections to ``port``: silent ones, and ones that never finish their
    request head."""
    held = []
    for i in range(count):
        sock = socket.socket()
        sock.settimeout(5)
        try:
            sock.connect(("127.0.0.1", port))
            if i % 2:
                sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        except OSError:
            sock.close()
            continue
        held.append(sock)
    return held


def limit_open_files() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))


@pytest.mark.parametrize("max_connections", ["0", "3000"], ids=["derived-cap", "cap-too-high"])
def test_1100_held_connections_under_ulimit_1024(tmp_path: Path, max_connections: str) -> None:
    """``/health`` keeps answering and the log stays a few lines, whether the cap is
    derived from the limit or set so high that ``accept()`` runs out of descriptors."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < 2400:
        pytest.skip("the attacker needs 1,100 descriptors more than the server")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 2400), hard))
    port = free_port()
    log_path = tmp_path / "serve.log"
    env = {**os.environ, "BINDERLESS_MAX_CONNECTIONS": max_connections}
    with open(log_path, "wb") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "binderless", "serve", "--port", str(port),
             "--state-dir", str(tmp_path / "state")],
            stdout=log, stderr=log, env=env, cwd=ROOT, preexec_fn=limit_open_files)
    held: list[socket.socket] = []
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                httpx.get(base + "/health", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        held = hold_connections(port, 1100)
        answers: list[int | str] = []
        for _ in range(5):
            try:
                answers.append(httpx.get(base + "/health", timeout=5).status_code)
            except httpx.HTTPError as exc:
                answers.append(type(exc).__name__)
        assert answers == [200] * 5
    finally:
        for sock in held:
            sock.close()
        server.terminate()
        server.wait(20)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    lines = log_path.read_text(errors="replace").splitlines()
    # Before: 735,000 lines (a traceback per failed accept) within five seconds.
    assert len(lines) < 20, lines[:40]
    assert not any("Traceback" in line for line in lines), lines[:40]


def test_the_sign_in_cookie_never_reaches_a_session_whatever_the_header_case(
        proxy: Proxy) -> None:
    session_id, token = proxy.add_session()
    port = int(proxy.base.rsplit(":", 1)[1])
    for name in ("Cookie", "cookie", "COOKIE"):
        request = (f"GET /user/{session_id}/headers?token={token} HTTP/1.1\r\n"
                   f"Host: 127.0.0.1:{port}\r\n{name}: binderless-user=signed-secret; kept=1\r\n"
                   "x-forwarded-for: 203.0.113.9\r\nForwarded: for=203.0.113.10\r\n"
                   "X-Real-IP: 203.0.113.11\r\nConnection: close\r\n\r\n")
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(request.encode())
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
        assert b"signed-secret" not in answer, name
        assert b"kept=1" in answer  # the session's own cookies still pass
        assert b"203.0.113.9" not in answer  # nor a forged X-Forwarded-For
        assert b"203.0.113.10" not in answer  # nor Forwarded
        assert b"203.0.113.11" not in answer  # nor X-Real-IP


def test_the_connection_cap_leaves_room_for_the_rest_of_the_process() -> None:
    assert connection_cap(500, 1024) == 500  # configured wins
    derived = connection_cap(0, 1024)
    assert 2 * derived + 100 <= 1024  # a proxied connection may hold two descriptors
    assert connection_cap(0, 20000) > 3000  # the benchmark's 3,000 WebSockets fit


def test_the_loop_reports_a_kind_of_error_once_a_minute(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    handler = QuietExceptionHandler(clock=lambda: now[0])
    loop = asyncio.new_event_loop()
    try:
        exhausted = {"message": "socket.accept() out of system resource",
                     "exception": OSError(errno.EMFILE, "Too many open files")}
        with caplog.at_level(logging.WARNING):
            for _ in range(10_000):
                handler(loop, exhausted)
            now[0] += 61
            handler(loop, exhausted)
    finally:
        loop.close()
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2, messages
    assert "9999 more like it" in messages[1]
    assert not any(r.exc_info for r in caplog.records)  # a state, not a traceback


def test_plain_requests_reuse_kept_alive_connections_and_keep_their_headers(
        proxy: Proxy) -> None:
    session_id, token = proxy.add_session()
    base = f"{proxy.base}/user/{session_id}"
    with httpx.Client(timeout=10) as client:
        first = client.get(f"{base}/api/status", params={"token": token})
        assert first.status_code == 200
        assert first.json() == {"path": f"/user/{session_id}/api/status"}
        # The session cookie is set after a valid token; the session's own cookie passes,
        # one named like binderless's does not.
        assert first.cookies.get(f"binderless-session-{session_id}") == token
        set_cookies = first.headers.get_list("set-cookie")
        assert any(c.startswith("own=1") for c in set_cookies), set_cookies
        assert not any("binderless-user" in c for c in set_cookies), set_cookies
        for _ in range(9):  # now with the cookie alone
            again = client.get(f"{base}/api/status")
            assert again.status_code == 200
            assert f"binderless-session-{session_id}" not in again.headers.get(
                "set-cookie", "")
        head = client.head(f"{base}/api/status")
        assert head.status_code == 200 and head.content == b""
        assert head.headers["content-length"] == first.headers["content-length"]
        pieces = client.get(f"{base}/chunked")
        assert pieces.status_code == 200
        assert pieces.content == b"first,second,third"
        assert pieces.headers["x-pieces"] == "3"
    # Eleven requests from one client in sequence: one connection to the session.
    assert len(proxy.seen.peers) == 1, proxy.seen.peers


def scripted_upstream(answer: bytes) -> tuple[socket.socket, threading.Thread]:
    """A server that answers every connection's first request with ``answer`` and
    closes it."""
    listening = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = listening.accept()
                with conn:
                    conn.recv(65536)
                    conn.sendall(answer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return listening, thread


def test_a_session_server_that_is_gone_or_breaks_off_gets_502(proxy: Proxy) -> None:
    gone, _ = proxy.add_session(f"http://127.0.0.1:{free_port()}")
    listening, _ = scripted_upstream(
        b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nonly part of it")
    garbled_listening, _ = scripted_upstream(b"HTTP/1.1 200 OK\r\nBad Header\r\n\r\n")
    try:
        cut, cut_token = proxy.add_session(f"http://127.0.0.1:{listening.getsockname()[1]}")
        garbled, garbled_token = proxy.add_session(
            f"http://127.0.0.1:{garbled_listening.getsockname()[1]}")
        with httpx.Client(timeout=10) as client:
            token = proxy.service.routes.lookup(gone).token
            answer = client.get(f"{proxy.base}/user/{gone}/api/status", params={"token": token})
            assert answer.status_code == 502
            assert "not answering" in answer.json()["message"]
            answer = client.get(f"{proxy.base}/user/{garbled}/x",
                                params={"token": garbled_token})
            assert answer.status_code == 502
            # Cut off mid-body: the client must never take the part for the whole.
            answer = client.get(f"{proxy.base}/user/{cut}/x", params={"token": cut_token})
            assert answer.status_code == 502
    finally:
        listening.close()
        garbled_listening.close()
    assert httpx.get(proxy.base + "/health").status_code == 200
