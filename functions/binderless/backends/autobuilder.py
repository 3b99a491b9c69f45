"""``--builder auto``: uv where it can build, repo2docker on a Docker engine where not.

The uv builder makes environments quickly and needs no Docker, but only for Python
repositories on a Python installed here. ``AutoBuilder`` plans every checkout with it and
hands the repositories it cannot build (a Dockerfile, R, Julia, Nix, ``apt.txt``, a Python
version not installed here) to the docker builder, when a Docker engine answers. An
``environment.yml`` whose conda packages pip cannot install fails in the uv build only;
such a build is done again with repo2docker, under the same environment key, so that
later launches find the image. ``AutoSpawner`` then runs each environment where its
builder made it: uv environments (a folder) as local processes, images in containers.

``--builder auto`` is the default. ``local.py`` decides once, at startup: when a ``docker``
command and an engine's address exist (``engine_may_answer``) and ``docker version``
answers within ``ENGINE_TIMEOUT`` seconds, the server uses these two; otherwise it is the
plain uv builder and local spawner of before (``UvBuilderWithoutEngine``, whose refusals
say what to install), and starting Docker later takes a restart. A machine without
Docker starts no ``docker`` process at all.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from ..envplan import EnvironmentPlan
from ..errors import BuildFailed, UnsupportedRepository
from .protocols import Builder, ImageRef, LogSink, SessionHandle, SessionSpec, Spawner
from .pythons import find_python
from .uvbuilder import UvBuilder, swap_advice

__all__ = ["NO_ENGINE_HINT", "AutoBuilder", "AutoSpawner", "EngineProbe", "UvBuilderWithoutEngine",
           "docker_engine_version", "engine_may_answer", "refusal_without_engine"]

log = logging.getLogger("binderless.autobuilder")

#: Seconds ``docker version`` may take to say whether an engine answers.
ENGINE_TIMEOUT = 5.0
#: Seconds before an engine that did not answer is asked again.
ENGINE_RETRY_SECONDS = 30.0
#: The advice of a uv refusal when no Docker engine answered at startup (in place of
#: ``OTHER_BUILDER``, whose ``--builder auto`` is already the case). The engine is looked
#: for at startup only (``local.py``), hence the restart.
NO_ENGINE_HINT = (
    "Install Docker with its buildx plugin (https://docs.docker.com/get-docker/) or run "
    "`python3 dev.py engine` in a binderless checkout and export the DOCKER_HOST it "
    "prints, then restart binderless: it builds such repositories with repo2docker, as a "
    "binderless deployed to AWS does."
)
_CONDA_FILES = ("environment.yml", "environment.yaml")


def docker_engine_version(timeout: float = ENGINE_TIMEOUT) -> str:
    """The server version of the engine ``docker`` reaches (``DOCKER_HOST`` or its
    default socket), or ``""`` when there is no ``docker`` command or no engine answers."""
    try:
        answer = subprocess.run(["docker", "version", "--format", "{{.Server.Version}}"],
                                capture_output=True, text=True, timeout=timeout,
                                stdin=subprocess.DEVNULL, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return answer.stdout.strip() if answer.returncode == 0 else ""


class EngineProbe:
    """Whether a Docker engine answers: asked at the first need, remembered once it has
    answered, asked again ``retry_after`` seconds after it did not."""

    def __init__(self, ask: Callable[[], str] = docker_engine_version, *,
                 retry_after: float = ENGINE_RETRY_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ask = ask
        self.retry_after = retry_after
        self.clock = clock
        self.version = ""
        self._asked_at: float | None = None
        self._lock = threading.Lock()  # plans run in worker threads

    def __call__(self) -> bool:
        with self._lock:
            if self.version:
                return True
            now = self.clock()
            if self._asked_at is not None and now - self._asked_at < self.retry_after:
                return False
            self._asked_at = now
            self.version = self.ask()
            if self.version:
                log.info("Docker engine %s answers: repositories the uv builder cannot "
                         "build are built with repo2docker", self.version)
            else:
                log.info("no Docker engine answers: only repositories the uv builder can "
                         "build will launch")
            return bool(self.version)


def _python_installed(version: str) -> bool:
    try:
        find_python(version)
    except UnsupportedRepository:
        return False
    return True


def _has_conda_packages(plan: EnvironmentPlan) -> bool:
    """Whether the plan installs packages read from an ``environment.yml`` (conda's
    names, which pip may not find)."""
    return bool(plan.requirements) and any(
        name.rpartition("/")[2] in _CONDA_FILES for name in plan.files)


def _conda_failure(plan: EnvironmentPlan, exc: BuildFailed) -> bool:
    """Whether the uv build failed on the packages of an ``environment.yml``."""
    conda_file = exc.file.rpartition("/")[2] in ("", *_CONDA_FILES)
    return exc.fault == "repository" and conda_file and _has_conda_packages(plan)


def _without_engine(hint: str) -> str:
    """``hint`` advising what to install for repo2docker instead of ``--builder auto``
    (which this already is): the advice swapped, never a second one added."""
    swapped = swap_advice(hint, NO_ENGINE_HINT)
    if NO_ENGINE_HINT.lower() in swapped.lower():
        return swapped
    return f"{hint}\n{NO_ENGINE_HINT}".strip()


def refusal_without_engine(exc: UnsupportedRepository) -> UnsupportedRepository:
    """The uv builder's refusal, saying what to install to build the repository here."""
    return UnsupportedRepository(exc.message, hint=_without_engine(exc.hint), fault=exc.fault,
                                 file=exc.file, line=exc.line)


