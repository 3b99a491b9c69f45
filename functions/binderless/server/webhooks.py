"""``POST /api/prebuild`` on the local server (and the AWS session gateway): a thin edge
around ``binderless.prebuild``: read the body within its cap, check, resolve, start."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from aiohttp import web

from ..backends.protocols import Deliveries
from ..errors import BinderlessError
from ..prebuild import (
    NothingToBuild,
    WebhookRefused,
    accepted_document,
    authenticate,
    body_too_large,
    check_request,
    ignored_document,
    too_large,
)
from ..service import LaunchService

__all__ = ["PrebuildRoute"]

log = logging.getLogger("binderless.prebuild")

CHUNK = 64 * 1024


class PrebuildRoute:
    """Answers ``POST /api/prebuild``; ``launch_host(request)`` is where links point."""

    def __init__(self, service: LaunchService,
                 launch_host: Callable[[web.Request], str]) -> None:
        self.service = service
        self.settings = service.settings
        self.launch_host = launch_host

    async def handle(self, request: web.Request) -> web.Response:
        if request.method != "POST":
            return web.json_response({"message": "Method not allowed.", "status_code": 405},
                                     status=405, headers={"Allow": "POST"})
        try:
            return await self._prebuild(request)
        except NothingToBuild as reason:
            return web.json_response(ignored_document(reason))
        except BinderlessError as exc:
            log.info("prebuild refused (%s): %s", exc.status_code, exc.message)
            return web.json_response(
                {"message": exc.user_message(), "status_code": exc.status_code},
                status=exc.status_code)

    async def _prebuild(self, request: web.Request) -> web.Response:
        if not self.settings.webhook_secret:
            authenticate(request.headers, b"", "")  # off: says so before reading anything
        body = await self._read(request)
        launch = await asyncio.to_thread(
            check_request, request.headers, body, settings=self.settings,
            registry=self.service.providers, deliveries=self._deliveries(),
            launch_host=self.launch_host(request), client_ip=request.remote or "",
            now=self.service.clock())
        # Resolved here, so that a ref that does not exist is the caller's 404 now rather
        # than a failed build nobody watches; the launch resolves it again (cached).
        repo = await asyncio.to_thread(self.service.providers.resolve, launch.provider,
                                       launch.spec)
        launch_id = self.service.prebuild(launch)
        log.info("prebuild of %s/%s at %s: launch %s", launch.provider, launch.spec,
                 repo.resolved_ref[:12], launch_id)
        return web.json_response(accepted_document(launch_id, launch, repo.resolved_ref),
                                 status=202)

    def _deliveries(self) -> Deliveries:
        store = self.service.store
        if not isinstance(store, Deliveries):  # SQLite and DynamoDB both remember them
            raise WebhookRefused("This server's store cannot remember webhook deliveries, "
                                 "so it takes none.", status_code=501)
        return store

    async def _read(self, request: web.Request) -> bytes:
        """The body, refused (413) once it passes ``webhook_max_bytes``: at once when its
        length says so, else as soon as that many bytes have come (never all of it)."""
        refusal = too_large(request.content_length, self.settings)
        if refusal is not None:
            raise refusal
        body = bytearray()
        while chunk := await request.content.read(CHUNK):
            body += chunk
            if len(body) > self.settings.webhook_max_bytes:
                raise body_too_large(self.settings)
        return bytes(body)
