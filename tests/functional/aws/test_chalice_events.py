"""The Chalice app's schedule and EventBridge handlers, invoked as Lambda would, on moto."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from chalice.test import Client

from binderless.aws.dynamodb import DynamoState, table_definition
from tests.functional.aws.test_dynamodb import session

EVENTS = Path(__file__).resolve().parents[2] / "fixtures" / "events"
TASK = "arn:aws:ecs:us-east-1:123456789012:task/binderless/0123456789abcdef0123456789abcdef"
KEY = "0a1b2c3d4e5f60718293"

AWS_SETTINGS = {
    "BINDERLESS_MODE": "aws", "BINDERLESS_AWS_TABLE": "binderless",
    "BINDERLESS_AWS_BUCKET": "binderless-test",
    "BINDERLESS_ECR_REGISTRY": "123456789012.dkr.ecr.us-east-1.amazonaws.com",
    "BINDERLESS_BASE_IMAGE": "123456789012.dkr.ecr.us-east-1.amazonaws.com/mirror:jammy",
    "BINDERLESS_SUBNETS": "subnet-1", "BINDERLESS_SECURITY_GROUPS": "sg-1",
    "BINDERLESS_EXECUTION_ROLE_ARN": "arn:aws:iam::123456789012:role/exec",
    "BINDERLESS_TASK_ROLE_ARN": "arn:aws:iam::123456789012:role/task",
}


@pytest.fixture
def chalice_app(moto: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Any]:
    for name, value in AWS_SETTINGS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("BINDERLESS_STATE_DIR", str(tmp_path))
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[3] / "functions"))
    boto3.client("dynamodb").create_table(**table_definition("binderless"))
    import app

    app.settings.cache_clear()
    app.launch_service.cache_clear()
    yield app
    app.settings.cache_clear()
    app.launch_service.cache_clear()


def event(client: Client, name: str) -> Any:
    data = json.loads((EVENTS / name).read_text())
    return client.events.generate_cw_event(source=data["source"], detail_type=data["detail-type"],
                                           detail=data["detail"], resources=data["resources"])


def test_a_stopped_task_closes_its_session(chalice_app: Any) -> None:
    state = DynamoState(boto3.client("dynamodb"), "binderless")
    record = session("s1", status="running")
    state.add_session(record)
    state.update_session("s1", backend_id=TASK)
    with Client(chalice_app.app, stage_name="prod") as client:
        answer = client.lambda_.invoke("task_stopped", event(client, "ecs-task-stopped.json"))
    assert answer.payload == {"session": "s1"}
    stopped = state.get_session("s1")
    assert stopped.status == "stopped"
    assert stopped.stop_reason == "task stopped: Essential container in task exited"


def emitted_metrics(output: str) -> dict[str, Any]:
    """The metric values in the embedded-metric-format lines a handler printed."""
    found: dict[str, Any] = {}
    for line in output.splitlines():
        if line.startswith("{") and '"_aws"' in line:
            record = json.loads(line)
            for metric in record["_aws"]["CloudWatchMetrics"][0]["Metrics"]:
                found[metric["Name"]] = record[metric["Name"]]
    return found


def test_a_finished_build_closes_its_claim(chalice_app: Any,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    state = DynamoState(boto3.client("dynamodb"), "binderless")
    assert state.claim_build(KEY, "gateway-that-died", "build-stream", now=1.0).claimed
    with Client(chalice_app.app, stage_name="prod") as client:
        client.lambda_.invoke("build_finished", event(client, "codebuild-build-failed.json"))
    claim = state.get_build(KEY)
    assert claim is not None and claim.status == "failed"
    final = state.read("build-stream")[-1][1]
    assert final.phase is not None and final.phase.value == "failed"
    assert "FAILED" in final.message
    assert emitted_metrics(capsys.readouterr().out) == {"BuildsFailed": [1.0]}


def test_the_schedule_reconciles(chalice_app: Any, capsys: pytest.CaptureFixture[str]) -> None:
    state = DynamoState(boto3.client("dynamodb"), "binderless")
    state.create_launch("old", "gh", "org/repo/HEAD", now=1.0)  # silent since 1970
    running = session("s-live", status="running")
    state.add_session(running)  # idle for decades: but culling is the gateways' job
    with Client(chalice_app.app, stage_name="prod") as client:
        answer = client.lambda_.invoke("reconcile", client.events.generate_cw_event(
            source="aws.events", detail_type="Scheduled Event", detail={}, resources=[]))
    payload = answer.payload
    assert payload == {"culled": [], "abandoned": ["old"], "resumed": [], "orphans": [],
                       "released": []}
    assert state.get_launch("old")["phase"] == "failed"  # type: ignore[index]
    assert state.get_session("s-live").status == "running"
    assert emitted_metrics(capsys.readouterr().out) == {"LaunchesAbandoned": [1.0]}


def test_launch_status_and_events_from_the_shared_store(chalice_app: Any) -> None:
    from binderless.events import Event
    from binderless.phases import Phase

    chalice_app.state.cache_clear()
    store = DynamoState(boto3.client("dynamodb"), "binderless")
    store.create_launch("l1", "gh", "org/repo/HEAD", now=5.0)
    store.append("l1", Event(Phase.WAITING, "Resolving...\n"))
    store.append("l1", Event(Phase.FETCHING, "Fetching...\n"))
    with Client(chalice_app.app, stage_name="prod") as client:
        status = client.http.get("/api/launches/l1")
        later = client.http.get("/api/launches/l1/events?after=1")
        missing = client.http.get("/api/launches/nope")
        bad = client.http.get("/api/launches/l1/events?after=x")
    assert status.status_code == 200 and status.json_body["spec"] == "org/repo/HEAD"
    assert later.json_body == {"events": [{"id": "l1:2", "phase": "fetching",
                                           "message": "Fetching...\n"}]}
    assert missing.status_code == 404 and bad.status_code == 400
    chalice_app.state.cache_clear()


def test_a_launch_created_through_the_api_is_recorded_for_a_gateway_once_per_key(
        chalice_app: Any, capsys: pytest.CaptureFixture[str]) -> None:
    chalice_app.state.cache_clear()
    chalice_app.idempotent_create.cache_clear()
    store = DynamoState(boto3.client("dynamodb"), "binderless")
    body = json.dumps({"link": "https://mybinder.org/v2/gh/org/repo/main?labpath=a.ipynb"})
    headers = {"Content-Type": "application/json", "Idempotency-Key": "retry-me"}
    with Client(chalice_app.app, stage_name="prod") as client:
        first = client.http.post("/api/launches", headers={**headers, "Host": "binder.example"},
                                 body=body)
        again = client.http.post("/api/launches", headers={**headers, "Host": "binder.example"},
                                 body=body)
        other = client.http.post("/api/launches", headers={"Content-Type": "application/json",
                                                          "Host": "binder.example"}, body=body)
        bad = client.http.post("/api/launches", headers=headers, body=json.dumps({"x": 1}))
        unknown = client.http.post("/api/launches", headers={"Content-Type": "application/json"},
                                   body=json.dumps({"provider": "nope", "spec": "a/b"}))
    assert first.status_code == 202, first.body
    launch = first.json_body["launch_id"]
    assert again.json_body == first.json_body  # the same key: the same launch, not a second
    assert other.json_body["launch_id"] != launch  # no key: a launch each time
    assert first.json_body["stream_url"] == (
        f"https://binder.example/build/gh/org/repo/main?last_event_id={launch}:0")
    assert first.json_body["status_url"] == f"https://binder.example/api/launches/{launch}"
    assert bad.status_code == 400 and "Name the repository" in bad.json_body["message"]
    assert unknown.status_code == 400 and "No provider found" in unknown.json_body["message"]
    record = store.get_launch(launch)
    assert record is not None and record["phase"] == "waiting" and record["driver"] == ""
    assert json.loads(record["request"])["launch_host"] == "https://binder.example/"
    assert store.unfinished_launches().count(launch) == 1
    chalice_app.state.cache_clear()
    chalice_app.idempotent_create.cache_clear()
