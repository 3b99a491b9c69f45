"""Signed-in users' persistent homes on AWS, against moto: EFS access points, per-user task
definitions, project folders on the (stand-in) EFS mount, deletion and culling.

The gateway wired by ``aws_service`` talks to moto for everything (DynamoDB, S3, ECS, EFS).
What moto cannot do is stood in for: the environment is "found" in the registry (no
build), the task's address is set to 127.0.0.91 where a stand-in Jupyter answers the
readiness probe, and the gateway's EFS mount of the home root is a temporary folder.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws
from moto.core.models import DEFAULT_ACCOUNT_ID
from moto.ecs.models import ecs_backends
from moto.moto_api import state_manager

from binderless.aws.bootstrap import BOOTSTRAP_HEADER, BOOTSTRAP_PATH
from binderless.aws.dynamodb import table_definition
from binderless.aws.ecs import PERSISTENT_PATH
from binderless.aws.wiring import aws_service
from binderless.backends.protocols import ImageRef
from binderless.envplan import EnvironmentPlan, plan_environment
from binderless.events import Event
from binderless.identity import Identity
from binderless.projects import ProjectService
from binderless.providers.base import ResolvedRepo
from binderless.service import LaunchRequest, LaunchService
from binderless.settings import Settings
from tests.aws_network import session_network

REGION = "us-east-1"
CLUSTER = "binderless"
BUCKET = "binderless-homes-test"
REGISTRY = "123456789012.dkr.ecr.us-east-1.amazonaws.com"
IMAGE_URI = f"{REGISTRY}/binderless-envs:env-0123456789abcdef"
TASK_IP = "127.0.0.91"  # Fargate's port 8888 on an address of its own, as aws_standins do


class FoundBuilder:
    """Every environment is already in the registry: no CodeBuild build here."""

    name = "codebuild"

    def plan(self, checkout: Path) -> EnvironmentPlan:
        return plan_environment(checkout, salt="test")

    async def find(self, plan: EnvironmentPlan) -> ImageRef | None:
        return ImageRef(key=plan.key, name=IMAGE_URI, location=IMAGE_URI)

    async def build(self, plan: EnvironmentPlan, checkout: Path, log: Any) -> ImageRef:
        raise AssertionError("nothing is built in these tests")


@dataclass
class FolderProvider:
    """``dir/<name>``: a folder of the test as a repository (the AWS mode refuses file://)."""

    root: Path
    prefix: str = "dir"
    display_name: str = "Test folder"

    def resolve(self, spec: str) -> ResolvedRepo:
        name = spec.split("/")[0]
        folder = self.root / name
        # A "commit" per content, as git would have it.
        digest = hashlib.sha1(b"".join(p.read_bytes() for p in sorted(folder.iterdir())))
        return ResolvedRepo(provider="dir", spec=spec, repo_url=f"https://example.org/{name}",
                            clone_url=str(folder), ref="HEAD",
                            resolved_ref=digest.hexdigest(), persistent_spec=spec,
                            ref_url="", slug=name, kind="dir")

    def display_config(self) -> dict[str, Any]:
        return {}


class Ready(BaseHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def do_POST(self) -> None:
        """session-start's bootstrap listener: takes the token and the checkout's URL."""
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200 if self.path == BOOTSTRAP_PATH else 404)
        self.send_header(BOOTSTRAP_HEADER, "1")
        self.send_header("Content-Length", "0")
        self.end_headers()


@pytest.fixture
def task_server() -> Iterator[None]:
    try:
        server = ThreadingHTTPServer((TASK_IP, 8888), Ready)
    except OSError as exc:
        pytest.skip(f"cannot listen on {TASK_IP}:8888 here: {exc}")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class Cloud:
    clients: dict[str, Any]
    file_system: str
    homes: Path
    repos: Path
    calls: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def client(self, name: str) -> Any:
        return self.clients[name]

    def task(self, arn: str) -> Any:
        return ecs_backends[DEFAULT_ACCOUNT_ID][REGION].tasks[CLUSTER][arn]


@pytest.fixture
def cloud(tmp_path: Path, task_server: None) -> Iterator[Cloud]:
    with mock_aws():
        state_manager.set_transition("ecs::task", {"progression": "manual", "times": 10**9})
        try:
            names = ("dynamodb", "s3", "ecs", "efs", "ec2", "iam", "logs", "ecr", "codebuild")
            clients = {n: boto3.client(n, region_name=REGION) for n in names}
            network = session_network(clients["ec2"], REGION)
            (subnet,), group = network.subnets, network.security_group
            clients["ecs"].create_cluster(clusterName=CLUSTER)
            clients["logs"].create_log_group(logGroupName="/binderless/sessions")
            clients["s3"].create_bucket(Bucket=BUCKET)
            clients["dynamodb"].create_table(**table_definition("binderless"))
            fs = clients["efs"].create_file_system(CreationToken="homes")["FileSystemId"]
            cloud = Cloud(clients, fs, tmp_path / "efs-homes", tmp_path / "repos")
            cloud.clients["subnet"], cloud.clients["group"] = subnet, group
            cloud.clients["home_group"] = clients["ec2"].create_security_group(
                GroupName="home-sessions", Description="home sessions",
                VpcId=network.vpc)["GroupId"]

            def record(name: str) -> Any:
                def hook(params: dict[str, Any], **_: Any) -> None:
                    cloud.calls.setdefault(name, []).append(dict(params))
                return hook

            ecs = clients["ecs"]
            for operation in ("RunTask", "RegisterTaskDefinition"):
                ecs.meta.events.register(f"provide-client-params.ecs.{operation}",
                                         record(operation))
            clients["efs"].meta.events.register("provide-client-params.efs.CreateAccessPoint",
                                                record("CreateAccessPoint"))

            def running(parsed: dict[str, Any], **_: Any) -> None:
                if not parsed.get("tasks"):
                    return  # refused (no task definition yet)
                task = cloud.task(parsed["tasks"][0]["taskArn"])
                task.last_status = "RUNNING"
                for attachment in task.attachments:
                    attachment["details"] = [
                        *(d for d in attachment["details"] if d["name"] != "privateIPv4Address"),
                        {"name": "privateIPv4Address", "value": TASK_IP}]

            ecs.meta.events.register("after-call.ecs.RunTask", running)
            yield cloud
        finally:
            state_manager.unset_transition("ecs::task")


ROLE_PATH = "/binderless-homes/test/"
SESSIONS = "https://sessions.binder.example"


def boundary(cloud: Cloud) -> str:
    """The stack's permissions boundary of users' roles (its content matters not here:
    tests/functional/infra/test_home_roles.py evaluates it)."""
    document = {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Action": "elasticfilesystem:ClientMount", "Resource": "*"}]}
    return str(cloud.clients["iam"].create_policy(
        PolicyName="home-boundary", PolicyDocument=json.dumps(document))["Policy"]["Arn"])


def gateway(cloud: Cloud, tmp_path: Path) -> LaunchService:
    settings = Settings(
        mode="aws", state_dir=tmp_path / "state", aws_table="binderless", aws_bucket=BUCKET,
        ecr_registry=REGISTRY, base_image=f"{REGISTRY}/mirror/buildpack-deps:jammy",
        ecs_cluster=CLUSTER, subnets=(cloud.clients["subnet"],),
        security_groups=(cloud.clients["group"],),
        execution_role_arn="arn:aws:iam::123456789012:role/exec",
        task_role_arn="arn:aws:iam::123456789012:role/task",
        home_role_path=ROLE_PATH, home_role_boundary=boundary(cloud),
        home_security_groups=(cloud.clients["home_group"],),
        efs_file_system_id=cloud.file_system, workspaces_dir=str(cloud.homes),
        max_projects_per_user=5, allow_local_paths=False, session_url=SESSIONS)
    from binderless.aws.wiring import Overrides

    service = aws_service(settings, cloud.client, Overrides(
        providers={"dir": FolderProvider(cloud.repos)}, poll_interval=0.01))
    service.builder = FoundBuilder()
    return service


def make_repo(cloud: Cloud, name: str) -> None:
    folder = cloud.repos / name
    folder.mkdir(parents=True)
    (folder / "analysis.ipynb").write_text('{"cells": []}')
    (folder / "requirements.txt").write_text("numpy\n")


async def launch(service: LaunchService, spec: str, owner: str) -> dict[str, Any]:
    launch_id = service.start(LaunchRequest(provider="dir", spec=spec,
                                            launch_host="https://binder.example/", owner=owner))
    final: Event | None = None
    messages = []
    async for item in service.events.follow(launch_id, 0, tick=0.2):
        if item is not None:
            final = item[1]
            messages.append(final.message)
    assert final is not None and final.phase is not None
    assert str(final.phase) == "ready", "".join(messages)
    return {**final.fields, "log": "".join(messages)}


def access_points(cloud: Cloud) -> list[dict[str, Any]]:
    answer = cloud.client("efs").describe_access_points(FileSystemId=cloud.file_system)
    return list(answer["AccessPoints"])


def test_persistent_homes_on_efs(cloud: Cloud, tmp_path: Path) -> None:
    make_repo(cloud, "analysis")
    make_repo(cloud, "thesis")
    service = gateway(cloud, tmp_path)
    alice = Identity("alice", "Alice")

    async def scenario() -> None:
        await service.open()
        try:
            await run(service)
        finally:
            await service.close()

    async def run(service: LaunchService) -> None:
        # The first persistent launch makes the user's access point and task definition.
        first = await launch(service, "analysis/HEAD", "alice")
        assert "Created your project folder 'analysis'" in first["log"]
        # Served from the sessions' own origin (the stack's BINDERLESS_SESSION_URL), which
        # never sees the sign-in cookie; the launch host stays the site's.
        assert first["url"] == f"{SESSIONS}/user/{first['url'].split('/')[4]}/"
        assert first["binder_launch_host"] == "https://binder.example/"
        [point] = access_points(cloud)
        assert {"Key": "binderless:user", "Value": "alice"} in point["Tags"]
        assert point["PosixUser"] == {"Uid": 1000, "Gid": 1000}
        assert point["RootDirectory"] == {"Path": "/homes/alice", "CreationInfo": {
            "OwnerUid": 1000, "OwnerGid": 1000, "Permissions": "0750"}}
        [registered] = cloud.calls["RegisterTaskDefinition"]
        assert point["AccessPointId"] in registered["family"]
        [volume] = registered["volumes"]
        assert volume["efsVolumeConfiguration"]["transitEncryption"] == "ENABLED"
        assert volume["efsVolumeConfiguration"]["authorizationConfig"]["accessPointId"] == \
            point["AccessPointId"]
        mounts = registered["containerDefinitions"][0]["mountPoints"]
        assert mounts[0]["containerPath"] == PERSISTENT_PATH
        run_task = cloud.calls["RunTask"][-1]  # after one refusal: nothing registered yet
        assert run_task["taskDefinition"] == registered["family"]
        command = run_task["overrides"]["containerOverrides"][0]["command"]
        assert f"--ServerApp.root_dir={PERSISTENT_PATH}/analysis" in command
        # Only signed-in users' sessions get the role that may mount through an access
        # point, and the security group the mount targets admit.
        # Alice's own role: under the stack's path, with its boundary, its policy naming
        # her access point only.
        role_name = registered["taskRoleArn"].rsplit("/", 1)[-1]
        role = cloud.clients["iam"].get_role(RoleName=role_name)["Role"]
        assert role["Arn"] == registered["taskRoleArn"] and role["Path"] == ROLE_PATH
        assert {"Key": "binderless:user", "Value": "alice"} in role["Tags"]
        policy = cloud.clients["iam"].get_role_policy(RoleName=role_name, PolicyName="home")
        assert policy["PolicyDocument"]["Statement"][0]["Condition"] == {"StringEquals": {
            "elasticfilesystem:AccessPointArn": point["AccessPointArn"]}}
        network = run_task["networkConfiguration"]["awsvpcConfiguration"]
        assert network["securityGroups"] == [cloud.clients["home_group"]]

        # The project lives in the user's home on the file system (the gateway's mount).
        project = cloud.homes / "alice" / "analysis"
        assert (project / "analysis.ipynb").exists()
        (project / "analysis.ipynb").write_text("my edits")
        (project / "results.csv").write_text("1,2,3")

        # Culling a session whose task ended stops it and keeps every file.
        session_id = first["url"].rstrip("/").rsplit("/", 1)[-1]
        task = cloud.task(service.store.get_session(session_id).backend_id)
        task.last_status, task.desired_status = "STOPPED", "STOPPED"
        assert await service.cull() == [session_id]
        assert service.store.get_session(session_id).status == "stopped"
        assert (project / "results.csv").read_text() == "1,2,3"

        # The second launch, of a newer commit, reuses both and finds the files as they
        # were; it says what changed upstream and copies none of it in.
        (cloud.repos / "analysis" / "analysis.ipynb").write_text('{"cells": [1]}')
        runs = len(cloud.calls["RunTask"])
        second = await launch(service, "analysis/HEAD", "alice")
        assert "Opening your project folder 'analysis'" in second["log"]
        assert "Changed upstream since your copy: 1 changed (analysis.ipynb)" in second["log"]
        assert "You have edited 1 of them yourself: analysis.ipynb" in second["log"]
        assert len(access_points(cloud)) == 1
        assert len(cloud.calls["RegisterTaskDefinition"]) == 1
        assert len(cloud.calls["CreateAccessPoint"]) == 1
        [again] = cloud.calls["RunTask"][runs:]  # one call: the revision is there
        assert again["taskDefinition"] == registered["family"]
        assert (project / "analysis.ipynb").read_text() == "my edits"

        # Another user gets an access point and a task definition of their own.
        await launch(service, "analysis/HEAD", "bob")
        bobs = [p for p in access_points(cloud)
                if {"Key": "binderless:user", "Value": "bob"} in p["Tags"]]
        assert len(bobs) == 1 and bobs[0]["RootDirectory"]["Path"] == "/homes/bob"
        assert cloud.calls["RegisterTaskDefinition"][1]["family"] != registered["family"]
        bob_role = cloud.calls["RegisterTaskDefinition"][1]["taskRoleArn"]
        assert bob_role != registered["taskRoleArn"] and f"role{ROLE_PATH}" in bob_role

        # Deleting one project removes its folder and no other.
        await launch(service, "thesis/HEAD", "alice")
        assert len(cloud.calls["RegisterTaskDefinition"]) == 2  # alice's, reused
        projects = ProjectService(service)
        await projects.delete(alice, "analysis")
        assert not project.exists()
        assert (cloud.homes / "alice" / "thesis" / "analysis.ipynb").exists()
        assert (cloud.homes / "bob" / "analysis" / "analysis.ipynb").exists()
        listing = await projects.listing(alice)
        assert [p["name"] for p in listing["projects"]] == ["thesis"]
        [thesis] = listing["projects"]
        assert thesis["open_url"].startswith(f"{SESSIONS}/user/")  # the projects page's Open
        # Its session was stopped first; the access point (the whole home) stays.
        assert all(r.repo_url != "https://example.org/analysis" or r.owner != "alice"
                   for r in service.store.sessions("starting", "running"))
        assert len(access_points(cloud)) == 2

        # An anonymous session: no volume, the default role, no route to the file system.
        runs = len(cloud.calls["RunTask"])
        launch_id = service.start(LaunchRequest(provider="dir", spec="thesis/HEAD",
                                                launch_host="https://binder.example/"))
        async for _ in service.events.follow(launch_id, 0, tick=0.2):
            pass
        anonymous = cloud.calls["RunTask"][runs:][-1]
        assert anonymous["networkConfiguration"]["awsvpcConfiguration"]["securityGroups"] == [
            cloud.clients["group"]]
        definition = cloud.client("ecs").describe_task_definition(
            taskDefinition=anonymous["taskDefinition"])["taskDefinition"]
        assert definition["taskRoleArn"] == "arn:aws:iam::123456789012:role/task"
        assert not definition.get("volumes")

    asyncio.run(scenario())


def test_a_gateway_without_efs_keeps_sessions_ephemeral(cloud: Cloud, tmp_path: Path) -> None:
    settings = Settings(mode="aws", aws_bucket=BUCKET, ecr_registry=REGISTRY,
                        base_image="b", subnets=("s",), security_groups=("g",),
                        execution_role_arn="e", task_role_arn="t", state_dir=tmp_path)
    service = aws_service(settings, cloud.client)
    assert service.workspaces is None
    assert service.spawner.access_points is None  # type: ignore[attr-defined]
