"""Sessions as local Jupyter server processes, one process group each.

Processes run in their own session (``start_new_session``) so that a restarted
``binderless serve`` can adopt them; the handle's ``backend_id`` is the pid,
and the pid is trusted only while its command line still names the session.

With ``Settings.uid_sessions`` each session runs under a uid of its own (``uids.py``):
its checkout (and a signed-in user's project folder) belongs to that uid with mode
0700, the folders around them only let it pass, and when the session ends every
process of the uid goes (unless the same user has another session running).

Ports come from below the kernel's ephemeral range, which neither outgoing connections
nor ``bind(0)`` ever use, and are remembered until the session stops; should another
program still take one before Jupyter binds it, Jupyter says so and exits, and the
session is started again on another port.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Collection
from pathlib import Path

from ..errors import LaunchFailed
from ..settings import Settings
from .process import process_exists
from .protocols import ImageRef, LogSink, SessionHandle, SessionSpec
from .uids import UidPool, chown_tree, kill_uid, other_session_runs, unreachable_part

__all__ = ["LocalSpawner", "free_port", "jupyter_command", "script_command"]

log = logging.getLogger("binderless.localspawn")

PASSED_ENV = {"PATH", "LANG", "LANGUAGE", "TERM", "TZ", "USER", "LOGNAME", "SHELL", "TMPDIR",
              "PYENV_ROOT", "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE",
              "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_CERT", "PIP_FIND_LINKS"}
#: What Jupyter prints before it exits when its port was taken (``--port-retries=0``).
PORT_TAKEN = "is already in use"
#: Starts on another port after Jupyter found its port taken.
PORT_ATTEMPTS = 5
#: The user name sessions see (repo2docker images call their user jovyan too).
SESSION_USER = "jovyan"


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port(avoid: Collection[int] = ()) -> int:
    """A port on 127.0.0.1 free now, outside the ephemeral range where possible (the
    kernel hands those to every outgoing connection), and not in ``avoid``."""
    high = _ephemeral_low() - 1
    low = max(1024, high - 12000)
    if high - low >= 1000:
        for port in random.sample(range(low, high + 1), 200):
            if port not in avoid and _bindable(port):
                return port
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in avoid:
            return port


def _listening_inode(port: int) -> str | None:
    """The socket inode listening on 127.0.0.1:``port`` (or any address), if any."""
    wanted = {f"0100007F:{port:04X}", f"00000000:{port:04X}"}
    try:
        lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        if len(fields) > 9 and fields[1] in wanted and fields[3] == "0A":
            return fields[9]
    return None


def _group_owns(pgid: int, inode: str) -> bool:
    """Whether a process of group ``pgid`` (the server, or its start script's child)
    holds socket ``inode``."""
    target = f"socket:[{inode}]"
    pids = [pgid]
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and int(entry.name) != pgid:
            try:
                stat_line = Path(f"/proc/{entry.name}/stat").read_text()
                if int(stat_line.rsplit(")", 1)[1].split()[2]) == pgid:
                    pids.append(int(entry.name))
            except (OSError, ValueError, IndexError):
                continue
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                    return True
    return False


def jupyter_command(spec: SessionSpec, env_dir: Path, port: int, *,
                    as_root: bool | None = None) -> list[str]:
    """The command line of a session's Jupyter server (the token travels in the environment)."""
    cmd = [
        str(env_dir / "bin" / "jupyter-lab"),
        "--no-browser",
        "--ip=127.0.0.1",
        f"--port={port}",
        "--port-retries=0",
        f"--ServerApp.base_url={spec.base_url}",
        # A signed-in user's project folder, kept across sessions; else the checkout.
        f"--ServerApp.root_dir={spec.project.path if spec.project else spec.home}",
        "--ServerApp.allow_origin=*",
        "--ServerApp.allow_remote_access=True",
        "--ServerApp.trust_xheaders=True",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        f"--LabApp.extra_labextensions_path={env_dir / 'home' / '.local' / 'share' / 'jupyter'}",
    ]
    if os.geteuid() == 0 if as_root is None else as_root:
        cmd.append("--allow-root")
    if spec.start_script:
        script = spec.home / spec.start_script
        # A start without a #! line runs as a shell script, as postBuild does (a kernel
        # would refuse to exec it); repo2docker's entrypoint fails on one.
        cmd = [*script_command(script), *cmd]
    return cmd


def script_command(script: Path) -> list[str]:
    """How to run ``script``: itself, or through ``/bin/sh`` when it has no ``#!`` line."""
    try:
        with open(script, "rb") as handle:
            shebang = handle.read(2) == b"#!"
    except OSError:
        shebang = True  # let the exec say what is wrong with it
    return [str(script)] if shebang else ["/bin/sh", str(script)]


class LocalSpawner:
    def __init__(self, settings: Settings, *,
                 pick_port: Callable[[Collection[int]], int] = free_port,
                 uids: UidPool | None = None) -> None:
        """``pick_port(avoid)`` chooses each server's port; ``uids`` the sessions' uids
        (default: a pool under the state dir when ``settings.uid_sessions``)."""
        self.settings = settings
        self._children: dict[str, asyncio.subprocess.Process] = {}
        self._pick_port = pick_port
        self._ports: dict[str, int] = {}
        if uids is None and settings.uid_sessions:
            uids = UidPool(settings.state_dir / "uids.json", *settings.uid_range)
        self.uids = uids

    async def prepare(self, image: ImageRef) -> None:
        """Nothing to prepare: a built environment starts as it is."""

    async def running(self) -> dict[str, str]:
        """Servers here belong to this server process, which adopts them on start."""
        return {}

    async def start(self, spec: SessionSpec, log: LogSink) -> SessionHandle:
        env_dir = Path(spec.image.location)
        overlay = env_dir / "home"
        if overlay.is_dir():
            await asyncio.to_thread(shutil.copytree, overlay, spec.home, symlinks=True,
                                    dirs_exist_ok=True)
        if spec.start_script:
            script = spec.home / spec.start_script
            if not script.is_symlink():  # chmod would change the file it points to
                script.chmod(script.stat().st_mode | 0o755)
        uid: int | None = None
        if self.uids is not None:
            owner = spec.project.owner if spec.project else ""
            uid = await asyncio.to_thread(self.uids.for_session, spec.session_id, owner)
            try:
                await asyncio.to_thread(self._hand_over, spec, env_dir, uid)
            except BaseException:
                self.uids.release(spec.session_id)
                raise
        # Only what a session needs: no server secrets (tokens, credentials) leak into it.
        env = {k: v for k, v in os.environ.items()
               if k in PASSED_ENV or k.startswith(("LC_", "UV_"))}
        env.update(spec.environment)
        env.update({
            "HOME": str(spec.home),
            # repo2docker's images: REPO_DIR is the repository's folder, and ~/.local/bin
            # (where postBuild and pip --user put programs) comes first on PATH, then the
            # notebook server's environment, then a kernel environment of its own.
            "REPO_DIR": str(spec.home),
            "PATH": os.pathsep.join([str(spec.home / ".local" / "bin"), str(env_dir / "bin"),
                                     *([str(env_dir / "kernel" / "bin")]
                                       if (env_dir / "kernel" / "bin").is_dir() else []),
                                     os.environ.get("PATH", "")]),
            "VIRTUAL_ENV": str(env_dir),
            "JUPYTER_TOKEN": spec.token,
            "BINDERLESS_SESSION_ID": spec.session_id,
            "PYTHONUNBUFFERED": "1",
        })
        if uid is not None:
            env.update({"USER": SESSION_USER, "LOGNAME": SESSION_USER})
            env.pop("PYENV_ROOT", None)
            env.pop("TMPDIR", None)  # the server's own may be closed to the session
        try:
            proc, port = await self._start_server(spec, env_dir, env, uid, log)
        except BaseException:
            self._ports.pop(spec.session_id, None)
            if self.uids is not None:
                self.uids.release(spec.session_id)
            raise
        self._children[spec.session_id] = proc
        who = f" as user id {uid}" if uid is not None else ""
        # Visitors read this line; the process and port are for the server's log.
        log("Starting Jupyter...\n")
        logging.getLogger(__name__).info("session %s: Jupyter is process %d%s on port %d",
                                         spec.session_id, proc.pid, who, port)
        return SessionHandle(session_id=spec.session_id, target=f"http://127.0.0.1:{port}",
                             backend_id=str(proc.pid))

    async def _start_server(self, spec: SessionSpec, env_dir: Path, env: dict[str, str],
                            uid: int | None, log: LogSink,
                            ) -> tuple[asyncio.subprocess.Process, int]:
        """Start Jupyter and wait until it listens on its port or exits; start it again
        on another port when it exits saying its port was taken."""
        logfile = spec.home.parent / "jupyter.log"
        as_user: dict[str, object] = {}
        if uid is not None:
            as_user = {"user": uid, "group": uid, "extra_groups": [], "umask": 0o077}
        deadline = time.monotonic() + self.settings.ready_timeout_seconds
        for attempt in range(1, PORT_ATTEMPTS + 1):
            port = self._pick_port(set(self._ports.values()))
            self._ports[spec.session_id] = port
            # The log sits in the session's root-owned folder, closed to the session
            # (which could otherwise swap it for a link to a file the server then appends to).
            fd = os.open(logfile, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
            offset = os.lseek(fd, 0, os.SEEK_END)
            with os.fdopen(fd, "ab") as out:
                proc = await asyncio.create_subprocess_exec(
                    *jupyter_command(spec, env_dir, port, as_root=False if uid is not None else None),
                    cwd=spec.home, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                    start_new_session=True, **as_user,  # type: ignore[arg-type]
                )
            if await self._listens(proc, port, deadline):
                return proc, port
            if proc.returncode is None or PORT_TAKEN not in _read_from(logfile, offset):
                return proc, port  # not a port problem: the service reports what it is
            log(f"Port {port} was taken before Jupyter could use it; trying another "
                f"(attempt {attempt + 1}).\n")
        raise LaunchFailed(f"Jupyter found its port taken {PORT_ATTEMPTS} times in a row.",
                           hint="Another program is taking ports on this machine; "
                                "launch again.")

    @staticmethod
    async def _listens(proc: asyncio.subprocess.Process, port: int, deadline: float) -> bool:
        """Wait until ``proc`` (or its process group) listens on ``port``: ``True``; or
        until it exits or the deadline passes: ``False``."""
        delay = 0.02
        while time.monotonic() < deadline:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), timeout=delay)
            if proc.returncode is not None:
                return False
            inode = _listening_inode(port)
            if inode is not None and await asyncio.to_thread(_group_owns, proc.pid, inode):
                return True
            delay = min(delay * 1.5, 0.25)
        return False

    def _hand_over(self, spec: SessionSpec, env_dir: Path, uid: int) -> None:
        """Give the session's folders to ``uid`` and check it can reach what it runs."""
        for needed in (env_dir / "bin" / "python", spec.home):
            closed = unreachable_part(needed)
            if closed is not None:
                raise LaunchFailed(
                    f"Sessions run under user ids of their own, and cannot reach {needed}: "
                    f"{closed} is closed to other users.",
                    hint="Serve with a --state-dir (and workspaces root) that every user "
                         "may pass through, such as /var/lib/binderless, or allow it with "
                         f"chmod o+x {closed}.")
        session_dir = spec.home.parent
        # The session's folder stays root's: it holds the server's log of the session.
        os.chown(session_dir, os.geteuid(), os.getegid())
        os.chmod(session_dir, 0o711)
        chown_tree(spec.home, uid, uid)
        os.chmod(spec.home, 0o700)
        if spec.project is not None:
            project = spec.project.path
            # Its home is the server's (workspaces.py), so this name cannot be a link the
            # session made; a folder it already owns needs no walk.
            if project.lstat().st_uid != uid:
                chown_tree(project, uid, uid)
            os.chmod(project, 0o700)

    def _pid(self, handle: SessionHandle) -> int | None:
        try:
            pid = int(handle.backend_id)
        except ValueError:
            return None
        child = self._children.get(handle.session_id)
        if child is not None:
            return pid if child.returncode is None else None
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            return None
        marker = f"BINDERLESS_SESSION_ID={handle.session_id}".encode()
        return pid if marker in environ.split(b"\0") else None

    async def alive(self, handle: SessionHandle) -> bool:
        return self._pid(handle) is not None

    async def stop(self, handle: SessionHandle) -> None:
        pid = self._pid(handle)
        child = self._children.pop(handle.session_id, None)
        self._ports.pop(handle.session_id, None)
        try:
            if pid is not None:
                await self._stop_group(pid, child)
        finally:
            if self.uids is not None:
                await asyncio.to_thread(self._end_uid, handle.session_id)

    def _end_uid(self, session_id: str) -> None:
        """After a session of its own uid: no process left behind (a kernel that called
        ``setsid`` escapes its group), and its old checkout closed to whoever gets the
        uid next. A user's uid is left alone while another of their sessions runs."""
        assert self.uids is not None
        uid = self.uids.release(session_id)
        session_dir = self.settings.state_dir / "sessions" / session_id
        with contextlib.suppress(OSError):
            os.chmod(session_dir, 0o700)
        if uid is None or self.uids.shared_with_others(session_id, uid) or \
                other_session_runs(uid, session_id):
            return
        if not kill_uid(uid):
            log.warning("processes of user id %s survived the end of session %s", uid,
                        session_id)

    async def _stop_group(self, pid: int, child: asyncio.subprocess.Process | None) -> None:
        _signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            if child is not None:
                try:
                    await asyncio.wait_for(child.wait(), timeout=0.1)
                    break
                except TimeoutError:
                    continue
            elif not process_exists(pid):
                break
            await asyncio.sleep(0.1)
        else:
            _signal_group(pid, signal.SIGKILL)
            if child is not None:
                await child.wait()
        # Kernels and other children of the server belong to its process group.
        _signal_group(pid, signal.SIGKILL)

    async def tail(self, handle: SessionHandle, lines: int = 20) -> list[str]:
        logfile = self.settings.state_dir / "sessions" / handle.session_id / "jupyter.log"
        try:
            text = logfile.read_text(errors="replace")
        except OSError:
            return []
        return [line for line in text.splitlines() if line.strip()][-lines:]


def _read_from(path: Path, offset: int) -> str:
    try:
        with open(path, "rb") as handle:
            handle.seek(offset)
            return handle.read(1 << 20).decode(errors="replace")
    except OSError:
        return ""


def _signal_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
