"""Local state in one SQLite file: launches, sessions (which double as routes), events."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import SessionNotFound
from ..events import Event
from .protocols import (
    BuildClaim,
    EnvironmentRecord,
    RepoUse,
    Reservation,
    Route,
    SessionRecord,
)

__all__ = ["Database", "SessionRecord", "SqliteEventLog", "SqliteRoutes", "SqliteStore"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS launches (
    launch_id TEXT PRIMARY KEY,
    provider TEXT NOT NULL,
    spec TEXT NOT NULL,
    resolved_ref TEXT NOT NULL DEFAULT '',
    image_key TEXT NOT NULL DEFAULT '',
    phase TEXT NOT NULL DEFAULT 'waiting',
    session_id TEXT NOT NULL DEFAULT '',
    built INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    finished_at REAL,
    request TEXT NOT NULL DEFAULT '',
    driver TEXT NOT NULL DEFAULT '',
    lease_until REAL
);
CREATE TABLE IF NOT EXISTS sessions (
    session_id TEXT PRIMARY KEY,
    launch_id TEXT NOT NULL,
    owner TEXT NOT NULL DEFAULT '',
    repo_url TEXT NOT NULL,
    resolved_ref TEXT NOT NULL,
    image_key TEXT NOT NULL,
    home TEXT NOT NULL,
    target TEXT NOT NULL DEFAULT '',
    token TEXT NOT NULL,
    backend_id TEXT NOT NULL DEFAULT '',
    status TEXT NOT NULL,
    created_at REAL NOT NULL,
    last_activity REAL NOT NULL,
    stopped_at REAL,
    stop_reason TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS builds (
    image_key TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    stream TEXT NOT NULL,
    status TEXT NOT NULL,
    image_name TEXT NOT NULL DEFAULT '',
    claimed_at REAL NOT NULL,
    finished_at REAL
);
CREATE TABLE IF NOT EXISTS environments (
    image_key TEXT PRIMARY KEY,
    image_name TEXT NOT NULL DEFAULT '',
    files TEXT NOT NULL DEFAULT '[]',
    built_at REAL,
    last_launched_at REAL,
    launches INTEGER NOT NULL DEFAULT 0,
    held_at REAL,
    pruning_since REAL
);
CREATE TABLE IF NOT EXISTS environment_repos (
    image_key TEXT NOT NULL,
    repo_url TEXT NOT NULL,
    ref TEXT NOT NULL,
    launches INTEGER NOT NULL DEFAULT 0,
    last_launched_at REAL NOT NULL,
    PRIMARY KEY (image_key, repo_url, ref)
);
CREATE TABLE IF NOT EXISTS deliveries (
    delivery TEXT PRIMARY KEY,
    expires_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    stream TEXT NOT NULL,
    seq INTEGER NOT NULL,
    data TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (stream, seq)
);
"""


