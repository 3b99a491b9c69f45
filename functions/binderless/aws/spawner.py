"""Sessions as ECS Fargate tasks: ``FargateSpawner``.

An image is built once per environment and shared by every commit and repository with
the same environment files, so its copy of the repository may be another commit's. The
session's own checkout therefore travels beside it: ``start`` packs ``spec.home`` into a
tarball, uploads it to S3 and hands the task a presigned URL; the image's entrypoint
wrapper (``build-runner/session-start``) unpacks it into the home before Jupyter starts.

Jupyter starts as in ``DockerSpawner``: the same command line, the ``BINDER_*`` variables
in the environment. The token and the checkout's URL grant access to the session, so they
never travel in RunTask (readable through ``DescribeTasks`` and CloudTrail): the task gets
only the token's hash, and the gateway hands it both once it runs (``aws/bootstrap.py``).
``backend_id`` is the task ARN and ``target`` the task's private address, which only the
session proxy (in the same VPC) can reach.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tarfile
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from ..backends.docker import CONTAINER_PORT, jupyter_arguments, start_script_env
from ..backends.protocols import ImageRef, LogSink, SessionHandle, SessionSpec
from ..errors import BinderlessError, LaunchFailed
from .bootstrap import HttpBootstrap, token_digest
from .ecs import (
    SESSION_TAG,
    EfsMount,
    FargateTasks,
    TaskDefinitionMissing,
    TaskState,
    definition_digest,
    ephemeral_storage_gib,
    task_family,
)

__all__ = ["AccessPoints", "Bootstrap", "CheckoutObjects", "FargateSpawner", "ImageSizes",
           "LogReader", "RestoreHandoffs", "checkout_key", "pack_checkout"]

log = logging.getLogger("binderless.aws.spawner")

#: Task states from which a task can still become (or already is) a running server.
ALIVE_STATES = frozenset({"PROVISIONING", "PENDING", "ACTIVATING", "RUNNING"})
_PROGRESS = {
    "PROVISIONING": "Waiting for capacity...",
    "PENDING": "Pulling the image...",
    "ACTIVATING": "Starting the container...",
}
#: The home subfolder kept across sessions; the checkout never writes into it.
PERSISTENT_DIR = "persistent"
#: Pages of a task's log read at most for ``tail``.
TAIL_PAGES = 50


class CheckoutObjects(Protocol):
    """Where checkouts wait for their task (``aws/s3.py``'s ``S3Objects`` fits)."""

    def put_file(self, key: str, path: Path, /) -> None: ...

    def presigned_get(self, key: str, expires: int, /) -> str:
        """A URL that reads ``key`` without credentials for ``expires`` seconds."""
        ...


class AccessPoints(Protocol):
    """Signed-in users' EFS access points (``aws/efs.py``'s ``EfsAccessPoints`` fits)."""

    def ensure(self, user_id: str, /) -> EfsMount:
        """The user's access point, made on first use."""
        ...


class RestoreHandoffs(Protocol):
    """Saved changes' URLs for a session's task (``aws/restores.py``'s
    ``S3RestoreShelf`` fits)."""

    def handoff(self, session_id: str, /) -> dict[str, str]:
        """``save_url``, ``save_fields``, ``save_max_bytes`` and ``restore_url``, those that
        apply."""
        ...


class Bootstrap(Protocol):
    """Hands a running task its secrets (``aws/bootstrap.py``'s ``HttpBootstrap`` fits)."""

    async def deliver(self, target: str, secrets: Mapping[str, str], /) -> bool:
        """Deliver ``secrets`` to the task's listener at ``target``; True when it took
        them, False when the task had them already (Jupyter answers)."""
        ...


class ImageSizes(Protocol):
    """How large an environment image is (``aws/ecr.py``'s ``EcrRegistry`` fits)."""

    def size_bytes(self, image_uri: str, /) -> int | None:
        """The image's compressed size in the registry; ``None`` when unknown."""
        ...


class LogReader(Protocol):
    """CloudWatch Logs lines of one stream, page by page."""

    def lines(self, group: str, stream: str, token: str | None, /
              ) -> tuple[list[str], str | None]:
        """Lines after ``token`` (``None``: from the start) and the token for the next
        page; the same token back means there is nothing newer."""
        ...


def checkout_key(session_id: str) -> str:
    return f"checkouts/{session_id}.tar.gz"


def pack_checkout(home: Path, dest: Path, *, start_script: str | None = None) -> None:
    """Write ``home`` as a gzipped tarball of relative paths owned by the session's user.

    Only directories, regular files and symlinks go in; ``persistent/`` stays out, and the
    start script is made executable (checkouts do not always keep the mode).
    """
    executable = {start_script} if start_script else set()

    def keep(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        if not (info.isdir() or info.isreg() or info.issym()):
            return None
        if info.name.split("/", 1)[0] == PERSISTENT_DIR:
            return None
        info.uid = info.gid = 1000
        info.uname = info.gname = "jovyan"
        if info.name in executable:
            info.mode |= 0o755
        return info

    with tarfile.open(dest, "w:gz") as tar:
        for child in sorted(home.iterdir()):
            tar.add(child, arcname=child.name, recursive=True, filter=keep)


class FargateSpawner:
    """Runs each session as one Fargate task of its environment's image."""

    def __init__(self, tasks: FargateTasks, objects: CheckoutObjects, logs: LogReader, *,
                 cpu: int = 1024, memory: int = 4096, poll_interval: float = 2.0,
                 start_timeout: float = 900.0, checkout_url_seconds: int = 3600,
                 family_prefix: str = "binderless-session-",
                 access_points: AccessPoints | None = None,
                 image_sizes: ImageSizes | None = None,
                 home_security_groups: tuple[str, ...] = (),
                 home_task_role_arn: str = "",
                 bootstrap: Bootstrap | None = None,
                 restores: RestoreHandoffs | None = None) -> None:
        if cpu <= 0 or memory <= 0 or poll_interval < 0 or start_timeout <= 0:
            raise ValueError("cpu, memory and start_timeout must be positive, "
                             "poll_interval not negative")
        self.tasks = tasks
        self.objects = objects
        self.logs = logs
        self.cpu = cpu
        self.memory = memory
        self.poll_interval = poll_interval
        self.start_timeout = start_timeout
        self.checkout_url_seconds = checkout_url_seconds
        self.family_prefix = family_prefix
        #: Persistent homes (``None``: sessions of signed-in users cannot start here).
        self.access_points = access_points
        #: What signed-in users' sessions run with instead of the anonymous defaults: the
        #: security groups the file system's mount targets admit, and the user's own role
        #: (``EfsMount.task_role_arn``), which may mount through their access point only
        #: (anonymous sessions get neither). ``home_task_role_arn`` serves a home whose
        #: access points come without roles (tests, a hand-made configuration).
        self.home_security_groups = home_security_groups
        self.home_task_role_arn = home_task_role_arn
        #: Image sizes, to ask Fargate for the ephemeral storage a large image needs
        #: (``None``: Fargate's default 20 GiB for every image).
        self.image_sizes = image_sizes
        self._ephemeral: dict[str, int | None] = {}
        #: How a running task gets its token and checkout URL (never through RunTask).
        self.bootstrap: Bootstrap = bootstrap or HttpBootstrap()
        #: Anonymous sessions save their changes and get earlier ones back through URLs
        #: handed over with the token (``None``: they do neither).
        self.restores = restores

    def environment(self, spec: SessionSpec) -> dict[str, str]:
        """The task's environment (RunTask's overrides, readable through the ECS API): the
        ``BINDER_*`` variables, the start script, where the bootstrap listener listens and
        the token's hash, by which it knows the token the gateway delivers (``secrets``)."""
        return {**spec.environment, **start_script_env(spec),
                "BINDERLESS_BOOTSTRAP": f"0.0.0.0:{CONTAINER_PORT}",
                "BINDERLESS_TOKEN_SHA256": token_digest(spec.token)}

    def secrets(self, spec: SessionSpec, checkout_url: str) -> dict[str, str]:
        """What the gateway hands the running task, never through the ECS API: the token,
        the checkout's URL and, for an anonymous session, where it saves its changes and
        where it finds the earlier ones it should put back."""
        handoff = self.restores.handoff(spec.session_id) if (
            self.restores is not None and spec.project is None) else {}
        return {**handoff, "token": spec.token, "checkout_url": checkout_url}

    async def start(self, spec: SessionSpec, log_line: LogSink) -> SessionHandle:
        if spec.image.location.startswith("/"):
            raise LaunchFailed(
                "The Fargate spawner runs container images, but this environment was built "
                "by the uv builder.",
                hint="The operator should configure the AWS mode with its image builder.")
        log_line("Uploading the repository for the session...\n")
        url = await asyncio.to_thread(self._upload_checkout, spec)
        size = f"{self.cpu / 1024:g} vCPU, {self.memory / 1024:g} GB"
        home = await self._home(spec)
        family, request = self.task_definition(
            spec.image, efs=home,
            ephemeral_gib=await asyncio.to_thread(self.ephemeral_gib, spec.image))

        # Only a signed-in user's session gets the groups the mount targets admit.
        groups: dict[str, Any] = {"security_groups": self.home_security_groups} if home else {}

        def run() -> str:
            return self.tasks.run(
                family,
                environment=self.environment(spec),
                command=jupyter_arguments(spec),
                # A retried start (or a retried request) finds the first task, never a second.
                client_token=spec.session_id,
                tags={SESSION_TAG: spec.session_id, "binderless:image": spec.image.key},
                **groups)

        # A launch resumed after its gateway crashed may find the task that gateway started.
        task_arn = (await asyncio.to_thread(self.tasks.session_tasks)).get(
            spec.session_id, "") if spec.resume else ""
        try:
            task_arn = task_arn or await asyncio.to_thread(run)
        except TaskDefinitionMissing:
            # Normally registered when the image was built (``prepare``); registered here
            # when that did not happen, or an operator deregistered it since.
            await asyncio.to_thread(self.tasks.register, request)
            task_arn = await asyncio.to_thread(run)
        log_line(f"Started Fargate task {task_arn.rsplit('/', 1)[-1]} ({size}) "
                 f"of {spec.image.name}\n")
        handle = SessionHandle(spec.session_id, "", task_arn)
        try:
            ip = await asyncio.wait_for(self._wait_started(task_arn, spec, url, log_line),
                                        timeout=self.start_timeout)
        except TimeoutError:
            await self._stop_quietly(handle, "binderless: did not start in time")
            raise LaunchFailed(
                f"The session's Fargate task did not start within {self.start_timeout:g} "
                "seconds.",
                hint="Large images take minutes to pull; try again, or ask the operator to "
                     "raise the start timeout.") from None
        except BaseException:
            await self._stop_quietly(handle, "binderless: launch failed")
            raise
        log_line(f"Task running at {ip}\n")
        return SessionHandle(spec.session_id, f"http://{ip}:{CONTAINER_PORT}", task_arn)

    async def _home(self, spec: SessionSpec) -> EfsMount | None:
        """The owner's EFS access point, for a signed-in user's project."""
        if spec.project is None:
            return None
        hint = ("The operator should set BINDERLESS_EFS_FILE_SYSTEM_ID, "
                "BINDERLESS_HOME_SECURITY_GROUPS, BINDERLESS_HOME_ROLE_PATH and "
                "BINDERLESS_HOME_ROLE_BOUNDARY (the stack sets them).")
        if self.access_points is None or not self.home_security_groups:
            raise LaunchFailed("This server keeps no files for signed-in users on AWS.",
                               hint=hint)
        mount = await asyncio.to_thread(self.access_points.ensure, spec.project.owner)
        if not (mount.task_role_arn or self.home_task_role_arn):
            raise LaunchFailed("This server has no role for signed-in users' sessions.",
                               hint=hint)
        return mount

    def ephemeral_gib(self, image: ImageRef) -> int | None:
        """The ephemeral storage (GiB) tasks of ``image`` ask for; ``None``: Fargate's 20.
        Sized once per image from its size in the registry (an image is immutable under
        its key); when the registry cannot say, the default is tried."""
        if self.image_sizes is None:
            return None
        if image.key not in self._ephemeral:
            try:
                size = self.image_sizes.size_bytes(image.location)
            except Exception as exc:  # a missing size must not stop a launch
                log.warning("cannot tell the size of %s: %s", image.location, exc)
                return None
            self._ephemeral[image.key] = ephemeral_storage_gib(size)
        return self._ephemeral[image.key]

    def task_definition(self, image: ImageRef, efs: EfsMount | None = None,
                        ephemeral_gib: int | None = None) -> tuple[str, dict[str, Any]]:
        """The family and the registration request of the task definition of ``image``.

        The family name carries a digest of everything the definition runs (image, size,
        roles, logs), so the latest ACTIVE revision of a family is always the right one:
        RunTask names the family, and no call is spent on looking it up. Other settings
        make another family. With ``efs`` (a signed-in user's home: RunTask cannot
        override volumes) the family is that user's own."""
        request = self.tasks.task_definition(image.location, family="", cpu=self.cpu,
                                             memory=self.memory, container_port=CONTAINER_PORT,
                                             efs=efs, ephemeral_gib=ephemeral_gib,
                                             task_role_arn=(efs.task_role_arn
                                                            or self.home_task_role_arn)
                                             if efs else None)
        family = task_family(self.family_prefix, f"{image.key}-{definition_digest(request)}",
                             efs)
        return family, {**request, "family": family}

    async def prepare(self, image: ImageRef) -> None:
        """A new image was built: register its task definition now, so that launches
        start its tasks with one call."""
        if image.location.startswith("/"):
            return
        _family, request = self.task_definition(
            image, ephemeral_gib=await asyncio.to_thread(self.ephemeral_gib, image))
        await asyncio.to_thread(self.tasks.register, request)

    def _upload_checkout(self, spec: SessionSpec) -> str:
        key = checkout_key(spec.session_id)
        fd, name = tempfile.mkstemp(prefix=f"binderless-{spec.session_id}-", suffix=".tar.gz")
        os.close(fd)
        try:
            pack_checkout(spec.home, Path(name), start_script=spec.start_script)
            self.objects.put_file(key, Path(name))
        finally:
            with contextlib.suppress(OSError):
                os.unlink(name)
        return self.objects.presigned_get(key, self.checkout_url_seconds)

    async def _wait_started(self, task_arn: str, spec: SessionSpec, checkout_url: str,
                            log_line: LogSink) -> str:
        """Wait for the task to run, then hand it its secrets; returns its address."""
        ip = await self._wait_running(task_arn, log_line)
        if not await self.bootstrap.deliver(f"http://{ip}:{CONTAINER_PORT}",
                                            self.secrets(spec, checkout_url)):
            log.info("task %s had its secrets already (a resumed launch)", task_arn)
        return ip

    async def _wait_running(self, task_arn: str, log_line: LogSink) -> str:
        said = ""
        while True:
            state = await asyncio.to_thread(self.tasks.describe, task_arn)
            if state.stopping:
                raise _stopped_early(state)
            if state.last_status == "RUNNING" and state.private_ip:
                return state.private_ip
            progress = _PROGRESS.get(state.last_status, "")
            if progress and progress != said:
                log_line(progress + "\n")
                said = progress
            await asyncio.sleep(self.poll_interval)

    async def _stop_quietly(self, handle: SessionHandle, reason: str) -> None:
        try:
            await asyncio.shield(asyncio.to_thread(self.tasks.stop, handle.backend_id, reason))
        except (BinderlessError, asyncio.CancelledError) as exc:
            log.warning("could not stop task %s: %s", handle.backend_id, exc)

    async def alive(self, handle: SessionHandle) -> bool:
        """Whether the task runs or is about to; when ECS does not answer, it counts as
        alive, so that a passing AWS problem never gets running sessions culled."""
        if not handle.backend_id:
            return False
        try:
            state = await asyncio.to_thread(self.tasks.describe, handle.backend_id)
        except BinderlessError as exc:
            log.warning("cannot tell whether task %s runs: %s", handle.backend_id, exc)
            return True
        return not state.stopping and state.last_status in ALIVE_STATES

    async def running(self) -> dict[str, str]:
        """The sessions whose tasks run (or are starting): session id -> task ARN."""
        return await asyncio.to_thread(self.tasks.session_tasks)

    async def stop(self, handle: SessionHandle) -> None:
        if handle.backend_id:
            await asyncio.to_thread(self.tasks.stop, handle.backend_id,
                                    "binderless: session stopped")

    async def tail(self, handle: SessionHandle, lines: int = 20) -> list[str]:
        if not handle.backend_id or lines <= 0:
            return []
        return await asyncio.to_thread(self._tail, handle.backend_id, lines)

    def _tail(self, task_arn: str, lines: int) -> list[str]:
        stream = self.tasks.log_stream(task_arn)
        kept: list[str] = []
        token: str | None = None
        deadline = time.monotonic() + 10.0
        try:
            for _ in range(TAIL_PAGES):
                page, following = self.logs.lines(self.tasks.log_group, stream, token)
                kept = [*kept, *(line for line in page if line.strip())][-lines:]
                if not page or following == token or time.monotonic() > deadline:
                    break
                token = following
        except Exception as exc:  # the tail only decorates another failure's message
            log.warning("cannot read the log of task %s: %s", task_arn, exc)
        return kept


def _stopped_early(state: TaskState) -> LaunchFailed:
    reason = state.stopped_reason or "ECS gave no reason"
    code = f" (exit code {state.exit_code})" if state.exit_code else ""
    return LaunchFailed(f"The session's Fargate task stopped before it ran: {reason}{code}",
                        hint="A CannotPullContainerError means the image is missing or "
                             "unreachable; otherwise the server's output says more.")
