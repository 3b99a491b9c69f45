"""Signing in and out, and a signed-in person's projects: thin handlers over ``identity``,
``oidc`` and ``projects``.

Routes (all same-origin: no CORS, and the cookie is ``SameSite=Lax``, so another site
can neither read these answers nor make a browser send the cookie with a POST):

- ``GET /auth/login?next=/path``: the local user's sign-in page, or a redirect to the
  OpenID Connect provider; ``POST /auth/login`` signs the local user in;
- ``GET /auth/callback``: the provider's redirect back (OpenID Connect only);
- ``POST|GET /auth/logout``: forget the sign-in;
- ``GET /api/me``: who is signed in, and how one signs in here;
- ``GET /api/projects``, ``POST /api/projects/<name>/stop``, ``DELETE /api/projects/<name>``;
- ``GET /projects``: the projects page.

Domain errors are raised to the server's one error mapping, except on the ``/auth/``
pages people land on in the browser, which answer with a short HTML page instead.
"""

from __future__ import annotations

import asyncio
import getpass
import hmac
import html
import logging
from pathlib import Path
from urllib.parse import unquote

import httpx
from aiohttp import web

from ..errors import AccessDenied, BadLink, BinderlessError, SignInFailed, SignInRequired
from ..identity import (
    IDENTITY_COOKIE,
    LOCAL_USER_ID,
    CookieSigner,
    Identity,
    load_or_create_secret,
)
from ..oidc import OidcClient, PendingSignIn
from ..origins import OriginPolicy
from ..projects import ProjectService
from ..redirects import safe_next
from ..service import LaunchService
from .pages import site_page

__all__ = ["Accounts"]

log = logging.getLogger("binderless.accounts")

PENDING_COOKIE = "binderless-signin"
PENDING_SECONDS = 600


def _redirect(location: str, status: int) -> web.Response:
    return web.Response(status=status, headers={"Location": location,
                                                "Cache-Control": "no-store"})


def _safe_next(value: str) -> str:
    """Only paths on this server: never another host (see ``redirects.safe_next``)."""
    return safe_next(value, "/projects")