class Database:
    """One connection, serialised by a lock; WAL so readers never block the writer."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._conn.row_factory = sqlite3.Row
        self._lock = threading.RLock()
        with self._lock:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.executescript(SCHEMA)
            self._migrate()

    def _migrate(self) -> None:
        """Columns added since a state dir was first made (SQLite adds them in place)."""
        have = {row[1] for row in self._conn.execute("PRAGMA table_info(launches)")}
        for column, kind in (("request", "TEXT NOT NULL DEFAULT ''"),
                             ("driver", "TEXT NOT NULL DEFAULT ''"), ("lease_until", "REAL")):
            if column not in have:
                self._conn.execute(f"ALTER TABLE launches ADD COLUMN {column} {kind}")

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Cursor]:
        with self._lock:
            cur = self._conn.cursor()
            try:
                cur.execute("BEGIN IMMEDIATE")
                yield cur
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            finally:
                cur.close()

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return list(self._conn.execute(sql, params))

    def close(self) -> None:
        with self._lock:
            self._conn.close()


class SqliteStore:
    """Launch and session records."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def create_launch(self, launch_id: str, provider: str, spec: str, now: float,
                      **fields: Any) -> None:
        values = {"launch_id": launch_id, "provider": provider, "spec": spec, "created_at": now,
                  **fields}
        with self.db.transaction() as cur:
            cur.execute(
                f"INSERT INTO launches ({', '.join(values)}) "
                f"VALUES ({', '.join('?' for _ in values)})", tuple(values.values()),
            )

    def update_launch(self, launch_id: str, **fields: Any) -> None:
        if not fields:
            return
        cols = ", ".join(f"{k} = ?" for k in fields)
        with self.db.transaction() as cur:
            cur.execute(f"UPDATE launches SET {cols} WHERE launch_id = ?", (*fields.values(), launch_id))

    def get_launch(self, launch_id: str) -> dict[str, Any] | None:
        rows = self.db.query("SELECT * FROM launches WHERE launch_id = ?", (launch_id,))
        return dict(rows[0]) if rows else None

    def take_launch(self, launch_id: str, driver: str, *, was_driver: str,
                    was_lease: float | None, lease_until: float) -> bool:
        with self.db.transaction() as cur:
            cur.execute(
                "UPDATE launches SET driver = ?, lease_until = ? WHERE launch_id = ? "
                "AND driver = ? AND lease_until IS ? AND phase NOT IN ('ready', 'failed')",
                (driver, lease_until, launch_id, was_driver, was_lease))
            return cur.rowcount == 1

    def launch_durations(self, image_key: str, built: bool, limit: int = 10) -> list[float]:
        rows = self.db.query(
            "SELECT finished_at - created_at AS d FROM launches WHERE image_key = ? AND built = ? "
            "AND phase = 'ready' AND finished_at IS NOT NULL ORDER BY created_at DESC LIMIT ?",
            (image_key, int(built), limit),
        )
        return [float(r["d"]) for r in rows]

    def unfinished_launches(self) -> list[str]:
        rows = self.db.query("SELECT launch_id FROM launches WHERE phase NOT IN ('ready', 'failed')")
        return [str(r["launch_id"]) for r in rows]

    def metrics(self) -> dict[str, object]:
        """Counts and durations for ``/metrics``."""
        launches = self.db.query(
            "SELECT phase, built, COUNT(*) AS n, SUM(finished_at - created_at) AS total "
            "FROM launches WHERE finished_at IS NOT NULL GROUP BY phase, built")
        sessions = self.db.query("SELECT status, COUNT(*) AS n FROM sessions GROUP BY status")
        running = self.db.query("SELECT COUNT(*) AS n FROM launches WHERE finished_at IS NULL")
        return {
            "launches": [(r["phase"], bool(r["built"]), int(r["n"]), float(r["total"] or 0.0))
                         for r in launches],
            "sessions": {r["status"]: int(r["n"]) for r in sessions},
            "in_progress": int(running[0]["n"]),
        }

    def claim_build(self, key: str, owner: str, stream: str, now: float,
                    stale_after: float = 3600.0) -> BuildClaim:
        with self.db.transaction() as cur:
            row = cur.execute("SELECT * FROM builds WHERE image_key = ?", (key,)).fetchone()
            if row is not None and row["status"] == "building" and \
                    row["claimed_at"] >= now - stale_after:
                return BuildClaim(False, row["owner"], row["stream"], row["status"],
                                  row["image_name"])
            cur.execute(
                "INSERT OR REPLACE INTO builds (image_key, owner, stream, status, claimed_at) "
                "VALUES (?, ?, ?, 'building', ?)", (key, owner, stream, now))
        return BuildClaim(True, owner, stream, "building")

    def finish_build(self, key: str, status: str, image_name: str = "", *,
                     owner: str | None = None) -> None:
        if status not in ("built", "failed"):
            raise ValueError(f"A build finishes as 'built' or 'failed', not {status!r}.")
        sql = "UPDATE builds SET status = ?, image_name = ?, finished_at = ? WHERE image_key = ?"
        params: tuple[Any, ...] = (status, image_name, time.time(), key)
        if owner is not None:
            sql += " AND owner = ?"
            params += (owner,)
        with self.db.transaction() as cur:
            cur.execute(sql, params)

    def release_builds(self) -> None:
        """Fail the builds a previous process claimed (one server owns a state dir)."""
        with self.db.transaction() as cur:
            cur.execute("UPDATE builds SET status = 'failed', finished_at = ? "
                        "WHERE status = 'building'", (time.time(),))

    def get_build(self, key: str) -> BuildClaim | None:
        rows = self.db.query("SELECT * FROM builds WHERE image_key = ?", (key,))
        if not rows:
            return None
        row = rows[0]
        return BuildClaim(False, row["owner"], row["stream"], row["status"], row["image_name"])

    def add_session(self, record: SessionRecord) -> None:
        with self.db.transaction() as cur:
            self._insert_session(cur, record)

    def reserve_session(self, record: SessionRecord, *, max_total: int,
                        max_of_repo: int) -> Reservation:
        # BEGIN IMMEDIATE takes the write lock before the count: no other writer (thread or
        # process) can add a session between the count and the insert.
        with self.db.transaction() as cur:
            row = cur.execute(
                "SELECT COUNT(*) AS n, COALESCE(SUM(repo_url = ?), 0) AS mine FROM sessions "
                "WHERE status IN ('starting', 'running')", (record.repo_url,)).fetchone()
            total, mine = int(row["n"]), int(row["mine"])
            if total >= max_total:
                return Reservation("server", total)
            if mine >= max_of_repo:
                return Reservation("repo", mine)
            self._insert_session(cur, record)
        return Reservation()

    @staticmethod
    def _insert_session(cur: sqlite3.Cursor, record: SessionRecord) -> None:
        cur.execute(
            "INSERT INTO sessions (session_id, launch_id, owner, repo_url, resolved_ref, "
            "image_key, home, target, token, backend_id, status, created_at, last_activity) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (record.session_id, record.launch_id, record.owner, record.repo_url,
             record.resolved_ref, record.image_key, record.home, record.target, record.token,
             record.backend_id, record.status, record.created_at, record.last_activity),
        )

    def update_session(self, session_id: str, **fields: Any) -> None:
        cols = ", ".join(f"{k} = ?" for k in fields)
        with self.db.transaction() as cur:
            cur.execute(f"UPDATE sessions SET {cols} WHERE session_id = ?", (*fields.values(), session_id))

    def get_session(self, session_id: str) -> SessionRecord:
        rows = self.db.query("SELECT * FROM sessions WHERE session_id = ?", (session_id,))
        if not rows:
            raise SessionNotFound(f"There is no session {session_id!r}.")
        return SessionRecord(**dict(rows[0]))

    def sessions(self, *statuses: str) -> list[SessionRecord]:
        marks = ",".join("?" for _ in statuses)
        rows = self.db.query(f"SELECT * FROM sessions WHERE status IN ({marks})", statuses)
        return [SessionRecord(**dict(r)) for r in rows]

    def count_active(self, repo_url: str | None = None) -> int:
        sql = "SELECT COUNT(*) AS n FROM sessions WHERE status IN ('starting', 'running')"
        params: tuple[Any, ...] = ()
        if repo_url is not None:
            sql += " AND repo_url = ?"
            params = (repo_url,)
        return int(self.db.query(sql, params)[0]["n"])

    def active_counts(self, repo_url: str) -> tuple[int, int]:
        row = self.db.query(
            "SELECT COUNT(*) AS n, COALESCE(SUM(repo_url = ?), 0) AS mine FROM sessions "
            "WHERE status IN ('starting', 'running')", (repo_url,))[0]
        return int(row["n"]), int(row["mine"])

    def flush(self, launch_id: str) -> None:
        """Every write is committed at once here: nothing is held."""

    def remember_delivery(self, key: str, now: float, ttl: float) -> bool:
        """``Deliveries``: one IMMEDIATE transaction makes the check and the insert one step;
        expired records go in the same step, so the table holds one ``ttl`` of deliveries."""
        with self.db.transaction() as cur:
            cur.execute("DELETE FROM deliveries WHERE expires_at <= ?", (now,))
            cur.execute("INSERT OR IGNORE INTO deliveries (delivery, expires_at) VALUES (?, ?)",
                        (key, now + ttl))
            return cur.rowcount == 1

    # ----- EnvironmentUsage (the catalogue's records; see ``catalogue.py``) -------------

    def hold_environment(self, key: str, now: float, *, stale_after: float = 300.0) -> bool:
        with self.db.transaction() as cur:
            row = cur.execute("SELECT pruning_since FROM environments WHERE image_key = ?",
                              (key,)).fetchone()
            if row is not None and row["pruning_since"] is not None and \
                    row["pruning_since"] > now - stale_after:
                return False
            cur.execute(
                "INSERT INTO environments (image_key, held_at) VALUES (?, ?) "
                "ON CONFLICT(image_key) DO UPDATE SET held_at = excluded.held_at, "
                "pruning_since = NULL", (key, now))
        return True

    def note_environment(self, key: str, now: float, *, image_name: str = "",
                         built: bool = False, files: tuple[str, ...] = (),
                         repo_url: str = "", ref: str = "") -> None:
        with self.db.transaction() as cur:
            cur.execute("INSERT OR IGNORE INTO environments (image_key) VALUES (?)", (key,))
            if image_name:
                cur.execute("UPDATE environments SET image_name = ? WHERE image_key = ?",
                            (image_name, key))
            if built:
                cur.execute("UPDATE environments SET built_at = ?, files = ? "
                            "WHERE image_key = ?", (now, json.dumps(list(files)), key))
            if repo_url:
                cur.execute("UPDATE environments SET launches = launches + 1, "
                            "last_launched_at = ? WHERE image_key = ?", (now, key))
                cur.execute(
                    "INSERT INTO environment_repos (image_key, repo_url, ref, launches, "
                    "last_launched_at) VALUES (?, ?, ?, 1, ?) "
                    "ON CONFLICT(image_key, repo_url, ref) DO UPDATE SET "
                    "launches = launches + 1, last_launched_at = excluded.last_launched_at",
                    (key, repo_url, ref, now))

    def environment_records(self) -> list[EnvironmentRecord]:
        repos: dict[str, list[RepoUse]] = {}
        for r in self.db.query("SELECT * FROM environment_repos "
                               "ORDER BY last_launched_at DESC"):
            repos.setdefault(r["image_key"], []).append(
                RepoUse(r["repo_url"], r["ref"], int(r["launches"]),
                        float(r["last_launched_at"])))
        records = []
        for r in self.db.query("SELECT * FROM environments ORDER BY image_key"):
            try:
                files = tuple(str(f) for f in json.loads(r["files"] or "[]"))
            except ValueError:
                files = ()
            records.append(EnvironmentRecord(
                key=r["image_key"], image_name=r["image_name"], files=files,
                built_at=r["built_at"], last_launched_at=r["last_launched_at"],
                launches=int(r["launches"]), repos=tuple(repos.get(r["image_key"], ()))))
        return records

    def begin_prune(self, key: str, now: float, *, grace: float,
                    stale_after: float = 300.0) -> str:
        # One IMMEDIATE transaction: a launch's hold (or its session's image_key) is
        # written either before this check, which then sees it, or after the mark, and
        # then the hold is refused (see ``hold_environment``).
        with self.db.transaction() as cur:
            active = cur.execute(
                "SELECT COUNT(*) FROM sessions WHERE image_key = ? "
                "AND status IN ('starting', 'running')", (key,)).fetchone()[0]
            if active:
                return f"{active} session{'s' if active != 1 else ''} running"
            build = cur.execute("SELECT status FROM builds WHERE image_key = ?",
                                (key,)).fetchone()
            if build is not None and build["status"] == "building":
                return "it is being built"
            row = cur.execute("SELECT held_at, pruning_since FROM environments "
                              "WHERE image_key = ?", (key,)).fetchone()
            if row is not None and row["held_at"] is not None and row["held_at"] > now - grace:
                return "a launch started using it moments ago"
            if row is not None and row["pruning_since"] is not None and \
                    row["pruning_since"] > now - stale_after:
                return "another prune is removing it"
            cur.execute(
                "INSERT INTO environments (image_key, pruning_since) VALUES (?, ?) "
                "ON CONFLICT(image_key) DO UPDATE SET pruning_since = excluded.pruning_since",
                (key, now))
        return ""

    def end_prune(self, key: str, *, removed: bool) -> None:
        with self.db.transaction() as cur:
            if removed:
                cur.execute("DELETE FROM environments WHERE image_key = ?", (key,))
                cur.execute("DELETE FROM environment_repos WHERE image_key = ?", (key,))
            else:
                cur.execute("UPDATE environments SET pruning_since = NULL WHERE image_key = ?",
                            (key,))


