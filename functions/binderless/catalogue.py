"""The environment catalogue: every built environment, what used it, and pruning.

An entry joins two views: what the builder's storage holds (a uv folder under
``<state>/envs/``, an image in ECR: its key, size and age) and what the store remembers
(``EnvironmentUsage``: when it was built and from which files, how often and when it was
last launched, and by which repositories and refs). Pruning removes environments by age,
down to a size budget (least recently launched first), or one by one.

**The rule that keeps a launch's environment.** A prune never removes an environment that
something uses, and decides that in one atomic step with marking it (``begin_prune``, a
SQLite ``BEGIN IMMEDIATE`` transaction, a DynamoDB conditional write):

- a session starting or running with that ``image_key`` uses it (a launch writes the key
  on its session right after planning, before it looks for the environment);
- a build of it that is running uses it;
- a launch ``hold``s the environment before it looks for it, and a hold younger than
  ``grace`` seconds counts as a use (it covers build-only launches, which have no session,
  and stores whose listings lag behind their writes);
- the storage itself may know more users (on AWS: ECS tasks tagged with the image).

A hold that comes after the mark is refused, and that launch waits until the prune ends,
then finds nothing and builds the environment again. So a launch either is seen by the
prune (which then keeps the environment) or sees the prune (and does not use what it
removes): it can never start a session on an environment that is being removed.

The same module lists and prunes the other things that grow without bound in the
local mode: git mirrors (``<state>/repos/``) and the checkouts stopped sessions left
behind (``<state>/sessions/<id>/``), pruned only when someone asks; and the uv builder's
download cache (``BuildCache``), which every prune that removes an environment (or keeps
to a budget) trims after it, since uv never trims it itself.

It is one room because its parts share one rule set (what is in use, least recently used
first, a budget) and one vocabulary the CLI, the page and the API print; the storages of
other builders live beside their builders (``backends/docker_images.py``,
``aws/catalogue.py``).
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import stat
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from .backends.protocols import EnvironmentRecord, EnvironmentUsage, RepoUse, SessionRecord
from .errors import BadLink, BinderlessError

__all__ = [
    "BuildCache",
    "CacheEntry",
    "Catalogue",
    "EnvironmentEntry",
    "EnvironmentStorage",
    "FolderCache",
    "NotInCatalogue",
    "PruneReport",
    "Storages",
    "StoredEnvironment",
    "UvEnvironments",
    "budget_pruner",
    "format_bytes",
    "git_mirrors",
    "local_catalogues",
    "parse_age",
    "parse_size",
    "saved_checkouts",
]

#: A hold younger than this counts as a use (see the module doc). It outlasts the moment
#: between a launch's hold and its session's record reaching every reader.
HOLD_GRACE_SECONDS = 120.0
#: A prune mark older than this belongs to a prune that died; holds ignore it.
PRUNE_STALE_SECONDS = 300.0
#: The marker the uv builder writes last (``backends/uvbuilder.py``).
UV_MARKER = ".binderless-complete"
_TRASH = ".prune-"


class NotInCatalogue(BinderlessError):
    """No environment (or mirror, or checkout) has this key."""

    status_code = 404
    fault = "link"


# ----- units ---------------------------------------------------------------------------

_SIZE_UNITS = {"": 1, "B": 1, "K": 1024, "KB": 1024, "KIB": 1024, "M": 1024**2, "MB": 1024**2,
               "MIB": 1024**2, "G": 1024**3, "GB": 1024**3, "GIB": 1024**3, "T": 1024**4,
               "TB": 1024**4, "TIB": 1024**4}
_AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_size(text: str) -> int:
    """``"10G"`` -> bytes (binary units: K, M, G, T, with or without ``B``/``iB``)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", text)
    unit = match.group(2).upper() if match else ""
    if match is None or unit not in _SIZE_UNITS:
        raise BadLink(f"{text!r} is not a size.", hint="Write a number with an optional "
                      "unit: 500M, 10G, 1T (binary units), or bytes.")
    return int(float(match.group(1)) * _SIZE_UNITS[unit])


