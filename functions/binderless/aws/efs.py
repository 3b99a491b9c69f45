"""Persistent homes on Amazon EFS: one access point per signed-in user.

Every user's home is the directory ``<home root>/<user id>`` of one file system. Their
sessions reach it only through their own access point, which roots the mount there and
acts as uid/gid 1000 (repo2docker's ``jovyan``) whatever the container's user; EFS
creates the directory, owned by 1000:1000, on the first mount (``CreationInfo``). A
session's task definition names the access point (RunTask cannot override volumes), so
each persistent user gets task-definition revisions of their own (``ecs.task_family``).

Access points are found again by their ``binderless:user`` tag, and created with a
client token derived from the user id, so two gateways creating the same user's access
point at once get one. A file system holds at most 10,000 access points.

With ``roles`` (``aws/iam.py``), each user also gets a role of their own that may mount
through their access point only, made with it: the task role of their sessions.
"""

from __future__ import annotations

import dataclasses
import hashlib
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..errors import LaunchFailed, QuotaExceeded
from ..identity import valid_user_id
from ._errors import error_code, launch_failure
from .ecs import EfsMount

if TYPE_CHECKING:
    from .iam import HomeRoles

__all__ = ["USER_TAG", "EfsAccessPoints"]

USER_TAG = "binderless:user"
POSIX_ID = 1000
#: Seconds to wait for a new access point to become ``available``.
CREATE_TIMEOUT = 60.0


def _failure(action: str, exc: BaseException) -> LaunchFailed:
    return launch_failure(action, exc, "The operator should check the EFS file system and the "
                          "elasticfilesystem permissions of binderless.")


class EfsAccessPoints:
    """The users' access points on one file system (``client`` is a boto3 EFS client)."""

    def __init__(self, client: Any, file_system_id: str, *, home_root: str = "/homes",
                 permissions: str = "0750", poll_interval: float = 1.0,
                 sleep: Callable[[float], None] = time.sleep,
                 roles: HomeRoles | None = None) -> None:
        if not file_system_id:
            raise ValueError("persistent homes need an EFS file system id")
        if not home_root.startswith("/"):
            raise ValueError("the home root is an absolute path on the file system")
        self.client = client
        self.file_system_id = file_system_id
        self.home_root = home_root.rstrip("/") or ""
        self.permissions = permissions
        self.poll_interval = poll_interval
        self.sleep = sleep
        #: Each user's own role (``None``: mounts carry no role of their own).
        self.roles = roles
        self._known: dict[str, EfsMount] = {}
        self._lock = threading.Lock()

    def root_directory(self, user_id: str) -> str:
        return f"{self.home_root}/{user_id}"

    def ensure(self, user_id: str) -> EfsMount:
        """The user's access point: the one made before, or a new one (thread-safe)."""
        if not valid_user_id(user_id):
            raise ValueError(f"not a valid user id: {user_id!r}")
        with self._lock:
            mount = self._known.get(user_id)
            if mount is None:
                mount, arn = self._find(user_id) or self._create(user_id)
                if self.roles is not None:
                    mount = dataclasses.replace(mount, task_role_arn=self.roles.ensure(
                        user_id, file_system_arn=_file_system_arn(arn, self.file_system_id),
                        access_point_arn=arn))
                self._known[user_id] = mount
            return mount

    def _pages(self) -> Any:
        token = ""
        while True:
            request: dict[str, Any] = {"FileSystemId": self.file_system_id, "MaxResults": 1000}
            if token:
                request["NextToken"] = token
            try:
                answer = self.client.describe_access_points(**request)
            except Exception as exc:
                if not error_code(exc):
                    raise
                raise _failure("list the EFS access points", exc) from exc
            yield from answer.get("AccessPoints") or []
            token = answer.get("NextToken") or ""
            if not token:
                return

    def _find(self, user_id: str) -> tuple[EfsMount, str] | None:
        root = self.root_directory(user_id)
        for point in self._pages():
            tags = {t.get("Key"): t.get("Value") for t in point.get("Tags") or []}
            if tags.get(USER_TAG) != user_id:
                continue
            if point.get("LifeCycleState") in ("deleting", "deleted", "error"):
                continue
            if (point.get("RootDirectory") or {}).get("Path") != root:
                continue  # not made by this configuration: never reuse another home
            return self._available(str(point["AccessPointId"]),
                                   str(point.get("LifeCycleState", ""))), str(
                                       point.get("AccessPointArn", ""))
        return None

    def _create(self, user_id: str) -> tuple[EfsMount, str]:
        # At most 64 characters, the same for every gateway creating this user's point.
        token = "binderless-" + hashlib.sha256(
            f"{self.file_system_id}:{user_id}".encode()).hexdigest()[:40]
        try:
            point = self.client.create_access_point(
                ClientToken=token,
                FileSystemId=self.file_system_id,
                Tags=[{"Key": "Name", "Value": f"binderless-{user_id}"},
                      {"Key": USER_TAG, "Value": user_id}],
                PosixUser={"Uid": POSIX_ID, "Gid": POSIX_ID},
                RootDirectory={"Path": self.root_directory(user_id), "CreationInfo": {
                    "OwnerUid": POSIX_ID, "OwnerGid": POSIX_ID,
                    "Permissions": self.permissions}},
            )
        except Exception as exc:
            code = error_code(exc)
            if code == "AccessPointLimitExceeded":
                raise QuotaExceeded(
                    "The file system for persistent homes has no room for another user.",
                    hint="The operator should remove access points of users who left "
                         "(EFS allows 10,000 per file system).") from exc
            if code == "AccessPointAlreadyExists":
                found = self._find(user_id)
                if found is not None:
                    return found
            if not code:
                raise
            raise _failure("create an EFS access point for your home", exc) from exc
        return (self._available(str(point["AccessPointId"]), str(point.get("LifeCycleState"))),
                str(point.get("AccessPointArn", "")))

    def _available(self, access_point_id: str, state: str) -> EfsMount:
        deadline = time.monotonic() + CREATE_TIMEOUT
        while state == "creating" and time.monotonic() < deadline:
            self.sleep(self.poll_interval)
            try:
                answer = self.client.describe_access_points(AccessPointId=access_point_id)
            except Exception as exc:
                if not error_code(exc):
                    raise
                raise _failure("check the EFS access point of your home", exc) from exc
            points = answer.get("AccessPoints") or [{}]
            state = str(points[0].get("LifeCycleState", ""))
        if state != "available":
            raise LaunchFailed(f"The EFS access point of your home is {state or 'missing'}, "
                               "not available.", hint="Launch again in a minute.")
        return EfsMount(file_system_id=self.file_system_id, access_point_id=access_point_id)


def _file_system_arn(access_point_arn: str, file_system_id: str) -> str:
    """The file system's ARN, from the ARN of one of its access points (same partition,
    region and account)."""
    prefix = access_point_arn.split(":access-point/", 1)[0]
    if not prefix.startswith("arn:") or prefix == access_point_arn:
        raise LaunchFailed(f"EFS gave no usable access point ARN ({access_point_arn!r}).",
                           hint="Launch again in a minute.")
    return f"{prefix}:file-system/{file_system_id}"
