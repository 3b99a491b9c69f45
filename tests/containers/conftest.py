"""The container tier: real images on the project's own Docker engine (``dev.py engine``).

These tests need the three variables ``python3 dev.py engine`` prints (``DOCKER_HOST``,
``REGISTRY``, ``BASE_IMAGE``); ``python3 dev.py test`` brings the engine up and passes them
(with the engine's ``docker`` first on ``PATH`` and its ``DOCKER_CONFIG``, which holds
buildx). Without them the tier is skipped here, while ``dev.py test`` fails instead unless
``BINDERLESS_SKIP_CONTAINERS=1`` says to skip it. The engine has no bridge network: builds
use ``--network=host`` and containers ``--network host`` with free loopback ports.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from aiohttp import web

from binderless.aws.builder import RUNNER_CONTEXT, SESSION_START_APPENDIX
from binderless.backends.protocols import Route
from binderless.errors import SessionNotFound
from binderless.server.proxy import SessionProxy
from tests.conftest import free_port
from tests.containers.container_standins import SRC_DIR, buildspec_script, buildspec_variables

ROOT = Path(__file__).resolve().parents[2]
FIXTURE_REPOS = ROOT / "tests" / "fixtures" / "repos"
ENGINE_VARIABLES = ("DOCKER_HOST", "REGISTRY", "BASE_IMAGE")


@dataclass(frozen=True)
class Engine:
    """The project's engine: its environment for ``docker``, registry and base image."""

    env: dict[str, str]
    registry: str
    base_image: str

    def docker(self, *args: str, check: bool = True, timeout: float = 600,
               env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(["docker", *args], env={**self.env, **(env or {})},
                              capture_output=True, text=True, timeout=timeout, check=False)
        if check and done.returncode != 0:
            raise AssertionError(f"docker {' '.join(args[:3])} failed ({done.returncode}):\n"
                                 f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
        return done

    def manifest_digest(self, image: str) -> str:
        """The digest the registry serves for ``<registry>/<name>:<tag>``."""
        assert image.startswith(self.registry + "/")
        name, _, tag = image[len(self.registry) + 1:].rpartition(":")
        accept = ", ".join([
            "application/vnd.oci.image.index.v1+json",
            "application/vnd.oci.image.manifest.v1+json",
            "application/vnd.docker.distribution.manifest.list.v2+json",
            "application/vnd.docker.distribution.manifest.v2+json",
        ])
        answer = httpx.head(f"http://{self.registry}/v2/{name}/manifests/{tag}",
                            headers={"Accept": accept}, timeout=10)
        answer.raise_for_status()
        return answer.headers["Docker-Content-Digest"]


@pytest.fixture(scope="session")
def engine() -> Engine:
    missing = [name for name in ENGINE_VARIABLES if not os.environ.get(name)]
    if missing:
        pytest.skip("the container tier needs the project's Docker engine: run "
                    "`python3 dev.py engine` and export its last three lines "
                    f"(missing: {', '.join(missing)}), or run `python3 dev.py test`")
    env = dict(os.environ)
    engine = Engine(env=env, registry=env["REGISTRY"], base_image=env["BASE_IMAGE"])
    # The variables promise an engine: one that does not answer is a failure, not a skip.
    engine.docker("version", "--format", "{{.Server.Version}}", timeout=30)
    engine.docker("buildx", "version", timeout=30)
    return engine


def unique_tag() -> str:
    return uuid.uuid4().hex[:12]


def copy_repo(name: str, dest: Path, base_image: str) -> Path:
    """A fixture repository in ``dest``, with ``@BASE_IMAGE@`` in Dockerfiles filled in."""
    shutil.copytree(FIXTURE_REPOS / name, dest, symlinks=True)
    for dockerfile in dest.rglob("Dockerfile"):
        dockerfile.write_text(dockerfile.read_text().replace("@BASE_IMAGE@", base_image))
    return dest


def json_lines(text: str) -> list[dict[str, object]]:
    records = []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


@pytest.fixture
def containers(engine: Engine) -> Iterator[list[str]]:
    """Names of containers a test starts; each is removed at the end, whatever happened."""
    names: list[str] = []
    yield names
    for name in names:
        engine.docker("rm", "-f", "-v", name, check=False, timeout=60)


#: The runner's inner engine: no bridge network on this engine, so the inner one must not
#: make one in the host's network namespace, which the runner shares.
INNER_DOCKERD_ARGS = "--bridge=none --iptables=false --ip6tables=false"


@pytest.fixture(scope="session")
def runner_image(engine: Engine) -> str:
    """``build-runner/Dockerfile`` built on the engine, from the local base image."""
    tag = "binderless-runner:test"
    engine.docker("build", "--quiet", "--network", "host",
                  "--build-arg", f"BASE_IMAGE={engine.base_image}",
                  "-f", str(ROOT / "build-runner" / "Dockerfile"), "-t", tag, str(ROOT),
                  timeout=900)
    return tag


@pytest.fixture(scope="session")
def gateway_image(engine: Engine) -> str:
    """``functions/gateway.Dockerfile`` built on the engine, from the local base image."""
    tag = "binderless-gateway:test"
    engine.docker("build", "--quiet", "--network", "host",
                  "--build-arg", f"BASE_IMAGE={engine.base_image}",
                  "-f", str(ROOT / "functions" / "gateway.Dockerfile"), "-t", tag, str(ROOT),
                  timeout=900)
    return tag


#: repo2docker's own entrypoint and its interpreter wrapper, as its images have them
#: (found without importing repo2docker, which warns).
_R2D_SPEC = importlib.util.find_spec("repo2docker")
R2D_BUILDPACKS = Path((_R2D_SPEC and _R2D_SPEC.origin) or "").parent / "buildpacks"
R2D_FILES = ("repo2docker-entrypoint", "python3-login")


@pytest.fixture(scope="session")
def session_image(engine: Engine, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A session image as the AWS mode makes it, pushed to the local registry.

    repo2docker adds the appendix only to images of its own buildpacks, which all need
    conda-forge, unreachable here; it ignores the appendix for a repository's Dockerfile.
    So this builds the same layers by hand: the JupyterLab fixture image, repo2docker's own
    entrypoint, then ``SESSION_START_APPENDIX`` copying ``session-start`` from the runner
    folder through the named build context, exactly as the runner passes it."""
    context = copy_repo("container-jupyter", tmp_path_factory.mktemp("session-image") / "image",
                        engine.base_image)
    for name in R2D_FILES:
        shutil.copy2(R2D_BUILDPACKS / name, context / name)
    dockerfile = context / "Dockerfile"
    dockerfile.write_text(
        dockerfile.read_text()
        + "".join(f"COPY --chmod=0755 {name} /usr/local/bin/{name}\n" for name in R2D_FILES)
        + SESSION_START_APPENDIX)
    # Named by its content: reruns reuse it rather than pile up copies in the registry.
    digest = hashlib.sha256()
    for path in sorted(p for p in [*context.rglob("*"), *(ROOT / "build-runner").rglob("*")]
                       if p.is_file()):
        digest.update(path.name.encode() + path.read_bytes())
    image = f"{engine.registry}/binderless-session-test:{digest.hexdigest()[:16]}"
    engine.docker("buildx", "build", "--network=host", "--push", "--quiet",
                  f"--build-context={RUNNER_CONTEXT}={ROOT / 'build-runner'}",
                  "-t", image, str(context), timeout=900)
    return image


def run_buildspec(engine: Engine, image: str, source: Path, variables: Mapping[str, str],
                  names: list[str], mounts: Sequence[str] = ()) -> subprocess.CompletedProcess[str]:
    """Run the buildspec in the runner image as CodeBuild does: privileged, the source at
    CODEBUILD_SRC_DIR, the build's variables in the environment. The engine inside keeps
    its data in a volume (overlay2 cannot stack on the container's own overlay)."""
    buildspec = (ROOT / "build-runner" / "buildspec.yml").read_text()
    env = {**buildspec_variables(buildspec), **variables, "CODEBUILD_SRC_DIR": SRC_DIR,
           "DOCKERD_ARGS": INNER_DOCKERD_ARGS}
    name = f"binderless-runner-{unique_tag()}"
    names.append(name)
    args = ["run", "--name", name, "--privileged", "--network", "host",
            "-v", "/var/lib/docker", "-v", f"{source}:{SRC_DIR}", "-w", SRC_DIR]
    for mount in mounts:
        args += ["-v", mount]
    for key in env:
        args += ["-e", key]
    return engine.docker(*args, image, "sh", "-c", buildspec_script(buildspec), check=False,
                         timeout=900, env=env)


@contextlib.contextmanager
def session_proxy(routes: Mapping[str, Route]) -> Iterator[str]:
    """binderless's own session proxy (``SessionProxy``, as the local server and the
    gateway mount it at ``/user/<id>/``) on a free loopback port, in a thread; its base URL.

    ``routes`` maps session ids to where their Jupyter answers and the token it needs."""

    def lookup(session_id: str) -> Route:
        try:
            return routes[session_id]
        except KeyError:
            raise SessionNotFound(session_id) from None

    async def handle(request: web.Request) -> web.StreamResponse:
        return await proxy.handle(request, request.match_info["session"])

    loop = asyncio.new_event_loop()
    proxy = SessionProxy(lookup, lambda _session: None, lookup_in_thread=False)
    app = web.Application()
    app.router.add_route("*", "/user/{session}/{rest:.*}", handle)
    runner = web.AppRunner(app)
    port = free_port()
    loop.run_until_complete(runner.setup())
    loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        asyncio.run_coroutine_threadsafe(proxy.close(), loop).result(30)
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


#: The bridge of the second engine (``bridge_engine``): a name and subnet of its own, so
#: that it never meets a system Docker's docker0.
BRIDGE_NAME = "binderless0"
BRIDGE_ADDRESS = "10.213.0.1/24"
BRIDGE_ENGINE_START_SECONDS = 60


def _storage_driver(folder: Path) -> str:
    """overlay2 where it works (ext4, as ``dev.py engine`` decides), else vfs."""
    kind = subprocess.run(["stat", "-f", "-c", "%T", str(folder)], capture_output=True,
                          text=True, check=False).stdout.strip()
    return "overlay2" if kind.startswith("ext") else "vfs"


@pytest.fixture(scope="session")
def bridge_engine(engine: Engine) -> Iterator[Engine]:
    """A second engine of the project's WITH a bridge network (``binderless0``,
    10.213.0.1/24), still ``--iptables=false --ip-forward=false``: the machine's firewall
    and sysctls are untouched, published ports go through docker-proxy on 127.0.0.1, and
    containers get no NAT to the outside. It keeps its data beside the main engine's
    socket (``bridge-engine/``, reused between runs) and is stopped, with its bridge
    removed, at the end of the session. A lock keeps two test sessions from sharing it."""
    if os.geteuid() != 0:
        pytest.fail("the bridge engine needs root (as `dev.py engine` does)")
    folder = Path(engine.env["DOCKER_HOST"].removeprefix("unix://")).parent / "bridge-engine"
    folder.mkdir(exist_ok=True)
    lock = (folder / "lock").open("w")
    fcntl.flock(lock, fcntl.LOCK_EX)
    env = {**engine.env, "PATH": engine.env["PATH"] + os.pathsep + "/usr/sbin"}
    if subprocess.run(["ip", "link", "show", BRIDGE_NAME], capture_output=True,
                      check=False).returncode != 0:
        for cmd in (["ip", "link", "add", BRIDGE_NAME, "type", "bridge"],
                    ["ip", "addr", "add", BRIDGE_ADDRESS, "dev", BRIDGE_NAME],
                    ["ip", "link", "set", BRIDGE_NAME, "up"]):
            done = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                pytest.fail(f"no bridge network can be made here: `{' '.join(cmd)}` said "
                            f"{done.stderr.strip()!r}")
    sock = folder / "docker.sock"
    pidfile = folder / "dockerd.pid"
    data = folder / "data"
    data.mkdir(exist_ok=True)
    log = (folder / "dockerd.log").open("ab")
    proc = subprocess.Popen(
        ["dockerd", "--host", f"unix://{sock}", "--data-root", str(data),
         "--exec-root", str(folder / "exec"), "--pidfile", str(pidfile),
         "--storage-driver", _storage_driver(data), f"--bridge={BRIDGE_NAME}",
         "--iptables=false", "--ip6tables=false", "--ip-forward=false",
         "--insecure-registry", "127.0.0.1/8"],
        env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
    bridged = Engine(env={**engine.env, "DOCKER_HOST": f"unix://{sock}"},
                     registry=engine.registry, base_image=engine.base_image)
    try:
        deadline = time.monotonic() + BRIDGE_ENGINE_START_SECONDS
        while bridged.docker("version", check=False, timeout=10).returncode != 0:
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = (folder / "dockerd.log").read_text(errors="replace").splitlines()[-10:]
                pytest.fail("the bridge engine did not start:\n" + "\n".join(tail))
            time.sleep(0.5)
        bridged.docker("network", "inspect", "bridge", timeout=30)
        yield bridged
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        # dockerd leaves its namespaces and data mounts behind: unmount what it left.
        prefix = str(folder.resolve()) + "/"
        mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
        for point in sorted((m for m in mounts if m.startswith(prefix)), key=len, reverse=True):
            subprocess.run(["umount", point], capture_output=True, check=False)
        # Ours by name, whether this session made it or a crashed one left it.
        subprocess.run(["ip", "link", "del", BRIDGE_NAME], capture_output=True, check=False)
        lock.close()
