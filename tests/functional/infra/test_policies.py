"""Policy tests over the packaged templates: they pass as generated, and each check fails on
a template broken the way it guards against."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from binderless.deploy.estimate import PriceTable, estimate, render
from tests.functional.infra.conftest import DryRun
from tests.functional.infra.policies import CHECKS, RENDERED_CHECKS

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


LAYOUTS = ["public", "private"]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("check", sorted(RENDERED_CHECKS))
def test_each_network_layout_passes(dry_run: DryRun, layout: str, check: str) -> None:
    rendered = render(dry_run.service, {"NetworkLayout": layout})
    assert RENDERED_CHECKS[check](rendered) == []
    for name in CHECKS:  # the checks of the whole template hold for each layout too
        assert CHECKS[name](rendered) == [], name


def test_the_default_network_idles_for_free(dry_run: DryRun) -> None:
    """No NAT gateway, no address of its own, no interface endpoint; builds outside the
    VPC; tasks with public addresses; the private layout keeps its NAT gateway."""
    default = render(dry_run.service)["Resources"]
    kinds = [r["Type"] for r in default.values()]
    assert "AWS::EC2::NatGateway" not in kinds and "AWS::EC2::EIP" not in kinds
    assert not [r for r in default.values() if r["Type"] == "AWS::EC2::VPCEndpoint"
                and r["Properties"]["VpcEndpointType"] != "Gateway"]
    assert "VpcConfig" not in default["BuildProject"]["Properties"]
    assert gateway_setting({"Resources": default}, "BINDERLESS_SESSION_PUBLIC_IP")["Value"] == "true"
    private = render(dry_run.service, {"NetworkLayout": "private"})["Resources"]
    assert [r["Type"] for r in private.values()].count("AWS::EC2::NatGateway") == 1
    assert "VpcConfig" in private["BuildProject"]["Properties"]
    assert gateway_setting({"Resources": private}, "BINDERLESS_SESSION_PUBLIC_IP")["Value"] == "false"


def sessions_without_an_address(t: Template) -> None:
    """What EnableNatGateway=false was: public subnets, no public address, no NAT."""
    gateway_setting(t, "BINDERLESS_SESSION_PUBLIC_IP")["Value"] = "false"


def gateway_without_an_address(t: Template) -> None:
    network = t["Resources"]["GatewayService"]["Properties"]["NetworkConfiguration"]
    network["AwsvpcConfiguration"]["AssignPublicIp"] = "DISABLED"


def private_layout_without_its_nat_route(t: Template) -> None:
    del t["Resources"]["PrivateDefaultRoute"]


def private_layout_with_addresses(t: Template) -> None:
    network = t["Resources"]["GatewayService"]["Properties"]["NetworkConfiguration"]
    network["AwsvpcConfiguration"]["AssignPublicIp"] = "ENABLED"


def private_subnet_routed_to_the_internet(t: Template) -> None:
    t["Resources"]["PrivateSubnetARouteTable"]["Properties"]["RouteTableId"] = {
        "Ref": "PublicRouteTable"}


RENDERED_BREAKAGES: list[tuple[str, str, Callable[[Template], None]]] = [
    ("public", "unrouted compute", sessions_without_an_address),
    ("public", "unrouted compute", gateway_without_an_address),
    ("private", "unrouted compute", private_layout_without_its_nat_route),
    ("private", "compute exposed", private_layout_with_addresses),
    ("private", "compute exposed", private_subnet_routed_to_the_internet),
]


@pytest.mark.parametrize(("layout", "check", "breakage"), RENDERED_BREAKAGES,
                         ids=[b.__name__ for _, _, b in RENDERED_BREAKAGES])
def test_each_layout_check_fails_on_a_broken_layout(
        dry_run: DryRun, layout: str, check: str,
        breakage: Callable[[Template], None]) -> None:
    rendered = render(dry_run.service, {"NetworkLayout": layout})
    broken = copy.deepcopy(rendered)
    breakage(broken)
    assert RENDERED_CHECKS[check](broken) != []


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


def gateway_setting(t: Template, name: str) -> dict[str, Any]:
    env = t["Resources"]["GatewayTaskDefinition"]["Properties"]["ContainerDefinitions"][0]
    return next(v for v in env["Environment"] if v["Name"] == name)  # type: ignore[no-any-return]


def sessions_open_to_the_internet(t: Template) -> None:
    t["Resources"]["SessionSecurityGroup"]["Properties"]["SecurityGroupIngress"].append(
        {"IpProtocol": "tcp", "FromPort": 8888, "ToPort": 8888, "CidrIp": "0.0.0.0/0"})


def gateway_opened_by_another_rule(t: Template) -> None:
    t["Resources"]["ExtraIngress"] = {"Type": "AWS::EC2::SecurityGroupIngress", "Properties": {
        "GroupId": {"Fn::GetAtt": ["GatewaySecurityGroup", "GroupId"]},
        "IpProtocol": "tcp", "FromPort": 8080, "ToPort": 8080, "CidrIpv6": "::/0"}}


def boundary(t: Template) -> list[dict[str, Any]]:
    document = t["Resources"]["HomeRoleBoundary"]["Properties"]["PolicyDocument"]
    return document["Statement"]  # type: ignore[no-any-return]


def anonymous_sessions_may_mount(t: Template) -> None:
    t["Resources"]["SessionTaskRole"]["Properties"]["Policies"] = [{
        "PolicyName": "mount", "PolicyDocument": {"Version": "2012-10-17",
                                                  "Statement": copy.deepcopy(boundary(t))}}]


def anonymous_sessions_reach_nfs(t: Template) -> None:
    t["Resources"]["FileSystemSecurityGroup"]["Properties"]["SecurityGroupIngress"].append(
        {"IpProtocol": "tcp", "FromPort": 2049, "ToPort": 2049,
         "SourceSecurityGroupId": {"Ref": "SessionSecurityGroup"}})


def one_role_for_every_users_sessions(t: Template) -> None:
    """What the stack had before: one role that mounts through any user's access point."""
    role = copy.deepcopy(t["Resources"]["SessionTaskRole"])
    role["Properties"]["Policies"] = [{"PolicyName": "persistent-home", "PolicyDocument": {
        "Version": "2012-10-17", "Statement": copy.deepcopy(boundary(t))}}]
    t["Resources"]["HomeSessionTaskRole"] = role


