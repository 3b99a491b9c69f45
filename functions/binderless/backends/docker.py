"""repo2docker images and Docker containers: ``--builder docker`` and ``--spawner docker``.

Both backends reach the Docker engine only through the ``docker`` command line, as
repo2docker itself does for ``--no-run`` builds (``docker version``, ``docker buildx
version``, ``docker image inspect``, ``docker buildx build``; its Python Docker client is
used only to run containers, which binderless does itself). So any ``docker`` found on
``PATH`` answers for the engine, including the fake one the tests use.

Images are named ``<docker_image_prefix>env:<environment key>``: one image per environment,
shared by every commit and repository with the same environment files. A session is a
container named ``binderless-<session id>`` with the session's checkout mounted as the home,
publishing Jupyter's port on 127.0.0.1 only; the token travels in the environment, never
on a command line.

Engines without a bridge network (``dockerd --bridge=none``, as in the project's tests)
publish no ports and fail every ``RUN`` step that needs a network: there, builds use
``--network=host`` and each container shares the host's network with Jupyter listening on
a free port of 127.0.0.1 (the host network mode). The engine is asked once which applies.
repo2docker runs from a folder binderless owns with an explicit, empty configuration, so a
``repo2docker_config.py`` in a checkout or in the server's directory is never executed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from ..envplan import EnvironmentPlan, plan_environment
from ..errors import BinderlessError, BuildFailed, LaunchFailed
from ..settings import Settings
from .process import ProcessFailed, stream_process
from .protocols import ImageRef, LogSink, SessionHandle, SessionSpec

if TYPE_CHECKING:
    from .docker_images import DockerImages

__all__ = ["DockerBuilder", "DockerSpawner"]

IMAGE_REPOSITORY = "env"
USER_ID = 1000
USER_NAME = "jovyan"
CONTAINER_HOME = f"/home/{USER_NAME}"
#: Where a signed-in user's home is mounted in a session's container (their projects).
CONTAINER_PERSISTENT = f"{CONTAINER_HOME}/persistent"
CONTAINER_PORT = 8888
#: Seconds a quick ``docker`` command (inspect, port, logs) may take.
CLI_TIMEOUT = 30.0
#: Seconds ``docker run`` may take to create and start a container from a local image.
RUN_TIMEOUT = 120.0
#: Seconds Jupyter gets to exit on ``docker stop`` before Docker kills it.
STOP_GRACE = 5

USE_UV_BUILDER = "or restart binderless without --builder docker to use the default uv builder."
USE_LOCAL_SPAWNER = ("or restart binderless without --spawner docker to run sessions as local "
                     "processes.")

#: repo2docker's summary of a failed ``docker buildx build``; the line before it says more.
_R2D_COMMAND_FAILED = re.compile(r"^Error during build: Command .* returned non-zero exit status")
_DECORATION = re.compile(r"^[-=\s]*$")
#: Engine-side "this container is already gone" answers of ``docker stop``.
_GONE = ("no such container", "no such object", "is not running", "is already in progress")

#: How session containers reach the network: published ports on Docker's default bridge,
#: or the host's network (engines without a bridge), ``auto`` asking the engine.
NetworkMode = Literal["auto", "bridge", "host"]
#: repo2docker's configuration file for binderless's builds: deliberately empty (see
#: ``_empty_config``); named explicitly so repo2docker never loads one from its directory.
R2D_CONFIG_NAME = "repo2docker_config.py"


@dataclass(frozen=True)
class _EngineProblem:
    message: str
    hint: str


def _engine_problem(output: str, instead: str) -> _EngineProblem | None:
    """Recognise "no usable Docker engine" in ``output`` (docker's or repo2docker's)."""
    text = output.lower()
    if "permission denied while trying to connect to the docker" in text:
        return _EngineProblem(
            "binderless may not use Docker: permission denied on the Docker engine's socket.",
            "Add your user to the 'docker' group (then log in again), " + instead)
    if "no such file or directory: 'docker'" in text:  # repo2docker's words
        return _no_docker_command(instead)
    if any(marker in text for marker in (
        "cannot connect to the docker daemon", "is the docker daemon running",
        "error during connect", "the docker commandline client must be installed",
    )):
        return _EngineProblem(
            "Docker is not running: no Docker engine answered.",
            "Start Docker (Docker Desktop, or `sudo systemctl start docker`) and launch again, "
            + instead)
    if "network bridge not found" in text:
        return _EngineProblem(
            "The Docker engine has no bridge network, so a build step or container had no "
            "network.",
            "binderless uses the host's network on such engines when it starts; restart "
            "binderless, " + instead)
    if "the buildx plugin must be installed" in text:
        return _EngineProblem(
            "Docker's buildx plugin is not installed; repo2docker builds with `docker buildx`.",
            "Install the docker-buildx plugin (Docker Desktop and docker-ce include it), "
            + instead)
    return None


def _no_docker_command(instead: str) -> _EngineProblem:
    return _EngineProblem("The docker command is not installed.",
                          "Install Docker (https://docs.docker.com/get-docker/), " + instead)


@dataclass(frozen=True)
class _Output:
    returncode: int
    stdout: str
    stderr: str

    @property
    def text(self) -> str:
        return f"{self.stdout}\n{self.stderr}"

    def last_line(self) -> str:
        lines = [line.strip() for line in self.text.splitlines() if line.strip()]
        return lines[-1] if lines else f"(exit code {self.returncode}, no output)"


class _DockerUnavailable(Exception):
    """The ``docker`` command could not be run (``missing``), or did not answer in time."""

    def __init__(self, message: str, *, missing: bool = False) -> None:
        super().__init__(message)
        self.missing = missing


async def _docker(args: Sequence[str], *, timeout: float = CLI_TIMEOUT,
                  env: Mapping[str, str] | None = None, merge: bool = False) -> _Output:
    """Run ``docker <args>`` and collect its output (``merge`` interleaves stderr into stdout)."""
    try:
        proc = await asyncio.create_subprocess_exec(
            "docker", *args,
            env=dict(env) if env is not None else None,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT if merge else asyncio.subprocess.PIPE,
            start_new_session=True,  # so a timeout also ends the CLI's plugin processes
        )
    except OSError as exc:
        raise _DockerUnavailable(f"Cannot run docker: {exc}", missing=True) from exc
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout=timeout)
    except (TimeoutError, asyncio.CancelledError) as exc:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
        if isinstance(exc, asyncio.CancelledError):
            raise
        raise _DockerUnavailable(
            f"`docker {args[0]}` did not answer within {timeout:g} seconds.") from None
    assert proc.returncode is not None
    return _Output(proc.returncode, out.decode(errors="replace"),
                   (err or b"").decode(errors="replace"))


BRIDGE_QUERY = ("network", "inspect", "--format", "{{.Name}}", "bridge")


def _has_bridge(answer: _Output, instead: str) -> bool:
    """Whether ``docker network inspect bridge`` found Docker's default bridge network
    (``dockerd --bridge=none`` has none). An engine that did not answer raises
    ``BinderlessError`` rather than being taken for one without a bridge."""
    if answer.returncode == 0:
        return True
    problem = _engine_problem(answer.text, instead)
    if problem is not None and "no bridge network" not in problem.message:
        raise BinderlessError(problem.message, hint=problem.hint)
    return False


def free_loopback_port() -> int:
    """A port of 127.0.0.1 free right now (for Jupyter in the host network mode)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _empty_config(folder: Path) -> Path:
    config = folder / R2D_CONFIG_NAME
    config.write_text("# binderless passes every repo2docker setting on the command line.\n")
    return config


