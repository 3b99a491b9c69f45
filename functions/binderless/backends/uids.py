"""User ids for local sessions, so that one person's code cannot touch another's.

When sessions are isolated (``Settings.uid_sessions``), each runs under a uid (and a gid
of the same number) from ``Settings.session_uid_range``:

- a signed-in user always gets the same uid, kept in ``<state>/uids.json``: their
  project folders keep their owner from one session to the next;
- an anonymous session gets a uid that no signed-in user holds, no process runs under
  and no other session of this process is starting with. A cursor walks the range, so
  a uid comes back only after the whole range was handed out.

No ``/etc/passwd`` entry is needed: the kernel only knows numbers, and sessions get
``HOME`` and ``USER`` from their environment. Also here, the file-system helpers the
spawner uses to hand folders to a uid without following a session's symbolic links,
and to stop every process a uid still runs when its session ends.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import signal
import stat
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from ..errors import QuotaExceeded

__all__ = [
    "UidPool",
    "chown_tree",
    "kill_uid",
    "other_session_runs",
    "processes_of",
    "running_uids",
    "uid_of_process",
    "unreachable_part",
]


def _proc_uids() -> Iterator[tuple[int, set[int]]]:
    """(pid, its real, effective, saved and file-system uids) of every live process.

    Read from ``status``, not from the owner of ``/proc/<pid>``: a process that makes
    itself non-dumpable shows there as root's."""
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/status", "rb") as handle:
                for line in handle:
                    if line.startswith(b"State:") and line.split()[1:2] in ([b"Z"], [b"X"]):
                        break  # dead, waiting to be reaped: nothing left to stop
                    if line.startswith(b"Uid:"):
                        yield int(entry.name), {int(n) for n in line.split()[1:]}
                        break
        except (OSError, ValueError):
            continue


def running_uids() -> set[int]:
    """The uids any process currently runs as."""
    return {uid for _pid, uids in _proc_uids() for uid in uids}


def processes_of(uid: int) -> list[int]:
    return [pid for pid, uids in _proc_uids() if uid in uids]


def other_session_runs(uid: int, session_id: str) -> bool:
    """Whether a process of ``uid`` belongs to a session other than ``session_id`` (a
    signed-in user's other session, perhaps adopted after a restart)."""
    mine = f"BINDERLESS_SESSION_ID={session_id}".encode()
    for pid in processes_of(uid):
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(v.startswith(b"BINDERLESS_SESSION_ID=") and v != mine for v in environ):
            return True
    return False


