"""Launch time of a cached environment against a bare ``jupyter lab`` start, in one run.

    .venv/bin/python bench/launch_local.py [--rounds 5]

Starts ``binderless serve`` on a free port with a fresh state dir, builds the
bundled example's environment once, then alternates, ``--rounds`` times:
  * a launch through ``/build`` (request sent -> ``ready`` received), and
  * a bare ``jupyter lab`` from the same environment (process started ->
    ``/api/status`` answers), polled at the same interval binderless uses.
Prints the medians and their ratio (target: 1.3 or less). Talks only to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.conftest import file_spec, make_git_repo, start_server, stop_server  # noqa: E402
from tests.e2e.streams import read_stream  # noqa: E402

POLL = 0.05


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def bare_jupyter(env_dir: Path, workdir: Path) -> float:
    port = free_port()
    token = "bench-token"
    cmd = [str(env_dir / "bin" / "jupyter-lab"), "--no-browser", "--ip=127.0.0.1",
           f"--port={port}", f"--ServerApp.root_dir={workdir}"]
    if os.geteuid() == 0:
        cmd.append("--allow-root")
    env = {**os.environ, "JUPYTER_TOKEN": token, "HOME": str(workdir)}
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/api/status",
                             headers={"Authorization": f"token {token}"}, timeout=2).status_code == 200:
                    return time.perf_counter() - start
            except httpx.HTTPError:
                pass
            if proc.poll() is not None:
                raise RuntimeError("bare jupyter lab exited early")
            time.sleep(POLL)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait()


def launch(url: str) -> float:
    start = time.perf_counter()
    stream = read_stream(url)
    elapsed = time.perf_counter() - start
    if stream.final.get("phase") != "ready":
        raise RuntimeError(f"launch failed: {stream.final}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="binderless-bench-"))
    server = None
    try:
        repo = make_git_repo(ROOT / "examples" / "hello", tmp / "hello")
        server = start_server(tmp / "state", "--max-sessions", str(args.rounds + 2))
        url = server.url(f"/build/{file_spec(repo)}")
        warm = read_stream(url)  # builds the environment
        if warm.final.get("phase") != "ready":
            raise RuntimeError(f"first launch failed: {warm.final}")
        env_dir = next(p for p in (tmp / "state" / "envs").iterdir() if not p.name.startswith("."))
        work = tmp / "bare-home"
        work.mkdir()
        launches, bares = [], []
        for _ in range(args.rounds):
            launches.append(launch(url))
            bares.append(bare_jupyter(env_dir, work))
        ours, base = statistics.median(launches), statistics.median(bares)
        print(f"cached launch, request -> ready : median {ours:.2f}s  "
              f"({', '.join(f'{t:.2f}' for t in launches)})")
        print(f"bare jupyter lab, start -> answer: median {base:.2f}s  "
              f"({', '.join(f'{t:.2f}' for t in bares)})")
        print(f"ratio (target <= 1.3): {ours / base:.2f}")
    finally:
        if server is not None:
            stop_server(server)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
