"""Proxy ``/user/<session>/...`` (HTTP and WebSocket) to the session's Jupyter server.

Every request must carry the session's token: ``?token=``, an ``Authorization:
token ...`` header, or the cookie this proxy sets after a valid token. CORS
preflights (``OPTIONS``) pass without it, so the notebook server answers them
for publishers' pages (thebe). Paths are forwarded raw, ``%2F`` and all.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Callable

import aiohttp
from aiohttp import WSMsgType, web
from yarl import URL

from ..backends.protocols import Route

__all__ = ["SessionProxy", "cookie_name"]

log = logging.getLogger("binderless.proxy")

HOP_BY_HOP = {
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
    "transfer-encoding", "upgrade", "host", "content-length",
}


def cookie_name(session_id: str) -> str:
    return f"binderless-session-{session_id}"


def _presented_token(request: web.Request, session_id: str) -> str:
    token = request.query.get("token", "")
    if token:
        return token
    auth = request.headers.get("Authorization", "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() in ("token", "bearer") and value:
        return value.strip()
    return request.cookies.get(cookie_name(session_id), "")


class SessionProxy:
    def __init__(self, lookup: Callable[[str], Route], on_activity: Callable[[str], None]) -> None:
        self.lookup = lookup
        self.on_activity = on_activity
        self._client: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()

    @property
    def client(self) -> aiohttp.ClientSession:
        if self._client is None:
            self._client = aiohttp.ClientSession(
                auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar(),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
            )
        return self._client

    async def handle(self, request: web.Request, session_id: str) -> web.StreamResponse:
        route = self.lookup(session_id)  # raises SessionNotFound
        presented = _presented_token(request, session_id)
        authorised = bool(presented) and hmac.compare_digest(presented, route.token)
        if not authorised and request.method != "OPTIONS":
            return web.json_response(
                {"message": "This session needs its token: open the link the launch page gave "
                            "you, or pass ?token=... ."},
                status=403,
            )
        self.on_activity(session_id)
        upstream = URL(route.target + request.raw_path, encoded=True)
        cookie = ""
        if authorised and request.cookies.get(cookie_name(session_id)) != route.token:
            cookie = route.token
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return await self._websocket(request, upstream, session_id)
        return await self._http(request, upstream, session_id, cookie)

    def _forward_headers(self, request: web.Request) -> dict[str, str]:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        headers["X-Forwarded-For"] = request.remote or ""
        headers["X-Forwarded-Proto"] = request.scheme
        headers["X-Forwarded-Host"] = request.host
        return headers

    async def _http(self, request: web.Request, upstream: URL, session_id: str,
                    cookie: str) -> web.StreamResponse:
        body = request.content if request.body_exists else None
        try:
            upstream_response = await self.client.request(
                request.method, upstream, headers=self._forward_headers(request), data=body,
                allow_redirects=False,
            )
        except aiohttp.ClientError as exc:
            log.info("session upstream failed: %s", exc)
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
                response.headers.add(key, value)
            if cookie:
                # Set before prepare(): once the headers are sent, a cookie is lost.
                response.set_cookie(cookie_name(session_id), cookie, path=f"/user/{session_id}/",
                                    httponly=True, samesite="Lax")
            if upstream_response.headers.get("Content-Length") is not None:
                response.content_length = int(upstream_response.headers["Content-Length"])
            await response.prepare(request)
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
