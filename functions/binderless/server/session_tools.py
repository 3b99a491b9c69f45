"""binderless's own corner of each session's address space: ``/user/<id>/.binderless/``.

The proxy hands these requests here after its checks (owner, token), before they would
count as activity, so that the banner polling its countdown never keeps a session alive:

- ``GET status``: time left before the session is stopped for idleness and for age, and
  whether its files are kept (a signed-in user's project) or not;
- ``POST keepalive``: the "keep me running" button, counted as use;
- ``GET download``: the session's files as a zip, read through Jupyter's contents API
  (so it works wherever the server runs: a local process, a container, a Fargate task).

It also decides which Jupyter pages get the countdown banner (``session-banner.js``
from the site folder) and puts its ``<script>`` tag in them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import tempfile
import zipfile
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote

import aiohttp
from aiohttp import web

from ..backends.protocols import Route
from ..errors import TooLarge
from ..service import LaunchService

__all__ = ["PREFIX", "SessionTools", "inject_banner", "wants_banner"]

log = logging.getLogger("binderless.session_tools")

PREFIX = ".binderless/"
#: The Jupyter pages (first path segment after the base URL) that get the banner.
BANNER_PAGES = frozenset({"lab", "tree", "notebooks", "doc", "edit", "consoles", "terminals"})
BANNER_SCRIPT = "/assets/js/session-banner.js"
MAX_PAGE_BYTES = 5 * 1024 * 1024
MAX_FILES = 20000
_HEAD_END = re.compile(rb"</head\s*>", re.IGNORECASE)


def wants_banner(request: web.Request, rest: str) -> bool:
    """Whether the page at ``rest`` (the path after ``/user/<id>/``) is a Jupyter page a
    person looks at. Files a user serves (``files/...``) are never changed."""
    first = rest.split("?", 1)[0].split("/", 1)[0]
    return request.method == "GET" and first in BANNER_PAGES


def inject_banner(page: bytes, session_id: str) -> bytes:
    tag = (f'<script src="{BANNER_SCRIPT}" defer data-binderless-session="{session_id}">'
           "</script>").encode()
    match = _HEAD_END.search(page)
    if match is None:
        return page + tag
    return page[:match.start()] + tag + page[match.start():]


class SessionTools:
    def __init__(self, service: LaunchService) -> None:
        self.service = service
        self.settings = service.settings
        self._client: aiohttp.ClientSession | None = None

    @property
    def client(self) -> aiohttp.ClientSession:
        if self._client is None:
            self._client = aiohttp.ClientSession(
                cookie_jar=aiohttp.DummyCookieJar(),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=60))
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()

    async def handle(self, request: web.Request, route: Route, rest: str) -> web.StreamResponse:
        action = rest[len(PREFIX):].split("?", 1)[0]
        if action == "status" and request.method in ("GET", "HEAD"):
            return web.json_response(await self.status(route.session_id),
                                     headers={"Cache-Control": "no-store"})
        if action == "keepalive" and request.method == "POST":
            await asyncio.to_thread(self.service.keep_alive, route.session_id)
            return web.json_response(await self.status(route.session_id),
                                     headers={"Cache-Control": "no-store"})
        if action == "download" and request.method == "GET":
            return await self.download(request, route)
        return web.json_response({"message": "There is nothing at this address."}, status=404)

    async def status(self, session_id: str) -> dict[str, Any]:
        record = await asyncio.to_thread(self.service.store.get_session, session_id)
        now = self.service.clock()
        idle_left = self.settings.cull_idle_seconds - (now - self.service.last_activity(record))
        age_left = self.settings.max_age_seconds - (now - record.created_at)
        project = None
        workspaces = self.service.workspaces
        if record.owner and workspaces is not None:
            found = await asyncio.to_thread(workspaces.find, record.owner, record.repo_url)
            project = found.name if found else None
        return {
            "session_id": session_id,
            "running": record.status == "running",
            "signed_in": bool(record.owner),
            "persistent": project is not None,
            "project": project,
            "idle_seconds_left": max(0.0, round(idle_left, 1)),
            "age_seconds_left": max(0.0, round(age_left, 1)),
            "warning_seconds": self.settings.cull_warning_seconds,
            "download_url": f"/user/{session_id}/{PREFIX}download",
            "projects_url": "/projects" if record.owner else None,
        }

    # ----- download ----------------------------------------------------------------------

    async def download(self, request: web.Request, route: Route) -> web.StreamResponse:
        base = f"{route.target}/user/{route.session_id}/"
        fd, name = tempfile.mkstemp(prefix=f"binderless-{route.session_id}-", suffix=".zip")
        os.close(fd)
        archive = Path(name)
        try:
            try:
                await self._zip(base, route.token, archive)
            except (aiohttp.ClientError, TimeoutError) as exc:
                log.info("download of session %s failed: %s", route.session_id, exc)
                return web.json_response(
                    {"message": "The session's server stopped answering while its files were "
                                "collected. Try again."}, status=502)
            response = web.StreamResponse(headers={
                "Content-Type": "application/zip", "Cache-Control": "no-store",
                "Content-Disposition":
                    f'attachment; filename="binderless-{route.session_id}.zip"'})
            response.content_length = archive.stat().st_size
            await response.prepare(request)
            with open(archive, "rb") as source:
                while chunk := await asyncio.to_thread(source.read, 1 << 20):
                    await response.write(chunk)
            await response.write_eof()
            return response
        finally:
            with contextlib.suppress(OSError):
                archive.unlink()

    async def _zip(self, base: str, token: str, archive: Path) -> None:
        """Every file Jupyter lists under the server's root, into ``archive``."""
        headers = {"Authorization": f"token {token}"}
        limit = self.settings.download_max_bytes
        total = files = 0
        zf = await asyncio.to_thread(zipfile.ZipFile, archive, "w", zipfile.ZIP_DEFLATED)
        try:
            folders = [""]
            while folders:
                folder = folders.pop()
                url = f"{base}api/contents/{quote(folder)}?content=1"
                async with self.client.get(url, headers=headers) as answer:
                    answer.raise_for_status()
                    listing = await answer.json()
                for entry in listing.get("content") or []:
                    path = str(entry.get("path", ""))
                    if entry.get("type") == "directory":
                        folders.append(path)
                        continue
                    files += 1
                    if files > MAX_FILES:
                        raise TooLarge(f"The session has more than {MAX_FILES} files, too many "
                                       "to download at once.",
                                       hint="Download folders one by one from JupyterLab.")
                    total = await self._add(zf, f"{base}files/{quote(path)}", headers, path,
                                            total, limit)
        finally:
            await asyncio.to_thread(zf.close)

    async def _add(self, zf: zipfile.ZipFile, url: str, headers: dict[str, str], path: str,
                   total: int, limit: int) -> int:
        async with self.client.get(url, headers=headers) as answer:
            if answer.status == 404:
                return total  # deleted while we were listing
            answer.raise_for_status()
            target: IO[bytes] = await asyncio.to_thread(zf.open, path, "w", force_zip64=True)
            try:
                async for chunk in answer.content.iter_chunked(1 << 20):
                    total += len(chunk)
                    if total > limit:
                        raise TooLarge(
                            f"The session's files are larger than {limit // (1024 * 1024)} MB, "
                            "more than this server hands out in one download.",
                            hint="Download the files you need one by one from JupyterLab.")
                    await asyncio.to_thread(target.write, chunk)
            finally:
                await asyncio.to_thread(target.close)
        return total
