"""The aiohttp application: thin handlers that parse a request and call the service.

Routing happens on the raw, undecoded path, so ``%2F`` inside a spec survives to
the provider (thebe, Jupyter Book and GitLab links depend on it).
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import logging
import mimetypes
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from aiohttp import web

from ..api import (
    Check,
    health_document,
    metrics_text,
    repoproviders_document,
    versions_document,
)
from ..errors import BadLink, BinderlessError
from ..estimate import launch_estimate
from ..events import KEEPALIVE, event_from_error, sse_frame
from ..launches import (
    RecentKeys,
    events_document,
    idempotency_key,
    launch_document,
    launch_request,
    status_document,
)
from ..links import legacy_redirect, split_launch_path
from ..service import LaunchRequest, LaunchService
from .accounts import Accounts
from .proxy import SessionProxy
from .session_tools import SessionTools

__all__ = ["SITE_DIR", "create_app"]

log = logging.getLogger("binderless.server")

SITE_DIR = Path(__file__).resolve().parents[3] / "site"
SERVICE_KEY = web.AppKey("service", LaunchService)
CORS = {"Access-Control-Allow-Origin": "*"}
#: How long the gateway (AWS mode) keeps a session's route before reading it again.
ROUTE_TTL_SECONDS = 5.0

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_response(error: BinderlessError) -> web.Response:
    """The one mapping from a domain error to an HTTP answer (outside the event stream)."""
    return web.json_response(
        {"message": error.user_message(), "status_code": error.status_code},
        status=error.status_code, headers=CORS,
    )


class BinderlessServer:
    def __init__(self, service: LaunchService, site_dir: Path) -> None:
        self.service = service
        self.settings = service.settings
        self.site_dir = site_dir.resolve()
        self.accounts = Accounts.from_service(service, self.site_dir)
        # Routes are kept briefly where each lookup is a DynamoDB read (the AWS mode).
        self.proxy = SessionProxy(service.routes.lookup, service.record_activity,
                                  identify=self.accounts.owner, tools=SessionTools(service),
                                  route_ttl=ROUTE_TTL_SECONDS if self.settings.mode == "aws"
                                  else 0.0)
        self._culler: asyncio.Task[None] | None = None
        self._launch_keys = RecentKeys()

    # ----- dispatch ----------------------------------------------------------------------

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        path = request.raw_path.split("?", 1)[0]
        try:
            if path.startswith("/user/"):
                session_id = path.split("/")[2]
                return await self.proxy.handle(request, session_id)
            if self.accounts.handles(path):
                return await self.accounts.handle(request, path)
            if request.method == "OPTIONS":
                return web.Response(status=204, headers={
                    **CORS, "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
                    "Access-Control-Allow-Headers": "*"})
            if path == "/api/launches":
                return await self.create_launch(request)
            if path.startswith("/api/launches/"):
                return await self.launch_api(request, path)
            if request.method not in ("GET", "HEAD"):
                return web.json_response({"message": "Method not allowed."}, status=405)
            if path.startswith("/build/"):
                if request.method != "GET":
                    return web.Response(status=405, headers={**CORS, "Allow": "GET"})
                return await self.build_stream(request, path)
            if path.startswith("/v2/"):
                return self.loading_page(path)
            if path.startswith("/repo/"):
                raise web.HTTPFound(legacy_redirect(path))
            simple: dict[str, Callable[[], web.StreamResponse]] = {
                "/versions": self.versions, "/health": self.health,
                "/api/repoproviders": self.repoproviders, "/metrics": self.metrics,
            }
            if path in simple:
                return simple[path]()
            return self.static(path)
        except BinderlessError as exc:
            return error_response(exc)

    # ----- pages -----------------------------------------------------------------------

    def static(self, path: str) -> web.StreamResponse:
        rel = "index.html" if path in ("/", "") else path.lstrip("/")
        target = (self.site_dir / rel).resolve()
        if target.is_dir():
            target = target / "index.html"
        if not target.is_relative_to(self.site_dir) or not target.is_file():
            return web.Response(status=404, text=self._not_found_page(), content_type="text/html")
        ctype = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        headers = {"Cache-Control": "no-cache"}
        if target.suffix == ".svg":
            headers.update(CORS)
        return web.FileResponse(target, headers={**headers, "Content-Type": ctype})

    def _not_found_page(self) -> str:
        return ("<!doctype html><title>Not found</title><h1>Not found</h1>"
                "<p>There is nothing at this address. <a href='/'>Launch a repository</a>.</p>")

    def loading_page(self, path: str) -> web.Response:
        try:
            target = split_launch_path(path, "v2")
            try:
                display = self.service.providers.get(target.provider).display_name
            except BadLink:
                display = target.provider
            title = f"{display}: {target.spec}"
        except BadLink:
            title = "binderless"
        page = (self.site_dir / "loading.html").read_text()
        page = page.replace("{{og_title}}", html.escape(title))
        return web.Response(text=page, content_type="text/html",
                            headers={"Cache-Control": "no-cache"})

    def versions(self) -> web.Response:
        return web.json_response(versions_document(self.settings), headers=CORS)

    def health(self) -> web.Response:
        checks: list[Check] = []
        try:
            self.service.store.count_active()
            checks.append({"service": "store", "ok": True})
        except Exception as exc:  # a health check reports, it does not raise
            checks.append({"service": "store", "ok": False, "message": str(exc)})
        checks.append({"service": "site", "ok": (self.site_dir / "loading.html").is_file()})
        document, status = health_document(checks)
        return web.json_response(document, status=status, headers=CORS)

    def metrics(self) -> web.Response:
        store_metrics = getattr(self.service.store, "metrics", None)
        if store_metrics is None:
            return web.Response(status=404, text="metrics are not kept by this store\n")
        return web.Response(text=metrics_text(store_metrics()),
                            content_type="text/plain", charset="utf-8",
                            headers={"X-Content-Type-Options": "nosniff"})

    def repoproviders(self) -> web.Response:
        return web.json_response(
            repoproviders_document(self.service.providers.display_configs()), headers=CORS)

    async def launch_api(self, request: web.Request, path: str) -> web.Response:
        """What the loading page asks about the launch it follows (the id comes from the
        stream's event ids): ``GET /api/launches/<id>/estimate``, ``POST .../cancel``."""
        parts = path.split("/")  # "", "api", "launches", <id>, <action>
        action = parts[4] if len(parts) == 5 else "" if len(parts) == 4 else "-"
        methods = {"estimate": ("GET", "HEAD"), "cancel": ("POST",), "": ("GET", "HEAD"),
                   "events": ("GET", "HEAD")}.get(action)
        if methods is None:
            return web.json_response({"message": "Not found.", "status_code": 404},
                                     status=404, headers=CORS)
        if request.method not in methods:
            return web.json_response({"message": "Method not allowed.", "status_code": 405},
                                     status=405, headers={**CORS, "Allow": ", ".join(methods)})
        launch_id = parts[3]
        if action in ("", "events"):
            return self.launch_record(request, launch_id, action)
        if action == "cancel":
            cancelled = self.service.cancel(launch_id)
            return web.json_response({"launch_id": launch_id, "cancelled": cancelled}, status=202)
        estimate = await asyncio.to_thread(
            launch_estimate, self.service.store, launch_id, self.service.clock())
        return web.json_response(estimate, headers={**CORS, "Cache-Control": "no-store"})

    async def create_launch(self, request: web.Request) -> web.Response:
        """``POST /api/launches``: start a launch, answer with where to follow it (see
        ``launches.py``); the same ``Idempotency-Key`` gives the same launch back."""
        if request.method != "POST":
            return web.json_response({"message": "Method not allowed.", "status_code": 405},
                                     status=405, headers={**CORS, "Allow": "POST"})
        key = idempotency_key(request.headers)
        if key and (earlier := self._launch_keys.get(key)) is not None:
            return web.json_response(earlier, status=202, headers=CORS)
        try:
            body = await request.json()
        except ValueError:
            body = None
        launch = launch_request(body, registry=self.service.providers,
                                launch_host=self._launch_host(request),
                                client_ip=request.remote or "")
        answer = launch_document(self.service.start(launch), launch)
        if key:
            self._launch_keys.put(key, answer)
        return web.json_response(answer, status=202, headers=CORS)

    def launch_record(self, request: web.Request, launch_id: str, action: str) -> web.Response:
        """``GET /api/launches/<id>`` (its record) and ``.../events?after=N`` (its events),
        as the AWS mode's REST API answers them."""
        if not action:
            document = status_document(self.service.store, launch_id)
        else:
            document = events_document(self.service.store, self.service.events, launch_id,
                                       request.query.get("after", "0"))
        return web.json_response(document, headers=CORS)

    # ----- the event stream ------------------------------------------------------------

    def _launch_host(self, request: web.Request) -> str:
        if self.settings.public_url:
            return self.settings.public_url.rstrip("/") + "/"
        return f"{request.scheme}://{request.host}/"

    def _resume(self, request: web.Request, provider: str, spec: str) -> tuple[str, int] | None:
        # EventSource resends Last-Event-ID by itself; a page that opens a new EventSource
        # (a retry button) cannot set headers, so it may pass ?last_event_id= instead.
        last = request.headers.get("Last-Event-ID") or request.query.get("last_event_id", "")
        launch_id, _, seq = last.partition(":")
        if not launch_id or not seq.isdigit():
            return None
        launch = self.service.store.get_launch(launch_id)
        if launch is None or launch["provider"] != provider or launch["spec"] != spec:
            return None
        return launch_id, int(seq)

    async def build_stream(self, request: web.Request, path: str) -> web.StreamResponse:
        response = web.StreamResponse(headers={
            "Content-Type": "text/event-stream", "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no", **CORS,
        })
        await response.prepare(request)
        with contextlib.suppress(ConnectionResetError, asyncio.CancelledError):
            try:
                target = split_launch_path(path, "build")
            except BadLink as exc:
                await response.write(sse_frame(event_from_error(exc)))
                await self._linger(response)
                return response
            resumed = self._resume(request, target.provider, target.spec)
            if resumed is None:
                build_only = request.query.get("build_only", "").lower() == "true"
                launch_id = self.service.start(LaunchRequest(
                    provider=target.provider, spec=target.spec,
                    launch_host=self._launch_host(request),
                    client_ip=request.remote or "", build_only=build_only,
                    owner=self.accounts.owner(request),
                ))
                after = 0
            else:
                launch_id, after = resumed
                # Created through the REST API, or left by a gateway that died: drive it
                # here unless a live process does. Events the dead one had not stored
                # yet are gone: carry on after the last stored one.
                if await self.service.resume(launch_id):
                    after = min(after, self.service.events.last_seq(launch_id))
            async for item in self.service.events.follow(
                launch_id, after, tick=self.settings.keepalive_seconds
            ):
                if item is None:
                    await response.write(KEEPALIVE)
                    continue
                seq, event = item
                await response.write(sse_frame(event, f"{launch_id}:{seq}"))
            await self._linger(response)
        return response

    async def _linger(self, response: web.StreamResponse) -> None:
        """Hold the stream open after the final event so browsers do not reconnect into
        a second launch; keepalives find out when the client has gone."""
        loop = asyncio.get_running_loop()
        end = loop.time() + self.settings.final_linger_seconds
        while (left := end - loop.time()) > 0:
            await asyncio.sleep(min(left, self.settings.keepalive_seconds))
            await response.write(KEEPALIVE)

    # ----- lifecycle -------------------------------------------------------------------

    async def lifecycle(self, app: web.Application) -> AsyncIterator[None]:
        await self.service.open()
        self._culler = asyncio.create_task(self.service.run_culler())
        yield
        self._culler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._culler
        await self.proxy.close()
        await self.accounts.close()
        await self.service.close()


@web.middleware
async def no_tracebacks(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except (ConnectionResetError, asyncio.CancelledError):
        raise
    except Exception:
        log.exception("unhandled error for %s %s", request.method, request.path)
        return web.json_response(
            {"message": "Something went wrong inside binderless. Try again; if it keeps "
                        "failing, report it to the operators of this server."}, status=500)


def create_app(service: LaunchService, site_dir: Path = SITE_DIR) -> web.Application:
    server = BinderlessServer(service, site_dir)
    app = web.Application(middlewares=[no_tracebacks], client_max_size=1024**3)
    app[SERVICE_KEY] = service
    # [\s\S], not ".": a decoded %0A in a spec must still reach the dispatcher.
    app.router.add_route("*", r"/{tail:[\s\S]*}", server.dispatch)
    app.cleanup_ctx.append(server.lifecycle)
    return app
