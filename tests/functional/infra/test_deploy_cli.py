"""``binderless deploy`` and ``destroy`` against moto: create, update, failure and delete, with
the progress the operator sees.

moto cannot run everything a deployment touches, so three test-only stand-ins fill in:
templates reach moto through ``moto_adapt.adapt`` (CloudFront, CodeBuild ... are not
modelled), the image build is ``FakeImageBuild`` (it "pushes" the images to moto's ECR),
and CloudFront's invalidation is answered by botocore's ``Stubber``. A failed stack is made
by writing the failure into moto's stack, as CloudFormation would report it.
"""

from __future__ import annotations

import io
import json
import shutil
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import ANY, Stubber
from moto import mock_aws
from moto.cloudformation.models import Event, cloudformation_backends

from binderless.cli import build_parser
from binderless.deploy.cli import run
from binderless.deploy.package import Packaged, load_packaged
from tests.ecr_fakes import manifest
from tests.functional.infra.conftest import DryRun
from tests.functional.infra.moto_adapt import adapt

REGION = "us-east-1"
ACCOUNT = "123456789012"


class FakeImageBuild:
    """CodeBuild for the image project: one poll in progress, then the images are pushed
    (or, with ``fail``, the build fails with a log)."""

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.started: list[dict[str, Any]] = []

    def start_build(self, **request: Any) -> dict[str, Any]:
        self.started.append(request)
        return {"build": {"id": f"{request['projectName']}:1", "buildStatus": "IN_PROGRESS",
                          "currentPhase": "PROVISIONING"}}

    def batch_get_builds(self, ids: list[str]) -> dict[str, Any]:
        request = self.started[-1]
        tag = request["environmentVariablesOverride"][0]["value"]
        stack = request["projectName"].removesuffix("-images")
        if self.fail:
            logs = boto3.client("logs", region_name=REGION)
            logs.create_log_group(logGroupName="/images")
            logs.create_log_stream(logGroupName="/images", logStreamName="1")
            logs.put_log_events(logGroupName="/images", logStreamName="1", logEvents=[
                {"timestamp": int(time.time() * 1000),
                 "message": "ERROR: failed to solve: python:3.11-slim"}])
            return {"builds": [{"id": ids[0], "buildStatus": "FAILED",
                                "logs": {"groupName": "/images", "streamName": "1"}}]}
        ecr = boto3.client("ecr", region_name=REGION)
        for repository in (f"{stack}/gateway", f"{stack}/runner"):
            ecr.put_image(repositoryName=repository, imageManifest=manifest(repository + tag),
                          imageTag=tag)
        return {"builds": [{"id": ids[0], "buildStatus": "SUCCEEDED", "currentPhase": "COMPLETED"}]}


