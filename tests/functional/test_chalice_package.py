"""``chalice package`` works offline and its package answers requests."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from binderless.packaging import chalice_package, stage_chalice_project

CHECK = r"""
import json, sys
unpacked = sys.argv[1]
from chalice.test import Client            # the full chalice, from the environment
sys.path.insert(0, unpacked)                # then our code, from the package
for name in [m for m in sys.modules if m == "binderless" or m.startswith("binderless.")]:
    del sys.modules[name]
import app, binderless
assert binderless.__file__.startswith(unpacked), binderless.__file__
# What the event handlers import must come from the package too, not from this environment.
for name in [m for m in sys.modules if m.split(".")[0] in ("aiohttp", "httpx", "yaml")]:
    del sys.modules[name]
sys.path[:] = [unpacked] + [p for p in sys.path if "site-packages" not in p or "chalice" in p]
import binderless.service, aiohttp, httpx, yaml
for module in (aiohttp, httpx, yaml):
    assert module.__file__.startswith(unpacked), module.__file__
with Client(app.app) as client:
    versions = client.http.get("/versions")
    providers = client.http.get("/api/repoproviders")
    resolved = client.http.get("/api/resolve?offline=true&server=https%3A%2F%2Fb.example"
                               "&link=https%3A%2F%2Fmybinder.org%2Fv2%2Fgh%2Forg%2Frepo%2FHEAD")
    bad = client.http.get("/api/resolve?offline=true&link=gh%2Fx")
print(json.dumps({"versions": [versions.status_code, versions.json_body],
                  "providers": [p["id"] for p in providers.json_body],
                  "resolved": resolved.json_body, "bad": [bad.status_code, bad.json_body]}))
"""


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("chalice")
    project = stage_chalice_project(root / "project")
    return chalice_package(project, root / "out")


def test_chalice_package_writes_a_template_and_a_zip(package: Path) -> None:
    template = json.loads((package / "sam.json").read_text())
    functions = [r for r in template["Resources"].values()
                 if r["Type"] == "AWS::Serverless::Function"]
    assert functions and all(f["Properties"]["Runtime"].startswith("python3") for f in functions)
    env = functions[0]["Properties"]["Environment"]["Variables"]
    assert env["BINDERLESS_MODE"] == "aws"
    names = zipfile.ZipFile(package / "deployment.zip").namelist()
    assert "app.py" in names and "binderless/service.py" in names
    assert any(n.startswith("aws_lambda_powertools/") for n in names)
    assert any(n.startswith("httpx/") for n in names)
    assert any(n.startswith("aiohttp/") for n in names)


def test_the_packaged_app_imports_and_answers(package: Path, tmp_path: Path) -> None:
    unpacked = tmp_path / "unpacked"
    zipfile.ZipFile(package / "deployment.zip").extractall(unpacked)
    result = subprocess.run([sys.executable, "-c", CHECK, str(unpacked)], capture_output=True,
                            text=True, env={"AWS_EC2_METADATA_DISABLED": "true",
                                            "AWS_DEFAULT_REGION": "us-east-1", "PATH": "/usr/bin:/bin",
                                            "BINDERLESS_MODE": "aws"})
    assert result.returncode == 0, result.stderr
    answers = json.loads(result.stdout.strip().splitlines()[-1])
    assert answers["versions"][0] == 200 and "binderhub" in answers["versions"][1]
    assert answers["versions"][1]["builder_info"]["mode"] == "aws"
    assert {"gh", "git", "zenodo", "doi"} <= set(answers["providers"])
    assert answers["resolved"]["launch_url"] == "https://b.example/v2/gh/org/repo/HEAD"
    assert answers["bad"][0] == 400 and "not a GitHub spec" in answers["bad"][1]["message"]


def test_the_app_reads_provider_tokens_from_ssm(monkeypatch: pytest.MonkeyPatch) -> None:
    import boto3
    from moto import mock_aws

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2] / "functions"))
    monkeypatch.setenv("BINDERLESS_MODE", "aws")
    monkeypatch.setenv("BINDERLESS_GITHUB_TOKEN", "ssm:/binderless/github")
    import app

    app.settings.cache_clear()
    with mock_aws():
        boto3.client("ssm").put_parameter(Name="/binderless/github", Value="ghp_from_ssm",
                                          Type="SecureString")
        assert app.settings().github_token == "ghp_from_ssm"
    app.settings.cache_clear()


UNSCOPED_ACTIONS = {"xray:PutTraceSegments", "xray:PutTelemetryRecords"}


def test_the_lambda_role_uses_the_explicit_policy(package: Path) -> None:
    template = json.loads((package / "sam.json").read_text())
    roles = [r for r in template["Resources"].values() if r["Type"] == "AWS::IAM::Role"]
    assert roles
    for role in roles:
        for policy in role["Properties"].get("Policies", []):
            for statement in policy["PolicyDocument"]["Statement"]:
                actions = statement["Action"] if isinstance(statement["Action"], list) \
                    else [statement["Action"]]
                assert all(a != "*" and not a.endswith(":*") for a in actions), statement
                resources = statement["Resource"] if isinstance(statement["Resource"], list) \
                    else [statement["Resource"]]
                # X-Ray's write actions take no resource: "*" is the only form IAM accepts.
                if set(actions) <= UNSCOPED_ACTIONS:
                    continue
                assert "*" not in resources, statement
