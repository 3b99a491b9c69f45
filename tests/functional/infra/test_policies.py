"""Policy tests over the packaged templates: they pass as generated, and each check fails on
a template broken the way it guards against."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from tests.functional.infra.conftest import DryRun
from tests.functional.infra.policies import CHECKS

Template = dict[str, Any]


@pytest.mark.parametrize("check", sorted(CHECKS))
def test_the_generated_templates_pass(dry_run: DryRun, check: str) -> None:
    assert CHECKS[check](dry_run.service) == []
    assert CHECKS[check](dry_run.assets) == []


def test_only_the_image_build_runs_outside_the_vpc(dry_run: DryRun) -> None:
    exempt = {name for template in (dry_run.service, dry_run.assets)
              for name, r in template["Resources"].items()
              if r.get("Metadata", {}).get("binderless", {}).get("BuildsUserCode") is False}
    assert exempt == {"ImageBuildProject"}
    source = dry_run.assets["Resources"]["ImageBuildProject"]["Properties"]["Source"]
    assert "functions/gateway.Dockerfile" in source["BuildSpec"]


def statements(template: Template, role: str) -> list[dict[str, Any]]:
    policies = template["Resources"][role]["Properties"]["Policies"]
    return policies[0]["PolicyDocument"]["Statement"]  # type: ignore[no-any-return]


def grant_everything(t: Template) -> None:
    statements(t, "GatewayTaskRole").append({"Effect": "Allow", "Action": "*",
                                             "Resource": {"Fn::GetAtt": ["StateTable", "Arn"]}})


def grant_a_service(t: Template) -> None:
    statements(t, "BuildRole")[0]["Action"] = ["logs:*"]


def scope_nothing(t: Template) -> None:
    statements(t, "GatewayTaskRole")[0]["Resource"] = "*"  # dynamodb on every table


def unencrypt_table(t: Template) -> None:
    del t["Resources"]["StateTable"]["Properties"]["SSESpecification"]


def unencrypt_homes(t: Template) -> None:
    t["Resources"]["FileSystem"]["Properties"]["Encrypted"] = False


def unencrypt_bucket(t: Template) -> None:
    del t["Resources"]["SessionsBucket"]["Properties"]["BucketEncryption"]


def unencrypt_images(t: Template) -> None:
    del t["Resources"]["EnvironmentRepository"]["Properties"]["EncryptionConfiguration"]


def sessions_in_public_subnet(t: Template) -> None:
    env = t["Resources"]["GatewayTaskDefinition"]["Properties"]["ContainerDefinitions"][0]
    for variable in env["Environment"]:
        if variable["Name"] == "BINDERLESS_SUBNETS":
            variable["Value"] = {"Ref": "PublicSubnetA"}


def builds_in_public_subnet(t: Template) -> None:
    t["Resources"]["BuildProject"]["Properties"]["VpcConfig"]["Subnets"] = [
        {"Ref": "PublicSubnetB"}]


def builds_outside_the_vpc(t: Template) -> None:
    del t["Resources"]["BuildProject"]["Properties"]["VpcConfig"]


def gateway_with_public_address(t: Template) -> None:
    network = t["Resources"]["GatewayService"]["Properties"]["NetworkConfiguration"]
    network["AwsvpcConfiguration"]["AssignPublicIp"] = "ENABLED"


def private_subnet_routed_to_the_internet(t: Template) -> None:
    t["Resources"]["PrivateSubnetARouteTable"]["Properties"]["RouteTableId"] = {
        "Ref": "PublicRouteTable"}


def unblock_public_access(t: Template) -> None:
    t["Resources"]["SiteBucket"]["Properties"]["PublicAccessBlockConfiguration"][
        "RestrictPublicBuckets"] = False


def bucket_for_everyone(t: Template) -> None:
    policy = t["Resources"]["SiteBucketPolicy"]["Properties"]["PolicyDocument"]
    policy["Statement"][0]["Principal"] = "*"


def any_distribution(t: Template) -> None:
    policy = t["Resources"]["SiteBucketPolicy"]["Properties"]["PolicyDocument"]
    del policy["Statement"][0]["Condition"]


def internet_facing_balancer(t: Template) -> None:
    t["Resources"]["GatewayLoadBalancer"]["Properties"]["Scheme"] = "internet-facing"


def balancer_open_to_all(t: Template) -> None:
    t["Resources"]["LoadBalancerSecurityGroup"]["Properties"]["SecurityGroupIngress"].append(
        {"IpProtocol": "tcp", "FromPort": 80, "ToPort": 80, "CidrIp": "0.0.0.0/0"})


def balancer_opened_by_another_rule(t: Template) -> None:
    t["Resources"]["ExtraIngress"] = {"Type": "AWS::EC2::SecurityGroupIngress", "Properties": {
        "GroupId": {"Fn::GetAtt": ["LoadBalancerSecurityGroup", "GroupId"]},
        "IpProtocol": "tcp", "FromPort": 80, "ToPort": 80, "CidrIp": "10.0.0.0/8"}}


def balancer_without_cloudfront(t: Template) -> None:
    del t["Resources"]["GatewayVpcOrigin"]


BREAKAGES: list[tuple[str, Callable[[Template], None]]] = [
    ("wildcard actions", grant_everything),
    ("wildcard actions", grant_a_service),
    ("unscoped resources", scope_nothing),
    ("unencrypted data stores", unencrypt_table),
    ("unencrypted data stores", unencrypt_homes),
    ("unencrypted data stores", unencrypt_bucket),
    ("unencrypted data stores", unencrypt_images),
    ("compute in public subnets", sessions_in_public_subnet),
    ("compute in public subnets", builds_in_public_subnet),
    ("compute in public subnets", builds_outside_the_vpc),
    ("compute in public subnets", gateway_with_public_address),
    ("compute in public subnets", private_subnet_routed_to_the_internet),
    ("public buckets", unblock_public_access),
    ("public buckets", bucket_for_everyone),
    ("public buckets", any_distribution),
    ("exposed load balancers", internet_facing_balancer),
    ("exposed load balancers", balancer_open_to_all),
    ("exposed load balancers", balancer_opened_by_another_rule),
    ("exposed load balancers", balancer_without_cloudfront),
]


@pytest.mark.parametrize(("check", "breakage"), BREAKAGES,
                         ids=[b.__name__ for _, b in BREAKAGES])
def test_each_check_fails_on_a_broken_template(dry_run: DryRun, check: str,
                                               breakage: Callable[[Template], None]) -> None:
    broken = copy.deepcopy(dry_run.service)
    breakage(broken)
    assert CHECKS[check](broken) != []
