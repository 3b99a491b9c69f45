"""Stand-ins for CodeBuild and Fargate that run the REAL containers on the project's engine.

Like ``tests/e2e/aws_standins.py`` they subclass the real adapters, so every AWS call the
gateway makes (``StartBuild``, ``BatchGetBuilds``, ``RunTask``, ``DescribeTasks``,
``StopTask``) still reaches moto, and only what moto cannot do happens here. Unlike those,
nothing runs as a local process:

* a build downloads its source zip from (moto) S3, copies it into a container of the
  runner image (``build-runner/Dockerfile``) at ``CODEBUILD_SRC_DIR`` and runs the
  buildspec that ``StartBuild`` sent, privileged, as CodeBuild runs a custom image: its
  own dockerd, repo2docker, a push to the local registry that stands in for ECR. The
  container's output goes to (moto) CloudWatch Logs line by line, and the pushed
  manifest, read back from the registry, is put into (moto) ECR so that the builder
  finds the image;
* a task pulls the task definition's image from that registry and runs it with the
  task's environment and command, in the host's network (the project's engine has no
  bridge), Jupyter listening on a loopback address of its own (127.x.y.z:8888, so every
  session keeps Fargate's port) instead of 0.0.0.0.

The module is imported inside the gateway image (tests/containers/test_gateway_image.py
mounts this folder and the engine's ``docker`` CLI and socket into it), so it needs
nothing but the standard library, the gateway's own dependencies and ``docker``.
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
import yaml

from binderless.aws.codebuild import BuildState, CodeBuildProject
from binderless.aws.ecs import FargateTasks, TaskState
from tests.e2e.aws_standins import _Addresses, _LogStream, split_image_uri, unzip

__all__ = ["SRC_DIR", "ContainerCodeBuildProject", "ContainerFargateTasks",
           "buildspec_script"]

#: Where CodeBuild unpacks the source (``CODEBUILD_SRC_DIR``).
SRC_DIR = "/codebuild/output/src1/src"
CONTAINER_PORT = 8888
ClientFactory = Callable[[str], Any]
#: Label of every container these stand-ins start, valued with ``label``: the test
#: removes them all at the end, whatever happened.
LABEL = "binderless.test-standin"
_MANIFEST_TYPES = ", ".join([
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
])


def buildspec_script(buildspec: str) -> str:
    """A buildspec's commands, phase by phase, as one shell script that stops at the first
    failing command (as CodeBuild stops a build at a failing phase)."""
    spec = yaml.safe_load(buildspec)
    commands = [command for phase in ("install", "pre_build", "build", "post_build")
                for command in spec["phases"].get(phase, {}).get("commands", [])]
    return "set -e\n" + "\n".join(commands) + "\n"


def buildspec_variables(buildspec: str) -> dict[str, str]:
    spec = yaml.safe_load(buildspec)
    return {str(k): str(v) for k, v in spec.get("env", {}).get("variables", {}).items()}


def _docker(*args: str, timeout: float = 120, stdin: bytes | None = None,
            env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["docker", *args], input=stdin, capture_output=True,
                          timeout=timeout, check=False,
                          env={**os.environ, **(env or {})})


def _said(done: subprocess.CompletedProcess[bytes]) -> str:
    return (done.stderr or done.stdout).decode(errors="replace").strip()[-500:]


def source_tar(src: Path) -> bytes:
    """``src`` as a tar of ``codebuild/output/src1/src/...`` owned by root, for
    ``docker cp -`` into the runner container (its parents made on the way)."""

    def as_root(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        return info

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        parts = SRC_DIR.strip("/").split("/")
        for depth in range(1, len(parts)):
            info = tarfile.TarInfo("/".join(parts[:depth]))
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        tar.add(src, arcname=SRC_DIR.strip("/"), filter=as_root)
    return buffer.getvalue()


# ----- CodeBuild --------------------------------------------------------------------------


class _ContainerBuild:
    """One build: a runner container, followed by a thread of its own."""

    def __init__(self, *, build_id: str, source: tuple[str, str], env: Mapping[str, str],
                 buildspec: str, runner_image: str, dockerd_args: str, label: str,
                 registry_url: str, log: _LogStream, s3: Any, ecr: Any) -> None:
        self.build_id = build_id
        self.source = source
        self.env = dict(env)
        self.buildspec = buildspec
        self.runner_image = runner_image
        self.dockerd_args = dockerd_args
        self.label = label
        self.registry_url = registry_url
        self.log = log
        self.s3 = s3
        self.ecr = ecr
        self.name = "binderless-codebuild-" + build_id.rsplit(":", 1)[-1][:12]
        self.status = "IN_PROGRESS"
        self.failure = ""
        self.done = threading.Event()
        self.stopped = False
        self.thread = threading.Thread(target=self._thread, name=f"build-{build_id}",
                                       daemon=True)

    def _container(self, message: str) -> None:
        """A line of CodeBuild's own agent."""
        stamp = time.strftime("%Y/%m/%d %H:%M:%S", time.gmtime())
        self.log.put(f"[Container] {stamp}.000000 {message}")

    def _thread(self) -> None:
        try:
            self.status, self.failure = self._run()
        except Exception as exc:  # a thread must not die with an exception
            self.status, self.failure = "FAULT", f"BUILD: {type(exc).__name__}: {exc}"
            with contextlib.suppress(Exception):
                self._container(f"Phase context status code: {self.failure}")
        if self.stopped:
            self.status = "STOPPED"
        # CodeBuild discards a build's container, and with it the inner engine's volume.
        self.remove()
        self.done.set()

    def _run(self) -> tuple[str, str]:
        self._container("Entering phase DOWNLOAD_SOURCE")
        bucket, key = self.source
        with tempfile.TemporaryDirectory(prefix="binderless-codebuild-") as work:
            src = Path(work) / "src"
            src.mkdir()
            unzip(self.s3.get_object(Bucket=bucket, Key=key)["Body"].read(), src)
            archive = source_tar(src)
        # CodeBuild's environment: the buildspec's variables, then the build's own.
        env = {**buildspec_variables(self.buildspec), **self.env,
               "CODEBUILD_SRC_DIR": SRC_DIR, "CODEBUILD_BUILD_ID": self.build_id,
               "DOCKERD_ARGS": self.dockerd_args}
        created = _docker(
            "create", "--name", self.name, "--label", f"{LABEL}={self.label}",
            "--privileged", "--network", "host",
            # The inner engine's data: overlay2 cannot stack on the container's overlay.
            "-v", "/var/lib/docker", "-w", SRC_DIR,
            *[arg for name in env for arg in ("-e", name)],
            self.runner_image, "sh", "-c", buildspec_script(self.buildspec), env=env)
        if created.returncode != 0:
            return "FAULT", f"BUILD: the runner container was not created: {_said(created)}"
        copied = _docker("cp", "-", f"{self.name}:/", stdin=archive)
        if copied.returncode != 0:
            return "FAULT", f"DOWNLOAD_SOURCE: {_said(copied)}"
        self._container("Running the buildspec in the runner image")
        proc = subprocess.Popen(["docker", "start", "--attach", self.name],
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT)
        assert proc.stdout is not None
        with proc.stdout:
            for raw in proc.stdout:
                line = raw.decode(errors="replace").rstrip("\r\n")
                if line.strip():
                    self.log.put(line)
        code = proc.wait()
        if code != 0:
            self._container("Phase complete: BUILD State: FAILED")
            return "FAILED", ("BUILD: COMMAND_EXECUTION_ERROR: Error while executing the "
                              f"buildspec. Reason: exit status {code}")
        self._record_in_ecr(self.env["IMAGE_URI"])
        self._container("Phase complete: BUILD State: SUCCEEDED")
        return "SUCCEEDED", ""

    def _record_in_ecr(self, image_uri: str) -> None:
        """What a push to ECR leaves in ECR: the manifest the registry now serves."""
        repository, tag = split_image_uri(image_uri)
        answer = httpx.get(f"{self.registry_url}/v2/{repository}/manifests/{tag}",
                           headers={"Accept": _MANIFEST_TYPES}, timeout=30)
        answer.raise_for_status()
        self.ecr.put_image(repositoryName=repository, imageManifest=answer.text,
                           imageManifestMediaType=answer.headers["Content-Type"],
                           imageTag=tag)

    def stop(self) -> None:
        self.stopped = True
        self.remove()

    def remove(self) -> None:
        _docker("rm", "-f", "-v", self.name, timeout=60)


