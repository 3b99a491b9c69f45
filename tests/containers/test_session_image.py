"""A session image as the AWS mode makes and runs it: the appendix, ``session-start``, uid 1000.

The image (the ``session_image`` fixture: the JupyterLab fixture image, repo2docker's
entrypoint and ``SESSION_START_APPENDIX``, see its docstring) goes through the local
registry (ECR's stand-in) and runs as a Fargate task would: the task definition's command, the token and ``BINDERLESS_CHECKOUT_URL`` in the environment, uid
1000. Jupyter listens on a loopback port (the engine has no bridge network, and Fargate's
fixed 8888 would be the host's), and the test reaches it only through binderless's session
proxy, as visitors do: a kernel runs code over the proxied WebSocket.
"""

from __future__ import annotations

import functools
import http.server
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from binderless.aws.spawner import pack_checkout
from binderless.backends.docker import free_loopback_port, jupyter_arguments
from binderless.backends.protocols import ImageRef, Route, SessionSpec
from tests.containers.conftest import Engine, session_proxy, unique_tag
from tests.e2e.streams import run_code

pytestmark = pytest.mark.containers

TOKEN = "5e55101d" * 8


@pytest.fixture
def checkout_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A loopback HTTP server for the session's checkout (S3's presigned URL stands here)."""
    folder = tmp_path / "served"
    folder.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", folder
    finally:
        server.shutdown()
        server.server_close()


def test_session_image_unpacks_its_checkout_and_runs_jupyter_as_uid_1000(
        engine: Engine, session_image: str, containers: list[str], tmp_path: Path,
        checkout_server: tuple[str, Path]) -> None:
    image = session_image
    engine.docker("rmi", image, check=False)  # run what the registry serves
    engine.docker("pull", "--quiet", image)

    # The session's own checkout: another commit than the image's copy.
    home = tmp_path / "session-home"
    home.mkdir()
    (home / "hello.txt").write_text("from the session's checkout\n")
    (home / "notes.md").write_text("only in the checkout\n")
    url, served = checkout_server
    pack_checkout(home, served / "checkout.tar.gz")

    session_id = unique_tag()
    spec = SessionSpec(session_id=session_id, image=ImageRef(key="k", name=image,
                                                             location=image),
                       home=home, base_url=f"/user/{session_id}/", token=TOKEN,
                       environment={"BINDER_REQUEST": "v2/gh/owner/repo/main"})
    port = free_loopback_port()
    name = f"binderless-task-{session_id}"
    containers.append(name)
    env = {"JUPYTER_TOKEN": TOKEN, "BINDERLESS_CHECKOUT_URL": f"{url}/checkout.tar.gz",
           "BINDER_REQUEST": "v2/gh/owner/repo/main"}
    engine.docker("run", "-d", "--name", name, "--user", "1000", "--network", "host",
                  *[arg for key in env for arg in ("-e", key)],
                  image, *jupyter_arguments(spec, ip="127.0.0.1", port=port), env=env)

    facts = json.loads(engine.docker("inspect", name).stdout)[0]
    assert facts["Config"]["Entrypoint"] == ["/usr/local/bin/binderless-session-start",
                                             "/usr/local/bin/repo2docker-entrypoint"]
    code = ("import os\n"
            "print(os.getuid(), open('hello.txt').read().strip(), open('notes.md').read().strip(),"
            " 'BINDERLESS_CHECKOUT_URL' in os.environ, os.environ['BINDER_REQUEST'])")
    # Reached as visitors reach it: through binderless's session proxy (the gateway's),
    # HTTP and the kernel's WebSocket alike, with the container's loopback port as target.
    route = Route(session_id=session_id, target=f"http://127.0.0.1:{port}", token=TOKEN)
    with session_proxy({session_id: route}) as proxy:
        url = f"{proxy}{spec.base_url}"
        out = _run_code_when_up(url, engine, name, code)
        assert out == ("1000 from the session's checkout only in the checkout False "
                       "v2/gh/owner/repo/main\n")
        # The proxy, not Jupyter alone, guards the session: no token, no answer.
        refused = httpx.get(f"{url}api/kernels", timeout=10)
        assert refused.status_code == 403, refused.text
        assert "needs its token" in refused.json()["message"]


def _run_code_when_up(url: str, engine: Engine, name: str, code: str) -> str:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}api/status", params={"token": TOKEN}, timeout=2).status_code \
                    == 200:
                return run_code(url, TOKEN, code)
        except httpx.HTTPError:
            pass
        state = engine.docker("inspect", "-f", "{{.State.Running}}", name, check=False)
        if state.stdout.strip() != "true":
            logs = engine.docker("logs", name, check=False)
            raise AssertionError(f"the session container stopped:\n{logs.stdout}{logs.stderr}")
        time.sleep(0.5)
    logs = engine.docker("logs", name, check=False)
    raise AssertionError(f"Jupyter did not answer in 90 s:\n{logs.stdout}{logs.stderr}")
