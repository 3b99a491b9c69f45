"""Short HTML pages for people who land somewhere a launch page does not cover: a session
that has stopped, an address with nothing at it. API clients keep getting JSON; a browser
(``Accept: text/html``) gets a page that says what happened and offers what helps.
Every value is escaped. Also the HTTP side of restoring an ended session (``RestorePages``).

Every HTML page the server makes itself wears the operator's branding (``branding.py``):
``brand_pages`` brands, as they leave, the pages ``message_page`` and ``site_page`` make
(marked ``OWN_PAGE``, wherever they are answered, the session proxy's refusals included)
and any other HTML answer outside ``/user/`` (the sign-in pages). What a session's own
server sends is never touched."""

from __future__ import annotations

import asyncio
import html
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path

from aiohttp import web
from aiohttp.typedefs import Middleware

from ..branding import Branding
from ..errors import AccessDenied, BinderlessError
from ..identity import CookieSigner, load_or_create_secret
from ..origins import OriginPolicy
from ..restore import (
    RESTORE_ARG_RE,
    RESTORE_ID_RE,
    VISITOR_COOKIE,
    RestoreShelf,
    SavedWork,
    Visitors,
)
from ..service import LaunchService

__all__ = ["OWN_PAGE", "STOP_WORDS", "RestorePages", "brand_pages", "message_page",
           "site_page", "wants_page"]

#: Set on a response that is one of this server's own HTML pages (see the module's doc).
OWN_PAGE = web.ResponseKey("binderless_own_page", bool)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def wants_page(request: web.Request) -> bool:
    """Whether a person's browser asked (a page load), not a script or an API client."""
    return request.method in ("GET", "HEAD") and "text/html" in request.headers.get("Accept", "")


def own_page(text: str, *, status: int = 200,
             headers: Mapping[str, str] | None = None) -> web.Response:
    """An HTML answer that ``brand_pages`` brands."""
    response = web.Response(text=text, status=status, content_type="text/html",
                            headers={"Cache-Control": "no-store", **(headers or {})})
    response[OWN_PAGE] = True
    return response


def site_page(path: Path, *, status: int = 200) -> web.Response:
    """One of the site's HTML pages (``site/*.html``), as its own page (branded)."""
    return own_page(path.read_text(encoding="utf-8"), status=status,
                    headers={"Cache-Control": "no-cache"})


def message_page(title: str, paragraphs: list[str], actions: list[tuple[str, str]], *,
                 status: int, forms: list[tuple[str, str]] | None = None,
                 body_html: str = "") -> web.Response:
    """A page with a heading, paragraphs and links styled as buttons (the first is the main
    one); ``actions`` are (label, href) pairs, hrefs on this server; ``forms`` are
    (label, action) pairs of buttons that POST to this server; ``body_html`` (already
    escaped by the caller) comes after the paragraphs."""
    body = "".join(f"<p>{html.escape(p)}</p>" for p in paragraphs) + body_html
    buttons = "".join(
        f'<a class="button{" primary" if i == 0 else ""}" href="{html.escape(href, quote=True)}">'
        f"{html.escape(label)}</a>" for i, (label, href) in enumerate(actions))
    buttons += "".join(
        f'<form method="post" action="{html.escape(action, quote=True)}">'
        f'<button type="submit" class="button">{html.escape(label)}</button></form>'
        for label, action in forms or [])
    page = (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{html.escape(title)} | binderless</title>"
        "<link rel='icon' href='/favicon.svg' type='image/svg+xml'>"
        "<link rel='stylesheet' href='/assets/css/binderless.css'></head><body>"
        # The brand link as the site's pages write it, so that branding finds it.
        '<header class="site-header"><div class="inner"><a class="brand" href="/">'
        "<img src='/favicon.svg' alt='' width='28' height='28'>binderless</a></div></header>"
        "<main id='main' tabindex='-1'><section class='card'>"
        f"<h1>{html.escape(title)}</h1>{body}<div class='actions'>{buttons}</div>"
        "</section></main></body></html>")
    return own_page(page, status=status)


