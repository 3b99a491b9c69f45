"""Stack events are printed as CloudFormation reports them: oldest first, each once, until
the operation settles; a failure names the resource that failed, not the knock-on ones."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from binderless.deploy.errors import DeployError
from binderless.deploy.progress import StackWatch

STACK_ID = "arn:aws:cloudformation:us-east-1:123456789012:stack/demo/1"


def event(number: int, logical: str, kind: str, status: str, reason: str = "") -> dict[str, Any]:
    found: dict[str, Any] = {
        "StackId": STACK_ID, "EventId": f"e{number}", "StackName": "demo",
        "LogicalResourceId": logical, "ResourceType": kind, "ResourceStatus": status,
        "Timestamp": datetime(2026, 1, 1, 12, 0, number, tzinfo=UTC)}
    if reason:
        found["ResourceStatusReason"] = reason
    return found


def stack(status: str) -> dict[str, Any]:
    return {"Stacks": [{"StackName": "demo", "StackId": STACK_ID, "StackStatus": status,
                        "CreationTime": datetime(2026, 1, 1, tzinfo=UTC)}]}


def watch(polls: list[tuple[str, list[dict[str, Any]]]]) -> tuple[StackWatch, io.StringIO, Any]:
    client = boto3.client("cloudformation", region_name="us-east-1")
    stubber = Stubber(client)
    stubber.add_client_error("describe_stack_events", "ValidationError",
                             "Stack with id demo does not exist")
    for status, events in polls:
        stubber.add_response("describe_stacks", stack(status))
        stubber.add_response("describe_stack_events", {"StackEvents": events})
    stubber.activate()
    out = io.StringIO()
    sleeps: list[float] = []
    return StackWatch(client, "demo", out, sleeps.append, poll=5.0), out, sleeps


def test_events_are_printed_once_oldest_first_until_the_stack_settles() -> None:
    first = [event(2, "StateTable", "AWS::DynamoDB::Table", "CREATE_IN_PROGRESS"),
             event(1, "demo", "AWS::CloudFormation::Stack", "CREATE_IN_PROGRESS",
                   "User Initiated")]
    second = [event(4, "demo", "AWS::CloudFormation::Stack", "CREATE_COMPLETE"),
              event(3, "StateTable", "AWS::DynamoDB::Table", "CREATE_COMPLETE"), *first]
    stack_watch, out, sleeps = watch([("CREATE_IN_PROGRESS", first),
                                      ("CREATE_COMPLETE", second)])
    assert stack_watch.wait(STACK_ID, ("CREATE_COMPLETE",)) == "CREATE_COMPLETE"
    assert sleeps == [5.0]
    lines = [line.split() for line in out.getvalue().splitlines()]
    assert [(line[0], line[1], line[3]) for line in lines] == [
        ("12:00:01", "CREATE_IN_PROGRESS", "demo"),
        ("12:00:02", "CREATE_IN_PROGRESS", "StateTable"),
        ("12:00:03", "CREATE_COMPLETE", "StateTable"),
        ("12:00:04", "CREATE_COMPLETE", "demo"),
    ]


def test_a_failure_names_the_resource_that_failed() -> None:
    events = [event(5, "demo", "AWS::CloudFormation::Stack", "ROLLBACK_COMPLETE"),
              event(4, "Cluster", "AWS::ECS::Cluster", "CREATE_FAILED",
                    "Resource creation cancelled"),
              event(3, "demo", "AWS::CloudFormation::Stack", "ROLLBACK_IN_PROGRESS",
                    "The following resource(s) failed to create: [Distribution]."),
              event(2, "Distribution", "AWS::CloudFront::Distribution", "CREATE_FAILED",
                    "Invalid request provided: The certificate must be in us-east-1")]
    stack_watch, out, _ = watch([("ROLLBACK_COMPLETE", events)])
    with pytest.raises(DeployError) as failure:
        stack_watch.wait(STACK_ID, ("CREATE_COMPLETE",))
    assert str(failure.value).splitlines()[:2] == [
        "the stack demo ended ROLLBACK_COMPLETE.",
        "  Distribution (AWS::CloudFront::Distribution): Invalid request provided: The "
        "certificate must be in us-east-1"]
    assert "Resource creation cancelled" in out.getvalue()  # shown, but not blamed
