"""``binderless deploy --estimate``: what a deployment costs, read from its own template.

The packaged service template is *rendered* for the stack's parameters (its conditions
evaluated, resources whose condition is false dropped, every ``Fn::If`` resolved), then
each resource that costs money by the hour is priced from ``infra/prices.yaml``: the
idle bill is what runs with nobody launching (the gateway service at its minimum count,
the load balancer, NAT gateways and their addresses, interface endpoints, public
addresses, secrets, the dashboard and alarms, the reconcile schedule, a WAF web ACL).
A session-hour and a build are priced from the same parameters. Storage (images, homes)
grows with use and is priced per GB-month, apart.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import DeployError
from .templates import ROOT

__all__ = ["PRICES", "Estimate", "PriceTable", "estimate", "layouts", "markdown_table",
           "render"]

PRICES = ROOT / "infra" / "prices.yaml"
#: Fargate gives every task 20 GiB of ephemeral storage for free.
FREE_EPHEMERAL_GIB = 20
#: What one build is priced at, in minutes of CodeBuild (a typical repo2docker build).
BUILD_MINUTES = 10
#: How long the reconcile function runs per call, at most, in the estimate (seconds).
RECONCILE_SECONDS = 1.0
_RATE = re.compile(r"rate\((\d+) (minute|minutes|hour|hours)\)")

Template = dict[str, Any]


class _NoValue:
    """``AWS::NoValue``: the property or list item is left out."""


NO_VALUE = _NoValue()


def _condition(value: Any, conditions: Mapping[str, Any], params: Mapping[str, Any],
               seen: dict[str, bool]) -> bool:
    if isinstance(value, dict) and len(value) == 1:
        [(name, args)] = value.items()
        if name == "Condition":
            return _named(args, conditions, params, seen)
        if name == "Fn::Equals":
            left, right = (_resolve(a, conditions, params, seen) for a in args)
            return str(left) == str(right)
        if name == "Fn::And":
            return all(_condition(a, conditions, params, seen) for a in args)
        if name == "Fn::Or":
            return any(_condition(a, conditions, params, seen) for a in args)
        if name == "Fn::Not":
            return not _condition(args[0], conditions, params, seen)
    raise DeployError(f"cannot evaluate the condition {value!r}")


def _named(name: str, conditions: Mapping[str, Any], params: Mapping[str, Any],
           seen: dict[str, bool]) -> bool:
    if name not in seen:
        seen[name] = _condition(conditions[name], conditions, params, seen)
    return seen[name]


def _resolve(value: Any, conditions: Mapping[str, Any], params: Mapping[str, Any],
             seen: dict[str, bool]) -> Any:
    """Parameters referenced by value; ``Fn::If`` decided; everything else kept."""
    if isinstance(value, list):
        items = [_resolve(v, conditions, params, seen) for v in value]
        return [v for v in items if v is not NO_VALUE]
    if not isinstance(value, dict):
        return value
    if len(value) == 1:
        [(name, args)] = value.items()
        if name == "Fn::If":
            chosen = args[1] if _named(args[0], conditions, params, seen) else args[2]
            return _resolve(chosen, conditions, params, seen)
        if name == "Ref" and args == "AWS::NoValue":
            return NO_VALUE
        if name == "Ref" and args in params:
            return params[args]
    resolved = {k: _resolve(v, conditions, params, seen) for k, v in value.items()}
    return {k: v for k, v in resolved.items() if v is not NO_VALUE}


def parameter_values(template: Template, given: Mapping[str, str]) -> dict[str, Any]:
    """The stack's parameters: the defaults, replaced by ``given``; list parameters split."""
    values: dict[str, Any] = {}
    for name, spec in template.get("Parameters", {}).items():
        if name not in given and "Default" not in spec:
            continue  # set at deploy time (binderless deploy's own): its Ref stays
        value = given.get(name, spec.get("Default"))
        if spec.get("Type") == "CommaDelimitedList" and isinstance(value, str):
            value = [v for v in value.split(",") if v]
        values[name] = value
    return values


def render(template: Template, given: Mapping[str, str] | None = None) -> Template:
    """``template`` as CloudFormation would create it with these parameters: resources
    whose condition is false are gone, ``Fn::If`` is decided, parameters are filled in
    where they are referenced (``Ref`` of a resource, ``GetAtt`` and ``Sub`` stay)."""
    params = parameter_values(template, given or {})
    conditions = template.get("Conditions", {})
    seen: dict[str, bool] = {}
    resources = {}
    for name, resource in template["Resources"].items():
        condition = resource.get("Condition")
        if condition and not _named(condition, conditions, params, seen):
            continue
        resources[name] = _resolve(resource, conditions, params, seen)
    outputs = {name: _resolve(o, conditions, params, seen)
               for name, o in template.get("Outputs", {}).items()
               if not o.get("Condition") or _named(o["Condition"], conditions, params, seen)}
    return {**template, "Resources": resources, "Outputs": outputs,
            "Parameters": params, "Conditions": seen}