def brand_pages(branding: Branding) -> Middleware:
    """A middleware that puts ``branding`` on the server's own HTML pages as they leave
    (see the module's doc); ``Branding.apply`` leaves a page it branded already as is."""
    @web.middleware
    async def brand(request: web.Request, handler: Handler) -> web.StreamResponse:
        response = await handler(request)
        if branding.active and isinstance(response, web.Response) and \
                response.content_type == "text/html" and \
                isinstance(response.body, bytes) and \
                (response.get(OWN_PAGE) or not request.path.startswith("/user/")):
            response.text = branding.apply(response.text or "")
        return response

    return brand


# ----- bringing back an ended anonymous session (restore.py) -----------------------------

def _when(stamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(stamp))


class RestorePages:
    """The HTTP side of ``restore.py``: the visitor cookie, ``GET /api/restores`` (the
    offers for this browser: ``?launch=v2/<provider>/<spec>`` or ``?session=<id>``) and
    the offer on a stopped session's page. Only the browser that owned a session is ever
    told about its saved changes; other browsers get an empty list."""

    def __init__(self, service: LaunchService) -> None:
        self.service = service
        self.shelf: RestoreShelf | None = service.restores
        self.visitors: Visitors | None = None
        self.policy = OriginPolicy.from_settings(service.settings)
        if self.shelf is not None:
            settings = service.settings
            secret = settings.auth_secret.encode() or load_or_create_secret(
                settings.state_dir / "auth-secret")
            self.visitors = Visitors(CookieSigner(secret, clock=service.clock),
                                     max_age=(settings.restore_days + 30) * 86400)

    def visitor(self, request: web.Request) -> str:
        """This browser's visitor id ("" for none, or when nothing is kept here)."""
        return self.visitors.read(request.cookies) if self.visitors is not None else ""

    def remember(self, request: web.Request, response: web.StreamResponse) -> None:
        """Give a browser without one a visitor cookie (the loading page does this), so
        that its sessions' changes can be kept for it."""
        if self.visitors is None or self.visitor(request):
            return
        _visitor, value = self.visitors.issue()
        response.set_cookie(VISITOR_COOKIE, value, max_age=int(self.visitors.max_age),
                            path="/", httponly=True, samesite="Lax",
                            secure=request.scheme == "https")

    def launch_fields(self, request: web.Request) -> dict[str, str]:
        """What an event-stream request adds to its ``LaunchRequest``: the visitor, and
        the saved changes it asks to put back (``?restore=``)."""
        restore = request.query.get("restore", "")
        return {"visitor": self.visitor(request),
                "restore": restore if RESTORE_ARG_RE.fullmatch(restore) else ""}

    def offers(self, request: web.Request, *, launch: str = "",
               session_id: str = "") -> list[SavedWork]:
        visitor = self.visitor(request)
        if self.shelf is None or not visitor:
            return []
        return self.shelf.offers(visitor, launch=launch, session_id=session_id)

    async def api(self, request: web.Request) -> web.Response:
        """``GET /api/restores``: this browser's offers, as JSON (same origin only: no
        CORS header, and the cookie is ``SameSite=Lax``)."""
        launch = request.query.get("launch", "")[:2048]
        session_id = request.query.get("session", "")[:64]
        found = await asyncio.to_thread(self.offers, request, launch=launch,
                                        session_id=session_id) if (launch or session_id) else []
        return web.json_response({"restores": [w.offer() for w in found],
                                  # whether this browser's sessions' changes are kept
                                  "saves": bool(self.visitor(request)),
                                  "restore_days": self.service.settings.restore_days},
                                 headers={"Cache-Control": "no-store"})

    async def stopped_page(self, request: web.Request, session_id: str, reason: str,
                           link: str) -> web.Response | None:
        """The stopped session's page with "Start again with your changes", when this
        browser owned the session and its changes are kept; ``None`` otherwise."""
        found = await asyncio.to_thread(self.offers, request, session_id=session_id)
        if not found:
            return None
        work = found[0]
        count = len(work.files)
        actions = [("Start again with your changes", work.restore_link)]
        if link:
            actions.append(("Start from the repository", link))
        return message_page("This session has stopped", [
            "This session is not running any more"
            + (f": {STOP_WORDS[reason]}." if reason in STOP_WORDS else "."),
            f"The {count} file{'s' if count != 1 else ''} you created or changed in it "
            f"{'are' if count != 1 else 'is'} kept until {_when(work.expires_at)}, for this "
            "browser only. Start again with your changes to open a new session of the same "
            "commit with them put back, or make a link that lets someone else do so."],
            actions, status=404,
            forms=[("Share these changes", share_path(work.restore_id))])

    # ----- sharing on purpose ---------------------------------------------------------

    def handles(self, path: str) -> bool:
        """Whether ``path`` is one of the share routes (``POST /api/restores/<id>/share``)."""
        return path.startswith(SHARE_PREFIX)

    async def share(self, request: web.Request, path: str) -> web.Response:
        """``POST /api/restores/<id>/share``: a new share link of the saved changes, for
        the browser that owns them, from this server's pages or a script (never another
        site's page). JSON ``{"link", "expires_at"}``; a form's POST gets a page with it."""
        page = "text/html" in request.headers.get("Accept", "")
        try:
            restore_id = path[len(SHARE_PREFIX):].removesuffix("/share")
            if request.method != "POST" or not path.endswith("/share"):
                return web.json_response({"message": "Not found.", "status_code": 404},
                                         status=404)
            if self.policy.page_origin(request.headers, request.scheme,
                                       request.host) is not None:
                raise AccessDenied("Only this server's own pages can share saved changes.")
            if self.shelf is None or not RESTORE_ID_RE.fullmatch(restore_id):
                raise AccessDenied("There are no such saved changes to share.")
            work, link = await asyncio.to_thread(self.shelf.share, restore_id,
                                                 self.visitor(request))
        except BinderlessError as exc:
            if page:
                return message_page("These changes cannot be shared", [exc.user_message()],
                                    [("Home", "/")], status=exc.status_code)
            return web.json_response({"message": exc.user_message(),
                                      "status_code": exc.status_code},
                                     status=exc.status_code,
                                     headers={"Cache-Control": "no-store"})
        absolute = self._host(request) + link.lstrip("/")
        if not page:
            return web.json_response({"link": absolute, "expires_at": work.expires_at},
                                     headers={"Cache-Control": "no-store"})
        field = html.escape(absolute, quote=True)
        return message_page("A link to your changes", [
            "Anyone who opens this link can start a session of the same commit with the "
            f"files you changed, until {_when(work.expires_at)}; after that the changes are "
            "deleted and the link stops working. Share it only with people you mean to."],
            [("Start again with your changes", work.restore_link), ("Home", "/")],
            status=200, body_html=(
                '<p><label for="share-link">Share link</label>'
                f'<input id="share-link" class="share-link" type="text" readonly '
                f'value="{field}" style="width:100%"></p>'))

    def _host(self, request: web.Request) -> str:
        """Where links to this server point (its public URL, else the request's host)."""
        public = self.service.settings.public_url
        return public.rstrip("/") + "/" if public else f"{request.scheme}://{request.host}/"


#: Where the share routes live (``/api/restores/<id>/share``).
SHARE_PREFIX = "/api/restores/"


def share_path(restore_id: str) -> str:
    """The address that makes a share link of the saved changes ``restore_id``."""
    return f"{SHARE_PREFIX}{restore_id}/share"


#: Why a session stopped, in words for its page.
STOP_WORDS = {"idle": "it was idle for too long", "maximum age reached": "it reached its time "
              "limit", "server stopped": "the server it ran on stopped",
              "server process ended": "its Jupyter server was shut down"}
