"""Policy checks over CloudFormation templates; each returns what it found wrong.

Every check reads the template as deployed (after ``binderless deploy`` packaged it), so a
change to infra/ that breaks a rule fails the tests.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterator
from typing import Any

__all__ = ["CHECKS", "RENDERED_CHECKS", "UNSCOPABLE"]

Template = dict[str, Any]

#: Actions IAM cannot scope to a resource (the Service Authorization Reference lists no
#: resource type for them), so ``"Resource": "*"`` is the only way to grant them.
UNSCOPABLE = {
    "ecr:GetAuthorizationToken": "a registry login, not a repository",
    "ecs:RegisterTaskDefinition": "takes no resource",
    "ecs:DescribeTaskDefinition": "takes no resource",
    "ec2:DescribeDhcpOptions": "Describe calls take no resource",
    "ec2:DescribeNetworkInterfaces": "Describe calls take no resource",
    "ec2:DescribeSubnets": "Describe calls take no resource",
    "ec2:DescribeSecurityGroups": "Describe calls take no resource",
    "ec2:DescribeVpcs": "Describe calls take no resource",
    "xray:PutTraceSegments": "takes no resource",
    "xray:PutTelemetryRecords": "takes no resource",
}


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _documents(template: Template) -> Iterator[tuple[str, dict[str, Any]]]:
    for name, resource in template["Resources"].items():
        props = resource.get("Properties", {})
        kind = resource["Type"]
        if kind == "AWS::IAM::Role":
            for policy in props.get("Policies", []):
                yield f"{name}/{policy['PolicyName']}", policy["PolicyDocument"]
        elif kind in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy", "AWS::S3::BucketPolicy"):
            yield name, props["PolicyDocument"]
        elif kind == "AWS::EFS::FileSystem" and "FileSystemPolicy" in props:
            yield name, props["FileSystemPolicy"]


def _allows(template: Template) -> Iterator[tuple[str, dict[str, Any]]]:
    for where, document in _documents(template):
        for statement in _listed(document["Statement"]):
            if statement.get("Effect") == "Allow":
                yield f"{where}/{statement.get('Sid', '?')}", statement


def wildcard_actions(template: Template) -> list[str]:
    """An Allow statement granting ``*`` or ``service:*`` (or any wildcard action)."""
    return [f"{where}: {action}" for where, statement in _allows(template)
            for action in _listed(statement.get("Action", [])) if "*" in action]


def unscoped_resources(template: Template) -> list[str]:
    """``Resource: "*"`` for an action that IAM can scope to a resource."""
    found = []
    for where, statement in _allows(template):
        if "*" in _listed(statement.get("Resource", [])):
            found += [f"{where}: {action} on *" for action in _listed(statement["Action"])
                      if action not in UNSCOPABLE]
    return found


def unencrypted_stores(template: Template) -> list[str]:
    """A DynamoDB table, S3 bucket, EFS file system or ECR repository without encryption."""
    found = []
    for name, resource in template["Resources"].items():
        props = resource.get("Properties", {})
        kind = resource["Type"]
        if (kind == "AWS::DynamoDB::Table" and not props.get("SSESpecification", {}).get("SSEEnabled")) or (kind == "AWS::S3::Bucket" and not any(
                rule.get("ServerSideEncryptionByDefault", {}).get("SSEAlgorithm")
                for rule in props.get("BucketEncryption", {}).get(
                    "ServerSideEncryptionConfiguration", []))) or (kind == "AWS::EFS::FileSystem" and props.get("Encrypted") is not True) or (kind == "AWS::ECR::Repository" and not props.get(
                "EncryptionConfiguration", {}).get("EncryptionType")):
            found.append(name)
    return found


def _refs(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        if isinstance(value.get("Ref"), str):
            yield value["Ref"]
        for key, inner in value.items():
            if key == "Fn::If":
                yield from _refs(inner[1:])  # both branches, never the condition's name
            elif key != "Ref":
                yield from _refs(inner)
    elif isinstance(value, list):
        for inner in value:
            yield from _refs(inner)


def public_subnets(template: Template) -> set[str]:
    """Subnets whose route table sends traffic to an internet gateway, or that give
    public addresses at launch."""
    resources = template["Resources"]
    gateways = {n for n, r in resources.items() if r["Type"] == "AWS::EC2::InternetGateway"}
    open_tables = {r["Properties"]["RouteTableId"]["Ref"] for r in resources.values()
                   if r["Type"] == "AWS::EC2::Route"
                   and set(_refs(r["Properties"].get("GatewayId"))) & gateways}
    found = {r["Properties"]["SubnetId"]["Ref"] for r in resources.values()
             if r["Type"] == "AWS::EC2::SubnetRouteTableAssociation"
             and r["Properties"]["RouteTableId"].get("Ref") in open_tables}
    found |= {n for n, r in resources.items() if r["Type"] == "AWS::EC2::Subnet"
              and r["Properties"].get("MapPublicIpOnLaunch") is True}
    return found


def nat_subnets(template: Template) -> set[str]:
    """Subnets whose route table sends traffic to a NAT gateway."""
    resources = template["Resources"]
    tables = {r["Properties"]["RouteTableId"]["Ref"] for r in resources.values()
              if r["Type"] == "AWS::EC2::Route" and r["Properties"].get("NatGatewayId")}
    return {r["Properties"]["SubnetId"]["Ref"] for r in resources.values()
            if r["Type"] == "AWS::EC2::SubnetRouteTableAssociation"
            and r["Properties"]["RouteTableId"].get("Ref") in tables}


def _gateway_environment(template: Template) -> dict[str, Any]:
    task = template["Resources"]["GatewayTaskDefinition"]["Properties"]
    return {e["Name"]: e["Value"] for c in task["ContainerDefinitions"]
            for e in c.get("Environment", [])}


def _placements(template: Template) -> Iterator[tuple[str, Any, bool]]:
    """Where compute runs: (what, its subnets, whether it gets a public address)."""
    resources = template["Resources"]
    env = _gateway_environment(template) if "GatewayTaskDefinition" in resources else {}
    for name, resource in resources.items():
        props = resource.get("Properties", {})
        if resource["Type"] == "AWS::ECS::Service":
            network = props["NetworkConfiguration"]["AwsvpcConfiguration"]
            yield name, network["Subnets"], network.get("AssignPublicIp") == "ENABLED"
        elif resource["Type"] == "AWS::CodeBuild::Project" and "VpcConfig" in props:
            yield name, props["VpcConfig"]["Subnets"], False
    yield "sessions", env.get("BINDERLESS_SUBNETS"), env.get("BINDERLESS_SESSION_PUBLIC_IP") == "true"


def unrouted_compute(rendered: Template) -> list[str]:
    """(On a template rendered for one layout, with a new VPC.) Compute whose subnets have
    no way to the internet: neither an internet gateway with a public address on the
    task, nor a NAT gateway. What ``EnableNatGateway=false`` used to make."""
    public, nat = public_subnets(rendered), nat_subnets(rendered)
    found = []
    for name, subnets, addressed in _placements(rendered):
        for subnet in _refs(subnets):
            if not ((subnet in public and addressed) or subnet in nat):
                found.append(f"{name}: no route to the internet from {subnet}"
                             + (" (public subnet, no public address)" if subnet in public
                                else ""))
    return found


def compute_exposed(rendered: Template) -> list[str]:
    """(On a rendered template.) In the private layout, compute in a public subnet or with
    a public address; in any layout, a build project inside a VPC without a NAT route."""
    layout = rendered["Parameters"].get("NetworkLayout")
    public = public_subnets(rendered)
    found = []
    for name, subnets, addressed in _placements(rendered):
        if layout == "private" and addressed:
            found.append(f"{name}: a public address in the private layout")
        if layout == "private":
            found += [f"{name}: in the public subnet {s}" for s in _refs(subnets) if s in public]
    return found


#: Where a security group of compute may admit traffic from: other groups of the stack (by
#: reference) and, for the load balancer, CloudFront's origin-facing prefix list.
def open_ingress(template: Template) -> list[str]:
    """A security group rule admitting an address range (``CidrIp``, ``CidrIpv6``) or a
    prefix list other than CloudFront's: tasks may have public addresses, so a security
    group is all that keeps the internet out."""
    resources = template["Resources"]
    found = []
    groups = [n for n, r in resources.items() if r["Type"] == "AWS::EC2::SecurityGroup"]
    for group in groups:
        for rule in _ingress(template, group):
            if "CidrIp" in rule or "CidrIpv6" in rule:
                found.append(f"{group}: admits {rule.get('CidrIp') or rule.get('CidrIpv6')}")
            elif "SourcePrefixListId" in rule and rule["SourcePrefixListId"] != {
                    "Ref": "OriginFacingPrefixListId"}:
                found.append(f"{group}: admits the prefix list {rule['SourcePrefixListId']}")
            elif not ("SourceSecurityGroupId" in rule or "SourcePrefixListId" in rule):
                found.append(f"{group}: a rule with no source {rule}")
    return found


def _statements_of(template: Template, role: str) -> list[dict[str, Any]]:
    props = template["Resources"][role].get("Properties", {})
    return [st for policy in props.get("Policies", [])
            for st in _listed(policy["PolicyDocument"]["Statement"])]


def session_isolation(template: Template) -> list[str]:
    """Anonymous sessions: a role with no EFS permission and a security group the mount
    targets do not admit. Signed-in users' sessions: a role of their own (``_home_roles``).
    The file system: no mount without an access point."""
    resources = template["Resources"]
    if "GatewayTaskDefinition" not in resources:
        return []  # (the assets stack runs no session)
    env = _gateway_environment(template)
    found = []
    anonymous_role = env["BINDERLESS_TASK_ROLE_ARN"]["Fn::GetAtt"][0]
    for st in _statements_of(template, anonymous_role):
        if st.get("Effect") == "Allow" and any(
                a.startswith(("elasticfilesystem:", "*")) for a in _listed(st.get("Action", []))):
            found.append(f"{anonymous_role}: anonymous sessions may {st.get('Action')}")
    anonymous_groups = set(_refs(env["BINDERLESS_SECURITY_GROUPS"]))
    for name, resource in resources.items():
        if resource["Type"] != "AWS::EFS::MountTarget":
            continue
        for group in _refs(resource["Properties"]["SecurityGroups"]):
            for rule in _ingress(template, group):
                source = set(_refs(rule.get("SourceSecurityGroupId")))
                if source & anonymous_groups or "CidrIp" in rule:
                    found.append(f"{name}: {group} admits anonymous sessions ({rule})")
    found += _home_roles(template, env)
    for name, resource in resources.items():
        if resource["Type"] != "AWS::EFS::FileSystem":
            continue
        denies = [st for st in _listed(resource["Properties"].get("FileSystemPolicy", {})
                                       .get("Statement", [])) if st.get("Effect") == "Deny"]
        if not any(st.get("Condition", {}).get("Null", {}).get(
                "elasticfilesystem:AccessPointArn") == "true" for st in denies):
            found.append(f"{name}: mounts without an access point are not denied")
    return found


#: What may change a role or what it may do: the gateway gets only the first two, with the
#: home roles' boundary, under their path.
ROLE_MAKING = {"iam:CreateRole", "iam:PutRolePolicy", "iam:AttachRolePolicy",
               "iam:PutRolePermissionsBoundary", "iam:DeleteRolePermissionsBoundary",
               "iam:DeleteRolePolicy", "iam:DetachRolePolicy", "iam:UpdateAssumeRolePolicy",
               "iam:CreatePolicy", "iam:CreatePolicyVersion", "iam:SetDefaultPolicyVersion"}
MOUNTS = ("elasticfilesystem:Client", "elasticfilesystem:*", "*")
HOME_ROLES_PATH = "role/binderless-homes/${AWS::StackName}/*"


def _home_roles(template: Template, env: dict[str, Any]) -> list[str]:
    """Signed-in users' sessions: no role of the template mounts homes but the gateway's
    (a role shared by every user's sessions could mount any user's home); each user's
    role is made by the gateway, which may make roles only under the home roles' path and
    only with their boundary; the boundary allows mounts through an access point other
    than the gateway's view of every home, and nothing else."""
    resources = template["Resources"]
    found = []
    gateway = template["Resources"]["GatewayTaskDefinition"]["Properties"]["TaskRoleArn"][
        "Fn::GetAtt"][0]
    for name, resource in resources.items():
        if resource["Type"] != "AWS::IAM::Role":
            continue
        for st in _statements_of(template, name):
            if st.get("Effect") != "Allow":
                continue
            actions = _listed(st.get("Action", []))
            if name != gateway and any(a.startswith(MOUNTS) for a in actions):
                found.append(f"{name}: a role of the template may mount homes {actions}")
            for action in actions:
                if not (action in ROLE_MAKING or action in ("iam:*", "*")):
                    continue
                if name != gateway or action not in ("iam:CreateRole", "iam:PutRolePolicy"):
                    found.append(f"{name}: may {action}")
                    continue
                condition = st.get("Condition", {}).get("StringEquals", {})
                if condition.get("iam:PermissionsBoundary") != env.get(
                        "BINDERLESS_HOME_ROLE_BOUNDARY"):
                    found.append(f"{name}: may {action} without the home roles' boundary")
                if not all(HOME_ROLES_PATH in str(r) for r in _listed(st.get("Resource"))):
                    found.append(f"{name}: may {action} outside the home roles' path")
    if env.get("BINDERLESS_HOME_ROLE_PATH") != {
            "Fn::Sub": "/binderless-homes/${AWS::StackName}/"}:
        found.append(f"the gateway makes home roles under {env.get('BINDERLESS_HOME_ROLE_PATH')}")
    boundary = (env.get("BINDERLESS_HOME_ROLE_BOUNDARY") or {}).get("Ref")
    if resources.get(boundary, {}).get("Type") != "AWS::IAM::ManagedPolicy":
        return [*found, f"no permissions boundary for users' roles ({boundary})"]
    for st in _listed(resources[boundary]["Properties"]["PolicyDocument"]["Statement"]):
        if st.get("Effect") != "Allow":
            continue
        actions = _listed(st.get("Action", []))
        extra = set(actions) - {"elasticfilesystem:ClientMount", "elasticfilesystem:ClientWrite"}
        if extra:
            found.append(f"{boundary}: allows {sorted(extra)}")
        condition = st.get("Condition", {})
        if "elasticfilesystem:AccessPointArn" not in str(condition.get("ArnLike", {})):
            found.append(f"{boundary}: {actions} without an access point")
        if "HomesAccessPoint" not in str(condition.get("ArnNotEquals", {})):
            found.append(f"{boundary}: may mount the gateway's view of every home")
    return found


