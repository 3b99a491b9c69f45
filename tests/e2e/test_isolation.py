"""Local sessions kept apart: each under a uid of its own, unable to read another
session's token, files or the server's secrets (a real server, real Jupyter kernels).

Needs root, as uid isolation itself does (CI runs as root)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import sqlite3
import tempfile
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from binderless.backends import uids as uids_module
from binderless.backends.localspawn import LocalSpawner, free_port
from binderless.backends.protocols import ImageRef, SessionSpec
from binderless.settings import Settings
from tests.conftest import (
    FIXTURE_REPOS,
    LiveServer,
    file_spec,
    make_git_repo,
    start_server,
    stop_server,
)
from tests.e2e.streams import read_stream, run_code

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0, reason="sessions under uids of their own need root"),
]

#: What a hostile kernel tries; each attempt prints OK or the exception's name.
PROBE = """
import os, json
def attempt(what, action):
    try:
        action()
        return "READ"
    except Exception as exc:
        return type(exc).__name__
targets = json.loads({targets!r})
results = {{name: attempt(name, (lambda p=path: open(p, "rb").read(1)) if not name.startswith("list")
                    else (lambda p=path: os.listdir(p)))
           for name, path in targets.items()}}
with open("mine.txt", "w") as out:
    out.write("mine")
results["own file"] = open("mine.txt").read()
results["uid"] = os.getuid()
results["gid"] = os.getgid()
results["groups"] = os.getgroups()
results["home"] = os.environ["HOME"]
results["user"] = os.environ.get("USER")
print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def root() -> Iterator[Path]:
    """A state folder sessions under other uids can pass through (pytest's own temporary
    folders are closed to other users)."""
    folder = Path(tempfile.mkdtemp(prefix="binderless-isolation-"))
    folder.chmod(0o711)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def server(root: Path) -> Iterator[LiveServer]:
    live = start_server(root / "state", "--session-isolation", "uids",
                        env={"BINDERLESS_PROBE_SECRET": "server-only"})
    try:
        yield live
    finally:
        stop_server(live)


def launch(server: LiveServer, spec: str) -> dict[str, Any]:
    stream = read_stream(server.url(f"/build/{spec}"))
    assert stream.final["phase"] == "ready", stream.text()
    return stream.final


def session_row(state: Path, session_id: str) -> dict[str, Any]:
    with sqlite3.connect(state / "binderless.sqlite3") as db:
        db.row_factory = sqlite3.Row
        row = db.execute("SELECT * FROM sessions WHERE session_id = ?", (session_id,)).fetchone()
    return dict(row)


def probe(ready: dict[str, Any], targets: dict[str, str]) -> dict[str, Any]:
    out = run_code(ready["url"], ready["token"], PROBE.format(targets=json.dumps(targets)))
    return dict(json.loads(out.strip().splitlines()[-1]))


#: A build step that notes who runs it and whether it can read the server's database.
POST_BUILD = """#!/bin/bash
id -u > built-by.txt
if head -c1 {db} >/dev/null 2>&1; then echo READ; else echo DENIED; fi > db-from-build.txt
echo "$BINDERLESS_PROBE_SECRET" > env-from-build.txt
"""


