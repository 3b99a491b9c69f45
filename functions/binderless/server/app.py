"""The aiohttp application: thin handlers that parse a request and call the service.

Routing happens on the raw, undecoded path, so ``%2F`` inside a spec survives to
the provider (thebe, Jupyter Book and GitLab links depend on it).
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import json
import logging
import mimetypes
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from ..api import (
    Check,
    health_document,
    metrics_text,
    repoproviders_document,
    versions_document,
)
from ..branding import LOGO_PATH, Branding
from ..errors import AccessDenied, BadLink, BinderlessError, QuotaExceeded, SessionNotFound
from ..estimate import launch_estimate
from ..events import KEEPALIVE, event_from_error, sse_frame
from ..launchbudget import LaunchBudget, client_address
from ..launches import (
    RecentKeys,
    events_document,
    idempotency_key,
    launch_document,
    launch_request,
    status_document,
)
from ..links import legacy_redirect, split_launch_path
from ..origins import OriginPolicy, names_local_path
from ..resolve import resolve_query
from ..service import LaunchRequest, LaunchService
from .accounts import Accounts
from .environments import EnvironmentsApi
from .fastpath import FAST_PATH_KEY, SessionFastPath
from .health import StoreWatch
from .pages import RestorePages, brand_pages, message_page, wants_page
from .proxy import SessionProxy
from .session_tools import SessionTools
from .webhooks import PrebuildRoute

__all__ = ["SITE_DIR", "create_app"]

log = logging.getLogger("binderless.server")

SITE_DIR = Path(__file__).resolve().parents[3] / "site"
SERVICE_KEY = web.AppKey("service", LaunchService)
CORS = {"Access-Control-Allow-Origin": "*"}
#: How long the gateway (AWS mode) keeps a session's route before reading it again.
ROUTE_TTL_SECONDS = 5.0
#: The longest path to open a launch remembers for a signed-in person's project.
MAX_OPEN_PATH = 1024
#: Launch ids are uuid4 hex; anything else names no launch.
LAUNCH_ID_RE = re.compile(r"[0-9a-f]{32}")
POLICY_KEY = web.AppKey("origin_policy", OriginPolicy)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_response(error: BinderlessError, cors: dict[str, str] | None = None) -> web.Response:
    """The one mapping from a domain error to an HTTP answer (outside the event stream);
    ``cors``: the CORS headers of the page that asked (default: readable by any)."""
    return web.json_response(
        {"message": error.user_message(), "status_code": error.status_code},
        status=error.status_code, headers=CORS if cors is None else cors,
    )


def cross_site_refusal(origin: str, *, local_path: bool = False) -> AccessDenied:
    """Why a page of another site may not do this, and what the operator can change."""
    if local_path:
        return AccessDenied(
            "Local folders and file:// URLs launch only from this server's own pages, "
            f"not from a page of {origin}.",
            hint="Open the launch link in the browser's address bar, or use the command "
                 "line (binderless launch).")
    return AccessDenied(
        f"This server does not let pages of {origin} launch or use sessions.",
        hint="Its operator can allow that origin with --allow-origin (the default allows "
             "none where sessions run as the server's own user).")


class BinderlessServer:
    def __init__(self, service: LaunchService, site_dir: Path) -> None:
        self.service = service
        self.settings = service.settings
        self.policy = OriginPolicy.from_settings(service.settings)
        self.site_dir = site_dir.resolve()
        self.accounts = Accounts.from_service(service, self.site_dir)
        self.environments = EnvironmentsApi(service, self.accounts, self.site_dir)
        self.branding = Branding.from_settings(self.settings)  # branding.py
        self.restore_pages = RestorePages(service)  # restore.py: ended sessions' changes
        # Launches per client address, in this process (launchbudget.py; 0: no budget).
        self.launch_budget = LaunchBudget(self.settings.launch_budget_per_ip)
        # Routes are kept briefly where each lookup is a DynamoDB read (the AWS mode).
        self.proxy = SessionProxy(service.routes.lookup, service.record_activity,
                                  identify=self.accounts.owner, tools=SessionTools(service),
                                  # A session origin of its own never receives the
                                  # sign-in cookie: there the token alone opens a session.
                                  check_owner=not self.settings.session_url,
                                  route_ttl=ROUTE_TTL_SECONDS if self.settings.mode == "aws"
                                  else 0.0,
                                  lookup_in_thread=self.settings.mode == "aws",
                                  max_upload_bytes=self.settings.max_upload_bytes,
                                  ping_seconds=self.settings.websocket_ping_seconds)
        self._culler: asyncio.Task[None] | None = None
        self._launch_keys = RecentKeys()
        self.prebuilds = PrebuildRoute(service, self._launch_host)  # POST /api/prebuild
        self.store_watch = StoreWatch(service.store.count_active,
                                      interval=self.settings.store_probe_seconds,
                                      grace=self.settings.store_outage_grace_seconds)
        self._store_probe: asyncio.Task[None] | None = None

    # ----- dispatch ----------------------------------------------------------------------

    def page_origin(self, request: web.Request) -> str | None:
        """The origin of another site's page that sent ``request`` (``None``: ours, or none)."""
        return self.policy.page_origin(request.headers, request.scheme, request.host)

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        path = request.raw_path.split("?", 1)[0]
        origin = self.page_origin(request)
        try:
            if path.startswith("/user/"):
                if origin is not None and not self.policy.origin_allowed(origin):
                    raise cross_site_refusal(origin)
                session_id = path.split("/")[2]
                try:
                    return await self.proxy.handle(request, session_id)
                except SessionNotFound:
                    if not wants_page(request):
                        raise
                    return await self.session_gone_page(session_id, request)
            if self.environments.handles(path):
                return await self.environments.handle(request, path)
            if self.accounts.handles(path):
                return await self.accounts.handle(request, path)
            if request.method == "OPTIONS":
                return web.Response(status=204, headers={
                    **self.policy.cors_headers(origin),
                    "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
                    "Access-Control-Allow-Headers": "*"})
            if path == "/api/prebuild":
                return await self.prebuilds.handle(request)
            if self.restore_pages.handles(path):  # POST /api/restores/<id>/share
                return await self.restore_pages.share(request, path)
            if path == "/api/launches":
                return await self.create_launch(request, origin)
            if path.startswith("/api/launches/"):
                return await self.launch_api(request, path, origin)
            if request.method not in ("GET", "HEAD"):
                return web.json_response({"message": "Method not allowed."}, status=405)
            if path.startswith("/build/"):
                if request.method != "GET":
                    return web.Response(status=405, headers={**CORS, "Allow": "GET"})
                return await self.build_stream(request, path, origin)
            if path.startswith("/v2/"):
                page = self.loading_page(path)
                self.restore_pages.remember(request, page)
                return page
            if path == "/api/restores":
                return await self.restore_pages.api(request)
            if path.startswith(LOGO_PATH) and self.branding.logo_file is not None and \
                    path == self.branding.logo_src:
                return web.FileResponse(self.branding.logo_file,
                                        headers={"Cache-Control": "no-cache"})
            if path.startswith("/repo/"):
                raise web.HTTPFound(legacy_redirect(path))
            simple: dict[str, Callable[[], web.StreamResponse]] = {
                "/versions": self.versions, "/health": self.health, "/ready": self.ready,
                "/api/repoproviders": self.repoproviders, "/metrics": self.metrics,
                # The home page's form: what a typed or pasted address launches (parsing
                # only; a relative folder is taken from where the server was started).
                "/api/resolve": lambda: web.json_response(resolve_query(
                    request.query, self.service.providers, server=self._launch_host(request),
                    cwd=str(Path.cwd())), headers=self.policy.cors_headers(origin)),
            }
            if path in simple:
                return simple[path]()
            return self.static(path)
        except BinderlessError as exc:
            return error_response(exc, self.policy.cors_headers(origin))

    # ----- pages -----------------------------------------------------------------------

    def static(self, path: str) -> web.StreamResponse:
        rel = "index.html" if path in ("/", "") else path.lstrip("/")
        try:
            target = (self.site_dir / rel).resolve()
            if target.is_dir():
                target = target / "index.html"
            found = target.is_relative_to(self.site_dir) and target.is_file()
        except (OSError, ValueError):  # a name too long for the file system, a NUL byte
            found = False
        if not found:
            return message_page("Nothing here", ["There is nothing at this address."],
                                [("Launch a repository", "/")], status=404)
        ctype = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        if ctype.startswith("text/") or ctype in ("image/svg+xml", "application/json"):
            # The site's files are UTF-8; a page without its own charset (the session
            # banner's script inside a Jupyter page) must not read them as Latin-1.
            ctype += "; charset=utf-8"
        headers = {"Cache-Control": "no-cache"}
        if target.suffix == ".html" and self.branding.active:
            return web.Response(text=self.branding.apply(target.read_text()),
                                headers={**headers, "Content-Type": ctype})
        if target.suffix == ".svg":
            headers.update(CORS)
        return web.FileResponse(target, headers={**headers, "Content-Type": ctype})

    async def session_gone_page(self, session_id: str,
                                request: web.Request) -> web.Response:
        """What a person sees at a session's address once it has stopped: why, and a button
        that launches the same link again (a new session, from the start)."""
        def find() -> tuple[str, str]:
            try:
                record = self.service.store.get_session(session_id)
            except BinderlessError:
                return "", ""
            launch = self.service.store.get_launch(record.launch_id) or {}
            link = f"/v2/{launch['provider']}/{launch['spec']}" if launch.get("provider") else ""
            return record.stop_reason or "", link

        reason, link = ("", "") if not re.fullmatch(r"[0-9a-f]{1,64}", session_id) else \
            await asyncio.to_thread(find)
        if reason and (offer := await self.restore_pages.stopped_page(
                request, session_id, reason, link)) is not None:
            return offer  # this browser's changes are kept: "Start again with your changes"
        actions = ([("Launch it again", link)] if link else []) + [("Home", "/")]
        if not link and not reason:
            return message_page("No session here", [
                "There is no session at this address. It may have ended long ago, or the "
                "link is mistyped."], [("Launch a repository", "/")], status=404)
        why = {"idle": "it was idle for too long", "maximum age reached": "it reached its time "
               "limit", "server stopped": "the server it ran on stopped"}.get(reason, "")
        return message_page("This session has stopped", [
            "This session is not running any more" + (f": {why}." if why else "."),
            "Files you changed in it are gone unless you downloaded them or saved them in a "
            "project (signed-in people keep their projects). Launching again starts a new "
            "session from the repository."], actions, status=404)

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
        page = self.branding.apply(page.replace("{{og_title}}", html.escape(title)))
        return web.Response(text=page, content_type="text/html",
                            headers={"Cache-Control": "no-cache"})

    def versions(self) -> web.Response:
        return web.json_response(versions_document(self.settings), headers=CORS)

    def health(self) -> web.Response:
        """Liveness: this process serves (answering at all shows its event loop runs) and
        has its pages. The store's state is reported, never waited for (``health.py``)."""
        checks: list[Check] = [
            {"service": "process", "ok": True},
            {"service": "site", "ok": (self.site_dir / "loading.html").is_file()}]
        document, status = health_document(checks)
        document["store"] = self.store_watch.report()
        return web.json_response(document, status=status, headers=CORS)

    def ready(self) -> web.Response:
        """Readiness: the store answered within its grace period, and the pages are here."""
        checks: list[Check] = [
            self.store_watch.report(),
            {"service": "site", "ok": (self.site_dir / "loading.html").is_file()}]
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

    async def launch_api(self, request: web.Request, path: str,
                         origin: str | None) -> web.Response:
        """What the loading page asks about the launch it follows (the id comes from the
        stream's event ids): ``GET /api/launches/<id>/estimate``, ``POST .../cancel``."""
        cors = self.policy.cors_headers(origin)
        parts = path.split("/")  # "", "api", "launches", <id>, <action>
        action = parts[4] if len(parts) == 5 else "" if len(parts) == 4 else "-"
        methods = {"estimate": ("GET", "HEAD"), "cancel": ("POST",), "": ("GET", "HEAD"),
                   "events": ("GET", "HEAD")}.get(action)
        if methods is None or not LAUNCH_ID_RE.fullmatch(parts[3]):
            return web.json_response({"message": "Not found.", "status_code": 404},
                                     status=404, headers=cors)
        if request.method not in methods:
            return web.json_response({"message": "Method not allowed.", "status_code": 405},
                                     status=405, headers={**cors, "Allow": ", ".join(methods)})
        if origin is not None and not self.policy.origin_allowed(origin):
            raise cross_site_refusal(origin)
        launch_id = parts[3]
        if action in ("", "events"):
            return self.launch_record(request, launch_id, action, cors)
        if action == "cancel":
            cancelled = self.service.cancel(launch_id)
            return web.json_response({"launch_id": launch_id, "cancelled": cancelled},
                                     status=202, headers=cors)
        estimate = await asyncio.to_thread(
            launch_estimate, self.service.store, launch_id, self.service.clock())
        return web.json_response(estimate, headers={**cors, "Cache-Control": "no-store"})

    async def create_launch(self, request: web.Request, origin: str | None) -> web.Response:
        """``POST /api/launches``: start a launch, answer with where to follow it (see
        ``launches.py``); the same ``Idempotency-Key`` gives the same launch back."""
        cors = self.policy.cors_headers(origin)
        if request.method != "POST":
            return web.json_response({"message": "Method not allowed.", "status_code": 405},
                                     status=405, headers={**cors, "Allow": "POST"})
        if origin is not None and not self.policy.origin_allowed(origin):
            raise cross_site_refusal(origin)
        key = idempotency_key(request.headers)
        if key and (earlier := self._launch_keys.get(key)) is not None:
            return web.json_response(earlier, status=202, headers=cors)
        body = await self._json_body(request)
        launch = launch_request(body, registry=self.service.providers,
                                launch_host=self._launch_host(request),
                                client_ip=self._client_ip(request))
        if origin is not None and names_local_path(launch.provider, launch.spec):
            raise cross_site_refusal(origin, local_path=True)
        over = self._over_budget(request)
        if over is not None:
            raise over
        answer = launch_document(self.service.start(launch), launch)
        if key:
            self._launch_keys.put(key, answer)
        return web.json_response(answer, status=202, headers=cors)

    async def _json_body(self, request: web.Request) -> object:
        """The request's JSON body, at most ``max_body_bytes``; ``None`` when it is no JSON
        (``launch_request`` says what it needs)."""
        if (request.content_length or 0) > self.settings.max_body_bytes:
            raise web.HTTPRequestEntityTooLarge(
                max_size=self.settings.max_body_bytes, actual_size=request.content_length or 0,
                text=json.dumps({"message": "The request body is too large: at most "
                                 f"{self.settings.max_body_bytes} bytes.", "status_code": 413}),
                content_type="application/json")
        raw = await request.read()  # a chunked body past client_max_size: 413
        try:
            return json.loads(raw)
        except (ValueError, RecursionError):  # not JSON, or nested deeper than Python reads
            return None

    def launch_record(self, request: web.Request, launch_id: str, action: str,
                      cors: dict[str, str]) -> web.Response:
        """``GET /api/launches/<id>`` (its record) and ``.../events?after=N`` (its events),
        as the AWS mode's REST API answers them."""
        if not action:
            document = status_document(self.service.store, launch_id)
        else:
            document = events_document(self.service.store, self.service.events, launch_id,
                                       request.query.get("after", "0"))
        return web.json_response(document, headers=cors)

    # ----- the event stream ------------------------------------------------------------

    def _client_ip(self, request: web.Request) -> str:
        """The launching client's address (behind trusted proxies: the one they saw)."""
        return client_address(request.remote or "", request.headers.get("X-Forwarded-For", ""),
                              self.settings.trusted_proxy_hops)

    def _over_budget(self, request: web.Request) -> QuotaExceeded | None:
        """A refusal when this client address has used its launch budget, else None."""
        wait = self.launch_budget.take(self._client_ip(request))
        if not wait:
            return None
        return QuotaExceeded("Too many launches from your address.",
                             hint=f"Try again in {max(1, round(wait))} seconds.")

    def _launch_host(self, request: web.Request) -> str:
        if self.settings.public_url:
            return self.settings.public_url.rstrip("/") + "/"
        return f"{request.scheme}://{request.host}/"

    def _resume(self, request: web.Request, provider: str, spec: str) -> tuple[str, int] | None:
        # EventSource resends Last-Event-ID by itself; a page that opens a new EventSource
        # (a retry button) cannot set headers, so it may pass ?last_event_id= instead.
        last = request.headers.get("Last-Event-ID") or request.query.get("last_event_id", "")
        launch_id, _, seq = last.partition(":")
        # An id we never gave out (a forged or mangled header) starts a new launch.
        if not LAUNCH_ID_RE.fullmatch(launch_id) or not (
                seq.isascii() and seq.isdigit() and len(seq) <= 12):
            return None
        launch = self.service.store.get_launch(launch_id)
        if launch is None or launch["provider"] != provider or launch["spec"] != spec:
            return None
        return launch_id, int(seq)

    async def build_stream(self, request: web.Request, path: str,
                           origin: str | None) -> web.StreamResponse:
        response = web.StreamResponse(headers={
            "Content-Type": "text/event-stream", "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no", **self.policy.cors_headers(origin),
        })
        await response.prepare(request)
        with contextlib.suppress(ConnectionResetError, asyncio.CancelledError):
            try:
                target = split_launch_path(path, "build")
                if origin is not None and not self.policy.origin_allowed(origin):
                    raise cross_site_refusal(origin)
                if origin is not None and names_local_path(target.provider, target.spec):
                    raise cross_site_refusal(origin, local_path=True)
            except BinderlessError as exc:
                # Refused pages get no CORS header: they cannot even read why.
                await response.write(sse_frame(event_from_error(exc)))
                await self._linger(response)
                return response
            resumed = self._resume(request, target.provider, target.spec)
            over = self._over_budget(request) if resumed is None else None
            if over is not None:
                await response.write(sse_frame(event_from_error(over)))
                await self._linger(response)
                return response
            if resumed is None:
                build_only = request.query.get("build_only", "").lower() == "true"
                launch_id = self.service.start(LaunchRequest(
                    provider=target.provider, spec=target.spec,
                    launch_host=self._launch_host(request),
                    client_ip=self._client_ip(request), build_only=build_only,
                    owner=self.accounts.owner(request),
                    open_path=request.query.get("urlpath", "")[:MAX_OPEN_PATH],
                    **self.restore_pages.launch_fields(request),
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
        await self.store_watch.check_once()
        self._store_probe = asyncio.create_task(self.store_watch.run())
        self._culler = asyncio.create_task(self.service.run_culler())
        yield
        for task in (self._culler, self._store_probe):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
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


#: Errors a client causes (a malformed request, a connection it dropped): normal traffic
#: for a server on the internet, worth one quiet line, never an ERROR with a traceback.
CLIENT_FAULTS: tuple[type[BaseException], ...] = (
    HttpProcessingError, ConnectionResetError, ConnectionAbortedError, BrokenPipeError,
    aiohttp.ClientConnectionResetError)


class QuietClientFaults(logging.Filter):
    """Turns aiohttp's tracebacks for client faults into one INFO line each."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, CLIENT_FAULTS):
            reason = getattr(error, "message", "") or str(error) or type(error).__name__
            record.msg, record.args = "client error: %s", (reason.splitlines()[0][:200],)
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.exc_info = record.exc_text = None
        return True


def quiet_client_faults() -> None:
    """Install ``QuietClientFaults`` on aiohttp's server logger (once)."""
    server_log = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, QuietClientFaults) for f in server_log.filters):
        server_log.addFilter(QuietClientFaults())