def public_buckets(template: Template) -> list[str]:
    """A bucket without all four public-access blocks, or a bucket policy that allows
    anyone, or a service without naming which of its resources (aws:SourceArn)."""
    found = []
    for name, resource in template["Resources"].items():
        props = resource.get("Properties", {})
        if resource["Type"] == "AWS::S3::Bucket":
            block = props.get("PublicAccessBlockConfiguration", {})
            if not all(block.get(k) is True for k in ("BlockPublicAcls", "BlockPublicPolicy",
                                                      "IgnorePublicAcls", "RestrictPublicBuckets")):
                found.append(f"{name}: public access is not blocked")
        if resource["Type"] != "AWS::S3::BucketPolicy":
            continue
        for statement in _listed(props["PolicyDocument"]["Statement"]):
            if statement.get("Effect") != "Allow":
                continue
            principal = statement.get("Principal")
            if principal == "*" or (isinstance(principal, dict) and "*" in _listed(
                    principal.get("AWS", []))):
                found.append(f"{name}: allows anyone")
            elif isinstance(principal, dict) and "Service" in principal and "AWS:SourceArn" \
                    not in str(statement.get("Condition", {})):
                found.append(f"{name}: allows {principal['Service']} for any of its resources")
    return found


def _ingress(template: Template, group: str) -> Iterator[dict[str, Any]]:
    resources = template["Resources"]
    yield from resources[group]["Properties"].get("SecurityGroupIngress", [])
    for resource in resources.values():
        target = resource.get("Properties", {}).get("GroupId")
        if resource["Type"] == "AWS::EC2::SecurityGroupIngress" and (
                group in _refs(target) or group in str(target)):
            yield resource["Properties"]


