"""The AWS session path: Fargate task definitions and tasks, ``FargateSpawner``, and the
``session-start`` entrypoint wrapper of session images.

ECS calls go to moto (``mock_aws``) or to a botocore ``Stubber`` where moto loses detail:
moto ignores ``clientToken`` (a repeated RunTask starts a second task there), never
reports capacity or limit failures, and starts every task in RUNNING. Its task state is
frozen here and moved by hand, through botocore event hooks on the test's ECS client.
The ``session-start`` tests fetch from an HTTP server on 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gzip
import hashlib
import http.server
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import boto3
import pytest
from botocore.exceptions import ClientError
from botocore.stub import Stubber
from moto import mock_aws
from moto.core.models import DEFAULT_ACCOUNT_ID
from moto.ecs.models import ecs_backends
from moto.moto_api import state_manager

from binderless.aws.bootstrap import HttpBootstrap
from binderless.aws.ecr import EcrRegistry
from binderless.aws.ecs import (
    EfsMount,
    FargateTasks,
    TaskState,
    ephemeral_storage_gib,
    task_family,
)
from binderless.aws.spawner import FargateSpawner, checkout_key, pack_checkout
from binderless.backends.docker import jupyter_arguments
from binderless.backends.protocols import ImageRef, SessionHandle, SessionSpec
from binderless.errors import BinderlessError, LaunchFailed, QuotaExceeded
from tests.aws_api_rules import LIST_TASKS_FILTERS, enforce_api_rules
from tests.aws_network import session_network

ROOT = Path(__file__).resolve().parents[3]
SESSION_START = ROOT / "build-runner" / "session-start"
REGION = "us-east-1"
CLUSTER = "binderless-sessions"
LOG_GROUP = "/binderless/sessions"
BUCKET = "binderless-checkouts"
IMAGE_URI = "123456789012.dkr.ecr.us-east-1.amazonaws.com/binderless/env:0123456789abcdef0123"
# Never contacted (the bootstrap is recorded, not sent); loopback all the same.
TASK_IP = "127.0.0.125"
EXECUTION_ROLE = "arn:aws:iam::123456789012:role/execution"
TASK_ROLE = "arn:aws:iam::123456789012:role/session"


# ----- moto fixtures --------------------------------------------------------------------


@dataclass
class Aws:
    ecs: Any
    s3: Any
    logs: Any
    subnets: list[str]
    security_group: str
    execution_role: str
    task_role: str

    def tasks(self, *, client: Any = None, assign_public_ip: bool = False) -> FargateTasks:
        return FargateTasks(
            client or self.ecs, cluster=CLUSTER, subnets=self.subnets,
            security_groups=[self.security_group], execution_role_arn=self.execution_role,
            task_role_arn=self.task_role, log_group=LOG_GROUP,
            assign_public_ip=assign_public_ip)


@pytest.fixture
def aws() -> Iterator[Aws]:
    """A VPC with two private subnets, a security group, roles, a cluster and a log group,
    with moto's ECS task state frozen (``describe_tasks`` no longer advances it)."""
    with mock_aws():
        state_manager.set_transition("ecs::task", {"progression": "manual", "times": 10**9})
        try:
            network = session_network(boto3.client("ec2", region_name=REGION), REGION, 2)
            subnets, group = list(network.subnets), network.security_group
            iam = boto3.client("iam", region_name=REGION)
            trust = ('{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":'
                     '{"Service":"ecs-tasks.amazonaws.com"},"Action":"sts:AssumeRole"}]}')
            roles = [iam.create_role(RoleName=name, AssumeRolePolicyDocument=trust)["Role"]["Arn"]
                     for name in ("execution", "session")]
            ecs = enforce_api_rules(boto3.client("ecs", region_name=REGION))
            ecs.create_cluster(clusterName=CLUSTER)
            logs = boto3.client("logs", region_name=REGION)
            logs.create_log_group(logGroupName=LOG_GROUP)
            s3 = boto3.client("s3", region_name=REGION)
            s3.create_bucket(Bucket=BUCKET)
            yield Aws(ecs, s3, logs, subnets, group, roles[0], roles[1])
        finally:
            state_manager.unset_transition("ecs::task")


def moto_task(arn: str) -> Any:
    return ecs_backends[DEFAULT_ACCOUNT_ID][REGION].tasks[CLUSTER][arn]


def set_state(arn: str, status: str, *, ip: str = "", reason: str = "") -> None:
    """Put moto's task into ``status``; its ENI gets ``ip`` (none while it is set up)."""
    task = moto_task(arn)
    task.last_status = status
    if status == "STOPPED":
        task.desired_status = "STOPPED"
        task.stopped_reason = reason
    for attachment in task.attachments:
        details = [d for d in attachment["details"] if d["name"] != "privateIPv4Address"]
        if ip:
            details.append({"name": "privateIPv4Address", "value": ip})
        attachment["details"] = details


class Progression:
    """Moves the task RunTask started through ``states``, one step per DescribeTasks call.

    Each state is ``(status, ip, stop reason)``; the last one then stays.
    """

    def __init__(self, ecs: Any, states: list[tuple[str, str, str]]) -> None:
        self.states = states
        self.arn = ""
        self.describes = 0
        ecs.meta.events.register("after-call.ecs.RunTask", self._started)
        ecs.meta.events.register("before-call.ecs.DescribeTasks", self._describe)

    def _started(self, parsed: dict[str, Any], **_: Any) -> None:
        if not parsed.get("tasks"):
            return  # refused (no task definition yet): the spawner registers one, retries
        self.arn = parsed["tasks"][0]["taskArn"]
        set_state(self.arn, "PROVISIONING")  # moto starts tasks RUNNING

    def _describe(self, **_: Any) -> None:
        if self.arn:
            status, ip, reason = self.states[min(self.describes, len(self.states) - 1)]
            set_state(self.arn, status, ip=ip, reason=reason)
            self.describes += 1


