"""The stack's share of prebuilds and saved changes, over the packaged template: the webhook
secret (parameter ``WebhookSecret``) reaches the functions only as a Secrets Manager
reference that their roles may read, ``POST /api/prebuild`` reaches the REST API through
the edge with the signature headers, and the bucket forgets saved changes (``restores/``)
after ``RestoreDays``. Each check is shown to fail on a template broken the way it guards
against."""

from __future__ import annotations

import copy
import fnmatch
import json
import re
from collections.abc import Callable
from typing import Any

import pytest

from binderless.deploy.estimate import render
from tests.functional.infra.conftest import DryRun

Template = dict[str, Any]

#: A webhook secret an operator would pass (--param WebhookSecret=...).
SECRET = "operator-webhook-secret-0123456789"
#: CloudFront's managed origin request policy that forwards every viewer header but Host.
ALL_VIEWER_EXCEPT_HOST = "b689b0a8-53d0-40ab-baf2-68738e2966ac"
LAMBDA_ROLES = ("ApiHandlerRole", "ReconcileRole", "TaskStoppedRole", "BuildFinishedRole")


def _environments(t: Template) -> dict[str, dict[str, Any]]:
    """Every control-plane host's environment: each function's and the gateway's."""
    found: dict[str, dict[str, Any]] = {}
    for name, resource in t["Resources"].items():
        props = resource.get("Properties", {})
        if resource["Type"] in ("AWS::Lambda::Function", "AWS::Serverless::Function"):
            found[name] = dict(props.get("Environment", {}).get("Variables", {}))
        elif name == "GatewayTaskDefinition":
            found[name] = {e["Name"]: e["Value"] for c in props["ContainerDefinitions"]
                           for e in c.get("Environment", [])}
    return found


def _statements(t: Template, role: str) -> list[dict[str, Any]]:
    policies = t["Resources"][role]["Properties"]["Policies"]
    return [s for p in policies for s in p["PolicyDocument"]["Statement"]]


def _secret_patterns(t: Template, role: str) -> list[str]:
    """The Secrets Manager ARNs (as ``${AWS::StackName}/...`` patterns) ``role`` may read."""
    patterns = []
    for statement in _statements(t, role):
        actions = statement["Action"] if isinstance(statement["Action"], list) else [
            statement["Action"]]
        if statement["Effect"] != "Allow" or "secretsmanager:GetSecretValue" not in actions:
            continue
        resources = statement["Resource"]
        for resource in resources if isinstance(resources, list) else [resources]:
            text = resource.get("Fn::Sub", "") if isinstance(resource, dict) else resource
            if ":secret:" in str(text):
                patterns.append(str(text).split(":secret:", 1)[1])
    return patterns


def webhook_secret(rendered: Template) -> list[str]:
    """With a secret: it is stored in Secrets Manager under the stack's prefix, every host
    gets ``secretsmanager:<its ARN>`` and may read it, and the value is in no environment.
    Without: no secret exists and the setting is empty (the route says prebuilds are off)."""
    found = []
    given = rendered["Parameters"].get("WebhookSecret", "")
    store = rendered["Resources"].get("WebhookSecretStore")
    envs = _environments(rendered)
    if not envs or len(envs) < 5:
        return [f"expected the four functions and the gateway, found {sorted(envs)}"]
    if SECRET in json.dumps(envs):
        found.append("the webhook secret's value is in an environment")
    for host, env in envs.items():
        value = env.get("BINDERLESS_WEBHOOK_SECRET")
        if not given:
            if value != "":
                found.append(f"{host}: BINDERLESS_WEBHOOK_SECRET is {value!r} without a secret")
        elif value != {"Fn::Sub": "secretsmanager:${WebhookSecretStore}"}:
            found.append(f"{host}: BINDERLESS_WEBHOOK_SECRET is {value!r}, not a reference "
                         "to WebhookSecretStore")
    if not given:
        return [*found, "WebhookSecretStore exists without a secret"] if store else found
    if store is None or store["Type"] != "AWS::SecretsManager::Secret":
        return [*found, "no WebhookSecretStore secret"]
    props = store["Properties"]
    if props.get("SecretString") != given:
        found.append("WebhookSecretStore does not hold the parameter WebhookSecret")
    name = props.get("Name", {})
    name_text = name.get("Fn::Sub", [""])[0] if isinstance(name, dict) else str(name)
    for role in ("GatewayTaskRole", *LAMBDA_ROLES):
        if not any(fnmatch.fnmatchcase(name_text + "-AbCdEf", p)
                   for p in _secret_patterns(rendered, role)):
            found.append(f"{role} may not read the secret named {name_text!r}")
    if "${Id}" not in name_text:
        found.append("the secret's name has no piece of the stack's id (a stack made again "
                     "under the same name would collide with the deleted secret)")
    return found


