"""Proxy ``/user/<session>/...`` (HTTP and WebSocket) to the session's Jupyter server.

Every request must carry the session's token: ``?token=``, an ``Authorization:
token ...`` header, or the cookie this proxy sets after a valid token. CORS
preflights (``OPTIONS``) pass without it, so the notebook server answers them
for publishers' pages (thebe). Paths are forwarded raw, ``%2F`` and all.

A session launched by a signed-in person (``Route.owner``) answers only that person:
anyone else gets 403, token or not. ``/user/<id>/.binderless/...`` is binderless's own
(``session_tools``), and Jupyter's pages get the countdown banner's script.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Callable

import aiohttp
from aiohttp import WSMsgType, web
from yarl import URL

from ..backends.protocols import Route
from ..identity import IDENTITY_COOKIE
from .session_tools import MAX_PAGE_BYTES, PREFIX, SessionTools, inject_banner, wants_banner

__all__ = ["SessionProxy", "cookie_name"]

log = logging.getLogger("binderless.proxy")

HOP_BY_HOP = {
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
    "transfer-encoding", "upgrade", "host", "content-length",
}


#: binderless's own cookies (the sign-in, the session tokens): a session never sets them.
PRIVATE_PREFIX = "binderless-"


def cookie_name(session_id: str) -> str:
    return f"binderless-session-{session_id}"


def private_cookies_removed(header: str) -> str:
    """A ``Cookie`` header without binderless's sign-in cookies."""
    kept = [part for part in header.split(";")
            if not part.strip().startswith((IDENTITY_COOKIE + "=", "binderless-signin="))]
    return ";".join(kept).strip()