@dataclass
class Account:
    """moto's clients for the executor, with the stand-ins and a switch to fail a stack."""

    images: FakeImageBuild = field(default_factory=FakeImageBuild)
    fail_stack: dict[str, str] = field(default_factory=dict)  # stack -> final status
    invalidations: int = 0
    made: dict[str, Any] = field(default_factory=dict)

    def __call__(self, service: str) -> Any:
        if service == "codebuild":
            return self.images
        if service not in self.made:
            client = boto3.client(service, region_name=REGION)
            if service == "cloudformation":
                for operation in ("CreateStack", "UpdateStack"):
                    client.meta.events.register(
                        f"before-parameter-build.cloudformation.{operation}", self._adapt)
                    client.meta.events.register(
                        f"after-call.cloudformation.{operation}", self._maybe_fail)
                client.meta.events.register("before-call.cloudformation.DeleteStack",
                                            self._empty_image_repositories)
            if service == "cloudfront":
                stubber = Stubber(client)
                for _ in range(5):
                    stubber.add_response("create_invalidation", {"Invalidation": {
                        "Id": "I1", "Status": "InProgress", "CreateTime": "2026-01-01T00:00:00Z",
                        "InvalidationBatch": {"Paths": {"Quantity": 1, "Items": ["/*"]},
                                              "CallerReference": "x"}}},
                        {"DistributionId": ANY, "InvalidationBatch": ANY})
                stubber.activate()
            self.made[service] = client
        return self.made[service]

    def _adapt(self, params: dict[str, Any], **kwargs: Any) -> None:
        # moto remembers only the parameters given explicitly, and fails on UsePreviousValue
        # for one left at its default; without it, moto takes the default, as AWS would.
        stacks = cloudformation_backends[ACCOUNT][REGION].stacks.values()
        given = next((s.parameters for s in stacks if s.name == params.get("StackName")
                      and s.status != "DELETE_COMPLETE"), {})
        params["Parameters"] = [p for p in params.get("Parameters", [])
                                if not p.get("UsePreviousValue") or p["ParameterKey"] in given]
        if "TemplateURL" in params:
            bucket, key = params.pop("TemplateURL").split("://", 1)[1].split("/", 1)
            body = boto3.client("s3", region_name=REGION).get_object(
                Bucket=bucket.split(".s3.", 1)[0], Key=key)["Body"].read()
        else:
            body = params.pop("TemplateBody")
        params["TemplateBody"] = json.dumps(adapt(json.loads(body)))

    def _empty_image_repositories(self, params: dict[str, Any], **kwargs: Any) -> None:
        """moto ignores EmptyOnDelete on ECR repositories; AWS empties them itself."""
        ecr = boto3.client("ecr", region_name=REGION)
        for repository in ecr.describe_repositories()["repositories"]:
            name = repository["repositoryName"]
            if name.endswith(("/gateway", "/runner")):
                images = ecr.list_images(repositoryName=name)["imageIds"]
                if images:
                    ecr.batch_delete_image(repositoryName=name, imageIds=images)

    def _maybe_fail(self, parsed: dict[str, Any], model: Any, **kwargs: Any) -> None:
        backend = cloudformation_backends[ACCOUNT][REGION]
        stack = backend.stacks.get(parsed.get("StackId", ""))
        if stack is None or stack.name not in self.fail_stack:
            return
        status = self.fail_stack.pop(stack.name)
        if stack.events[-1].resource_status in ("CREATE_COMPLETE", "UPDATE_COMPLETE"):
            stack.events.pop()  # it did not complete after all
        failed = "CREATE_FAILED" if status == "ROLLBACK_COMPLETE" else "UPDATE_FAILED"
        stack.events.append(Event(stack.stack_id, stack.name, "GatewayService", "",
                                  "AWS::ECS::Service", failed,
                                  "Resource handler returned message: \"Invalid request "
                                  "provided: CannotPullContainerError\"", None))
        stack.events.append(Event(stack.stack_id, stack.name, "SessionsBucket", "",
                                  "AWS::S3::Bucket", "CREATE_FAILED",
                                  "Resource creation cancelled", None))
        stack._add_stack_event(status)
        stack.status = status


@pytest.fixture
def account() -> Iterator[Account]:
    with mock_aws():
        yield Account()


@pytest.fixture
def packager(dry_run: DryRun) -> Any:
    def copy_dry_run(out: Path, *, environ: Mapping[str, str] | None = None) -> Packaged:
        shutil.copytree(dry_run.out, out, dirs_exist_ok=True)
        return load_packaged(out)
    return copy_dry_run


def existing_vpc() -> tuple[str, ...]:
    """A VPC made outside the stack: moto cannot delete the endpoints, NAT gateway and
    internet gateway of a stack-made VPC, so the tests that delete or update use this."""
    ec2 = boto3.client("ec2", region_name=REGION)
    vpc = ec2.create_vpc(CidrBlock="10.9.0.0/16")["Vpc"]["VpcId"]
    subnets = [ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.9.{i}.0/24",
                                 AvailabilityZone=f"{REGION}{zone}")["Subnet"]["SubnetId"]
               for i, zone in enumerate("ab")]
    return ("--param", f"VpcId={vpc}", "--param", f"SubnetIds={','.join(subnets)}")


