"""A signed-in user's projects page: list, stop, delete (the hosts' one entry point).

Projects are folders (``workspaces.py``); whether one runs comes from the store's
sessions of that owner and repository. Nothing here ever touches another user's home:
every call takes the signed-in ``Identity`` and looks only under its user id.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from .backends.protocols import SessionRecord
from .errors import ProjectNotFound
from .identity import Identity
from .redirects import session_url
from .service import LaunchService
from .workspaces import Project, Workspaces

__all__ = ["ProjectService"]

#: Seconds a project's size is reused: the projects page asks every few seconds, and
#: walking a large folder (on EFS, many metadata calls) each time would be wasteful.
SIZE_TTL = 30.0


class ProjectService:
    def __init__(self, service: LaunchService) -> None:
        self.service = service
        self._sizes: dict[Path, tuple[float, int]] = {}

    @property
    def enabled(self) -> bool:
        return self.service.workspaces is not None

    @property
    def workspaces(self) -> Workspaces:
        if self.service.workspaces is None:
            raise ProjectNotFound("This server keeps no files for signed-in users.",
                                  hint="Its operators have not set up persistent workspaces.")
        return self.service.workspaces

    def running(self, user: Identity, repo_url: str | None = None) -> list[SessionRecord]:
        """The user's sessions that run (or start), newest first; of one repository."""
        found = [r for r in self.service.store.sessions("starting", "running")
                 if r.owner == user.user_id and (repo_url is None or r.repo_url == repo_url)]
        return sorted(found, key=lambda r: -r.created_at)

    async def listing(self, user: Identity) -> dict[str, Any]:
        workspaces = self.workspaces
        projects = await asyncio.to_thread(workspaces.projects, user.user_id)
        sessions = await asyncio.to_thread(self.running, user)
        items = [await self._describe(project, sessions) for project in projects]
        return {"user": user.to_json(), "limit": workspaces.max_projects, "projects": items}

    async def _describe(self, project: Project, sessions: list[SessionRecord]) -> dict[str, Any]:
        mine = [s for s in sessions if s.repo_url == project.repo_url]
        live = [s for s in mine if s.status == "running"]
        size = await self._size(project)
        last_used = max([project.last_used, *(self.service.last_activity(s) for s in mine)])
        item = {**project.to_json(), "size": size, "last_used": last_used,
                "state": "running" if live else "starting" if mine else "stopped",
                "updates": bool(project.latest_ref and project.latest_ref != project.seeded_ref)}
        if live:
            newest = live[0]
            # Inside the session only (``redirects.session_url``), where its link opened.
            # On the sessions' own origin when there is one (settings.session_url).
            origin = self.service.settings.session_url.rstrip("/")
            item["open_url"] = session_url(f"{origin}/user/{newest.session_id}/",
                                           project.open_path or "lab", newest.token)
        return item

    async def _size(self, project: Project) -> int:
        now = time.monotonic()
        cached = self._sizes.get(project.path)
        if cached is not None and now - cached[0] < SIZE_TTL:
            return cached[1]
        size = await asyncio.to_thread(self.workspaces.size, project)
        self._sizes[project.path] = (now, size)
        return size

    async def stop(self, user: Identity, name: str) -> list[str]:
        """Stop every session of the project; its files stay."""
        project = await asyncio.to_thread(self.workspaces.get, user.user_id, name)
        stopped = []
        for record in await asyncio.to_thread(self.running, user, project.repo_url):
            await self.service.stop_session(record.session_id, reason="stopped by its owner")
            stopped.append(record.session_id)
        return stopped

    async def delete(self, user: Identity, name: str) -> None:
        """Stop the project's sessions, then remove its folder (only that folder)."""
        await self.stop(user, name)
        project = await asyncio.to_thread(self.workspaces.get, user.user_id, name)
        await asyncio.to_thread(self.workspaces.delete, user.user_id, name)
        self._sizes.pop(project.path, None)
