"""One IAM role per signed-in user: ``HomeRoles``.

EFS decides who may mount through which access point by the caller's IAM identity, and
for NFS clients it enforces no condition key but ``aws:SecureTransport``,
``aws:SourceIp``, ``elasticfilesystem:AccessPointArn`` and
``elasticfilesystem:AccessedViaMountTarget`` (no principal tag, no session tag). A task
role has no per-task identity either. So "a user's session mounts only that user's home"
needs a role per user whose policy names that user's access point, and nothing else:

* the role is made with the user's access point (``EfsAccessPoints``), named from the file
  system and the user id, under the stack's path (``home_role_path``), trusted by ECS tasks
  of this account only;
* it carries the stack's permissions boundary (``home_role_boundary_arn``): whatever its
  own policy says, the role can do no more than mount homes through an access point
  other than the gateway's; the gateway may create roles and write their policies only
  with that boundary and only under that path (``infra/service/compute.yaml``);
* its one inline policy allows ``ClientMount`` and ``ClientWrite`` on the file system
  when ``elasticfilesystem:AccessPointArn`` is the user's own.

IAM is eventually consistent: a new role may not be usable by ECS for some seconds, so a
role that was just made is waited for (``settle_seconds``) before its first task.
Accounts hold 1,000 roles by default (a quota that can be raised to 5,000): that is how
many signed-in users a deployment can have, fewer than EFS's 10,000 access points.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections.abc import Callable
from typing import Any

from ..errors import LaunchFailed, QuotaExceeded
from ._errors import error_code, launch_failure

__all__ = ["HOME_POLICY_NAME", "HomeRoles", "home_policy", "home_trust_policy"]

HOME_POLICY_NAME = "home"
#: Seconds a new role is given before ECS may need to assume it (IAM propagation).
SETTLE_SECONDS = 10.0
_PATH = re.compile(r"/([\x21-\x7e]+/)*")  # IAM's rule for paths, at most 512 characters


def home_policy(file_system_arn: str, access_point_arn: str) -> dict[str, Any]:
    """The user's role policy: mount and write the file system through their access point
    only (EFS's own example of per-client access points uses this condition)."""
    return {"Version": "2012-10-17", "Statement": [{
        "Sid": "MountOwnHome",
        "Effect": "Allow",
        "Action": ["elasticfilesystem:ClientMount", "elasticfilesystem:ClientWrite"],
        "Resource": file_system_arn,
        "Condition": {"StringEquals": {"elasticfilesystem:AccessPointArn": access_point_arn}},
    }]}


def home_trust_policy(account_id: str) -> dict[str, Any]:
    """Who may assume a user's role: ECS tasks, of this account only."""
    return {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow",
        "Principal": {"Service": "ecs-tasks.amazonaws.com"},
        "Action": "sts:AssumeRole",
        "Condition": {"StringEquals": {"aws:SourceAccount": account_id}},
    }]}


def _failure(action: str, exc: BaseException) -> LaunchFailed:
    return launch_failure(action, exc, "The operator should check the iam permissions of binderless "
                          "(its home roles' path and permissions boundary).")


class HomeRoles:
    """Signed-in users' session roles (``client`` is a boto3 IAM client)."""

    def __init__(self, client: Any, *, path: str, boundary_arn: str,
                 settle_seconds: float = SETTLE_SECONDS,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if not (_PATH.fullmatch(path) and len(path) <= 512):
            raise ValueError(f"an IAM path starts and ends with '/', not {path!r}")
        if not boundary_arn.startswith("arn:"):
            raise ValueError("home roles need the ARN of their permissions boundary")
        self.client = client
        self.path = path
        self.boundary_arn = boundary_arn
        self.settle_seconds = settle_seconds
        self.sleep = sleep
        self._known: dict[str, str] = {}
        self._lock = threading.Lock()

    @property
    def account_id(self) -> str:
        """The account of the boundary (and so of the stack and its roles)."""
        return self.boundary_arn.split(":")[4]

    @staticmethod
    def role_name(file_system_id: str, user_id: str) -> str:
        """At most 64 characters, distinct per file system and user (role names are
        unique in an account, whatever their path)."""
        digest = hashlib.sha256(f"{file_system_id}:{user_id}".encode()).hexdigest()[:40]
        return f"binderless-home-{digest}"

    def ensure(self, user_id: str, *, file_system_arn: str, access_point_arn: str) -> str:
        """The ARN of the user's role, allowed to mount ``access_point_arn`` only; made
        (and waited for) on first use. Thread-safe."""
        file_system_id = file_system_arn.rsplit("/", 1)[-1]
        name = self.role_name(file_system_id, user_id)
        with self._lock:
            known = self._known.get(name)
            if known is not None:
                return known
            arn, made = self._find(name) or self._create(name, user_id, access_point_arn)
            # Written each time a gateway first meets the user: a role left by an older
            # access point (deleted, made again) follows the current one.
            self._put_policy(name, file_system_arn, access_point_arn)
            if made:
                self.sleep(self.settle_seconds)
            self._known[name] = arn
            return arn

    def _find(self, name: str) -> tuple[str, bool] | None:
        try:
            role = self.client.get_role(RoleName=name)["Role"]
        except Exception as exc:
            code = error_code(exc)
            if code == "NoSuchEntity":
                return None
            if not code:
                raise
            raise _failure("look up the IAM role of your home", exc) from exc
        boundary = (role.get("PermissionsBoundary") or {}).get("PermissionsBoundaryArn")
        if role.get("Path") != self.path or boundary != self.boundary_arn:
            # Never adopt a role this stack did not make (same name, other path or limits).
            raise LaunchFailed(f"The IAM role {name} exists, but not as this deployment "
                               "makes home roles (its path or permissions boundary differ).",
                               hint="The operator should delete that role, or check that "
                                    "two deployments do not share one file system.")
        return str(role["Arn"]), False

    def _create(self, name: str, user_id: str, access_point_arn: str) -> tuple[str, bool]:
        try:
            role = self.client.create_role(
                Path=self.path, RoleName=name,
                AssumeRolePolicyDocument=json.dumps(home_trust_policy(self.account_id)),
                Description=f"binderless: the sessions of {user_id}, mounting their home only",
                PermissionsBoundary=self.boundary_arn,
                Tags=[{"Key": "binderless:user", "Value": user_id},
                      {"Key": "binderless:access-point",
                       "Value": access_point_arn.rsplit("/", 1)[-1]}],
            )["Role"]
        except Exception as exc:
            code = error_code(exc)
            if code == "EntityAlreadyExists":  # another gateway made it just now
                found = self._find(name)
                if found is not None:
                    return found
            if code == "LimitExceeded":
                raise QuotaExceeded(
                    "The AWS account running binderless has no room for another user's role.",
                    hint="The operator should raise the account's IAM roles quota, or remove "
                         "the roles of users who left.") from exc
            if not code:
                raise
            raise _failure("create the IAM role of your home", exc) from exc
        return str(role["Arn"]), True

    def _put_policy(self, name: str, file_system_arn: str, access_point_arn: str) -> None:
        try:
            self.client.put_role_policy(
                RoleName=name, PolicyName=HOME_POLICY_NAME,
                PolicyDocument=json.dumps(home_policy(file_system_arn, access_point_arn)))
        except Exception as exc:
            if not error_code(exc):
                raise
            raise _failure("set the policy of your home's IAM role", exc) from exc