@web.middleware
async def known_hosts(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer only requests naming this server (DNS rebinding: see ``origins.py``)."""
    policy = request.app[POLICY_KEY]
    if not policy.host_allowed(request.headers.get("Host")):
        name = request.headers.get("Host", "")[:100]
        log.info("refused a request for host %r", name)
        return web.json_response({
            "message": f"This server does not answer for the host name {name!r}. If people "
                       "reach it under that name, its operator can add it with --allowed-host "
                       "(or set --public-url).", "status_code": 403}, status=403)
    return await handler(request)


def create_app(service: LaunchService, site_dir: Path = SITE_DIR) -> web.Application:
    quiet_client_faults()
    server = BinderlessServer(service, site_dir)
    # Bodies binderless reads itself are small; the session proxy streams (and limits)
    # its own.
    app = web.Application(middlewares=[known_hosts, no_tracebacks,
                                       brand_pages(server.branding)],  # pages.py
                          client_max_size=service.settings.max_body_bytes)
    app[SERVICE_KEY] = service
    app[POLICY_KEY] = server.policy
    # Plain requests to sessions, served before the middlewares (start_listener).
    app[FAST_PATH_KEY] = SessionFastPath(server.policy, server.proxy)
    # [\s\S], not ".": a decoded %0A in a spec must still reach the dispatcher.
    app.router.add_route("*", r"/{tail:[\s\S]*}", server.dispatch)
    app.cleanup_ctx.append(server.lifecycle)
    return app