def _repo2docker_version() -> str:
    try:
        return metadata.version("jupyter-repo2docker")
    except metadata.PackageNotFoundError:
        return "unknown"


class _Repo2DockerLog:
    """Turns ``repo2docker --json-logs`` output into plain log lines and remembers the tail."""

    def __init__(self, log: LogSink) -> None:
        self.log = log
        self.tail: list[str] = []

    def __call__(self, raw: str) -> None:
        line = raw.rstrip("\r\n")
        message = line
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if isinstance(record, dict) and isinstance(record.get("message"), str):
                message = record["message"]
        for part in message.split("\n"):
            text = part.rstrip("\r").rsplit("\r", 1)[-1]  # keep a progress bar's last state
            if text.strip():  # buildx separates its steps with blank lines
                self.log(text + "\n")
                self.tail.append(text)
        del self.tail[:-60]

    def last_meaningful(self) -> str:
        for text in reversed(self.tail):
            text = text.strip()
            if text and not _DECORATION.match(text) and not _R2D_COMMAND_FAILED.match(text):
                return text
        return ""


class DockerBuilder:
    """Builds one repo2docker image per environment key (needs Docker with buildx)."""

    name = "docker"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.salt = f"docker:repo2docker-{_repo2docker_version()}:{USER_NAME}:{USER_ID}"

    def plan(self, checkout: Path) -> EnvironmentPlan:
        # repo2docker builds every kind of repository, so ``plan.unsupported`` does not matter.
        return plan_environment(checkout, salt=self.salt)

    def image_name(self, key: str) -> str:
        return f"{self.settings.docker_image_prefix}{IMAGE_REPOSITORY}:{key}"

    def image(self, key: str) -> ImageRef:
        name = self.image_name(key)
        return ImageRef(key=key, name=name, location=name)

    def catalogue_storage(self) -> DockerImages:
        """Its images for the environment catalogue (listed, sized, pruned)."""
        from .docker_images import DockerImages

        return DockerImages(self.settings.docker_image_prefix)

    async def find(self, plan: EnvironmentPlan) -> ImageRef | None:
        try:
            found = await _docker(["image", "inspect", self.image_name(plan.key)])
        except _DockerUnavailable:
            return None  # the build then says what is wrong with Docker
        return self.image(plan.key) if found.returncode == 0 else None

    def command(self, plan: EnvironmentPlan, checkout: Path, *, config: Path | None = None,
                host_network: bool = False) -> list[str]:
        """The repo2docker command line that builds ``checkout`` into the plan's image.

        ``config`` is the configuration file repo2docker loads (an empty one of
        binderless's; never a file of the checkout). ``host_network`` runs the build steps
        in the host's network, for engines without a bridge network."""
        return [
            sys.executable, "-m", "repo2docker",
            *(["--config", str(config)] if config is not None else []),
            "--no-run", "--json-logs",
            "--user-id", str(USER_ID), "--user-name", USER_NAME,
            "--image-name", self.image_name(plan.key),
            "--label", f"binderless.environment={plan.key}",
            # Without --load, a docker-container buildx builder keeps the image in its cache
            # only; repo2docker adds --load only when it runs the image itself.
            "--DockerEngine.extra_buildx_build_args=--load",
            *(["--DockerEngine.extra_buildx_build_args=--network=host"] if host_network else []),
            str(checkout.absolute()),
        ]

    async def build(self, plan: EnvironmentPlan, checkout: Path, log: LogSink) -> ImageRef:
        image = self.image_name(plan.key)
        try:
            bridge = _has_bridge(await _docker(BRIDGE_QUERY), USE_UV_BUILDER)
        except (_DockerUnavailable, BinderlessError):
            bridge = True  # repo2docker then says, in the log too, what is wrong with Docker
        log(f"Building {image} with repo2docker {_repo2docker_version()}\n")
        if not bridge:
            log("The Docker engine has no bridge network: build steps use the host's network.\n")
        r2d_log = _Repo2DockerLog(log)
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        # repo2docker executes a repo2docker_config.py from its current directory: run it
        # from a folder of binderless's own, with an explicit empty configuration.
        with tempfile.TemporaryDirectory(prefix="binderless-r2d-") as work:
            cmd = self.command(plan, checkout, config=_empty_config(Path(work)),
                               host_network=not bridge)
            try:
                await stream_process(cmd, log=r2d_log, env=env, cwd=Path(work),
                                     timeout=self.settings.build_timeout_seconds)
            except ProcessFailed as exc:
                raise self._failure(exc, r2d_log) from exc
        built = await self.find(plan)
        if built is None:
            raise BuildFailed(
                f"repo2docker finished, but Docker has no image named {image}.",
                hint="Check `docker buildx ls`: the selected builder must load images into "
                     "Docker (the default 'docker' driver does).")
        return built

    def _failure(self, exc: ProcessFailed, r2d_log: _Repo2DockerLog) -> BuildFailed:
        problem = _engine_problem("\n".join(r2d_log.tail), USE_UV_BUILDER)
        if problem is not None:
            return BuildFailed(problem.message, hint=problem.hint)
        last = r2d_log.last_meaningful()
        hint = f"The last line of the build log was: {last}" if last else ""
        if exc.returncode is None:
            return BuildFailed(
                "Building the image with repo2docker took too long (more than "
                f"{self.settings.build_timeout_seconds:.0f} seconds).", hint=hint)
        return BuildFailed(f"repo2docker could not build the image (exit code {exc.returncode}).",
                           hint=hint)