def homes_mounted_without_an_access_point(t: Template) -> None:
    boundary(t)[0].pop("Condition")


def homes_mounted_through_the_gateways_view(t: Template) -> None:
    del boundary(t)[0]["Condition"]["ArnNotEquals"]


def boundary_allows_more(t: Template) -> None:
    boundary(t)[0]["Action"].append("elasticfilesystem:ClientRootAccess")


def gateway_role_statement(t: Template, sid: str) -> dict[str, Any]:
    return next(st for st in statements(t, "GatewayTaskRole") if st.get("Sid") == sid)


def roles_made_without_the_boundary(t: Template) -> None:
    gateway_role_statement(t, "MakeHomeRoles").pop("Condition")


def roles_made_anywhere(t: Template) -> None:
    gateway_role_statement(t, "MakeHomeRoles")["Resource"] = {
        "Fn::Sub": "arn:${AWS::Partition}:iam::${AWS::AccountId}:role/*"}


def boundary_removable(t: Template) -> None:
    gateway_role_statement(t, "MakeHomeRoles")["Action"].append(
        "iam:DeleteRolePermissionsBoundary")


def file_system_mountable_at_its_root(t: Template) -> None:
    policy = t["Resources"]["FileSystem"]["Properties"]["FileSystemPolicy"]
    policy["Statement"] = [s for s in policy["Statement"] if s.get("Sid") != "AccessPointsOnly"]


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


def sessions_on_the_main_distribution(t: Template) -> None:
    config = t["Resources"]["Distribution"]["Properties"]["DistributionConfig"]
    config["CacheBehaviors"].insert(0, copy.deepcopy(
        t["Resources"]["SessionDistribution"]["Properties"]["DistributionConfig"][
            "CacheBehaviors"][0]))


def session_urls_on_the_site(t: Template) -> None:
    gateway_setting(t, "BINDERLESS_SESSION_URL")["Value"] = {
        "Fn::Sub": "https://${Distribution.DomainName}"}


def signing_in_on_the_sessions_origin(t: Template) -> None:
    config = t["Resources"]["SessionDistribution"]["Properties"]["DistributionConfig"]
    config["CacheBehaviors"].append({**config["CacheBehaviors"][0], "PathPattern": "/auth/*"})


