"""Local isolation without Jupyter: the refusal to run a shared server's sessions as the
server's user, the uid pool, the modes of the state folder, the hand-over of folders
to a session's uid, and the clean-up of interrupted builds."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from binderless.backends.localspawn import LocalSpawner
from binderless.backends.protocols import ImageRef, ProjectMount, SessionSpec
from binderless.backends.uids import UidPool, chown_tree
from binderless.backends.uvbuilder import MARKER, UvBuilder
from binderless.errors import LaunchFailed, QuotaExceeded
from binderless.local import check_isolation, local_service
from binderless.settings import Settings
from binderless.workspaces import Workspaces
from tests.conftest import ROOT

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="changing owners needs root")


# ----- refusing to start -----------------------------------------------------------------

@pytest.mark.parametrize("shared", [
    {"host": "0.0.0.0"},
    {"public_url": "https://binder.example.org"},
    {"oidc_issuer": "https://id.example.org", "oidc_client_id": "c"},
])
def test_a_shared_server_refuses_sessions_as_its_own_user(shared: dict[str, str]) -> None:
    settings = Settings(session_isolation="off", **shared)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="as the server's own user") as refused:
        check_isolation(settings, euid=0)
    assert "run binderless as root" in str(refused.value)
    assert "--spawner docker" in str(refused.value)
    # Isolated some other way, or by uids as root: it starts.
    check_isolation(Settings(session_isolation="off", spawner="docker", **shared),  # type: ignore[arg-type]
                    euid=1000)
    check_isolation(Settings(**shared), euid=0)  # type: ignore[arg-type]


def test_uid_isolation_without_root_is_refused_with_what_to_do() -> None:
    for settings in (Settings(host="0.0.0.0"), Settings(session_isolation="uids")):
        assert settings.uid_sessions
        with pytest.raises(ValueError, match="needs root") as refused:
            check_isolation(settings, euid=1000)
        message = str(refused.value)
        assert "run binderless as root" in message and "--spawner docker" in message
        assert "127.0.0.1 without" in message
    # One person's server on loopback: nothing to isolate, any user may run it.
    check_isolation(Settings(), euid=1000)


def test_serve_prints_the_refusal_and_exits_2(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "binderless", "serve", "--host", "0.0.0.0", "--port", "9",
         "--state-dir", str(tmp_path / "state"), "--session-isolation", "off"],
        cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("binderless serve: more than one person can use this server")
    assert "listens on 0.0.0.0" in done.stderr
    assert not (tmp_path / "state").exists()  # refused before touching anything


# ----- the uid pool ----------------------------------------------------------------------

def test_a_user_keeps_their_uid_across_restarts_and_anonymous_ones_never_take_it(
        tmp_path: Path) -> None:
    busy = {61001}
    pool = UidPool(tmp_path / "uids.json", 61000, 61005, in_use=lambda: set(busy))
    alice = pool.for_session("s1", "alice")
    assert pool.for_session("s2", "alice") == alice  # her other session
    anonymous = {pool.for_session(f"a{i}") for i in range(3)}
    assert len(anonymous) == 3 and alice not in anonymous and 61001 not in anonymous
    assert pool.shared_with_others("s1", alice) and not pool.shared_with_others("a0", 0)

    restarted = UidPool(tmp_path / "uids.json", 61000, 61005, in_use=lambda: set(busy))
    assert restarted.uid_of("a1") == pool.uid_of("a1")  # stopped later, after the restart
    assert restarted.for_session("s9", "alice") == alice
    bob = restarted.for_session("s10", "bob")
    assert bob not in {alice, *busy}
    # The range is full: the last free uid goes, then launches are told why they wait.
    busy |= anonymous
    with pytest.raises(QuotaExceeded, match="Every user id"):
        restarted.for_session("s11", "carol")
    assert stat.S_IMODE((tmp_path / "uids.json").stat().st_mode) == 0o600


def test_concurrent_launches_get_distinct_uids(tmp_path: Path) -> None:
    pool = UidPool(tmp_path / "uids.json", 61000, 61999, in_use=set)
    got: list[int] = []
    lock = threading.Lock()

    def take(n: int) -> None:
        uid = pool.for_session(f"s{n}")
        with lock:
            got.append(uid)

    threads = [threading.Thread(target=take, args=(n,)) for n in range(64)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(got)) == 64
    # A released uid comes back only after the rest of the range was handed out.
    first = pool.release("s0")
    assert first is not None and pool.for_session("next") != first


# ----- files -------------------------------------------------------------------------------

@needs_root
def test_the_state_folder_lets_sessions_through_and_nothing_more(tmp_path: Path) -> None:
    state = tmp_path / "state"
    service = local_service(Settings(state_dir=state, session_isolation="uids"))
    assert isinstance(service.spawner, LocalSpawner) and service.spawner.uids is not None
    mode = {p: stat.S_IMODE((state / p).stat().st_mode) for p in (
        ".", "sessions", "envs", "homes", "repos", "binderless.sqlite3")}
    assert mode == {".": 0o711, "sessions": 0o711, "envs": 0o711, "homes": 0o711,
                    "repos": 0o700, "binderless.sqlite3": 0o600}


@pytest.fixture
def open_tmp() -> Iterator[Path]:
    """A temporary folder other users may pass through (pytest's are closed to them)."""
    folder = Path(tempfile.mkdtemp(prefix="binderless-isolation-"))
    folder.chmod(0o711)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@needs_root
def test_a_session_gets_its_folders_and_a_user_keeps_their_projects(open_tmp: Path) -> None:
    tmp_path = open_tmp
    state = tmp_path / "state"
    env = state / "envs" / "k"
    (env / "bin").mkdir(parents=True)
    (env / "bin" / "python").write_text("")
    (env / "bin" / "python").chmod(0o755)
    settings = Settings(state_dir=state, session_isolation="uids")
    pool = UidPool(state / "uids.json", *settings.uid_range, in_use=set)
    spawner = LocalSpawner(settings, uids=pool)
    workspaces = Workspaces(state / "homes")
    checkout = tmp_path / "checkout"
    (checkout / "sub").mkdir(parents=True)
    (checkout / "sub" / "data.txt").write_text("x")
    os.link(checkout / "sub" / "data.txt", checkout / "linked.txt")  # a second name
    project = workspaces.open("alice", repo_url="https://example.org/r", resolved_ref="a",
                              launch_path="v2/x", checkout=checkout).project
    home = workspaces.home("alice")
    assert stat.S_IMODE(home.stat().st_mode) == 0o711
    assert stat.S_IMODE((home / ".binderless").stat().st_mode) == 0o700
    assert stat.S_IMODE(project.path.stat().st_mode) == 0o700

    session_home = state / "sessions" / "s1" / "home"
    session_home.mkdir(parents=True)
    (session_home / "notes.md").write_text("n")
    spec = SessionSpec(session_id="s1", image=ImageRef("k", "k", str(env)), home=session_home,
                       base_url="/user/s1/", token="t",
                       project=ProjectMount("alice", project.name, project.path))
    # What a session cannot reach makes the launch fail with what to change.
    (env / "bin" / "python").chmod(0o700)
    with pytest.raises(LaunchFailed, match=r"python: .*python is closed to other users"):
        spawner._hand_over(spec, env, pool.for_session("s1", "alice"))
    (env / "bin" / "python").chmod(0o755)
    uid = pool.for_session("s1", "alice")
    spawner._hand_over(spec, env, uid)
    for path in (session_home, session_home / "notes.md", project.path,
                 project.path / "sub" / "data.txt"):
        assert (path.lstat().st_uid, path.lstat().st_gid) == (uid, uid), path
    assert stat.S_IMODE(session_home.stat().st_mode) == 0o700
    assert session_home.parent.stat().st_uid == 0
    assert stat.S_IMODE(session_home.parent.stat().st_mode) == 0o711
    # A file with another name elsewhere keeps its owner (changing it changes both).
    assert (checkout / "linked.txt").stat().st_uid == 0
    # Her next session has the same uid, and finds her project already hers.
    assert pool.for_session("s2", "alice") == uid


@needs_root
def test_handing_over_never_follows_links(tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("server's")
    tree = tmp_path / "tree"
    (tree / "d").mkdir(parents=True)
    os.symlink(outside, tree / "d" / "link")
    os.symlink(tmp_path, tree / "dirlink")
    chown_tree(tree, 61000, 61000)
    assert outside.stat().st_uid == 0 and tmp_path.stat().st_uid == 0
    assert (tree / "d" / "link").lstat().st_uid == 61000


# ----- interrupted builds ------------------------------------------------------------------

def test_interrupted_builds_are_cleared_when_the_builder_starts(tmp_path: Path) -> None:
    envs = tmp_path / "state" / "envs"
    dead = subprocess.Popen(["true"])
    dead.wait()
    live = subprocess.Popen(["sleep", "30"])
    try:
        finished = envs / "aaaa"
        (finished / "bin").mkdir(parents=True)
        (finished / MARKER).write_text("aaaa\n")
        (envs / "bbbb" / "lib").mkdir(parents=True)  # killed before its marker
        (envs / f".build-bbbb-{dead.pid}-1" / "src").mkdir(parents=True)
        (envs / "cccc").mkdir()  # another process is building this one now
        (envs / f".build-cccc-{live.pid}-2").mkdir()
        UvBuilder(Settings(state_dir=tmp_path / "state"))
        assert sorted(p.name for p in envs.iterdir()) == sorted(
            ["aaaa", "cccc", f".build-cccc-{live.pid}-2"])
        assert (finished / MARKER).exists()
    finally:
        live.kill()
        live.wait()