def jupyter_arguments(spec: SessionSpec, *, ip: str = "0.0.0.0",
                      port: int = CONTAINER_PORT) -> list[str]:
    """The command a session's container runs; the image's entrypoint runs ``start`` first.

    Jupyter listens on all of the container's addresses (behind a published port), or on
    ``ip=127.0.0.1`` and a free ``port`` when the container shares the host's network."""
    return [
        "jupyter", "lab",
        "--no-browser",
        f"--ip={ip}",
        f"--port={port}",
        "--port-retries=0",
        f"--ServerApp.base_url={spec.base_url}",
        "--ServerApp.allow_origin=*",
        "--ServerApp.allow_remote_access=True",
        "--ServerApp.trust_xheaders=True",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        *([f"--ServerApp.root_dir={CONTAINER_PERSISTENT}/{spec.project.name}"]
          if spec.project else []),
    ]


def _host_port(answer: str) -> int | None:
    """The host port in ``docker port`` output such as ``127.0.0.1:49153``."""
    for line in answer.splitlines():
        match = re.search(r":(\d+)\s*$", line)
        if match:
            return int(match.group(1))
    return None


def start_script_env(spec: SessionSpec) -> dict[str, str]:
    """``R2D_ENTRYPOINT`` for this session's own ``start`` script, or empty for none.

    Images are shared by every commit with the same environment files, while repo2docker
    bakes in the start script of the commit it built: each session names its own (an
    empty value makes repo2docker's entrypoint skip the baked-in one)."""
    return {"R2D_ENTRYPOINT": f"{CONTAINER_HOME}/{spec.start_script}" if spec.start_script else ""}


