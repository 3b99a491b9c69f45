"""``/environments`` and ``/api/environments``: the catalogue in the browser.

Routes (same-origin only: no CORS, and a page of another site is refused outright, since
the listing names repositories and the actions remove things):

- ``GET /environments``: the page (``site/environments.html``);
- ``GET /api/environments``: environments (uv folders and, with a docker builder, its
  images), git mirrors and saved checkouts, with totals, and the uv cache (``cache``);
- ``DELETE /api/environments/<key>``: remove one (409 when it is in use);
- ``POST /api/environments/prune``: ``{"older_than": "30d", "budget": "10G",
  "what": "environments" | "mirrors" | "checkouts", "dry_run": false}``.

Who may: on a personal server (one only this machine reaches, without OpenID Connect)
its one person; on a shared server, signed-in users listed in ``operators``.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from aiohttp import web

from ..catalogue import LocalCatalogues, local_catalogues, parse_age, parse_size
from ..errors import AccessDenied, BadLink, SignInRequired
from ..origins import OriginPolicy
from ..service import LaunchService
from .accounts import Accounts
from .pages import site_page

__all__ = ["EnvironmentsApi"]

NO_STORE = {"Cache-Control": "no-store"}


class EnvironmentsApi:
    def __init__(self, service: LaunchService, accounts: Accounts, site_dir: Path) -> None:
        self.service = service
        self.settings = service.settings
        self.accounts = accounts
        self.site_dir = site_dir
        self.policy = OriginPolicy.from_settings(service.settings)
        self._catalogues: LocalCatalogues | None = None

    @staticmethod
    def handles(path: str) -> bool:
        return path in ("/environments", "/environments/", "/api/environments") or \
            path.startswith("/api/environments/")

    def catalogues(self) -> LocalCatalogues:
        if self.settings.mode != "local":
            raise BadLink("On AWS the catalogue is kept with the command line.",
                          hint="Run binderless environments list with BINDERLESS_MODE=aws "
                               "and the deployment's settings.")
        if self._catalogues is None:
            self._catalogues = local_catalogues(self.settings.state_dir, self.service.store,
                                                clock=self.service.clock,
                                                builder=self.service.builder)
        return self._catalogues

    def _check(self, request: web.Request) -> None:
        """Only this server's own pages (or no page: scripts), and only its operators."""
        if self.policy.page_origin(request.headers, request.scheme, request.host) is not None:
            raise AccessDenied("The environment catalogue answers only this server's pages.")
        if not self.settings.shared:
            return  # a personal server: whoever reaches it is its one person
        identity = self.accounts.identify(request)
        if identity is None:
            raise SignInRequired("Sign in as an operator to see the environments.",
                                 hint="Open /auth/login to sign in.")
        if identity.user_id not in self.settings.operators:
            raise AccessDenied("Only this server's operators may see its environments.",
                               hint=f"An operator can add your user id ({identity.user_id}) "
                                    "to BINDERLESS_OPERATORS.")

    async def handle(self, request: web.Request, path: str) -> web.StreamResponse:
        self._check(request)
        if path in ("/environments", "/environments/"):
            if request.method not in ("GET", "HEAD"):
                return _method_not_allowed("GET")
            return site_page(self.site_dir / "environments.html")  # branded (pages.py)
        if path == "/api/environments":
            if request.method not in ("GET", "HEAD"):
                return _method_not_allowed("GET")
            return web.json_response(await asyncio.to_thread(self.listing), headers=NO_STORE)
        if path == "/api/environments/prune":
            if request.method != "POST":
                return _method_not_allowed("POST")
            options = await self._options(request)
            report = await asyncio.to_thread(self.prune, options)
            return web.json_response(report, headers=NO_STORE)
        key = path[len("/api/environments/"):]
        if request.method != "DELETE" or "/" in key or not key:
            return web.json_response({"message": "Not found.", "status_code": 404},
                                     status=404, headers=NO_STORE)
        report = await asyncio.to_thread(self.prune, {"keys": (key,)})
        status = 200 if report["removed"] else 409
        if status == 409:
            report["message"] = f"{key} is in use: {report['kept'][0]['reason']}."
        return web.json_response(report, status=status, headers=NO_STORE)

    def listing(self) -> dict[str, Any]:
        found = self.catalogues()
        environments = [e.to_json() for e in found.environments.list()]
        mirrors = [c.to_json() for c in found.mirrors.list()]
        checkouts = [c.to_json() for c in found.checkouts.list()]
        cache = found.cache.entry().to_json() if found.cache is not None else None
        return {
            "environments": environments,
            "environments_bytes": sum(e["size_bytes"] for e in environments),
            "budget_bytes": self.settings.environment_budget_bytes,
            "mirrors": mirrors, "mirrors_bytes": sum(c["size_bytes"] for c in mirrors),
            "checkouts": checkouts,
            "checkouts_bytes": sum(c["size_bytes"] for c in checkouts),
            # The builder's download cache: not an environment, but within the budget.
            "cache": cache,
        }

    def prune(self, options: dict[str, Any]) -> dict[str, Any]:
        found = self.catalogues()
        what = options.pop("what", "environments")
        if what == "environments":
            return found.environments.prune(**options).to_json()
        if what in ("mirrors", "checkouts"):
            cache = found.mirrors if what == "mirrors" else found.checkouts
            return cache.prune(**options).to_json()
        raise BadLink(f"There is nothing called {what!r} to prune.",
                      hint="Prune environments, mirrors or checkouts.")

    async def _options(self, request: web.Request) -> dict[str, Any]:
        raw = await request.read()
        try:
            body = json.loads(raw or b"{}")
        except (ValueError, RecursionError) as exc:
            raise BadLink("The prune request is not JSON.") from exc
        if not isinstance(body, dict):
            raise BadLink("The prune request must be a JSON object.")
        options: dict[str, Any] = {"what": str(body.get("what") or "environments"),
                                   "dry_run": bool(body.get("dry_run"))}
        if body.get("older_than"):
            options["older_than"] = parse_age(str(body["older_than"]))
        if body.get("budget") not in (None, ""):
            options["budget"] = parse_size(str(body["budget"]))
        keys = body.get("keys") or []
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
            raise BadLink("keys must be a list of environment keys.")
        options["keys"] = tuple(keys)
        if not (options["keys"] or "older_than" in options or "budget" in options):
            raise BadLink("Say what to prune: keys, older_than or budget.")
        return options


def _method_not_allowed(allow: str) -> web.Response:
    return web.json_response({"message": "Method not allowed.", "status_code": 405},
                             status=405, headers={**NO_STORE, "Allow": allow})