class MotoObjects:
    """The ``CheckoutObjects`` protocol over moto's S3 (``aws/s3.py`` is someone else's)."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def put_file(self, key: str, path: Path) -> None:
        self.client.upload_file(str(path), BUCKET, key)

    def presigned_get(self, key: str, expires: int) -> str:
        return str(self.client.generate_presigned_url(
            "get_object", Params={"Bucket": BUCKET, "Key": key}, ExpiresIn=expires))


class MotoLogs:
    """The ``LogReader`` protocol over moto's CloudWatch Logs."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def lines(self, group: str, stream: str, token: str | None) -> tuple[list[str], str | None]:
        extra = {"nextToken": token} if token else {}
        answer = self.client.get_log_events(logGroupName=group, logStreamName=stream,
                                            startFromHead=True, limit=2, **extra)
        return [e["message"] for e in answer["events"]], answer.get("nextForwardToken")


def session_spec(home: Path, session_id: str = "0123456789abcdef") -> SessionSpec:
    return SessionSpec(
        session_id=session_id,
        image=ImageRef(key="0123456789abcdef0123", name=IMAGE_URI, location=IMAGE_URI),
        home=home, base_url=f"/user/{session_id}/", token="secret-token-value",
        environment={"BINDER_REPO_URL": "https://github.com/org/repo",
                     "BINDER_REQUEST": "v2/gh/org/repo/main"},
        start_script="binder/start",
    )


def checkout(tmp_path: Path) -> Path:
    home = tmp_path / "session" / "home"
    (home / "binder").mkdir(parents=True)
    (home / "README.md").write_text("the session's commit\n")
    (home / "binder" / "start").write_text("#!/bin/sh\nexec \"$@\"\n")
    (home / "binder" / "start").chmod(0o644)  # fetchers do not always keep the mode
    (home / "persistent").mkdir()
    (home / "persistent" / "not-shipped.txt").write_text("x")
    (home / "docs").symlink_to("binder")
    return home


class Delivered:
    """The bootstrap as the spawner sees it, recording what it would hand each task."""

    def __init__(self, answer: bool = True) -> None:
        self.answer = answer
        self.calls: list[tuple[str, dict[str, str]]] = []

    async def deliver(self, target: str, secrets: Mapping[str, str]) -> bool:
        self.calls.append((target, dict(secrets)))
        return self.answer


def spawner(aws: Aws, **kwargs: Any) -> FargateSpawner:
    kwargs.setdefault("poll_interval", 0)
    kwargs.setdefault("bootstrap", Delivered())
    return FargateSpawner(aws.tasks(), MotoObjects(aws.s3), MotoLogs(aws.logs), cpu=1024,
                          memory=4096, **kwargs)


def env_of(overrides: dict[str, Any]) -> dict[str, str]:
    container = overrides["containerOverrides"][0]
    return {pair["name"]: pair["value"] for pair in container["environment"]}


# ----- task definitions -----------------------------------------------------------------


def test_task_family_names_follow_ecs_rules() -> None:
    assert task_family("binderless-session-", "0123abcd") == "binderless-session-0123abcd"
    odd = task_family("binderless-session-", "env:1.2/x")
    assert odd.startswith("binderless-session-env-1-2-x-")
    assert odd != task_family("binderless-session-", "env-1-2-x")
    long = task_family("p-", "k" * 400)
    assert len(long) == 255
    assert long != task_family("p-", "k" * 399)
    with_efs = task_family("p-", "key", EfsMount("fs-1", "fsap-0abc"))
    assert with_efs == "p-key-fsap-0abc"
    for name in (odd, long, with_efs):
        assert all(c.isalnum() or c in "-_" for c in name)


def test_task_definition_is_registered_then_reused(aws: Aws) -> None:
    tasks = aws.tasks()
    arn = tasks.ensure_task_definition(IMAGE_URI, family="binderless-session-k", cpu=1024,
                                       memory=4096)
    assert arn.endswith(":task-definition/binderless-session-k:1")
    definition = aws.ecs.describe_task_definition(taskDefinition=arn)["taskDefinition"]
    assert definition["networkMode"] == "awsvpc"
    assert definition["requiresCompatibilities"] == ["FARGATE"]
    assert (definition["cpu"], definition["memory"]) == ("1024", "4096")
    assert (definition["executionRoleArn"], definition["taskRoleArn"]) == (
        aws.execution_role, aws.task_role)
    [container] = definition["containerDefinitions"]
    assert container["name"] == "notebook"
    assert container["image"] == IMAGE_URI
    assert container["user"] == "1000"
    assert (container["memory"], container["memoryReservation"]) == (4096, 4096)
    assert container["portMappings"] == [{"containerPort": 8888, "protocol": "tcp"}]
    assert container["logConfiguration"] == {"logDriver": "awslogs", "options": {
        "awslogs-group": LOG_GROUP, "awslogs-region": REGION,
        "awslogs-stream-prefix": "session"}}
    assert not definition.get("volumes")

    def same() -> str:
        return tasks.ensure_task_definition(IMAGE_URI, family="binderless-session-k", cpu=1024,
                                            memory=4096)
    assert same() == arn
    bigger = tasks.ensure_task_definition(IMAGE_URI, family="binderless-session-k", cpu=2048,
                                          memory=8192)
    assert bigger.endswith(":2")
    assert tasks.ensure_task_definition(IMAGE_URI + "-other", family="binderless-session-k",
                                        cpu=2048, memory=8192).endswith(":3")
    # Only the latest revision is compared: going back registers once more.
    assert same().endswith(":4")
    assert same().endswith(":4")


def test_inactive_revision_is_not_reused(aws: Aws) -> None:
    tasks = aws.tasks()
    arn = tasks.ensure_task_definition(IMAGE_URI, family="f", cpu=1024, memory=2048)
    aws.ecs.deregister_task_definition(taskDefinition=arn)
    assert tasks.ensure_task_definition(IMAGE_URI, family="f", cpu=1024,
                                        memory=2048).endswith(":2")


