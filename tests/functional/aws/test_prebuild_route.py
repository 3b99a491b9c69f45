"""``POST /api/prebuild`` in the Chalice app, on moto: a signed GitHub push starts one
CodeBuild build of the pushed commit's environment (source in S3, claim in DynamoDB);
a second call while it runs starts none; once EventBridge reports it built and the image
is in ECR, a prebuild finds it. Refusals start nothing.

The repository is served over git's HTTP protocol on loopback, which the AWS mode's URL
guard refuses: only here, the git provider is replaced (``Overrides.providers``) by one
that allows it."""

from __future__ import annotations

import functools
import hashlib
import hmac
import http.server
import json
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from chalice.test import Client

from binderless.aws.dynamodb import DynamoState
from binderless.aws.wiring import Overrides, aws_service
from binderless.providers.git import GitProvider
from binderless.urlguard import UrlGuard
from tests.conftest import FIXTURE_REPOS, git, make_git_repo
from tests.ecr_fakes import manifest
from tests.functional.aws.test_chalice_events import AWS_SETTINGS, chalice_app  # noqa: F401

SECRET = "aws-prebuild-secret-0123456789abcdef"
PROJECT = "binderless-build"


class QuietFiles(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def remote(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A repository served over dumb HTTP on loopback: (clone URL, commit)."""
    repo = make_git_repo(FIXTURE_REPOS / "empty-repo", tmp_path / "work")
    site = tmp_path / "site"
    site.mkdir()
    subprocess.run(["git", "clone", "--quiet", "--bare", str(repo), str(site / "r.git")],
                   check=True)
    subprocess.run(["git", "update-server-info"], cwd=site / "r.git", check=True)
    files = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(QuietFiles, directory=str(site)))
    threading.Thread(target=files.serve_forever, daemon=True).start()
    try:
        yield (f"http://127.0.0.1:{files.server_address[1]}/r.git",
               git("rev-parse", "HEAD", cwd=repo))
    finally:
        files.shutdown()
        files.server_close()


#: The AWS calls the launch service of ``app`` made: (IAM service prefix, operation, params).
Calls = list[tuple[str, str, dict[str, Any]]]


@pytest.fixture
def calls() -> Calls:
    return []


@pytest.fixture
def app(chalice_app: Any, monkeypatch: pytest.MonkeyPatch,  # noqa: F811
        calls: Calls) -> Iterator[Any]:
    monkeypatch.setenv("BINDERLESS_WEBHOOK_SECRET", SECRET)
    chalice_app.settings.cache_clear()
    chalice_app.state.cache_clear()
    boto3.client("s3").create_bucket(Bucket=AWS_SETTINGS["BINDERLESS_AWS_BUCKET"])
    boto3.client("codebuild").create_project(
        name=PROJECT, source={"type": "S3", "location": "b/k.zip"},
        artifacts={"type": "NO_ARTIFACTS"},
        environment={"type": "LINUX_CONTAINER", "image": "runner", "computeType":
                     "BUILD_GENERAL1_SMALL", "privilegedMode": True},
        serviceRole="arn:aws:iam::123456789012:role/build")
    local_git = GitProvider(allow_local=True, guard=UrlGuard(enforce=False))

    def recording(name: str) -> Any:
        client = chalice_app.aws_clients(name)
        prefix = client.meta.service_model.signing_name

        def record(model: Any, params: dict[str, Any], **_: Any) -> None:
            calls.append((prefix, model.name, params))

        client.meta.events.register("before-parameter-build", record)
        return client

    service = aws_service(chalice_app.settings(), recording,
                          Overrides(providers={"git": local_git}))
    # Restored before chalice_app's own teardown clears the real factory's cache.
    real = chalice_app.launch_service
    chalice_app.launch_service = lambda: service
    try:
        yield chalice_app
    finally:
        chalice_app.launch_service = real
        chalice_app.state.cache_clear()


def push(clone_url: str, sha: str) -> tuple[str, dict[str, str]]:
    body = json.dumps({"ref": "refs/heads/main", "after": sha, "deleted": False,
                       "repository": {"full_name": "org/r", "html_url": clone_url[:-4],
                                      "clone_url": clone_url}})
    digest = hmac.new(SECRET.encode(), body.encode(), hashlib.sha256).hexdigest()
    return body, {"Content-Type": "application/json", "X-GitHub-Event": "push",
                  "X-GitHub-Delivery": str(uuid.uuid4()),
                  "X-Hub-Signature-256": f"sha256={digest}", "Host": "binder.example"}


def builds() -> list[str]:
    return list(boto3.client("codebuild").list_builds_for_project(projectName=PROJECT)["ids"])


def test_a_signed_push_starts_one_codebuild_build(app: Any, remote: tuple[str, str]) -> None:
    clone_url, sha = remote
    body, headers = push(clone_url, sha)
    with Client(app.app, stage_name="prod") as client:
        first = client.http.post("/api/prebuild", headers=headers, body=body)
        assert first.status_code == 202, first.body
        started = first.json_body
        assert started["status"] == "started" and started["resolved_ref"] == sha
        assert builds() == [started["build_id"]]
        key = started["key"]
        sources = boto3.client("s3").list_objects_v2(
            Bucket=AWS_SETTINGS["BINDERLESS_AWS_BUCKET"], Prefix="sources/")
        assert [o["Key"] for o in sources["Contents"]] == [f"sources/{key}.zip"]
        state = DynamoState(boto3.client("dynamodb"), "binderless")
        claim = state.get_build(key)
        assert claim is not None and claim.status == "building"
        assert "Started AWS CodeBuild build" in state.read(claim.stream)[-1][1].message

        # The same delivery again is a replay; a CI call while the build runs starts none.
        assert client.http.post("/api/prebuild", headers=headers,
                                body=body).status_code == 409
        ci = client.http.post("/api/prebuild", body=json.dumps({"link": started["launch_url"]}),
                              headers={"Authorization": f"Bearer {SECRET}",
                                       "Content-Type": "application/json",
                                       "Host": "binder.example"})
        assert ci.status_code == 202 and ci.json_body["status"] == "building", ci.body
        assert len(builds()) == 1

        # CodeBuild pushed the image and EventBridge said so: the next prebuild finds it.
        image = app.launch_service().builder.registry.image_uri(key)
        boto3.client("ecr").put_image(repositoryName="binderless-envs",
                                      imageManifest=manifest(key), imageTag=key)
        detail = {"build-status": "SUCCEEDED", "build-id": started["build_id"],
                  "additional-information": {"environment": {"environment-variables": [
                      {"name": "IMAGE_URI", "value": image, "type": "PLAINTEXT"}]}}}
        client.lambda_.invoke("build_finished", client.events.generate_cw_event(
            source="aws.codebuild", detail_type="CodeBuild Build State Change",
            detail=detail, resources=[]))
        assert state.get_build(key).status == "built"  # type: ignore[union-attr]
        body, _ = push(clone_url, sha)
        body = body.replace('"deleted"', '"forced": true, "deleted"')  # another push
        headers = push_headers(body)
        found = client.http.post("/api/prebuild", headers=headers, body=body)
        assert found.status_code == 202 and found.json_body["status"] == "built", found.body
        assert found.json_body["image"] == image
        assert len(builds()) == 1


def push_headers(body: str) -> dict[str, str]:
    digest = hmac.new(SECRET.encode(), body.encode(), hashlib.sha256).hexdigest()
    return {"Content-Type": "application/json", "X-GitHub-Event": "push",
            "X-GitHub-Delivery": str(uuid.uuid4()), "X-Hub-Signature-256": f"sha256={digest}"}


def test_refused_webhooks_start_no_build(app: Any, remote: tuple[str, str],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    cases = {"unsigned": 401, "wrong": 403, "issues": 400, "oversized": 413}
    with Client(app.app, stage_name="prod") as client:
        for change, status in cases.items():
            body, headers = push(*remote)
            if change == "unsigned":
                del headers["X-Hub-Signature-256"]
            elif change == "wrong":
                headers["X-Hub-Signature-256"] = "sha256=" + "0" * 64
            elif change == "issues":
                headers["X-GitHub-Event"] = "issues"
            else:
                monkeypatch.setenv("BINDERLESS_WEBHOOK_MAX_BYTES", "64")
                app.settings.cache_clear()
            answer = client.http.post("/api/prebuild", headers=headers, body=body)
            assert answer.status_code == status, (change, answer.body)
            assert answer.json_body["status_code"] == status
    assert builds() == []


def test_the_functions_role_allows_every_call_of_a_prebuild(app: Any, calls: Calls,
                                                            remote: tuple[str, str]) -> None:
    """The calls a prebuild that starts a build makes are the ones the functions' policy
    (infra/service/functions.yaml, on moto, which checks no permission) grants, each on
    the resource the policy names."""
    from binderless.deploy.templates import ROOT, load_template

    body, headers = push(*remote)
    with Client(app.app, stage_name="prod") as client:
        answer = client.http.post("/api/prebuild", headers=headers, body=body)
    assert answer.status_code == 202 and answer.json_body["status"] == "started", answer.body
    policy = load_template(ROOT / "infra" / "service" / "functions.yaml")["Resources"][
        "ApiHandlerRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
    granted: dict[str, list[Any]] = {}
    for statement in policy:
        actions = statement["Action"] if isinstance(statement["Action"], list) else [
            statement["Action"]]
        for action in actions:
            granted.setdefault(action, []).append(statement["Resource"])
    made = {f"{prefix}:{operation}" for prefix, operation, _ in calls}
    assert {"codebuild:StartBuild", "s3:PutObject", "ecr:DescribeImages",
            "ecr:CreateRepository"} <= made  # the scan sees the calls it should
    # A transaction is authorized as the writes it carries (binderless.aws.dynamodb).
    made = (made - {"dynamodb:TransactWriteItems"}) | {"dynamodb:PutItem"}
    assert made - set(granted) == set()
    uploads = [p["Key"] for prefix, op, p in calls if f"{prefix}:{op}" == "s3:PutObject"]
    assert uploads and all(key.startswith("sources/") for key in uploads)
    assert granted["s3:PutObject"] == [{"Fn::Sub": "${SessionsBucket.Arn}/sources/*"}]
    assert granted["codebuild:StartBuild"] == [{"Fn::GetAtt": ["BuildProject", "Arn"]}]
    started = [p["projectName"] for prefix, op, p in calls if op == "StartBuild"]
    assert started == [PROJECT]


def test_without_git_a_prebuild_is_left_to_a_gateway(app: Any, remote: tuple[str, str]) -> None:
    """The Lambda runtime has no ``git``: the prebuild is recorded as a build-only launch
    that no one drives, which a gateway's reconcile (``resume``) takes over; nothing is
    built here."""
    from binderless.aws.prebuild import start_prebuild
    from binderless.service import LaunchRequest

    clone_url, sha = remote
    request = LaunchRequest(provider="git", spec=f"{clone_url.replace(':', '%3A').replace('/', '%2F')}/main",
                            launch_host="https://binder.example/", build_only=True,
                            owner="someone")
    answer = app.run_with_service(lambda service: start_prebuild(service, request,
                                                                 which=lambda _name: None))
    assert answer["status"] == "queued" and answer["resolved_ref"] == sha
    assert builds() == []
    state = DynamoState(boto3.client("dynamodb"), "binderless")
    launch = state.get_launch(answer["launch_id"])
    assert launch is not None and not launch["driver"] and launch["lease_until"] is None
    recorded = json.loads(launch["request"])
    assert recorded["build_only"] is True and recorded["owner"] == ""
    assert answer["launch_id"] in state.unfinished_launches()
