"""Bringing back an expired anonymous session: its visitor's changes, kept for a while.

When an anonymous session that ran ends (idle, maximum age, its server shut down), the
files its visitor created or changed in the repository folder are copied to a shelf
under the state folder, ``<state_dir>/restores/<id>/``, for ``restore_days``; the rest of
the session's folder is removed as before (``LaunchService.keeps_files``). Never the
environment: only files that differ from the checkout the session started from.

"Changed" is decided against a manifest (path, size, modification time of every file)
written when the session starts, before the visitor could touch anything, into the
session's own folder, which the session cannot write. Hidden files and folders the
checkout did not have (``.ipynb_checkpoints``, ``.local``, ``.cache``: Jupyter's and
the tools' own) are not kept; hidden files the repository has are, once changed.

A saved copy belongs to the browser that owned the session: launches carry the
visitor id of a signed cookie (``Visitors``), the shelf records it, and only a launch with
the same id puts the files back. Its id (192 random bits) is the only name it has.

Shared on purpose: the owner may ask for a share link (``RestoreShelf.share``), a restore
link whose ``restore`` value also carries a capability, ``<id>.<share>`` (192 more random
bits). Any browser that presents it may start a session with the changes; the shelf keeps
only the SHA-256 of each capability (so the folder alone cannot rebuild a link), and
every one ends with the saved copy, ``restore_days`` after its session ended. A link with
a capability that was changed, or without one, still works for the owner's browser only.

The server reads and writes these files with its own rights (possibly root, when
sessions run under uids of their own), so nothing here follows a link the session
made: links are never saved, and a link in the new checkout is never written through.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import stat
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .backends.protocols import SessionRecord
from .errors import AccessDenied, LaunchFailed
from .identity import CookieSigner

__all__ = ["MANIFEST", "RESTORE_ARG_RE", "VISITOR_COOKIE", "ChangesNotKept", "RestoreShelf",
           "SavedWork", "Visitors", "changed_files"]

log = logging.getLogger("binderless.restore")

#: The cookie that names an anonymous browser (signed; see ``Visitors``).
VISITOR_COOKIE = "binderless_visitor"
#: The manifest of a session's checkout, beside it in the session's folder.
MANIFEST = "checkout-manifest.json"
#: Saved copies hold at most this many files (and ``restore_max_bytes``).
MAX_FILES = 5000
RESTORE_ID_RE = re.compile(r"[A-Za-z0-9_-]{32}")
#: What a restore link's ``restore`` value may be: an id, or an id and a share capability.
RESTORE_ARG_RE = re.compile(r"[A-Za-z0-9_-]{32}(?:\.[A-Za-z0-9_-]{32})?")
#: A saved copy keeps at most this many share capabilities (each share adds one).
MAX_SHARES = 20
VISITOR_RE = re.compile(r"[0-9a-f]{32}")
_SECONDS_PER_DAY = 86400.0


class ChangesNotKept(LaunchFailed):
    """The saved changes a link names are not kept (expired, deleted, never made)."""

    status_code = 404


def _digest(share: str) -> str:
    return hashlib.sha256(share.encode()).hexdigest()


class Visitors:
    """Names anonymous browsers: a random id (128 bits) in a cookie signed with the
    server's secret (HMAC, ``CookieSigner``), so that no one can claim another's id."""

    PURPOSE = "visitor"

    def __init__(self, signer: CookieSigner, max_age: float) -> None:
        self.signer = signer
        self.max_age = max_age

    def read(self, cookies: Mapping[str, str]) -> str:
        """The visitor id of a valid cookie among ``cookies``; "" for none."""
        value = cookies.get(VISITOR_COOKIE, "")
        data = self.signer.verify(self.PURPOSE, value) if value else None
        visitor = str(data.get("v", "")) if data else ""
        return visitor if VISITOR_RE.fullmatch(visitor) else ""

    def issue(self) -> tuple[str, str]:
        """A new visitor id and the cookie value that carries it."""
        visitor = secrets.token_hex(16)
        return visitor, self.signer.sign(self.PURPOSE, {"v": visitor}, self.max_age)


@dataclass(frozen=True)
class SavedWork:
    """One saved copy of a session's changes, as ``meta.json`` describes it."""

    restore_id: str
    session_id: str
    visitor: str
    provider: str
    #: The spec of the link the session was launched from, and the same with the
    #: resolved commit (what a restore launches: the same commit).
    spec: str
    persistent_spec: str
    repo_url: str
    resolved_ref: str
    saved_at: float
    expires_at: float
    files: list[str] = field(default_factory=list)
    size_bytes: int = 0
    #: Changed files left out: over the size or count cap, or not regular files.
    skipped: list[str] = field(default_factory=list)
    #: SHA-256 (hex) of each share capability the owner made (``RestoreShelf.share``).
    shares: list[str] = field(default_factory=list)

    @property
    def restore_link(self) -> str:
        """The launch link that starts a new session of the same commit with the files."""
        return f"/v2/{self.provider}/{self.persistent_spec}?restore={self.restore_id}"

    def offer(self) -> dict[str, Any]:
        """What a page of the owner's browser is told about it."""
        return {"restore_id": self.restore_id, "session_id": self.session_id,
                "link": self.restore_link, "files": self.files[:50],
                "file_count": len(self.files), "size_bytes": self.size_bytes,
                "saved_at": self.saved_at, "expires_at": self.expires_at,
                "launch": f"v2/{self.provider}/{self.spec}"}