class Accounts:
    def __init__(self, service: LaunchService, site_dir: Path, *,
                 signer: CookieSigner | None, oidc: OidcClient | None = None) -> None:
        self.service = service
        self.settings = service.settings
        self.site_dir = site_dir
        self.method = self.settings.sign_in_method
        self.policy = OriginPolicy.from_settings(self.settings)
        self.signer = signer
        self.oidc = oidc
        self.projects = ProjectService(service)

    @classmethod
    def from_service(cls, service: LaunchService, site_dir: Path) -> Accounts:
        """The accounts of a server with these settings (``ValueError`` when misconfigured)."""
        settings = service.settings
        method = settings.sign_in_method
        secret = settings.auth_secret.encode()
        if not secret and method != "off":
            secret = load_or_create_secret(settings.state_dir / "auth-secret")
        signer = CookieSigner(secret, clock=service.clock) if secret else None
        oidc = None
        if method == "oidc":
            oidc = OidcClient(settings.oidc_issuer, settings.oidc_client_id,
                              settings.oidc_client_secret, httpx.Client(timeout=10),
                              scopes=settings.oidc_scopes, clock=service.clock)
        return cls(service, site_dir, signer=signer, oidc=oidc)

    async def close(self) -> None:
        if self.oidc is not None:
            self.oidc.http.close()

    # ----- who is asking -----------------------------------------------------------------

    def identify(self, request: web.Request) -> Identity | None:
        cookie = request.cookies.get(IDENTITY_COOKIE, "")
        if not cookie or self.signer is None or self.method == "off":
            return None
        identity = self.signer.identity(cookie)
        if identity is not None and identity.via != self.method:
            return None  # signed in another way than this server now offers
        return identity

    def owner(self, request: web.Request) -> str:
        """The user id launches of this request belong to ("" for anonymous)."""
        identity = self.identify(request)
        return identity.user_id if identity else ""

    def _require(self, request: web.Request) -> Identity:
        identity = self.identify(request)
        if identity is None:
            raise SignInRequired("Sign in to see your projects.",
                                 hint="Open /auth/login to sign in.")
        return identity

    def _same_origin(self, request: web.Request) -> bool:
        """Whether a state-changing request comes from this server's own pages (or from no
        page at all: the command line)."""
        return self.policy.page_origin(request.headers, request.scheme, request.host) is None

    def _secure(self, request: web.Request) -> bool:
        return request.scheme == "https" or self.settings.public_url.startswith("https://")

    def _base(self, request: web.Request) -> str:
        if self.settings.public_url:
            return self.settings.public_url.rstrip("/")
        return f"{request.scheme}://{request.host}"

    # ----- dispatch ----------------------------------------------------------------------

    @staticmethod
    def handles(path: str) -> bool:
        return path.startswith(("/auth/", "/api/projects/")) or path in (
            "/api/me", "/api/projects", "/projects", "/projects/")

    async def handle(self, request: web.Request, path: str) -> web.StreamResponse:
        if path.startswith("/auth/"):
            try:
                return await self._auth(request, path)
            except BinderlessError as exc:
                log.info("sign-in failed: %s", exc.message)
                return self._auth_error(exc)
        if request.method not in ("GET", "HEAD") and not self._same_origin(request):
            raise AccessDenied("This request came from another site.")
        if path == "/api/me":
            return self.me(request)
        if path in ("/projects", "/projects/"):
            return site_page(self.site_dir / "projects.html")  # branded (pages.py)
        return await self._projects_api(request, path)

    # ----- /auth/ ------------------------------------------------------------------------

    async def _auth(self, request: web.Request, path: str) -> web.StreamResponse:
        action = path[len("/auth/"):]
        if action == "logout" and request.method in ("GET", "POST"):
            if request.method == "POST" and not self._same_origin(request):
                raise AccessDenied("This request came from another site.")
            response = _redirect("/", 303)
            response.del_cookie(IDENTITY_COOKIE, path="/")
            return response
        if self.method == "off":
            raise SignInRequired("Signing in is not available on this server.",
                                 hint="Launches here are anonymous; download your work "
                                      "before your session ends.")
        if action == "login" and request.method in ("GET", "HEAD"):
            next_path = _safe_next(request.query.get("next", ""))
            if self.oidc is not None:
                return await self._oidc_start(request, next_path)
            return self._local_page(next_path)
        if action == "login" and request.method == "POST" and self.method == "local":
            if not self._same_origin(request):
                raise AccessDenied("This sign-in came from another site.")
            try:
                form = await request.post()
            except (ValueError, AssertionError) as exc:  # a form no browser sends
                raise BadLink("This sign-in form could not be read.",
                              hint="Sign in from the sign-in page.") from exc
            return self._signed_in(request, self._local_identity(),
                                   _safe_next(str(form.get("next", ""))))
        if action == "callback" and request.method == "GET" and self.oidc is not None:
            return await self._oidc_finish(request)
        raise BadLink("There is no such sign-in page.")

    def _local_identity(self) -> Identity:
        name = self.settings.local_user_name
        if not name:
            try:
                name = getpass.getuser()
            except (KeyError, OSError):
                name = "you"
        return Identity(user_id=LOCAL_USER_ID, name=name, via="local")

    def _local_page(self, next_path: str) -> web.Response:
        page = (self.site_dir / "signin.html").read_text()
        page = page.replace("{{user}}", html.escape(self._local_identity().name))
        page = page.replace("{{next}}", html.escape(next_path, quote=True))
        return web.Response(text=page, content_type="text/html",
                            headers={"Cache-Control": "no-store"})

    def _signed_in(self, request: web.Request, identity: Identity,
                   next_path: str) -> web.StreamResponse:
        assert self.signer is not None
        response = _redirect(next_path, 303)
        max_age = self.settings.auth_cookie_seconds
        response.set_cookie(IDENTITY_COOKIE, self.signer.identity_cookie(identity, max_age),
                            max_age=int(max_age), path="/", httponly=True, samesite="Lax",
                            secure=self._secure(request))
        log.info("signed in: %s (%s)", identity.user_id, identity.via)
        return response

    async def _oidc_start(self, request: web.Request, next_path: str) -> web.StreamResponse:
        assert self.oidc is not None and self.signer is not None
        pending = PendingSignIn.new(next_path)
        target = await asyncio.to_thread(self.oidc.authorization_url,
                                         f"{self._base(request)}/auth/callback", pending)
        response = _redirect(target, 302)
        response.set_cookie(PENDING_COOKIE, self.signer.sign("signin", {
            "state": pending.state, "nonce": pending.nonce, "verifier": pending.verifier,
            "next": next_path}, PENDING_SECONDS), max_age=PENDING_SECONDS, path="/auth/",
            httponly=True, samesite="Lax", secure=self._secure(request))
        return response

    async def _oidc_finish(self, request: web.Request) -> web.StreamResponse:
        assert self.oidc is not None and self.signer is not None
        if request.query.get("error"):
            raise SignInFailed(
                "The sign-in provider did not sign you in: "
                + (request.query.get("error_description") or request.query["error"]) + ".")
        data = self.signer.verify("signin", request.cookies.get(PENDING_COOKIE, ""))
        state = request.query.get("state", "")
        if data is None or not hmac.compare_digest(str(data.get("state", "")), state):
            raise SignInFailed("This sign-in expired or was started elsewhere.",
                               hint="Sign in again.")
        code = request.query.get("code", "")
        if not code:
            raise SignInFailed("The sign-in provider sent no code.", hint="Sign in again.")
        pending = PendingSignIn(str(data["state"]), str(data.get("nonce", "")),
                                str(data.get("verifier", "")), _safe_next(str(data.get("next"))))
        redirect_uri = f"{self._base(request)}/auth/callback"
        token = await asyncio.to_thread(self.oidc.redeem, code, redirect_uri, pending)
        identity = await asyncio.to_thread(self.oidc.identity, token, pending.nonce)
        response = self._signed_in(request, identity, pending.next_path)
        response.del_cookie(PENDING_COOKIE, path="/auth/")
        return response

    def _auth_error(self, error: BinderlessError) -> web.Response:
        message = html.escape(error.message)
        hint = f"<p>{html.escape(error.hint)}</p>" if error.hint else ""
        page = ("<!doctype html><html lang='en'><head><meta charset='utf-8'>"
                "<meta name='viewport' content='width=device-width, initial-scale=1'>"
                "<title>Sign-in problem</title>"
                "<link rel='stylesheet' href='/assets/css/binderless.css'></head><body><main>"
                f"<h1>Sign-in problem</h1><p>{message}</p>{hint}"
                "<p><a href='/projects'>Your projects</a> · <a href='/'>Home</a></p>"
                "</main></body></html>")
        return web.Response(text=page, status=error.status_code, content_type="text/html",
                            headers={"Cache-Control": "no-store"})

    # ----- /api/ -------------------------------------------------------------------------

    def me(self, request: web.Request) -> web.Response:
        identity = self.identify(request)
        return web.json_response({
            "sign_in": self.method,
            "signed_in": identity is not None,
            "user": identity.to_json() if identity else None,
            "workspaces": self.projects.enabled,
            "login_url": "/auth/login" if self.method != "off" else None,
            "logout_url": "/auth/logout",
        }, headers={"Cache-Control": "no-store"})

    async def _projects_api(self, request: web.Request, path: str) -> web.Response:
        user = self._require(request)
        parts = path.split("/")  # "", "api", "projects", <name>, <action>
        if len(parts) == 3 and request.method in ("GET", "HEAD"):
            return web.json_response(await self.projects.listing(user),
                                     headers={"Cache-Control": "no-store"})
        name = unquote(parts[3]) if len(parts) > 3 else ""
        if len(parts) == 4 and request.method == "DELETE":
            await self.projects.delete(user, name)
            return web.json_response({"deleted": name})
        if len(parts) == 5 and parts[4] == "stop" and request.method == "POST":
            return web.json_response({"stopped": await self.projects.stop(user, name)})
        return web.json_response({"message": "Not found.", "status_code": 404}, status=404)