class ContainerCodeBuildProject(CodeBuildProject):
    """``StartBuild`` goes to moto, then the runner image builds in a container here.

    ``registry_url`` is the local registry (``http://127.0.0.1:<port>``) the images are
    pushed to; ``dockerd_args`` go to the runner's inner engine (``DOCKERD_ARGS``)."""

    def __init__(self, client: Any, project_name: str, *, client_factory: ClientFactory,
                 runner_image: str, registry_url: str, label: str, log_group: str = "",
                 dockerd_args: str = "") -> None:
        super().__init__(client, project_name)
        self.s3 = client_factory("s3")
        self.ecr = client_factory("ecr")
        self.logs = client_factory("logs")
        self.runner_image = runner_image
        self.registry_url = registry_url
        self.label = label
        self.dockerd_args = dockerd_args
        self.log_group = log_group or f"/aws/codebuild/{project_name}"
        self._builds: dict[str, _ContainerBuild] = {}
        self._lock = threading.Lock()

    def start(self, source_s3: str, env: Mapping[str, str], idempotency_token: str, *,
              buildspec: str | None = None) -> str:
        if buildspec is None:
            raise ValueError("the stand-in runs the buildspec StartBuild sends; none was sent")
        build_id = super().start(source_s3, env, idempotency_token, buildspec=buildspec)
        with self._lock:
            if build_id in self._builds:  # the same token again: the same build
                return build_id
            bucket, _, key = source_s3.partition("/")
            build = _ContainerBuild(
                build_id=build_id, source=(bucket, key), env=env, buildspec=buildspec,
                runner_image=self.runner_image, dockerd_args=self.dockerd_args,
                label=self.label, registry_url=self.registry_url,
                log=_LogStream(self.logs, self.log_group, build_id.split(":", 1)[1]),
                s3=self.s3, ecr=self.ecr)
            self._builds[build_id] = build
        build.thread.start()
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
            build.stop()
        super().stop(build_id)