def _serving(config: dict[str, Any], path: str) -> dict[str, Any]:
    for behaviour in config.get("CacheBehaviors", []):
        if fnmatch.fnmatchcase(path, behaviour["PathPattern"]):
            return behaviour  # type: ignore[no-any-return]
    return config["DefaultCacheBehavior"]  # type: ignore[no-any-return]


def prebuild_route(t: Template) -> list[str]:
    """``POST /api/prebuild`` goes to the REST API (the Chalice route), uncached, with every
    viewer header (X-Hub-Signature-256, X-Gitlab-Token, X-GitHub-Delivery, Authorization)
    and the body as sent."""
    config = t["Resources"]["Distribution"]["Properties"]["DistributionConfig"]
    behaviour = _serving(config, "/api/prebuild")
    found = []
    if behaviour["TargetOriginId"] != "api":
        found.append(f"/api/prebuild goes to {behaviour['TargetOriginId']}, not the REST API")
    if "POST" not in behaviour.get("AllowedMethods", []):
        found.append("/api/prebuild does not allow POST")
    if behaviour.get("OriginRequestPolicyId") != ALL_VIEWER_EXCEPT_HOST:
        found.append("/api/prebuild does not forward the signature headers")
    if behaviour.get("CachePolicyId") != "4135ea2d-6df8-44a3-9df3-4b5a84be39ad":
        found.append("/api/prebuild may be cached")
    if any(f.get("EventType") == "viewer-request"
           for f in behaviour.get("FunctionAssociations", [])):
        found.append("a CloudFront Function answers /api/prebuild")
    origin: dict[str, Any] = next(
        (o for o in config["Origins"] if o["Id"] == behaviour["TargetOriginId"]), {})
    if "RestAPI" not in json.dumps(origin.get("DomainName")):
        found.append("the api origin is not this stack's REST API")
    return found


def prebuild_permissions(t: Template) -> list[str]:
    """Each function may start a build of this stack's project only, upload sources under
    sources/ only, and look up (or make) this stack's environment repository only."""
    wanted = {
        "codebuild:StartBuild": {"Fn::GetAtt": ["BuildProject", "Arn"]},
        "s3:PutObject": {"Fn::Sub": "${SessionsBucket.Arn}/sources/*"},
        "ecr:DescribeImages": {"Fn::GetAtt": ["EnvironmentRepository", "Arn"]},
        "ecr:CreateRepository": {"Fn::GetAtt": ["EnvironmentRepository", "Arn"]},
    }
    found = []
    for role in LAMBDA_ROLES:
        grants: dict[str, list[Any]] = {}
        for statement in _statements(t, role):
            if statement["Effect"] != "Allow" or "Condition" in statement:
                continue
            actions = statement["Action"] if isinstance(statement["Action"], list) else [
                statement["Action"]]
            resources = statement["Resource"] if isinstance(statement["Resource"], list) \
                else [statement["Resource"]]
            for action in actions:
                grants.setdefault(action, []).extend(resources)
        for action, resource in wanted.items():
            if grants.get(action) != [resource]:
                found.append(f"{role}: {action} on {grants.get(action)}, not {resource}")
    return found