def parse_age(text: str) -> float:
    """``"30d"`` -> seconds (units s, m, h, d, w; a bare number is days)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", text)
    if match is None:
        raise BadLink(f"{text!r} is not an age.", hint="Write a number and a unit: 12h, "
                      "30d, 2w (s, m, h, d, w; a bare number is days).")
    return float(match.group(1)) * _AGE_UNITS[match.group(2) or "d"]


def format_bytes(size: int) -> str:
    """``1536`` -> ``"1.5 KiB"``, for people."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def tree_size(root: Path) -> int:
    """Bytes of the regular files under ``root`` (their apparent sizes; a file linked
    several times, as uv links from its cache, counts once; symlinks are not followed)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for folder, _dirs, files in os.walk(root):
        for name in files:
            try:
                info = os.lstat(os.path.join(folder, name))
            except OSError:
                continue
            if not stat.S_ISREG(info.st_mode) or (info.st_dev, info.st_ino) in seen:
                continue
            seen.add((info.st_dev, info.st_ino))
            total += info.st_size
    return total


def exclusive_size(root: Path) -> tuple[int, int]:
    """``(only here, shared)``: bytes of the files under ``root`` whose every link is under
    ``root`` (what deleting ``root`` frees), and of those also linked from elsewhere (uv
    hard-links the files of environments from its cache: those bytes are counted with
    the environments, and deleting the cache frees none of them)."""
    links: dict[tuple[int, int], list[int]] = {}  # inode -> [size, links, links seen here]
    for folder, _dirs, files in os.walk(root):
        for name in files:
            try:
                info = os.lstat(os.path.join(folder, name))
            except OSError:
                continue
            if not stat.S_ISREG(info.st_mode):
                continue
            seen = links.setdefault((info.st_dev, info.st_ino),
                                    [info.st_size, info.st_nlink, 0])
            seen[2] += 1
    only = sum(size for size, nlink, here in links.values() if here >= nlink)
    return only, sum(size for size, _nlink, _here in links.values()) - only


def _remove_tree(path: Path) -> None:
    """Take ``path`` out of sight at once (a rename), then delete it: nothing finds a
    half-deleted folder, and a crash leaves only a ``.prune-`` folder to clean up."""
    trash = path.with_name(f"{_TRASH}{path.name}-{os.getpid()}-{time.monotonic_ns()}")
    os.rename(path, trash)
    shutil.rmtree(trash, ignore_errors=True)


def _remove_leftovers(folder: Path) -> None:
    if folder.is_dir():
        for entry in folder.iterdir():
            if entry.name.startswith(_TRASH):
                shutil.rmtree(entry, ignore_errors=True)


# ----- environments --------------------------------------------------------------------

@dataclass(frozen=True)
class StoredEnvironment:
    """An environment as its storage sees it; ``created_at``: when it was made, as far as
    the storage knows (the folder's marker, the image's push)."""

    key: str
    name: str
    size_bytes: int
    created_at: float | None
    location: str
    #: What it is, when a storage holds more than one kind (``Storages``); ``""``: the
    #: storage's ``kind``.
    kind: str = ""


class EnvironmentStorage(Protocol):
    """Where built environments live: uv folders here, images in ECR on AWS."""

    #: What one is, in words for people ("uv environment", "image").
    kind: str

    def stored(self) -> list[StoredEnvironment]: ...

    def remove(self, key: str) -> None:
        """Delete the environment; one that is gone already is fine."""
        ...

    def users(self) -> dict[str, str]:
        """Environments the storage itself sees in use (key -> why), beyond the store's
        sessions: on AWS, images that ECS tasks run. ``{}``: none it can tell."""
        ...


class UvEnvironments:
    """The uv builder's environments: ``<envs_dir>/<key>/`` with the builder's marker."""

    kind = "uv environment"

    def __init__(self, envs_dir: Path) -> None:
        self.envs_dir = envs_dir

    def stored(self) -> list[StoredEnvironment]:
        found: list[StoredEnvironment] = []
        if not self.envs_dir.is_dir():
            return found
        for entry in sorted(self.envs_dir.iterdir()):
            marker = entry / UV_MARKER
            if entry.name.startswith(".") or not marker.is_file():
                continue  # a build in progress, an interrupted one, a prune's trash
            found.append(StoredEnvironment(
                key=entry.name, name=f"local-env:{entry.name}", size_bytes=tree_size(entry),
                created_at=marker.stat().st_mtime, location=str(entry)))
        return found

    def remove(self, key: str) -> None:
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", key) or key.startswith("."):
            raise NotInCatalogue(f"{key!r} is not an environment key.")
        _remove_leftovers(self.envs_dir)
        path = self.envs_dir / key
        if path.exists():
            _remove_tree(path)

    def users(self) -> dict[str, str]:
        return {}


class Storages:
    """Several storages as one: the local mode's uv folders and, when the server builds
    with repo2docker too, its Docker images. Keys never collide (each builder salts its
    keys with its own name)."""

    kind = "environment"

    def __init__(self, *parts: EnvironmentStorage) -> None:
        self.parts = parts
        self._where: dict[str, EnvironmentStorage] = {}

    def stored(self) -> list[StoredEnvironment]:
        found: list[StoredEnvironment] = []
        where: dict[str, EnvironmentStorage] = {}
        for part in self.parts:
            for item in part.stored():
                found.append(item if item.kind else StoredEnvironment(
                    item.key, item.name, item.size_bytes, item.created_at, item.location,
                    kind=part.kind))
                where[item.key] = part
        self._where = where
        return found

    def remove(self, key: str) -> None:
        part = self._where.get(key)
        for each in (part,) if part is not None else self.parts:
            each.remove(key)

    def users(self) -> dict[str, str]:
        users: dict[str, str] = {}
        for part in self.parts:
            users.update(part.users())
        return users


class BuildCache:
    """A builder's download cache (uv's ``<state>/cache/uv``): not an environment, but it
    grows with every build and must shrink with the environments. ``prune(everything)``
    is the builder's own (``UvBuilder.prune_cache``): ``uv cache prune`` drops what no
    environment build will read again, ``everything`` empties it, which built
    environments survive."""

    def __init__(self, path: Path, prune: Callable[[bool], None] | None = None, *,
                 name: str = "uv cache") -> None:
        self.path = path
        self.name = name
        self._prune = prune

    def entry(self) -> CacheEntry:
        """Its size counts only the files nothing else links to (what emptying it frees;
        the rest is counted with the environments that link them)."""
        only, shared = exclusive_size(self.path) if self.path.is_dir() else (0, 0)
        return CacheEntry(key=self.name, path=str(self.path), size_bytes=only,
                          last_used_at=_newest_mtime([self.path]),
                          detail=f"{format_bytes(shared)} more shared with environments"
                          if shared else "")

    def prune(self, *, everything: bool = False) -> bool:
        """Trim (or empty) the cache; ``False`` when this cache cannot be pruned here."""
        if self._prune is None or not self.path.is_dir():
            return False
        self._prune(everything)
        return True


@dataclass(frozen=True)
class EnvironmentEntry:
    """One row of the catalogue (``to_json`` is what ``list --json`` and the API print)."""

    key: str
    name: str
    kind: str
    location: str
    size_bytes: int
    built_at: float | None
    last_launched_at: float | None
    launches: int
    files: tuple[str, ...] = ()
    repos: tuple[RepoUse, ...] = ()
    #: Why it is in use right now (``""``: not in use).
    in_use: str = ""

    @property
    def last_used(self) -> float:
        """What "least recently launched" sorts by: the last launch, else the build."""
        return self.last_launched_at or self.built_at or 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key, "name": self.name, "kind": self.kind, "location": self.location,
            "size_bytes": self.size_bytes, "built_at": self.built_at,
            "last_launched_at": self.last_launched_at, "launches": self.launches,
            "files": list(self.files),
            "repos": [{"repo_url": r.repo_url, "ref": r.ref, "launches": r.launches,
                       "last_launched_at": r.last_launched_at} for r in self.repos],
            "in_use": bool(self.in_use), "in_use_reason": self.in_use,
        }


@dataclass
class PruneReport:
    """What a prune removed, and what it kept because something used it."""

    removed: list[dict[str, Any]] = field(default_factory=list)
    kept: list[dict[str, Any]] = field(default_factory=list)
    dry_run: bool = False
    #: What happened to the build cache after it: ``""`` (nothing), ``"pruned"`` (``uv
    #: cache prune``) or ``"emptied"`` (still over the budget: ``uv cache clean``).
    cache: str = ""
    cache_freed_bytes: int = 0

    @property
    def freed_bytes(self) -> int:
        return sum(int(item["size_bytes"]) for item in self.removed)

    def to_json(self) -> dict[str, Any]:
        return {"removed": self.removed, "kept": self.kept, "freed_bytes": self.freed_bytes,
                "dry_run": self.dry_run, "cache": self.cache,
                "cache_freed_bytes": self.cache_freed_bytes}


class CatalogueStore(EnvironmentUsage, Protocol):
    """The store as the catalogue uses it: usage records, and the running sessions."""

    def sessions(self, *statuses: str) -> list[SessionRecord]: ...


class Catalogue:
    """Environments, listed and pruned under the rule in the module doc."""

    def __init__(self, storage: EnvironmentStorage, store: CatalogueStore, *,
                 clock: Callable[[], float] = time.time,
                 grace: float = HOLD_GRACE_SECONDS,
                 cache: BuildCache | None = None) -> None:
        """``cache``: the builder's cache, trimmed after each prune and counted in the
        budget (see ``prune``)."""
        self.storage = storage
        self.store = store
        self.clock = clock
        self.grace = grace
        self.cache = cache

    def _in_use(self) -> dict[str, str]:
        """Why each environment is in use now, as far as a read can tell (the listing's
        column; pruning decides again, atomically)."""
        users = dict(self.storage.users())
        counts: dict[str, int] = {}
        for record in self.store.sessions("starting", "running"):
            if record.image_key:
                counts[record.image_key] = counts.get(record.image_key, 0) + 1
        for key, n in counts.items():
            users.setdefault(key, f"{n} session{'s' if n != 1 else ''} running")
        return users

    def list(self) -> list[EnvironmentEntry]:
        """Every stored environment, most recently used first. Records of environments
        no longer stored are left out (removed by hand, or by another prune)."""
        records = {r.key: r for r in self.store.environment_records()}
        in_use = self._in_use()
        entries = []
        for stored in self.storage.stored():
            record = records.get(stored.key) or EnvironmentRecord(stored.key)
            entries.append(EnvironmentEntry(
                key=stored.key, name=record.image_name or stored.name,
                kind=stored.kind or self.storage.kind,
                location=stored.location, size_bytes=stored.size_bytes,
                built_at=record.built_at or stored.created_at,
                last_launched_at=record.last_launched_at, launches=record.launches,
                files=record.files, repos=record.repos, in_use=in_use.get(stored.key, "")))
        entries.sort(key=lambda e: e.last_used, reverse=True)
        return entries

    def show(self, key: str) -> EnvironmentEntry:
        for entry in self.list():
            if entry.key == key:
                return entry
        raise NotInCatalogue(f"There is no environment {key!r}.",
                             hint="binderless environments list shows their keys.")

    def total_bytes(self) -> int:
        return sum(entry.size_bytes for entry in self.list())

    def prune(self, *, keys: Sequence[str] = (), older_than: float | None = None,
              budget: int | None = None, dry_run: bool = False) -> PruneReport:
        """Remove the environments named by ``keys``, those not used for ``older_than``
        seconds, and then the least recently launched until the rest fit in ``budget``
        bytes; never one in use (it is reported as kept, with the reason).

        Then the build cache: trimmed once anything was removed, and emptied when the
        environments left and the cache together are still over ``budget`` (the cache
        goes before another environment would: it only makes builds faster). Run it
        outside an event loop (a thread): the cache is pruned by the builder's own
        coroutine, on a loop of its own."""
        entries = self.list()
        by_key = {entry.key: entry for entry in entries}
        unknown = [key for key in keys if key not in by_key]
        if unknown:
            raise NotInCatalogue(f"There is no environment {unknown[0]!r}.",
                                 hint="binderless environments list shows their keys.")
        report = PruneReport(dry_run=dry_run)
        gone: set[str] = set()
        now = self.clock()
        chosen = [by_key[key] for key in dict.fromkeys(keys)]
        if older_than is not None:
            chosen += [e for e in reversed(entries) if e.last_used < now - older_than]
        for entry in chosen:
            if entry.key not in gone and self._remove(entry, report, now):
                gone.add(entry.key)
        if budget is not None:
            left = sum(e.size_bytes for e in entries if e.key not in gone)
            for entry in sorted(entries, key=lambda e: e.last_used):  # least recent first
                if left <= budget:
                    break
                if entry.key not in gone and self._remove(entry, report, now):
                    gone.add(entry.key)
                    left -= entry.size_bytes
        if not dry_run and self.cache is not None:
            left = sum(e.size_bytes for e in entries if e.key not in gone)
            self._trim_cache(report, left, budget)
        return report

    def _trim_cache(self, report: PruneReport, left: int, budget: int | None) -> None:
        assert self.cache is not None
        before = self.cache.entry().size_bytes
        over = budget is not None and left + before > budget
        if not (report.removed or over):
            return  # nothing changed: leave uv's cache (and its lock) alone
        try:
            if not self.cache.prune(everything=False):
                return
            report.cache = "pruned"
            if budget is not None and left + self.cache.entry().size_bytes > budget:
                self.cache.prune(everything=True)
                report.cache = "emptied"
        except (OSError, BinderlessError) as exc:
            report.kept.append({"key": self.cache.name, "name": self.cache.name,
                                "size_bytes": before,
                                "reason": f"pruning it failed: {exc}"})
        report.cache_freed_bytes = max(0, before - self.cache.entry().size_bytes)

    def _remove(self, entry: EnvironmentEntry, report: PruneReport, now: float) -> bool:
        item = {"key": entry.key, "name": entry.name, "size_bytes": entry.size_bytes}
        why = self.storage.users().get(entry.key, "")
        if not why and report.dry_run:
            why = self._in_use().get(entry.key, "")
        if not why and not report.dry_run:
            why = self.store.begin_prune(entry.key, now, grace=self.grace,
                                         stale_after=PRUNE_STALE_SECONDS)
        if why:
            report.kept.append({**item, "reason": why})
            return False
        if report.dry_run:
            report.removed.append(item)
            return True
        try:
            self.storage.remove(entry.key)
        except BaseException as exc:
            self.store.end_prune(entry.key, removed=False)
            if not isinstance(exc, (OSError, BinderlessError)):
                raise
            report.kept.append({**item, "reason": f"removing it failed: {exc}"})
            return False
        self.store.end_prune(entry.key, removed=True)
        report.removed.append(item)
        return True


def budget_pruner(catalogue: Catalogue, budget: int) -> Callable[[], PruneReport]:
    """What the service runs after each build when ``environment_budget_bytes`` is set."""
    def prune() -> PruneReport:
        return catalogue.prune(budget=budget)

    return prune


# ----- git mirrors and saved checkouts -------------------------------------------------

@dataclass(frozen=True)
class CacheEntry:
    """A git mirror or a saved checkout: a folder that can go at any time it is unused."""

    key: str
    path: str
    size_bytes: int
    last_used_at: float
    #: Why it must stay (``""``: it may go).
    in_use: str = ""
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "path": self.path, "size_bytes": self.size_bytes,
                "last_used_at": self.last_used_at, "in_use": bool(self.in_use),
                "in_use_reason": self.in_use, "detail": self.detail}


class FolderCache:
    """Folders listed by ``entries()`` (each with why it must stay), pruned like
    environments: one by one, by age, or down to a budget, oldest first."""

    def __init__(self, kind: str, entries: Callable[[], list[CacheEntry]], *,
                 clock: Callable[[], float] = time.time) -> None:
        self.kind = kind
        self.entries = entries
        self.clock = clock

    def list(self) -> list[CacheEntry]:
        return sorted(self.entries(), key=lambda e: e.last_used_at, reverse=True)

    def prune(self, *, keys: Sequence[str] = (), older_than: float | None = None,
              budget: int | None = None, dry_run: bool = False) -> PruneReport:
        entries = self.list()
        by_key = {e.key: e for e in entries}
        for key in keys:
            if key not in by_key:
                raise NotInCatalogue(f"There is no {self.kind} {key!r}.")
        report = PruneReport(dry_run=dry_run)
        gone: set[str] = set()
        now = self.clock()
        chosen: list[CacheEntry] = [by_key[k] for k in dict.fromkeys(keys)]
        if older_than is not None:
            chosen += [e for e in entries if e.last_used_at < now - older_than]
        if budget is not None:
            left = sum(e.size_bytes for e in entries)
            for entry in sorted(entries, key=lambda e: e.last_used_at):
                if left <= budget:
                    break
                if not entry.in_use:
                    chosen.append(entry)
                    left -= entry.size_bytes
        for entry in chosen:
            if entry.key in gone:
                continue
            item = {"key": entry.key, "path": entry.path, "size_bytes": entry.size_bytes}
            if entry.in_use:
                report.kept.append({**item, "reason": entry.in_use})
                continue
            if not dry_run:
                try:
                    _remove_tree(Path(entry.path))
                except OSError as exc:
                    report.kept.append({**item, "reason": f"removing it failed: {exc}"})
                    continue
            gone.add(entry.key)
            report.removed.append(item)
        return report


def _newest_mtime(paths: Iterable[Path]) -> float:
    stamps = []
    for path in paths:
        try:
            stamps.append(path.stat().st_mtime)
        except OSError:
            continue
    return max(stamps, default=0.0)


class _LaunchReader(Protocol):
    def unfinished_launches(self) -> list[str]: ...

    def get_launch(self, launch_id: str) -> dict[str, Any] | None: ...

    def sessions(self, *statuses: str) -> list[SessionRecord]: ...


def git_mirrors(repos_dir: Path, store: _LaunchReader, *,
                clock: Callable[[], float] = time.time) -> FolderCache:
    """The local fetcher's mirrors (``<state>/repos/<hash>.git``). A mirror's last use is
    its last clone or fetch. While any launch is fetching, none is removed (a clone reads
    its mirror then)."""
    def entries() -> list[CacheEntry]:
        _remove_leftovers(repos_dir)
        if not repos_dir.is_dir():
            return []
        fetching = [launch_id for launch_id in store.unfinished_launches()
                    if (store.get_launch(launch_id) or {}).get("phase") in ("waiting",
                                                                            "fetching")]
        busy = f"{len(fetching)} launch(es) fetching" if fetching else ""
        found = []
        for mirror in sorted(repos_dir.glob("*.git")):
            if not mirror.is_dir():
                continue
            origin = ""
            config = mirror / "config"
            if config.is_file():
                match = re.search(r"^\s*url\s*=\s*(\S+)", config.read_text(errors="replace"),
                                  re.MULTILINE)
                origin = match.group(1) if match else ""
            found.append(CacheEntry(
                key=mirror.name.removesuffix(".git"), path=str(mirror),
                size_bytes=tree_size(mirror),
                last_used_at=_newest_mtime([mirror, mirror / "FETCH_HEAD",
                                            mirror / "packed-refs", mirror / "refs"]),
                in_use=busy, detail=origin))
        return found

    return FolderCache("git mirror", entries, clock=clock)


def saved_checkouts(sessions_dir: Path, store: _LaunchReader, *,
                    clock: Callable[[], float] = time.time) -> FolderCache:
    """Folders of sessions that have ended (``<state>/sessions/<id>/``: signed-in users'
    sessions keep theirs). A starting or running session's folder is never removed."""
    def entries() -> list[CacheEntry]:
        _remove_leftovers(sessions_dir)
        if not sessions_dir.is_dir():
            return []
        active = {r.session_id for r in store.sessions("starting", "running")}
        stopped = {r.session_id: r for r in store.sessions("stopped")}
        found = []
        for folder in sorted(sessions_dir.iterdir()):
            if not folder.is_dir() or folder.name.startswith("."):
                continue
            record = stopped.get(folder.name)
            used = record.stopped_at if record and record.stopped_at else _newest_mtime(
                [folder])
            found.append(CacheEntry(
                key=folder.name, path=str(folder), size_bytes=tree_size(folder),
                last_used_at=float(used or 0.0),
                in_use="its session is running" if folder.name in active else "",
                detail=record.repo_url if record else ""))
        return found

    return FolderCache("saved checkout", entries, clock=clock)


