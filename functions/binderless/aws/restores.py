"""Saved changes of ended anonymous sessions in the AWS mode: ``S3RestoreShelf``.

The local mode keeps them under the state folder (``binderless.restore.RestoreShelf``);
here the gateway never sees a session's files, so the session saves them itself:

* when an anonymous session starts, ``prepare`` makes a new id (192 random bits), writes
  its record ``restores/<id>.json`` (visitor, link, commit; "pending": ``saved_at`` 0) and
  hands the task, through the bootstrap (``aws/bootstrap.py``, never RunTask), a presigned
  POST of exactly ``restores/<id>.tar`` and the size cap. A POST, not a PUT: its signed
  policy carries a ``content-length-range``, so S3 itself refuses a larger upload (the
  task's own code can read the form; a PUT would take an object of any size). With
  ``?restore=<id>`` (checked as in the local mode: the owner's browser, or a share
  capability) the task also gets a presigned GET of the earlier tar and puts its files
  back before Jupyter starts;
* when the task stops (ECS StopTask's SIGTERM, or Jupyter ending), ``session-start`` tars
  the files the visitor created or changed and POSTs them (``build-runner/session-start``);
* the first time anyone asks for the record after that (``find``), the gateway reads the
  tar (refusing one past the cap), lists its files and settles the record: kept
  ``restore_days`` from then. A record whose tar never comes is never offered.

The bucket's lifecycle rule on ``restores/`` (infra/service/data.yaml, ``RestoreDays``)
deletes records and tars; ``find`` refuses them from ``expires_at`` on, so the offer ends
on time even though S3 deletes up to a day later. Each visitor's records are listed in
``restores/visitors/<visitor>.json`` (the offers of a browser), so no bucket listing is
needed: the gateway's role reads and writes objects under ``restores/`` only.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import secrets
import tarfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any, Protocol

from ..backends.protocols import SessionRecord
from ..errors import AccessDenied
from ..restore import (
    MAX_FILES,
    RESTORE_ID_RE,
    VISITOR_RE,
    RestoreShelf,
    SavedWork,
    _safe_rel,
)

__all__ = ["RestoreObjects", "S3RestoreShelf", "restore_key"]

log = logging.getLogger("binderless.aws.restores")

_SECONDS_PER_DAY = 86400.0
#: A presigned URL is valid for at most seven days (Signature Version 4).
_MAX_URL_SECONDS = 7 * 86400
#: A record is a few hundred bytes; an index holds at most ``_INDEX_ITEMS`` of them.
_META_BYTES = 1 << 20
_INDEX_ITEMS = 50
#: What tar adds to the files' bytes: a 512-byte header and up to 511 bytes of padding
#: per file, and the end-of-archive blocks.
_TAR_OVERHEAD = MAX_FILES * 1024 + 20 * 512


def restore_key(restore_id: str, suffix: str) -> str:
    """``restores/<id>.json`` (the record) or ``restores/<id>.tar`` (the files)."""
    return f"restores/{restore_id}.{suffix}"


def _index_key(visitor: str) -> str:
    return f"restores/visitors/{visitor}.json"


class RestoreObjects(Protocol):
    """The bucket (``aws/s3.py``'s ``S3Objects`` fits)."""

    def put_bytes(self, key: str, data: bytes, *, content_type: str = "") -> None: ...

    def get_bytes(self, key: str, max_bytes: int) -> bytes | None: ...

    def modified_at(self, key: str) -> float | None: ...

    def presigned_get(self, key: str, expires: int = 3600) -> str: ...

    def presigned_post(self, key: str, max_bytes: int,
                       expires: int = 3600) -> tuple[str, dict[str, str]]: ...

    def delete(self, key: str) -> None: ...


class S3RestoreShelf(RestoreShelf):
    """``RestoreShelf`` with its records and files in S3 (see the module's doc).

    ``pending_seconds``: how long after a session starts its tar may still come (the
    sessions' maximum age and then some); the presigned POST lasts as long, at most
    seven days, and no longer than the gateway's credentials that sign it."""

    def __init__(self, objects: RestoreObjects, *, days: float, max_bytes: int,
                 pending_seconds: float, clock: Callable[[], float] = time.time) -> None:
        super().__init__(Path("restores"), days=days, max_bytes=max_bytes, clock=clock)
        self.objects = objects
        self.pending_seconds = pending_seconds
        self._handoffs: dict[str, dict[str, str]] = {}
        self._lock = threading.Lock()

    # ----- while a session starts ----------------------------------------------------------

    def prepare(self, checkout: Path, *, restore_id: str = "", visitor: str = "",
                repo_url: str = "", resolved_ref: str = "", provider: str = "",
                persistent_request: str = "", session_id: str = "",
                spec: str = "") -> list[str]:
        """Check the saved changes a launch asks for and open a new record for this
        session's; what the task needs is kept for ``handoff(session_id)``. ``checkout``
        is not touched: the task puts the files back itself."""
        del checkout
        handoff: dict[str, str] = {}
        lines: list[str] = []
        if restore_id:
            work = self.check(restore_id, visitor, provider)
            if work.repo_url != repo_url or work.resolved_ref != resolved_ref:
                raise AccessDenied("These saved changes were made in another repository or "
                                   "commit than this launch's.",
                                   hint="Use the link the restore offer gave.")
            handoff["restore_url"] = self.objects.presigned_get(
                restore_key(work.restore_id, "tar"), 3600)
            count = len(work.files)
            lines.append(f"Putting back {count} file{'s' if count != 1 else ''} you changed "
                         "in your earlier session.\n")
        if VISITOR_RE.fullmatch(visitor) and session_id:
            now = self.clock()
            prefix = f"v2/{provider}/"
            work = SavedWork(
                restore_id=secrets.token_urlsafe(24), session_id=session_id, visitor=visitor,
                provider=provider, spec=spec,
                persistent_spec=persistent_request[len(prefix):]
                if persistent_request.startswith(prefix) else spec,
                repo_url=repo_url, resolved_ref=resolved_ref, saved_at=0.0,
                expires_at=now + self.pending_seconds)
            self._write_meta(work)
            self._index(work)
            # S3 refuses a tar larger than what ``_settle`` would read anyway: the files'
            # cap and tar's own overhead.
            url, fields = self.objects.presigned_post(
                restore_key(work.restore_id, "tar"), self.max_bytes + _TAR_OVERHEAD,
                int(min(self.pending_seconds, _MAX_URL_SECONDS)))
            handoff["save_url"] = url
            handoff["save_fields"] = json.dumps(fields)
            handoff["save_max_bytes"] = str(self.max_bytes)
        if handoff and session_id:
            with self._lock:
                self._handoffs[session_id] = handoff
        return lines

    def handoff(self, session_id: str) -> dict[str, str]:
        """What the task of ``session_id`` is handed with its token (once): ``save_url``
        and ``save_fields`` (the presigned POST's URL and its form fields, as JSON),
        ``save_max_bytes`` and ``restore_url``, those that apply."""
        with self._lock:
            return self._handoffs.pop(session_id, {})

    def _index(self, work: SavedWork) -> None:
        """Add ``work`` to its visitor's list (newest last, at most ``_INDEX_ITEMS``). Two
        gateways adding at the same moment may lose one entry: that record's offer is then
        not shown, while its link still works."""
        items = [i for i in self._read_index(work.visitor)
                 if i.get("restore_id") != work.restore_id]
        items.append({"restore_id": work.restore_id, "session_id": work.session_id,
                      "launches": [f"v2/{work.provider}/{work.spec}",
                                   f"v2/{work.provider}/{work.persistent_spec}"]})
        self.objects.put_bytes(_index_key(work.visitor),
                               json.dumps({"items": items[-_INDEX_ITEMS:]}).encode(),
                               content_type="application/json")

    def _read_index(self, visitor: str) -> list[dict[str, Any]]:
        try:
            data = self.objects.get_bytes(_index_key(visitor), _META_BYTES)
            items = json.loads(data or b"{}").get("items", [])
        except ValueError:
            return []
        return [i for i in items if isinstance(i, dict)] if isinstance(items, list) else []

    # ----- when a session ends ----------------------------------------------------------

    def save(self, record: SessionRecord, launch: Mapping[str, Any] | None) -> SavedWork | None:
        """Nothing: the session's task saves its files itself as it stops."""
        del record, launch
        return None

    def _settle(self, work: SavedWork) -> SavedWork | None:
        """The record of a session whose tar has come: its files listed, kept
        ``restore_days`` from when the tar was written (as the lifecycle rule counts).
        ``None`` while no tar is there; a tar past the cap, or with no file to put back,
        is deleted with its record."""
        key = restore_key(work.restore_id, "tar")
        written = self.objects.modified_at(key)
        if written is None:
            return None
        try:
            data = self.objects.get_bytes(key, self.max_bytes + _TAR_OVERHEAD)
        except ValueError:
            log.warning("saved changes %s: larger than allowed, deleted", work.restore_id)
            data = b""
        if data is None:
            return None
        files: list[str] = []
        size = 0
        try:
            with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
                for member in tar:
                    if member.isfile() and _safe_rel(member.name) and len(files) < MAX_FILES:
                        files.append(member.name)
                        size += member.size
        except (tarfile.TarError, OSError, EOFError):
            files = []
        if not files or size > self.max_bytes:
            self._forget(work.restore_id)
            return None
        work = dataclasses.replace(work, saved_at=written, files=files, size_bytes=size,
                                   expires_at=written + self.days * _SECONDS_PER_DAY)
        if work.expires_at <= self.clock():
            return None
        self._write_meta(work)
        self._index(work)  # written again: the lifecycle rule counts the list's days anew
        log.info("session %s: %d changed files (%d bytes) kept as %s", work.session_id,
                 len(files), size, work.restore_id)
        return work

    def _forget(self, restore_id: str) -> None:
        for suffix in ("tar", "json"):
            self.objects.delete(restore_key(restore_id, suffix))

    # ----- finding, listing, forgetting ---------------------------------------------------

    def _write_meta(self, work: SavedWork) -> None:
        self.objects.put_bytes(restore_key(work.restore_id, "json"),
                               json.dumps(asdict(work)).encode(),
                               content_type="application/json")

    def find(self, restore_id: str) -> SavedWork | None:
        """The saved copy ``restore_id`` names once its session saved it, unless expired."""
        if not RESTORE_ID_RE.fullmatch(restore_id):
            return None
        try:
            data = self.objects.get_bytes(restore_key(restore_id, "json"), _META_BYTES)
            work = SavedWork(**json.loads(data)) if data is not None else None
        except (ValueError, TypeError):
            return None
        if work is None or work.expires_at <= self.clock():
            return None
        if not work.saved_at:
            return self._settle(work)
        return work

    def all(self) -> list[SavedWork]:
        """Not listed on AWS (that would need a bucket listing): only per visitor."""
        return []

    def offers(self, visitor: str, *, launch: str = "", session_id: str = "") -> list[SavedWork]:
        if not VISITOR_RE.fullmatch(visitor):
            return []
        found = []
        for item in self._read_index(visitor):
            if session_id and item.get("session_id") != session_id:
                continue
            if not session_id and launch not in item.get("launches", []):
                continue
            work = self.find(str(item.get("restore_id", "")))
            if work is not None and secrets.compare_digest(work.visitor, visitor):
                found.append(work)
        return sorted(found, key=lambda w: w.saved_at, reverse=True)

    def sweep(self) -> list[str]:
        """Nothing: the bucket's lifecycle rule deletes what is past its time."""
        return []
