"""The session gateway: the same server, wired to the AWS adapters (against moto)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote

import boto3
import httpx
import pytest

from binderless.aws.dynamodb import table_definition
from binderless.aws.wiring import aws_service
from binderless.settings import Settings
from tests.conftest import ROOT
from tests.functional.inprocess import serve_in_thread


def settings(tmp_path: Path) -> Settings:
    return Settings(
        mode="aws", state_dir=tmp_path, aws_table="binderless", aws_bucket="binderless-test",
        ecr_registry="123456789012.dkr.ecr.us-east-1.amazonaws.com",
        base_image="123456789012.dkr.ecr.us-east-1.amazonaws.com/mirror/buildpack-deps:jammy",
        subnets=("subnet-1",), security_groups=("sg-1",),
        execution_role_arn="arn:aws:iam::123456789012:role/exec",
        task_role_arn="arn:aws:iam::123456789012:role/task",
        allow_local_paths=False, final_linger_seconds=0.0, keepalive_seconds=0.5)


def test_gateway_serves_the_protocol_on_aws_state(moto: Any, region: str, tmp_path: Path) -> None:
    boto3.client("dynamodb", region_name=region).create_table(**table_definition("binderless"))
    boto3.client("s3", region_name=region).create_bucket(Bucket="binderless-test")
    service = aws_service(settings(tmp_path), lambda name: boto3.client(name, region_name=region))
    with serve_in_thread(service) as base:
        versions = httpx.get(base + "/versions").json()
        assert versions["builder_info"]["mode"] == "aws"
        health = httpx.get(base + "/health")
        assert health.status_code == 200 and health.json()["ok"] is True
        local = quote("file://" + str(tmp_path), safe="")
        text = httpx.get(f"{base}/build/git/{local}/HEAD", timeout=30).text
        final = json.loads([line for line in text.splitlines() if line.startswith("data:")][-1][5:])
        assert final["phase"] == "failed"
        assert "does not launch local paths" in final["message"]
        # The failure was written to the DynamoDB event log, where any gateway copy reads it.
        table = boto3.client("dynamodb", region_name=region)
        items = table.scan(TableName="binderless")["Items"]
        assert any(item["pk"]["S"].startswith("EVENTS#") for item in items)


def test_gateway_names_missing_settings() -> None:
    result = subprocess.run([sys.executable, "-m", "binderless", "gateway"], capture_output=True,
                            text=True, cwd=ROOT, timeout=60,
                            env={"PATH": "/usr/bin:/bin", "AWS_EC2_METADATA_DISABLED": "true",
                                 "AWS_DEFAULT_REGION": "us-east-1"})
    assert result.returncode == 2
    assert "BINDERLESS_AWS_BUCKET" in result.stderr and "BINDERLESS_SUBNETS" in result.stderr
    assert "Traceback" not in result.stderr


def test_aws_service_refuses_to_start_without_resources() -> None:
    with pytest.raises(ValueError, match="BINDERLESS_ECR_REGISTRY"):
        aws_service(Settings(mode="aws"), lambda name: None)