def binderless(account: Account, packager: Any, *argv: str,
               answers: tuple[str, ...] = ()) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    given = list(answers)
    status = run(build_parser().parse_args(list(argv)), clients=account, out=out, err=err,
                 sleep=lambda seconds: None, packager=packager,
                 ask=(lambda prompt: given.pop(0)) if answers else None)
    return status, out.getvalue(), err.getvalue()


def stack_parameters(name: str) -> dict[str, str]:
    stack = boto3.client("cloudformation", region_name=REGION).describe_stacks(
        StackName=name)["Stacks"][0]
    return {p["ParameterKey"]: p["ParameterValue"] for p in stack["Parameters"]}


def outputs(name: str) -> dict[str, str]:
    stack = boto3.client("cloudformation", region_name=REGION).describe_stacks(
        StackName=name)["Stacks"][0]
    return {o["OutputKey"]: o["OutputValue"] for o in stack["Outputs"]}


def deployed_stacks() -> set[str]:
    cf = boto3.client("cloudformation", region_name=REGION)
    return {s["StackName"] for s in cf.list_stacks()["StackSummaries"]
            if s["StackStatus"] != "DELETE_COMPLETE"}


def test_deploy_creates_both_stacks_builds_the_images_and_uploads_the_site(
        account: Account, packager: Any, dry_run: DryRun) -> None:
    status, out, err = binderless(account, packager, "deploy", "--stack", "demo",
                                  "--region", REGION)
    assert (status, err) == (0, "")
    lines = out.splitlines()
    assert lines[0].startswith(f"AWS account {ACCOUNT}, region {REGION} (as arn:aws:")
    assert lines[1].startswith("Packaging binderless into ")
    assert lines.index("Creating the stack demo-assets...") < lines.index(
        "The stack demo-assets is ready.") < lines.index("Creating the stack demo...")
    # moto reports the stacks' own events only (test_progress covers resources' events).
    assert any("CREATE_COMPLETE" in line and "AWS::CloudFormation::Stack" in line
               and line.endswith(" demo-assets") for line in lines)
    assert any("CREATE_IN_PROGRESS" in line and line.endswith(" demo  User Initiated")
               for line in lines)
    assert "  image build: PROVISIONING" in lines
    tag = load_packaged(dry_run.out).image_tag
    assert f"The images {tag} are built." in lines
    assert any(line.startswith("  Launch repositories at https://") for line in lines)

    parameters = stack_parameters("demo")
    assert parameters["ImageTag"] == tag
    assert parameters["OriginFacingPrefixListId"].startswith("pl-")
    assert parameters["ArtifactsBucket"] == outputs("demo-assets")["ArtifactsBucket"]
    [build] = account.images.started
    assert build["sourceLocationOverride"] == (
        f"{parameters['ArtifactsBucket']}/images/{tag}.zip")
    s3 = boto3.client("s3", region_name=REGION)
    s3.head_object(Bucket=parameters["ArtifactsBucket"], Key=parameters["LambdaCodeKey"])
    site = outputs("demo")["SiteBucket"]
    page = s3.get_object(Bucket=site, Key="loading.html")
    assert page["ContentType"] == "text/html"
    assert b"{{og_title}}" not in page["Body"].read()
    assert s3.get_object(Bucket=site, Key="assets/js/loading.js")["ContentType"] in (
        "text/javascript", "application/javascript")


def test_an_update_keeps_what_it_is_not_told_to_change(account: Account, packager: Any) -> None:
    binderless(account, packager, "deploy", "--stack", "demo", "--region", REGION,
               "--param", "MaxSessions=50", *existing_vpc())
    status, out, err = binderless(account, packager, "deploy", "--stack", "demo",
                                  "--region", REGION, "--param", "SessionMemory=8192")
    assert (status, err) == (0, "")
    assert "Updating the stack demo-assets..." in out and "Updating the stack demo..." in out
    assert "are built already." in out and len(account.images.started) == 1
    assert "is there already." in out  # the unchanged Lambda package is not uploaded again
    parameters = stack_parameters("demo")
    assert (parameters["MaxSessions"], parameters["SessionMemory"]) == ("50", "8192")
    assert parameters["VpcId"].startswith("vpc-")  # given only the first time


