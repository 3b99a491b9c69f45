"""Expand the SAM resources ``chalice package`` writes into plain CloudFormation.

CloudFormation would expand them itself (the ``AWS::Serverless-2016-10-31`` transform), but
then the template deployed would not be the template linted, policy-checked and tried on
moto (which cannot run transforms). The Chalice app uses a small part of SAM; this module
expands exactly that part, the way SAM does, and refuses anything else by name:

- ``AWS::Serverless::Function`` -> ``AWS::Lambda::Function``; its ``Schedule`` and
  ``CloudWatchEvent`` events -> an ``AWS::Events::Rule`` targeting the function and an
  ``AWS::Lambda::Permission`` for EventBridge (one of each per event, as SAM names them);
- ``AWS::Serverless::Api`` -> ``AWS::ApiGateway::RestApi`` with the OpenAPI body, a
  ``Deployment`` named after the body's hash (a changed API is deployed again) and a
  ``Stage``.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping
from typing import Any

from .templates import TemplateError

__all__ = ["expand_sam"]

#: Function properties that mean the same on AWS::Lambda::Function.
_SAME = ("Runtime", "Handler", "Timeout", "MemorySize", "Architectures", "Environment",
         "Role", "LoggingConfig", "Layers", "ReservedConcurrentExecutions", "VpcConfig",
         "Description", "EphemeralStorage", "FunctionName")


def expand_sam(template: Mapping[str, Any], code: Mapping[str, Any]) -> dict[str, Any]:
    """``template`` without SAM: every function's code is ``code`` (S3Bucket/S3Key)."""
    out = copy.deepcopy(dict(template))
    if out.pop("Transform", "AWS::Serverless-2016-10-31") != "AWS::Serverless-2016-10-31":
        raise TemplateError("the Chalice template names an unexpected transform")
    resources: dict[str, Any] = {}
    for name, resource in out["Resources"].items():
        kind = resource.get("Type", "")
        if kind == "AWS::Serverless::Function":
            resources.update(_function(name, resource, code))
        elif kind == "AWS::Serverless::Api":
            resources.update(_api(name, resource))
        elif kind.startswith("AWS::Serverless::"):
            raise TemplateError(f"{name}: {kind} is not expanded by binderless.deploy.sam")
        else:
            resources[name] = resource
    out["Resources"] = resources
    return out


def _function(name: str, resource: Mapping[str, Any],
              code: Mapping[str, Any]) -> dict[str, Any]:
    props = dict(resource["Properties"])
    events = props.pop("Events", {})
    props.pop("CodeUri", None)
    tags = props.pop("Tags", {})
    tracing = props.pop("Tracing", None)
    unknown = set(props) - set(_SAME)
    if unknown:
        raise TemplateError(f"{name}: function properties {sorted(unknown)} are not expanded")
    function: dict[str, Any] = {k: props[k] for k in _SAME if k in props}
    function["Code"] = dict(code)
    function["Tags"] = [{"Key": k, "Value": v} for k, v in sorted(tags.items())]
    if tracing:
        function["TracingConfig"] = {"Mode": tracing}
    expanded: dict[str, Any] = {name: {**_attributes(resource), "Type": "AWS::Lambda::Function",
                                       "Properties": function}}
    for event_name, event in events.items():
        expanded.update(_event_rule(name, event_name, event))
    return expanded


def _attributes(resource: Mapping[str, Any]) -> dict[str, Any]:
    return {k: resource[k] for k in ("Condition", "DependsOn", "Metadata") if k in resource}


def _event_rule(function: str, event_name: str, event: Mapping[str, Any]) -> dict[str, Any]:
    kind = event.get("Type")
    props = event.get("Properties", {})
    rule: dict[str, Any] = {"State": "ENABLED", "Targets": [
        {"Arn": {"Fn::GetAtt": [function, "Arn"]}, "Id": f"{function}{event_name}LambdaTarget"}]}
    if kind == "Schedule":
        rule["ScheduleExpression"] = props["Schedule"]
    elif kind in ("CloudWatchEvent", "EventBridgeRule"):
        rule["EventPattern"] = props["Pattern"]
    else:
        raise TemplateError(f"{function}.{event_name}: events of type {kind} are not expanded")
    rule_name = f"{function}{event_name}"
    return {
        rule_name: {"Type": "AWS::Events::Rule", "Properties": rule},
        f"{rule_name}Permission": {"Type": "AWS::Lambda::Permission", "Properties": {
            "Action": "lambda:InvokeFunction",
            "FunctionName": {"Ref": function},
            "Principal": "events.amazonaws.com",
            "SourceArn": {"Fn::GetAtt": [rule_name, "Arn"]},
        }},
    }


def _api(name: str, resource: Mapping[str, Any]) -> dict[str, Any]:
    props = dict(resource["Properties"])
    body = props.pop("DefinitionBody")
    stage = props.pop("StageName")
    endpoint = props.pop("EndpointConfiguration", None)
    name_property = props.pop("Name", None)
    if props:
        raise TemplateError(f"{name}: API properties {sorted(props)} are not expanded")
    api: dict[str, Any] = {"Body": body}
    if name_property is not None:
        api["Name"] = name_property
    if endpoint is not None:
        types = endpoint if isinstance(endpoint, str) else endpoint["Type"]
        api["EndpointConfiguration"] = {"Types": [types]}
        # As SAM does: the import of the body must not reset the endpoint type.
        api["Parameters"] = {"endpointConfigurationTypes": types}
    digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:10]
    deployment = f"{name}Deployment{digest}"
    return {
        name: {**_attributes(resource), "Type": "AWS::ApiGateway::RestApi", "Properties": api},
        deployment: {"Type": "AWS::ApiGateway::Deployment", "Properties": {
            "RestApiId": {"Ref": name}, "Description": f"RestApi deployment id: {digest}"}},
        f"{name}{stage}Stage": {"Type": "AWS::ApiGateway::Stage", "Properties": {
            "RestApiId": {"Ref": name}, "DeploymentId": {"Ref": deployment},
            "StageName": stage}},
    }
