"""The roles allow what the code calls, no more: the gateway's against the AWS calls of
``binderless.aws`` and ``binderless.tokens``, the functions' against ``.chalice/policy-prod.json``
(the policy of a plain ``chalice deploy``), statement by statement."""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.functional.infra.conftest import DryRun

ROOT = Path(__file__).resolve().parents[3]
PACKAGE = ROOT / "functions" / "binderless"
#: The AWS service each adapter module talks to, as IAM spells its prefix.
ADAPTERS = {"codebuild": "codebuild", "dynamodb": "dynamodb", "ecr": "ecr", "ecs": "ecs",
            "efs": "elasticfilesystem", "iam": "iam", "logs": "logs", "s3": "s3"}
#: Calls whose IAM actions are not their own name.
AUTHORIZED_AS = {
    "s3:UploadFile": {"s3:PutObject"},  # boto3's transfer: PutObject or a multipart upload
    # The task reads the checkout (and an earlier session's saved changes) and PUTs its own
    # saved changes with the gateway's signature (binderless.aws.restores).
    "s3:GeneratePresignedUrl": {"s3:GetObject", "s3:PutObject"},
    # The saved changes' form upload: S3 authorizes a POST of an object as PutObject.
    "s3:GeneratePresignedPost": {"s3:PutObject"},
    "s3:HeadObject": {"s3:GetObject"},  # HEAD is authorized as GetObject
    # A transaction is authorized as the writes it carries: binderless's hold Put and Update.
    "dynamodb:TransactWriteItems": {"dynamodb:PutItem", "dynamodb:UpdateItem"},
}
#: What the gateway's role allows that is no call of its own, and why.
NOT_CALLS = {
    "iam:PassRole": "RegisterTaskDefinition names the sessions' roles",
    "ecs:TagResource": "RunTask tags the session's task",
    "elasticfilesystem:TagResource": "CreateAccessPoint tags the user's access point",
    "iam:TagRole": "CreateRole tags the user's role",
    "elasticfilesystem:ClientMount": "the gateway's own NFS mount of the homes",
    "elasticfilesystem:ClientWrite": "the gateway's own NFS mount of the homes",
}
#: What policy-prod.json allows that the stack's function policy does not, and why.
CHALICE_ONLY = {"logs:CreateLogGroup": "the stack makes the functions' log groups itself"}


def _camel(operation: str) -> str:
    return "".join(part.capitalize() for part in operation.split("_"))


def calls(path: Path) -> Iterator[tuple[str, str]]:
    """(service, operation) of each boto3 call in ``path``: ``self.client.<op>(...)``,
    ``self._call("<op>", ...)``, ``get_paginator("<op>")`` and
    ``client_factory("<service>").<op>(...)``."""
    for node in ast.walk(ast.parse(path.read_text())):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        func = node.func
        first = node.args[0] if node.args else None
        if func.attr in ("_call", "get_paginator") and isinstance(first, ast.Constant):
            yield ADAPTERS[path.stem], str(first.value)
        elif isinstance(func.value, ast.Attribute) and func.value.attr == "client":
            yield ADAPTERS[path.stem], func.attr
        elif (isinstance(func.value, ast.Call) and isinstance(func.value.func, ast.Name)
              and func.value.func.id == "client_factory"):
            service = func.value.args[0]
            assert isinstance(service, ast.Constant)
            yield str(service.value), func.attr


def called_actions() -> set[str]:
    actions: set[str] = set()
    for path in [*sorted((PACKAGE / "aws").glob("*.py")), PACKAGE / "tokens.py"]:
        for service, operation in calls(path):
            action = f"{service}:{_camel(operation)}"
            actions |= AUTHORIZED_AS.get(action, {action})
    return actions


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def allowed(statements: list[dict[str, Any]]) -> set[str]:
    return {action for s in statements if s["Effect"] == "Allow"
            for action in _listed(s["Action"])}


def role_statements(template: dict[str, Any], role: str) -> list[dict[str, Any]]:
    policies = template["Resources"][role]["Properties"]["Policies"]
    return [s for p in policies for s in p["PolicyDocument"]["Statement"]]


def test_the_scan_finds_the_calls_it_should() -> None:
    actions = called_actions()
    assert {"ecs:RunTask", "ecs:ListTasks", "ecs:DescribeTasks", "ecs:RegisterTaskDefinition",
            "dynamodb:Query", "elasticfilesystem:CreateAccessPoint", "s3:GetObject",
            "secretsmanager:GetSecretValue", "iam:CreateRole", "iam:PutRolePolicy",
            "iam:GetRole"} <= actions
    assert "dynamodb:TransactWriteItems" not in actions


def test_the_gateway_may_do_exactly_what_its_code_calls(dry_run: DryRun) -> None:
    granted = allowed(role_statements(dry_run.service, "GatewayTaskRole"))
    assert granted - called_actions() == set(NOT_CALLS)
    assert called_actions() - granted == set()


def test_the_functions_policy_is_the_chalice_policy_with_this_stacks_resources(
        dry_run: DryRun) -> None:
    chalice = json.loads((ROOT / "functions" / ".chalice" / "policy-prod.json").read_text())
    by_sid = {s["Sid"]: set(_listed(s["Action"])) for s in chalice["Statement"]}
    resources = dry_run.service["Resources"]
    roles = [n for n, r in resources.items() if r["Type"] == "AWS::IAM::Role"
             and "lambda.amazonaws.com" in json.dumps(r["Properties"]["AssumeRolePolicyDocument"])]
    assert len(roles) == 4  # one per function: the API, reconcile, task_stopped, build_finished
    for role in roles:
        statements = role_statements(dry_run.service, role)
        stack = {s["Sid"]: set(_listed(s["Action"])) for s in statements}
        assert stack == {sid: actions - set(CHALICE_ONLY) for sid, actions in by_sid.items()}
        # The same conditions (ListTasks: the cluster), on this stack's resources.
        for statement in statements:
            given = next(s for s in chalice["Statement"] if s["Sid"] == statement["Sid"])
            assert set(statement.get("Condition", {}).get("ArnEquals", {})) == set(
                given.get("Condition", {}).get("ArnLike", {})), statement["Sid"]
            # Only X-Ray's actions, which take no resource, are granted on "*".
            if "*" in _listed(statement["Resource"]):
                assert all(a.startswith("xray:") for a in _listed(statement["Action"]))


def test_the_functions_cannot_read_the_sign_in_secrets(dry_run: DryRun) -> None:
    statements = role_statements(dry_run.service, "ApiHandlerRole")
    text = json.dumps([s["Resource"] for s in statements])
    assert "SignIn" not in text
    [tokens] = [s for s in statements if s["Sid"] == "Tokens"]
    # The operator's tokens live under <stack>/; the sign-in secrets have generated names.
    assert all(re.search(r"\$\{AWS::StackName\}/\*$", r["Fn::Sub"]) for r in tokens["Resource"])
    for name in ("SignInCookieKey", "SignInClientSecret"):
        assert "Name" not in dry_run.service["Resources"][name]["Properties"]
