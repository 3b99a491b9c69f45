"""The network every ECS test needs on moto: a VPC, private subnets, the sessions' group."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class SessionNetwork:
    vpc: str
    subnets: tuple[str, ...]
    security_group: str


def session_network(ec2: Any, region: str, subnets: int = 1) -> SessionNetwork:
    """A VPC as moto's ``RunTask`` needs it (DNS host names on), ``subnets`` private
    subnets in zones a, b, ... and the sessions' security group."""
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsHostnames={"Value": True})
    made = tuple(ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.0.{n + 1}.0/24",
                                   AvailabilityZone=f"{region}{'abcdef'[n]}")["Subnet"]["SubnetId"]
                 for n in range(subnets))
    group = ec2.create_security_group(GroupName="sessions", Description="sessions",
                                      VpcId=vpc)["GroupId"]
    return SessionNetwork(vpc, made, group)