def sessions_origin_serves_everything(t: Template) -> None:
    config = t["Resources"]["SessionDistribution"]["Properties"]["DistributionConfig"]
    del config["DefaultCacheBehavior"]["FunctionAssociations"]


def sessions_origin_named_as_the_site(t: Template) -> None:
    config = t["Resources"]["SessionDistribution"]["Properties"]["DistributionConfig"]
    config["Aliases"] = [{"Ref": "DomainName"}]


BREAKAGES: list[tuple[str, Callable[[Template], None]]] = [
    ("session origin", sessions_on_the_main_distribution),
    ("session origin", session_urls_on_the_site),
    ("session origin", signing_in_on_the_sessions_origin),
    ("session origin", sessions_origin_serves_everything),
    ("session origin", sessions_origin_named_as_the_site),
    ("wildcard actions", grant_everything),
    ("wildcard actions", grant_a_service),
    ("unscoped resources", scope_nothing),
    ("unencrypted data stores", unencrypt_table),
    ("unencrypted data stores", unencrypt_homes),
    ("unencrypted data stores", unencrypt_bucket),
    ("unencrypted data stores", unencrypt_images),
    ("open ingress", sessions_open_to_the_internet),
    ("open ingress", gateway_opened_by_another_rule),
    ("open ingress", balancer_open_to_all),
    ("session isolation", anonymous_sessions_may_mount),
    ("session isolation", anonymous_sessions_reach_nfs),
    ("session isolation", one_role_for_every_users_sessions),
    ("session isolation", homes_mounted_without_an_access_point),
    ("session isolation", homes_mounted_through_the_gateways_view),
    ("session isolation", boundary_allows_more),
    ("session isolation", roles_made_without_the_boundary),
    ("session isolation", roles_made_anywhere),
    ("session isolation", boundary_removable),
    ("session isolation", file_system_mountable_at_its_root),
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


# ----- abuse controls (AccessLogs, WebAcl): off by default, each check shown to bite ---------

#: Both controls on, as an operator in us-east-1 would switch them on.
ABUSE_ON = {"AccessLogs": "on", "WebAcl": "create", "LaunchRateLimit": "200"}
#: A web ACL of the operator's own (created in us-east-1 outside this stack).
OWN_ACL = "arn:aws:wafv2:us-east-1:123456789012:global/webacl/launches/0a1b2c3d"


def test_abuse_controls_are_off_by_default_and_cost_nothing(dry_run: DryRun) -> None:
    default = render(dry_run.service)
    kinds = [r["Type"] for r in default["Resources"].values()]
    assert "AWS::WAFv2::WebACL" not in kinds
    assert "AccessLogBucket" not in default["Resources"]
    config = default["Resources"]["Distribution"]["Properties"]["DistributionConfig"]
    assert "Logging" not in config and "WebACLId" not in config
    idle = estimate(dry_run.service, "us-east-1").idle
    assert not [what for what, _ in idle if "WAF" in what or "AccessLog" in what]


@pytest.mark.parametrize("given", [ABUSE_ON, {"WebAcl": OWN_ACL}], ids=["create", "own-acl"])
def test_abuse_controls_switched_on_pass_every_check(dry_run: DryRun,
                                                     given: dict[str, str]) -> None:
    rendered = render(dry_run.service, given)
    for name, check in {**CHECKS, **RENDERED_CHECKS}.items():
        assert check(rendered) == [], name


def test_the_web_acl_is_what_the_estimate_adds(dry_run: DryRun) -> None:
    """Logs cost storage (per GB, not idle); a web ACL of the stack costs its monthly fee
    and its rule's; the operator's own web ACL is billed where it was made."""
    table = PriceTable.load("us-east-1")
    default = estimate(dry_run.service, "us-east-1").idle_month
    logged = estimate(dry_run.service, "us-east-1", {"AccessLogs": "on"}).idle_month
    own = estimate(dry_run.service, "us-east-1", {"WebAcl": OWN_ACL}).idle_month
    created = estimate(dry_run.service, "us-east-1", ABUSE_ON).idle_month
    assert logged == pytest.approx(default) and own == pytest.approx(default)
    assert created == pytest.approx(default + table["waf_web_acl_month"]
                                    + table["waf_rule_month"])


def distribution_config(t: Template) -> dict[str, Any]:
    return t["Resources"]["Distribution"]["Properties"]["DistributionConfig"]  # type: ignore[no-any-return]


def rate_rule(t: Template) -> dict[str, Any]:
    return t["Resources"]["LaunchWebAcl"]["Properties"]["Rules"][0]  # type: ignore[no-any-return]


def logs_without_being_asked(t: Template) -> None:
    distribution_config(t)["Logging"] = {"Bucket": "elsewhere.s3.amazonaws.com"}


def web_acl_without_being_asked(t: Template) -> None:
    distribution_config(t)["WebACLId"] = OWN_ACL


def logs_not_written(t: Template) -> None:
    del distribution_config(t)["Logging"]


def logs_to_a_foreign_bucket(t: Template) -> None:
    distribution_config(t)["Logging"]["Bucket"] = "elsewhere.s3.amazonaws.com"


def logs_with_cookies(t: Template) -> None:
    distribution_config(t)["Logging"]["IncludeCookies"] = True


def log_bucket_without_acls(t: Template) -> None:
    t["Resources"]["AccessLogBucket"]["Properties"]["OwnershipControls"] = {
        "Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]}


def logs_kept_forever(t: Template) -> None:
    del t["Resources"]["AccessLogBucket"]["Properties"]["LifecycleConfiguration"]


def web_acl_not_attached(t: Template) -> None:
    del distribution_config(t)["WebACLId"]


def web_acl_of_the_region(t: Template) -> None:
    t["Resources"]["LaunchWebAcl"]["Properties"]["Scope"] = "REGIONAL"


def rate_rule_only_counts(t: Template) -> None:
    rate_rule(t)["Action"] = {"Count": {}}


def rate_rule_for_everyone_at_once(t: Template) -> None:
    rate_rule(t)["Statement"]["RateBasedStatement"]["AggregateKeyType"] = "CONSTANT"


def rate_rule_ignores_the_parameter(t: Template) -> None:
    rate_rule(t)["Statement"]["RateBasedStatement"]["Limit"] = 2000


def rate_rule_counts_every_request(t: Template) -> None:
    del rate_rule(t)["Statement"]["RateBasedStatement"]["ScopeDownStatement"]


def rate_rule_forgets_the_rest_api(t: Template) -> None:
    rate = rate_rule(t)["Statement"]["RateBasedStatement"]
    rate["ScopeDownStatement"] = rate["ScopeDownStatement"]["OrStatement"]["Statements"][0]


ABUSE_BREAKAGES: list[tuple[dict[str, str], str, Callable[[Template], None]]] = [
    ({}, "access logs", logs_without_being_asked),
    ({}, "launch rate limit", web_acl_without_being_asked),
    ({"WebAcl": OWN_ACL}, "launch rate limit", web_acl_not_attached),
    (ABUSE_ON, "access logs", logs_not_written),
    (ABUSE_ON, "access logs", logs_to_a_foreign_bucket),
    (ABUSE_ON, "access logs", logs_with_cookies),
    (ABUSE_ON, "access logs", log_bucket_without_acls),
    (ABUSE_ON, "access logs", logs_kept_forever),
    (ABUSE_ON, "launch rate limit", web_acl_not_attached),
    (ABUSE_ON, "launch rate limit", web_acl_of_the_region),
    (ABUSE_ON, "launch rate limit", rate_rule_only_counts),
    (ABUSE_ON, "launch rate limit", rate_rule_for_everyone_at_once),
    (ABUSE_ON, "launch rate limit", rate_rule_ignores_the_parameter),
    (ABUSE_ON, "launch rate limit", rate_rule_counts_every_request),
    (ABUSE_ON, "launch rate limit", rate_rule_forgets_the_rest_api),
]


@pytest.mark.parametrize(("given", "check", "breakage"), ABUSE_BREAKAGES,
                         ids=[f"{b.__name__}-{p.get('WebAcl', 'off')[:6]}"
                              for p, _, b in ABUSE_BREAKAGES])
def test_each_abuse_check_fails_on_a_broken_template(
        dry_run: DryRun, given: dict[str, str], check: str,
        breakage: Callable[[Template], None]) -> None:
    rendered = render(dry_run.service, given)
    assert RENDERED_CHECKS[check](rendered) == []
    broken = copy.deepcopy(rendered)
    breakage(broken)
    assert RENDERED_CHECKS[check](broken) != []
