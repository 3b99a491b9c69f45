"""The local embedded mode, driven as a BinderHub client would: real server, real Jupyter."""

from __future__ import annotations

import concurrent.futures
import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from tests.conftest import LiveServer, file_spec, git, start_server, stop_server
from tests.e2e.streams import read_stream, run_code

pytestmark = pytest.mark.e2e

MakeRepo = Callable[[str], Path]


def build_url(server: LiveServer, spec: str, query: str = "") -> str:
    return server.url(f"/build/{spec}{query}")


def test_build_stream_follows_the_binderhub_protocol(live_server: LiveServer,
                                                     fixture_repo: MakeRepo) -> None:
    repo = fixture_repo("python-requirements")
    sha = git("rev-parse", "HEAD", cwd=repo)
    spec = file_spec(repo)
    stream = read_stream(build_url(live_server, spec))

    assert stream.status == 200
    assert stream.headers["content-type"].startswith("text/event-stream")
    assert stream.headers["cache-control"] == "no-cache"
    # Asked by no page (no Origin): nothing to allow. Other sites: tests/functional/test_origins.py
    assert "access-control-allow-origin" not in stream.headers
    phases = [p for i, p in enumerate(stream.phases) if i == 0 or p != stream.phases[i - 1]]
    assert phases == ["waiting", "fetching", "building", "built", "launching", "ready"], stream.text()
    built = next(e for e in stream.events if e["phase"] == "built")
    # The protocol's phase, in words true locally: uv builds no image.
    assert built["message"] == "Built the environment, launching...\n"
    assert built["imageName"]
    # Visitors read the log: the server's process and port are for its operator's log only.
    assert "Starting Jupyter...\n" in stream.text()
    assert "(process " not in stream.text() and " on port " not in stream.text()

    ready = stream.final
    assert ready["url"].startswith(live_server.base + "/user/") and ready["url"].endswith("/")
    assert len(ready["token"]) >= 32  # at least 128 bits of hex
    assert ready["image"] == built["imageName"]
    assert ready["repo_url"] == "file://" + str(repo)
    assert ready["binder_launch_host"] == live_server.base + "/"
    assert ready["binder_request"] == f"v2/{spec}"
    assert ready["binder_persistent_request"] == (
        f"v2/git/{quote('file://' + str(repo), safe='')}/{sha}")
    assert ready["binder_client_ip"] == "127.0.0.1"
    assert ready["message"] == f"server running at {ready['url']}\n"
    # Each event has an id the client can resume from.
    assert len(stream.ids) == len(stream.events)

    # A kernel runs code over the proxied WebSocket, with the Binder variables set.
    out = run_code(ready["url"], ready["token"],
                   "import os, six\nprint(6 * 7, os.environ['BINDER_REQUEST'], os.getcwd())")
    assert out.split()[0] == "42"
    assert out.split()[1] == f"v2/{spec}"
    # The repository is the session's home and root.
    listing = httpx.get(ready["url"] + "api/contents",
                        headers={"Authorization": f"token {ready['token']}"}).json()
    assert {"README.md", "index.ipynb", "requirements.txt"} <= {c["name"] for c in listing["content"]}

    # Without the token the session refuses, over HTTP and WebSocket alike.
    assert httpx.get(ready["url"] + "api/contents").status_code == 403
    assert httpx.get(ready["url"] + "api/contents?token=wrong").status_code == 403
    ws_probe = httpx.get(ready["url"] + "api/kernels/x/channels",
                         headers={"Upgrade": "websocket", "Connection": "Upgrade"})
    assert ws_probe.status_code == 403
    # The token in the query also works (thebe sends it that way on WebSockets).
    assert run_code(ready["url"], ready["token"], "print('q')", use_header=False) == "q\n"