def test_a_pinned_image_tag_must_exist(account: Account, packager: Any) -> None:
    status, _out, err = binderless(account, packager, "deploy", "--stack", "demo",
                                  "--region", REGION, "--param", "ImageTag=old")
    assert status == 1
    assert err == ("binderless deploy: ImageTag=old: there is no image demo/gateway:old, "
                   "demo/runner:old. Leave ImageTag out to build this checkout's images.\n")
    assert deployed_stacks() == {"demo-assets"}


def test_a_failed_image_build_shows_the_end_of_its_log(packager: Any) -> None:
    with mock_aws():
        account = Account(images=FakeImageBuild(fail=True))
        status, _out, err = binderless(account, packager, "deploy", "--stack", "demo",
                                      "--region", REGION)
    assert status == 1
    assert err.startswith("binderless deploy: the image build ended FAILED.\n")
    assert "  ERROR: failed to solve: python:3.11-slim" in err


def test_a_failed_creation_names_the_failing_resource_and_is_retried_cleanly(
        account: Account, packager: Any) -> None:
    account.fail_stack["demo"] = "ROLLBACK_COMPLETE"
    vpc = existing_vpc()
    status, out, err = binderless(account, packager, "deploy", "--stack", "demo",
                                  "--region", REGION, *vpc)
    assert status == 1
    assert any("CREATE_FAILED" in line and line.endswith("CannotPullContainerError\"")
               for line in out.splitlines())
    assert err == (
        "binderless deploy: the stack demo ended ROLLBACK_COMPLETE.\n"
        "  GatewayService (AWS::ECS::Service): Resource handler returned message: \"Invalid "
        "request provided: CannotPullContainerError\"\n"
        "Nothing was created. Fix the cause and run binderless deploy again (it deletes the "
        "failed stack first).\n")
    assert "Traceback" not in out + err
    status, out, err = binderless(account, packager, "deploy", "--stack", "demo",
                                  "--region", REGION, *vpc)
    assert (status, err) == (0, "")
    assert ("The stack demo never finished its creation (ROLLBACK_COMPLETE); deleting it "
            "before creating it again.") in out
    assert "Creating the stack demo..." in out


def test_a_failed_update_is_rolled_back_and_said_so(account: Account, packager: Any) -> None:
    binderless(account, packager, "deploy", "--stack", "demo", "--region", REGION,
               *existing_vpc())
    account.fail_stack["demo"] = "UPDATE_ROLLBACK_COMPLETE"
    status, _out, err = binderless(account, packager, "deploy", "--stack", "demo",
                                  "--region", REGION, "--param", "GatewayMinCount=2")
    assert status == 1
    assert err.startswith("binderless deploy: the stack demo ended UPDATE_ROLLBACK_COMPLETE.\n"
                          "  GatewayService (AWS::ECS::Service): ")
    assert err.endswith("The stack is back as it was before this deployment.\n")


def test_destroy_keeps_the_user_data_when_asked_to(account: Account, packager: Any) -> None:
    binderless(account, packager, "deploy", "--stack", "demo", "--region", REGION,
               *existing_vpc())
    kept = outputs("demo")
    status, out, err = binderless(account, packager, "destroy", "--stack", "demo",
                                  "--region", REGION, answers=("demo", "keep"))
    assert (status, err) == (0, "")
    assert "Deleting the stack demo..." in out
    assert any("DELETE_COMPLETE" in line and line.endswith(" demo")
               for line in out.splitlines())
    assert f"  the state table: {kept['StateTable']} (AWS::DynamoDB::Table)" in out
    assert f"  the sessions bucket: {kept['SessionsBucket']} (AWS::S3::Bucket)" in out
    assert out.endswith("binderless demo is gone from us-east-1, its user data kept.\n")
    assert deployed_stacks() == set()
    boto3.client("dynamodb", region_name=REGION).describe_table(TableName=kept["StateTable"])
    s3 = boto3.client("s3", region_name=REGION)
    s3.head_bucket(Bucket=kept["SessionsBucket"])
    assert kept["SiteBucket"] not in {b["Name"] for b in s3.list_buckets()["Buckets"]}
    efs = boto3.client("efs", region_name=REGION)
    assert [f["FileSystemId"] for f in efs.describe_file_systems()["FileSystems"]] == [
        kept["FileSystem"]]