def test_efs_task_definition_mounts_the_access_point(aws: Aws) -> None:
    tasks = aws.tasks()
    efs = EfsMount("fs-0123456789abcdef0", "fsap-0123456789abcdef0")
    family = task_family("binderless-session-", "k", efs)
    arn = tasks.ensure_task_definition(IMAGE_URI, family=family, cpu=1024, memory=4096, efs=efs)
    definition = aws.ecs.describe_task_definition(taskDefinition=arn)["taskDefinition"]
    [volume] = definition["volumes"]
    assert volume["name"] == "persistent"
    config = volume["efsVolumeConfiguration"]
    assert config["fileSystemId"] == efs.file_system_id
    assert config["transitEncryption"] == "ENABLED"
    assert config["authorizationConfig"] == {"accessPointId": efs.access_point_id,
                                             "iam": "ENABLED"}
    assert definition["containerDefinitions"][0]["mountPoints"] == [
        {"sourceVolume": "persistent", "containerPath": "/home/jovyan/persistent",
         "readOnly": False}]
    assert tasks.ensure_task_definition(IMAGE_URI, family=family, cpu=1024, memory=4096,
                                        efs=efs) == arn
    other = EfsMount(efs.file_system_id, "fsap-0fedcba9876543210")
    assert tasks.ensure_task_definition(IMAGE_URI, family=family, cpu=1024, memory=4096,
                                        efs=other).endswith(":2")
    assert tasks.ensure_task_definition(IMAGE_URI, family=family, cpu=1024,
                                        memory=4096).endswith(":3")


def test_task_definition_errors_are_translated() -> None:
    client = boto3.client("ecs", region_name=REGION)
    tasks = FargateTasks(client, cluster=CLUSTER, subnets=["subnet-1"], security_groups=["sg-1"],
                         execution_role_arn=EXECUTION_ROLE, task_role_arn=TASK_ROLE,
                         log_group=LOG_GROUP)
    with Stubber(client) as stub:
        stub.add_client_error("describe_task_definition", "ClientException",
                              "Unable to describe task definition.")
        stub.add_client_error("register_task_definition", "AccessDeniedException",
                              "not authorized to perform: ecs:RegisterTaskDefinition")
        with pytest.raises(LaunchFailed, match="AccessDeniedException"):
            tasks.ensure_task_definition(IMAGE_URI, family="f", cpu=1024, memory=2048)
        stub.assert_no_pending_responses()


# ----- run, describe, stop --------------------------------------------------------------


def stubbed_tasks(*, assign_public_ip: bool = False) -> tuple[FargateTasks, Stubber]:
    client = enforce_api_rules(boto3.client("ecs", region_name=REGION))
    tasks = FargateTasks(client, cluster=CLUSTER, subnets=["subnet-a", "subnet-b"],
                         security_groups=["sg-1"], execution_role_arn=EXECUTION_ROLE,
                         task_role_arn=TASK_ROLE, log_group=LOG_GROUP,
                         assign_public_ip=assign_public_ip)
    return tasks, Stubber(client)


TASK_ARN = f"arn:aws:ecs:{REGION}:123456789012:task/{CLUSTER}/0123456789abcdef0123456789abcdef"
DEFINITION_ARN = f"arn:aws:ecs:{REGION}:123456789012:task-definition/binderless-session-k:1"


def run_request(token: str, public: str = "DISABLED") -> dict[str, Any]:
    return {
        "cluster": CLUSTER,
        "taskDefinition": DEFINITION_ARN,
        "count": 1,
        "launchType": "FARGATE",
        "networkConfiguration": {"awsvpcConfiguration": {
            "subnets": ["subnet-a", "subnet-b"], "securityGroups": ["sg-1"],
            "assignPublicIp": public}},
        "overrides": {"containerOverrides": [{
            "name": "notebook",
            "environment": [{"name": "A", "value": "1"}, {"name": "JUPYTER_TOKEN", "value": "t"}],
            "command": ["jupyter", "lab"],
        }]},
        "clientToken": token,
        "enableExecuteCommand": False,
        "propagateTags": "TASK_DEFINITION",
        "startedBy": "binderless",
        "tags": [{"key": "binderless:session", "value": token}],
    }


@pytest.mark.parametrize(("public", "assign"), [(False, "DISABLED"), (True, "ENABLED")])
def test_run_sends_one_idempotent_request(public: bool, assign: str) -> None:
    """The same client token twice: ECS answers with the first task (the Stubber plays
    ECS's part; moto ignores ``clientToken`` and would start a second task)."""
    tasks, stub = stubbed_tasks(assign_public_ip=public)
    answer = {"tasks": [{"taskArn": TASK_ARN, "lastStatus": "PROVISIONING"}], "failures": []}
    with stub:
        for _ in range(2):
            stub.add_response("run_task", answer, run_request("sess1", assign))
        arns = [tasks.run(DEFINITION_ARN, environment={"JUPYTER_TOKEN": "t", "A": "1"},
                          command=["jupyter", "lab"], client_token="sess1",
                          tags={"binderless:session": "sess1"}) for _ in range(2)]
        stub.assert_no_pending_responses()
    assert arns == [TASK_ARN, TASK_ARN]


def test_run_rejects_a_client_token_ecs_would_refuse() -> None:
    tasks, _ = stubbed_tasks()
    with pytest.raises(ValueError, match="64"):
        tasks.run(DEFINITION_ARN, environment={}, command=[], client_token="x" * 65)


def test_run_against_moto_records_the_overrides(aws: Aws) -> None:
    tasks = aws.tasks()
    definition = tasks.ensure_task_definition(IMAGE_URI, family="f", cpu=1024, memory=2048)
    arn = tasks.run(definition, environment={"JUPYTER_TOKEN": "t"}, command=["jupyter", "lab"],
                    client_token="sess2", tags={"binderless:session": "sess2"})
    [task] = aws.ecs.describe_tasks(cluster=CLUSTER, tasks=[arn], include=["TAGS"])["tasks"]
    assert task["launchType"] == "FARGATE"
    assert task["taskDefinitionArn"] == definition
    assert env_of(task["overrides"]) == {"JUPYTER_TOKEN": "t"}
    assert task["overrides"]["containerOverrides"][0]["command"] == ["jupyter", "lab"]
    assert {"key": "binderless:session", "value": "sess2"} in task["tags"]
    eni = moto_task(arn).network_configuration["awsvpcConfiguration"]
    assert eni == {"subnets": aws.subnets, "securityGroups": [aws.security_group],
                   "assignPublicIp": "DISABLED"}