# ----- ECS --------------------------------------------------------------------------------


class _ContainerTask:
    """One task: PROVISIONING while its image is pulled, RUNNING while its container
    runs, then STOPPED with the container's exit code."""

    def __init__(self, *, arn: str, image_uri: str, environment: Mapping[str, str],
                 command: Sequence[str], ip: str, label: str, log: _LogStream) -> None:
        self.arn = arn
        self.image_uri = image_uri
        self.environment = dict(environment)
        self.command = [f"--ip={ip}" if arg == "--ip=0.0.0.0" else arg for arg in command]
        # session-start's bootstrap listener, like Jupyter, on the task's own address.
        bootstrap = self.environment.get("BINDERLESS_BOOTSTRAP", "")
        if bootstrap.startswith("0.0.0.0:"):
            self.environment["BINDERLESS_BOOTSTRAP"] = f"{ip}:{bootstrap.partition(':')[2]}"
        self.ip = ip
        self.label = label
        self.log = log
        self.name = "binderless-task-" + arn.rsplit("/", 1)[-1][:12]
        self.last_status = "PROVISIONING"
        self.desired_status = "RUNNING"
        self.stopped_reason = ""
        self.exit_code: int | None = None
        self._lock = threading.Lock()
        self.thread = threading.Thread(target=self._thread, name=f"task-{arn}", daemon=True)

    def state(self) -> TaskState:
        with self._lock:
            if self.last_status == "RUNNING":
                self._refresh()
            return TaskState(self.last_status, self.desired_status,
                             private_ip=self.ip if self.last_status == "RUNNING" else "",
                             stopped_reason=self.stopped_reason, exit_code=self.exit_code)

    def _refresh(self) -> None:
        """A container that has exited makes the task STOPPED (call with the lock)."""
        facts = _docker("inspect", "-f", "{{.State.Running}} {{.State.ExitCode}}", self.name)
        running, _, code = facts.stdout.decode().strip().partition(" ")
        if facts.returncode != 0 or running != "true":
            self.last_status = self.desired_status = "STOPPED"
            self.stopped_reason = self.stopped_reason or "Essential container in task exited"
            self.exit_code = int(code) if code.isdigit() else None

    def running(self) -> bool:
        facts = _docker("inspect", "-f", "{{.State.Running}}", self.name)
        return facts.returncode == 0 and facts.stdout.decode().strip() == "true"

    def _finish(self, reason: str) -> None:
        with self._lock:
            self.last_status = self.desired_status = "STOPPED"
            self.stopped_reason = self.stopped_reason or reason

    def _thread(self) -> None:
        try:
            self._run()
        except Exception as exc:  # a thread must not die with an exception
            self._finish(f"Task failed to start: {type(exc).__name__}: {exc}")

    def _run(self) -> None:
        pulled = _docker("pull", "--quiet", self.image_uri, timeout=600)
        if pulled.returncode != 0:
            self._finish(f"CannotPullContainerError: {_said(pulled)}")
            return
        with self._lock:
            if self.desired_status == "STOPPED":
                self.last_status = "STOPPED"
                return
            started = _docker(
                "run", "-d", "--name", self.name, "--label", f"{LABEL}={self.label}",
                "--network", "host", "--pull", "never",
                *[arg for name in self.environment for arg in ("-e", name)],
                self.image_uri, *self.command, env=self.environment, timeout=120)
            if started.returncode != 0:
                self.last_status = self.desired_status = "STOPPED"
                self.stopped_reason = f"CannotStartContainerError: {_said(started)}"
                return
            self.last_status = "RUNNING"
        # The container's output into the task's log stream, as awslogs sends it.
        follow = subprocess.Popen(["docker", "logs", "--follow", self.name],
                                  stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT)
        assert follow.stdout is not None
        with follow.stdout:
            for raw in follow.stdout:
                line = raw.decode(errors="replace").rstrip("\r\n")
                if line.strip():
                    with contextlib.suppress(Exception):  # a log is for people
                        self.log.put(line)
        follow.wait()

    def stop(self, reason: str) -> None:
        with self._lock:
            if self.desired_status != "STOPPED":
                self.stopped_reason = reason
            self.desired_status = "STOPPED"
        _docker("stop", "-t", "5", self.name, timeout=60)
        with self._lock:
            self._refresh()

    def remove(self) -> None:
        _docker("rm", "-f", "-v", self.name, timeout=60)