class DockerSpawner:
    """Runs each session in its own container of the environment's repo2docker image."""

    def __init__(self, settings: Settings, *, cli_timeout: float = CLI_TIMEOUT,
                 run_timeout: float = RUN_TIMEOUT, network: NetworkMode = "auto") -> None:
        self.settings = settings
        self.cli_timeout = cli_timeout
        self.run_timeout = run_timeout
        #: "bridge" or "host" once known; ``auto`` asks the engine at the first start.
        self.network: NetworkMode = network

    def run_arguments(self, spec: SessionSpec, *, host_port: int | None = None) -> list[str]:
        """``docker run`` arguments; environment values come from the ``docker`` process.

        With ``host_port`` the container shares the host's network and Jupyter listens on
        127.0.0.1:``host_port``; otherwise Jupyter's port is published on 127.0.0.1 only."""
        args = [
            "run", "-d", "--rm",
            "--pull", "never",
            "--name", f"binderless-{spec.session_id}",
            *(["--network", "host"] if host_port is not None
              else ["-p", f"127.0.0.1::{CONTAINER_PORT}"]),
            "--label", f"binderless.session={spec.session_id}",
        ]
        user = _run_as()
        if user:
            args += ["--user", user]
        for name in self._container_env(spec):
            args += ["-e", name]
        args += ["-v", f"{spec.home.absolute()}:{CONTAINER_HOME}"]
        if spec.project:
            args += ["-v", f"{spec.project.path.parent.absolute()}:{CONTAINER_PERSISTENT}"]
        jupyter = (jupyter_arguments(spec, ip="127.0.0.1", port=host_port)
                   if host_port is not None else jupyter_arguments(spec))
        return [*args, spec.image.location, *jupyter]

    async def network_mode(self) -> NetworkMode:
        """``bridge`` when the engine has Docker's default bridge network, else ``host``."""
        if self.network == "auto":
            try:
                bridge = _has_bridge(await self._docker(BRIDGE_QUERY), USE_LOCAL_SPAWNER)
            except BinderlessError as exc:
                if isinstance(exc, LaunchFailed):
                    raise
                raise LaunchFailed(exc.message, hint=exc.hint) from exc
            self.network = "bridge" if bridge else "host"
        return self.network

    @staticmethod
    def _container_env(spec: SessionSpec) -> dict[str, str]:
        return {**spec.environment, "JUPYTER_TOKEN": spec.token, **start_script_env(spec)}

    async def _docker(self, args: Sequence[str], *, timeout: float | None = None,
                      env: Mapping[str, str] | None = None) -> _Output:
        """``docker <args>``, with a missing or unresponsive Docker raised as ``LaunchFailed``."""
        try:
            return await _docker(args, timeout=timeout or self.cli_timeout, env=env)
        except _DockerUnavailable as exc:
            if exc.missing:
                problem = _no_docker_command(USE_LOCAL_SPAWNER)
                raise LaunchFailed(problem.message, hint=problem.hint) from exc
            raise LaunchFailed(str(exc), hint="Check that Docker is running and answers "
                                              "`docker info` quickly.") from exc

    async def prepare(self, image: ImageRef) -> None:
        """Nothing to prepare: a built environment starts as it is."""

    async def running(self) -> dict[str, str]:
        """Servers here belong to this server process, which adopts them on start."""
        return {}

    async def start(self, spec: SessionSpec, log: LogSink) -> SessionHandle:
        image = spec.image.location
        if image.startswith("/"):
            raise LaunchFailed(
                "The docker spawner runs images built by the docker builder, but this "
                "environment was built by the uv builder.",
                hint="Start binderless with both --builder docker and --spawner docker, "
                     "or with neither.")
        if spec.start_script:
            # The mounted checkout replaces the image's copy, whose mode repo2docker fixed.
            script = spec.home / spec.start_script
            script.chmod(script.stat().st_mode | 0o755)
        network = await self.network_mode()
        host_port = free_loopback_port() if network == "host" else None
        _give_to_container_user(spec)
        env = {**os.environ, **self._container_env(spec)}
        started = await self._docker(self.run_arguments(spec, host_port=host_port),
                                     timeout=self.run_timeout, env=env)
        container = started.stdout.strip().rsplit("\n", 1)[-1].strip()
        if started.returncode != 0 or not container:
            raise _launch_failed(f"Docker could not start a container from {image}.",
                                 started.text, last=started.last_line())
        handle = SessionHandle(spec.session_id, "", container)
        try:
            port = host_port if host_port is not None else await self._port(container)
        except BaseException:
            with contextlib.suppress(BinderlessError):
                await self.stop(handle)
            raise
        where = "in the host's network" if host_port is not None else "published"
        log(f"Started container {container[:12]} of {image} on port {port} ({where})\n")
        return SessionHandle(spec.session_id, f"http://127.0.0.1:{port}", container)

    async def _port(self, container: str) -> int:
        answer = await self._docker(["port", container, f"{CONTAINER_PORT}/tcp"])
        port = _host_port(answer.stdout) if answer.returncode == 0 else None
        if port is not None:
            return port
        state = await self._docker(["inspect", "-f", "{{.State.Running}}", container])
        if state.returncode == 0 and state.stdout.strip() == "true":
            # Docker's own message ("No public port ... published") reads as if the
            # container had stopped; it is running, but unreachable.
            raise LaunchFailed(
                "The session's container is running, but Docker published no port for "
                "Jupyter.",
                hint="An engine without a bridge network publishes nothing; restart "
                     "binderless so that it uses the host's network, " + USE_LOCAL_SPAWNER)
        logs = await self._docker(["logs", "--tail", "5", container])
        last = next((line.strip() for line in reversed(logs.text.splitlines())
                     if line.strip()), "")
        raise _launch_failed(
            "The session's container stopped right after it started.",
            logs.text, last=last or answer.last_line())

    async def alive(self, handle: SessionHandle) -> bool:
        """Whether the container is running; one Docker does not know, or a Docker that
        does not answer, counts as stopped."""
        if not handle.backend_id:
            return False
        try:
            answer = await _docker(["inspect", "-f", "{{.State.Running}}", handle.backend_id],
                                   timeout=self.cli_timeout)
        except _DockerUnavailable:
            return False
        return answer.returncode == 0 and answer.stdout.strip() == "true"

    async def stop(self, handle: SessionHandle) -> None:
        if not handle.backend_id:
            return
        answer = await self._docker(["stop", "-t", str(STOP_GRACE), handle.backend_id],
                                    timeout=STOP_GRACE + self.cli_timeout)
        if answer.returncode != 0 and not any(g in answer.text.lower() for g in _GONE):
            raise _launch_failed(
                f"Docker could not stop the container of session {handle.session_id}.",
                answer.text, last=answer.last_line())

    async def tail(self, handle: SessionHandle, lines: int = 20) -> list[str]:
        text = ""
        if handle.backend_id:
            with contextlib.suppress(_DockerUnavailable):
                answer = await _docker(["logs", "--tail", str(lines), handle.backend_id],
                                       timeout=self.cli_timeout, merge=True)
                text = answer.stdout if answer.returncode == 0 else ""
        if not text.strip():
            # ``--rm`` removes a stopped container with its logs; repo2docker's entrypoint
            # also writes the server's output into the (mounted) home.
            logfile = (self.settings.state_dir / "sessions" / handle.session_id / "home"
                       / ".jupyter-server-log.txt")
            with contextlib.suppress(OSError):
                text = logfile.read_text(errors="replace")
        return [line for line in text.splitlines() if line.strip()][-lines:]


