"""Sessions as local Jupyter server processes, one process group each.

Processes run in their own session (``start_new_session``) so that a restarted
``binderless serve`` can adopt them; the handle's ``backend_id`` is the pid,
and the pid is trusted only while its command line still names the session.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from ..settings import Settings
from .protocols import ImageRef, LogSink, SessionHandle, SessionSpec

__all__ = ["LocalSpawner", "jupyter_command"]

PASSED_ENV = {"PATH", "LANG", "LANGUAGE", "TERM", "TZ", "USER", "LOGNAME", "SHELL", "TMPDIR",
              "PYENV_ROOT", "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE",
              "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_CERT", "PIP_FIND_LINKS"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def jupyter_command(spec: SessionSpec, env_dir: Path, port: int) -> list[str]:
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
    if os.geteuid() == 0:
        cmd.append("--allow-root")
    if spec.start_script:
        cmd = [str(spec.home / spec.start_script), *cmd]
    return cmd


class LocalSpawner:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._children: dict[str, asyncio.subprocess.Process] = {}

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
            script.chmod(script.stat().st_mode | 0o755)
        port = _free_port()
        # Only what a session needs: no server secrets (tokens, credentials) leak into it.
        env = {k: v for k, v in os.environ.items()
               if k in PASSED_ENV or k.startswith(("LC_", "UV_"))}
        env.update(spec.environment)
        env.update({
            "HOME": str(spec.home),
            "VIRTUAL_ENV": str(env_dir),
            "PATH": f"{env_dir / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
            "JUPYTER_TOKEN": spec.token,
            "BINDERLESS_SESSION_ID": spec.session_id,
            "PYTHONUNBUFFERED": "1",
        })
        logfile = spec.home.parent / "jupyter.log"
        with open(logfile, "ab") as out:
            proc = await asyncio.create_subprocess_exec(
                *jupyter_command(spec, env_dir, port),
                cwd=spec.home, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                start_new_session=True,
            )
        self._children[spec.session_id] = proc
        log(f"Started Jupyter (process {proc.pid}) on port {port}\n")
        return SessionHandle(session_id=spec.session_id, target=f"http://127.0.0.1:{port}",
                             backend_id=str(proc.pid))

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
        if pid is None:
            return
        _signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            if child is not None:
                try:
                    await asyncio.wait_for(child.wait(), timeout=0.1)
                    break
                except TimeoutError:
                    continue
            elif not _exists(pid):
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


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state != "Z"


def _signal_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
