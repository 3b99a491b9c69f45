"""A signed-in user's session can mount only that user's home: the roles the gateway makes
(``binderless.aws.iam``, against moto's IAM), evaluated with the stack's permissions
boundary and file-system policy as IAM would for an EFS mount.

IAM's rule for a role with a permissions boundary: an action is allowed when the role's
own policies allow it AND the boundary allows it, and no policy that applies denies it
(here, the file system's). The evaluator below knows the operators these policies use.
"""

from __future__ import annotations

import copy
import fnmatch
import json
import re
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from binderless.aws.iam import HOME_POLICY_NAME, HomeRoles, home_policy
from binderless.errors import LaunchFailed
from tests.functional.infra.conftest import DryRun

ACCOUNT, REGION, STACK = "123456789012", "us-east-1", "binderless"
FS_ID = "fs-0123456789abcdef0"
FS_ARN = f"arn:aws:elasticfilesystem:{REGION}:{ACCOUNT}:file-system/{FS_ID}"
AP = f"arn:aws:elasticfilesystem:{REGION}:{ACCOUNT}:access-point/"
ALICE, BOB, GATEWAY = AP + "fsap-0a11ce", AP + "fsap-00b0b", AP + "fsap-9a7e"
PATH = f"/binderless-homes/{STACK}/"
MOUNT = ("elasticfilesystem:ClientMount", "elasticfilesystem:ClientWrite")


def resolve(value: Any) -> Any:
    """The template's intrinsic functions, for the values these policies use."""
    if isinstance(value, list):
        return [resolve(v) for v in value]
    if not isinstance(value, dict):
        return value
    if "Fn::GetAtt" in value:
        return {("FileSystem", "Arn"): FS_ARN, ("HomesAccessPoint", "Arn"): GATEWAY}[
            tuple(value["Fn::GetAtt"])]
    if "Fn::Sub" in value:
        pseudo = {"AWS::Partition": "aws", "AWS::Region": REGION, "AWS::AccountId": ACCOUNT,
                  "AWS::StackName": STACK}
        return re.sub(r"\$\{([^}]+)\}", lambda m: pseudo[m.group(1)], value["Fn::Sub"])
    return {k: resolve(v) for k, v in value.items()}


def _values(value: Any) -> list[str]:
    return [str(v) for v in (value if isinstance(value, list) else [value])]


def _condition_holds(condition: dict[str, Any], context: dict[str, str]) -> bool:
    for operator, tests in condition.items():
        for key, expected in tests.items():
            present = key in context
            actual = context.get(key, "")
            wanted = _values(expected)
            if operator == "Null":
                if (wanted[0] == "true") == present:
                    return False
            elif operator == "Bool":
                if not present or actual != wanted[0]:
                    return False
            elif operator in ("StringEquals", "ArnEquals"):
                if not present or actual not in wanted:
                    return False
            elif operator in ("StringLike", "ArnLike"):
                if not present or not any(fnmatch.fnmatchcase(actual, w) for w in wanted):
                    return False
            elif operator in ("ArnNotEquals", "StringNotEquals"):
                if present and actual in wanted:
                    return False
            else:
                raise AssertionError(f"the evaluator does not know {operator}")
    return True


def _matches(statement: dict[str, Any], action: str, resource: str,
             context: dict[str, str]) -> bool:
    return (any(fnmatch.fnmatchcase(action, a) for a in _values(statement.get("Action", [])))
            and any(fnmatch.fnmatchcase(resource, r)
                    for r in _values(statement.get("Resource", "*")))
            and _condition_holds(statement.get("Condition", {}), context))


def allows(document: dict[str, Any], action: str, resource: str,
           context: dict[str, str]) -> bool:
    return any(st["Effect"] == "Allow" and _matches(st, action, resource, context)
               for st in _values_list(document["Statement"]))


def denies(document: dict[str, Any], action: str, resource: str,
           context: dict[str, str]) -> bool:
    return any(st["Effect"] == "Deny" and _matches(st, action, resource, context)
               for st in _values_list(document["Statement"]))


def _values_list(value: Any) -> list[dict[str, Any]]:
    return value if isinstance(value, list) else [value]


def may_mount(role_policy: dict[str, Any], template: dict[str, Any],
              access_point: str | None) -> bool:
    """Whether a role with ``role_policy`` and the stack's boundary may mount and write
    the homes' file system through ``access_point`` (``None``: without one)."""
    resources = template["Resources"]
    boundary = resolve(resources["HomeRoleBoundary"]["Properties"]["PolicyDocument"])
    file_system = resolve(resources["FileSystem"]["Properties"]["FileSystemPolicy"])
    context = {"aws:SecureTransport": "true"}
    if access_point:
        context["elasticfilesystem:AccessPointArn"] = access_point
    return all(allows(role_policy, a, FS_ARN, context) and allows(boundary, a, FS_ARN, context)
               and not denies(file_system, a, FS_ARN, context) for a in MOUNT)


