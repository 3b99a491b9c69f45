"""The AWS builder: repo2docker run by AWS CodeBuild, images pushed to ECR.

``build`` makes sure the ECR repository exists, zips the checkout to S3
(``sources/<key>.zip``, deleted when the build ends), starts a build of the CodeBuild project whose runner image is
``build-runner/Dockerfile``, follows the build's CloudWatch log into the launch's log,
and checks that the image reached ECR. The runner (``build-runner/run_repo2docker.py``)
reads its instructions from the environment variables ``environment`` sets.

Keys are the Docker builder's: the same checkout names the same environment whether it is
built by ``--builder docker`` on a laptop or by CodeBuild, and images are tagged with it.
With ``--push`` repo2docker always builds, so ``find`` asks ECR first.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import ParamSpec, TypeVar

from ..backends.docker import DockerBuilder, _repo2docker_version, _Repo2DockerLog
from ..backends.protocols import ImageRef, LogSink
from ..envplan import EnvironmentPlan, plan_environment
from ..errors import BuildFailed
from ..settings import Settings
from .codebuild import BuildState, CodeBuildProject
from .ecr import EcrRegistry
from .logs import LogReader
from .s3 import S3Objects, zip_directory

__all__ = [
    "BUILDSPEC",
    "RUNNER_CONTEXT",
    "RUNNER_DIR",
    "RUNNER_SCRIPT",
    "SESSION_START_APPENDIX",
    "CodeBuildBuilder",
    "environment_salt",
]

P = ParamSpec("P")
T = TypeVar("T")

#: Where ``build-runner/Dockerfile`` puts the runner script and ``session-start``.
RUNNER_DIR = "/opt/binderless"
RUNNER_SCRIPT = f"{RUNNER_DIR}/run_repo2docker.py"
#: The extra buildx build context (``--build-context binderless=<runner folder>``) through
#: which the appendix reaches ``session-start``: the repository's own context (``src/``) is
#: left alone, so neither its ``.dockerignore`` nor its home folder is touched.
RUNNER_CONTEXT = "binderless"
SESSION_START = "/usr/local/bin/binderless-session-start"

#: Dockerfile lines repo2docker appends after its own ``ENTRYPOINT``: sessions on AWS start
#: by fetching their checkout (``BINDERLESS_CHECKOUT_URL``) into ``$HOME``, then run
#: repo2docker's entrypoint (which runs the repository's ``start`` script) with the command.
#: The ``CMD`` repo2docker set before survives: ``ENTRYPOINT`` resets only an inherited one.
SESSION_START_APPENDIX = f"""\
# binderless: a session's checkout arrives at start (see build-runner/README.md)
COPY --from={RUNNER_CONTEXT} --chmod=0755 session-start {SESSION_START}
ENTRYPOINT ["{SESSION_START}", "/usr/local/bin/repo2docker-entrypoint"]
"""

#: The buildspec of every build, sent with ``StartBuild``: a ``buildspec.yml`` in the built
#: repository must never run in the privileged runner. ``build-runner/buildspec.yml`` is the
#: same text for the project's definition (a test keeps the two equal). A custom CodeBuild
#: image gets no Docker daemon of its own, even in privileged mode: the install phase starts it.
BUILDSPEC = f"""\
version: 0.2
env:
  variables:
    PYTHONUNBUFFERED: "1"
phases:
  install:
    commands:
      - nohup dockerd --host=unix:///var/run/docker.sock --storage-driver=overlay2 $DOCKERD_ARGS > /var/log/dockerd.log 2>&1 &
      - timeout 60 sh -c 'until docker version > /dev/null 2>&1; do sleep 1; done' || (tail -n 20 /var/log/dockerd.log; exit 1)
  pre_build:
    commands:
      - python3 {RUNNER_SCRIPT} login
  build:
    commands:
      - python3 {RUNNER_SCRIPT} build