def saved_changes_expire(t: Template) -> list[str]:
    """restores/ (saved changes of anonymous sessions) expires after RestoreDays, with
    unfinished uploads aborted after a day; the hosts are told the same number of days."""
    props = t["Resources"]["SessionsBucket"]["Properties"]
    rules = props.get("LifecycleConfiguration", {}).get("Rules", [])
    mine = [r for r in rules if r.get("Status") == "Enabled"
            and (r.get("Prefix") or r.get("Filter", {}).get("Prefix")) == "restores/"]
    found = []
    if len(mine) != 1:
        return [f"{len(mine)} enabled lifecycle rules on restores/, not one"]
    [rule] = mine
    if rule.get("ExpirationInDays") != {"Ref": "RestoreDays"}:
        found.append(f"restores/ expires after {rule.get('ExpirationInDays')}, not RestoreDays")
    if rule.get("AbortIncompleteMultipartUpload", {}).get("DaysAfterInitiation") != 1:
        found.append("unfinished uploads of restores/ are not aborted after a day")
    for host, env in _environments(t).items():
        if env.get("BINDERLESS_RESTORE_DAYS") != {"Ref": "RestoreDays"}:
            found.append(f"{host}: BINDERLESS_RESTORE_DAYS is not RestoreDays")
    return found


def test_the_webhook_secret_parameter_is_optional_and_never_echoed(dry_run: DryRun) -> None:
    parameter = dry_run.service["Parameters"]["WebhookSecret"]
    assert parameter["NoEcho"] is True and parameter["Default"] == ""
    pattern = re.compile(parameter["AllowedPattern"])
    assert pattern.fullmatch("") and pattern.fullmatch(SECRET)
    assert not pattern.fullmatch("too-short") and not pattern.fullmatch("has a space in it!!")


@pytest.mark.parametrize("given", [{}, {"WebhookSecret": SECRET}], ids=["off", "on"])
def test_the_webhook_secret_reaches_the_hosts_as_a_reference(dry_run: DryRun,
                                                             given: dict[str, str]) -> None:
    assert webhook_secret(render(dry_run.service, given)) == []


def test_the_stack_passes_the_prebuild_and_restore_checks(dry_run: DryRun) -> None:
    assert prebuild_route(dry_run.service) == []
    assert prebuild_permissions(dry_run.service) == []
    assert saved_changes_expire(dry_run.service) == []


def store(t: Template) -> dict[str, Any]:
    return t["Resources"]["WebhookSecretStore"]["Properties"]  # type: ignore[no-any-return]


def value_in_the_environment(t: Template) -> None:
    t["Resources"]["APIHandler"]["Properties"]["Environment"]["Variables"][
        "BINDERLESS_WEBHOOK_SECRET"] = SECRET


def secret_named_outside_the_stack(t: Template) -> None:
    store(t)["Name"] = "webhook"


def secret_named_without_the_id(t: Template) -> None:
    store(t)["Name"] = {"Fn::Sub": ["${AWS::StackName}/webhook", {}]}


def secret_without_the_value(t: Template) -> None:
    store(t)["SecretString"] = "placeholder-placeholder"


def gateway_not_told(t: Template) -> None:
    env = t["Resources"]["GatewayTaskDefinition"]["Properties"]["ContainerDefinitions"][0]
    env["Environment"] = [e for e in env["Environment"]
                          if e["Name"] != "BINDERLESS_WEBHOOK_SECRET"]


def secret_always_made(t: Template) -> None:
    t["Resources"]["WebhookSecretStore"] = {"Type": "AWS::SecretsManager::Secret",
                                            "Properties": {"SecretString": ""}}


def behaviour(t: Template, pattern: str) -> dict[str, Any]:
    config = t["Resources"]["Distribution"]["Properties"]["DistributionConfig"]
    found: dict[str, Any] = next(b for b in config["CacheBehaviors"]
                                 if b["PathPattern"] == pattern)
    return found