@pytest.mark.parametrize(("error", "failure", "expected", "words"), [
    (("ClientException", "Capacity is unavailable at this time. Please try again later or in "
                         "a different availability zone"), None, LaunchFailed, "no Fargate capacity"),
    (None, "You've reached the limit on the number of tasks you can run concurrently",
     QuotaExceeded, "at its limit"),
    (None, "You’ve reached the limit on the number of vCPUs you can run concurrently",
     QuotaExceeded, "at its limit"),
    (("ThrottlingException", "Rate exceeded"), None, QuotaExceeded, "at its limit"),
    (None, "RESOURCE:MEMORY", LaunchFailed, "no Fargate capacity"),
    (("AccessDeniedException", "not authorized to perform: ecs:RunTask"), None, LaunchFailed,
     "did not start"),
    (None, "MISSING", LaunchFailed, "did not start the session's Fargate task: MISSING"),
])
def test_run_translates_refusals(error: tuple[str, str] | None, failure: str | None,
                                 expected: type[BinderlessError], words: str) -> None:
    tasks, stub = stubbed_tasks()
    with stub:
        if error:
            stub.add_client_error("run_task", error[0], error[1], http_status_code=400)
        else:
            stub.add_response("run_task", {"tasks": [], "failures": [
                {"arn": DEFINITION_ARN, "reason": failure}]})
        with pytest.raises(expected) as caught:
            tasks.run(DEFINITION_ARN, environment={}, command=["jupyter"], client_token="s")
    assert words in str(caught.value)
    said = error[1] if error else failure
    assert said and said in caught.value.user_message()  # tells what AWS said


def test_describe_and_stop(aws: Aws) -> None:
    tasks = aws.tasks()
    definition = tasks.ensure_task_definition(IMAGE_URI, family="f", cpu=1024, memory=2048)
    arn = tasks.run(definition, environment={}, command=["jupyter"], client_token="s3")
    set_state(arn, "RUNNING", ip=TASK_IP)
    state = tasks.describe(arn)
    assert state == TaskState("RUNNING", "RUNNING", private_ip=TASK_IP, exit_code=0)
    assert not state.stopping
    tasks.stop(arn, "culled")
    stopped = tasks.describe(arn)
    assert (stopped.last_status, stopped.desired_status) == ("STOPPED", "STOPPED")
    assert stopped.stopped_reason == "culled"
    assert stopped.stopping
    tasks.stop(arn, "again")  # stopping a stopped task is fine
    gone = tasks.describe(f"arn:aws:ecs:{REGION}:123456789012:task/{CLUSTER}/unknown")
    assert gone.stopping and "no record" in gone.stopped_reason


def test_describe_reads_the_container_reason() -> None:
    tasks, stub = stubbed_tasks()
    with stub:
        stub.add_response("describe_tasks", {"tasks": [{
            "taskArn": TASK_ARN, "lastStatus": "STOPPED", "desiredStatus": "STOPPED",
            "stoppedReason": "Task failed to start",
            "containers": [{"name": "notebook", "exitCode": 1,
                            "reason": "CannotPullContainerError: pull access denied"}],
            "attachments": [{"type": "ElasticNetworkInterface", "details": []}],
        }], "failures": []}, {"cluster": CLUSTER, "tasks": [TASK_ARN]})
        state = tasks.describe(TASK_ARN)
    assert state == TaskState(
        "STOPPED", "STOPPED", private_ip="", exit_code=1,
        stopped_reason="Task failed to start: CannotPullContainerError: pull access denied")


def test_stop_of_a_task_ecs_forgot_is_fine_other_errors_are_not() -> None:
    tasks, stub = stubbed_tasks()
    with stub:
        stub.add_client_error("stop_task", "InvalidParameterException",
                              "The referenced task was not found.",
                              expected_params={"cluster": CLUSTER, "task": TASK_ARN,
                                               "reason": "bye"})
        tasks.stop(TASK_ARN, "bye")
        stub.add_client_error("stop_task", "AccessDeniedException", "no", http_status_code=403)
        with pytest.raises(LaunchFailed, match="AccessDeniedException"):
            tasks.stop(TASK_ARN, "bye")


# ----- the tasks binderless started (reconcile, resumed launches) -----------------------


def described(arn: str, session: str, desired: str = "RUNNING") -> dict[str, Any]:
    return {"taskArn": arn, "lastStatus": "RUNNING", "desiredStatus": desired,
            "tags": [{"key": "binderless:session", "value": session}]}


def test_session_tasks_lists_with_started_by_as_its_only_filter() -> None:
    """ListTasks with startedBy takes no other filter on AWS (moto takes any): the request
    is exactly the cluster and startedBy, paged; stopping tasks are dropped afterwards."""
    tasks, stub = stubbed_tasks()
    other = TASK_ARN[:-1] + "0"
    with stub:
        stub.add_response("list_tasks", {"taskArns": [TASK_ARN], "nextToken": "page2"},
                          {"cluster": CLUSTER, "startedBy": "binderless"})
        stub.add_response("list_tasks", {"taskArns": [other]},
                          {"cluster": CLUSTER, "startedBy": "binderless", "nextToken": "page2"})
        stub.add_response("describe_tasks", {"tasks": [
            described(TASK_ARN, "s-running"), described(other, "s-stopping", "STOPPED")],
            "failures": []}, {"cluster": CLUSTER, "tasks": [TASK_ARN, other], "include": ["TAGS"]})
        assert tasks.session_tasks() == {"s-running": TASK_ARN}
        stub.assert_no_pending_responses()


@pytest.mark.parametrize("extra", LIST_TASKS_FILTERS)
def test_the_api_rules_refuse_started_by_with_another_filter(extra: str) -> None:
    """The rule hook the tests put on ECS clients answers as AWS does: the request
    binderless used to send (startedBy with desiredStatus) fails there."""
    client = enforce_api_rules(boto3.client("ecs", region_name=REGION))
    with Stubber(client) as stub, pytest.raises(ClientError, match="only filter") as caught:
        stub.add_response("list_tasks", {"taskArns": []})  # (never reached: no network)
        client.list_tasks(cluster=CLUSTER, startedBy="binderless", **{extra: {
            "desiredStatus": "RUNNING", "launchType": "FARGATE"}.get(extra, "x")})
    assert caught.value.response["Error"]["Code"] == "InvalidParameterException"