@dataclass(frozen=True)
class PriceTable:
    """One region's prices (``infra/prices.yaml``)."""

    region: str
    as_of: str
    source: str
    verified: bool
    hours: float
    prices: Mapping[str, Any]

    def __getitem__(self, name: str) -> float:
        return float(self.prices[name])

    @classmethod
    def load(cls, region: str, path: Path = PRICES) -> PriceTable:
        data = yaml.safe_load(path.read_text())
        regions = data["regions"]
        if region not in regions:
            raise DeployError(f"no prices for {region} in {path.name}; it has "
                              + ", ".join(sorted(regions)) + ". Add them (with their source).")
        prices = regions[region]
        return cls(region=region, as_of=str(data["as_of"]), source=str(data["source"]),
                   verified=bool(prices.get("verified")), hours=float(data["hours_per_month"]),
                   prices=prices)


@dataclass(frozen=True)
class Estimate:
    """Monthly idle cost by line, and the marginal prices."""

    region: str
    layout: str
    idle: list[tuple[str, float]] = field(default_factory=list)
    session_hour: float = 0.0
    session_detail: str = ""
    build_minute: float = 0.0
    storage: dict[str, float] = field(default_factory=dict)
    prices: PriceTable | None = None

    @property
    def idle_month(self) -> float:
        return sum(cost for _, cost in self.idle)

    def lines(self) -> list[str]:
        table = self.prices
        said = [f"Estimated cost in {self.region}, NetworkLayout={self.layout} "
                f"(prices of {table.as_of if table else '?'}"
                + ("" if table is None or table.verified else ", approximate for this region")
                + "):",
                f"  idle, nobody launching: ${self.idle_month:.2f} a month"]
        said += [f"    {what}: ${cost:.2f}" for what, cost in self.idle if cost >= 0.005]
        said += [f"  each session-hour: ${self.session_hour:.4f} ({self.session_detail})",
                 f"  each build: ${self.build_minute * BUILD_MINUTES:.2f} for "
                 f"{BUILD_MINUTES} minutes (${self.build_minute:.3f} a minute)",
                 "  storage, as it grows: " + ", ".join(
                     f"{what} ${cost:.2f} per GB-month" for what, cost in self.storage.items())]
        return said


def _number(value: Any, default: float = 0.0) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return default


def _fargate_hour(prices: PriceTable, cpu: float, memory_mib: float, arm: bool,
                  ephemeral_gib: float) -> float:
    arch = "arm_" if arm else ""
    return (cpu / 1024 * prices[f"fargate_{arch}vcpu_hour"]
            + memory_mib / 1024 * prices[f"fargate_{arch}gb_hour"]
            + max(0.0, ephemeral_gib - FREE_EPHEMERAL_GIB) * prices["fargate_ephemeral_gb_hour"])


def _calls_per_month(expression: str, hours: float) -> float:
    match = _RATE.fullmatch(expression.strip())
    if not match:
        return 0.0
    every = int(match.group(1)) * (60 if match.group(2).startswith("hour") else 1)
    return hours * 60 / every


