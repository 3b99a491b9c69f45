"""Shared fixtures: safe AWS settings, fixture repositories, a live ``binderless serve``."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]
FIXTURE_REPOS = Path(__file__).resolve().parent / "fixtures" / "repos"

# No AWS SDK in a test may look for credentials on the network; every client talks to moto.
SAFE_AWS_ENV = {
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SECURITY_TOKEN": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
os.environ.update(SAFE_AWS_ENV)
# Powertools Tracer sends X-Ray segments only inside Lambda; say so for the Chalice tests.
os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")
os.environ.setdefault("UV_PYTHON_DOWNLOADS", "never")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def git(*args: str, cwd: Path) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "Test", "GIT_AUTHOR_EMAIL": "test@example.org",
           "GIT_COMMITTER_NAME": "Test", "GIT_COMMITTER_EMAIL": "test@example.org",
           "GIT_CONFIG_NOSYSTEM": "1", "HOME": str(cwd)}
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True,
                          text=True).stdout.strip()


def make_git_repo(source: Path, dest: Path) -> Path:
    """Copy a fixture folder to ``dest`` and commit it as a git repository on ``main``."""
    shutil.copytree(source, dest, symlinks=True)
    git("init", "-q", "-b", "main", cwd=dest)
    git("add", "-A", cwd=dest)
    git("commit", "-q", "-m", "fixture", cwd=dest)
    return dest


@pytest.fixture
def fixture_repo(tmp_path: Path) -> Callable[[str], Path]:
    """``fixture_repo("python-requirements")`` -> a fresh git repository of that fixture."""
    def make(name: str) -> Path:
        return make_git_repo(FIXTURE_REPOS / name, tmp_path / "repos" / name)
    return make


def file_spec(repo: Path, ref: str = "HEAD") -> str:
    """The ``git/<encoded file URL>/<ref>`` spec of a local repository."""
    return f"git/{quote('file://' + str(repo), safe='')}/{ref}"


class LiveServer:
    def __init__(self, base: str, state_dir: Path, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.base = base
        self.state_dir = state_dir
        self.proc = proc
        self.log = log

    def url(self, path: str) -> str:
        return self.base + path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def start_server(state_dir: Path, *extra: str, port: int | None = None,
                 env: dict[str, str] | None = None) -> LiveServer:
    port = port or free_port()
    log = state_dir.parent / f"serve-{port}.log"
    state_dir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "binderless", "serve", "--port", str(port),
           "--state-dir", str(state_dir), *extra]
    full_env = {**os.environ, "BINDERLESS_KEEPALIVE_SECONDS": "1",
                "BINDERLESS_FINAL_LINGER_SECONDS": "0", **(env or {})}
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=out, env=full_env, cwd=ROOT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"binderless serve exited early:\n{log.read_text()}")
        try:
            httpx.get(base + "/health", timeout=1)
            return LiveServer(base, state_dir, proc, log)
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"binderless serve did not start:\n{log.read_text()}")


def stop_server(server: LiveServer, sig: int = signal.SIGTERM) -> None:
    if server.proc.poll() is None:
        server.proc.send_signal(sig)
        try:
            server.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait()


@pytest.fixture
def live_server(tmp_path: Path) -> Iterator[LiveServer]:
    """A real ``binderless serve`` on a free port with its own state dir (stopped afterwards)."""
    server = start_server(tmp_path / "state")
    try:
        yield server
    finally:
        stop_server(server)
