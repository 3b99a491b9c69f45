"""Policy checks over CloudFormation templates; each returns what it found wrong.

Every check reads the template as deployed (after ``binderless deploy`` packaged it), so a
change to infra/ that breaks a rule fails the tests.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

__all__ = ["CHECKS", "UNSCOPABLE"]

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
             and r["Properties"]["RouteTableId"]["Ref"] in open_tables}
    found |= {n for n, r in resources.items() if r["Type"] == "AWS::EC2::Subnet"
              and r["Properties"].get("MapPublicIpOnLaunch") is True}
    return found


def compute_in_public_subnets(template: Template) -> list[str]:
    """A session (BINDERLESS_SUBNETS), a build (CodeBuild in the VPC), the gateway service or
    the load balancer placed in a public subnet, given a public address, or a build project
    left outside the VPC."""
    public = public_subnets(template)
    found = []
    for name, resource in template["Resources"].items():
        props = resource.get("Properties", {})
        kind = resource["Type"]
        placed: Any = None
        if kind == "AWS::ECS::Service":
            network = props["NetworkConfiguration"]["AwsvpcConfiguration"]
            placed = network["Subnets"]
            if network.get("AssignPublicIp") != "DISABLED":
                found.append(f"{name}: assigns public addresses")
        elif kind == "AWS::CodeBuild::Project":
            if resource.get("Metadata", {}).get("binderless", {}).get("BuildsUserCode") is False:
                continue  # binderless's own images (test_policies checks which project)
            if "VpcConfig" not in props:
                found.append(f"{name}: builds outside the VPC")
                continue
            placed = props["VpcConfig"]["Subnets"]
        elif kind == "AWS::ElasticLoadBalancingV2::LoadBalancer":
            placed = props["Subnets"]
        elif kind == "AWS::Lambda::Function":
            placed = props.get("Environment", {}).get("Variables", {}).get("BINDERLESS_SUBNETS")
        elif kind == "AWS::ECS::TaskDefinition":
            placed = [e["Value"] for c in props["ContainerDefinitions"]
                      for e in c.get("Environment", []) if e["Name"] == "BINDERLESS_SUBNETS"]
        found += [f"{name}: in the public subnet {s}" for s in _refs(placed) if s in public]
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


CHECKS = {
    "wildcard actions": wildcard_actions,
    "unscoped resources": unscoped_resources,
    "unencrypted data stores": unencrypted_stores,
    "compute in public subnets": compute_in_public_subnets,
    "public buckets": public_buckets,
    "exposed load balancers": exposed_load_balancers,
}