def test_environment_is_reused_across_launches_and_notebook_commits(
        live_server: LiveServer, fixture_repo: MakeRepo) -> None:
    repo = fixture_repo("python-requirements")
    first = read_stream(build_url(live_server, file_spec(repo), "?build_only=true"))
    assert first.final["phase"] == "ready" and "imageName" in first.final
    assert "url" not in first.final  # build_only launches nothing
    assert "building" in first.phases

    second = read_stream(build_url(live_server, file_spec(repo)))
    assert "building" not in second.phases
    built = next(e for e in second.events if e["phase"] == "built")
    assert built["message"] == "Found the built environment, launching...\n"
    assert second.final["phase"] == "ready"

    (repo / "index.ipynb").write_text(json.dumps({"cells": [], "metadata": {}, "nbformat": 4,
                                                  "nbformat_minor": 5}))
    git("commit", "-qam", "change only the notebook", cwd=repo)
    third = read_stream(build_url(live_server, file_spec(repo), "?build_only=true"))
    assert "building" not in third.phases
    assert third.final["imageName"] == first.final["imageName"]

    (repo / "requirements.txt").write_text("six\nidna\n")
    git("commit", "-qam", "change the environment", cwd=repo)
    fourth = read_stream(build_url(live_server, file_spec(repo), "?build_only=true"))
    assert "building" in fourth.phases
    assert fourth.final["imageName"] != first.final["imageName"]


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("unknown-provider", "No provider found for prefix 'nope'"),
        ("malformed-spec", "is not a GitHub spec"),
        ("missing-repository", "There is no directory"),
        ("unknown-ref", "Could not resolve ref"),
        ("bad-requirements", "failed while installing the packages"),
        ("failing-postbuild", "postBuild failed (exit code 3)"),
        ("r-repo", "which the uv builder cannot build"),
        ("runtime-missing", "asks for Python 3.4, which the uv builder cannot install packages"),
        ("no-spec", "names no repository"),
    ],
)
def test_broken_inputs_fail_with_one_clear_event(live_server: LiveServer, fixture_repo: MakeRepo,
                                                 tmp_path: Path, case: str, expected: str) -> None:
    specs = {
        "unknown-provider": "nope/x/y",
        "malformed-spec": "gh/justone",
        "missing-repository": f"git/{quote('file://' + str(tmp_path / 'nothing'), safe='')}/HEAD",
        "no-spec": "gh",
    }
    if case == "unknown-ref":
        spec = file_spec(fixture_repo("python-requirements"), "no-such-branch")
    else:
        spec = specs.get(case) or file_spec(fixture_repo(case))
    stream = read_stream(build_url(live_server, spec))
    assert stream.status == 200
    failed = [e for e in stream.events if e["phase"] == "failed"]
    assert len(failed) == 1 and stream.final is failed[0], stream.text()
    assert expected in failed[0]["message"], failed[0]["message"]
    assert isinstance(failed[0]["status_code"], int)
    assert "Traceback" not in stream.text()
    # Nothing half-built stays behind, and the server keeps serving.
    envs = live_server.state_dir / "envs"
    if envs.exists():
        for env in envs.iterdir():
            assert (env / ".binderless-complete").exists(), f"half-built environment {env}"
    assert httpx.get(live_server.url("/health")).json()["ok"] is True


def test_build_failure_names_the_failing_line(live_server: LiveServer,
                                              fixture_repo: MakeRepo) -> None:
    stream = read_stream(build_url(live_server, file_spec(fixture_repo("failing-postbuild"))))
    assert "this step is broken" in stream.final["message"]
    assert "about to fail\n" in [e["message"] for e in stream.events if e["phase"] == "building"]


def test_second_request_attaches_to_the_running_build(live_server: LiveServer,
                                                      fixture_repo: MakeRepo) -> None:
    url = build_url(live_server, file_spec(fixture_repo("python-requirements")), "?build_only=true")
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        first = pool.submit(read_stream, url)
        time.sleep(0.3)
        second = pool.submit(read_stream, url)
        streams = [first.result(), second.result()]
    assert all(s.final["phase"] == "ready" for s in streams)
    assert streams[0].final["imageName"] == streams[1].final["imageName"]
    texts = [s.text() for s in streams]
    assert sum("already being built" in t for t in texts) == 1, texts
    # Both saw the build's output.
    assert all(any(p == "building" for p in s.phases) for s in streams)


@pytest.mark.parametrize("how", ["header", "query"])
def test_reconnecting_client_gets_the_events_it_missed(live_server: LiveServer,
                                                       fixture_repo: MakeRepo, how: str) -> None:
    url = build_url(live_server, file_spec(fixture_repo("python-requirements")), "?build_only=true")
    start = read_stream(url, stop_after=2)
    assert len(start.ids) == 2
    if how == "header":  # EventSource's own reconnection
        resumed = read_stream(url, headers={"Last-Event-ID": start.ids[-1]})
    else:  # the loading page's Retry button opens a new EventSource
        resumed = read_stream(url + "&last_event_id=" + start.ids[-1])
    launch = start.ids[0].split(":")[0]
    assert all(i.split(":")[0] == launch for i in resumed.ids)
    seqs = [int(i.split(":")[1]) for i in start.ids + resumed.ids]
    assert seqs == list(range(1, len(seqs) + 1))
    assert resumed.final["phase"] == "ready"


