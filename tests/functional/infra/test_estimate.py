"""``binderless deploy --estimate``: the bill of the generated templates, and its limits."""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import botocore.session
import pytest
import yaml

from binderless.cli import build_parser
from binderless.deploy.cli import run
from binderless.deploy.estimate import PRICES, PriceTable, estimate, layouts, markdown_table, render
from tests.functional.infra.conftest import DryRun, forbid_clients

ROOT = Path(__file__).resolve().parents[3]
#: The issue's promise: the default stack idles for less than this a month (us-east-1).
IDLE_BUDGET = 35.0


def test_the_default_stack_idles_under_budget(dry_run: DryRun) -> None:
    default = estimate(dry_run.service, "us-east-1")
    assert default.layout == "public"
    assert 0 < default.idle_month < IDLE_BUDGET, default.lines()


def test_the_private_layout_costs_its_nat_gateway(dry_run: DryRun) -> None:
    public, private = layouts(dry_run.service, "us-east-1")
    table = PriceTable.load("us-east-1")
    nat = (table["nat_gateway_hour"] + table["public_ipv4_hour"]) * table.hours
    gateway_address = table["public_ipv4_hour"] * table.hours
    assert private.idle_month == pytest.approx(public.idle_month + nat - gateway_address)
    assert dict(private.idle)["NAT gateway NatGateway"] == pytest.approx(32.85)


def test_the_estimate_follows_the_parameters(dry_run: DryRun) -> None:
    """Two gateways, twice the gateway's share; a larger session, a larger session-hour."""
    one = estimate(dry_run.service, "us-east-1")
    two = estimate(dry_run.service, "us-east-1", {"GatewayMinCount": "2",
                                                  "SessionCpu": "2048", "SessionMemory": "8192"})
    gateway = [cost for what, cost in one.idle if what.startswith("GatewayService")]
    assert two.idle_month == pytest.approx(one.idle_month + sum(gateway))
    assert two.session_hour == pytest.approx(2 * one.session_hour - 0.005)  # one address
    table = PriceTable.load("us-east-1")
    assert one.session_hour == pytest.approx(table["fargate_vcpu_hour"]
                                             + 4 * table["fargate_gb_hour"]
                                             + table["public_ipv4_hour"])
    assert one.build_minute == 0.01  # BUILD_GENERAL1_MEDIUM


def test_an_interface_endpoint_would_be_counted(dry_run: DryRun) -> None:
    broken = {**dry_run.service, "Resources": {**dry_run.service["Resources"], "Ecr": {
        "Type": "AWS::EC2::VPCEndpoint", "Properties": {
            "VpcEndpointType": "Interface",
            "SubnetIds": [{"Ref": "PrivateSubnetA"}, {"Ref": "PrivateSubnetB"}]}}}}
    assert estimate(broken, "us-east-1").idle_month == pytest.approx(
        estimate(dry_run.service, "us-east-1").idle_month + 2 * 0.01 * 730)


def test_render_decides_conditions_and_drops_resources(dry_run: DryRun) -> None:
    rendered = render(dry_run.service, {"SignIn": "cognito", "NetworkLayout": "private"})
    assert rendered["Conditions"]["SignInWithCognito"] is True
    assert "NatGateway" in rendered["Resources"]
    assert "NatGateway" not in render(dry_run.service)["Resources"]
    assert "Fn::If" not in str(rendered["Resources"]["GatewayService"])


def test_the_price_table_states_its_date_and_source() -> None:
    data = yaml.safe_load(PRICES.read_text())
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", data["as_of"])
    assert "aws" in data["source"].lower()
    keys = set(data["regions"]["us-east-1"])
    assert data["regions"]["us-east-1"]["verified"] is True
    for region, prices in data["regions"].items():
        assert set(prices) == keys, region
    with pytest.raises(Exception, match="no prices for ap-south-9"):
        PriceTable.load("ap-south-9")


def test_the_operator_guide_table_is_the_estimate(dry_run: DryRun) -> None:
    """docs/operators.md's cost table is this output; regenerate it with
    ``python -m binderless.deploy.estimate DIR/binderless.template.json`` (a dry run's)."""
    text = (ROOT / "docs" / "operators.md").read_text()
    table = text.split("<!-- cost-table:start -->\n", 1)[1].split("<!-- cost-table:end -->")[0]
    assert table == markdown_table(layouts(dry_run.service, "us-east-1"))


def packager(dry_run: DryRun) -> Any:
    import shutil

    from binderless.deploy.package import load_packaged

    def copy(out: Path, *, environ: Any = None) -> Any:
        shutil.copytree(dry_run.out, out, dirs_exist_ok=True)
        return load_packaged(out)
    return copy


def test_estimate_prints_both_layouts_without_aws(dry_run: DryRun) -> None:
    out = io.StringIO()
    args = build_parser().parse_args(["deploy", "--estimate", "--region", "eu-west-1",
                                      "--param", "NetworkLayout=private"])
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(botocore.session.Session, "create_client", forbid_clients)
        assert run(args, out=out, err=out, packager=packager(dry_run)) == 0
    printed = out.getvalue()
    assert "Estimated cost in eu-west-1, NetworkLayout=private" in printed
    assert "approximate for this region" in printed
    assert "with NetworkLayout=public instead:" in printed
    assert "NAT gateway NatGateway" in printed


def test_the_dry_run_prints_and_keeps_the_estimate(dry_run: DryRun) -> None:
    kept = (dry_run.out / "estimate.txt").read_text()
    assert kept.startswith("Estimated cost in us-east-1, NetworkLayout=public")
    assert "with NetworkLayout=private instead" in kept
    assert kept in dry_run.printed


def test_the_readme_states_the_estimated_idle_bill(dry_run: DryRun) -> None:
    """The README promises what the estimate computes: the idle bill of each layout to the
    dollar, and that nothing has run on a real account yet."""
    text = (ROOT / "README.md").read_text()
    public, private = layouts(dry_run.service, "us-east-1")
    stated = [float(n) for n in re.findall(r"about \$(\d+)", text)]
    assert round(public.idle_month) in stated and round(private.idle_month) in stated, stated
    assert "Nothing has run on a real AWS account yet" in text


def test_the_docs_give_the_quiet_mkdocs_commands() -> None:
    """mkdocs-material prints a large banner unless NO_MKDOCS_2_WARNING is set."""
    text = (ROOT / "docs" / "development.md").read_text()
    section = text.split("## Working on the docs", 1)[1]
    assert "export NO_MKDOCS_2_WARNING=1" in section.split(".venv/bin/mkdocs serve")[0]



def test_deploy_help_says_what_idles_and_what_is_unverified(
        capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["deploy", "--help"])
    flat = " ".join(capsys.readouterr().out.split())
    assert "What idles" in flat and "--estimate" in flat
    assert "not yet run on a real AWS account" in flat