class Iam:
    """moto's IAM, with a stand-in of the stack's boundary policy."""

    def __init__(self) -> None:
        self.client = boto3.client("iam", region_name=REGION)
        self.boundary_arn = self.client.create_policy(
            PolicyName="home-boundary",
            PolicyDocument=json.dumps(home_policy(FS_ARN, AP + "*")))["Policy"]["Arn"]

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)


@pytest.fixture
def iam() -> Iterator[Iam]:
    with mock_aws():
        yield Iam()


class Recorded(HomeRoles):
    slept: list[float]


def roles(iam: Iam) -> Recorded:
    slept: list[float] = []
    made = Recorded(iam.client, path=PATH, boundary_arn=iam.boundary_arn, sleep=slept.append)
    made.slept = slept
    return made


def test_a_users_role_mounts_their_home_and_no_one_elses(dry_run: DryRun, iam: Iam) -> None:
    home_roles = roles(iam)
    alice = home_roles.ensure("alice", file_system_arn=FS_ARN, access_point_arn=ALICE)
    bob = home_roles.ensure("bob", file_system_arn=FS_ARN, access_point_arn=BOB)
    assert alice != bob
    assert home_roles.slept == [10.0, 10.0]  # each new role is given time to propagate

    # What the gateway made, as IAM keeps it.
    name = alice.rsplit("/", 1)[-1]
    role = iam.get_role(RoleName=name)["Role"]
    assert role["Path"] == PATH and len(name) <= 64
    assert role["PermissionsBoundary"]["PermissionsBoundaryArn"] == iam.boundary_arn
    trust = role["AssumeRolePolicyDocument"]
    assert trust["Statement"][0]["Principal"] == {"Service": "ecs-tasks.amazonaws.com"}
    assert trust["Statement"][0]["Condition"] == {"StringEquals": {"aws:SourceAccount": ACCOUNT}}
    assert iam.list_role_policies(RoleName=name)["PolicyNames"] == [HOME_POLICY_NAME]
    policy = iam.get_role_policy(RoleName=name, PolicyName=HOME_POLICY_NAME)["PolicyDocument"]

    template = dry_run.service
    assert may_mount(policy, template, ALICE)
    assert not may_mount(policy, template, BOB)           # another user's home
    assert not may_mount(policy, template, GATEWAY)       # the gateway's view of every home
    assert not may_mount(policy, template, None)          # the file system's root
    bob_policy = iam.get_role_policy(RoleName=bob.rsplit("/", 1)[-1],
                                     PolicyName=HOME_POLICY_NAME)["PolicyDocument"]
    assert may_mount(bob_policy, template, BOB) and not may_mount(bob_policy, template, ALICE)

    # Even a role whose own policy allows every mount (a gateway gone wrong) is held by
    # the boundary to homes, never the gateway's view, never the root.
    anything = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "elasticfilesystem:*", "Resource": "*"}]}
    assert not may_mount(anything, template, GATEWAY)
    assert not may_mount(anything, template, None)

    # The evaluator bites: a boundary without its conditions lets the gateway's view in,
    # and a role policy naming any access point lets Bob's home in.
    broken = copy.deepcopy(template)
    broken["Resources"]["HomeRoleBoundary"]["Properties"]["PolicyDocument"]["Statement"][0][
        "Condition"] = {}
    assert may_mount(anything, broken, GATEWAY)
    any_home = {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Action": list(MOUNT), "Resource": FS_ARN,
        "Condition": {"ArnLike": {"elasticfilesystem:AccessPointArn": AP + "*"}}}]}
    assert may_mount(any_home, template, BOB)


def test_roles_are_found_again_and_never_adopted_from_elsewhere(iam: Iam) -> None:
    first = roles(iam).ensure("alice", file_system_arn=FS_ARN, access_point_arn=ALICE)
    again = roles(iam)  # another gateway, or this one restarted
    assert again.ensure("alice", file_system_arn=FS_ARN, access_point_arn=ALICE) == first
    assert again.slept == []  # found, not made: no wait
    # A later access point of the same user: the role's policy follows it.
    moved = AP + "fsap-0a11ce2"
    roles(iam).ensure("alice", file_system_arn=FS_ARN, access_point_arn=moved)
    policy = iam.get_role_policy(RoleName=first.rsplit("/", 1)[-1],
                                 PolicyName=HOME_POLICY_NAME)["PolicyDocument"]
    assert policy == home_policy(FS_ARN, moved)

    # A role of that name made otherwise (another path, no boundary) is never used.
    name = HomeRoles.role_name(FS_ID, "mallory")
    iam.create_role(RoleName=name, Path="/", AssumeRolePolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": []}))
    with pytest.raises(LaunchFailed, match="not as this deployment makes home roles"):
        roles(iam).ensure("mallory", file_system_arn=FS_ARN, access_point_arn=BOB)


def test_home_roles_refuse_a_path_iam_would_refuse() -> None:
    with pytest.raises(ValueError, match="IAM path"):
        HomeRoles(object(), path="no-slashes", boundary_arn="arn:aws:iam::1:policy/b")