def test_destroy_deletes_the_user_data_when_asked_to(account: Account, packager: Any) -> None:
    binderless(account, packager, "deploy", "--stack", "demo", "--region", REGION,
               *existing_vpc())
    gone = outputs("demo")
    status, out, err = binderless(account, packager, "destroy", "--stack", "demo",
                                  "--region", REGION, "--delete-data", "--yes")
    assert (status, err) == (0, "")
    assert f"Deleting the state table: {gone['StateTable']}" in out
    assert out.endswith("binderless demo is gone from us-east-1.\n")
    dynamodb = boto3.client("dynamodb", region_name=REGION)
    assert dynamodb.list_tables()["TableNames"] == []
    assert boto3.client("s3", region_name=REGION).list_buckets()["Buckets"] == []
    assert boto3.client("efs", region_name=REGION).describe_file_systems()["FileSystems"] == []
    assert boto3.client("ecr", region_name=REGION).describe_repositories()["repositories"] == []


def test_destroy_asks_before_it_deletes(account: Account, packager: Any) -> None:
    binderless(account, packager, "deploy", "--stack", "demo", "--region", REGION,
               *existing_vpc())
    status, out, err = binderless(account, packager, "destroy", "--stack", "demo",
                                  "--region", REGION, answers=("dmeo",))
    assert (status, out) == (1, "Nothing was deleted.\n")
    status, out, err = binderless(account, packager, "destroy", "--stack", "demo",
                                  "--region", REGION, "--keep-data")
    assert status == 1
    assert err == ("binderless destroy: binderless destroy asks before it deletes: pass --yes "
                   "and one of --keep-data or --delete-data when there is no terminal\n")
    assert deployed_stacks() == {"demo", "demo-assets"}


def test_destroying_nothing_says_so(account: Account, packager: Any) -> None:
    status, out, _err = binderless(account, packager, "destroy", "--stack", "ghost",
                                  "--region", REGION, "--keep-data", "--yes")
    assert status == 0
    assert "There is no stack ghost; nothing to delete." in out


def test_without_a_region_nothing_runs(monkeypatch: pytest.MonkeyPatch, packager: Any,
                                       tmp_path: Path) -> None:
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    status, out, err = binderless(Account(), packager, "deploy", "--stack", "demo")
    assert (status, out) == (1, "")
    assert err == "binderless deploy: no AWS region: pass --region REGION or set AWS_REGION\n"


def test_without_credentials_the_operator_is_told(monkeypatch: pytest.MonkeyPatch,
                                                  packager: Any, tmp_path: Path) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                 "AWS_SECURITY_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    out, err = io.StringIO(), io.StringIO()
    args = build_parser().parse_args(["deploy", "--stack", "demo", "--region", REGION])
    status = run(args, out=out, err=err, packager=packager, sleep=lambda s: None)
    assert (status, out.getvalue()) == (1, "")  # nothing was packaged either
    assert err.getvalue().startswith("binderless deploy: no AWS credentials were found")


def test_delete_data_deletes_the_sign_in_accounts(account: Account) -> None:
    # moto's CloudFormation makes no user pool (SignIn=cognito): the executor's step for a
    # kept one is tried on a pool made through moto's Cognito API.
    from binderless.deploy.executor import RETAINED_KINDS, AwsExecutor

    cognito = boto3.client("cognito-idp", region_name=REGION)
    pool = cognito.create_user_pool(PoolName="demo-binderless")["UserPool"]["Id"]
    executor = AwsExecutor(account, REGION, io.StringIO(), sleep=lambda seconds: None)
    executor._delete_retained("AWS::Cognito::UserPool", pool)
    executor._delete_retained("AWS::Cognito::UserPool", pool)  # gone already: fine
    assert cognito.list_user_pools(MaxResults=10)["UserPools"] == []
    assert RETAINED_KINDS["AWS::Cognito::UserPool"] == "the sign-in accounts"
