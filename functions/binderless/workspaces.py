"""Persistent homes: each signed-in user's project folders, kept across sessions.

A user's home is ``<root>/<user id>/``: a folder under the state dir locally, the root
directory of the user's EFS access point on AWS (the gateway mounts the file system's
home root at ``root``). Each repository the user launches becomes one project folder in
that home, named after the repository, seeded with the repository's files on the first
launch and never written by binderless again: a later launch of a newer commit reports
what changed upstream and leaves the user's copy alone.

What binderless knows about a project lives beside it, in
``<home>/.binderless/projects/<name>.json``: the repository, the link it came from, the
commit it was seeded from with a hash of each file then (to tell upstream changes from
the user's own edits), and when it was last used. Every write is a whole file written
to a temporary name and renamed, and a project folder appears by one rename of a fully
copied folder, so a crash never leaves half a project or half a record. Deleting renames
the folder into ``.binderless/trash/`` first, so it vanishes from the home at once.

Modes keep homes apart when sessions run under uids of their own (``uids.py``): a home
is the server's, mode 0711 (a session passes through to its project, lists nothing);
``.binderless`` is the server's alone (0700), so a session cannot rewrite the records
the server trusts; each project folder is 0700, handed to its user's uid when a session
starts. Nobody else can read a project folder even before that.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from .errors import ProjectNotFound, QuotaExceeded
from .identity import valid_user_id

__all__ = ["Changes", "Opened", "Project", "Workspaces", "project_name_for"]

log = logging.getLogger("binderless.workspaces")

META_DIR = ".binderless"
#: Project names: folder names a person can read, never hidden, never a path.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,79}")
#: How many file names a change summary lists per kind before "and N more".
SUMMARY_NAMES = 5


def project_name_for(repo_url: str) -> str:
    """A folder name for a repository: its last path segment, made safe."""
    parts = urlsplit(repo_url)
    segments = [s for s in unquote(parts.path).split("/") if s]
    base = segments[-1] if segments else parts.netloc
    base = re.sub(r"\.git$", "", base)
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", base).strip("-._")
    return base[:60] or "project"


def _digest(path: Path) -> str:
    if path.is_symlink():
        return "link:" + os.readlink(path)
    sha = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            sha.update(chunk)
    return sha.hexdigest()


def manifest(root: Path) -> dict[str, str]:
    """Relative path -> content hash of every file under ``root`` (``.git`` left out)."""
    found: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d != ".git" or Path(dirpath) != root)
        for name in filenames:
            path = Path(dirpath) / name
            with contextlib.suppress(OSError):
                found[path.relative_to(root).as_posix()] = _digest(path)
        for name in dirnames:
            path = Path(dirpath) / name
            if path.is_symlink():
                found[path.relative_to(root).as_posix()] = _digest(path)
    return found


def folder_size(root: Path) -> int:
    """Bytes of the files under ``root`` (links counted as links, never followed)."""
    total = 0
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            with contextlib.suppress(OSError):
                total += (Path(dirpath) / name).lstat().st_size
    return total


@dataclass(frozen=True)
class Project:
    """One project folder of one user, as its record describes it."""

    name: str
    path: Path
    repo_url: str
    launch_path: str
    seeded_ref: str
    latest_ref: str
    created_at: float
    last_used: float
    #: The path inside a session its last launch opened (``lab/tree/x.ipynb``), or "".
    open_path: str = ""

    def to_json(self) -> dict[str, Any]:
        launch_url = "/" + self.launch_path
        if self.open_path:
            launch_url += "?urlpath=" + quote(self.open_path, safe="/")
        return {"name": self.name, "repo_url": self.repo_url, "open_path": self.open_path,
                "launch_url": launch_url, "seeded_ref": self.seeded_ref,
                "latest_ref": self.latest_ref, "created_at": self.created_at,
                "last_used": self.last_used}


@dataclass(frozen=True)
class Changes:
    """How the repository differs from the commit a project was seeded from."""

    old_ref: str
    new_ref: str
    changed: tuple[str, ...] = ()
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    #: Of the changed and removed files, those the user has edited (or deleted) since.
    edited: tuple[str, ...] = ()

    @property
    def any(self) -> bool:
        return bool(self.changed or self.added or self.removed)

    def summary(self) -> str:
        def names(kind: str, paths: tuple[str, ...]) -> str:
            shown = ", ".join(paths[:SUMMARY_NAMES])
            more = f" and {len(paths) - SUMMARY_NAMES} more" if len(paths) > SUMMARY_NAMES else ""
            return f"{len(paths)} {kind} ({shown}{more})"

        head = (f"Your copy is from {self.old_ref[:12]}; the repository is now at "
                f"{self.new_ref[:12]}.")
        if not self.any:
            return head + " No file changed in between.\n"
        parts = [names(kind, paths) for kind, paths in
                 (("changed", self.changed), ("added", self.added), ("removed", self.removed))
                 if paths]
        lines = [head, "Changed upstream since your copy: " + "; ".join(parts) + "."]
        if self.edited:
            shown = ", ".join(self.edited[:SUMMARY_NAMES])
            more = (f" and {len(self.edited) - SUMMARY_NAMES} more"
                    if len(self.edited) > SUMMARY_NAMES else "")
            lines.append(f"You have edited {len(self.edited)} of them yourself: {shown}{more}.")
        lines.append("Your files were left as they are; none of these changes was copied in.")
        return " ".join(lines) + "\n"


@dataclass(frozen=True)
class Opened:
    """The result of opening a project for a launch."""

    project: Project
    seeded: bool
    changes: Changes | None = None

    def messages(self) -> list[str]:
        project = self.project
        if self.seeded:
            return [f"Created your project folder '{project.name}' from {project.repo_url} at "
                    f"{project.seeded_ref[:12]}. Your changes to it are kept between "
                    "sessions.\n"]
        first = f"Opening your project folder '{project.name}', kept from your earlier sessions.\n"
        return [first] + ([self.changes.summary()] if self.changes is not None else [])


class Workspaces:
    """The homes under ``root``, one per user id, each with at most ``max_projects``."""

    def __init__(self, root: Path, *, max_projects: int = 10,
                 clock: Callable[[], float] = time.time) -> None:
        if max_projects <= 0:
            raise ValueError("max_projects must be positive")
        self.root = root
        self.max_projects = max_projects
        self.clock = clock

    # ----- layout ------------------------------------------------------------------------

    def home(self, user_id: str) -> Path:
        if not valid_user_id(user_id):
            raise ValueError(f"not a valid user id: {user_id!r}")
        return self.root / user_id

    def _meta(self, user_id: str) -> Path:
        return self.home(user_id) / META_DIR

    def _record_path(self, user_id: str, name: str) -> Path:
        return self._meta(user_id) / "projects" / f"{name}.json"

    # ----- records -----------------------------------------------------------------------

    def _records(self, user_id: str) -> list[dict[str, Any]]:
        folder = self._meta(user_id) / "projects"
        records = []
        for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
            try:
                data = json.loads(path.read_text())
            except (OSError, ValueError):
                log.warning("skipping unreadable project record %s", path)
                continue
            if isinstance(data, dict) and data.get("name") == path.stem:
                records.append(data)
        return records

    def _ensure_home(self, user_id: str) -> Path:
        """The user's home, made with the modes the module docstring describes."""
        home = self.home(user_id)
        meta = self._meta(user_id)
        meta.mkdir(parents=True, exist_ok=True)
        os.chmod(home, 0o711)
        os.chmod(meta, 0o700)
        return home

    def _write_record(self, user_id: str, data: dict[str, Any]) -> None:
        path = self._record_path(user_id, str(data["name"]))
        self._ensure_home(user_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
        os.replace(tmp, path)

    def _project(self, user_id: str, data: dict[str, Any]) -> Project:
        name = str(data["name"])
        return Project(
            name=name, path=self.home(user_id) / name, repo_url=str(data["repo_url"]),
            launch_path=str(data.get("launch_path", "")),
            seeded_ref=str(data.get("seeded_ref", "")),
            latest_ref=str(data.get("latest_ref") or data.get("seeded_ref", "")),
            created_at=float(data.get("created_at", 0.0)),
            last_used=float(data.get("last_used", 0.0)),
            open_path=str(data.get("open_path", "")))

    # ----- queries -----------------------------------------------------------------------

    def projects(self, user_id: str) -> list[Project]:
        """The user's projects whose folder exists, most recently used first."""
        found = [self._project(user_id, data) for data in self._records(user_id)]
        return sorted((p for p in found if p.path.is_dir()), key=lambda p: -p.last_used)

    def find(self, user_id: str, repo_url: str) -> Project | None:
        return next((p for p in self.projects(user_id) if p.repo_url == repo_url), None)

    def get(self, user_id: str, name: str) -> Project:
        """Raises ``ProjectNotFound`` (also for names that could never be projects)."""
        if _NAME.fullmatch(name):
            for project in self.projects(user_id):
                if project.name == name:
                    return project
        raise ProjectNotFound(f"You have no project named {name!r}.",
                              hint="Your projects page lists the ones you have.")

    def size(self, project: Project) -> int:
        return folder_size(project.path)

    def check_room(self, user_id: str, repo_url: str) -> None:
        """Raise ``QuotaExceeded`` when launching ``repo_url`` would need a project
        the user has no room for."""
        projects = self.projects(user_id)
        if any(p.repo_url == repo_url for p in projects):
            return
        if len(projects) >= self.max_projects:
            raise QuotaExceeded(
                f"You have {len(projects)} projects, the most this server keeps for one person.",
                hint="Delete one you no longer need on your projects page (/projects), "
                     "then launch again.")

    # ----- changes -----------------------------------------------------------------------

    def open(self, user_id: str, *, repo_url: str, resolved_ref: str, launch_path: str,
             checkout: Path, open_path: str = "") -> Opened:
        """The user's project of ``repo_url``, created from ``checkout`` if it is new.

        An existing project's files are never touched; its record notes the newer commit
        and the changes are described (``Opened.changes``)."""
        self.check_room(user_id, repo_url)
        home = self._ensure_home(user_id)
        now = self.clock()
        for data in self._records(user_id):
            if data.get("repo_url") != repo_url:
                continue
            project = self._project(user_id, data)
            if not project.path.is_dir():
                break  # the record outlived a seed that never finished: seed again
            changes = None
            if resolved_ref and resolved_ref != project.seeded_ref:
                changes = self._changes(project, data.get("files") or {}, checkout, resolved_ref)
            data.update(last_used=now, latest_ref=resolved_ref or project.latest_ref)
            if open_path:
                data["open_path"] = open_path
            self._write_record(user_id, data)
            return Opened(self._project(user_id, data), seeded=False, changes=changes)
        else:
            data = {"name": self._free_name(user_id, repo_url), "repo_url": repo_url,
                    "created_at": now}
        files = manifest(checkout)
        data.update(launch_path=launch_path, seeded_ref=resolved_ref, latest_ref=resolved_ref,
                    last_used=now, files=files, open_path=open_path)
        # The record first: a crash before the folder exists leaves a record the next
        # launch seeds again; a folder without a record would be a stranger in the home.
        self._write_record(user_id, data)
        target = home / str(data["name"])
        staging = self._meta(user_id) / "staging" / f"{data['name']}-{secrets.token_hex(4)}"
        staging.parent.mkdir(parents=True, exist_ok=True)
        try:
            shutil.copytree(checkout, staging, symlinks=True)
            os.chmod(staging, 0o700)  # its owner's alone (see the module docstring)
            try:
                staging.rename(target)
            except OSError:
                if not target.is_dir():
                    raise
                # Another launch of the same project seeded it first: theirs stands.
                return Opened(self._project(user_id, data), seeded=False)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return Opened(self._project(user_id, data), seeded=True)

    def _free_name(self, user_id: str, repo_url: str) -> str:
        home = self.home(user_id)
        taken = {str(d.get("name")) for d in self._records(user_id)}
        base = project_name_for(repo_url)
        candidates = [base, f"{base}-{hashlib.sha256(repo_url.encode()).hexdigest()[:6]}"]
        candidates += [f"{base}-{i}" for i in range(2, 1000)]
        for name in candidates:
            if name not in taken and not (home / name).exists() and _NAME.fullmatch(name):
                return name
        raise QuotaExceeded("No free folder name is left for this project.",
                            hint="Delete projects you no longer need.")

    def _changes(self, project: Project, seeded: dict[str, str], checkout: Path,
                 new_ref: str) -> Changes:
        upstream = manifest(checkout)
        changed = sorted(p for p in upstream if p in seeded and upstream[p] != seeded[p])
        added = sorted(p for p in upstream if p not in seeded)
        removed = sorted(p for p in seeded if p not in upstream)
        edited = []
        for rel in (*changed, *removed):
            mine = project.path / rel
            try:
                if _digest(mine) != seeded[rel]:
                    edited.append(rel)
            except OSError:
                edited.append(rel)  # deleted by the user
        return Changes(project.seeded_ref, new_ref, tuple(changed), tuple(added),
                       tuple(removed), tuple(sorted(edited)))

    # ----- use and removal ---------------------------------------------------------------

    def delete(self, user_id: str, name: str) -> None:
        """Remove one project: its folder and its record, nothing else of the home."""
        project = self.get(user_id, name)
        trash = self._meta(user_id) / "trash" / f"{name}-{secrets.token_hex(4)}"
        trash.parent.mkdir(parents=True, exist_ok=True)
        project.path.rename(trash)  # gone from the home in one step
        self._record_path(user_id, name).unlink(missing_ok=True)
        self.empty_trash(user_id)

    def empty_trash(self, user_id: str) -> None:
        for leftover in _children(self._meta(user_id) / "trash"):
            shutil.rmtree(leftover, ignore_errors=True)


def _children(folder: Path) -> Iterable[Path]:
    return list(folder.iterdir()) if folder.is_dir() else []
