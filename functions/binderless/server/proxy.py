"""Proxy ``/user/<session>/...`` (HTTP and WebSocket) to the session's Jupyter server.

Every request must carry the session's token: ``?token=``, an ``Authorization:
token ...`` header, or the cookie this proxy sets after a valid token. CORS
preflights (``OPTIONS``) pass without it, so the notebook server answers them
for publishers' pages (thebe). Paths are forwarded raw, ``%2F`` and all.

A session launched by a signed-in person (``Route.owner``) answers only that person:
anyone else gets 403, token or not. ``/user/<id>/.binderless/...`` is binderless's own
(``session_tools``), and Jupyter's pages get the countdown banner's script.

Sessions never wait for each other: the client to sessions' servers has no connection
cap (aiohttp's default of 100 let 100 WebSockets to one session freeze every other).
Bodies sent to a session are limited (``max_upload_bytes``, 413 beyond it), and a
proxied WebSocket is pinged at both ends every ``ping_seconds`` so that idle kernels
survive proxies that cut silent connections (CloudFront: 10 minutes).

Plain requests go through the lean forwarder of ``forward.py`` (about half the CPU of
aiohttp's client per request); pages that get the banner and WebSockets go through
aiohttp's client. Most plain ``GET``s never reach ``handle``: the listener serves them on
the fast path (``fastpath.py``), which makes the same checks and hands over any doubt. The module is one room because every path shares the checks above
(token, owner, cookies, forwarded headers, limits); the wire protocol lives in
``forward.py``.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import AsyncIterator, Callable
from urllib.parse import urlsplit

import aiohttp
from aiohttp import WSMsgType, web
from multidict import CIMultiDict
from yarl import URL

from ..backends.protocols import Route
from ..identity import IDENTITY_COOKIE
from .forward import Exchange, UpstreamError, UpstreamPool, request_head
from .pages import message_page, wants_page
from .session_tools import MAX_PAGE_BYTES, PREFIX, SessionTools, inject_banner, wants_banner

__all__ = ["SessionProxy", "cookie_name", "cookie_value", "tokens_match"]

log = logging.getLogger("binderless.proxy")

HOP_BY_HOP = {
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
    "transfer-encoding", "upgrade", "host", "content-length",
}


#: Set by the proxy itself (the first three) or by no one: never passed on from the client,
#: so a session never reads a client address or scheme the visitor made up.
FORWARDED = {"x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "forwarded",
             "x-real-ip", "x-forwarded-port", "x-forwarded-prefix", "x-forwarded-server"}

#: What the lean forwarder never passes on from a client's request head: hop-by-hop
#: headers, ours, and ``Expect`` (the server already answered ``100 Continue``).
DROPPED_REQUEST_HEADERS = frozenset(
    name.encode() for name in HOP_BY_HOP | FORWARDED | {"expect", "proxy-connection"})

#: Request bodies up to this size are read before they are sent, so that a request
#: can be sent again on a new connection (see ``forward``); larger ones stream.
REPLAY_BODY_BYTES = 64 * 1024

#: A WebSocket reports activity at most this often (not on every message).
ACTIVITY_SECONDS = 5.0

#: Answers up to this size are read whole and sent in one write, not streamed.
WHOLE_BODY_BYTES = 256 * 1024

#: binderless's own cookies (the sign-in, the session tokens): a session never sets them.
PRIVATE_PREFIX = "binderless-"


def cookie_name(session_id: str) -> str:
    return f"binderless-session-{session_id}"


def private_cookies_removed(header: str) -> str:
    """A ``Cookie`` header without binderless's sign-in cookies."""
    kept = [part for part in header.split(";")
            if not part.strip().startswith((IDENTITY_COOKIE + "=", "binderless-signin="))]
    return ";".join(kept).strip()


def private_set_cookie(value: str) -> bool:
    """Whether a ``Set-Cookie`` value would set a cookie that browsers send back as one of
    binderless's (``binderless-...``). A name-less cookie counts by its value:
    ``=binderless-user=x`` comes back as ``Cookie: binderless-user=x``."""
    pair = value.split(";", 1)[0]
    name, equals, rest = pair.partition("=")
    sent = (name if name.strip(" \t") or not equals else rest).strip(" \t")
    return sent.lower().startswith(PRIVATE_PREFIX)