def _failure_without_engine(exc: BuildFailed) -> BuildFailed:
    return BuildFailed(exc.message, hint=_without_engine(exc.hint), fault=exc.fault,
                       file=exc.file, line=exc.line)


def engine_may_answer(environ: Mapping[str, str] | None = None) -> bool:
    """Whether asking for a Docker engine is worth a ``docker`` process: there is a
    ``docker`` command and a place an engine would answer (``DOCKER_HOST``, a context, the
    default socket). Without one, a machine never waits for an engine at startup."""
    env = os.environ if environ is None else environ
    if shutil.which("docker", path=env.get("PATH")) is None:
        return False
    if env.get("DOCKER_HOST") or env.get("DOCKER_CONTEXT"):
        return True
    config = Path(env.get("DOCKER_CONFIG") or Path.home() / ".docker")
    return Path("/var/run/docker.sock").exists() or (config / "contexts").is_dir()


class UvBuilderWithoutEngine(UvBuilder):
    """The uv builder of ``--builder auto`` when no engine answered at startup: its
    refusals say what to install to build such repositories here."""

    advice = NO_ENGINE_HINT

    async def build(self, plan: EnvironmentPlan, checkout: Path, log: LogSink) -> ImageRef:
        try:
            return await super().build(plan, checkout, log)
        except UnsupportedRepository as exc:
            raise refusal_without_engine(exc) from exc
        except BuildFailed as exc:
            if _conda_failure(plan, exc):
                raise _failure_without_engine(exc) from exc
            raise


