"""ECS Fargate tasks for sessions: task definitions, RunTask, DescribeTasks, StopTask.

One task runs one session: a single container named ``notebook`` listening on port 8888
inside the task's own network interface in a private subnet, logging to CloudWatch Logs
under ``session/notebook/<task id>``. RunTask cannot override volumes, so a persistent
home (an EFS access point) needs a task-definition revision of its own; ``task_family``
gives each environment, and each persistent user of it, a family of its own.

Vendor errors become ``LaunchFailed`` or ``QuotaExceeded`` here, with ``raise ... from exc``.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import BinderlessError, LaunchFailed, QuotaExceeded
from ._errors import error_code

__all__ = [
    "CONTAINER_NAME",
    "CONTAINER_USER",
    "PERSISTENT_PATH",
    "SESSION_TAG",
    "STARTED_BY",
    "EfsMount",
    "FargateTasks",
    "TaskDefinitionMissing",
    "TaskState",
    "definition_digest",
    "ephemeral_storage_gib",
    "task_family",
]

CONTAINER_NAME = "notebook"
#: repo2docker's default user (``jovyan``), also the owner of EFS access points.
CONTAINER_USER = "1000"
PERSISTENT_PATH = "/home/jovyan/persistent"
PERSISTENT_VOLUME = "persistent"
LOG_STREAM_PREFIX = "session"
#: Seconds between StopTask's SIGTERM and SIGKILL: the most Fargate allows.
STOP_TIMEOUT_SECONDS = 120
#: ECS task-definition family names: letters, digits, ``-`` and ``_``, at most 255.
_FAMILY_CHARS = re.compile(r"[^A-Za-z0-9_-]")
_FAMILY_MAX = 255
#: RunTask accepts client tokens of at most 64 characters.
_CLIENT_TOKEN_MAX = 64
_DESCRIBE_MAX = 100
#: The tag naming the session a task serves.
SESSION_TAG = "binderless:session"
#: RunTask's ``startedBy`` of every session task (ListTasks finds them by it).
STARTED_BY = "binderless"

#: Words of ECS answers meaning the account hit a limit: a quota, not a fault.
_LIMIT_MARKERS = ("reached the limit", "limit exceeded", "rate exceeded", "too many")
#: Words of ECS answers meaning AWS has no room for the task just now.
_CAPACITY_MARKERS = ("capacity is unavailable", "insufficient capacity", "resource:")
_THROTTLED_CODES = {"ThrottlingException", "Throttling", "TooManyRequestsException",
                    "LimitExceededException", "RequestLimitExceeded"}
_TRY_LATER = "Try again in a few minutes."


#: Fargate's ephemeral storage: 20 GiB unless the task definition asks for 21 to 200.
#: It holds the unpacked image layers as well as what the session writes.
EPHEMERAL_DEFAULT_GIB = 20
EPHEMERAL_MAX_GIB = 200
#: An image unpacks to about this many times its compressed size in ECR (repo2docker's
#: conda and pip layers compress about 3:1).
UNPACKED_RATIO = 3.0
#: Room left for the session's own files beyond the unpacked image.
WORK_SPACE_GIB = 5.0
_GIB = 1024 ** 3


def ephemeral_storage_gib(compressed_bytes: int | None) -> int | None:
    """The ``ephemeralStorage.sizeInGiB`` a task of an image this large needs: ``None``
    (Fargate's free 20 GiB) when that holds the unpacked image and some room to work, else
    enough for both, at least 21 and at most 200 (an image too large for 200 GiB still
    gets 200: the pull fails with a message naming the space)."""
    if not compressed_bytes or compressed_bytes <= 0:
        return None
    needed = compressed_bytes * UNPACKED_RATIO / _GIB + WORK_SPACE_GIB
    if needed <= EPHEMERAL_DEFAULT_GIB:
        return None
    return min(EPHEMERAL_MAX_GIB, max(EPHEMERAL_DEFAULT_GIB + 1, math.ceil(needed)))


@dataclass(frozen=True)
class EfsMount:
    """A persistent home: an EFS file system, the user's access point on it, and the
    user's own role, which may mount through that access point only (``aws/iam.py``)."""

    file_system_id: str
    access_point_id: str
    task_role_arn: str = ""


@dataclass(frozen=True)
class TaskState:
    """What ECS says about one task (``private_ip`` is empty until its ENI has an address)."""

    last_status: str
    desired_status: str
    private_ip: str = ""
    stopped_reason: str = ""
    exit_code: int | None = None

    @property
    def stopping(self) -> bool:
        """Stopped, or on its way there (nothing brings such a task back)."""
        return self.desired_status == "STOPPED" or self.last_status in (
            "DEACTIVATING", "STOPPING", "DEPROVISIONING", "STOPPED", "DELETED")


def task_family(prefix: str, key: str, efs: EfsMount | None = None) -> str:
    """A valid ECS family name for ``prefix`` + ``key`` (+ the access point with ``efs``).

    Characters ECS does not allow become ``-``; when that (or shortening to 255
    characters) changed the name, a hash of the original keeps distinct keys distinct.
    """
    raw = prefix + key + (f"-{efs.access_point_id}" if efs else "")
    name = _FAMILY_CHARS.sub("-", raw)
    if name == raw and len(name) <= _FAMILY_MAX:
        return name
    digest = hashlib.sha256(raw.encode()).hexdigest()[:12]
    return f"{name[:_FAMILY_MAX - len(digest) - 1]}-{digest}"


def _pairs(values: Mapping[str, str]) -> list[dict[str, str]]:
    return [{"name": k, "value": v} for k, v in sorted(values.items())]


def _tags(values: Mapping[str, str]) -> list[dict[str, str]]:
    return [{"key": k, "value": v} for k, v in sorted(values.items())]


def _message(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Message", "")) or str(exc)
    return str(exc)


def _translate(reason: str, *, code: str = "") -> BinderlessError:
    """A RunTask refusal (error message or ``failures`` reason) as the error users see."""
    text = reason.lower()
    if code in _THROTTLED_CODES or any(m in text for m in _LIMIT_MARKERS):
        return QuotaExceeded(
            "The cloud account running binderless is at its limit of Fargate tasks.",
            hint=f"{_TRY_LATER} (AWS said: {reason})")
    if any(m in text for m in _CAPACITY_MARKERS):
        return LaunchFailed(
            "AWS has no Fargate capacity for this session just now.",
            hint=f"{_TRY_LATER} (AWS said: {reason})")
    return LaunchFailed(f"AWS did not start the session's Fargate task: {reason}",
                        hint="The operator should check the cluster, subnets, roles and "
                             "task definition binderless uses.")


def _from_aws(exc: BaseException) -> bool:
    """Whether ``exc`` is botocore's: an AWS error answer, or no answer at all."""
    return bool(error_code(exc)) or any(
        cls.__module__.startswith("botocore") for cls in type(exc).__mro__)


def _client_failure(action: str, exc: BaseException) -> LaunchFailed:
    code = error_code(exc)
    return LaunchFailed(f"Could not {action}: {code or type(exc).__name__}: {_message(exc)}",
                        hint="The operator should check the ECS permissions and settings "
                             "of binderless.")



class TaskDefinitionMissing(LaunchFailed):
    """RunTask named a family with no ACTIVE revision (never registered, or deregistered)."""


def definition_digest(request: Mapping[str, Any]) -> str:
    """A short hash of what a task definition request runs (not its family name): two
    requests with the same digest are interchangeable."""
    text = json.dumps(_fingerprint(request), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def _missing_definition(exc: BaseException) -> bool:
    text = _message(exc).lower()
    return error_code(exc) == "ClientException" and (
        "unable to describe" in text or
        ("taskdefinition" in text.replace(" ", "") and ("not found" in text or "inactive" in text)))

class FargateTasks:
    """Session tasks in one ECS cluster, each in the given private subnets and groups."""

    def __init__(self, client: Any, *, cluster: str, subnets: Sequence[str],
                 security_groups: Sequence[str], execution_role_arn: str,
                 task_role_arn: str, log_group: str, assign_public_ip: bool = False) -> None:
        if not subnets or not security_groups:
            raise ValueError("Fargate tasks need at least one subnet and one security group")
        self.client = client
        self.cluster = cluster
        self.subnets = tuple(subnets)
        self.security_groups = tuple(security_groups)
        self.execution_role_arn = execution_role_arn
        self.task_role_arn = task_role_arn
        self.log_group = log_group
        self.assign_public_ip = assign_public_ip

    @property
    def region(self) -> str:
        return str(self.client.meta.region_name)

    @staticmethod
    def log_stream(task_arn: str) -> str:
        """The CloudWatch Logs stream ``awslogs`` writes the task's output to."""
        return f"{LOG_STREAM_PREFIX}/{CONTAINER_NAME}/{task_arn.rsplit('/', 1)[-1]}"

    # ----- task definitions --------------------------------------------------------------

    def task_definition(self, image_uri: str, *, family: str, cpu: int, memory: int,
                        container_port: int = 8888, efs: EfsMount | None = None,
                        ephemeral_gib: int | None = None,
                        task_role_arn: str | None = None) -> dict[str, Any]:
        """The RegisterTaskDefinition request for these inputs (nothing is sent).

        ``ephemeral_gib`` (21-200, see ``ephemeral_storage_gib``) asks for more than
        Fargate's 20 GiB; ``task_role_arn`` replaces the default session role (a signed-in
        user's own role, which may mount only that user's access point)."""
        container: dict[str, Any] = {
            "name": CONTAINER_NAME,
            "image": image_uri,
            "essential": True,
            "user": CONTAINER_USER,
            # Fargate sizes the task; moto (and the EC2 launch type) also need these.
            "memory": memory,
            "memoryReservation": memory,
            "portMappings": [{"containerPort": container_port, "protocol": "tcp"}],
            # After StopTask's SIGTERM, session-start waits for Jupyter to end and uploads
            # the visitor's changes (aws/restores.py) before SIGKILL: Fargate's longest.
            "stopTimeout": STOP_TIMEOUT_SECONDS,
            "logConfiguration": {"logDriver": "awslogs", "options": {
                "awslogs-group": self.log_group,
                "awslogs-region": self.region,
                "awslogs-stream-prefix": LOG_STREAM_PREFIX,
            }},
        }
        request: dict[str, Any] = {
            "family": family,
            "networkMode": "awsvpc",
            "requiresCompatibilities": ["FARGATE"],
            "cpu": str(cpu),
            "memory": str(memory),
            "executionRoleArn": self.execution_role_arn,
            "taskRoleArn": task_role_arn or self.task_role_arn,
            "containerDefinitions": [container],
        }
        if ephemeral_gib is not None:
            if not EPHEMERAL_DEFAULT_GIB < ephemeral_gib <= EPHEMERAL_MAX_GIB:
                raise ValueError(f"ephemeral storage is 21 to 200 GiB, not {ephemeral_gib}")
            request["ephemeralStorage"] = {"sizeInGiB": ephemeral_gib}
        if efs is not None:
            container["mountPoints"] = [{"sourceVolume": PERSISTENT_VOLUME,
                                         "containerPath": PERSISTENT_PATH, "readOnly": False}]
            request["volumes"] = [{"name": PERSISTENT_VOLUME, "efsVolumeConfiguration": {
                "fileSystemId": efs.file_system_id,
                # An access point is only accepted over TLS.
                "transitEncryption": "ENABLED",
                "authorizationConfig": {"accessPointId": efs.access_point_id, "iam": "ENABLED"},
            }}]
        return request

    def ensure_task_definition(self, image_uri: str, *, family: str, cpu: int, memory: int,
                               container_port: int = 8888, efs: EfsMount | None = None) -> str:
        """The ARN of a task definition running ``image_uri`` with these settings.

        Reuses the latest ACTIVE revision of ``family`` when it matches (image, size, roles,
        port, logs, volumes), else registers a new revision. Only the latest revision is
        compared, so inputs that alternate (one access point per user) need families of
        their own: see ``task_family``.
        """
        wanted = self.task_definition(image_uri, family=family, cpu=cpu, memory=memory,
                                      container_port=container_port, efs=efs)
        latest = self._latest(family)
        if latest is not None and latest.get("status") == "ACTIVE" and (
                _fingerprint(latest) == _fingerprint(wanted)):
            return str(latest["taskDefinitionArn"])
        try:
            answer = self.client.register_task_definition(**wanted)
        except Exception as exc:
            if not _from_aws(exc):
                raise
            raise _client_failure(f"register the task definition {family}", exc) from exc
        return str(answer["taskDefinition"]["taskDefinitionArn"])

    def register(self, request: Mapping[str, Any]) -> str:
        """Register a task definition revision (a request from ``task_definition``)."""
        try:
            answer = self.client.register_task_definition(**request)
        except Exception as exc:
            if not _from_aws(exc):
                raise
            raise _client_failure(f"register the task definition {request.get('family')}",
                                  exc) from exc
        return str(answer["taskDefinition"]["taskDefinitionArn"])

    def _latest(self, family: str) -> dict[str, Any] | None:
        try:
            answer = self.client.describe_task_definition(taskDefinition=family)
        except Exception as exc:
            code = error_code(exc)
            if code == "ClientException" and "unable to describe" in _message(exc).lower():
                return None  # no revision yet
            if not _from_aws(exc):
                raise
            raise _client_failure(f"describe the task definition {family}", exc) from exc
        definition: dict[str, Any] = answer["taskDefinition"]
        return definition

    # ----- tasks -------------------------------------------------------------------------

    def run(self, task_definition: str, *, environment: Mapping[str, str],
            command: Sequence[str], client_token: str,
            tags: Mapping[str, str] | None = None,
            security_groups: Sequence[str] | None = None) -> str:
        """Start one task of ``task_definition`` (an ARN, or a family: its latest ACTIVE
        revision); returns its ARN. Raises ``TaskDefinitionMissing`` when there is none.

        ``client_token`` makes the call idempotent: ECS answers a repeated call with the
        same token with the task the first call started, so retries never start two.
        ``security_groups`` replaces the default groups (signed-in users' sessions get the
        groups the file system admits; anonymous ones never do).
        """
        if not client_token or len(client_token) > _CLIENT_TOKEN_MAX:
            raise ValueError(f"a RunTask client token has 1 to {_CLIENT_TOKEN_MAX} characters")
        request: dict[str, Any] = {
            "cluster": self.cluster,
            "taskDefinition": task_definition,
            "count": 1,
            "launchType": "FARGATE",
            "networkConfiguration": {"awsvpcConfiguration": {
                "subnets": list(self.subnets),
                "securityGroups": list(security_groups or self.security_groups),
                "assignPublicIp": "ENABLED" if self.assign_public_ip else "DISABLED",
            }},
            "overrides": {"containerOverrides": [{
                "name": CONTAINER_NAME,
                "environment": _pairs(environment),
                "command": list(command),
            }]},
            "clientToken": client_token,
            "enableExecuteCommand": False,
            "propagateTags": "TASK_DEFINITION",
            "startedBy": STARTED_BY,
        }
        if tags:
            request["tags"] = _tags(tags)
        try:
            answer = self.client.run_task(**request)
        except Exception as exc:
            if not _from_aws(exc):
                raise
            if _missing_definition(exc):
                raise TaskDefinitionMissing(
                    f"ECS has no active task definition {task_definition}.") from exc
            raise _translate(_message(exc), code=error_code(exc)) from exc
        tasks = answer.get("tasks") or []
        if tasks:
            return str(tasks[0]["taskArn"])
        failures = answer.get("failures") or []
        reason = "; ".join(
            str(f.get("reason", "")) + (f" ({f['detail']})" if f.get("detail") else "")
            for f in failures) or "RunTask started no task and gave no reason"
        raise _translate(reason)

    def describe(self, task_arn: str) -> TaskState:
        """The task's state; a task ECS no longer knows (gone for an hour) reads as STOPPED."""
        try:
            answer = self.client.describe_tasks(cluster=self.cluster, tasks=[task_arn])
        except Exception as exc:
            if not _from_aws(exc):
                raise
            raise _client_failure("ask ECS about the session's task", exc) from exc
        tasks = answer.get("tasks") or []
        if not tasks:
            return TaskState("STOPPED", "STOPPED",
                             stopped_reason="ECS has no record of this task any more")
        return _state(tasks[0])

    def session_tasks(self) -> dict[str, str]:
        """Tasks binderless started that are not stopping, by their session id (tag
        ``binderless:session``): the reconciler's view of what runs, and how a resumed
        launch finds the task a crashed gateway started."""
        arns: list[str] = []
        # startedBy must be ListTasks' only filter: AWS answers InvalidParameterException
        # when desiredStatus, family, serviceName, launchType or containerInstance comes
        # with it (moto does not check). The default desiredStatus is RUNNING anyway, and
        # tasks on their way to STOPPED are dropped below from DescribeTasks' answer.
        request: dict[str, Any] = {"cluster": self.cluster, "startedBy": STARTED_BY}
        try:
            while True:
                answer = self.client.list_tasks(**request)
                arns += answer.get("taskArns") or []
                if not answer.get("nextToken"):
                    break
                request["nextToken"] = answer["nextToken"]
            found: dict[str, str] = {}
            for start in range(0, len(arns), _DESCRIBE_MAX):
                answer = self.client.describe_tasks(cluster=self.cluster,
                                                    tasks=arns[start:start + _DESCRIBE_MAX],
                                                    include=["TAGS"])
                for task in answer.get("tasks") or []:
                    tags = {t.get("key"): t.get("value") for t in task.get("tags") or []}
                    session = tags.get(SESSION_TAG)
                    if session and not _state(task).stopping:
                        found[str(session)] = str(task["taskArn"])
        except Exception as exc:
            if not _from_aws(exc):
                raise
            raise _client_failure("list the session tasks", exc) from exc
        return found

    def stop(self, task_arn: str, reason: str) -> None:
        """Stop the task; one that is stopped already, or unknown to ECS, is fine."""
        try:
            self.client.stop_task(cluster=self.cluster, task=task_arn, reason=reason[:255])
        except Exception as exc:
            code = error_code(exc)
            if code == "InvalidParameterException" and "not found" in _message(exc).lower():
                return
            if not _from_aws(exc):
                raise
            raise _client_failure("stop the session's Fargate task", exc) from exc


def _state(task: Mapping[str, Any]) -> TaskState:
    container: Mapping[str, Any] = next(
        (c for c in task.get("containers") or [] if c.get("name") == CONTAINER_NAME), {})
    reasons = [str(task.get("stoppedReason") or ""), str(container.get("reason") or "")]
    exit_code = container.get("exitCode")
    return TaskState(
        last_status=str(task.get("lastStatus", "")),
        desired_status=str(task.get("desiredStatus", "")),
        private_ip=_private_ip(task),
        stopped_reason=": ".join(r for r in reasons if r),
        exit_code=int(exit_code) if exit_code is not None else None,
    )


def _private_ip(task: Mapping[str, Any]) -> str:
    for attachment in task.get("attachments") or []:
        if attachment.get("type") != "ElasticNetworkInterface":
            continue
        for detail in attachment.get("details") or []:
            if detail.get("name") == "privateIPv4Address" and detail.get("value"):
                return str(detail["value"])
    return ""


def _fingerprint(definition: Mapping[str, Any]) -> dict[str, Any]:
    """What must match for an existing revision to serve a request (ECS adds defaults)."""
    containers = definition.get("containerDefinitions") or [{}]
    container = containers[0]
    volumes = []
    for volume in definition.get("volumes") or []:
        efs = volume.get("efsVolumeConfiguration") or {}
        auth = efs.get("authorizationConfig") or {}
        volumes.append((volume.get("name"), efs.get("fileSystemId"),
                        efs.get("transitEncryption"), auth.get("accessPointId"),
                        auth.get("iam")))
    fingerprint: dict[str, Any] = {
        "containers": len(containers),
        "name": container.get("name"),
        "image": container.get("image"),
        "user": container.get("user"),
        "cpu": str(definition.get("cpu")),
        "memory": str(definition.get("memory")),
        "container_memory": (container.get("memory"), container.get("memoryReservation")),
        "ports": sorted(int(p.get("containerPort", 0))
                        for p in container.get("portMappings") or []),
        "logs": container.get("logConfiguration"),
        "mounts": sorted((m.get("sourceVolume"), m.get("containerPath"),
                          bool(m.get("readOnly", False)))
                         for m in container.get("mountPoints") or []),
        "volumes": sorted(volumes),
        "roles": (definition.get("executionRoleArn"), definition.get("taskRoleArn")),
        "network": definition.get("networkMode"),
    }
    # Only when asked for: the digests (family names) of definitions without it stay as
    # they were before ephemeral storage was sized.
    ephemeral = (definition.get("ephemeralStorage") or {}).get("sizeInGiB")
    if ephemeral and int(ephemeral) > EPHEMERAL_DEFAULT_GIB:
        fingerprint["ephemeral_gib"] = int(ephemeral)
    return fingerprint