def _run_as() -> str:
    """``--user`` for session containers: empty (the image's uid 1000) when binderless
    runs as root, which hands the session's files to uid 1000, or as uid 1000 itself;
    otherwise the server's own uid and gid, the owner of the mounted home."""
    uid = os.getuid()
    if uid in (0, USER_ID):
        return ""
    return f"{uid}:{os.getgid()}"


def _give_to_container_user(spec: SessionSpec) -> None:
    """As root, make the mounted home (and project) the container user's: Jupyter, which
    runs as uid 1000, writes ``~/.local`` and its log there."""
    if os.geteuid() != 0:
        return
    roots = [spec.home] + ([spec.project.path] if spec.project else [])
    for root in roots:
        if not root.exists():
            continue
        os.lchown(root, USER_ID, USER_ID)
        for folder, dirs, files in os.walk(root):
            for name in (*dirs, *files):
                os.lchown(os.path.join(folder, name), USER_ID, USER_ID)


def _launch_failed(message: str, output: str, *, last: str = "") -> LaunchFailed:
    problem = _engine_problem(output, USE_LOCAL_SPAWNER)
    if problem is not None:
        return LaunchFailed(problem.message, hint=problem.hint)
    detail = last or next((line.strip() for line in reversed(output.splitlines())
                           if line.strip()), "")
    return LaunchFailed(message, hint=f"Docker said: {detail}" if detail else "")