def _presented_token(request: web.Request, session_id: str) -> str:
    token = request.query.get("token", "")
    if token:
        return token
    auth = request.headers.get("Authorization", "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() in ("token", "bearer") and value:
        return value.strip()
    return request.cookies.get(cookie_name(session_id), "")


class RouteCache:
    """Routes found by ``lookup``, kept ``ttl`` seconds (0: not kept).

    On AWS each lookup is a DynamoDB read and one JupyterLab page makes dozens of
    requests, so the gateway keeps routes briefly; a session stopped in the meantime is
    answered from the cache until its entry expires (its server no longer answers: 502),
    or at once when a forward to it fails (``forget``). Unknown sessions are not kept.
    Lookups run in a worker thread, off the event loop."""

    def __init__(self, lookup: Callable[[str], Route], ttl: float = 0.0, *,
                 clock: Callable[[], float] = time.monotonic, size: int = 10_000) -> None:
        self.lookup = lookup
        self.ttl = ttl
        self.clock = clock
        self.size = size
        self._routes: dict[str, tuple[float, Route]] = {}

    async def get(self, session_id: str) -> Route:
        """The route of ``session_id``; raises ``SessionNotFound``."""
        kept = self._routes.get(session_id)
        if kept is not None and self.clock() - kept[0] < self.ttl:
            return kept[1]
        route = await asyncio.to_thread(self.lookup, session_id)
        if self.ttl > 0:
            if len(self._routes) >= self.size:
                self._routes.clear()
            self._routes[session_id] = (self.clock(), route)
        return route

    def forget(self, session_id: str) -> None:
        self._routes.pop(session_id, None)


class SessionProxy:
    def __init__(self, lookup: Callable[[str], Route], on_activity: Callable[[str], None], *,
                 identify: Callable[[web.Request], str] | None = None,
                 tools: SessionTools | None = None, route_ttl: float = 0.0) -> None:
        """``identify(request)`` is the signed-in user id of the request ("" if none);
        routes are kept ``route_ttl`` seconds (see ``RouteCache``)."""
        self.routes = RouteCache(lookup, route_ttl)
        self.on_activity = on_activity
        self.identify = identify
        self.tools = tools
        self._client: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
        if self.tools is not None:
            await self.tools.close()

    @property
    def client(self) -> aiohttp.ClientSession:
        if self._client is None:
            self._client = aiohttp.ClientSession(
                auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar(),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
            )
        return self._client

    async def handle(self, request: web.Request, session_id: str) -> web.StreamResponse:
        route = await self.routes.get(session_id)  # raises SessionNotFound
        if route.owner and (self.identify is None or self.identify(request) != route.owner):
            return web.json_response(
                {"message": "This session belongs to someone else. If it is yours, sign in "
                            "as the person who launched it."}, status=403)
        presented = _presented_token(request, session_id)
        authorised = bool(presented) and hmac.compare_digest(presented, route.token)
        if not authorised and request.method != "OPTIONS":
            return web.json_response(
                {"message": "This session needs its token: open the link the launch page gave "
                            "you, or pass ?token=... ."},
                status=403,
            )
        rest = request.raw_path[len(f"/user/{session_id}/"):]
        if self.tools is not None and rest.startswith(PREFIX) and authorised:
            return await self.tools.handle(request, route, rest)
        self.on_activity(session_id)
        upstream = URL(route.target + request.raw_path, encoded=True)
        cookie = ""
        if authorised and request.cookies.get(cookie_name(session_id)) != route.token:
            cookie = route.token
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return await self._websocket(request, upstream, session_id)
        banner = self.tools is not None and wants_banner(request, rest)
        return await self._http(request, upstream, session_id, cookie, banner)

    def _forward_headers(self, request: web.Request) -> dict[str, str]:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        if "Cookie" in headers:
            # The sign-in is binderless's: a session's server (the repository's code)
            # never sees it, so it cannot take it elsewhere.
            headers["Cookie"] = private_cookies_removed(headers["Cookie"])
            if not headers["Cookie"]:
                del headers["Cookie"]
        headers["X-Forwarded-For"] = request.remote or ""
        headers["X-Forwarded-Proto"] = request.scheme
        headers["X-Forwarded-Host"] = request.host
        return headers

    async def _http(self, request: web.Request, upstream: URL, session_id: str,
                    cookie: str, banner: bool = False) -> web.StreamResponse:
        body = request.content if request.body_exists else None
        headers = self._forward_headers(request)
        if banner:  # the page is changed on its way: it must come uncompressed
            headers = {k: v for k, v in headers.items() if k.lower() != "accept-encoding"}
            headers["Accept-Encoding"] = "identity"
        try:
            upstream_response = await self.client.request(
                request.method, upstream, headers=headers, data=body,
                allow_redirects=False,
            )
        except aiohttp.ClientError as exc:
            log.info("session upstream failed: %s", exc)
            self.routes.forget(session_id)
            return web.json_response(
                {"message": "The session's server is not answering. It may have stopped; "
                            "launch the repository again."}, status=502)
        async with upstream_response:
            response = web.StreamResponse(status=upstream_response.status,
                                          reason=upstream_response.reason)
            # Keep repeated headers (Set-Cookie) intact.
            for key, value in upstream_response.headers.items():
                if key.lower() in HOP_BY_HOP:
                    continue
                if key.lower() == "set-cookie" and value.lstrip().startswith(PRIVATE_PREFIX):
                    continue  # a session's server may not sign anyone in or out
                response.headers.add(key, value)
            if cookie:
                # Set before prepare(): once the headers are sent, a cookie is lost.
                response.set_cookie(cookie_name(session_id), cookie, path=f"/user/{session_id}/",
                                    httponly=True, samesite="Lax")
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
                    return response
            if upstream_response.headers.get("Content-Length") is not None:
                response.content_length = int(upstream_response.headers["Content-Length"])
            await response.prepare(request)
            if page:
                await response.write(page)
            async for chunk in upstream_response.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response

    async def _websocket(self, request: web.Request, upstream: URL,
                         session_id: str) -> web.StreamResponse:
        protocols = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",")
                     if p.strip()]
        headers = {k: v for k, v in self._forward_headers(request).items()
                   if not k.lower().startswith("sec-websocket")}
        try:
            upstream_ws = await self.client.ws_connect(
                upstream.with_scheme("ws"), headers=headers, protocols=protocols,
                max_msg_size=0, autoping=True,
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
                                          else (), max_msg_size=0, autoping=True)
        await client_ws.prepare(request)

        async def pump(source: aiohttp.ClientWebSocketResponse | web.WebSocketResponse,
                       sink: aiohttp.ClientWebSocketResponse | web.WebSocketResponse) -> None:
            async for message in source:
                self.on_activity(session_id)
                if message.type == WSMsgType.TEXT:
                    await sink.send_str(message.data)
                elif message.type == WSMsgType.BINARY:
                    await sink.send_bytes(message.data)
                else:
                    break
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