def uid_of_process(pid: int) -> int | None:
    """The real uid of process ``pid`` (``None`` when it is gone)."""
    try:
        with open(f"/proc/{pid}/status", "rb") as handle:
            for line in handle:
                if line.startswith(b"Uid:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def kill_uid(uid: int, rounds: int = 5) -> bool:
    """SIGKILL every process of ``uid`` (those a session started with ``setsid`` and left
    behind too). Repeated a few times, since a process may fork while we look; ``True``
    when none is left."""
    if uid == 0:
        raise ValueError("refusing to kill root's processes")
    for _ in range(rounds):
        pids = processes_of(uid)
        if not pids:
            return True
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
    return not processes_of(uid)


def chown_tree(root: Path, uid: int, gid: int) -> None:
    """Give ``root`` and everything under it to ``uid:gid``, never following a link.

    Walks by directory descriptors (``os.fwalk``), so swapping a folder for a symbolic
    link while the walk runs leads nowhere. A file with several hard links is skipped:
    its other names may be outside the tree (a git object shared with a mirror, or a
    file a session linked to), and changing its owner would change theirs."""
    os.chown(root, uid, gid, follow_symlinks=False)
    for _dirpath, dirnames, filenames, dirfd in os.fwalk(root, follow_symlinks=False):
        for name in (*dirnames, *filenames):
            try:
                st = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
                if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
                    continue
                os.chown(name, uid, gid, dir_fd=dirfd, follow_symlinks=False)
            except FileNotFoundError:
                continue


def unreachable_part(path: str | os.PathLike[str]) -> Path | None:
    """The first folder on the way to ``path`` (links resolved) that other users cannot
    pass through, or ``path`` itself when they cannot use it (no ``x`` for others);
    ``None`` when a session under another uid reaches it."""
    resolved = Path(os.path.realpath(path))
    for part in (*reversed(resolved.parents), resolved):
        try:
            mode = part.stat().st_mode
        except OSError:
            return part
        if not mode & stat.S_IXOTH:
            return part
    return None


class UidPool:
    """Hands out uids from ``first``..``last`` (inclusive); see the module docstring.

    Safe for concurrent launches in one process (a lock around choose-and-reserve) and
    across restarts (users' uids are stored in ``path``, written whole and renamed, under
    an exclusive ``flock`` so that two processes sharing a state dir agree)."""

    def __init__(self, path: Path, first: int, last: int, *,
                 in_use: Callable[[], set[int]] = running_uids) -> None:
        if not 0 < first <= last:
            raise ValueError("the uid range must be first-last with 0 < first <= last")
        self.path = path
        self.first = first
        self.last = last
        self._in_use = in_use
        self._lock = threading.Lock()
        #: Sessions of this process: session id -> uid (reserved until released).
        self._sessions: dict[str, int] = {}

    @contextlib.contextmanager
    def _state(self) -> Iterator[dict[str, object]]:
        """The stored allocation, locked for the duration, written back afterwards."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock_path = self.path.with_name(self.path.name + ".lock")
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                data = json.loads(self.path.read_text())
            except FileNotFoundError:
                data = {}
            except ValueError as exc:
                raise ValueError(f"{self.path} is damaged; delete it only if no session "
                                 "or project folder uses its user ids") from exc
            if not isinstance(data, dict):
                data = {}
            before = json.dumps(data, sort_keys=True)
            yield data
            if json.dumps(data, sort_keys=True) != before:
                tmp = self.path.with_name(f".{self.path.name}.{secrets.token_hex(4)}")
                with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600),
                               "w") as out:
                    json.dump(data, out, indent=1, sort_keys=True)
                os.replace(tmp, self.path)
        finally:
            os.close(fd)

    @staticmethod
    def _users(data: dict[str, object]) -> dict[str, int]:
        users = data.setdefault("users", {})
        assert isinstance(users, dict)
        return users

    def _pick(self, data: dict[str, object], taken: set[int]) -> int:
        size = self.last - self.first + 1
        cursor = data.get("next", self.first)
        start = cursor if isinstance(cursor, int) and self.first <= cursor <= self.last \
            else self.first
        for step in range(size):
            uid = self.first + (start - self.first + step) % size
            if uid not in taken:
                data["next"] = self.first + (uid - self.first + 1) % size
                return uid
        raise QuotaExceeded(
            f"Every user id for sessions ({self.first}-{self.last}) is in use.",
            hint="Try again when sessions have ended, or give the server a larger "
                 "session_uid_range.")

    def for_user(self, user_id: str) -> int:
        """The signed-in user's uid: the same one every time."""
        with self._lock, self._state() as data:
            users = self._users(data)
            if user_id not in users:
                taken = set(users.values()) | set(self._sessions.values()) | self._in_use()
                users[user_id] = self._pick(data, taken)
            return int(users[user_id])

    @staticmethod
    def _stored_sessions(data: dict[str, object]) -> dict[str, int]:
        sessions = data.setdefault("sessions", {})
        assert isinstance(sessions, dict)
        return sessions

    def for_session(self, session_id: str, owner: str = "") -> int:
        """Reserve the uid a session runs as: its owner's, or (anonymous) a free one.

        The choice is stored too, so that stopping the session after a restart still
        finds the processes it left. Stored entries of sessions that never ended (a
        crash) do not keep their uid busy: only live processes and this process's
        reservations do."""
        with self._lock:
            if session_id in self._sessions:
                return self._sessions[session_id]
            with self._state() as data:
                users = self._users(data)
                if owner:
                    if owner not in users:
                        taken = (set(users.values()) | set(self._sessions.values())
                                 | self._in_use())
                        users[owner] = self._pick(data, taken)
                    uid = int(users[owner])
                else:
                    taken = (set(users.values()) | set(self._sessions.values())
                             | self._in_use())
                    uid = self._pick(data, taken)
                self._stored_sessions(data)[session_id] = uid
            self._sessions[session_id] = uid
            return uid

    def uid_of(self, session_id: str) -> int | None:
        """The uid a session was given, by this process or one before it."""
        with self._lock:
            if session_id in self._sessions:
                return self._sessions[session_id]
            with self._state() as data:
                uid = self._stored_sessions(data).get(session_id)
            return int(uid) if isinstance(uid, int) else None

    def release(self, session_id: str) -> int | None:
        """Forget the session's reservation; returns the uid it had, if any."""
        with self._lock:
            uid = self._sessions.pop(session_id, None)
            with self._state() as data:
                stored = self._stored_sessions(data).pop(session_id, None)
            if uid is None and isinstance(stored, int):
                uid = stored
            return uid

    def is_user_uid(self, uid: int) -> bool:
        with self._lock, self._state() as data:
            return uid in self._users(data).values()

    def shared_with_others(self, session_id: str, uid: int) -> bool:
        """Whether another session of this process holds ``uid`` (a user's other session)."""
        with self._lock:
            return any(n == uid and s != session_id for s, n in self._sessions.items())
