"""What moto's CloudFormation cannot deploy, and the stand-ins the tests put in its place.

moto 5.2.5 skips resource types it does not model (with a warning), cannot resolve
``Fn::GetAtt`` on them, lacks a few attributes of types it does model, and ignores the
OpenAPI body of a RestApi (so an ``AWS::ApiGateway::Deployment`` of it fails: "The REST API
doesn't contain any methods"). ``adapt`` swaps every reference to those for a stand-in
string, ``moto-ignored:<Resource>[.<Attribute>]``, so the rest deploys as written. Where a
test makes such a resource itself, through the API moto does model (a Secrets Manager
secret), ``provided`` gives the value its ``Ref`` stands for instead.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from typing import Any

__all__ = ["MOTO_IGNORED_TYPES", "adapt", "stand_in"]

#: Resource types of the templates that moto's CloudFormation does not create, and why.
MOTO_IGNORED_TYPES = {
    "AWS::ApiGateway::Stage": "not modelled by moto's CloudFormation",
    "AWS::ApiGateway::Deployment": "moto ignores the RestApi's OpenAPI body, then refuses to "
                                   "deploy an API without methods",
    "AWS::ApplicationAutoScaling::ScalableTarget": "not modelled",
    "AWS::ApplicationAutoScaling::ScalingPolicy": "not modelled",
    "AWS::CloudFront::Distribution": "not modelled",
    "AWS::CloudFront::Function": "not modelled",
    "AWS::CloudFront::OriginAccessControl": "not modelled",
    "AWS::CloudFront::ResponseHeadersPolicy": "not modelled",
    "AWS::CloudFront::VpcOrigin": "not modelled",
    "AWS::CloudWatch::Alarm": "not modelled",
    "AWS::CodeBuild::Project": "not modelled (REFERENCE section 5)",
    "AWS::Cognito::UserPool": "not modelled",
    "AWS::Cognito::UserPoolClient": "not modelled",
    "AWS::Cognito::UserPoolDomain": "not modelled",
    "AWS::Cognito::UserPoolIdentityProvider": "not modelled",
    "AWS::ECR::PullThroughCacheRule": "not modelled",
    "AWS::S3::BucketPolicy": "not modelled",
    "AWS::SecretsManager::Secret": "not modelled (moto's Secrets Manager API is: a test may "
                                   "make the secret and pass it as provided)",
    "AWS::SNS::Subscription": "not modelled",
    "AWS::WAFv2::WebACL": "not modelled (WebAcl=create only: absent from the default stack)",
}
#: Attributes moto does not give for types it creates.
MOTO_MISSING_ATTRIBUTES = {
    ("AWS::ElasticLoadBalancingV2::TargetGroup", "TargetGroupFullName"),
    ("AWS::EFS::FileSystem", "Arn"),
    ("AWS::EFS::AccessPoint", "Arn"),  # (moto's access point has no attributes at all)
    ("AWS::ElasticLoadBalancingV2::LoadBalancer", "LoadBalancerFullName"),
}
_SUB = re.compile(r"\$\{([A-Za-z0-9]+)(?:\.([A-Za-z0-9.]+))?\}")


def stand_in(name: str, attribute: str | None = None) -> str:
    if attribute == "Arn":
        # ARN-shaped: moto checks the ARNs of managed policies' statements.
        return f"arn:aws:moto-ignored:us-east-1:123456789012:{name}"
    return f"moto-ignored:{name}" + (f".{attribute}" if attribute else "")


def adapt(template: dict[str, Any], provided: Mapping[str, str] | None = None
          ) -> dict[str, Any]:
    """``template`` with moto's blind spots replaced by stand-ins (see the module's doc);
    ``provided`` maps ignored resources to what their ``Ref`` gives."""
    resources = template["Resources"]
    ignored = {n for n, r in resources.items() if r["Type"] in MOTO_IGNORED_TYPES}
    given = dict(provided or {})
    if set(given) - ignored:
        raise ValueError(f"only ignored resources can be provided, not {set(given) - ignored}")

    def ref(name: str) -> str:
        return given.get(name) or stand_in(name)

    def blind(name: str, attribute: str | None) -> bool:
        if name in ignored:
            return True
        kind = resources.get(name, {}).get("Type")
        return attribute is not None and (kind, attribute) in MOTO_MISSING_ATTRIBUTES

    def walk(value: Any) -> Any:
        if isinstance(value, list):
            return [walk(v) for v in value]
        if not isinstance(value, dict):
            return value
        if isinstance(value.get("Ref"), str) and value["Ref"] in ignored:
            return ref(value["Ref"])
        if "Fn::GetAtt" in value:
            name, attribute = value["Fn::GetAtt"]
            if blind(name, attribute):
                return stand_in(name, attribute)
        if "Fn::Sub" in value:
            sub = value["Fn::Sub"]
            text, variables = (sub, {}) if isinstance(sub, str) else sub
            text = _SUB.sub(lambda m: (ref(m.group(1)) if m.group(2) is None
                                       else stand_in(m.group(1), m.group(2)))
                            if blind(m.group(1), m.group(2)) else m.group(0), text)
            return {"Fn::Sub": text if isinstance(sub, str) else [text, walk(variables)]}
        return {k: walk(v) for k, v in value.items()}

    adapted = copy.deepcopy(template)
    adapted["Resources"] = {name: walk(r) for name, r in resources.items() if name not in ignored}
    adapted["Outputs"] = walk(template.get("Outputs", {}))
    return adapted
