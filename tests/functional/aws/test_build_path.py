"""The AWS build path: CodeBuild running repo2docker, images in ECR.

ECR, S3 and CloudWatch Logs run on moto (``mock_aws``); CodeBuild answers through
botocore's ``Stubber``, because moto drops ``environmentVariablesOverride`` and reports every
build SUCCEEDED at once. Hooks on the stubbed ``BatchGetBuilds`` change the moto world
between two polls (log lines appear, the image is pushed), as a real build would.
The runner script runs real repo2docker against the fake ``docker`` of the Docker tests.
Nothing here leaves the machine.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import importlib.util
import io
import itertools
import json
import os
import shutil
import stat
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import parse_qs, urlparse

import boto3
import pytest
import yaml
from botocore.exceptions import ClientError
from botocore.stub import Stubber
from moto import mock_aws

from binderless.aws.builder import (
    BUILDSPEC,
    RUNNER_CONTEXT,
    RUNNER_DIR,
    RUNNER_SCRIPT,
    SESSION_START_APPENDIX,
    CodeBuildBuilder,
)
from binderless.aws.codebuild import BuildState, CodeBuildProject
from binderless.aws.ecr import EcrRegistry
from binderless.aws.logs import LogReader
from binderless.aws.s3 import S3Objects, client_config, zip_directory
from binderless.backends.docker import DockerBuilder
from binderless.backends.protocols import ImageRef
from binderless.errors import BuildFailed
from binderless.settings import Settings
from tests.ecr_fakes import manifest

ROOT = Path(__file__).resolve().parents[3]
RUNNER = ROOT / "build-runner"
FAKE_DOCKER = ROOT / "tests" / "fixtures" / "fake-docker"
REGION = "us-east-1"
REGISTRY = "123456789012.dkr.ecr.us-east-1.amazonaws.com"
REPOSITORY = "binderless/env"
BASE_IMAGE = f"{REGISTRY}/mirror/buildpack-deps:jammy"
BUCKET = "binderless-builds"
PROJECT = "binderless-build"
BUILD_ID = f"{PROJECT}:5a0b7f9e-0d7e-4c55-9d38-0b1f2c3d4e5f"
GROUP = f"/aws/codebuild/{PROJECT}"
STREAM = "5a0b7f9e-0d7e-4c55-9d38-0b1f2c3d4e5f"
TOKEN = "idempotency-token-1"
R2D_VERSION = metadata.version("jupyter-repo2docker")


# ----- helpers ----------------------------------------------------------------------------


@pytest.fixture
def aws() -> Iterator[None]:
    with mock_aws():
        yield



def push(ecr: Any, tag: str) -> str:
    """Simulate ``docker push`` of ``<repository>:<tag>``; returns the image digest."""
    answer = ecr.put_image(repositoryName=REPOSITORY, imageManifest=manifest(tag), imageTag=tag)
    return str(answer["image"]["imageId"]["imageDigest"])


class LogWriter:
    """Puts lines into the build's CloudWatch stream, with ever later timestamps."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.clock = itertools.count(int(time.time() * 1000))

    def create(self) -> None:
        self.client.create_log_group(logGroupName=GROUP)
        self.client.create_log_stream(logGroupName=GROUP, logStreamName=STREAM)

    def put(self, *messages: str) -> None:
        self.client.put_log_events(logGroupName=GROUP, logStreamName=STREAM, logEvents=[
            {"timestamp": next(self.clock), "message": m} for m in messages])


def r2d(message: str) -> str:
    """A line of ``repo2docker --json-logs`` output."""
    return json.dumps({"message": message + "\n", "phase": "building"})


def container(text: str) -> str:
    """One of CodeBuild's own log lines."""
    return f"[Container] 2026/01/02 03:04:05.678901 {text}"


