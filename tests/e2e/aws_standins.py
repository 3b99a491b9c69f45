"""Test-only stand-ins for what an AWS emulator (moto) cannot do: run a build, run a task.

``LocalCodeBuildProject`` and ``LocalFargateTasks`` subclass the real adapters, so every
AWS call the gateway makes still reaches moto: ``StartBuild``, ``BatchGetBuilds``,
``RunTask``, ``DescribeTasks`` and ``StopTask`` are sent as they would be to AWS. What
moto fakes (a build that "succeeds" at once, a task that never runs) is done here instead,
with local processes:

* a build downloads its source zip from (moto) S3, builds the environment with the uv
  builder, writes its log to (moto) CloudWatch Logs as the CodeBuild runner would, and
  "pushes" the image with ECR ``PutImage`` under the tag ``IMAGE_URI`` names;
* a task runs the real ``build-runner/session-start`` in front of a stand-in of
  repo2docker's entrypoint and the task's command, with the task's environment and the
  built environment on ``PATH``. Each task gets a loopback address of its own
  (127.0.0.2, 127.0.0.3, ...), so every session listens on port 8888 as in Fargate.

The "image" of a tag is a ``LocalImage``: the uv environment, the repository's copy as
the image has it (``postBuild``'s files included) and its start script (``R2D_ENTRYPOINT``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import itertools
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import threading
import time
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from binderless.aws.builder import RUNNER_SCRIPT
from binderless.aws.codebuild import BuildState, CodeBuildProject
from binderless.aws.ecs import FargateTasks, TaskState
from binderless.backends.uvbuilder import UvBuilder
from binderless.errors import BinderlessError
from binderless.settings import Settings
from tests.ecr_fakes import manifest

__all__ = ["LocalCodeBuildProject", "LocalFargateTasks", "LocalImage", "LocalImages"]

ROOT = Path(__file__).resolve().parents[2]
SESSION_START = ROOT / "build-runner" / "session-start"
CONTAINER_PORT = 8888
#: Seconds between SIGTERM and SIGKILL (ECS: the task definition's stopTimeout, 120).
STOP_TIMEOUT_SECONDS = 30
ClientFactory = Callable[[str], Any]

#: repo2docker's entrypoint, reduced to what matters here: the image's start script
#: (``R2D_ENTRYPOINT``, set at build time) runs the command.
R2D_ENTRYPOINT = """\
#!/bin/sh
if [ -n "${R2D_ENTRYPOINT:-}" ]; then exec "$R2D_ENTRYPOINT" "$@"; fi
exec "$@"
"""



def split_image_uri(uri: str) -> tuple[str, str]:
    """``<registry>/<repository>:<tag>`` -> (repository, tag)."""
    path = uri.split("/", 1)[1]
    repository, _, tag = path.rpartition(":")
    return repository, tag


class _LogStream:
    """Lines into one CloudWatch Logs stream (created here), with ever later timestamps."""

    def __init__(self, client: Any, group: str, stream: str) -> None:
        self.client = client
        self.group = group
        self.stream = stream
        self._last = 0
        self._lock = threading.Lock()
        client.create_log_stream(logGroupName=group, logStreamName=stream)

    def put(self, *messages: str) -> None:
        with self._lock:
            events = []
            for message in messages:
                self._last = max(self._last + 1, int(time.time() * 1000))
                events.append({"timestamp": self._last, "message": message})
            self.client.put_log_events(logGroupName=self.group, logStreamName=self.stream,
                                       logEvents=events)


# ----- images -----------------------------------------------------------------------------


@dataclass(frozen=True)
class LocalImage:
    """What an image of one environment key holds, as local folders."""

    tag: str
    env_dir: Path  # the environment, whose bin/ goes first on PATH
    home: Path  # the repository as the image has it, postBuild's files included
    start: str | None  # the start script repo2docker found (R2D_ENTRYPOINT)


class LocalImages:
    """The "images" local builds made, by tag; ``root`` holds their folders."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.entrypoint = root / "repo2docker-entrypoint"
        root.mkdir(parents=True, exist_ok=True)
        self.entrypoint.write_text(R2D_ENTRYPOINT)
        self.entrypoint.chmod(0o755)
        self._images: dict[str, LocalImage] = {}
        self._lock = threading.Lock()

    def add(self, image: LocalImage) -> None:
        with self._lock:
            self._images[image.tag] = image

    def get(self, tag: str) -> LocalImage | None:
        with self._lock:
            return self._images.get(tag)