def test_postbuild_output_and_start_script_reach_the_session(live_server: LiveServer,
                                                             fixture_repo: MakeRepo) -> None:
    ready = read_stream(build_url(live_server, file_spec(fixture_repo("postbuild")))).final
    assert ready["phase"] == "ready", ready
    assert "made by postBuild" in run_code(ready["url"], ready["token"],
                                           "print(open('generated.txt').read())")
    ready = read_stream(build_url(live_server, file_spec(fixture_repo("start-script")))).final
    assert run_code(ready["url"], ready["token"],
                    "import os; print(os.environ.get('FROM_START_SCRIPT'))") == "yes\n"


def _pid_of(state_dir: Path, session_url: str) -> int:
    import sqlite3

    session_id = session_url.rstrip("/").rsplit("/", 1)[-1]
    with sqlite3.connect(state_dir / "binderless.sqlite3") as db:
        row = db.execute("SELECT backend_id FROM sessions WHERE session_id = ?",
                         (session_id,)).fetchone()
    return int(row[0])


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"


def test_restart_adopts_live_sessions_and_cleans_up_dead_ones(tmp_path: Path,
                                                              fixture_repo: MakeRepo) -> None:
    state = tmp_path / "state"
    server = start_server(state, "--keep-sessions")
    try:
        spec = file_spec(fixture_repo("python-requirements"))
        a = read_stream(build_url(server, spec)).final
        b = read_stream(build_url(server, spec)).final
        assert a["phase"] == b["phase"] == "ready"
        pid_a, pid_b = _pid_of(state, a["url"]), _pid_of(state, b["url"])
    finally:
        stop_server(server)
    assert _process_exists(pid_a) and _process_exists(pid_b)  # kept on exit
    os.killpg(pid_b, signal.SIGKILL)  # one session dies while the server is down
    time.sleep(0.5)

    server = start_server(state, port=int(a["url"].split(":")[2].split("/")[0]))
    try:
        assert run_code(a["url"], a["token"], "print('still here')") == "still here\n"
        gone = httpx.get(b["url"] + "api/status", headers={"Authorization": f"token {b['token']}"})
        assert gone.status_code == 404
        assert "Launch the repository again" in gone.json()["message"]
    finally:
        stop_server(server)
    # Without --keep-sessions, stopping the server stops its sessions: no orphans.
    deadline = time.monotonic() + 10
    while _process_exists(pid_a) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _process_exists(pid_a)


@pytest.mark.parametrize(("options", "reason"), [
    (("--cull-idle", "2"), "idle"),
    (("--max-age", "3", "--cull-idle", "600"), "maximum age reached"),
])
def test_sessions_are_culled_and_their_files_removed(tmp_path: Path, fixture_repo: MakeRepo,
                                                     options: tuple[str, ...], reason: str) -> None:
    state = tmp_path / "state"
    server = start_server(state, *options, env={"BINDERLESS_CULL_INTERVAL_SECONDS": "0.5"})
    try:
        ready = read_stream(build_url(server, file_spec(fixture_repo("python-requirements")))).final
        pid = _pid_of(state, ready["url"])
        deadline = time.monotonic() + 30
        while _process_exists(pid) and time.monotonic() < deadline:
            time.sleep(0.25)
        assert not _process_exists(pid)
        answer = httpx.get(ready["url"] + "api/status?token=" + ready["token"])
        assert answer.status_code == 404
        session_id = ready["url"].rstrip("/").rsplit("/", 1)[-1]
        # An anonymous session's files go with it (``LaunchService.keeps_files``), just
        # after its server.
        folder = state / "sessions" / session_id
        deadline = time.monotonic() + 10
        while folder.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not folder.exists()
        import sqlite3

        with sqlite3.connect(state / "binderless.sqlite3") as db:
            row = db.execute("SELECT status, stop_reason FROM sessions WHERE session_id = ?",
                             (session_id,)).fetchone()
        assert row == ("stopped", reason)
    finally:
        stop_server(server)


def test_token_link_sets_a_session_cookie_for_the_browser(live_server: LiveServer,
                                                          fixture_repo: MakeRepo) -> None:
    ready = read_stream(build_url(live_server, file_spec(fixture_repo("python-requirements")))).final
    session_id = ready["url"].rstrip("/").rsplit("/", 1)[-1]
    with httpx.Client(follow_redirects=True) as browser:
        page = browser.get(ready["url"] + "lab?token=" + ready["token"])
        assert page.status_code == 200
        assert browser.cookies.get(f"binderless-session-{session_id}") == ready["token"]
        # JupyterLab's later requests carry cookies only, like a browser's.
        assert browser.get(ready["url"] + "api/status").status_code == 200
        jupyter_only = {k: v for k, v in browser.cookies.items() if "binderless" not in k}
    # Jupyter's own login cookie is not enough: the proxy wants its token or cookie.
    assert httpx.get(ready["url"] + "api/status", cookies=jupyter_only).status_code == 403