def _hidden(rel: str) -> bool:
    return any(part.startswith(".") for part in rel.split("/"))


def scan(root: Path) -> Iterator[tuple[str, os.stat_result]]:
    """Every regular file under ``root`` (relative path, lstat), without entering
    symbolic links or ``.git``; links and special files are reported too, so that the
    caller can say they were skipped."""
    for folder, dirs, files in os.walk(root, followlinks=False):
        rel_folder = os.path.relpath(folder, root)
        dirs[:] = sorted(d for d in dirs if d != ".git" and not os.path.islink(
            os.path.join(folder, d)))
        for name in sorted(files):
            path = os.path.join(folder, name)
            with contextlib.suppress(OSError):
                rel = name if rel_folder == "." else f"{rel_folder}/{name}"
                yield rel.replace(os.sep, "/"), os.lstat(path)


def write_manifest(checkout: Path, persistent_request: str = "") -> None:
    """Record what the checkout holds before the session starts (see the module's doc),
    and the link of its commit (``v2/<provider>/<spec with the commit>``)."""
    entries = {rel: [st.st_size, st.st_mtime_ns] for rel, st in scan(checkout)
               if stat.S_ISREG(st.st_mode)}
    (checkout.parent / MANIFEST).write_text(json.dumps(
        {"files": entries, "persistent_request": persistent_request}))


def changed_files(checkout: Path, manifest: Mapping[str, list[int]]
                  ) -> Iterator[tuple[str, os.stat_result]]:
    """Files under ``checkout`` that are new or changed since ``manifest``: regular files,
    and links or special files (which the caller skips); hidden ones only if the
    checkout had them."""
    for rel, st in scan(checkout):
        known = manifest.get(rel)
        if known is None and _hidden(rel):
            continue
        if known is not None and stat.S_ISREG(st.st_mode) and \
                [st.st_size, st.st_mtime_ns] == list(known):
            continue
        yield rel, st


def _safe_rel(rel: str) -> bool:
    parts = rel.split("/")
    return bool(rel) and not rel.startswith("/") and all(
        p not in ("", ".", "..") and "\0" not in p for p in parts)


def _copy_nofollow(source: Path, dest_dir_fd: int, name: str, limit: int) -> int:
    """Copy the regular file ``source`` (never through a link) into ``name`` of an open
    folder; the bytes copied. ``OSError`` when it is no regular file or grew past
    ``limit`` bytes."""
    src = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        if not stat.S_ISREG(os.fstat(src).st_mode):
            raise OSError(f"{source} is not a regular file")
        dst = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600,
                      dir_fd=dest_dir_fd)
        copied = 0
        try:
            while chunk := os.read(src, 1 << 20):
                copied += len(chunk)
                if copied > limit:
                    raise OSError(f"{source} grew while it was copied")
                os.write(dst, chunk)
        finally:
            os.close(dst)
        return copied
    finally:
        os.close(src)