# ----- CodeBuild --------------------------------------------------------------------------


def unzip(data: bytes, dest: Path) -> None:
    """Unpack a zip of ``aws/s3.py``'s ``zip_directory`` with its modes and symlinks."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        for info in archive.infolist():
            parts = [p for p in info.filename.split("/") if p]
            if not parts or ".." in parts:
                continue
            target = dest.joinpath(*parts)
            mode = info.external_attr >> 16
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            if stat.S_ISLNK(mode):
                os.symlink(archive.read(info).decode(), target)
            else:
                target.write_bytes(archive.read(info))
                target.chmod((mode & 0o777) or 0o644)


class _LocalBuild:
    """One build, run in a thread of its own with its own event loop."""

    def __init__(self, *, build_id: str, source: tuple[str, str], env: Mapping[str, str],
                 log: _LogStream, s3: Any, ecr: Any, images: LocalImages) -> None:
        self.build_id = build_id
        self.source = source
        self.env = dict(env)
        self.log = log
        self.s3 = s3
        self.ecr = ecr
        self.images = images
        self.status = "IN_PROGRESS"
        self.failure = ""
        self.done = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[Any] | None = None
        self._cancelled = False
        self._lock = threading.Lock()
        self.thread = threading.Thread(target=self._thread, name=f"build-{build_id}",
                                       daemon=True)

    def start(self) -> None:
        self.thread.start()

    def cancel(self) -> None:
        with self._lock:
            self._cancelled = True
            if self._loop is not None and self._task is not None and not self.done.is_set():
                with contextlib.suppress(RuntimeError):  # the loop has just closed
                    self._loop.call_soon_threadsafe(self._task.cancel)

    def _container(self, message: str) -> None:
        """A line of CodeBuild's own, as its agent writes them."""
        stamp = time.strftime("%Y/%m/%d %H:%M:%S", time.gmtime())
        self.log.put(f"[Container] {stamp}.000000 {message}")

    def _emit(self, text: str) -> None:
        """Lines of the runner, which prints JSON with a ``message`` (like repo2docker)."""
        lines = [json.dumps({"message": line}) for line in text.splitlines() if line.strip()]
        if lines:
            self.log.put(*lines)

    def _thread(self) -> None:
        try:
            status, failure = asyncio.run(self._main())
        except asyncio.CancelledError:
            status, failure = "STOPPED", ""
        except BaseException as exc:  # a thread must not die with an exception
            status, failure = "FAULT", f"BUILD: {type(exc).__name__}: {exc}"
            with contextlib.suppress(Exception):
                self._container(f"Phase context status code: {failure}")
        self.status, self.failure = status, failure
        self.done.set()

    async def _main(self) -> tuple[str, str]:
        with self._lock:
            if self._cancelled:
                raise asyncio.CancelledError
            self._loop = asyncio.get_running_loop()
            self._task = asyncio.current_task()
        work = self.images.root / "builds" / self.build_id.replace(":", "-")
        src = work / "src"
        try:
            self._container("Entering phase DOWNLOAD_SOURCE")
            await asyncio.to_thread(self._download, src)
            self._container(f"Running command python3 {RUNNER_SCRIPT} build")
            return await self._build(src)
        finally:
            await asyncio.to_thread(shutil.rmtree, work, True)

    def _download(self, dest: Path) -> None:
        bucket, key = self.source
        data = self.s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        dest.mkdir(parents=True)
        unzip(data, dest)

    async def _build(self, src: Path) -> tuple[str, str]:
        uri = self.env["IMAGE_URI"]
        repository, tag = split_image_uri(uri)
        self._emit(f"Building {uri} with the uv builder (a test stand-in for repo2docker)")
        builder = UvBuilder(Settings(state_dir=self.images.root / "uv"))
        # The environment is keyed by the image's tag, as the image is.
        plan = dataclasses.replace(builder.plan(src), key=tag)
        try:
            built = await builder.build(plan, src, self._emit)
        except BinderlessError as exc:
            # The runner's last line says what failed, as repo2docker's does.
            self._emit(exc.hint)
            self._emit(exc.message)
            self._container("Phase complete: BUILD State: FAILED")
            return "FAILED", ("BUILD: COMMAND_EXECUTION_ERROR: Error while executing command: "
                              f"python3 {RUNNER_SCRIPT} build. Reason: exit status 1")
        env_dir = Path(built.location)
        home = self.images.root / "images" / tag / "home"
        await asyncio.to_thread(self._image_home, src, env_dir / "home", home)
        self.images.add(LocalImage(tag=tag, env_dir=env_dir, home=home, start=plan.start))
        await asyncio.to_thread(self.ecr.put_image, repositoryName=repository,
                                imageManifest=manifest(tag), imageTag=tag)
        self._emit(f"Pushed {uri}")
        self._container("Phase complete: BUILD State: SUCCEEDED")
        return "SUCCEEDED", ""

    @staticmethod
    def _image_home(src: Path, overlay: Path, home: Path) -> None:
        shutil.rmtree(home, ignore_errors=True)
        shutil.copytree(src, home, symlinks=True, ignore=shutil.ignore_patterns(".git"))
        if overlay.is_dir():
            shutil.copytree(overlay, home, symlinks=True, dirs_exist_ok=True)