"""

_AWS_HINT = ("This is a problem of the binderless deployment on AWS, not of the repository: "
             "try again later, or tell its operator.")
#: Reads of the log after CodeBuild reports the end, while CloudWatch receives the last lines.
_SETTLE_READS = 3


def environment_salt() -> str:
    """The Docker builder's key salt (repo2docker's version, the image user)."""
    return DockerBuilder(Settings()).salt


def _is_aws_error(exc: BaseException) -> bool:
    """botocore's errors, and boto3's own (``upload_file`` raises ``S3UploadFailedError``)."""
    from boto3.exceptions import Boto3Error
    from botocore.exceptions import BotoCoreError, ClientError

    return isinstance(exc, (BotoCoreError, ClientError, Boto3Error))


class _BuildLog:
    """CloudWatch lines of a build into the launch's log.

    repo2docker's ``--json-logs`` lines become their messages; CodeBuild's own
    ``[Container] <time> ...`` lines pass as they are but never make the failure's hint.
    """

    def __init__(self, log: LogSink) -> None:
        self.log = log
        self.r2d = _Repo2DockerLog(log)

    def __call__(self, line: str) -> None:
        if line.startswith("[Container] "):
            self.log(line.rstrip() + "\n")
        else:
            self.r2d(line)

    def hint(self, state: BuildState | None = None) -> str:
        last = self.r2d.last_meaningful()
        if last:
            return f"The last line of the build log was: {last}"
        if state is not None and state.failure:
            return f"AWS CodeBuild said: {state.failure}"
        return ""


class CodeBuildBuilder:
    """Builds one repo2docker image per environment key with AWS CodeBuild, into ECR.

    ``base_image`` is the ECR mirror of ``buildpack-deps:jammy`` (Docker Hub limits pulls
    from CodeBuild). ``timeout`` bounds one build; ``poll_interval`` is the pause between two
    looks at the build and its log. A build's source, ``<source_prefix><key>.zip``, is
    deleted when the build ends (the build claims of the store keep a key to one build at a
    time); give the bucket a lifecycle rule on the prefix for the sources this misses.
    """

    name = "codebuild"

    def __init__(self, *, registry: EcrRegistry, sources: S3Objects,
                 project: CodeBuildProject, logs: LogReader, base_image: str,
                 source_prefix: str = "sources/", poll_interval: float = 5.0,
                 timeout: float = 1800.0,
                 token_factory: Callable[[], str] = lambda: uuid.uuid4().hex) -> None:
        self.registry = registry
        self.sources = sources
        self.project = project
        self.logs = logs
        self.base_image = base_image
        self.source_prefix = source_prefix
        self.poll_interval = poll_interval
        self.timeout = timeout
        self.token_factory = token_factory
        self.salt = environment_salt()

    def plan(self, checkout: Path) -> EnvironmentPlan:
        # repo2docker builds every kind of repository, so ``plan.unsupported`` does not matter.
        return plan_environment(checkout, salt=self.salt)

    def image(self, key: str) -> ImageRef:
        uri = self.registry.image_uri(key)
        return ImageRef(key=key, name=uri, location=uri)

    def source_key(self, key: str) -> str:
        return f"{self.source_prefix}{key}.zip"

    def environment(self, plan: EnvironmentPlan, cache_tag: str | None) -> dict[str, str]:
        """The runner's instructions (``build-runner/run_repo2docker.py`` reads them)."""
        env = {"IMAGE_URI": self.registry.image_uri(plan.key)}
        if cache_tag:
            env["CACHE_FROM"] = self.registry.image_uri(cache_tag)
        env["BASE_IMAGE"] = self.base_image
        env["BUILDER_VERSION"] = _repo2docker_version()
        return env

    async def find(self, plan: EnvironmentPlan) -> ImageRef | None:
        digest = await self._aws("look for the environment's image in ECR",
                                 self.registry.find, plan.key)
        return self.image(plan.key) if digest else None

    async def build(self, plan: EnvironmentPlan, checkout: Path, log: LogSink) -> ImageRef:
        image = self.registry.image_uri(plan.key)
        log(f"Building {image} with repo2docker {_repo2docker_version()} on AWS CodeBuild\n")
        await self._aws("prepare the image repository in ECR", self.registry.ensure_repository)
        cache_tag = await self._aws("list the images in ECR", self.registry.latest_tag)
        source = self.source_key(plan.key)
        await self._upload(checkout, source, log)
        try:
            state, build_id, build_log = await self._run(plan, source, cache_tag, log)
        finally:
            await self._forget(source)
        if state.status != "SUCCEEDED":
            raise self._failure(state, build_log)
        if not await self._aws("look for the built image in ECR", self.registry.find,
                               plan.key):
            raise BuildFailed(
                f"AWS CodeBuild finished, but ECR has no image {image}.",
                hint="The build runner must push with repo2docker --push; see its log in "
                     f"AWS CodeBuild (build {build_id}).")
        return self.image(plan.key)

    async def _run(self, plan: EnvironmentPlan, source: str, cache_tag: str | None,
                   log: LogSink) -> tuple[BuildState, str, _BuildLog]:
        """Start the build and follow it to its end; a build left behind is stopped."""
        build_id = await self._aws(
            "start a build in AWS CodeBuild", self.project.start,
            f"{self.sources.bucket}/{source}", self.environment(plan, cache_tag),
            self.token_factory(), buildspec=BUILDSPEC)
        log(f"Started AWS CodeBuild build {build_id}\n")
        build_log = _BuildLog(log)
        try:
            state = await self._follow(build_id, build_log)
        except BaseException:  # cancelled, timed out, or lost track
            await self._stop(build_id, log)
            raise
        return state, build_id, build_log

    async def _upload(self, checkout: Path, key: str, log: LogSink) -> None:
        archive = await asyncio.to_thread(zip_directory, checkout)
        try:
            size = archive.stat().st_size
            await self._aws("upload the repository to S3", self.sources.put_file, key, archive)
        finally:
            archive.unlink(missing_ok=True)
        log(f"Uploaded the repository to S3 ({size / 1e6:.1f} MB)\n")

    async def _follow(self, build_id: str, build_log: _BuildLog) -> BuildState:
        """Poll the build until it ends, passing its log lines on as they appear."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        token: str | None = None
        while True:
            state = await self._aws("follow the build in AWS CodeBuild", self.project.status,
                                    build_id)
            token, _ = await self._pump(state, token, build_log)
            if state.done:
                break
            if loop.time() >= deadline:
                raise BuildFailed("Building the image on AWS CodeBuild took too long (more "
                                  f"than {self.timeout:.0f} seconds).", hint=build_log.hint())
            await asyncio.sleep(self.poll_interval)
        for _ in range(_SETTLE_READS):
            await asyncio.sleep(self.poll_interval)
            token, count = await self._pump(state, token, build_log)
            if not count:
                break
        return state

    async def _pump(self, state: BuildState, token: str | None,
                    build_log: _BuildLog) -> tuple[str | None, int]:
        if not (state.log_group and state.log_stream):
            return token, 0  # CodeBuild has not created the stream yet
        try:
            lines, token = await asyncio.to_thread(self.logs.lines, state.log_group,
                                                   state.log_stream, token)
        except Exception as exc:
            if not _is_aws_error(exc):
                raise
            return token, 0  # the log is for people: a failed read is tried again next time
        for line in lines:
            build_log(line)
        return token, len(lines)

    async def _forget(self, source: str) -> None:
        """Delete the build's source; the bucket's lifecycle rule catches what this misses."""
        try:
            await asyncio.to_thread(self.sources.delete, source)
        except Exception as exc:
            if not _is_aws_error(exc):
                raise

    async def _stop(self, build_id: str, log: LogSink) -> None:
        """Best effort: this runs while another exception is on its way out."""
        try:
            await asyncio.to_thread(self.project.stop, build_id)
        except Exception as exc:
            log(f"Could not stop AWS CodeBuild build {build_id}: {exc}\n")
        else:
            log(f"Stopped AWS CodeBuild build {build_id}\n")

    def _failure(self, state: BuildState, build_log: _BuildLog) -> BuildFailed:
        hint = build_log.hint(state)
        if state.status == "TIMED_OUT":
            return BuildFailed("Building the image on AWS CodeBuild took too long (the build "
                               "project's timeout).", hint=hint)
        if state.status == "STOPPED":
            return BuildFailed("The build on AWS CodeBuild was stopped before it finished.",
                               hint=hint)
        if state.status == "FAULT":
            return BuildFailed("AWS CodeBuild failed while building the image.",
                               hint="\n".join(h for h in (hint, _AWS_HINT) if h))
        return BuildFailed("repo2docker could not build the image on AWS CodeBuild.", hint=hint)

    async def _aws(self, what: str, call: Callable[P, T], /,
                   *args: P.args, **kwargs: P.kwargs) -> T:
        """``call`` in a worker thread, with boto3's errors raised as ``BuildFailed``."""
        try:
            return await asyncio.to_thread(call, *args, **kwargs)
        except Exception as exc:
            if not _is_aws_error(exc):
                raise
            raise BuildFailed(f"binderless could not {what}: {exc}", hint=_AWS_HINT) from exc