class AutoBuilder:
    """A builder that builds each repository with ``uv`` when it can, else with ``docker``
    (repo2docker) when ``engine()`` says an engine answers."""

    name = "auto"
    #: The launch messages' word: most environments here are uv's.
    artifact = "environment"

    def __init__(self, uv: Builder, docker: Builder, engine: Callable[[], bool], *,
                 python_installed: Callable[[str], bool] = _python_installed) -> None:
        self.uv = uv
        self.docker = docker
        self.engine = engine
        self.python_installed = python_installed
        self._pythons: dict[str, bool] = {}
        #: Environment keys the docker builder makes (its plans', and uv plans it rebuilt).
        self._docker_keys: set[str] = set()
        self._lock = threading.Lock()

    def uv_cannot(self, plan: EnvironmentPlan) -> str:
        """What in ``plan`` the uv builder cannot build (``""``: nothing, as far as the
        plan tells; ``build`` may still find more)."""
        if plan.unsupported:
            return ", ".join(plan.unsupported)
        version = plan.python_version
        if version:
            with self._lock:
                if version not in self._pythons:
                    self._pythons[version] = self.python_installed(version)
                if not self._pythons[version]:
                    return f"Python {version} (not installed here)"
        return ""

    def plan(self, checkout: Path) -> EnvironmentPlan:
        plan = self.uv.plan(checkout)
        needs = self.uv_cannot(plan)
        if not needs or not self.engine():
            return plan  # without an engine, the uv build refuses it (see ``build``)
        docker_plan = self.docker.plan(checkout)
        with self._lock:
            self._docker_keys.add(docker_plan.key)
        log.info("%s needs %s: building it with repo2docker", checkout.name, needs)
        return docker_plan

    def _by_docker(self, plan: EnvironmentPlan) -> bool:
        with self._lock:
            return plan.key in self._docker_keys

    async def find(self, plan: EnvironmentPlan) -> ImageRef | None:
        if self._by_docker(plan):
            return await self.docker.find(plan)
        found = await self.uv.find(plan)
        if found is None and _has_conda_packages(plan) and await asyncio.to_thread(self.engine):
            # Built with repo2docker by an earlier launch whose uv build failed (below).
            found = await self.docker.find(plan)
            if found is not None:
                with self._lock:
                    self._docker_keys.add(plan.key)
        return found

    async def build(self, plan: EnvironmentPlan, checkout: Path, log: LogSink) -> ImageRef:
        if self._by_docker(plan):
            return await self.docker.build(plan, checkout, log)
        try:
            return await self.uv.build(plan, checkout, log)
        except UnsupportedRepository as exc:
            # The uv build found what the plan did not (repo2docker's own detection).
            if not await asyncio.to_thread(self.engine):
                raise refusal_without_engine(exc) from exc
            log(f"{exc.message}\nBuilding it with repo2docker on the Docker engine "
                "instead.\n")
        except BuildFailed as exc:
            if not _conda_failure(plan, exc):
                raise
            if not await asyncio.to_thread(self.engine):
                raise _failure_without_engine(exc) from exc
            # pip could not install environment.yml's conda packages: conda can.
            log(f"{exc.message}\nThe environment.yml may name conda-only packages: "
                "building it with repo2docker (conda) on the Docker engine instead.\n")
        with self._lock:
            self._docker_keys.add(plan.key)
        return await self.docker.build(plan, checkout, log)


def _by_local_process(handle: SessionHandle) -> bool:
    """Whether a local process runs the session: the local spawner's ``backend_id`` is a
    pid, the docker spawner's a 64-hex-digit container id (empty: neither started)."""
    backend_id = handle.backend_id
    return not backend_id or (backend_id.isdigit() and len(backend_id) < 16)


class AutoSpawner:
    """Runs each environment where its builder made it: a uv environment (a folder, its
    ``location`` an absolute path) with ``local``, a repo2docker image with ``docker``.
    Handles need no mark of their own: a pid tells a local session from a container."""

    def __init__(self, local: Spawner, docker: Spawner) -> None:
        self.local = local
        self.docker = docker

    def _for_image(self, image: ImageRef) -> Spawner:
        return self.local if image.location.startswith("/") else self.docker

    def _for_handle(self, handle: SessionHandle) -> Spawner:
        return self.local if _by_local_process(handle) else self.docker

    async def prepare(self, image: ImageRef) -> None:
        await self._for_image(image).prepare(image)

    async def start(self, spec: SessionSpec, log: LogSink) -> SessionHandle:
        return await self._for_image(spec.image).start(spec, log)

    async def stop(self, handle: SessionHandle) -> None:
        await self._for_handle(handle).stop(handle)

    async def alive(self, handle: SessionHandle) -> bool:
        return await self._for_handle(handle).alive(handle)

    async def running(self) -> dict[str, str]:
        return {**await self.local.running(), **await self.docker.running()}

    async def tail(self, handle: SessionHandle, lines: int = 20) -> list[str]:
        return await self._for_handle(handle).tail(handle, lines)