class LocalCodeBuildProject(CodeBuildProject):
    """``StartBuild`` goes to moto, then the build runs here; ``status`` reports it.

    ``builds_started`` counts the builds of every instance (for "exactly one build").
    """

    builds_started: ClassVar[int] = 0
    _count_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, client: Any, project_name: str, *, client_factory: ClientFactory,
                 images: LocalImages, log_group: str = "") -> None:
        super().__init__(client, project_name)
        self.s3 = client_factory("s3")
        self.ecr = client_factory("ecr")
        self.logs = client_factory("logs")
        self.images = images
        self.log_group = log_group or f"/aws/codebuild/{project_name}"
        self._builds: dict[str, _LocalBuild] = {}
        self._lock = threading.Lock()

    def start(self, source_s3: str, env: Mapping[str, str], idempotency_token: str, *,
              buildspec: str | None = None) -> str:
        build_id = super().start(source_s3, env, idempotency_token, buildspec=buildspec)
        with self._lock:
            if build_id in self._builds:  # the same token again: the same build
                return build_id
            bucket, _, key = source_s3.partition("/")
            stream = _LogStream(self.logs, self.log_group, build_id.split(":", 1)[1])
            build = _LocalBuild(build_id=build_id, source=(bucket, key), env=env, log=stream,
                                s3=self.s3, ecr=self.ecr, images=self.images)
            self._builds[build_id] = build
        with LocalCodeBuildProject._count_lock:
            LocalCodeBuildProject.builds_started += 1
        build.start()
        return build_id

    def status(self, build_id: str) -> BuildState:
        moto_state = super().status(build_id)  # moto says SUCCEEDED at once: not used
        build = self._builds.get(build_id)
        if build is None:
            return moto_state
        group, stream = build.log.group, build.log.stream
        if not build.done.is_set():
            return BuildState("IN_PROGRESS", "BUILD", group, stream)
        return BuildState(build.status, "COMPLETED", group, stream, build.failure)

    def stop(self, build_id: str) -> None:
        build = self._builds.get(build_id)
        if build is not None:
            build.cancel()
        super().stop(build_id)

    def close(self, timeout: float = 30.0) -> None:
        """Cancel the builds still running and wait for their threads."""
        for build in list(self._builds.values()):
            build.cancel()
        for build in list(self._builds.values()):
            build.thread.join(timeout)


# ----- ECS --------------------------------------------------------------------------------