class ContainerFargateTasks(FargateTasks):
    """``RunTask`` goes to moto, then the task's image runs as a container here."""

    def __init__(self, client: Any, *, client_factory: ClientFactory, label: str,
                 **kwargs: Any) -> None:
        super().__init__(client, **kwargs)
        self.logs_client = client_factory("logs")
        self.ecs_client = client_factory("ecs")
        self.label = label
        self.tasks: dict[str, _ContainerTask] = {}
        self._lock = threading.Lock()

    def run(self, task_definition: str, *, environment: Mapping[str, str],
            command: Sequence[str], client_token: str,
            tags: Mapping[str, str] | None = None,
            security_groups: Sequence[str] | None = None) -> str:
        arn = super().run(task_definition, environment=environment, command=command,
                          client_token=client_token, tags=tags,
                          security_groups=security_groups)
        with self._lock:
            if arn in self.tasks:  # the same client token again: the same task
                return arn
            definition = self.ecs_client.describe_task_definition(
                taskDefinition=task_definition)["taskDefinition"]
            container = definition["containerDefinitions"][0]
            task = _ContainerTask(
                arn=arn, image_uri=str(container["image"]), environment=environment,
                command=command, ip=_Addresses.take(), label=self.label,
                log=_LogStream(self.logs_client, self.log_group, self.log_stream(arn)))
            self.tasks[arn] = task
        task.thread.start()
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