def prebuilds_to_the_gateway(t: Template) -> None:
    config = t["Resources"]["Distribution"]["Properties"]["DistributionConfig"]
    config["CacheBehaviors"].insert(0, {**behaviour(t, "/api/me"), "PathPattern": "/api/pre*"})


def prebuilds_read_only(t: Template) -> None:
    behaviour(t, "/api/*")["AllowedMethods"] = ["GET", "HEAD", "OPTIONS"]


def signature_headers_dropped(t: Template) -> None:
    del behaviour(t, "/api/*")["OriginRequestPolicyId"]


def any_project(t: Template) -> None:
    for role in LAMBDA_ROLES:
        for statement in _statements(t, role):
            if statement.get("Sid") == "Prebuilds":
                statement["Resource"] = {"Fn::Sub": "arn:${AWS::Partition}:codebuild:"
                                                    "${AWS::Region}:${AWS::AccountId}:project/*"}


def uploads_anywhere(t: Template) -> None:
    for role in LAMBDA_ROLES:
        for statement in _statements(t, role):
            if statement.get("Sid") == "PrebuildSources":
                statement["Resource"] = {"Fn::Sub": "${SessionsBucket.Arn}/*"}


def no_start_build(t: Template) -> None:
    for role in LAMBDA_ROLES:
        t["Resources"][role]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"] = [
            s for s in _statements(t, role) if s.get("Sid") != "Prebuilds"]


def lifecycle(t: Template) -> list[dict[str, Any]]:
    props = t["Resources"]["SessionsBucket"]["Properties"]
    return props["LifecycleConfiguration"]["Rules"]  # type: ignore[no-any-return]


def restores_kept_forever(t: Template) -> None:
    props = t["Resources"]["SessionsBucket"]["Properties"]
    props["LifecycleConfiguration"]["Rules"] = [r for r in lifecycle(t)
                                                if r.get("Prefix") != "restores/"]


def restores_kept_a_fixed_time(t: Template) -> None:
    next(r for r in lifecycle(t) if r.get("Prefix") == "restores/")["ExpirationInDays"] = 30


def restore_uploads_left_unfinished(t: Template) -> None:
    del next(r for r in lifecycle(t) if r.get("Prefix") == "restores/")[
        "AbortIncompleteMultipartUpload"]


ON = {"WebhookSecret": SECRET}
BREAKAGES: list[tuple[Callable[[Template], list[str]], Callable[[Template], None],
                      dict[str, str] | None]] = [
    (webhook_secret, value_in_the_environment, ON),
    (webhook_secret, secret_named_outside_the_stack, ON),
    (webhook_secret, secret_named_without_the_id, ON),
    (webhook_secret, secret_without_the_value, ON),
    (webhook_secret, gateway_not_told, ON),
    (webhook_secret, secret_always_made, {}),
    (prebuild_route, prebuilds_to_the_gateway, None),
    (prebuild_route, prebuilds_read_only, None),
    (prebuild_route, signature_headers_dropped, None),
    (prebuild_permissions, any_project, None),
    (prebuild_permissions, uploads_anywhere, None),
    (prebuild_permissions, no_start_build, None),
    (saved_changes_expire, restores_kept_forever, None),
    (saved_changes_expire, restores_kept_a_fixed_time, None),
    (saved_changes_expire, restore_uploads_left_unfinished, None),
]


@pytest.mark.parametrize(("check", "breakage", "given"), BREAKAGES,
                         ids=[b.__name__ for _, b, _ in BREAKAGES])
def test_each_check_fails_on_a_broken_template(
        dry_run: DryRun, check: Callable[[Template], list[str]],
        breakage: Callable[[Template], None], given: dict[str, str] | None) -> None:
    template = render(dry_run.service, given) if given is not None else copy.deepcopy(
        dry_run.service)
    if given is not None:
        assert check(template) == []
    breakage(template)
    assert check(template) != []