def exposed_load_balancers(template: Template) -> list[str]:
    """A load balancer that is internet-facing, that lets in anything but CloudFront's
    origin-facing addresses, or that no CloudFront VPC origin fronts."""
    resources = template["Resources"]
    fronted = {ref for r in resources.values() if r["Type"] == "AWS::CloudFront::VpcOrigin"
               for ref in _refs(r["Properties"]["VpcOriginEndpointConfig"]["Arn"])}
    found = []
    for name, resource in resources.items():
        if resource["Type"] != "AWS::ElasticLoadBalancingV2::LoadBalancer":
            continue
        props = resource["Properties"]
        if props.get("Scheme") != "internal":
            found.append(f"{name}: internet-facing")
        if name not in fronted:
            found.append(f"{name}: no CloudFront VPC origin in front")
        for group in _refs(props.get("SecurityGroups", [])):
            for rule in _ingress(template, group):
                if rule.get("SourcePrefixListId") != {"Ref": "OriginFacingPrefixListId"}:
                    found.append(f"{name}: {group} lets in {rule}")
    return found



def _distribution(rendered: Template) -> dict[str, Any]:
    config: dict[str, Any] = rendered["Resources"]["Distribution"]["Properties"][
        "DistributionConfig"]
    return config


def access_logs(rendered: Template) -> list[str]:
    """(On a rendered template.) ``AccessLogs=off``: no log bucket, no logging. ``on``: the
    distribution logs, without cookies, to a bucket of the stack that accepts CloudFront's
    ACL grant (ACLs enabled) and expires its logs."""
    resources = rendered["Resources"]
    logging = _distribution(rendered).get("Logging")
    if rendered["Parameters"].get("AccessLogs") != "on":
        found = [f"access logs are off, yet the distribution logs to {logging}"] if logging \
            else []
        # Only a log bucket needs ACLs: every other bucket has them disabled.
        return found + [f"access logs are off, yet {n} accepts ACLs" for n, r in
                        resources.items() if r["Type"] == "AWS::S3::Bucket"
                        and r["Properties"].get("OwnershipControls") != {
                            "Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]}]
    if not logging:
        return ["access logs are on, yet the distribution does not log"]
    bucket = logging.get("Bucket")
    target = bucket.get("Fn::GetAtt", [None, None]) if isinstance(bucket, dict) else [None, None]
    if target[1] != "DomainName" or target[0] not in resources:
        return [f"the distribution logs to {logging.get('Bucket')}, not to a bucket of the "
                "stack (by its DomainName)"]
    found = []
    if logging.get("IncludeCookies") is not False:
        found.append("the access log keeps cookies (sign-in sessions)")
    props = resources[target[0]]["Properties"]
    ownership = [r.get("ObjectOwnership") for r in props.get("OwnershipControls", {})
                 .get("Rules", [])]
    if ownership not in (["BucketOwnerPreferred"], ["ObjectWriter"]):
        found.append(f"{target[0]}: ACLs disabled ({ownership}); CloudFront cannot deliver")
    if not any(rule.get("Status") == "Enabled" and rule.get("ExpirationInDays")
               for rule in props.get("LifecycleConfiguration", {}).get("Rules", [])):
        found.append(f"{target[0]}: logs never expire")
    return found


#: What the rate rule must count: the paths that start a launch (docs/operators.md).
LAUNCH_PATHS = ("/build/", "/api/launches")


def _byte_matches(statement: Any) -> Iterator[dict[str, Any]]:
    if isinstance(statement, dict):
        if "ByteMatchStatement" in statement:
            yield statement["ByteMatchStatement"]
        for value in statement.values():
            yield from _byte_matches(value)
    elif isinstance(statement, list):
        for value in statement:
            yield from _byte_matches(value)


def launch_rate_limit(rendered: Template) -> list[str]:
    """(On a rendered template.) ``WebAcl`` empty: no web ACL, none attached. ``create``: a
    CLOUDFRONT-scope web ACL, attached to the distribution, with a rule that blocks an
    address past ``LaunchRateLimit`` requests on the launch paths in 5 minutes (and counts
    nothing else). An ARN: that one is attached, none is created."""
    resources = rendered["Resources"]
    chosen = rendered["Parameters"].get("WebAcl", "")
    attached = _distribution(rendered).get("WebACLId")
    acls = [n for n, r in resources.items() if r["Type"] == "AWS::WAFv2::WebACL"]
    if chosen != "create":
        found = [f"WebAcl={chosen!r}, yet {n} is created" for n in acls]
        if attached != (chosen or None):
            found.append(f"WebAcl={chosen!r}, yet the distribution has {attached}")
        return found
    if len(acls) != 1:
        return [f"WebAcl=create made {len(acls)} web ACLs"]
    [name] = acls
    found = []
    if attached != {"Fn::GetAtt": [name, "Arn"]}:
        found.append(f"{name} is not attached to the distribution ({attached})")
    props = resources[name]["Properties"]
    if props.get("Scope") != "CLOUDFRONT":
        found.append(f"{name}: scope {props.get('Scope')}, not CLOUDFRONT")
    rates = [rule for rule in props.get("Rules", [])
             if "RateBasedStatement" in rule.get("Statement", {})]
    if not rates:
        return [*found, f"{name}: no rate-based rule"]
    for rule in rates:
        where = f"{name}/{rule.get('Name')}"
        rate = rule["Statement"]["RateBasedStatement"]
        if "Block" not in rule.get("Action", {}):
            found.append(f"{where}: does not block ({rule.get('Action')})")
        if rate.get("AggregateKeyType") != "IP":
            found.append(f"{where}: not per client address ({rate.get('AggregateKeyType')})")
        if rate.get("Limit") != rendered["Parameters"].get("LaunchRateLimit"):
            found.append(f"{where}: limit {rate.get('Limit')}, not LaunchRateLimit")
        if rate.get("EvaluationWindowSec", 300) != 300:
            found.append(f"{where}: a window of {rate['EvaluationWindowSec']} s, not 5 minutes")
        scope = rate.get("ScopeDownStatement") or {}
        paths = {m["SearchString"] for m in _byte_matches(scope)
                 if "UriPath" in m.get("FieldToMatch", {})}
        if paths != set(LAUNCH_PATHS) or "OrStatement" not in scope:
            found.append(f"{where}: counts {sorted(paths) or 'every request'}, not either of "
                         f"{list(LAUNCH_PATHS)}")
    return found


#: Paths of the site, signing in, a person's projects and launches: never on the sessions'
#: origin. A session's path: only there.
NOT_SESSIONS = ("/", "/index.html", "/auth/login", "/auth/callback", "/api/me", "/api/projects",
                "/projects", "/build/gh/org/repo/HEAD", "/v2/gh/org/repo/HEAD", "/api/launches")
SESSION_PATH = "/user/0123456789abcdef/lab/tree/index.ipynb"


def _serving(config: dict[str, Any], path: str) -> dict[str, Any]:
    """The behaviour CloudFront picks for ``path``: the first pattern that matches."""
    for behaviour in config.get("CacheBehaviors", []):
        if fnmatch.fnmatchcase(path, behaviour["PathPattern"]):
            return behaviour  # type: ignore[no-any-return]
    return config["DefaultCacheBehavior"]  # type: ignore[no-any-return]


def _reaches_gateway(behaviour: dict[str, Any]) -> bool:
    """Whether requests of ``behaviour`` reach the gateway (a viewer-request function that
    answers them itself stops them at the edge)."""
    answered = any(f.get("EventType") == "viewer-request"
                   for f in behaviour.get("FunctionAssociations", []))
    return behaviour["TargetOriginId"] == "gateway" and not answered


def session_origin(template: Template) -> list[str]:
    """Sessions run a repository's JavaScript: they are served from a distribution of their
    own, under another name, that serves nothing else, while the main distribution (the
    sign-in cookie's origin) serves no session; the gateway builds session URLs on it."""
    resources = template["Resources"]
    if "Distribution" not in resources:
        return []
    found = []
    main = resources["Distribution"]["Properties"]["DistributionConfig"]
    if _reaches_gateway(_serving(main, SESSION_PATH)):
        found.append("the main distribution serves sessions (/user/*)")
    url = str(_gateway_environment(template).get("BINDERLESS_SESSION_URL", ""))
    named = set(re.findall(r"\$\{(\w+)\.DomainName\}", url))
    others = [n for n in named if n != "Distribution"
              and resources.get(n, {}).get("Type") == "AWS::CloudFront::Distribution"]
    if "Distribution" in named or "${DomainName}" in url or not others:
        return [*found, f"session URLs are not on a distribution of their own ({url})"]
    for name in others:
        config = resources[name]["Properties"]["DistributionConfig"]
        if "DomainName" in set(_refs(config.get("Aliases"))):
            found.append(f"{name}: shares the site's name (DomainName)")
        serving = _serving(config, SESSION_PATH)
        if not _reaches_gateway(serving):
            found.append(f"{name}: does not carry sessions to the gateway")
        elif serving.get("OriginRequestPolicyId") != "216adef6-5c7f-47e4-b989-5492eafa07d3":
            found.append(f"{name}: sessions without every viewer header (WebSockets)")
        found += [f"{name}: serves {path} from the gateway" for path in NOT_SESSIONS
                  if _reaches_gateway(_serving(config, path))]
    return found


CHECKS = {
    "wildcard actions": wildcard_actions,
    "unscoped resources": unscoped_resources,
    "unencrypted data stores": unencrypted_stores,
    "open ingress": open_ingress,
    "session isolation": session_isolation,
    "public buckets": public_buckets,
    "exposed load balancers": exposed_load_balancers,
    "session origin": session_origin,
}
#: Checks of a template rendered for one set of parameters (``binderless.deploy.estimate
#: .render``): they need the conditions decided.
RENDERED_CHECKS = {
    "unrouted compute": unrouted_compute,
    "compute exposed": compute_exposed,
    "access logs": access_logs,
    "launch rate limit": launch_rate_limit,
}
