"""``binderless deploy --dry-run``: the packaged templates, checked offline (cfn-lint too)."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

from binderless.aws.dynamodb import TTL_ATTRIBUTE, table_definition
from binderless.cli import build_parser
from binderless.deploy.cli import run
from binderless.settings import Settings
from tests.functional.infra.conftest import GATEWAY_ONLY, DryRun

ROOT = Path(__file__).resolve().parents[3]
FUNCTIONS = ("APIHandler", "Reconcile", "TaskStopped", "BuildFinished")


def gateway_environment(template: dict[str, Any]) -> dict[str, Any]:
    task = template["Resources"]["GatewayTaskDefinition"]["Properties"]
    container = next(c for c in task["ContainerDefinitions"] if c["Name"] == "gateway")
    return {e["Name"]: e["Value"] for e in container["Environment"]}


def test_the_dry_run_writes_the_packaged_files_and_the_plan(dry_run: DryRun) -> None:
    names = {p.name for p in dry_run.out.iterdir()}
    assert {"binderless.template.json", "assets.template.json", "deployment.zip",
            "images-source.zip", "plan.txt"} <= names
    plan = (dry_run.out / "plan.txt").read_text()
    assert plan.splitlines()[0].startswith("1. create or update the stack binderless-assets")
    assert "run the CodeBuild project binderless-images" in plan
    assert "create or update the stack binderless from binderless.template.json" in plan
    assert plan in dry_run.printed
    sources = set(zipfile.ZipFile(dry_run.out / "images-source.zip").namelist())
    assert {"pyproject.toml", "functions/gateway.Dockerfile", "build-runner/Dockerfile",
            "site/loading.html", "functions/binderless/cli.py"} <= sources
    assert not any("__pycache__" in name or name.endswith(".pyc") for name in sources)


def test_the_templates_are_plain_cloudformation(dry_run: DryRun) -> None:
    for template in (dry_run.service, dry_run.assets):
        assert "Transform" not in template
        kinds = {r["Type"] for r in template["Resources"].values()}
        assert not any(kind.startswith("AWS::Serverless::") for kind in kinds)
    resources = dry_run.service["Resources"]
    for name in FUNCTIONS:
        function = resources[name]
        assert function["Type"] == "AWS::Lambda::Function"
        assert function["Properties"]["Code"] == {"S3Bucket": {"Ref": "ArtifactsBucket"},
                                                  "S3Key": {"Ref": "LambdaCodeKey"}}


def test_the_chalice_decorators_make_the_only_rules(dry_run: DryRun) -> None:
    rules = {name: r["Properties"] for name, r in dry_run.service["Resources"].items()
             if r["Type"] == "AWS::Events::Rule"}
    assert set(rules) == {"ReconcileReconcileEvent", "TaskStoppedTaskStoppedEvent",
                          "BuildFinishedBuildFinishedEvent"}
    assert rules["ReconcileReconcileEvent"]["ScheduleExpression"] == "rate(1 minute)"
    stopped = rules["TaskStoppedTaskStoppedEvent"]["EventPattern"]["detail"]
    assert stopped["startedBy"] == ["binderless"]
    assert stopped["clusterArn"] == [{"Fn::GetAtt": ["Cluster", "Arn"]}]
    built = rules["BuildFinishedBuildFinishedEvent"]["EventPattern"]["detail"]
    assert built["project-name"] == [{"Ref": "BuildProject"}]
    for name, rule in rules.items():
        assert rule["Targets"][0]["Arn"]["Fn::GetAtt"][0] in FUNCTIONS, name
        permission = dry_run.service["Resources"][f"{name}Permission"]["Properties"]
        assert permission["Principal"] == "events.amazonaws.com"
        assert permission["SourceArn"] == {"Fn::GetAtt": [name, "Arn"]}


def test_gateway_and_functions_get_the_same_settings(dry_run: DryRun) -> None:
    gateway = gateway_environment(dry_run.service)
    known = {"BINDERLESS_" + name.upper() for name in Settings.__dataclass_fields__}
    assert set(gateway) <= known
    assert gateway["BINDERLESS_MODE"] == "aws"
    for name in FUNCTIONS:
        variables = dry_run.service["Resources"][name]["Properties"]["Environment"]["Variables"]
        shared = {k: v for k, v in variables.items() if k.startswith("BINDERLESS_")}
        assert shared == {k: v for k, v in gateway.items() if k not in GATEWAY_ONLY}
    from binderless.aws.wiring import REQUIRED
    assert {"BINDERLESS_" + name.upper() for name in REQUIRED} <= set(gateway)


def test_the_build_project_uses_the_runner_buildspec(dry_run: DryRun) -> None:
    project = dry_run.service["Resources"]["BuildProject"]["Properties"]
    assert project["Source"]["BuildSpec"] == (ROOT / "build-runner" / "buildspec.yml").read_text()
    assert project["Environment"]["PrivilegedMode"] is True
    images = dry_run.assets["Resources"]["ImageBuildProject"]["Properties"]
    assert images["Source"]["BuildSpec"] == (ROOT / "infra" / "image-build.buildspec.yml").read_text()


def test_the_table_is_the_one_the_adapter_expects(dry_run: DryRun) -> None:
    table = dry_run.service["Resources"]["StateTable"]["Properties"]
    expected = table_definition("ignored")
    assert table["KeySchema"] == expected["KeySchema"]
    assert table["AttributeDefinitions"] == expected["AttributeDefinitions"]
    assert table["GlobalSecondaryIndexes"] == expected["GlobalSecondaryIndexes"]
    assert table["BillingMode"] == expected["BillingMode"]
    assert table["TimeToLiveSpecification"] == {"AttributeName": TTL_ATTRIBUTE, "Enabled": True}
    assert table["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}


def cfn_lint(*paths: Path) -> list[dict[str, Any]]:
    cfn_lint_bin = Path(sys.executable).with_name("cfn-lint")
    env = {**os.environ, "AWS_EC2_METADATA_DISABLED": "true"}
    result = subprocess.run([str(cfn_lint_bin), "--format", "json", *map(str, paths)],
                            capture_output=True, text=True, env=env)
    assert result.returncode in (0, 2, 4, 6, 8, 10, 12, 14), result.stderr  # not a crash
    findings: list[dict[str, Any]] = json.loads(result.stdout or "[]")
    return findings


def kept_warnings() -> dict[str, str]:
    """The table "cfn-lint warnings kept" of the operator guide: rule -> reason."""
    text = (ROOT / "docs" / "operators.md").read_text()
    section = text.split("### cfn-lint warnings kept", 1)[1].split("\n#", 1)[0]
    return {m.group(1): m.group(2).strip()
            for m in re.finditer(r"^\| `([EWI]\d{4})` \|[^|]*\|([^|]+)\|", section, re.M)}


def test_cfn_lint_finds_no_error_and_only_documented_warnings(dry_run: DryRun) -> None:
    findings = cfn_lint(dry_run.out / "binderless.template.json",
                        dry_run.out / "assets.template.json")
    errors = [f for f in findings if f["Level"] == "Error"]
    assert errors == []
    documented = kept_warnings()
    undocumented = {f["Rule"]["Id"]: f["Message"] for f in findings
                    if f["Level"] == "Warning" and f["Rule"]["Id"] not in documented}
    assert undocumented == {}
    assert all(len(reason) > 20 for reason in documented.values())


def test_a_dry_run_needs_an_output_folder() -> None:
    err = io.StringIO()
    args = build_parser().parse_args(["deploy", "--dry-run"])
    assert run(args, out=io.StringIO(), err=err) == 1
    assert err.getvalue() == "binderless deploy: --dry-run writes into --output DIR; give one\n"


@pytest.mark.parametrize(("argv", "message"), [
    (["--param", "Nope=1"], "--param Nope: the stack has no such parameter. It has: "),
    (["--param", "SessionCpu=3000"], "--param SessionCpu=3000: choose one of 256, 512"),
    (["--param", "SessionMemory=lots"], "--param SessionMemory='lots': SessionMemory is a number"),
    (["--param", "MaxSessions=0"], "--param MaxSessions=0: the least is 1"),
    (["--param", "LambdaCodeKey=x"], "--param LambdaCodeKey: binderless deploy sets"),
    (["--param", "GitHubToken=ghp_secret"], "--param GitHubToken='ghp_secret' is not allowed: "
                                            "a reference"),
    (["--param", "SessionCpu"], "--param takes KEY=VALUE, not 'SessionCpu'"),
    # A regional web ACL cannot guard CloudFront: only us-east-1's global ones can.
    (["--param", "WebAcl=arn:aws:wafv2:eu-west-1:123456789012:regional/webacl/a/b"],
     "--param WebAcl='arn:aws:wafv2:eu-west-1:123456789012:regional/webacl/a/b' is not "
     "allowed: empty, create, or the ARN of a CLOUDFRONT-scope web ACL"),
    (["--param", "LaunchRateLimit=5"], "--param LaunchRateLimit=5: the least is 10"),
    (["--stack", "Binder"], "'Binder' cannot name a binderless stack"),
])
def test_bad_input_is_refused_before_anything_runs(argv: list[str], message: str,
                                                   tmp_path: Path) -> None:
    err = io.StringIO()
    args = build_parser().parse_args(["deploy", "--dry-run", "--output", str(tmp_path), *argv])
    assert run(args, out=io.StringIO(), err=err) == 1
    assert err.getvalue().startswith(f"binderless deploy: {message}"), err.getvalue()
    assert list(tmp_path.iterdir()) == []


def test_help_names_the_commands_options(capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("deploy", "destroy"):
        with pytest.raises(SystemExit) as exit_info:
            build_parser().parse_args([command, "--help"])
        assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for option in ("--stack", "--region", "--param KEY=VALUE", "--dry-run", "--output DIR",
                   "--keep-data", "--delete-data", "--yes"):
        assert option in text


def test_the_dashboard_is_valid_json_and_shows_what_the_issue_asks(dry_run: DryRun) -> None:
    body = dry_run.service["Resources"]["Dashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
    dashboard = json.loads(re.sub(r"\$\{[^}]+\}", "1", body))
    titles = [w["properties"].get("title", "") for w in dashboard["widgets"]]
    for wanted in ("Launches", "Launch time", "Build time", "Active sessions", "Failures"):
        assert any(title.startswith(wanted) for title in titles), wanted
    metrics = {m[1] for w in dashboard["widgets"] for m in w["properties"].get("metrics", [])
               if m[0] == "binderless"}
    assert {"LaunchesReady", "LaunchesFailed", "LaunchSeconds", "ActiveSessions",
            "BuildSeconds", "LaunchesAbandoned"} <= metrics