def tokens_match(presented: str, expected: str) -> bool:
    """Constant-time comparison that any presented value survives: ``compare_digest``
    raises ``TypeError`` on non-ASCII ``str`` (a hostile ``?token=``), so compare bytes."""
    return hmac.compare_digest(presented.encode("utf-8", "surrogateescape"),
                               expected.encode("utf-8", "surrogateescape"))


class BodyTooLarge(Exception):
    """A request body passed the limit on its way to a session."""


def _too_large(limit: int) -> web.Response:
    response = web.json_response(
        {"message": f"The request body is larger than this server accepts for a session "
                    f"({limit} bytes)."}, status=413)
    response.force_close()  # do not read the rest of a body nobody wants
    return response


def cookie_value(header: str, name: str) -> str:
    """The value of cookie ``name`` in a ``Cookie`` header ("" if absent): the proxy's
    own cookie only, without parsing every cookie of the request as ``request.cookies``
    does on each proxied request."""
    if name not in header:
        return ""
    prefix = name + "="
    for part in header.split(";"):
        part = part.strip()
        if part.startswith(prefix):
            return part[len(prefix):]
    return ""


def _presented_token(request: web.Request, session_id: str) -> tuple[str, str]:
    """The token the request presents, and the value of its session cookie."""
    cookie = cookie_value(request.headers.get("Cookie", ""), cookie_name(session_id))
    query = request.query_string
    token = request.query.get("token", "") if "oken" in query or "%" in query else ""
    if token:
        return token, cookie
    auth = request.headers.get("Authorization", "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() in ("token", "bearer") and value:
        return value.strip(), cookie
    return cookie, cookie


class RouteCache:
    """Routes found by ``lookup``, kept ``ttl`` seconds (0: not kept).

    On AWS each lookup is a DynamoDB read and one JupyterLab page makes dozens of
    requests, so the gateway keeps routes briefly; a session stopped in the meantime is
    answered from the cache until its entry expires (its server no longer answers: 502),
    or at once when a forward to it fails (``forget``). Unknown sessions are not kept.
    Lookups run in a worker thread, off the event loop, unless ``in_thread`` is false:
    the local store's lookup is one indexed SQLite read, far cheaper than a thread hop
    on every proxied request."""

    def __init__(self, lookup: Callable[[str], Route], ttl: float = 0.0, *,
                 clock: Callable[[], float] = time.monotonic, size: int = 10_000,
                 in_thread: bool = True) -> None:
        self.lookup = lookup
        self.ttl = ttl
        self.in_thread = in_thread
        self.clock = clock
        self.size = size
        self._routes: dict[str, tuple[float, Route]] = {}

    async def get(self, session_id: str) -> Route:
        """The route of ``session_id``; raises ``SessionNotFound``."""
        kept = self._routes.get(session_id)
        if kept is not None and self.clock() - kept[0] < self.ttl:
            return kept[1]
        if self.in_thread:
            route = await asyncio.to_thread(self.lookup, session_id)
        else:
            route = self.lookup(session_id)
        if self.ttl > 0:
            if len(self._routes) >= self.size:
                self._routes.clear()
            self._routes[session_id] = (self.clock(), route)
        return route

    def forget(self, session_id: str) -> None:
        self._routes.pop(session_id, None)


def _declared_length(headers: list[tuple[str, str]]) -> int | None:
    """The Content-Length an answer to HEAD declared (that of the GET it stands for)."""
    for name, value in headers:
        if name.lower() == "content-length" and value.isdigit():
            return int(value)
    return None


class SessionProxy:
    #: Plain requests go through the lean forwarder (``forward.py``); false: through
    #: aiohttp's client, as before it (the benchmark compares the two).
    lean_forwarder = True

    def __init__(self, lookup: Callable[[str], Route], on_activity: Callable[[str], None], *,
                 identify: Callable[[web.Request], str] | None = None,
                 tools: SessionTools | None = None, route_ttl: float = 0.0,
                 lookup_in_thread: bool = True, max_upload_bytes: int = 512 * 1024 * 1024,
                 ping_seconds: float = 30.0, check_owner: bool = True) -> None:
        """``identify(request)`` is the signed-in user id of the request ("" if none);
        with ``check_owner`` false (sessions on an origin of their own, which never
        receives the sign-in cookie) a signed-in person's session opens with its token
        alone, like any other;
        routes are kept ``route_ttl`` seconds and looked up in a worker thread unless
        ``lookup_in_thread`` is false (see ``RouteCache``). Bodies larger than
        ``max_upload_bytes`` are refused; WebSockets are pinged every ``ping_seconds``."""
        self.routes = RouteCache(lookup, route_ttl, in_thread=lookup_in_thread)
        self.max_upload_bytes = max_upload_bytes
        self.ping_seconds = ping_seconds
        self.on_activity = on_activity
        self.identify = identify
        self.check_owner = check_owner
        self.tools = tools
        self._client: aiohttp.ClientSession | None = None
        self.upstreams = UpstreamPool()
        self._targets: dict[str, tuple[str, int, str] | None] = {}

    async def close(self) -> None:
        await self.upstreams.close()
        if self._client is not None:
            await self._client.close()
        if self.tools is not None:
            await self.tools.close()

    @property
    def client(self) -> aiohttp.ClientSession:
        if self._client is None:
            # limit=0: no cap shared between sessions (one session's WebSockets must
            # never hold another's requests); the server caps client connections instead.
            self._client = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, limit_per_host=0),
                auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar(),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
            )
        return self._client

    async def handle(self, request: web.Request, session_id: str) -> web.StreamResponse:
        route = await self.routes.get(session_id)  # raises SessionNotFound
        if route.owner and self.check_owner and (
                self.identify is None or self.identify(request) != route.owner):
            if wants_page(request):
                return message_page("This session belongs to someone else", [
                    "It was launched by a signed-in person, and only they can open it. If it "
                    "is yours, sign in as the person who launched it."],
                    [("Sign in", f"/auth/login?next=/user/{session_id}/"), ("Home", "/")],
                    status=403)
            return web.json_response(
                {"message": "This session belongs to someone else. If it is yours, sign in "
                            "as the person who launched it."}, status=403)
        presented, session_cookie = _presented_token(request, session_id)
        authorised = bool(presented) and tokens_match(presented, route.token)
        if not authorised and request.method != "OPTIONS":
            if wants_page(request):
                return message_page("This address is missing its key", [
                    "A session opens only with the key (the token) its launch gave out. "
                    "Open the link the launch page took you to (it ends in ?token=...), or "
                    "launch the repository again for a session of your own."],
                    [("Launch a repository", "/")], status=403)
            return web.json_response(
                {"message": "This session needs its token: open the link the launch page gave "
                            "you, or pass ?token=... ."},
                status=403,
            )
        rest = request.raw_path[len(f"/user/{session_id}/"):]
        if self.tools is not None and rest.startswith(PREFIX) and authorised:
            return await self.tools.handle(request, route, rest)
        self.on_activity(session_id)
        cookie = ""
        if authorised and session_cookie != route.token:
            cookie = route.token
        if "Upgrade" in request.headers and \
                request.headers["Upgrade"].lower() == "websocket":
            upstream = URL(route.target + request.raw_path, encoded=True)
            return await self._websocket(request, upstream, session_id)
        banner = self.tools is not None and wants_banner(request, rest)
        target = self.target(route.target)
        if self.lean_forwarder and not banner and target is not None:
            return await self._forward(request, target, session_id, cookie)
        upstream = URL(route.target + request.raw_path, encoded=True)
        return await self._http(request, upstream, session_id, cookie, banner)

    def target(self, target: str) -> tuple[str, int, str] | None:
        """Host, port and ``Host`` header of a plain ``http://host:port`` target (None:
        anything else, which aiohttp's client handles)."""
        try:
            return self._targets[target]
        except KeyError:
            pass
        parts = urlsplit(target)
        found = None
        if parts.scheme == "http" and parts.hostname and parts.path in ("", "/") \
                and not parts.query and not parts.username:
            try:
                found = (parts.hostname, parts.port or 80, parts.netloc)
            except ValueError:  # a port out of range
                found = None
        if len(self._targets) >= 10_000:
            self._targets.clear()
        self._targets[target] = found
        return found

    def _request_headers(self, request: web.Request) -> list[tuple[bytes, bytes]]:
        """The headers the lean forwarder sends: the client's raw ones without hop-by-hop
        headers (and those ``Connection`` names), ours, or binderless's cookies."""
        raw = request.raw_headers
        named: frozenset[bytes] = frozenset()
        if "Connection" in request.headers:
            named = frozenset(token.strip().lower().encode("latin-1", "replace")
                              for value in request.headers.getall("Connection")
                              for token in value.split(","))
        headers: list[tuple[bytes, bytes]] = []
        for name, value in raw:
            lower = name.lower()
            if lower in DROPPED_REQUEST_HEADERS or lower in named:
                continue
            if lower == b"cookie" and b"binderless-" in value:
                # The sign-in is binderless's: a session's server (the repository's code)
                # never sees it, so it cannot take it elsewhere.
                value = private_cookies_removed(value.decode("latin-1")).encode("latin-1")
                if not value:
                    continue
            headers.append((name, value))
        headers.append((b"X-Forwarded-For", (request.remote or "").encode("latin-1", "replace")))
        headers.append((b"X-Forwarded-Proto", request.scheme.encode()))
        headers.append((b"X-Forwarded-Host",
                        (request.host or "").encode("utf-8", "surrogateescape")))
        return headers

    async def _forward(self, request: web.Request, target: tuple[str, int, str],
                       session_id: str, cookie: str) -> web.StreamResponse:
        """``request`` through the lean forwarder (``forward.py``)."""
        length = request.content_length
        if length is not None and length > self.max_upload_bytes:
            return _too_large(self.max_upload_bytes)
        # Methods that carry a body get a Content-Length even when it is empty (some
        # servers answer 411 without one), as aiohttp's client sends it.
        body: bytes | AsyncIterator[bytes] | None = \
            b"" if request.method in ("POST", "PUT", "PATCH") else None
        if request.body_exists:
            if length is not None and length <= REPLAY_BODY_BYTES:
                body = await request.content.read()
            else:
                body = self._limited(request.content)
        host, port, host_header = target
        head = request_head(request.method, request.raw_path, host_header,
                            self._request_headers(request))
        try:
            exchange = await self.upstreams.send(host, port, request.method, head, body)
        except BodyTooLarge:
            return _too_large(self.max_upload_bytes)
        except UpstreamError as exc:
            log.info("session upstream failed: %s", exc)
            self.routes.forget(session_id)
            return web.json_response(
                {"message": "The session's server is not answering. It may have stopped; "
                            "launch the repository again."}, status=502)
        try:
            return await self._answer(request, exchange, session_id, cookie)
        finally:
            exchange.release()  # closes the connection unless the answer was read whole

    async def _answer(self, request: web.Request, exchange: Exchange, session_id: str,
                      cookie: str) -> web.StreamResponse:
        headers: CIMultiDict[str] = CIMultiDict()
        named = {token.strip().lower() for name, value in exchange.headers
                 if name.lower() == "connection" for token in value.split(",")}
        for name, value in exchange.headers:
            lower = name.lower()
            if lower in HOP_BY_HOP or lower in named:
                continue
            if lower == "set-cookie" and private_set_cookie(value):
                continue  # a session's server may not sign anyone in or out
            headers.add(name, value)
        length = exchange.length
        whole = length is not None and length <= WHOLE_BODY_BYTES and not exchange.bodiless
        response = (web.Response if whole else web.StreamResponse)(
            status=exchange.status, reason=exchange.reason, headers=headers)
        if cookie:
            # Set before prepare(): once the headers are sent, a cookie is lost.
            response.set_cookie(cookie_name(session_id), cookie, path=f"/user/{session_id}/",
                                httponly=True, samesite="Lax")
        if isinstance(response, web.Response):
            try:
                response.body = await exchange.read_all()
            except UpstreamError as exc:
                log.info("session upstream failed mid-answer: %s", exc)
                return web.json_response(
                    {"message": "The session's server stopped answering."}, status=502)
            return response
        if exchange.bodiless:
            # HEAD (and 304) declare the length of the body they stand for.
            response.content_length = _declared_length(exchange.headers)
        elif length is not None:
            response.content_length = length
        try:
            await response.prepare(request)
            async for piece in exchange.chunks():
                await response.write(piece)
            await response.write_eof()
        except ConnectionResetError:
            # The browser went away (a closed tab, a cancelled download): normal.
            log.debug("client left during %s %s", request.method, request.path)
        except UpstreamError as exc:
            # The head is sent: all that is left is to cut the client's connection, so
            # it sees a broken answer, not a complete one.
            log.info("session upstream failed mid-answer: %s", exc)
            if request.transport is not None:
                request.transport.close()
        return response

    def _forward_headers(self, request: web.Request) -> dict[str, str]:
        headers: dict[str, str] = {}
        # Header names compared in lower case: a client's "cookie:" is a Cookie too.
        for key, value in request.headers.items():
            lower = key.lower()
            if lower in HOP_BY_HOP or lower in FORWARDED:
                continue
            if lower == "cookie" and "binderless-" in value:
                # The sign-in is binderless's: a session's server (the repository's code)
                # never sees it, so it cannot take it elsewhere.
                value = private_cookies_removed(value)
                if not value:
                    continue
            headers[key] = value
        headers["X-Forwarded-For"] = request.remote or ""
        headers["X-Forwarded-Proto"] = request.scheme
        headers["X-Forwarded-Host"] = request.host
        return headers

    async def _limited(self, body: aiohttp.StreamReader) -> AsyncIterator[bytes]:
        """``body`` as it arrives, cut off once it passes ``max_upload_bytes``."""
        seen = 0
        async for chunk in body.iter_any():
            seen += len(chunk)
            if seen > self.max_upload_bytes:
                raise BodyTooLarge
            yield chunk

    async def _http(self, request: web.Request, upstream: URL, session_id: str,
                    cookie: str, banner: bool = False) -> web.StreamResponse:
        length = request.content_length
        if length is not None and length > self.max_upload_bytes:
            return _too_large(self.max_upload_bytes)
        body = self._limited(request.content) if request.body_exists else None
        headers = self._forward_headers(request)
        if banner:  # the page is changed on its way: it must come uncompressed
            headers = {k: v for k, v in headers.items() if k.lower() != "accept-encoding"}
            headers["Accept-Encoding"] = "identity"
        try:
            upstream_response = await self.client.request(
                request.method, upstream, headers=headers, data=body,
                allow_redirects=False,
            )
        except BodyTooLarge:
            return _too_large(self.max_upload_bytes)
        except aiohttp.ClientError as exc:
            if isinstance(exc.__cause__, BodyTooLarge) or isinstance(exc.__context__,
                                                                     BodyTooLarge):
                return _too_large(self.max_upload_bytes)
            log.info("session upstream failed: %s", exc)
            self.routes.forget(session_id)
            return web.json_response(
                {"message": "The session's server is not answering. It may have stopped; "
                            "launch the repository again."}, status=502)
        async with upstream_response:
            # Most answers (API calls, small files) are read whole and sent with their
            # headers in one write; the rest stream through.
            length = upstream_response.content_length
            whole = (length is not None and length <= WHOLE_BODY_BYTES and not banner
                     and request.method != "HEAD" and upstream_response.status not in (204, 304))
            response = (web.Response if whole else web.StreamResponse)(
                status=upstream_response.status, reason=upstream_response.reason)
            # Keep repeated headers (Set-Cookie) intact.
            for key, value in upstream_response.headers.items():
                if key.lower() in HOP_BY_HOP:
                    continue
                if key.lower() == "set-cookie" and private_set_cookie(value):
                    continue  # a session's server may not sign anyone in or out
                response.headers.add(key, value)
            if cookie:
                # Set before prepare(): once the headers are sent, a cookie is lost.
                response.set_cookie(cookie_name(session_id), cookie, path=f"/user/{session_id}/",
                                    httponly=True, samesite="Lax")
            if isinstance(response, web.Response):
                try:
                    response.body = await upstream_response.read()
                except aiohttp.ClientError as exc:
                    log.info("session upstream failed mid-answer: %s", exc)
                    return web.json_response(
                        {"message": "The session's server stopped answering."}, status=502)
                return response
            try:
                await self._copy_body(request, upstream_response, response, session_id,
                                      banner)
            except ConnectionResetError:
                # The browser went away (a closed tab, a cancelled download): normal.
                log.debug("client left during %s %s", request.method, request.path)
        return response

    async def _copy_body(self, request: web.Request, upstream_response: aiohttp.ClientResponse,
                         response: web.StreamResponse, session_id: str, banner: bool) -> None:
        page = b""
        if banner and upstream_response.status == 200 and \
                upstream_response.content_type == "text/html" and \
                upstream_response.headers.get("Content-Encoding", "identity") == "identity":
            while len(page) <= MAX_PAGE_BYTES and (
                    chunk := await upstream_response.content.readany()):
                page += chunk
            if len(page) <= MAX_PAGE_BYTES:
                page = inject_banner(page, session_id)
                response.content_length = len(page)
                await response.prepare(request)
                await response.write(page)
                await response.write_eof()
                return
        if upstream_response.headers.get("Content-Length") is not None:
            response.content_length = int(upstream_response.headers["Content-Length"])
        await response.prepare(request)
        if page:
            await response.write(page)
        async for chunk in upstream_response.content.iter_any():
            await response.write(chunk)
        await response.write_eof()

    async def _websocket(self, request: web.Request, upstream: URL,
                         session_id: str) -> web.StreamResponse:
        if not web.WebSocketResponse().can_prepare(request).ok:
            # A malformed handshake is refused before the session's server is dialled.
            return web.json_response({"message": "This is not a valid WebSocket request."},
                                     status=400)
        protocols = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",")
                     if p.strip()]
        headers = {k: v for k, v in self._forward_headers(request).items()
                   if not k.lower().startswith("sec-websocket")}
        try:
            upstream_ws = await self.client.ws_connect(
                upstream.with_scheme("ws"), headers=headers, protocols=protocols,
                max_msg_size=0, autoping=True, heartbeat=self.ping_seconds,
            )
        except aiohttp.ClientResponseError as exc:
            return web.json_response({"message": f"The session refused the connection ({exc.status})."},
                                     status=exc.status)
        except aiohttp.ClientError:
            self.routes.forget(session_id)
            return web.json_response(
                {"message": "The session's server is not answering. Launch the repository again."},
                status=502)
        client_ws = web.WebSocketResponse(protocols=[upstream_ws.protocol] if upstream_ws.protocol
                                          else (), max_msg_size=0, autoping=True,
                                          heartbeat=self.ping_seconds)
        try:
            await client_ws.prepare(request)
        except ConnectionResetError:
            await upstream_ws.close()
            return client_ws
        except BaseException:
            await upstream_ws.close()  # never leave the session's side open
            raise

        clock = asyncio.get_running_loop().time
        reported = [clock()]

        async def pump(source: aiohttp.ClientWebSocketResponse | web.WebSocketResponse,
                       sink: aiohttp.ClientWebSocketResponse | web.WebSocketResponse) -> None:
            try:
                async for message in source:
                    now = clock()
                    if now - reported[0] >= ACTIVITY_SECONDS:  # not on every message
                        reported[0] = now
                        self.on_activity(session_id)
                    if message.type == WSMsgType.TEXT:
                        await sink.send_str(message.data)
                    elif message.type == WSMsgType.BINARY:
                        await sink.send_bytes(message.data)
                    else:
                        break
            except ConnectionResetError:
                pass  # one end went away: close the other
            await sink.close()

        tasks = [asyncio.create_task(pump(client_ws, upstream_ws)),
                 asyncio.create_task(pump(upstream_ws, client_ws))]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await upstream_ws.close()
            await client_ws.close()
        return client_ws
