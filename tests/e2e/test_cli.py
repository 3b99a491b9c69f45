"""The command line as a person uses it: serve --demo, launch, --help."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.conftest import ROOT, LiveServer, file_spec, start_server, stop_server

pytestmark = pytest.mark.e2e


def binderless(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "binderless", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT)


def test_help_explains_every_command() -> None:
    top = binderless("--help")
    assert top.returncode == 0
    assert "serve" in top.stdout and "launch" in top.stdout
    serve = binderless("serve", "--help")
    for option in ("--port", "--state-dir", "--cull-idle", "--max-age", "--builder", "--demo"):
        assert option in serve.stdout
    assert "BINDERLESS_" in serve.stdout
    assert "Examples:" in binderless("launch", "--help").stdout
    assert binderless().returncode == 2


def test_launch_prints_the_session_url(live_server: LiveServer,
                                       fixture_repo: Callable[[str], Path]) -> None:
    spec = file_spec(fixture_repo("python-requirements"))
    result = binderless("launch", f"{live_server.base}/v2/{spec}?labpath=index.ipynb")
    assert result.returncode == 0, result.stderr
    url = result.stdout.strip()
    assert url.startswith(live_server.base + "/user/")
    assert "/doc/tree/index.ipynb?token=" in url
    assert "[Ready]" in result.stderr and "[Fetching the repository]" in result.stderr
    assert httpx.get(url.replace("doc/tree/index.ipynb", "api/status")).status_code == 200


def test_launch_failure_exits_non_zero_with_the_reason(live_server: LiveServer) -> None:
    result = binderless("launch", "gh/not-a-spec", "--server", live_server.base)
    assert result.returncode == 1
    assert "is not a GitHub spec" in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_launch_without_a_server_says_how_to_start_one() -> None:
    result = binderless("launch", "gh/org/repo/HEAD", "--server", "http://127.0.0.1:9")
    assert result.returncode == 1
    assert "binderless serve" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_demo_launches_the_bundled_example(tmp_path: Path) -> None:
    server = start_server(tmp_path / "state", "--demo")
    try:
        deadline = time.monotonic() + 240
        while "The example is running" not in server.output() and time.monotonic() < deadline:
            assert server.proc.poll() is None, server.output()
            time.sleep(0.25)
        output = server.output()
        assert "The example is running" in output, output
        url = output.split("Open it at:\n", 1)[1].split()[0]
        assert "/doc/tree/welcome.ipynb?token=" in url
        page = httpx.get(url, follow_redirects=True)
        assert page.status_code == 200
        assert "JupyterLab" in page.text
    finally:
        stop_server(server)
    assert "Stopping binderless and its sessions..." in server.output()


def test_stream_keeps_alive_and_lingers_after_the_end(tmp_path: Path) -> None:
    server = start_server(tmp_path / "state", env={"BINDERLESS_KEEPALIVE_SECONDS": "0.3",
                                                   "BINDERLESS_FINAL_LINGER_SECONDS": "1.5"})
    try:
        started = time.monotonic()
        # No Accept header: BinderHub would refuse; binderless is lenient.
        with httpx.stream("GET", server.url("/build/gh/bad"), timeout=10) as response:
            lines = list(response.iter_lines())
        held = time.monotonic() - started
        data = [line for line in lines if line.startswith("data:")]
        assert '"phase":"failed"' in data[-1]
        assert sum('"phase":"failed"' in line for line in data) == 1
        assert sum(line == ":keepalive" for line in lines) >= 3
        assert held >= 1.5  # the stream stayed open after the final event
    finally:
        stop_server(server)


def test_metrics_count_launches_and_sessions(live_server: LiveServer,
                                             fixture_repo: Callable[[str], Path]) -> None:
    from tests.e2e.streams import read_stream

    spec = file_spec(fixture_repo("python-requirements"))
    read_stream(live_server.url(f"/build/{spec}"))
    read_stream(live_server.url("/build/gh/x"))
    text = httpx.get(live_server.url("/metrics")).text
    assert 'binderless_launches_total{status="ready",built="true"} 1' in text
    assert 'binderless_launches_total{status="failed",built="false"} 1' in text
    assert 'binderless_sessions{status="running"} 1' in text
    assert "# TYPE binderless_launch_seconds summary" in text


def test_launch_failure_summary_states_the_cause_once_and_last(
        live_server: LiveServer, fixture_repo: Callable[[str], Path]) -> None:
    """A typo in the repository's requirements: the summary (the last lines) says what
    failed, uv's reason and the line to fix, and the reason is not printed twice."""
    repo = fixture_repo("bad-requirements")
    # A folder, as a person types it: launch reads it with the same parser as resolve.
    result = binderless("launch", str(repo), "--server", live_server.base)
    assert result.returncode == 1 and result.stdout == ""
    lines = result.stderr.rstrip().splitlines()
    summary = lines[next(i for i, line in enumerate(lines) if line.startswith("[Failed]")):]
    assert summary[0] == ("[Failed] Building the environment failed while installing the "
                          "packages of requirements.txt.")
    assert "this-package-does-not-exist-binderless was not found" in summary[1]
    assert summary[-1].strip() == ("Fix line 1 of requirements.txt: "
                                   "this-package-does-not-exist-binderless==0.0.1")
    assert result.stderr.count("was not found in the package registry") == 1
    assert not any(line.rstrip().endswith("was:") for line in lines)


def test_launch_reads_a_repository_address_like_resolve() -> None:
    """A pasted GitHub address is launched on --server (here: none listening)."""
    result = binderless("launch", "https://github.com/org/repo", "--server",
                        "http://127.0.0.1:9")
    assert "is not a Binder link" not in result.stderr
    assert "Could not reach http://127.0.0.1:9" in result.stderr
    refused = binderless("launch", "git//home/me/repo/HEAD")
    assert refused.returncode == 2 and "git/%2Fhome%2Fme%2Frepo/HEAD" in refused.stderr