class SqliteRoutes:
    """The route table of the local mode: running sessions, read from the sessions table."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def add(self, route: Route) -> None:
        with self.db.transaction() as cur:
            cur.execute(
                "UPDATE sessions SET target = ?, token = ?, status = 'running' WHERE session_id = ?",
                (route.target, route.token, route.session_id),
            )

    def lookup(self, session_id: str) -> Route:
        rows = self.db.query(
            "SELECT session_id, target, token, owner FROM sessions "
            "WHERE session_id = ? AND status = 'running'",
            (session_id,),
        )
        if not rows:
            raise SessionNotFound(
                f"Session {session_id} is not running.",
                hint="It may have been stopped after being idle. Launch the repository again.",
            )
        return Route(**dict(rows[0]))

    def remove(self, session_id: str) -> None:
        with self.db.transaction() as cur:
            cur.execute("UPDATE sessions SET target = '' WHERE session_id = ?", (session_id,))


class SqliteEventLog:
    """Event streams in SQLite, with in-process wake-ups for followers."""

    def __init__(self, db: Database, clock: Any = time.time) -> None:
        self.db = db
        self._clock = clock
        self._wakeups: dict[str, asyncio.Event] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    def append(self, stream: str, event: Event) -> int:
        data = json.dumps(event.to_json())
        with self.db.transaction() as cur:
            row = cur.execute(
                "SELECT COALESCE(MAX(seq), 0) + 1 FROM events WHERE stream = ?", (stream,)
            ).fetchone()
            seq = int(row[0])
            cur.execute(
                "INSERT INTO events (stream, seq, data, created_at) VALUES (?,?,?,?)",
                (stream, seq, data, self._clock()),
            )
        self._wake(stream)
        return seq

    def _wake(self, stream: str) -> None:
        waiter = self._wakeups.pop(stream, None)
        if waiter is None or self._loop is None:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            waiter.set()
        else:
            self._loop.call_soon_threadsafe(waiter.set)

    def read(self, stream: str, after: int = 0) -> list[tuple[int, Event]]:
        rows = self.db.query(
            "SELECT seq, data FROM events WHERE stream = ? AND seq > ? ORDER BY seq",
            (stream, after),
        )
        return [(int(r["seq"]), Event.from_json(json.loads(r["data"]))) for r in rows]

    def last_event_at(self, stream: str) -> float | None:
        rows = self.db.query("SELECT MAX(created_at) AS t FROM events WHERE stream = ?", (stream,))
        value = rows[0]["t"]
        return float(value) if value is not None else None

    def last_seq(self, stream: str) -> int:
        rows = self.db.query("SELECT COALESCE(MAX(seq), 0) AS n FROM events WHERE stream = ?", (stream,))
        return int(rows[0]["n"])

    async def follow(
        self, stream: str, after: int = 0, *, tick: float = 20.0
    ) -> AsyncIterator[tuple[int, Event] | None]:
        self._loop = asyncio.get_running_loop()
        while True:
            waiter = self._wakeups.setdefault(stream, asyncio.Event())
            items = self.read(stream, after)
            for seq, event in items:
                after = seq
                yield seq, event
                if event.is_final:
                    return
            if items:
                continue
            try:
                await asyncio.wait_for(waiter.wait(), timeout=tick)
            except TimeoutError:
                yield None