def test_sessions_cannot_read_each_other_or_the_server(server: LiveServer, root: Path) -> None:
    state = server.state_dir
    source = root / "source"
    shutil.copytree(FIXTURE_REPOS / "python-requirements", source)
    (source / "postBuild").write_text(POST_BUILD.format(db=state / "binderless.sqlite3"))
    (source / "postBuild").chmod(0o755)
    repo = make_git_repo(source, root / "repo")
    spec = file_spec(repo)
    a, b = launch(server, spec), launch(server, spec)
    id_a, id_b = (r["url"].rstrip("/").rsplit("/", 1)[1] for r in (a, b))
    row_a = session_row(state, id_a)
    home_a = Path(row_a["home"])
    # A's kernel leaves a file behind, as a user would.
    assert probe(a, {})["own file"] == "mine"

    targets = {
        "A's environ": f"/proc/{row_a['backend_id']}/environ",
        "A's file": str(home_a / "mine.txt"),
        "list A's home": str(home_a),
        "A's log": str(home_a.parent / "jupyter.log"),
        "database": str(state / "binderless.sqlite3"),
        "list sessions": str(state / "sessions"),
        "list state": str(state),
        "list mirrors": str(state / "repos"),
        "uid allocation": str(state / "uids.json"),
    }
    if (state / "auth-secret").exists():
        targets["auth-secret"] = str(state / "auth-secret")
    seen = probe(b, targets)
    for name in targets:
        assert seen[name] == "PermissionError", (name, seen)
    # B works normally in its own folder, as a user of its own, in no group of the server.
    assert seen["own file"] == "mine"
    seen_a = probe(a, {})
    assert seen["uid"] != seen_a["uid"] and 0 not in (seen["uid"], seen_a["uid"])
    low, high = Settings().uid_range
    assert low <= seen["uid"] <= high
    assert seen["gid"] == seen["uid"] and seen["groups"] in ([], [seen["gid"]])
    assert seen["home"] == row_a["home"].replace(id_a, id_b)
    assert seen["user"] == "jovyan"
    # The build ran as a uid of its own too, without the server's environment or files.
    built = {name: (home_a / name).read_text().strip()
             for name in ("built-by.txt", "db-from-build.txt", "env-from-build.txt")}
    assert int(built["built-by.txt"]) not in (0, seen["uid"], seen_a["uid"])
    assert built["db-from-build.txt"] == "DENIED" and built["env-from-build.txt"] == ""
    # The environment is shared, readable, and not writable by sessions.
    env_python = probe(b, {"env python": str(
        Path(json.loads(run_code(b["url"], b["token"],
                                 "import sys, json; print(json.dumps(sys.prefix))")))
        / "bin" / "python")})
    assert env_python["env python"] == "READ"
    writable = run_code(b["url"], b["token"],
                        "import os, sys; print(os.access(sys.prefix, os.W_OK))").strip()
    assert writable == "False"
    env_dir = next(e for e in (state / "envs").iterdir() if not e.name.startswith("."))
    assert all(p.lstat().st_uid == 0 for p in [env_dir, *env_dir.rglob("*")])

    # A kernel that escapes its process group is still stopped with its session.
    run_code(a["url"], a["token"],
             "import subprocess; subprocess.Popen(['sleep', '600'], start_new_session=True)")
    uid_a = seen_a["uid"]
    assert uids_module.processes_of(uid_a)
    stop_server(server)
    assert uids_module.processes_of(uid_a) == []
    assert uids_module.processes_of(seen["uid"]) == []
    # Its old checkout is gone, or at least closed to whoever gets the uid next.
    assert not home_a.parent.exists() or home_a.parent.stat().st_mode & 0o777 == 0o700


def test_a_taken_port_means_another_port(server: LiveServer, root: Path) -> None:
    """Jupyter finds its port taken (here on purpose) and the spawner starts it again on
    another; nothing of this reaches the launch as a failure."""
    envs = [e for e in (server.state_dir / "envs").iterdir() if not e.name.startswith(".")]
    assert envs, "the first test builds the environment"
    thief = socket.socket()
    thief.bind(("127.0.0.1", 0))
    thief.listen()
    taken = thief.getsockname()[1]
    offered: list[int] = []

    def pick(avoid: Collection[int]) -> int:
        port = taken if not offered else free_port(avoid)
        offered.append(port)
        return port

    state = root / "port-state"
    settings = Settings(state_dir=state, session_isolation="off")
    spawner = LocalSpawner(settings, pick_port=pick)
    home = state / "sessions" / "s1" / "home"
    home.mkdir(parents=True)
    spec = SessionSpec(session_id="s1", image=ImageRef("k", "k", str(envs[0])), home=home,
                       base_url="/user/s1/", token="t" * 32)
    lines: list[str] = []

    async def scenario() -> None:
        handle = await spawner.start(spec, lines.append)
        try:
            assert handle.target == f"http://127.0.0.1:{offered[-1]}"
            async with httpx.AsyncClient() as client:
                for _ in range(100):
                    try:
                        answer = await client.get(handle.target + "/user/s1/api/status",
                                                  headers={"Authorization": "token " + "t" * 32})
                        if answer.status_code == 200:
                            break
                    except httpx.HTTPError:
                        pass
                    await asyncio.sleep(0.1)
                assert answer.status_code == 200
        finally:
            await spawner.stop(handle)

    try:
        asyncio.run(scenario())
    finally:
        thief.close()
    assert offered[0] == taken and len(offered) == 2
    assert any(f"Port {taken} was taken" in line for line in lines), lines