# ----- wiring --------------------------------------------------------------------------

@dataclass(frozen=True)
class LocalCatalogues:
    """The local mode's catalogues, over one state folder."""

    environments: Catalogue
    mirrors: FolderCache
    checkouts: FolderCache

    @property
    def cache(self) -> BuildCache | None:
        return self.environments.cache


class _CachePruner(Protocol):
    async def prune_cache(self, *, everything: bool = False) -> None: ...


def cache_pruner(builder: _CachePruner) -> Callable[[bool], None]:
    """The builder's ``prune_cache`` coroutine as a plain call (the catalogue runs in a
    worker thread or the CLI, never on the server's event loop)."""
    def prune(everything: bool) -> None:
        try:
            asyncio.run(builder.prune_cache(everything=everything))
        except Exception as exc:  # ProcessFailed: uv's own exit; say it in a report
            if isinstance(exc, BinderlessError):
                raise
            raise BinderlessError(f"uv could not prune its cache: {exc}") from exc

    return prune


def _parts(builder: object) -> list[object]:
    """The builder and the builders it delegates to (``AutoBuilder``'s ``uv`` and
    ``docker``): each contributes what it stores."""
    return [builder, *(getattr(builder, name) for name in ("uv", "docker")
                       if getattr(builder, name, None) is not None)]