def _worker_octet() -> int:
    """127.<this>.x.y: each pytest-xdist worker (gw0, gw1, ...) hands out addresses of its
    own, so two workers never start tasks on the same address and port at once; the
    second octet 0 stays for the tests' fixed addresses."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    return 1 + (int(worker[2:]) if worker[2:].isdigit() else 0)


class _Addresses:
    """Loopback addresses for tasks, one each: all of 127.0.0.0/8 is loopback on Linux."""

    _counter = itertools.count()
    _lock = threading.Lock()

    @classmethod
    def take(cls) -> str:
        with cls._lock:
            while True:
                n = next(cls._counter)
                ip = f"127.{_worker_octet()}.{n // 250}.{n % 250 + 2}"
                with socket.socket() as sock:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    try:
                        sock.bind((ip, CONTAINER_PORT))
                    except OSError:
                        continue
                return ip


class _LocalTask:
    """One task: PROVISIONING until its process starts, RUNNING while it runs, then
    STOPPED with its exit code. The process's output goes to the task's log stream."""

    def __init__(self, *, arn: str, image: LocalImage | None, image_uri: str,
                 environment: Mapping[str, str], command: Sequence[str], ip: str,
                 workdir: Path, log: _LogStream, entrypoint: Path) -> None:
        self.arn = arn
        self.image = image
        self.image_uri = image_uri
        self.environment = dict(environment)
        self.command = list(command)
        self.ip = ip
        self.workdir = workdir
        self.log = log
        self.entrypoint = entrypoint
        self.proc: subprocess.Popen[bytes] | None = None
        self.last_status = "PROVISIONING"
        self.desired_status = "RUNNING"
        self.stopped_reason = ""
        self.exit_code: int | None = None
        self._lock = threading.Lock()
        self.thread = threading.Thread(target=self._thread, name=f"task-{arn}", daemon=True)

    @property
    def home(self) -> Path:
        return self.workdir / "home"

    def start(self) -> None:
        self.thread.start()

    def state(self) -> TaskState:
        with self._lock:
            return TaskState(self.last_status, self.desired_status,
                             private_ip=self.ip if self.last_status == "RUNNING" else "",
                             stopped_reason=self.stopped_reason, exit_code=self.exit_code)

    def running(self) -> bool:
        """Whether a process of this task (its process group: kernels too) is alive."""
        proc = self.proc
        if proc is None:
            return False
        return proc.poll() is None or _group_alive(proc.pid)

    def arguments(self, image: LocalImage) -> list[str]:
        command = [f"--ip={self.ip}" if arg == "--ip=0.0.0.0" else arg for arg in self.command]
        if os.geteuid() == 0:
            command.append("--allow-root")
        return [str(SESSION_START), str(self.entrypoint), *command]

    def process_env(self, image: LocalImage) -> dict[str, str]:
        env = {
            "PATH": f"{image.env_dir / 'bin'}{os.pathsep}/usr/local/bin:/usr/bin:/bin",
            "HOME": str(self.home),
            "LANG": "C.UTF-8",
            "USER": "jovyan",
            "VIRTUAL_ENV": str(image.env_dir),
            "PYTHONUNBUFFERED": "1",
            "REPO_DIR": str(self.home),
        }
        if image.start:
            env["R2D_ENTRYPOINT"] = str(self.home / image.start)
        env.update(self.environment)
        # The bootstrap listener, like Jupyter, listens on the task's own address here.
        bootstrap = env.get("BINDERLESS_BOOTSTRAP", "")
        if bootstrap.startswith("0.0.0.0:"):
            env["BINDERLESS_BOOTSTRAP"] = f"{self.ip}:{bootstrap.partition(':')[2]}"
        # The task names its start script by its path in the container; here $HOME is local.
        entrypoint = env.get("R2D_ENTRYPOINT", "")
        if entrypoint.startswith("/home/jovyan/"):
            env["R2D_ENTRYPOINT"] = str(self.home / entrypoint.removeprefix("/home/jovyan/"))
        return env

    def _finish(self, reason: str, exit_code: int | None = None) -> None:
        with self._lock:
            self.last_status = "STOPPED"
            self.desired_status = "STOPPED"
            self.stopped_reason = self.stopped_reason or reason
            self.exit_code = exit_code

    def _thread(self) -> None:
        try:
            self._run()
        except Exception as exc:  # a thread must not die with an exception
            self._finish(f"Task failed to start: {type(exc).__name__}: {exc}")

    def _run(self) -> None:
        image = self.image
        if image is None:
            self._finish(f"CannotPullContainerError: {self.image_uri}: not found")
            return
        shutil.copytree(image.home, self.home, symlinks=True)  # the image's $HOME
        with self._lock:
            if self.desired_status == "STOPPED":
                self.last_status = "STOPPED"
                return
            self.proc = subprocess.Popen(
                self.arguments(image), cwd=self.home, env=self.process_env(image),
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                start_new_session=True)
            self.last_status = "RUNNING"
        assert self.proc.stdout is not None
        with open(self.workdir / "output.log", "ab") as out, self.proc.stdout:
            for raw in self.proc.stdout:
                out.write(raw)
                out.flush()
                line = raw.decode(errors="replace").rstrip("\r\n")
                if line.strip():
                    with contextlib.suppress(Exception):  # a log is for people
                        self.log.put(line)
        code = self.proc.wait()
        self._finish("Essential container in task exited", code)

    def stop(self, reason: str) -> None:
        with self._lock:
            if self.desired_status != "STOPPED":
                self.stopped_reason = reason
            self.desired_status = "STOPPED"
            proc = self.proc
        if proc is not None:
            _kill_group(proc, signal.SIGTERM)
            # As ECS waits the task definition's stopTimeout: session-start may upload the
            # visitor's changes after Jupyter has ended (returns as soon as it exits).
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=STOP_TIMEOUT_SECONDS)
            # Kernels and other children of the server belong to its process group.
            _kill_group(proc, signal.SIGKILL)
            proc.wait()
        self.thread.join(10)


def _group_alive(pgid: int) -> bool:
    """Whether a process of the group ``pgid`` lives (zombies do not count)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone meanwhile
        if len(fields) > 2 and fields[2] == str(pgid) and fields[0] != "Z":
            return True
    return False


