"""The packaged service stack on moto's CloudFormation, and the control plane on top of it:
the resources the stack makes are the ones the settings it hands the gateway name."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws
from moto.cloudformation.parsing import get_model_map

from binderless.aws.dynamodb import table_definition
from binderless.aws.wiring import aws_service
from binderless.settings import Settings, load_settings
from tests.functional.infra.conftest import GATEWAY_ONLY, DryRun
from tests.functional.infra.moto_adapt import MOTO_IGNORED_TYPES, adapt, stand_in

REGION = "us-east-1"
ACCOUNT = "123456789012"


def parameters(**values: str) -> list[dict[str, str]]:
    return [{"ParameterKey": k, "ParameterValue": v} for k, v in values.items()]


def create(dry_run: DryRun, name: str = "binderless", provided: dict[str, str] | None = None,
           **extra: str) -> dict[str, Any]:
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket="artifacts")
    s3.upload_file(str(dry_run.out / "deployment.zip"), "artifacts", "lambda/code.zip")
    cf = boto3.client("cloudformation", region_name=REGION)
    cf.create_stack(StackName=name, TemplateBody=json.dumps(adapt(dry_run.service, provided)),
                    Capabilities=["CAPABILITY_IAM"], Parameters=parameters(
                        ArtifactsBucket="artifacts", LambdaCodeKey="lambda/code.zip",
                        ImageTag="t1", OriginFacingPrefixListId="pl-3b927c52", **extra))
    stack: dict[str, Any] = cf.describe_stacks(StackName=name)["Stacks"][0]
    return stack


def gateway_environment(stack: str = "binderless") -> dict[str, str]:
    ecs = boto3.client("ecs", region_name=REGION)
    arns = ecs.list_task_definitions()["taskDefinitionArns"]
    definition = ecs.describe_task_definition(taskDefinition=arns[0])["taskDefinition"]
    container = definition["containerDefinitions"][0]
    assert container["image"] == (f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/{stack}/gateway:t1")
    return {e["name"]: e["value"] for e in container["environment"]}


@pytest.fixture
def moto() -> Iterator[None]:
    with mock_aws():
        yield


def test_moto_ignores_only_the_listed_types(dry_run: DryRun) -> None:
    modelled = set(get_model_map())
    kinds = {r["Type"] for t in (dry_run.service, dry_run.assets)
             for r in t["Resources"].values()}
    assert kinds - modelled == set(MOTO_IGNORED_TYPES) - {"AWS::ApiGateway::Deployment"}
    assert "AWS::ApiGateway::Deployment" in kinds


def test_the_stack_deploys_and_names_what_the_control_plane_uses(dry_run: DryRun, moto: None,
                                                                tmp_path: Path) -> None:
    # moto's CloudFormation makes no secret: the cookie key (which also signs anonymous
    # visitors' cookies, so it is there without sign-in) is made here, as it would be.
    cookie_key = boto3.client("secretsmanager", region_name=REGION).create_secret(
        Name="cookie-key", SecretString="k" * 64)["ARN"]
    stack = create(dry_run, provided={"SignInCookieKey": cookie_key})
    assert stack["StackStatus"] == "CREATE_COMPLETE"
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack["Outputs"]}
    env = gateway_environment()
    assert env["BINDERLESS_AUTH_SECRET"] == f"secretsmanager:{cookie_key}"
    assert env["BINDERLESS_PUBLIC_URL"] == f"https://{stand_in('Distribution', 'DomainName')}"
    settings = load_settings(env)
    assert settings.mode == "aws"

    # The state table: the adapter's layout.
    dynamodb = boto3.client("dynamodb", region_name=REGION)
    table = dynamodb.describe_table(TableName=settings.aws_table)["Table"]
    expected = table_definition(settings.aws_table)
    assert table["KeySchema"] == expected["KeySchema"]
    assert [i["IndexName"] for i in table["GlobalSecondaryIndexes"]] == ["gsi1"]
    # moto's CloudFormation drops SSESpecification and TimeToLiveSpecification: the
    # template's are checked in test_dry_run and test_policies.
    assert outputs["StateTable"] == settings.aws_table

    # The sessions bucket, the environment images, the cluster.
    s3 = boto3.client("s3", region_name=REGION)
    s3.head_bucket(Bucket=settings.aws_bucket)
    encryption = s3.get_bucket_encryption(Bucket=settings.aws_bucket)
    assert encryption["ServerSideEncryptionConfiguration"]["Rules"][0][
        "ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    assert outputs["SessionsBucket"] == settings.aws_bucket
    assert settings.ecr_registry == f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com"
    ecr = boto3.client("ecr", region_name=REGION)
    [repository] = ecr.describe_repositories(
        repositoryNames=[settings.ecr_repository])["repositories"]
    assert repository["repositoryName"].startswith("binderless/environments-")
    assert settings.base_image == (f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/binderless-mirror"
                                   "/docker/library/buildpack-deps:jammy")
    ecs = boto3.client("ecs", region_name=REGION)
    [cluster] = ecs.describe_clusters(clusters=[settings.ecs_cluster])["clusters"]
    assert cluster["status"] == "ACTIVE" and outputs["Cluster"] == settings.ecs_cluster
    assert settings.codebuild_project == stand_in("BuildProject")  # moto ignores CodeBuild

    # Sessions: the default layout's subnets, routed to the internet gateway (no NAT
    # gateway), a public address on each task; reachable on 8888 from the gateways only.
    assert settings.session_public_ip is True
    ec2 = boto3.client("ec2", region_name=REGION)
    assert ec2.describe_nat_gateways()["NatGateways"] == []
    # (moto's CloudFormation keeps no subnet associations: the routes of each layout are
    # checked on the rendered template, test_policies' unrouted compute.)
    ec2 = boto3.client("ec2", region_name=REGION)
    subnets = ec2.describe_subnets(SubnetIds=list(settings.subnets))["Subnets"]
    assert len(subnets) == 2 and not any(s["MapPublicIpOnLaunch"] for s in subnets)
    assert len({s["AvailabilityZone"] for s in subnets}) == 2
    assert outputs["SessionSubnets"] == ",".join(settings.subnets)
    [group] = ec2.describe_security_groups(GroupIds=list(settings.security_groups))[
        "SecurityGroups"]
    assert [(r["FromPort"], r["UserIdGroupPairs"] != []) for r in group["IpPermissions"]] == [
        (8888, True)]
    iam = boto3.client("iam", region_name=REGION)
    for arn in (settings.execution_role_arn, settings.task_role_arn):
        role = iam.get_role(RoleName=arn.rsplit("/", 1)[1])["Role"]
        assert "ecs-tasks.amazonaws.com" in json.dumps(role["AssumeRolePolicyDocument"])
    logs = boto3.client("logs", region_name=REGION)
    [group_info] = logs.describe_log_groups(
        logGroupNamePrefix=settings.session_log_group)["logGroups"]
    assert group_info["retentionInDays"] == 30
    assert settings.build_timeout_seconds == 1800.0

    # The operator's parameters reach the settings.
    assert (settings.session_cpu, settings.session_memory) == (1024, 4096)
    assert (settings.max_sessions, settings.max_sessions_per_repo) == (20, 10)
    # Sign-in is off by default: anonymous, ephemeral sessions, no EFS for the gateway.
    assert settings.sign_in_method == "off" and not settings.efs_file_system_id

    # The control plane starts on these settings (every required one is there).
    service = aws_service(load_settings(env, state_dir=tmp_path),
                          lambda name: boto3.client(name, region_name=REGION))
    assert service.store.count_active() == 0


def test_the_functions_run_the_package_with_the_same_settings(dry_run: DryRun,
                                                              moto: None) -> None:
    create(dry_run)
    env = gateway_environment()
    lambda_client = boto3.client("lambda", region_name=REGION)
    functions = {f["Handler"]: f for f in lambda_client.list_functions()["Functions"]}
    assert set(functions) == {"app.app", "app.reconcile", "app.task_stopped",
                              "app.build_finished"}
    for function in functions.values():
        variables = function["Environment"]["Variables"]
        # (moto keeps numbers as numbers here; Lambda's variables are strings)
        assert {k: str(v) for k, v in variables.items() if k.startswith("BINDERLESS_")} == {
            k: v for k, v in env.items() if k not in GATEWAY_ONLY}
    events = boto3.client("events", region_name=REGION)
    rules = events.list_rules()["Rules"]
    assert len(rules) == 3
    schedules = [r for r in rules if r.get("ScheduleExpression")]
    assert [r["ScheduleExpression"] for r in schedules] == ["rate(1 minute)"]
    targets = {t["Arn"] for r in rules for t in events.list_targets_by_rule(Rule=r["Name"])["Targets"]}
    assert targets == {functions[h]["FunctionArn"] for h in
                       ("app.reconcile", "app.task_stopped", "app.build_finished")}


def test_an_existing_vpc_and_its_subnets_are_used_as_given(dry_run: DryRun, moto: None) -> None:
    ec2 = boto3.client("ec2", region_name=REGION)
    vpc = ec2.create_vpc(CidrBlock="10.9.0.0/16")["Vpc"]["VpcId"]
    subnets = [ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.9.{i}.0/24",
                                 AvailabilityZone=f"{REGION}{zone}")["Subnet"]["SubnetId"]
               for i, zone in enumerate("ab")]
    create(dry_run, VpcId=vpc, SubnetIds=",".join(subnets), SessionMemory="8192",
           NetworkLayout="private")
    settings: Settings = load_settings(gateway_environment())
    assert settings.subnets == tuple(subnets)
    assert settings.session_public_ip is False  # the private layout: NAT, no addresses
    assert settings.session_memory == 8192
    assert [v["VpcId"] for v in ec2.describe_vpcs()["Vpcs"] if not v["IsDefault"]] == [vpc]
    [group] = ec2.describe_security_groups(GroupIds=list(settings.security_groups))[
        "SecurityGroups"]
    assert group["VpcId"] == vpc


def test_sign_in_names_the_user_pool_its_secrets_and_the_homes(dry_run: DryRun, moto: None,
                                                               tmp_path: Path) -> None:
    # moto's CloudFormation makes no secret and no Cognito pool: the secrets are made here,
    # as CloudFormation would, and the pool and its client stay stand-ins.
    secrets = boto3.client("secretsmanager", region_name=REGION)
    cookie_key = secrets.create_secret(Name="cookie-key", SecretString="k" * 64)["ARN"]
    client_secret = secrets.create_secret(Name="client-secret", SecretString="s3cr3t")["ARN"]
    stack = create(dry_run, provided={"SignInCookieKey": cookie_key,
                                      "SignInClientSecret": client_secret},
                   SignIn="cognito", MaxProjectsPerUser="3")
    assert stack["StackStatus"] == "CREATE_COMPLETE"
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack["Outputs"]}
    env = gateway_environment()
    assert env["BINDERLESS_SIGN_IN"] == "oidc"
    pool = stand_in("SignInUserPool")
    assert env["BINDERLESS_OIDC_ISSUER"] == f"https://cognito-idp.{REGION}.amazonaws.com/{pool}"
    assert env["BINDERLESS_OIDC_CLIENT_ID"] == stand_in("SignInClient")
    assert env["BINDERLESS_OIDC_CLIENT_SECRET"] == f"secretsmanager:{client_secret}"
    assert env["BINDERLESS_AUTH_SECRET"] == f"secretsmanager:{cookie_key}"

    # The homes: the stack's file system, seen by the gateway through its access point.
    settings = load_settings(env, state_dir=tmp_path)
    assert settings.efs_file_system_id == outputs["FileSystem"]
    assert settings.max_projects_per_user == 3
    efs = boto3.client("efs", region_name=REGION)
    [point] = efs.describe_access_points(FileSystemId=settings.efs_file_system_id)["AccessPoints"]
    assert point["PosixUser"] == {"Uid": 1000, "Gid": 1000}
    assert point["RootDirectory"]["Path"] == settings.efs_home_root == "/homes"
    [target, _] = efs.describe_mount_targets(FileSystemId=settings.efs_file_system_id)[
        "MountTargets"]
    [nfs] = efs.describe_mount_target_security_groups(
        MountTargetId=target["MountTargetId"])["SecurityGroups"]
    ec2 = boto3.client("ec2", region_name=REGION)
    [group] = ec2.describe_security_groups(GroupIds=[nfs])["SecurityGroups"]
    admitted = {p["GroupId"]: r["FromPort"] for r in group["IpPermissions"]
                for p in r["UserIdGroupPairs"]}
    assert set(admitted.values()) == {2049}
    descriptions = {g["Description"].split(" - ")[0] for g in ec2.describe_security_groups(
        GroupIds=list(admitted))["SecurityGroups"]}
    assert descriptions == {"Session gateway tasks", "Session tasks of signed-in users"}
    assert settings.home_security_groups[0] in admitted
    assert settings.security_groups[0] not in admitted  # anonymous sessions: no NFS

    # The gateway starts: it reads both secrets, and keeps projects where it mounts the
    # homes (here a folder: moto's tasks mount nothing).
    homes = tmp_path / "homes"
    service_ = aws_service(load_settings(env, state_dir=tmp_path, workspaces_dir=str(homes)),
                           lambda name: boto3.client(name, region_name=REGION))
    assert service_.settings.auth_secret == "k" * 64
    assert service_.settings.oidc_client_secret == "s3cr3t"
    assert service_.workspaces is not None and service_.workspaces.root == homes
    points = service_.spawner.access_points  # type: ignore[attr-defined]
    points.roles.settle_seconds = 0  # (IAM's propagation is a real account's)
    mount = points.ensure("u" + "0" * 31)
    assert mount.file_system_id == settings.efs_file_system_id
    # The person's own role, under the stack's path, capped by the stack's boundary.
    role = boto3.client("iam", region_name=REGION).get_role(
        RoleName=mount.task_role_arn.rsplit("/", 1)[-1])["Role"]
    assert role["Path"] == env["BINDERLESS_HOME_ROLE_PATH"]
    assert role["PermissionsBoundary"]["PermissionsBoundaryArn"] == env[
        "BINDERLESS_HOME_ROLE_BOUNDARY"]

    # The functions get none of it.
    lambda_client = boto3.client("lambda", region_name=REGION)
    for function in lambda_client.list_functions()["Functions"]:
        assert not set(function["Environment"]["Variables"]) & GATEWAY_ONLY