def build_answer(status: str = "IN_PROGRESS", phase: str = "BUILD", *, logs: bool = True,
                 phases: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    build: dict[str, Any] = {"id": BUILD_ID, "buildStatus": status, "currentPhase": phase}
    if logs:
        build["logs"] = {"groupName": GROUP, "streamName": STREAM}
    if phases is not None:
        build["phases"] = phases
    return {"builds": [build]}


FAILED_PHASES: list[dict[str, Any]] = [
    {"phaseType": "SUBMITTED", "phaseStatus": "SUCCEEDED"},
    {"phaseType": "BUILD", "phaseStatus": "FAILED", "contexts": [{
        "statusCode": "COMMAND_EXECUTION_ERROR",
        "message": "Error while executing command: python3 /opt/binderless/run_repo2docker.py "
                   "build. Reason: exit status 1"}]},
]


def start_params(key: str, *, cache_tag: str | None = None) -> dict[str, Any]:
    env = [{"name": "IMAGE_URI", "value": f"{REGISTRY}/{REPOSITORY}:{key}", "type": "PLAINTEXT"}]
    if cache_tag:
        env.append({"name": "CACHE_FROM", "value": f"{REGISTRY}/{REPOSITORY}:{cache_tag}",
                    "type": "PLAINTEXT"})
    env += [{"name": "BASE_IMAGE", "value": BASE_IMAGE, "type": "PLAINTEXT"},
            {"name": "BUILDER_VERSION", "value": R2D_VERSION, "type": "PLAINTEXT"}]
    return {
        "projectName": PROJECT,
        "sourceTypeOverride": "S3",
        "sourceLocationOverride": f"{BUCKET}/sources/{key}.zip",
        "environmentVariablesOverride": env,
        "idempotencyToken": TOKEN,
        "buildspecOverride": BUILDSPEC,
    }


Step = Callable[[], object]


def before_each_status(client: Any, polls: list[list[Step]]) -> None:
    """Run the steps of ``polls[n]`` just before the n-th ``BatchGetBuilds`` is answered."""
    pending = iter(polls)

    def hook(**_: Any) -> None:
        for step in next(pending, []):
            step()

    client.meta.events.register("before-parameter-build.codebuild.BatchGetBuilds", hook)


# ----- ECR --------------------------------------------------------------------------------


def test_ecr_repository_is_created_once_scanned_encrypted_and_expires_untagged(
        aws: None) -> None:
    client = boto3.client("ecr", region_name=REGION)
    registry = EcrRegistry(client, registry_uri=REGISTRY, repository=REPOSITORY)
    assert registry.image_uri("abc") == f"{REGISTRY}/{REPOSITORY}:abc"
    assert registry.find("abc") is None  # no repository yet
    assert registry.latest_tag() is None

    assert registry.ensure_repository() is True
    repo = client.describe_repositories(repositoryNames=[REPOSITORY])["repositories"][0]
    assert repo["imageScanningConfiguration"] == {"scanOnPush": True}
    assert repo["encryptionConfiguration"]["encryptionType"] == "AES256"
    policy = json.loads(client.get_lifecycle_policy(repositoryName=REPOSITORY)
                        ["lifecyclePolicyText"])
    [rule] = policy["rules"]
    assert rule["selection"]["tagStatus"] == "untagged"
    assert rule["selection"]["countType"] == "sinceImagePushed"
    assert rule["action"] == {"type": "expire"}

    again = EcrRegistry(client, registry_uri=REGISTRY, repository=REPOSITORY)
    assert again.ensure_repository() is False


def test_ecr_find_and_latest_tag_after_pushes(aws: None) -> None:
    client = boto3.client("ecr", region_name=REGION)
    registry = EcrRegistry(client, registry_uri=REGISTRY, repository=REPOSITORY)
    registry.ensure_repository()
    assert registry.find("new") is None
    assert registry.latest_tag() is None
    push(client, "old")
    digest = push(client, "new")
    assert registry.find("new") == digest
    assert digest.startswith("sha256:")
    assert registry.latest_tag() == "new"


def test_ecr_kms_encryption_and_errors_with_stubber() -> None:
    client = boto3.client("ecr", region_name=REGION)
    key = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    registry = EcrRegistry(client, registry_uri=REGISTRY, repository=REPOSITORY, kms_key=key,
                           untagged_days=3)
    with Stubber(client) as stub:
        stub.add_response("create_repository", {"repository": {}}, {
            "repositoryName": REPOSITORY, "imageTagMutability": "MUTABLE",
            "imageScanningConfiguration": {"scanOnPush": True},
            "encryptionConfiguration": {"encryptionType": "KMS", "kmsKey": key}})
        stub.add_response("put_lifecycle_policy", {}, {
            "repositoryName": REPOSITORY, "lifecyclePolicyText": json.dumps({"rules": [{
                "rulePriority": 1,
                "description": "Expire untagged images (replaced tags, failed pushes)",
                "selection": {"tagStatus": "untagged", "countType": "sinceImagePushed",
                              "countUnit": "days", "countNumber": 3},
                "action": {"type": "expire"}}]}, sort_keys=True)})
        assert registry.ensure_repository() is True
        stub.add_client_error("create_repository", "RepositoryAlreadyExistsException")
        assert registry.ensure_repository() is False  # and no second policy
        stub.add_client_error("describe_images", "AccessDeniedException")
        with pytest.raises(ClientError):
            registry.find("abc")
        stub.assert_no_pending_responses()


def test_ecr_latest_tag_pages_and_skips_untagged_with_stubber() -> None:
    client = boto3.client("ecr", region_name=REGION)
    registry = EcrRegistry(client, registry_uri=REGISTRY, repository=REPOSITORY)

    def image(tag: str | None, minute: int) -> dict[str, Any]:
        detail: dict[str, Any] = {"imageDigest": f"sha256:{minute:064d}",
                                  "imagePushedAt": dt.datetime(2026, 1, 1, 12, minute,
                                                               tzinfo=dt.UTC)}
        if tag:
            detail["imageTags"] = [tag]
        return detail

    query = {"repositoryName": REPOSITORY, "filter": {"tagStatus": "TAGGED"}, "maxResults": 1000}
    with Stubber(client) as stub:
        stub.add_response("describe_images", {
            "imageDetails": [image("b", 5), image(None, 9)], "nextToken": "page2"}, query)
        stub.add_response("describe_images", {"imageDetails": [image("c", 7), image("a", 1)]},
                          {**query, "nextToken": "page2"})
        assert registry.latest_tag() == "c"
        stub.add_client_error("describe_images", "RepositoryNotFoundException")
        assert registry.latest_tag() is None


# ----- S3 ---------------------------------------------------------------------------------


def make_tree(root: Path, *, mode: int = 0o644, mtime: float = 1_700_000_000) -> Path:
    (root / ".git" / "refs").mkdir(parents=True)
    (root / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (root / "binder").mkdir()
    (root / "binder" / "requirements.txt").write_text("numpy\n")
    (root / "binder" / "postBuild").write_text("#!/bin/sh\necho hi\n")
    (root / "binder" / "postBuild").chmod(0o775)
    (root / "data").mkdir()
    (root / "data" / "big.bin").write_bytes(bytes(range(256)) * 4000)
    (root / "empty").mkdir()
    (root / "README.md").write_text("# hello\n")
    (root / "README.md").chmod(mode)
    (root / "link-to-readme").symlink_to("README.md")
    (root / "link-to-data").symlink_to("data")
    (root / "dangling").symlink_to("../outside/nothing")
    for path in root.rglob("*"):
        os.utime(path, (mtime, mtime), follow_symlinks=False)
    return root


def test_zip_directory_is_reproducible_and_keeps_git_modes_and_links(tmp_path: Path) -> None:
    first = zip_directory(make_tree(tmp_path / "a"), tmp_path / "a.zip")
    second = zip_directory(make_tree(tmp_path / "b", mode=0o664, mtime=1_800_000_000))
    try:
        assert first.read_bytes() == second.read_bytes()
    finally:
        second.unlink()

    with zipfile.ZipFile(first) as archive:
        assert archive.testzip() is None
        names = archive.namelist()
        infos = {i.filename: i for i in archive.infolist()}
        assert ".git/HEAD" in infos and ".git/refs/" in infos and "empty/" in infos
        assert archive.read("binder/requirements.txt") == b"numpy\n"
        assert archive.read("data/big.bin") == bytes(range(256)) * 4000

        def mode(name: str) -> int:
            return infos[name].external_attr >> 16

        assert mode("binder/postBuild") == stat.S_IFREG | 0o755
        assert mode("README.md") == stat.S_IFREG | 0o644
        assert stat.S_ISDIR(mode("binder/"))
        for link, target in (("link-to-readme", b"README.md"), ("link-to-data", b"data"),
                             ("dangling", b"../outside/nothing")):
            assert stat.S_ISLNK(mode(link))
            assert archive.read(link) == target
        assert not any(n.startswith("link-to-data/") for n in names)  # never followed
        assert {i.date_time for i in archive.infolist()} == {(1980, 1, 1, 0, 0, 0)}


def test_zip_directory_unpacks_with_links_and_modes(tmp_path: Path) -> None:
    unzip = shutil.which("unzip")
    if unzip is None:
        pytest.skip("no unzip command")
    archive = zip_directory(make_tree(tmp_path / "tree"), tmp_path / "tree.zip")
    out = tmp_path / "out"
    subprocess.run([unzip, "-q", str(archive), "-d", str(out)], check=True)
    assert (out / "link-to-readme").is_symlink()
    assert (out / "link-to-readme").read_text() == "# hello\n"
    assert os.access(out / "binder" / "postBuild", os.X_OK)
    assert (out / "empty").is_dir()


def test_s3_objects_put_presign_delete(aws: None, tmp_path: Path) -> None:
    client = boto3.client("s3", region_name=REGION, config=client_config())
    client.create_bucket(Bucket=BUCKET)
    objects = S3Objects(client, BUCKET)
    archive = zip_directory(make_tree(tmp_path / "tree"), tmp_path / "tree.zip")

    objects.put_file("sources/abc.zip", archive)
    stored = client.get_object(Bucket=BUCKET, Key="sources/abc.zip")["Body"].read()
    assert stored == archive.read_bytes()
    with zipfile.ZipFile(io.BytesIO(stored)) as unpacked:
        assert ".git/HEAD" in unpacked.namelist()

    objects.put_bytes("notes/a.txt", b"hello", content_type="text/plain")
    answer = client.get_object(Bucket=BUCKET, Key="notes/a.txt")
    assert answer["Body"].read() == b"hello"
    assert answer["ContentType"] == "text/plain"

    url = urlparse(objects.presigned_get("sources/abc.zip", 300))
    assert BUCKET in url.netloc + url.path and url.path.endswith("/sources/abc.zip")
    assert parse_qs(url.query)["X-Amz-Expires"] == ["300"]

    objects.delete("sources/abc.zip")
    with pytest.raises(ClientError):
        client.head_object(Bucket=BUCKET, Key="sources/abc.zip")
    objects.delete("sources/abc.zip")  # already gone: fine


# ----- CloudWatch Logs --------------------------------------------------------------------


def test_log_reader_reads_incrementally(aws: None) -> None:
    client = boto3.client("logs", region_name=REGION)
    reader = LogReader(client)
    assert reader.lines(GROUP, STREAM) == ([], None)  # CodeBuild has not created it yet

    writer = LogWriter(client)
    writer.create()
    lines, token = reader.lines(GROUP, STREAM)
    assert lines == []
    writer.put("one", "two\n", "three")
    lines, token = reader.lines(GROUP, STREAM, token)
    assert lines == ["one", "two", "three"]
    assert reader.lines(GROUP, STREAM, token) == ([], token)
    writer.put("four", "five")
    lines, later = reader.lines(GROUP, STREAM, token)
    assert lines == ["four", "five"]
    assert later != token
    assert reader.lines(GROUP, STREAM) == (["one", "two", "three", "four", "five"], later)


def test_log_reader_pages_until_the_token_repeats() -> None:
    client = boto3.client("logs", region_name=REGION)
    reader = LogReader(client)
    query = {"logGroupName": GROUP, "logStreamName": STREAM, "startFromHead": True}

    def page(token: str, *messages: str) -> dict[str, Any]:
        return {"events": [{"timestamp": 1, "message": m} for m in messages],
                "nextForwardToken": token, "nextBackwardToken": "b"}

    with Stubber(client) as stub:
        stub.add_response("get_log_events", page("f/1", "a", "b"), {**query, "nextToken": "f/0"})
        stub.add_response("get_log_events", page("f/2", "c"), {**query, "nextToken": "f/1"})
        stub.add_response("get_log_events", page("f/2"), {**query, "nextToken": "f/2"})
        assert reader.lines(GROUP, STREAM, "f/0") == (["a", "b", "c"], "f/2")
        stub.add_response("get_log_events", page("f/3", "d"), {**query, "nextToken": "f/2"})
        stub.add_client_error("get_log_events", "ThrottlingException")
        assert reader.lines(GROUP, STREAM, "f/2") == (["d"], "f/3")
        stub.add_client_error("get_log_events", "AccessDeniedException")
        with pytest.raises(ClientError):
            reader.lines(GROUP, STREAM, "f/3")
        stub.assert_no_pending_responses()


# ----- CodeBuild --------------------------------------------------------------------------


def test_codebuild_start_sends_s3_source_env_and_token() -> None:
    client = boto3.client("codebuild", region_name=REGION)
    project = CodeBuildProject(client, PROJECT)
    with Stubber(client) as stub:
        stub.add_response("start_build", {"build": {"id": BUILD_ID}}, {
            "projectName": PROJECT,
            "sourceTypeOverride": "S3",
            "sourceLocationOverride": f"{BUCKET}/sources/k.zip",
            "environmentVariablesOverride": [
                {"name": "IMAGE_URI", "value": "r/e:k", "type": "PLAINTEXT"},
                {"name": "BASE_IMAGE", "value": "r/m:jammy", "type": "PLAINTEXT"}],
            "idempotencyToken": TOKEN,
        })
        assert project.start(f"{BUCKET}/sources/k.zip",
                             {"IMAGE_URI": "r/e:k", "BASE_IMAGE": "r/m:jammy"},
                             TOKEN) == BUILD_ID
        stub.add_response("start_build", {"build": {"id": BUILD_ID}}, {
            "projectName": PROJECT, "sourceTypeOverride": "S3",
            "sourceLocationOverride": f"{BUCKET}/k.zip", "environmentVariablesOverride": [],
            "idempotencyToken": TOKEN, "buildspecOverride": "version: 0.2\n"})
        assert project.start(f"{BUCKET}/k.zip", {}, TOKEN,
                             buildspec="version: 0.2\n") == BUILD_ID
        stub.assert_no_pending_responses()


def test_codebuild_status_in_progress_succeeded_failed_and_stop() -> None:
    client = boto3.client("codebuild", region_name=REGION)
    project = CodeBuildProject(client, PROJECT)
    ids = {"ids": [BUILD_ID]}
    with Stubber(client) as stub:
        stub.add_response("batch_get_builds", build_answer(phase="PROVISIONING", logs=False), ids)
        stub.add_response("batch_get_builds", build_answer(), ids)
        stub.add_response("batch_get_builds", build_answer("SUCCEEDED", "COMPLETED"), ids)
        stub.add_response("batch_get_builds",
                          build_answer("FAILED", "COMPLETED", phases=FAILED_PHASES), ids)
        stub.add_response("batch_get_builds", {"builds": [], "buildsNotFound": [BUILD_ID]}, ids)
        stub.add_response("stop_build", {"build": {"id": BUILD_ID}}, {"id": BUILD_ID})
        stub.add_client_error("stop_build", "InvalidInputException")
        stub.add_client_error("stop_build", "AccessDeniedException")

        provisioning = project.status(BUILD_ID)
        assert provisioning == BuildState("IN_PROGRESS", "PROVISIONING")
        assert not provisioning.done
        assert project.status(BUILD_ID) == BuildState("IN_PROGRESS", "BUILD", GROUP, STREAM)
        succeeded = project.status(BUILD_ID)
        assert succeeded == BuildState("SUCCEEDED", "COMPLETED", GROUP, STREAM)
        assert succeeded.done
        failed = project.status(BUILD_ID)
        assert failed.status == "FAILED" and failed.done
        assert failed.failure == ("BUILD: COMMAND_EXECUTION_ERROR: Error while executing "
                                  "command: python3 /opt/binderless/run_repo2docker.py build. "
                                  "Reason: exit status 1")
        with pytest.raises(BuildFailed, match="has no build"):
            project.status(BUILD_ID)
        project.stop(BUILD_ID)
        project.stop(BUILD_ID)  # finished already
        with pytest.raises(ClientError):
            project.stop(BUILD_ID)
        stub.assert_no_pending_responses()


# ----- CodeBuildBuilder end to end --------------------------------------------------------


@dataclass
class World:
    builder: CodeBuildBuilder
    ecr: Any
    s3: Any
    codebuild: Any
    stub: Stubber
    logs: LogWriter
    lines: list[str]


@pytest.fixture
def world(aws: None) -> Iterator[World]:
    ecr = boto3.client("ecr", region_name=REGION)
    s3 = boto3.client("s3", region_name=REGION, config=client_config())
    s3.create_bucket(Bucket=BUCKET)
    logs = boto3.client("logs", region_name=REGION)
    codebuild = boto3.client("codebuild", region_name=REGION)
    builder = CodeBuildBuilder(
        registry=EcrRegistry(ecr, registry_uri=REGISTRY, repository=REPOSITORY),
        sources=S3Objects(s3, BUCKET),
        project=CodeBuildProject(codebuild, PROJECT),
        logs=LogReader(logs),
        base_image=BASE_IMAGE,
        poll_interval=0.01,
        token_factory=lambda: TOKEN,
    )
    with Stubber(codebuild) as stub:
        yield World(builder, ecr, s3, codebuild, stub, LogWriter(logs), [])
        stub.assert_no_pending_responses()


def test_builder_keys_match_the_docker_builder(fixture_repo: Callable[[str], Path]) -> None:
    docker = DockerBuilder(Settings())
    for name in ("python-requirements", "environment-yml", "setup-py"):
        repo = fixture_repo(name)
        assert _bare_builder().plan(repo).key == docker.plan(repo).key


def _bare_builder() -> CodeBuildBuilder:
    """A builder whose adapters are never called (only ``plan`` is used)."""
    return CodeBuildBuilder(registry=EcrRegistry(None, registry_uri=REGISTRY,
                                                 repository=REPOSITORY),
                            sources=S3Objects(None, BUCKET),
                            project=CodeBuildProject(None, PROJECT), logs=LogReader(None),
                            base_image=BASE_IMAGE)


def test_builder_builds_pushes_and_streams_the_log_in_order(
        world: World, fixture_repo: Callable[[str], Path]) -> None:
    builder, lines = world.builder, world.lines
    repo = fixture_repo("python-requirements")
    plan = builder.plan(repo)
    assert asyncio.run(builder.find(plan)) is None

    EcrRegistry(world.ecr, registry_uri=REGISTRY, repository=REPOSITORY).ensure_repository()
    push(world.ecr, "older-environment")  # the latest image: reused as --cache-from

    world.stub.add_response("start_build", {"build": {"id": BUILD_ID}},
                            start_params(plan.key, cache_tag="older-environment"))
    statuses = [build_answer(phase="PROVISIONING", logs=False), build_answer(), build_answer(),
                build_answer(), build_answer("SUCCEEDED", "COMPLETED")]
    for answer in statuses:
        world.stub.add_response("batch_get_builds", answer, {"ids": [BUILD_ID]})
    put = world.logs.put
    sources: list[bytes] = []

    def keep_source() -> None:  # as CodeBuild downloads it
        answer = world.s3.get_object(Bucket=BUCKET, Key=f"sources/{plan.key}.zip")
        sources.append(answer["Body"].read())

    before_each_status(world.codebuild, [
        [keep_source],
        [world.logs.create,
         partial(put, container("Entering phase BUILD"), r2d("Picked Local content provider."))],
        [partial(put, r2d("Using PythonBuildPack builder"),
                 r2d("#5 [1/9] FROM base\n#5 DONE 0.1s\n\n#6 [2/9] RUN apt"))],
        [],  # nothing new in this poll
        [partial(put, r2d("#20 pushing layers done")), partial(push, world.ecr, plan.key)],
    ])

    image = asyncio.run(builder.build(plan, repo, lines.append))

    uri = f"{REGISTRY}/{REPOSITORY}:{plan.key}"
    assert image == ImageRef(key=plan.key, name=uri, location=uri)
    assert asyncio.run(builder.find(plan)) == image
    assert all(line.endswith("\n") for line in lines)
    assert lines[0] == f"Building {uri} with repo2docker {R2D_VERSION} on AWS CodeBuild\n"
    assert lines[1].startswith("Uploaded the repository to S3 (")
    assert lines[2:] == [
        f"Started AWS CodeBuild build {BUILD_ID}\n",
        container("Entering phase BUILD") + "\n",
        "Picked Local content provider.\n",
        "Using PythonBuildPack builder\n",
        "#5 [1/9] FROM base\n", "#5 DONE 0.1s\n", "#6 [2/9] RUN apt\n",
        "#20 pushing layers done\n",
    ]
    with zipfile.ZipFile(io.BytesIO(sources[0])) as archive:
        assert {"requirements.txt", "index.ipynb", ".git/HEAD"} <= set(archive.namelist())
    assert "Contents" not in world.s3.list_objects_v2(Bucket=BUCKET)  # the source is gone


def expect_succeeded_build(world: World, key: str) -> None:
    """CodeBuild (stubbed) starts the build of ``key`` and reports it SUCCEEDED."""
    world.stub.add_response("start_build", {"build": {"id": BUILD_ID}}, start_params(key))
    world.stub.add_response("batch_get_builds", build_answer("SUCCEEDED", "COMPLETED"),
                            {"ids": [BUILD_ID]})


def test_builder_reads_lines_that_arrive_after_the_end(
        world: World, fixture_repo: Callable[[str], Path]) -> None:
    repo = fixture_repo("python-requirements")
    plan = world.builder.plan(repo)
    expect_succeeded_build(world, plan.key)
    late = threading.Event()

    def finish() -> None:
        world.logs.create()
        world.logs.put(r2d("built"))
        push(world.ecr, plan.key)
        late.set()

    before_each_status(world.codebuild, [[finish]])
    reads = itertools.count()

    def late_lines(**_: Any) -> None:  # the second read after the end sees the last lines
        if late.is_set() and next(reads) == 2:
            world.logs.put(container("Phase complete: POST_BUILD State: SUCCEEDED"))

    world.builder.logs.client.meta.events.register(
        "before-parameter-build.cloudwatch-logs.GetLogEvents", late_lines)
    asyncio.run(world.builder.build(plan, repo, world.lines.append))
    assert world.lines[-2:] == ["built\n",
                                container("Phase complete: POST_BUILD State: SUCCEEDED") + "\n"]


@pytest.mark.parametrize("with_log", [True, False])
def test_failing_build_raises_with_the_last_log_line(
        world: World, fixture_repo: Callable[[str], Path], with_log: bool) -> None:
    repo = fixture_repo("python-requirements")
    plan = world.builder.plan(repo)
    world.stub.add_response("start_build", {"build": {"id": BUILD_ID}}, start_params(plan.key))
    world.stub.add_response("batch_get_builds", build_answer(logs=with_log), {"ids": [BUILD_ID]})
    world.stub.add_response("batch_get_builds",
                            build_answer("FAILED", "COMPLETED", logs=with_log,
                                         phases=FAILED_PHASES), {"ids": [BUILD_ID]})
    failure = ("ERROR: failed to build: failed to solve: process \"/bin/bash -c pip install "
               "-r requirements.txt\" did not complete successfully: exit code: 1")
    if with_log:
        before_each_status(world.codebuild, [
            [world.logs.create, partial(world.logs.put, r2d("Using PythonBuildPack builder"))],
            [partial(
                world.logs.put,
                r2d(f"#9 0.612 ERROR: No matching distribution\n------\n{failure}"),
                r2d("Error during build: Command '['docker', 'buildx', 'build']' returned "
                    "non-zero exit status 1."),
                container("Phase complete: BUILD State: FAILED"),
                container("Phase context status code: COMMAND_EXECUTION_ERROR Message: Error "
                          "while executing command: python3 /opt/binderless/run_repo2docker.py "
                          "build. Reason: exit status 1"))],
        ])

    with pytest.raises(BuildFailed) as caught:
        asyncio.run(world.builder.build(plan, repo, world.lines.append))

    assert caught.value.message == "repo2docker could not build the image on AWS CodeBuild."
    if with_log:
        assert caught.value.hint == f"The last line of the build log was: {failure}"
        assert world.lines[-1].startswith("[Container]")
    else:
        context = FAILED_PHASES[1]["contexts"][0]
        assert caught.value.hint == (f"AWS CodeBuild said: BUILD: {context['statusCode']}: "
                                     f"{context['message']}")
    assert asyncio.run(world.builder.find(plan)) is None


@pytest.mark.parametrize(("status", "message"), [
    ("TIMED_OUT", "took too long"),
    ("STOPPED", "was stopped before it finished"),
    ("FAULT", "AWS CodeBuild failed while building"),
])
def test_other_build_endings(world: World, fixture_repo: Callable[[str], Path], status: str,
                             message: str) -> None:
    repo = fixture_repo("python-requirements")
    plan = world.builder.plan(repo)
    world.stub.add_response("start_build", {"build": {"id": BUILD_ID}}, start_params(plan.key))
    world.stub.add_response("batch_get_builds", build_answer(status, "COMPLETED", logs=False),
                            {"ids": [BUILD_ID]})
    with pytest.raises(BuildFailed, match=message):
        asyncio.run(world.builder.build(plan, repo, world.lines.append))


def test_succeeded_build_without_an_image_fails(
        world: World, fixture_repo: Callable[[str], Path]) -> None:
    repo = fixture_repo("python-requirements")
    plan = world.builder.plan(repo)
    expect_succeeded_build(world, plan.key)
    with pytest.raises(BuildFailed, match="ECR has no image"):
        asyncio.run(world.builder.build(plan, repo, world.lines.append))


def test_cancelling_the_launch_stops_the_build(
        world: World, fixture_repo: Callable[[str], Path]) -> None:
    repo = fixture_repo("python-requirements")
    plan = world.builder.plan(repo)
    world.builder.poll_interval = 30.0
    world.stub.add_response("start_build", {"build": {"id": BUILD_ID}}, start_params(plan.key))
    world.stub.add_response("batch_get_builds", build_answer(), {"ids": [BUILD_ID]})
    world.stub.add_response("stop_build", {"build": {"id": BUILD_ID}}, {"id": BUILD_ID})
    polled = threading.Event()
    before_each_status(world.codebuild, [[polled.set]])

    async def launch_then_cancel() -> None:
        task = asyncio.create_task(world.builder.build(plan, repo, world.lines.append))
        while not polled.is_set():
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(asyncio.wait_for(launch_then_cancel(), 20))
    assert world.lines[-1] == f"Stopped AWS CodeBuild build {BUILD_ID}\n"
    assert "Contents" not in world.s3.list_objects_v2(Bucket=BUCKET)


def test_a_build_over_the_timeout_is_stopped(
        world: World, fixture_repo: Callable[[str], Path]) -> None:
    repo = fixture_repo("python-requirements")
    plan = world.builder.plan(repo)
    world.builder.timeout = 0
    world.stub.add_response("start_build", {"build": {"id": BUILD_ID}}, start_params(plan.key))
    world.stub.add_response("batch_get_builds", build_answer(logs=False), {"ids": [BUILD_ID]})
    world.stub.add_response("stop_build", {"build": {"id": BUILD_ID}}, {"id": BUILD_ID})
    with pytest.raises(BuildFailed, match="took too long"):
        asyncio.run(world.builder.build(plan, repo, world.lines.append))
    assert world.lines[-1] == f"Stopped AWS CodeBuild build {BUILD_ID}\n"


def test_aws_errors_become_build_failures(
        world: World, fixture_repo: Callable[[str], Path]) -> None:
    repo = fixture_repo("python-requirements")
    plan = world.builder.plan(repo)
    world.s3.delete_bucket(Bucket=BUCKET)
    with pytest.raises(BuildFailed, match="could not upload the repository to S3") as caught:
        asyncio.run(world.builder.build(plan, repo, world.lines.append))
    assert "NoSuchBucket" in caught.value.message
    assert "not of the repository" in caught.value.hint
    assert world.lines[0].startswith("Building ")


# ----- the runner: run_repo2docker.py, buildspec.yml, Dockerfile ---------------------------


def load_runner(path: Path = RUNNER / "run_repo2docker.py") -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"run_repo2docker_{abs(hash(path))}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


IMAGE_URI = f"{REGISTRY}/{REPOSITORY}:0123456789abcdef0123"
CACHE_FROM = f"{REGISTRY}/{REPOSITORY}:older"


def test_runner_command(tmp_path: Path) -> None:
    runner = load_runner()
    env = {"IMAGE_URI": IMAGE_URI, "CACHE_FROM": CACHE_FROM, "BASE_IMAGE": BASE_IMAGE,
           "BUILDER_VERSION": R2D_VERSION}
    checkout = tmp_path / "src"
    assert runner.build_command(env, checkout=checkout, context_dir=tmp_path) == [
        "repo2docker", "--config", str(tmp_path / "repo2docker_config.py"),
        "--no-run", "--push", "--json-logs",
        "--user-id", "1000", "--user-name", "jovyan",
        "--image-name", IMAGE_URI,
        "--label", "binderless.environment=0123456789abcdef0123",
        "--cache-from", CACHE_FROM,
        f"--Repo2Docker.base_image={BASE_IMAGE}",
        "--appendix", SESSION_START_APPENDIX,
        f"--DockerEngine.extra_buildx_build_args=--build-context=binderless={tmp_path}",
        "--DockerEngine.extra_buildx_build_args=--cache-to=type=inline",
        str(checkout),
    ]
    # A repository's own Dockerfile drops the appendix, so it needs no named context (which
    # engines before Docker 23 refuse); an engine without a bridge builds on the host network.
    own = runner.build_command(env, checkout=checkout, named_context=False,
                               host_network=True, metadata_file=tmp_path / "m.json")
    assert not any("--build-context" in arg for arg in own)
    assert own[-4:] == ["--DockerEngine.extra_buildx_build_args=--cache-to=type=inline",
                        "--DockerEngine.extra_buildx_build_args=--network=host",
                        f"--DockerEngine.extra_buildx_build_args=--metadata-file={tmp_path}/m.json",
                        str(checkout)]
    without_cache = runner.build_command({**env, "CACHE_FROM": ""}, checkout=checkout)
    assert "--cache-from" not in without_cache
    assert f"--DockerEngine.extra_buildx_build_args=--build-context=binderless={RUNNER}" \
        in without_cache  # the runner's own folder, where session-start lives
    for bad in ({}, {"IMAGE_URI": f"{REGISTRY}/{REPOSITORY}"}):
        with pytest.raises(runner.RunnerError):
            runner.build_command(bad, checkout=checkout)
    assert runner.version_problem(env) == ""
    assert "rebuild and push the runner image" in runner.version_problem(
        {**env, "BUILDER_VERSION": "2000.1.0"})


def test_appendix_copies_session_start_from_the_runner_context() -> None:
    assert f"COPY --from={RUNNER_CONTEXT} --chmod=0755 session-start " in SESSION_START_APPENDIX
    assert SESSION_START_APPENDIX.rstrip().splitlines()[-1] == (
        'ENTRYPOINT ["/usr/local/bin/binderless-session-start", '
        '"/usr/local/bin/repo2docker-entrypoint"]')


@pytest.fixture
def runner_dir(tmp_path: Path) -> Path:
    """A copy of the runner folder as the image has it: the script beside ``session-start``."""
    folder = tmp_path / "opt-binderless"
    folder.mkdir()
    shutil.copy2(RUNNER / "run_repo2docker.py", folder)
    shutil.copy2(RUNNER / "repo2docker_config.py", folder)
    (folder / "session-start").write_text('#!/bin/sh\nexec "$@"\n')
    return folder


def run_runner(folder: Path, command: str, env: dict[str, str], *, path_first: Path,
               cwd: Path) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **env,
                "PATH": os.pathsep.join([str(path_first), str(Path(sys.executable).parent),
                                         os.environ["PATH"]])}
    return subprocess.run([sys.executable, str(folder / "run_repo2docker.py"), command],
                          cwd=cwd, env=full_env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("fail", [False, True])
def test_runner_builds_with_real_repo2docker_against_the_fake_engine(
        tmp_path: Path, runner_dir: Path, fixture_repo: Callable[[str], Path],
        fail: bool) -> None:
    source = fixture_repo("python-requirements")
    state = tmp_path / "engine"
    state.mkdir()
    env = {"IMAGE_URI": IMAGE_URI, "CACHE_FROM": CACHE_FROM, "BASE_IMAGE": BASE_IMAGE,
           "BUILDER_VERSION": R2D_VERSION, "CODEBUILD_SRC_DIR": str(source),
           "FAKE_DOCKER_LOG": str(state / "calls.jsonl"),
           "FAKE_DOCKER_IMAGES": str(state / "images.txt"),
           "FAKE_DOCKER_FAIL_BUILD": "1" if fail else "0"}
    done = run_runner(runner_dir, "build", env, path_first=FAKE_DOCKER, cwd=tmp_path)

    output = (done.stdout + done.stderr).splitlines()
    assert json.loads(output[0])["message"].startswith(f"Building {IMAGE_URI} with repo2docker")
    assert all(json.loads(line)["message"] is not None for line in output if line.strip())
    calls = [json.loads(line) for line in (state / "calls.jsonl").read_text().splitlines()]
    [build] = [c for c in calls if c[:2] == ["buildx", "build"]]
    assert "--push" in build
    assert build[build.index("--tag") + 1] == IMAGE_URI
    assert build[build.index("--cache-from") + 1] == CACHE_FROM
    assert f"--build-context=binderless={runner_dir}" in build
    assert "--cache-to=type=inline" in build
    dockerfile = (state / "last-build.Dockerfile").read_text()
    assert 'LABEL binderless.environment="0123456789abcdef0123"' in dockerfile
    assert dockerfile.lstrip().startswith(f"FROM {BASE_IMAGE}\n")
    assert SESSION_START_APPENDIX.strip() in dockerfile
    assert dockerfile.rstrip().endswith(SESSION_START_APPENDIX.rstrip().splitlines()[-1])
    if fail:
        assert done.returncode != 0
    else:
        assert done.returncode == 0, done.stderr


def test_runner_refuses_a_mismatched_repo2docker_and_a_missing_session_start(
        tmp_path: Path, runner_dir: Path) -> None:
    env = {"IMAGE_URI": IMAGE_URI, "BASE_IMAGE": BASE_IMAGE, "BUILDER_VERSION": "2000.1.0",
           "CODEBUILD_SRC_DIR": str(tmp_path)}
    done = run_runner(runner_dir, "build", env, path_first=FAKE_DOCKER, cwd=tmp_path)
    assert done.returncode == 2
    assert "rebuild and push the runner image" in json.loads(done.stdout)["message"]

    (runner_dir / "session-start").unlink()
    done = run_runner(runner_dir, "build", {**env, "BUILDER_VERSION": R2D_VERSION},
                      path_first=FAKE_DOCKER, cwd=tmp_path)
    assert done.returncode == 2
    assert "session-start is missing" in json.loads(done.stdout)["message"]

    done = run_runner(runner_dir, "bogus", env, path_first=FAKE_DOCKER, cwd=tmp_path)
    assert done.returncode == 2


def test_runner_logs_in_to_each_ecr_registry(tmp_path: Path) -> None:
    runner = load_runner()
    other = "210987654321.dkr.ecr.eu-west-1.amazonaws.com"
    env = {"IMAGE_URI": IMAGE_URI, "BASE_IMAGE": BASE_IMAGE,
           "CACHE_FROM": f"{other}/cache:old"}
    assert runner.registries(env) == [(REGISTRY, "us-east-1"), (other, "eu-west-1")]
    assert runner.registries({"IMAGE_URI": IMAGE_URI,
                              "BASE_IMAGE": "public.ecr.aws/docker/library/x:1"}) == [
        (REGISTRY, "us-east-1")]

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "docker-calls.jsonl"
    fake = bin_dir / "docker"
    fake.write_text(f"#!{sys.executable}\nimport json, sys\n"
                    f"with open({str(record)!r}, 'a') as f:\n"
                    "    f.write(json.dumps([sys.argv[1:], sys.stdin.read()]) + '\\n')\n")
    fake.chmod(0o755)

    clients: dict[str, Any] = {}
    stubs: list[Stubber] = []

    def factory(region: str) -> Any:
        client = boto3.client("ecr", region_name=region)
        stub = Stubber(client)
        token = base64.b64encode(f"AWS:secret-{region}".encode()).decode()
        stub.add_response("get_authorization_token", {"authorizationData": [{
            "authorizationToken": token, "proxyEndpoint": f"https://{region}"}]}, {})
        stub.activate()
        clients[region] = client
        stubs.append(stub)
        return client

    old_path = os.environ["PATH"]
    os.environ["PATH"] = f"{bin_dir}{os.pathsep}{old_path}"
    try:
        assert runner.login(env, client_factory=factory) == 0
    finally:
        os.environ["PATH"] = old_path
    for stub in stubs:
        stub.assert_no_pending_responses()
    assert sorted(clients) == ["eu-west-1", "us-east-1"]
    calls = [json.loads(line) for line in record.read_text().splitlines()]
    assert calls == [
        [["login", "--username", "AWS", "--password-stdin", REGISTRY], "secret-us-east-1"],
        [["login", "--username", "AWS", "--password-stdin", other], "secret-eu-west-1"],
    ]


def test_buildspec_file_matches_the_one_sent_with_each_build() -> None:
    spec = yaml.safe_load((RUNNER / "buildspec.yml").read_text())
    assert spec["version"] == 0.2
    assert spec == yaml.safe_load(BUILDSPEC)
    commands = [c for phase in spec["phases"].values() for c in phase["commands"]]
    assert f"python3 {RUNNER_SCRIPT} login" in commands
    assert commands[-1] == f"python3 {RUNNER_SCRIPT} build"
    assert commands[0].startswith("nohup dockerd ")


def test_runner_image_puts_the_script_beside_session_start() -> None:
    dockerfile = (RUNNER / "Dockerfile").read_text()
    assert ("COPY build-runner/run_repo2docker.py build-runner/session-start "
            f"build-runner/repo2docker_config.py {RUNNER_DIR}/") in dockerfile
    assert f"{RUNNER_DIR}/run_repo2docker.py" == RUNNER_SCRIPT
    # Debian's engine packages (docker.io 26 has named build contexts); tests/containers
    # builds this image for real.
    assert "docker-buildx" in dockerfile and "pip install --no-cache-dir --no-deps ." in dockerfile
