"""The session proxy's fast path: plain requests to a session, served before aiohttp.

Most of a session's traffic is small ``GET`` requests (JupyterLab's API polling, its
static files). Through aiohttp's web server each one built a request object, ran the
application's middlewares and router, built a response object and serialised it, which
cost more CPU than forwarding the request itself (and made the proxy slower than
configurable-http-proxy). ``FastConnection`` is the protocol of each client connection:
it reads request heads itself, serves the ones it fully understands, and hands the
connection to aiohttp's ``RequestHandler`` for everything else, for good.

The fast path only ever *accepts* what the full path would accept; every doubt is a
hand-over, never an answer of its own. It serves a request only when all of this holds:

* the head is complete, strictly formed (``GET`` or ``HEAD``, an origin-form target under
  ``/user/`` without a fragment, ``HTTP/1.1``, token header names, visible ASCII values,
  CRLF line ends), within aiohttp's parser limits, carries no body (no ``Content-Length``,
  ``Transfer-Encoding`` or ``Expect``), asks for no protocol switch (``Upgrade``), and is
  not followed by more bytes when it asks to close the connection (aiohttp refuses that);
* exactly one ``Host``, and it is one the server answers for (``OriginPolicy.host_allowed``);
  no header the checks read, nor one aiohttp refuses twice, is repeated;
* the page that sent it, if any, is allowed to use sessions (``OriginPolicy``);
* the session runs, nobody signed in launched it (``Route.owner``: the full path checks the
  sign-in), and the request presents its token exactly (a query ``token`` that needs no
  decoding, ``Authorization``, or the proxy's cookie);
* it is not binderless's own corner (``.binderless/``) nor a page that gets the banner,
  and the session's server is a plain ``http://host:port``.

Anything else, including a refusal (403, 404), is answered by the full path: it sees the
connection's bytes from the start of that request, as if it had been its from the start.
Bytes that cannot become such a head (a TLS hello, another method) go to it at once,
without waiting for a blank line. Answers are framed as aiohttp frames them (a body
without a type is ``application/octet-stream``; 204 and 304 carry no length; an answer
to ``HEAD`` carries no body, the fast path's own 502 included). The application's
middlewares do not run here: tests/functional/test_fast_path.py lists those this module
was checked against, and tests/functional/test_fast_path_differential.py sends thousands
of hostile requests to a server with and without the fast path and compares the answers.
Connection limits stay with ``ConnectionGuard``: a fast connection is tracked like any
other, closes when idle past ``keepalive`` seconds, and, once handed over, its requests
count through the guard's middleware.

The module is one room (past 500 lines) because the parser, the checks and the answer's
framing share one connection's state and must change together.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import re
import time
from collections.abc import Callable
from http.cookies import SimpleCookie
from typing import TYPE_CHECKING

from aiohttp import web
from aiohttp.http_parser import SINGLETON_HEADERS
from aiohttp.web_protocol import RequestHandler

from ..errors import BinderlessError
from ..origins import OriginPolicy
from .forward import Exchange, UpstreamError, request_head
from .proxy import (
    DROPPED_REQUEST_HEADERS,
    HOP_BY_HOP,
    WHOLE_BODY_BYTES,
    SessionProxy,
    cookie_name,
    cookie_value,
    private_cookies_removed,
    private_set_cookie,
    tokens_match,
)
from .session_tools import BANNER_PAGES, PREFIX

if TYPE_CHECKING:
    from .connections import ConnectionGuard

__all__ = ["FAST_PATH_KEY", "FastConnection", "SessionFastPath"]

log = logging.getLogger("binderless.proxy")

#: A request head longer than this is left to aiohttp (which refuses it).
MAX_HEAD_BYTES = 16 * 1024
#: While a request is served, reading pauses once this much of the next has arrived.
READ_AHEAD_BYTES = 64 * 1024
#: aiohttp's request parser limits (``RequestHandler``'s defaults, which the listener
#: keeps): a longer target, a longer header line, or more headers, and aiohttp answers
#: 400. The fast path hands such heads over rather than serve what it would refuse
#: (tests/functional/test_fast_path.py checks these against aiohttp's own defaults).
MAX_TARGET_BYTES = 8190
MAX_HEADER_LINE_BYTES = 8190
MAX_HEADERS = 128

_REQUEST_LINE = re.compile(rb"(GET|HEAD) (/user/[!-~]*) HTTP/1\.1")
#: What the bytes of a head the fast path may serve can start with.
_STARTS = (b"GET /user/", b"HEAD /user/")
#: A byte no head the fast path serves contains (it only takes visible ASCII, spaces,
#: tabs and CRLF line ends).
_FOREIGN_BYTE = re.compile(rb"[^\t\r\n -~]")
#: A header line: a token name, a colon, then visible ASCII, spaces and tabs only.
_HEADER_LINE = re.compile(rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+):[ \t]*([ -~\t]*)")
#: Headers that mean "not for the fast path": a body, a protocol switch, an interim answer.
_HAND_OVER_HEADERS = frozenset({b"content-length", b"transfer-encoding", b"upgrade",
                                b"expect"})
#: Headers the checks read, and those aiohttp refuses to see twice (400): repeated, they
#: are left to the full path.
_SINGLE_HEADERS = frozenset({b"host", b"cookie", b"authorization", b"origin",
                             b"sec-fetch-site", b"connection"}
                            | {name.lower().encode() for name in SINGLETON_HEADERS})


class SessionFastPath:
    """The checks and the forwarding of the fast path, over the server's ``OriginPolicy``
    and ``SessionProxy`` (see the module's docstring)."""

    def __init__(self, policy: OriginPolicy, proxy: SessionProxy, *,
                 active: bool = True) -> None:
        """``active`` false (or a proxy without its lean forwarder): every connection
        goes straight to aiohttp, as before the fast path (the differential tests
        compare the two; it is read for each new connection)."""
        self.policy = policy
        self.proxy = proxy
        self.active = active
        #: Requests the fast path took (answered itself, 502s included).
        self.served = 0

    @property
    def enabled(self) -> bool:
        return self.active and self.proxy.lean_forwarder


FAST_PATH_KEY = web.AppKey("session_fast_path", SessionFastPath)


class _Request:
    """A request head the fast path parsed: only what it needs."""

    __slots__ = ("close", "fields", "headers", "method", "target")

    def __init__(self, method: str, target: str, headers: list[tuple[bytes, bytes]],
                 fields: dict[bytes, bytes], close: bool) -> None:
        self.method = method
        self.target = target
        self.headers = headers
        self.fields = fields
        self.close = close


def parse_request(head: bytes) -> _Request | None:
    """The request in ``head`` (without its final blank line), or ``None`` when it is not
    one the fast path serves (see the module's docstring)."""
    lines = head.split(b"\r\n")
    first = _REQUEST_LINE.fullmatch(lines[0])
    # A fragment is never sent by a browser, and aiohttp splits it off where the fast
    # path would not (``?#&token=...``: no token for aiohttp).
    if first is None or len(first.group(2)) > MAX_TARGET_BYTES or b"#" in first.group(2) \
            or len(lines) - 1 > MAX_HEADERS:
        return None
    headers: list[tuple[bytes, bytes]] = []
    fields: dict[bytes, bytes] = {}
    for line in lines[1:]:
        if len(line) > MAX_HEADER_LINE_BYTES:
            return None
        match = _HEADER_LINE.fullmatch(line)
        if match is None:
            return None
        name, value = match.group(1), match.group(2).rstrip(b" \t")
        lower = name.lower()
        if lower in _HAND_OVER_HEADERS:
            return None
        if lower in _SINGLE_HEADERS:
            if lower in fields:
                return None
            fields[lower] = value
        headers.append((name, value))
    if b"host" not in fields:
        return None
    close = False
    if b"connection" in fields:
        tokens = {t.strip().lower() for t in fields[b"connection"].split(b",")}
        close = b"close" in tokens
    return _Request(first.group(1).decode(), first.group(2).decode(), headers, fields, close)


def _may_be_fast(start: bytearray) -> bool:
    """Whether ``start``, an incomplete head, may still become one the fast path serves."""
    if not any(start.startswith(s) or s.startswith(start) for s in _STARTS):
        return False
    return _FOREIGN_BYTE.search(start) is None


def _query_token(query: str) -> str | None:
    """The query's ``token`` ("" if none); ``None`` when reading it could differ from how
    the full path reads it (anything to decode, ``;``, an empty or repeated ``token``)."""
    if "oken" not in query and "%" not in query:
        return ""
    if "%" in query or "+" in query or ";" in query:
        return None
    found = ""
    for part in query.split("&"):
        name, _, value = part.partition("=")
        if name == "token":
            if found or not value:
                return None
            found = value
    return found


class _Clock:
    """The ``Date`` header's value, formatted once a second."""

    second = 0
    value = b""

    @classmethod
    def date(cls) -> bytes:
        now = int(time.time())
        if cls.second != now:
            cls.second, cls.value = now, email.utils.formatdate(now, usegmt=True).encode()
        return cls.value


def _session_cookie(session_id: str, token: str) -> bytes:
    """The ``Set-Cookie`` value the full path sets (``response.set_cookie``)."""
    jar: SimpleCookie = SimpleCookie()
    name = cookie_name(session_id)
    jar[name] = token
    morsel = jar[name]
    morsel["path"] = f"/user/{session_id}/"
    morsel["httponly"] = True
    morsel["samesite"] = "Lax"
    return morsel.output(header="").strip().encode("utf-8")


_BAD_GATEWAY = (b'{"message": "The session\'s server is not answering. It may have stopped; '
                b'launch the repository again."}')


class FastConnection(asyncio.Protocol):
    """One client connection, served by the fast path until a request needs the full path
    (``handler_factory`` makes aiohttp's protocol then). ``guard`` tracks it."""

    def __init__(self, fast: SessionFastPath, handler_factory: Callable[[], RequestHandler],
                 guard: ConnectionGuard, keepalive: float) -> None:
        self.fast = fast
        self.handler_factory = handler_factory
        self.guard = guard
        self.keepalive = keepalive
        self.handler: RequestHandler | None = None
        self._transport: asyncio.Transport | None = None
        self._remote = ""
        self._buffer = bytearray()
        self._task: asyncio.Task[None] | None = None
        self._idle: asyncio.TimerHandle | None = None
        self._drained: asyncio.Future[None] | None = None
        self._paused_reading = False
        self._eof = False
        self._closed = False

    # ----- what ConnectionGuard reads --------------------------------------------------

    @property
    def transport(self) -> asyncio.Transport | None:
        if self.handler is not None:
            return self.handler.transport
        return None if self._closed else self._transport

    def force_close(self) -> None:
        if self.handler is not None:
            self.handler.force_close()
        elif self._transport is not None and not self._closed:
            self._transport.close()

    # ----- asyncio.Protocol ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        peer = transport.get_extra_info("peername")
        self._remote = str(peer[0]) if isinstance(peer, tuple) and peer else ""

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if self._task is None:
            self._next()
        elif len(self._buffer) > READ_AHEAD_BYTES and not self._paused_reading:
            self._paused_reading = True
            assert self._transport is not None
            self._transport.pause_reading()

    def eof_received(self) -> bool:
        self._eof = True
        if self._task is None:
            if not self._buffer:
                return False  # nothing asked: close
            self._next()  # an incomplete head: the full path answers it
        return True  # answer what was asked first (``_next`` closes after)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        if self._idle is not None:
            self._idle.cancel()
        if self._task is not None:
            self._task.cancel()
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)
        self.guard.closed(self)

    def pause_writing(self) -> None:
        if self._drained is None or self._drained.done():
            self._drained = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    # ----- requests --------------------------------------------------------------------

    def _next(self) -> None:
        """Serve the next request in the buffer, wait for the rest of it, or hand over."""
        if self._closed or self.handler is not None:
            return
        buffer = self._buffer
        end = buffer.find(b"\r\n\r\n", 0, MAX_HEAD_BYTES)
        if end < 0:
            if not buffer:
                if self._eof and self._transport is not None:
                    self._transport.close()
                return
            # Too long, lines ending in a bare LF (which aiohttp may accept), or bytes
            # that cannot start a head the fast path serves (aiohttp answers those at
            # once, rather than wait for a blank line that may never come): its call.
            if len(buffer) >= MAX_HEAD_BYTES or self._eof \
                    or buffer.count(b"\n") != buffer.count(b"\r\n") \
                    or not _may_be_fast(buffer):
                self._hand_over()
            return
        request = parse_request(bytes(buffer[:end]))
        # Bytes after a request that closes the connection: aiohttp refuses the request
        # (400, "Data after Connection: close") rather than answer it and drop the rest.
        if request is None or (request.close and len(buffer) > end + 4):
            self._hand_over()
            return
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        self._task = asyncio.get_running_loop().create_task(self._serve(request, end + 4))

    async def _serve(self, request: _Request, consumed: int) -> None:
        state = self.guard.started(self)
        served = False
        try:
            served = await self._forward(request, consumed)
        except asyncio.CancelledError:
            return  # the client went away
        except Exception:  # a bug costs one request, never the connection's loop
            log.exception("unhandled error for %s %s", request.method, request.target)
            self._write_json(500, b'{"message": "Something went wrong inside binderless. '
                                  b'Try again."}', close=True, head=request.method == "HEAD")
            return
        finally:
            self._task = None
            if state is not None:
                self.guard.finished(state)
        if not served:
            self._hand_over()
            return
        if request.close or self._closed:
            if self._transport is not None:
                self._transport.close()
            return
        if self._paused_reading and self._transport is not None:
            self._paused_reading = False
            self._transport.resume_reading()
        self._idle = asyncio.get_running_loop().call_later(self.keepalive, self.force_close)
        self._next()

    async def _forward(self, request: _Request, consumed: int) -> bool:
        """Forward ``request``; ``False`` (nothing consumed, nothing sent) when the full
        path must answer it."""
        fast, fields = self.fast, request.fields
        policy, proxy = fast.policy, fast.proxy
        host = fields[b"host"].decode("latin-1")
        if not policy.host_allowed(host):
            return False
        page: dict[str, str] = {}
        if b"origin" in fields:
            page["Origin"] = fields[b"origin"].decode("latin-1")
        if b"sec-fetch-site" in fields:
            page["Sec-Fetch-Site"] = fields[b"sec-fetch-site"].decode("latin-1")
        if page:
            origin = policy.page_origin(page, "http", host)
            if origin is not None and not policy.origin_allowed(origin):
                return False
        path, _, query = request.target.partition("?")
        session_id = path.split("/")[2]
        prefix = f"/user/{session_id}/"
        if not session_id or not request.target.startswith(prefix):
            return False
        rest = request.target[len(prefix):]
        first = rest.split("?", 1)[0].split("/", 1)[0]
        if rest.startswith(PREFIX) or (request.method == "GET" and first in BANNER_PAGES
                                       and proxy.tools is not None):
            return False
        try:
            route = await proxy.routes.get(session_id)
        except BinderlessError:
            return False
        if route.owner:
            return False
        target = proxy.target(route.target)
        if target is None:
            return False
        cookie_header = fields.get(b"cookie", b"").decode("latin-1")
        session_cookie = cookie_value(cookie_header, cookie_name(session_id))
        presented = _query_token(query)
        if presented is None:
            return False
        if not presented:
            scheme, _, value = fields.get(b"authorization", b"").decode("latin-1").partition(" ")
            if scheme.lower() in ("token", "bearer") and value:
                presented = value.strip()
            else:
                presented = session_cookie
        if not presented or not tokens_match(presented, route.token):
            return False
        # From here on the request is the fast path's.
        del self._buffer[:consumed]
        fast.served += 1
        proxy.on_activity(session_id)
        set_cookie = _session_cookie(session_id, route.token) \
            if session_cookie != route.token else b""
        up_host, up_port, host_header = target
        head = request_head(request.method, request.target, host_header,
                            self._upstream_headers(request, host))
        try:
            exchange = await proxy.upstreams.send(up_host, up_port, request.method, head, None)
        except UpstreamError as exc:
            log.info("session upstream failed: %s", exc)
            proxy.routes.forget(session_id)
            self._write_json(502, _BAD_GATEWAY, head=request.method == "HEAD",
                             close=request.close)
            return True
        try:
            await self._answer(request, exchange, set_cookie)
        finally:
            exchange.release()  # closes the connection unless the answer was read whole
        return True

    def _upstream_headers(self, request: _Request, host: str) -> list[tuple[bytes, bytes]]:
        """As ``SessionProxy._request_headers``: the client's headers without hop-by-hop
        ones (and those ``Connection`` names), ours, or binderless's cookies."""
        named: set[bytes] = set()
        if b"connection" in request.fields:
            named = {t.strip().lower() for t in request.fields[b"connection"].split(b",")}
        headers: list[tuple[bytes, bytes]] = []
        for name, value in request.headers:
            lower = name.lower()
            if lower in DROPPED_REQUEST_HEADERS or lower in named:
                continue
            if lower == b"cookie" and b"binderless-" in value:
                value = private_cookies_removed(value.decode("latin-1")).encode("latin-1")
                if not value:
                    continue
            headers.append((name, value))
        headers.append((b"X-Forwarded-For", self._remote.encode("latin-1", "replace")))
        headers.append((b"X-Forwarded-Proto", b"http"))
        headers.append((b"X-Forwarded-Host", host.encode("latin-1")))
        return headers

    async def _answer(self, request: _Request, exchange: Exchange, set_cookie: bytes) -> None:
        lines = [b"HTTP/1.1 %d %s" % (exchange.status, exchange.reason.encode("utf-8"))]
        named = {token.strip().lower() for name, value in exchange.headers
                 if name.lower() == "connection" for token in value.split(",")}
        dated = typed = False
        declared: int | None = None
        for name, value in exchange.headers:
            lower = name.lower()
            if lower == "content-length" and value.isdigit() and declared is None:
                declared = int(value)
            if lower in HOP_BY_HOP or lower in named:
                continue
            if lower == "set-cookie" and private_set_cookie(value):
                continue  # a session's server may not sign anyone in or out
            dated = dated or lower == "date"
            typed = typed or lower == "content-type"
            lines.append(b"%s: %s" % (name.encode("utf-8"), value.encode("utf-8")))
        if not dated:
            lines.append(b"Date: " + _Clock.date())
        if not typed and not exchange.bodiless and exchange.length != 0:
            # As aiohttp does on the full path: a body without a type is a download,
            # never left for the browser to sniff (as HTML, on binderless's origin).
            lines.append(b"Content-Type: application/octet-stream")
        if set_cookie:
            lines.append(b"Set-Cookie: " + set_cookie)
        if request.close:
            lines.append(b"Connection: close")
        length = exchange.length
        if exchange.bodiless:
            # HEAD declares the length of the body it stands for (204 and 304 answers
            # carry none, as on the full path).
            if declared is not None and exchange.status not in (204, 304):
                lines.append(b"Content-Length: %d" % declared)
            self._write(b"\r\n".join(lines) + b"\r\n\r\n")
            return
        if length is not None and length <= WHOLE_BODY_BYTES:
            try:
                body = await exchange.read_all()
            except UpstreamError as exc:
                log.info("session upstream failed mid-answer: %s", exc)
                self._write_json(502, b'{"message": "The session\'s server stopped answering."}')
                return
            lines.append(b"Content-Length: %d" % len(body))
            self._write(b"\r\n".join(lines) + b"\r\n\r\n" + body)
            return
        chunked = length is None
        lines.append(b"Transfer-Encoding: chunked" if length is None
                     else b"Content-Length: %d" % length)
        self._write(b"\r\n".join(lines) + b"\r\n\r\n")
        try:
            async for piece in exchange.chunks():
                self._write(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
                if self._drained is not None and not self._drained.done():
                    await self._drained
                if self._closed:
                    return
        except UpstreamError as exc:
            # The head is sent: all that is left is to cut the client's connection, so it
            # sees a broken answer, not a complete one.
            log.info("session upstream failed mid-answer: %s", exc)
            request.close = True
            if self._transport is not None:
                self._transport.close()
            return
        if chunked:
            self._write(b"0\r\n\r\n")

    def _write(self, data: bytes) -> None:
        if self._transport is not None and not self._closed:
            self._transport.write(data)

    def _write_json(self, status: int, body: bytes, *, close: bool = False,
                    head: bool = False) -> None:
        """An answer of the fast path's own; to ``HEAD`` without its body (bytes after
        the head would be read as the next answer)."""
        reason = {500: b"Internal Server Error", 502: b"Bad Gateway"}.get(status, b"Error")
        self._write(b"HTTP/1.1 %d %s\r\nContent-Type: application/json; charset=utf-8\r\n"
                    b"Content-Length: %d\r\nDate: %s\r\n%s\r\n%s"
                    % (status, reason, len(body), _Clock.date(),
                       b"Connection: close\r\n" if close else b"", b"" if head else body))
        if close and self._transport is not None:
            self._transport.close()

    def _hand_over(self) -> None:
        """Give the connection to aiohttp from the start of the buffered request on."""
        transport = self._transport
        if self.handler is not None or transport is None or self._closed:
            return
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        handler = self.handler_factory()
        self.handler = handler
        self.guard.handed_over(self, handler)
        if self._paused_reading:
            self._paused_reading = False
            transport.resume_reading()
        transport.set_protocol(handler)
        handler.connection_made(transport)
        if self._buffer:
            data, self._buffer = bytes(self._buffer), bytearray()
            handler.data_received(data)
        if self._eof:
            handler.eof_received()