def _open_folder(root: Path, parts: list[str], *, create: bool) -> int:
    """An open descriptor of ``root/parts...``, walking one name at a time and refusing
    any that is a link (``OSError``), creating missing folders when asked."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        for part in parts:
            if create:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, 0o700, dir_fd=fd)
            nxt = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = nxt
        return fd
    except BaseException:
        os.close(fd)
        raise


class RestoreShelf:
    """Saved changes of ended anonymous sessions under ``root`` (``<state_dir>/restores``).

    ``clock`` is injectable so that tests can move time past the retention period."""

    def __init__(self, root: Path, *, days: float, max_bytes: int,
                 clock: Callable[[], float] = time.time) -> None:
        self.root = root
        self.days = days
        self.max_bytes = max_bytes
        self.clock = clock

    # ----- while a session starts ----------------------------------------------------------

    def check(self, restore: str, visitor: str, provider: str) -> SavedWork:
        """The saved copy a launch asks to restore (``restore``: its id, or
        ``<id>.<share>`` from a share link), if it is this visitor's or the share
        capability is one the owner made, and it is still kept; else ``AccessDenied``
        (another browser's, a changed capability, no visitor cookie) or ``ChangesNotKept``
        (expired, deleted, or never made)."""
        restore_id, _, share = restore.partition(".")
        work = self._kept(restore_id)
        if share and not (RESTORE_ARG_RE.fullmatch(restore) and any(
                secrets.compare_digest(_digest(share), known) for known in work.shares)):
            raise AccessDenied(
                "This share link is not valid: it was changed, or was never made here.",
                hint="Ask whoever shared it for the link again, or launch the link without "
                     "?restore= to start from the repository.")
        owner = bool(visitor) and secrets.compare_digest(visitor, work.visitor)
        if not (share or owner) or provider != work.provider:
            raise AccessDenied(
                "These saved changes belong to the browser whose session made them.",
                hint="Open the link in that browser, or launch the link without ?restore= "
                     "to start from the repository.")
        return work

    def _kept(self, restore_id: str) -> SavedWork:
        work = self.find(restore_id)
        if work is None:
            raise ChangesNotKept(
                "These saved changes are no longer kept (they are deleted "
                f"{self.days:g} days after their session ended).",
                hint="Launch the link without ?restore= to start from the repository.")
        return work

    def share(self, restore_id: str, visitor: str) -> tuple[SavedWork, str]:
        """A share link of the saved copy ``restore_id`` for its owner ``visitor``: the
        copy and the link (``SavedWork.restore_link`` with a new capability), which works
        in any browser until the copy expires. ``AccessDenied`` for anyone but the owner,
        ``ChangesNotKept`` when it is not kept."""
        work = self._kept(restore_id)
        if not VISITOR_RE.fullmatch(visitor) or not secrets.compare_digest(visitor,
                                                                           work.visitor):
            raise AccessDenied("Only the browser whose session made these changes can "
                               "share them.")
        share = secrets.token_urlsafe(24)
        # The newest MAX_SHARES stay valid: a stream of shares cannot grow the record.
        work = dataclasses.replace(work, shares=[*work.shares, _digest(share)][-MAX_SHARES:])
        self._write_meta(work)
        log.info("saved changes %s: a share link was made", restore_id)
        return work, f"{work.restore_link}.{share}"

    def _write_meta(self, work: SavedWork) -> None:
        """Write ``meta.json`` whole or not at all (a reader never sees half of it)."""
        folder = self.root / work.restore_id
        partial = folder / f".meta-{secrets.token_hex(4)}.json"
        partial.write_text(json.dumps(asdict(work)))
        os.replace(partial, folder / "meta.json")

    def prepare(self, checkout: Path, *, restore_id: str = "", visitor: str = "",
                repo_url: str = "", resolved_ref: str = "", provider: str = "",
                persistent_request: str = "", session_id: str = "",
                spec: str = "") -> list[str]:
        """Before an anonymous session starts: write its checkout's manifest, then put back
        the saved files ``restore_id`` names (checked again: ``check``). Lines for the log.
        ``session_id`` and ``spec`` serve the AWS mode's shelf (``aws/restores.py``), whose
        sessions save their files themselves; here the session's record gives them."""
        del session_id, spec
        write_manifest(checkout, persistent_request)
        if not restore_id:
            return []
        work = self.check(restore_id, visitor, provider)
        if work.repo_url != repo_url or work.resolved_ref != resolved_ref:
            raise AccessDenied("These saved changes were made in another repository or "
                               "commit than this launch's.",
                               hint="Use the link the restore offer gave.")
        source = self.root / work.restore_id / "files"
        put = 0
        for rel in work.files:
            if not _safe_rel(rel):
                continue
            *folders, name = rel.split("/")
            try:
                fd = _open_folder(checkout, folders, create=True)
                try:
                    with contextlib.suppress(FileNotFoundError):
                        if stat.S_ISDIR(os.lstat(name, dir_fd=fd).st_mode):
                            continue  # a folder of the checkout by that name stays
                    _copy_nofollow(source / rel, fd, name, self.max_bytes)
                    put += 1
                finally:
                    os.close(fd)
            except OSError as exc:
                log.warning("restore %s: could not put back %s: %s", work.restore_id, rel, exc)
        return [f"Put back {put} file{'s' if put != 1 else ''} you changed in your earlier "
                "session.\n"]

    # ----- when a session ends ----------------------------------------------------------

    def save(self, record: SessionRecord, launch: Mapping[str, Any] | None) -> SavedWork | None:
        """Copy what the visitor of ``record`` (an anonymous session that ran) created or
        changed; ``None`` when there is nothing to keep or no visitor to keep it for."""
        request = _request_of(launch)
        visitor = str(request.get("visitor", ""))
        home = Path(record.home) if record.home else None
        if not VISITOR_RE.fullmatch(visitor) or record.owner or home is None or \
                request.get("build_only"):
            return None
        try:
            written = json.loads((home.parent / MANIFEST).read_text())
            manifest = dict(written["files"])
            persistent = str(written.get("persistent_request", ""))
        except (OSError, ValueError, KeyError, TypeError):
            return None  # started before this feature, or not prepared: nothing to compare
        if not home.is_dir():
            return None
        restore_id = secrets.token_urlsafe(24)
        files_dir = self.root / restore_id / "files"
        saved: list[str] = []
        skipped: list[str] = []
        total = 0
        created = False
        for rel, st in changed_files(home, manifest):
            if not stat.S_ISREG(st.st_mode) or len(saved) >= MAX_FILES or \
                    total + st.st_size > self.max_bytes:
                skipped.append(rel)
                continue
            if not created:
                files_dir.mkdir(parents=True, mode=0o700)
                created = True
            *folders, name = rel.split("/")
            try:
                fd = _open_folder(files_dir, folders, create=True)
                try:
                    total += _copy_nofollow(home / rel, fd, name, self.max_bytes - total)
                finally:
                    os.close(fd)
                saved.append(rel)
            except OSError as exc:
                log.info("session %s: not saving %s: %s", record.session_id, rel, exc)
                skipped.append(rel)
        if not saved:
            shutil.rmtree(self.root / restore_id, ignore_errors=True)
            return None
        now = self.clock()
        provider = str(launch.get("provider", "")) if launch else ""
        spec = str(launch.get("spec", "")) if launch else ""
        prefix = f"v2/{provider}/"
        work = SavedWork(
            restore_id=restore_id, session_id=record.session_id, visitor=visitor,
            provider=provider, spec=spec,
            persistent_spec=persistent[len(prefix):] if persistent.startswith(prefix) else spec,
            repo_url=record.repo_url, resolved_ref=record.resolved_ref, saved_at=now,
            expires_at=now + self.days * _SECONDS_PER_DAY, files=saved, size_bytes=total,
            skipped=skipped)
        self._write_meta(work)
        log.info("session %s: saved %d changed files (%d bytes) as %s", record.session_id,
                 len(saved), total, restore_id)
        return work

    # ----- finding, listing, forgetting ---------------------------------------------------

    def find(self, restore_id: str) -> SavedWork | None:
        """The saved copy ``restore_id`` names, unless expired (``None``)."""
        if not RESTORE_ID_RE.fullmatch(restore_id):
            return None
        try:
            data = json.loads((self.root / restore_id / "meta.json").read_text())
            work = SavedWork(**data)
        except (OSError, ValueError, TypeError):
            return None
        return work if work.expires_at > self.clock() else None

    def all(self) -> list[SavedWork]:
        """Every saved copy still kept, newest first."""
        found = []
        with contextlib.suppress(FileNotFoundError):
            for entry in os.scandir(self.root):
                work = self.find(entry.name)
                if work is not None:
                    found.append(work)
        return sorted(found, key=lambda w: w.saved_at, reverse=True)

    def offers(self, visitor: str, *, launch: str = "", session_id: str = "") -> list[SavedWork]:
        """This visitor's saved copies of the link ``launch`` (``v2/<provider>/<spec>``,
        the link as launched or with the commit), or of the session ``session_id``."""
        if not VISITOR_RE.fullmatch(visitor):
            return []
        mine = [w for w in self.all() if secrets.compare_digest(w.visitor, visitor)]
        if session_id:
            return [w for w in mine if w.session_id == session_id]
        return [w for w in mine if launch in (f"v2/{w.provider}/{w.spec}",
                                              f"v2/{w.provider}/{w.persistent_spec}")]

    def sweep(self) -> list[str]:
        """Delete saved copies past their time (and leftovers with no readable record
        older than a day); the ids deleted."""
        now = self.clock()
        gone: list[str] = []
        with contextlib.suppress(FileNotFoundError):
            for entry in os.scandir(self.root):
                folder = Path(entry.path)
                try:
                    expires = float(json.loads((folder / "meta.json").read_text())["expires_at"])
                except (OSError, ValueError, KeyError, TypeError):
                    # Being written now, or broken: only an old one goes.
                    try:
                        expires = entry.stat(follow_symlinks=False).st_mtime + _SECONDS_PER_DAY
                    except OSError:
                        continue
                if expires <= now:
                    shutil.rmtree(folder, ignore_errors=True)
                    gone.append(entry.name)
        return gone


def _request_of(launch: Mapping[str, Any] | None) -> dict[str, Any]:
    try:
        data = json.loads(str((launch or {}).get("request") or "{}"))
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}