def estimate(template: Template, region: str, given: Mapping[str, str] | None = None,
             prices: PriceTable | None = None) -> Estimate:
    """The estimate of the service ``template`` (packaged) deployed with ``given``."""
    prices = prices or PriceTable.load(region)
    rendered = render(template, given)
    params = rendered["Parameters"]
    resources = rendered["Resources"]
    hours = prices.hours
    zones = max(1, len(params.get("SubnetIds") or []) or 2)
    idle: list[tuple[str, float]] = []

    def add(what: str, per_hour: float = 0.0, per_month: float = 0.0) -> None:
        idle.append((what, per_hour * hours + per_month))

    definitions = {n: r["Properties"] for n, r in resources.items()
                   if r["Type"] == "AWS::ECS::TaskDefinition"}
    for name, resource in resources.items():
        kind, props = resource["Type"], resource.get("Properties", {})
        if kind == "AWS::EC2::NatGateway":
            add(f"NAT gateway {name}", prices["nat_gateway_hour"])
        elif kind == "AWS::EC2::EIP":
            add(f"Elastic IP {name}", prices["public_ipv4_hour"])
        elif kind == "AWS::EC2::VPCEndpoint" and props.get("VpcEndpointType") == "Interface":
            count = len(props.get("SubnetIds") or []) or zones
            add(f"interface endpoint {name} ({count} zones)",
                prices["interface_endpoint_hour"] * count)
        elif kind == "AWS::ElasticLoadBalancingV2::LoadBalancer":
            add(f"load balancer {name}", prices["alb_hour"])
            if props.get("Scheme") == "internet-facing":
                add(f"public addresses of {name}", prices["public_ipv4_hour"] * zones)
        elif kind == "AWS::ECS::Service":
            task = definitions.get(str(props.get("TaskDefinition", {}).get("Ref", "")), {})
            tasks = _number(props.get("DesiredCount"), 1)
            arm = (task.get("RuntimePlatform") or {}).get("CpuArchitecture") == "ARM64"
            per_task = _fargate_hour(prices, _number(task.get("Cpu")), _number(task.get("Memory")),
                                     arm, _number((task.get("EphemeralStorage") or {})
                                                  .get("SizeInGiB"), FREE_EPHEMERAL_GIB))
            size = f"{_number(task.get('Cpu')) / 1024:g} vCPU, {_number(task.get('Memory')):g} MiB"
            add(f"{name}: {tasks:g} x Fargate task ({size}{', ARM' if arm else ''})",
                per_task * tasks)
            network = (props.get("NetworkConfiguration") or {}).get("AwsvpcConfiguration", {})
            if network.get("AssignPublicIp") == "ENABLED":
                add(f"{name}: public address of each task", prices["public_ipv4_hour"] * tasks)
        elif kind == "AWS::SecretsManager::Secret":
            add(f"secret {name}", per_month=prices["secret_month"])
        elif kind == "AWS::CloudWatch::Dashboard":
            add("dashboard (free for an account's first three)",
                per_month=prices["dashboard_month"])
        elif kind == "AWS::CloudWatch::Alarm":
            add(f"alarm {name}", per_month=prices["alarm_month"])
        elif kind == "AWS::WAFv2::WebACL":
            rules = len(props.get("Rules") or [])
            add(f"WAF web ACL {name} ({rules} rules)",
                per_month=prices["waf_web_acl_month"] + rules * prices["waf_rule_month"])
        elif kind == "AWS::Events::Rule" and props.get("ScheduleExpression"):
            calls = _calls_per_month(str(props["ScheduleExpression"]), hours)
            target = str(((props.get("Targets") or [{}])[0].get("Arn") or {})
                         .get("Fn::GetAtt", [""])[0])
            memory = _number(resources.get(target, {}).get("Properties", {})
                             .get("MemorySize"), 128)
            add(f"schedule {name} ({calls:,.0f} Lambda calls)",
                per_month=calls * (prices["lambda_request"] + memory / 1024 * RECONCILE_SECONDS
                                   * prices["lambda_gb_second"]))

    cpu, memory = _number(params.get("SessionCpu"), 1024), _number(params.get("SessionMemory"), 4096)
    public = params.get("NetworkLayout") == "public"
    session = _fargate_hour(prices, cpu, memory, False, FREE_EPHEMERAL_GIB)
    detail = f"{cpu / 1024:g} vCPU, {memory / 1024:g} GB on Fargate"
    if public:
        session += prices["public_ipv4_hour"]
        detail += " and its public address"
    else:
        detail += f"; plus ${prices['nat_gateway_gb']:.3f} per GB through the NAT gateway"
    detail += "; images past 20 GiB add " + \
        f"${prices['fargate_ephemeral_gb_hour']:.6f} per GiB-hour"
    compute = str(params.get("BuildComputeType", "BUILD_GENERAL1_MEDIUM"))
    return Estimate(region=region, layout=str(params.get("NetworkLayout", "?")), idle=idle,
                    session_hour=session, session_detail=detail,
                    build_minute=float(prices.prices["codebuild_minute"][compute]),
                    storage={"environment images (ECR)": prices["ecr_gb_month"],
                             "persistent homes (EFS)": prices["efs_gb_month"]},
                    prices=prices)


def layouts(template: Template, region: str, given: Mapping[str, str] | None = None
            ) -> list[Estimate]:
    """The estimate as given, then with the other network layout, for comparison."""
    given = dict(given or {})
    chosen = estimate(template, region, given)
    other = "private" if chosen.layout == "public" else "public"
    return [chosen, estimate(template, region, {**given, "NetworkLayout": other})]


def markdown_table(estimates: list[Estimate]) -> str:
    """The operator guide's cost table (docs/operators.md), from ``estimates``."""
    rows = ["| | " + " | ".join(f"`NetworkLayout={e.layout}`" for e in estimates) + " |",
            "|---|" + "---:|" * len(estimates)]
    whats: list[str] = []
    for e in estimates:
        whats += [w for w, _ in e.idle if w not in whats]
    for what in whats:
        cells = []
        for e in estimates:
            cost = dict(e.idle).get(what)
            cells.append("" if cost is None else f"${cost:.2f}")
        rows.append(f"| {what} | " + " | ".join(cells) + " |")
    rows.append("| **idle, a month** | " + " | ".join(
        f"**${e.idle_month:.2f}**" for e in estimates) + " |")
    rows.append("| each session-hour | " + " | ".join(
        f"${e.session_hour:.4f}" for e in estimates) + " |")
    rows.append(f"| each build ({BUILD_MINUTES} minutes) | " + " | ".join(
        f"${e.build_minute * BUILD_MINUTES:.2f}" for e in estimates) + " |")
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    """``python -m binderless.deploy.estimate DIR/binderless.template.json [REGION]``: the
    operator guide's cost table (docs/operators.md) of a dry run's template."""
    import json
    import sys

    args = sys.argv[1:] if argv is None else argv
    template = json.loads(Path(args[0]).read_text())
    print(markdown_table(layouts(template, args[1] if len(args) > 1 else "us-east-1")), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