def _kill_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


class LocalFargateTasks(FargateTasks):
    """``RunTask`` goes to moto, then the session runs here as a local process group."""

    def __init__(self, client: Any, *, client_factory: ClientFactory, images: LocalImages,
                 workdir: Path, shared: dict[str, _LocalTask] | None = None,
                 **kwargs: Any) -> None:
        super().__init__(client, **kwargs)
        self.logs_client = client_factory("logs")
        self.ecs_client = client_factory("ecs")
        self.images = images
        self.workdir = workdir
        #: The tasks running "in the cluster": several gateways' stand-ins may share them,
        #: as gateways share one ECS cluster.
        self.tasks: dict[str, _LocalTask] = {} if shared is None else shared
        self._lock = threading.Lock()

    def run(self, task_definition: str, *, environment: Mapping[str, str],
            command: Sequence[str], client_token: str,
            tags: Mapping[str, str] | None = None) -> str:
        arn = super().run(task_definition, environment=environment, command=command,
                          client_token=client_token, tags=tags)
        with self._lock:
            if arn in self.tasks:  # the same client token again: the same task
                return arn
            # The stand-in's own look at the definition (to find the image to run) goes
            # through a client of its own, not counted as the gateway's calls.
            definition = self.ecs_client.describe_task_definition(
                taskDefinition=task_definition)["taskDefinition"]
            image_uri = str(definition["containerDefinitions"][0]["image"])
            task_id = arn.rsplit("/", 1)[-1]
            workdir = self.workdir / task_id
            workdir.mkdir(parents=True)
            task = _LocalTask(
                arn=arn, image=self.images.get(split_image_uri(image_uri)[1]),
                image_uri=image_uri, environment=environment, command=command,
                ip=_Addresses.take(), workdir=workdir,
                log=_LogStream(self.logs_client, self.log_group, self.log_stream(arn)),
                entrypoint=self.images.entrypoint)
            self.tasks[arn] = task
        task.start()
        return arn

    def describe(self, task_arn: str) -> TaskState:
        moto_state = super().describe(task_arn)  # moto's state is made up: not used
        task = self.tasks.get(task_arn)
        return moto_state if task is None else task.state()

    def stop(self, task_arn: str, reason: str) -> None:
        task = self.tasks.get(task_arn)
        if task is not None:
            task.stop(reason)
        super().stop(task_arn, reason)

    def running(self) -> list[str]:
        """The tasks whose processes are still alive."""
        return [arn for arn, task in list(self.tasks.items()) if task.running()]

    def close(self) -> None:
        """Stop every task's processes (teardown)."""
        for task in list(self.tasks.values()):
            task.stop("test teardown")