def test_session_tasks_on_moto_with_the_real_rules(aws: Aws) -> None:
    tasks = aws.tasks()
    definition = tasks.ensure_task_definition(IMAGE_URI, family="f", cpu=1024, memory=2048)
    kept = tasks.run(definition, environment={}, command=["jupyter"], client_token="a",
                     tags={"binderless:session": "s-kept"})
    ended = tasks.run(definition, environment={}, command=["jupyter"], client_token="b",
                      tags={"binderless:session": "s-ended"})
    tasks.stop(ended, "culled")
    assert tasks.session_tasks() == {"s-kept": kept}


# ----- the spawner ----------------------------------------------------------------------


def test_spawner_starts_a_task_and_returns_its_address(aws: Aws, tmp_path: Path) -> None:
    spec = session_spec(checkout(tmp_path))
    progression = Progression(aws.ecs, [
        ("PROVISIONING", "", ""), ("PROVISIONING", "", ""), ("PENDING", "", ""),
        ("PENDING", "", ""), ("RUNNING", TASK_IP, "")])
    lines: list[str] = []
    fargate = spawner(aws)
    handle = asyncio.run(fargate.start(spec, lines.append))

    assert handle == SessionHandle(spec.session_id, f"http://{TASK_IP}:8888", progression.arn)
    task_id = progression.arn.rsplit("/", 1)[-1]
    assert lines == [
        "Uploading the repository for the session...\n",
        f"Started Fargate task {task_id} (1 vCPU, 4 GB) of {IMAGE_URI}\n",
        "Waiting for capacity...\n",
        "Pulling the image...\n",
        f"Task running at {TASK_IP}\n",
    ]
    [task] = aws.ecs.describe_tasks(cluster=CLUSTER, tasks=[handle.backend_id],
                                    include=["TAGS"])["tasks"]
    env = env_of(task["overrides"])
    # The session names its own start script (images are shared across commits). The
    # token and the checkout's URL are not in RunTask (DescribeTasks shows overrides to
    # anyone allowed to call it): the task gets the token's hash, and both once it runs.
    entrypoint = f"/home/jovyan/{spec.start_script}" if spec.start_script else ""
    assert env == {"R2D_ENTRYPOINT": entrypoint, **spec.environment,
                   "BINDERLESS_BOOTSTRAP": "0.0.0.0:8888",
                   "BINDERLESS_TOKEN_SHA256": hashlib.sha256(spec.token.encode()).hexdigest()}
    [(target, secrets)] = fargate.bootstrap.calls  # type: ignore[attr-defined]
    assert target == f"http://{TASK_IP}:8888"
    assert secrets["token"] == spec.token
    url = secrets["checkout_url"]
    assert url.startswith(f"https://{BUCKET}.s3.amazonaws.com/checkouts/{spec.session_id}.tar.gz?")
    everything = json.dumps([task, aws.ecs.describe_task_definition(
        taskDefinition=task["taskDefinitionArn"])], default=str)
    assert spec.token not in everything and "X-Amz-Signature" not in everything
    assert "checkouts/" not in everything
    command = task["overrides"]["containerOverrides"][0]["command"]
    assert command == jupyter_arguments(spec)  # the docker spawner's command line
    assert command[:2] == ["jupyter", "lab"]
    assert {"--ip=0.0.0.0", "--port=8888", "--no-browser", "--ServerApp.allow_origin=*",
            f"--ServerApp.base_url={spec.base_url}", "--ServerApp.allow_remote_access=True",
            "--ServerApp.trust_xheaders=True"} <= set(command)
    assert not any(spec.token in arg for arg in command)
    assert {"key": "binderless:session", "value": spec.session_id} in task["tags"]
    definition = aws.ecs.describe_task_definition(
        taskDefinition=task["taskDefinitionArn"])["taskDefinition"]
    assert definition["family"] == fargate.task_definition(spec.image)[0]
    assert definition["family"].startswith(f"binderless-session-{spec.image.key}-")
    assert definition["containerDefinitions"][0]["image"] == IMAGE_URI

    body = aws.s3.get_object(Bucket=BUCKET, Key=checkout_key(spec.session_id))["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(body), mode="r:gz") as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert set(members) == {"README.md", "binder", "binder/start", "docs"}
    assert members["binder/start"].mode & 0o111 == 0o111
    assert members["docs"].issym() and members["docs"].linkname == "binder"
    assert {(m.uid, m.gid) for m in members.values()} == {(1000, 1000)}
    assert not list(Path(tempfile.gettempdir()).glob(f"binderless-{spec.session_id}-*"))

    assert asyncio.run(fargate.alive(handle)) is True
    asyncio.run(fargate.stop(handle))
    assert moto_task(handle.backend_id).desired_status == "STOPPED"
    assert asyncio.run(fargate.alive(handle)) is False
    asyncio.run(fargate.stop(handle))  # already stopped: fine


def test_spawner_reports_a_task_that_stops_before_running(aws: Aws, tmp_path: Path) -> None:
    spec = session_spec(checkout(tmp_path))
    reason = "CannotPullContainerError: pull image manifest has been retried 5 time(s)"
    progression = Progression(aws.ecs, [("PROVISIONING", "", ""), ("PENDING", "", ""),
                                        ("STOPPED", "", reason)])
    lines: list[str] = []
    with pytest.raises(LaunchFailed, match="stopped before it ran") as caught:
        asyncio.run(spawner(aws).start(spec, lines.append))
    assert reason in str(caught.value)
    assert "Pulling the image...\n" in lines
    assert moto_task(progression.arn).desired_status == "STOPPED"


def test_spawner_stops_a_task_that_does_not_start_in_time(aws: Aws, tmp_path: Path) -> None:
    spec = session_spec(checkout(tmp_path))
    progression = Progression(aws.ecs, [("PROVISIONING", "", "")])
    with pytest.raises(LaunchFailed, match=r"did not start within 0\.2 seconds"):
        asyncio.run(spawner(aws, start_timeout=0.2, poll_interval=0.01).start(spec, print))
    task = moto_task(progression.arn)
    assert (task.desired_status, task.stopped_reason) == (
        "STOPPED", "binderless: did not start in time")


# ----- ephemeral storage sized from the image ----------------------------------------------

GIB = 1024 ** 3


@pytest.mark.parametrize(("compressed", "gib"), [
    (None, None), (0, None),
    (1 * GIB, None),          # 3 GiB unpacked + 5 to work: Fargate's free 20 GiB
    (5 * GIB, None),          # 15 + 5 = 20: still fits
    (5 * GIB + 1, 21),        # just over: the least Fargate accepts above the default
    (10 * GIB, 35),
    (100 * GIB, 200),         # more than Fargate gives: its most, and the pull says why
])
def test_ephemeral_storage_follows_the_image_size(compressed: int | None,
                                                  gib: int | None) -> None:
    assert ephemeral_storage_gib(compressed) == gib


class Sizes:
    def __init__(self, size: int | None) -> None:
        self.size = size
        self.asked: list[str] = []

    def size_bytes(self, image_uri: str) -> int | None:
        self.asked.append(image_uri)
        return self.size


def test_a_large_image_gets_the_ephemeral_storage_it_needs(aws: Aws, tmp_path: Path) -> None:
    """RegisterTaskDefinition goes to moto with AWS's 21-200 GiB rule enforced."""
    sizes = Sizes(12 * GIB)
    fargate = spawner(aws, image_sizes=sizes)
    Progression(aws.ecs, [("RUNNING", TASK_IP, "")])
    handle = asyncio.run(fargate.start(session_spec(checkout(tmp_path)), print))
    [task] = aws.ecs.describe_tasks(cluster=CLUSTER, tasks=[handle.backend_id])["tasks"]
    definition = aws.ecs.describe_task_definition(
        taskDefinition=task["taskDefinitionArn"])["taskDefinition"]
    assert definition["ephemeralStorage"] == {"sizeInGiB": 41}
    small = fargate.task_definition(session_spec(tmp_path).image)[1]
    assert "ephemeralStorage" not in small  # the family differs from the large one's
    asyncio.run(fargate.prepare(session_spec(tmp_path).image))  # sized once per image
    assert sizes.asked == [IMAGE_URI]


def test_an_unknown_size_keeps_the_default_storage(aws: Aws, tmp_path: Path) -> None:
    class Broken:
        def size_bytes(self, image_uri: str) -> int | None:
            raise RuntimeError("registry down")

    fargate = spawner(aws, image_sizes=Broken())
    assert fargate.ephemeral_gib(session_spec(tmp_path).image) is None


def test_the_registry_reports_image_sizes(aws: Aws) -> None:
    ecr = boto3.client("ecr", region_name=REGION)
    ecr.create_repository(repositoryName="binderless/env")
    manifest = ('{"schemaVersion": 2, "mediaType": '
                '"application/vnd.docker.distribution.manifest.v2+json", "config": {"size": 7, '
                '"digest": "sha256:' + "a" * 64 + '", "mediaType": '
                '"application/vnd.docker.container.image.v1+json"}, "layers": [{"size": '
                '3000000000, "digest": "sha256:' + "b" * 64 + '", "mediaType": '
                '"application/vnd.docker.image.rootfs.diff.tar.gzip"}]}')
    ecr.put_image(repositoryName="binderless/env", imageManifest=manifest,
                  imageTag="0123456789abcdef0123")
    registry = EcrRegistry(ecr, registry_uri=IMAGE_URI.split("/")[0],
                           repository="binderless/env")
    size = registry.size_bytes(IMAGE_URI)
    assert size is not None and size > 0
    assert registry.size_bytes(IMAGE_URI.replace(":0123", ":9999")) is None  # no such tag
    assert registry.size_bytes("elsewhere.example/other:tag") is None


def test_spawner_refuses_an_image_of_the_uv_builder(tmp_path: Path) -> None:
    tasks, stub = stubbed_tasks()
    spec = dataclasses.replace(session_spec(checkout(tmp_path)),
                               image=ImageRef("k", "k", "/srv/envs/k"))
    with stub, pytest.raises(LaunchFailed, match="uv builder"):  # and no AWS call
        asyncio.run(FargateSpawner(tasks, MotoObjects(None), MotoLogs(None)).start(spec, print))


def test_capacity_refusal_reaches_the_caller_and_starts_nothing(aws: Aws,
                                                                tmp_path: Path) -> None:
    client = boto3.client("ecs", region_name=REGION)
    fargate = FargateSpawner(aws.tasks(client=client), MotoObjects(aws.s3), MotoLogs(aws.logs),
                             poll_interval=0, bootstrap=Delivered())
    spec = session_spec(checkout(tmp_path))
    with Stubber(client) as stub:
        stub.add_response("run_task", {"tasks": [], "failures": [{
            "reason": "You've reached the limit on the number of tasks you can run "
                      "concurrently"}]})
        with pytest.raises(QuotaExceeded):
            asyncio.run(fargate.start(spec, print))
        stub.assert_no_pending_responses()


def test_alive_counts_an_unanswered_question_as_alive() -> None:
    tasks, stub = stubbed_tasks()
    fargate = FargateSpawner(tasks, MotoObjects(None), MotoLogs(None))
    handle = SessionHandle("s", "http://10.0.1.25:8888", TASK_ARN)
    with stub:
        stub.add_client_error("describe_tasks", "ServerException", "internal error",
                              http_status_code=500)
        assert asyncio.run(fargate.alive(handle)) is True
        stub.add_response("describe_tasks", {"tasks": [
            {"taskArn": TASK_ARN, "lastStatus": "PENDING", "desiredStatus": "RUNNING"}]})
        assert asyncio.run(fargate.alive(handle)) is True
        stub.add_response("describe_tasks", {"tasks": [
            {"taskArn": TASK_ARN, "lastStatus": "RUNNING", "desiredStatus": "STOPPED"}]})
        assert asyncio.run(fargate.alive(handle)) is False
    assert asyncio.run(fargate.alive(SessionHandle("s", "", ""))) is False


def test_tail_reads_the_task_log_stream(aws: Aws) -> None:
    fargate = spawner(aws)
    task_id = "0123456789abcdef0123456789abcdef"
    handle = SessionHandle("s", "", f"arn:aws:ecs:{REGION}:123456789012:task/{CLUSTER}/{task_id}")
    assert asyncio.run(fargate.tail(handle)) == []  # no stream yet: nothing, no error
    stream = f"session/notebook/{task_id}"
    aws.logs.create_log_stream(logGroupName=LOG_GROUP, logStreamName=stream)
    now = int(time.time() * 1000)
    aws.logs.put_log_events(logGroupName=LOG_GROUP, logStreamName=stream, logEvents=[
        {"timestamp": now + i, "message": f"line {i}"} for i in range(7)])
    assert asyncio.run(fargate.tail(handle, lines=3)) == ["line 4", "line 5", "line 6"]
    assert asyncio.run(fargate.tail(handle)) == [f"line {i}" for i in range(7)]


# ----- session-start --------------------------------------------------------------------


class _Files(http.server.BaseHTTPRequestHandler):
    files: ClassVar[dict[str, bytes]] = {}

    def do_GET(self) -> None:
        body = self.files.get(self.path.split("?", 1)[0])
        self.send_response(200 if body is not None else 403)
        self.send_header("Content-Length", str(len(body or b"")))
        self.end_headers()
        self.wfile.write(body or b"")

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def http_files() -> Iterator[Callable[[dict[str, bytes]], str]]:
    """Serve ``{path: bytes}`` on 127.0.0.1; returns the base URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Files)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    def serve(files: dict[str, bytes]) -> str:
        _Files.files = files
        return f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield serve
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
        _Files.files = {}


def run_session_start(home: Path, url: str | None, *command: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "HOME": str(home)}  # and no proxy settings: only 127.0.0.1 is contacted
    if url is not None:
        env["BINDERLESS_CHECKOUT_URL"] = url
    return subprocess.run(["sh", str(SESSION_START), *command], cwd=home, env=env,
                          capture_output=True, text=True, timeout=60, check=False)


def image_home(tmp_path: Path) -> Path:
    """A home as the image has it: another commit's files and the user's persistent data."""
    home = tmp_path / "jovyan"
    (home / "persistent").mkdir(parents=True)
    (home / "persistent" / "notes.txt").write_text("mine\n")
    (home / "README.md").write_text("the image's commit\n")
    (home / "image-only.txt").write_text("from the build\n")
    (home / "sneaky").symlink_to("persistent")
    return home


def hostile_entries(tar: tarfile.TarFile) -> None:
    def add(name: str, data: bytes = b"bad\n", link: str = "") -> None:
        info = tarfile.TarInfo(name)
        if link:
            info.type, info.linkname = tarfile.SYMTYPE, link
            tar.addfile(info)
        else:
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    add("../escape.txt")
    add("/absolute.txt")
    add("persistent/notes.txt", b"overwritten\n")
    add("sneaky/through-link.txt")
    add("out", link="../../outside")
    add("abs", link="/etc/passwd")


def test_session_start_unpacks_the_checkout_then_runs_the_command(
        tmp_path: Path, http_files: Callable[[dict[str, bytes]], str]) -> None:
    source = checkout(tmp_path)
    tarball = tmp_path / "checkout.tar.gz"
    pack_checkout(source, tarball, start_script="binder/start")
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        with tarfile.open(tarball, "r:gz") as packed:
            for member in packed.getmembers():
                tar.addfile(member, packed.extractfile(member) if member.isreg() else None)
        hostile_entries(tar)
    base = http_files({"/checkout.tar.gz": gzip.compress(raw.getvalue())})
    home = image_home(tmp_path)

    done = run_session_start(home, f"{base}/checkout.tar.gz?X-Amz-Signature=abc",
                             "sh", "-c", "ls > listing.txt")

    assert done.returncode == 0, done.stderr
    assert (home / "listing.txt").read_text().split() == sorted(
        ["README.md", "binder", "docs", "image-only.txt", "listing.txt", "persistent",
         "sneaky"])
    assert (home / "README.md").read_text() == "the session's commit\n"
    assert (home / "image-only.txt").read_text() == "from the build\n"
    assert os.access(home / "binder" / "start", os.X_OK)
    assert (home / "docs").is_symlink() and os.readlink(home / "docs") == "binder"
    assert sorted(p.name for p in (home / "persistent").iterdir()) == ["notes.txt"]
    assert (home / "persistent" / "notes.txt").read_text() == "mine\n"
    assert not (tmp_path / "escape.txt").exists()
    assert not (home / "out").exists() and not (home / "abs").exists()
    assert "skipped 5 unsafe entries" in done.stderr


def test_session_start_still_starts_when_the_download_fails(
        tmp_path: Path, http_files: Callable[[dict[str, bytes]], str]) -> None:
    base = http_files({})
    home = image_home(tmp_path)
    done = run_session_start(
        home, f"{base}/expired.tar.gz", "sh", "-c",
        'ls > listing.txt; echo "${BINDERLESS_CHECKOUT_URL-unset}" > url.txt')
    assert done.returncode == 0
    assert "could not unpack the session's checkout (HTTPError: HTTP Error 403" in done.stderr
    assert "starting the session anyway" in done.stderr
    assert "README.md" in (home / "listing.txt").read_text()
    assert (home / "README.md").read_text() == "the image's commit\n"
    assert (home / "url.txt").read_text() == "unset\n"  # not passed on to Jupyter


def test_session_start_without_a_checkout_just_runs_the_command(tmp_path: Path) -> None:
    home = image_home(tmp_path)
    done = run_session_start(home, None, "sh", "-c", 'echo "$0 $1" > args.txt', "a b", "c")
    assert done.returncode == 0 and done.stderr == ""
    assert (home / "args.txt").read_text() == "a b c\n"
    failed = run_session_start(home, None, "sh", "-c", "exit 3")
    assert failed.returncode == 3  # exec: the command's status is the container's


def test_a_prepared_image_starts_with_one_call_and_a_deregistered_one_registers_again(
        aws: Aws, tmp_path: Path) -> None:
    calls: list[str] = []
    aws.ecs.meta.events.register("before-call.ecs.*",
                                 lambda model, **_: calls.append(model.name))
    Progression(aws.ecs, [("RUNNING", TASK_IP, "")])
    spec = session_spec(checkout(tmp_path))
    fargate = spawner(aws)
    asyncio.run(fargate.prepare(spec.image))
    assert calls == ["RegisterTaskDefinition"]
    calls.clear()
    asyncio.run(fargate.start(spec, lambda _line: None))
    assert calls == ["RunTask", "DescribeTasks"]

    # Other settings are another definition: its family differs, so no revision of the
    # first can be started with the second's settings; one never prepared is registered
    # by its first start.
    bigger = FargateSpawner(aws.tasks(), MotoObjects(aws.s3), MotoLogs(aws.logs), cpu=2048,
                            memory=4096, poll_interval=0, bootstrap=Delivered())
    assert bigger.task_definition(spec.image)[0] != fargate.task_definition(spec.image)[0]
    calls.clear()
    handle = asyncio.run(bigger.start(session_spec(checkout(tmp_path / "2"), "fedcba9876543210"),
                                      lambda _line: None))
    assert calls == ["RunTask", "RegisterTaskDefinition", "RunTask", "DescribeTasks"]
    assert handle.target == f"http://{TASK_IP}:8888"


@pytest.mark.parametrize("message", ["TaskDefinition not found.", "TaskDefinition is inactive",
                                     "Unable to describe task definition."])
def test_a_missing_or_deregistered_definition_is_registered_again(message: str, aws: Aws,
                                                                  tmp_path: Path) -> None:
    tasks, stub = stubbed_tasks()
    fargate = FargateSpawner(tasks, MotoObjects(aws.s3), MotoLogs(None), poll_interval=0,
                             bootstrap=Delivered())
    running = {"taskArn": TASK_ARN, "lastStatus": "RUNNING", "desiredStatus": "RUNNING",
               "attachments": [{"type": "ElasticNetworkInterface", "details": [
                   {"name": "privateIPv4Address", "value": TASK_IP}]}]}
    with stub:
        stub.add_client_error("run_task", "ClientException", message)
        stub.add_response("register_task_definition",
                          {"taskDefinition": {"taskDefinitionArn": DEFINITION_ARN}})
        stub.add_response("run_task", {"tasks": [running]})
        stub.add_response("describe_tasks", {"tasks": [running]})
        handle = asyncio.run(fargate.start(session_spec(checkout(tmp_path)), lambda _line: None))
        stub.assert_no_pending_responses()
    assert handle.backend_id == TASK_ARN


# ----- the bootstrap: the token and the checkout's URL never travel in RunTask ----------


def bootstrap_env(home: Path, port: int, token: str, **extra: str) -> dict[str, str]:
    return {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            "HOME": str(home), "BINDERLESS_BOOTSTRAP": f"127.0.0.1:{port}",
            "BINDERLESS_TOKEN_SHA256": hashlib.sha256(token.encode()).hexdigest(), **extra}


def free_loopback_port() -> int:
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


REPORT = ('echo "$JUPYTER_TOKEN" > token.txt; '
          'echo "${BINDERLESS_CHECKOUT_URL-unset} ${BINDERLESS_TOKEN_SHA256-unset}" > rest.txt')


def test_session_start_takes_its_key_from_the_gateway_only(
        tmp_path: Path, http_files: Callable[[dict[str, bytes]], str]) -> None:
    """The task's listener refuses a token other than the one RunTask named by its hash,
    takes the right one with the checkout's URL, then runs the command with the token."""
    tarball = tmp_path / "checkout.tar.gz"
    pack_checkout(checkout(tmp_path), tarball, start_script="binder/start")
    base = http_files({"/checkout.tar.gz": tarball.read_bytes()})
    home = image_home(tmp_path)
    port = free_loopback_port()
    token = "a" * 64
    proc = subprocess.Popen(["sh", str(SESSION_START), "sh", "-c", REPORT], cwd=home,
                            env=bootstrap_env(home, port, token), stderr=subprocess.PIPE,
                            text=True)
    try:
        bootstrap = HttpBootstrap(retry_seconds=0.05)
        target = f"http://127.0.0.1:{port}"
        with pytest.raises(LaunchFailed, match="refused the key"):
            asyncio.run(asyncio.wait_for(bootstrap.deliver(
                target, {"token": "b" * 64, "checkout_url": f"{base}/evil.tar.gz"}), 20))
        assert asyncio.run(asyncio.wait_for(bootstrap.deliver(
            target, {"token": token, "checkout_url": f"{base}/checkout.tar.gz"}), 20)) is True
        _, stderr = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr
    assert "refused a key that is not this session's" in stderr
    assert (home / "token.txt").read_text() == token + "\n"
    assert (home / "rest.txt").read_text() == "unset unset\n"  # neither reaches Jupyter
    assert (home / "README.md").read_text() == "the session's commit\n"  # the checkout


def test_session_start_never_starts_jupyter_without_its_key(tmp_path: Path) -> None:
    home = image_home(tmp_path)
    port = free_loopback_port()
    # The gateway never comes: the task stops, the command never runs.
    env = bootstrap_env(home, port, "t", BINDERLESS_BOOTSTRAP_TIMEOUT="0.3")
    done = subprocess.run(["sh", str(SESSION_START), "sh", "-c", REPORT], cwd=home, env=env,
                          capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 1
    assert "did not hand this session its key" in done.stderr
    assert not (home / "token.txt").exists()
    # No hash to check a key against: nothing is accepted, nothing runs.
    env["BINDERLESS_TOKEN_SHA256"] = ""
    done = subprocess.run(["sh", str(SESSION_START), "sh", "-c", REPORT], cwd=home, env=env,
                          capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 1 and "not a SHA-256" in done.stderr
    assert not (home / "token.txt").exists()


def test_a_task_that_serves_jupyter_already_is_not_bootstrapped_again(
        http_files: Callable[[dict[str, bytes]], str]) -> None:
    """A launch resumed by another gateway: Jupyter (no listener's marker) answers."""
    base = http_files({})
    assert asyncio.run(asyncio.wait_for(HttpBootstrap().deliver(
        base, {"token": "t", "checkout_url": ""}), 20)) is False
