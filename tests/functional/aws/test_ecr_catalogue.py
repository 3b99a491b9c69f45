"""The catalogue on AWS (moto): ECR images with their sizes and usage from DynamoDB;
prune by budget removes the least recently launched image and deregisters its task
definitions, and never touches an image a running task or session uses.

ECS calls go through ``enforce_api_rules`` (ListTasks with ``startedBy`` alone, as AWS
demands and moto does not)."""

from __future__ import annotations

import io
import json
from typing import Any

import boto3

from binderless.aws.catalogue import IMAGE_TAG, EcrEnvironments
from binderless.aws.dynamodb import DynamoState, table_definition
from binderless.aws.ecs import SESSION_TAG, task_family
from binderless.backends.protocols import SessionRecord
from binderless.catalogue import Catalogue
from binderless.catalogue_cli import run as run_cli
from binderless.cli import build_parser
from tests.ecr_fakes import manifest
from tests.functional.aws.test_session_path import (  # noqa: F401  (the fixture)
    CLUSTER,
    REGION,
    Aws,
    aws,
)

REPOSITORY = "binderless-envs"
REGISTRY = "123456789012.dkr.ecr.us-east-1.amazonaws.com"
TABLE = "binderless-state"
KEYS = ("a" * 20, "b" * 20, "c" * 20, "d" * 20)


def families(ecs: Any) -> list[str]:
    """Families with an ACTIVE revision (moto lists a family whose revisions are all
    deregistered under status=ACTIVE too; AWS does not)."""
    arns = ecs.list_task_definitions(status="ACTIVE")["taskDefinitionArns"]
    return sorted({arn.rsplit("/", 1)[1].rsplit(":", 1)[0] for arn in arns})


def setup(env: Aws) -> tuple[Catalogue, DynamoState, Any]:
    ecr = boto3.client("ecr", region_name=REGION)
    ecr.create_repository(repositoryName=REPOSITORY)
    dynamodb = boto3.client("dynamodb", region_name=REGION)
    dynamodb.create_table(**table_definition(TABLE))
    state = DynamoState(dynamodb, TABLE)
    tasks = env.tasks()
    for key in KEYS:
        ecr.put_image(repositoryName=REPOSITORY, imageManifest=manifest(key), imageTag=key)
        request = tasks.task_definition(f"{REGISTRY}/{REPOSITORY}:{key}", family="",
                                        cpu=1024, memory=4096, container_port=8888)
        tasks.register({**request, "family": task_family("binderless-session-",
                                                         f"{key}-0123abcd")})
    storage = EcrEnvironments(ecr, env.ecs, repository=REPOSITORY, registry_uri=REGISTRY,
                              cluster=CLUSTER)
    return Catalogue(storage, state, grace=0.0), state, ecr


def test_prune_by_budget_on_ecr_removes_the_least_recently_launched_never_one_in_use(
        aws: Aws) -> None:  # noqa: F811
    catalogue, state, ecr = setup(aws)
    a, b, c, d = KEYS
    # Launch order (oldest first): c, b, d, a; b runs in an ECS task, d in a session.
    for when, key in enumerate((c, b, d, a), start=1):
        state.hold_environment(key, float(when))
        state.note_environment(key, float(when), image_name=key, built=True,
                               files=("requirements.txt",),
                               repo_url=f"https://github.com/org/{key[0]}", ref="f" * 40)
    tasks = aws.tasks()
    tasks.run(task_family("binderless-session-", f"{b}-0123abcd"), environment={},
              command=["jupyter"], client_token="s-b", tags={SESSION_TAG: "s-b", IMAGE_TAG: b})
    state.add_session(SessionRecord(
        session_id="s-d", launch_id="l-d", owner="", repo_url="https://github.com/org/d",
        resolved_ref="f" * 40, image_key=d, home="/h", target="", token="t", backend_id="",
        status="running", created_at=1.0, last_activity=1.0))

    entries = {e.key: e for e in catalogue.list()}
    assert set(entries) == set(KEYS)
    size = entries[a].size_bytes
    assert size > 0 and all(e.size_bytes == size for e in entries.values())
    assert entries[a].launches == 1 and entries[a].repos[0].repo_url.endswith("/a")
    assert entries[b].in_use == "1 ECS task running it"
    assert entries[d].in_use == "1 session running"

    report = catalogue.prune(budget=size * 2)
    # Least recently launched first: c goes; b (task) and d (session) stay, so a goes too.
    assert [item["key"] for item in report.removed] == [c, a]
    assert {item["key"]: item["reason"] for item in report.kept} == {
        b: "1 ECS task running it", d: "1 session running"}
    tags = {t for i in ecr.describe_images(repositoryName=REPOSITORY)["imageDetails"]
            for t in i.get("imageTags", [])}
    assert tags == {b, d}
    assert families(aws.ecs) == sorted(task_family("binderless-session-", f"{k}-0123abcd")
                                       for k in (b, d))
    assert {r.key for r in state.environment_records()} == {b, d}


def test_the_cli_lists_an_aws_deployment_as_json(aws: Aws) -> None:  # noqa: F811
    _catalogue, state, _ecr = setup(aws)
    state.note_environment(KEYS[0], 5.0, built=True, files=("environment.yml",))
    state.note_environment(KEYS[0], 6.0, repo_url="https://gitlab.com/g/p", ref="e" * 40)
    out = io.StringIO()
    environ = {"BINDERLESS_MODE": "aws", "BINDERLESS_AWS_TABLE": TABLE,
               "BINDERLESS_ECR_REPOSITORY": REPOSITORY, "BINDERLESS_ECR_REGISTRY": REGISTRY,
               "BINDERLESS_ECS_CLUSTER": CLUSTER}
    args = build_parser().parse_args(["environments", "list", "--json"])

    def client(name: str) -> Any:
        return aws.ecs if name == "ecs" else boto3.client(name, region_name=REGION)

    assert run_cli(args, out=out, environ=environ, client_factory=client) == 0
    listed = {item["key"]: item for item in json.loads(out.getvalue())}
    assert set(listed) == set(KEYS)
    first = listed[KEYS[0]]
    assert (first["built_at"], first["last_launched_at"], first["launches"]) == (5.0, 6.0, 1)
    assert first["repos"][0]["repo_url"] == "https://gitlab.com/g/p"
    assert first["files"] == ["environment.yml"]
    assert listed[KEYS[1]]["launches"] == 0 and listed[KEYS[1]]["built_at"] is not None