def local_catalogues(state_dir: Path, store: Any, *,
                     clock: Callable[[], float] = time.time,
                     builder: object = None,
                     docker: EnvironmentStorage | None = None) -> LocalCatalogues:
    """``store``: the state folder's ``SqliteStore`` (usage records and sessions).

    ``builder``: the server's builder (or the one the CLI makes from the same settings).
    A uv part's cache (``cache_dir``) is counted and trimmed with its ``prune_cache``; a
    docker part's images (its ``catalogue_storage()``) are listed beside the uv folders,
    as are ``docker``'s when given."""
    storages: list[EnvironmentStorage] = [UvEnvironments(state_dir / "envs")]
    cache: BuildCache | None = None
    for part in _parts(builder):
        if docker is None and callable(getattr(part, "catalogue_storage", None)):
            docker = part.catalogue_storage()  # type: ignore[attr-defined]
        path = getattr(part, "cache_dir", None)
        if cache is None and isinstance(path, Path) and callable(
                getattr(part, "prune_cache", None)):
            cache = BuildCache(path, cache_pruner(part))  # type: ignore[arg-type]
    if docker is not None:
        storages.append(docker)
    storage: EnvironmentStorage = storages[0] if len(storages) == 1 else Storages(*storages)
    return LocalCatalogues(
        environments=Catalogue(storage, store, clock=clock, cache=cache),
        mirrors=git_mirrors(state_dir / "repos", store, clock=clock),
        checkouts=saved_checkouts(state_dir / "sessions", store, clock=clock))