def test_server_that_dies_during_launch_leaves_nothing_behind(live_server: LiveServer,
                                                              fixture_repo: MakeRepo) -> None:
    stream = read_stream(build_url(live_server, file_spec(fixture_repo("start-crash"))))
    assert stream.final["phase"] == "failed"
    assert "stopped before it was ready" in stream.final["message"]
    assert "cannot find the data folder" in stream.final["message"]
    sessions = live_server.state_dir / "sessions"
    assert not sessions.exists() or not any(sessions.iterdir())
    import sqlite3

    with sqlite3.connect(live_server.state_dir / "binderless.sqlite3") as db:
        rows = db.execute("SELECT status FROM sessions").fetchall()
    assert all(status == "stopped" for (status,) in rows)


def test_activity_keeps_a_session_from_being_culled(tmp_path: Path, fixture_repo: MakeRepo) -> None:
    state = tmp_path / "state"
    server = start_server(state, "--cull-idle", "3", env={"BINDERLESS_CULL_INTERVAL_SECONDS": "0.5"})
    try:
        ready = read_stream(build_url(server, file_spec(fixture_repo("python-requirements")))).final
        pid = _pid_of(state, ready["url"])
        for _ in range(12):  # six seconds of use, twice the idle limit
            assert httpx.get(ready["url"] + "api/contents?token=" + ready["token"]).status_code == 200
            time.sleep(0.5)
        assert _process_exists(pid)
    finally:
        stop_server(server)


# fixture -> code whose output proves the environment was built as repo2docker would
BUILDPACKS = {
    "setup-py": ("import tinypkg; print(tinypkg.VALUE)", "42"),
    "pyproject-package": ("import ppkg; print(ppkg.NAME)", "ppkg"),
    "pipfile": ("import six; print(six.__name__)", "six"),
    "environment-yml": ("import six, idna, sys; print(sys.version_info[:2] == (3, 11))", "True"),
    "runtime-txt": ("import sys; print('%d.%d' % sys.version_info[:2])", "3.11"),
    "binder-dir": ("import six; print(six.__name__)", "six"),
}


@pytest.mark.parametrize("fixture", sorted(BUILDPACKS))
def test_each_supported_environment_kind_launches(live_server: LiveServer, fixture_repo: MakeRepo,
                                                  fixture: str) -> None:
    code, expected = BUILDPACKS[fixture]
    stream = read_stream(build_url(live_server, file_spec(fixture_repo(fixture))))
    assert stream.final["phase"] == "ready", stream.text()[-2000:]
    assert run_code(stream.final["url"], stream.final["token"], code).strip() == expected


def test_cors_preflight_reaches_the_notebook_server(tmp_path: Path,
                                                   fixture_repo: MakeRepo) -> None:
    """thebe calls the session from the publisher's origin (one the operator allowed): the
    browser's preflight carries no token and must still get CORS headers from the notebook
    server. Pages of origins not allowed reach no session."""
    server = start_server(tmp_path / "state", "--allow-origin", "https://publisher.example")
    try:
        ready = read_stream(build_url(server, file_spec(fixture_repo("python-requirements")))).final
        _check_publisher_session(ready)
    finally:
        stop_server(server)


def _check_publisher_session(ready: dict[str, object]) -> None:
    refused = httpx.get(f"{ready['url']}api/kernels?token={ready['token']}",
                        headers={"Origin": "https://other.example"})
    assert refused.status_code == 403
    assert "access-control-allow-origin" not in refused.headers
    answer = httpx.options(ready["url"] + "api/kernels", headers={
        "Origin": "https://publisher.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type"})
    assert answer.status_code in (200, 204)
    assert answer.headers["access-control-allow-origin"] in ("*", "https://publisher.example")
    assert "authorization" in answer.headers["access-control-allow-headers"].lower()
    # A session as @jupyterlab/services (used by thebe) asks for one, from that origin:
    # the kernel name "python" must be accepted.
    created = httpx.post(ready["url"] + "api/sessions", headers={
        "Origin": "https://publisher.example", "Authorization": f"token {ready['token']}"},
        json={"path": "/", "type": "notebook", "name": "", "kernel": {"name": "python"}})
    assert created.status_code == 201, created.text
    assert created.headers["access-control-allow-origin"] in ("*", "https://publisher.example")
