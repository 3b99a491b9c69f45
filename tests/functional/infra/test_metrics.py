"""The dashboard and the alarms plot only metrics the code emits.

CloudWatch names a metric by its namespace, its name and its *full* set of dimensions: a
graph of ``LaunchesReady`` with ``service=gateway`` alone stays empty, because every record
also has ``Kind``. ``binderless.aws.metrics.METRICS`` lists each metric as emitted; the tests
here hold the code to that list (the gateway's records, as printed; the Lambda functions'
names, read out of ``functions/app.py``, and their dimensions, as printed) and the template
to the code.
"""

from __future__ import annotations

import ast
import copy
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from binderless.aws.metrics import (
    FUNCTION_METRICS,
    GATEWAY_METRICS,
    METRICS,
    NAMESPACE,
    CloudWatchObserver,
    Dimensions,
)
from tests.functional.infra.conftest import DryRun

ROOT = Path(__file__).resolve().parents[3]
Metric = tuple[str, Dimensions]


def emitted(output: str) -> set[Metric]:
    """The metrics of the embedded-metric-format records in ``output``."""
    found: set[Metric] = set()
    for line in output.splitlines():
        if not (line.startswith("{") and '"_aws"' in line):
            continue
        record = json.loads(line)
        for directive in record["_aws"]["CloudWatchMetrics"]:
            assert directive["Namespace"] == NAMESPACE
            for dimension_set in directive["Dimensions"]:
                dimensions = frozenset((d, record[d]) for d in dimension_set)
                found |= {(m["Name"], dimensions) for m in directive["Metrics"]}
    return found


def expected(table: dict[str, tuple[Dimensions, ...]]) -> set[Metric]:
    return {(name, dimensions) for name, sets in table.items() for dimensions in sets}


def test_the_gateway_emits_what_metrics_lists(capsys: pytest.CaptureFixture[str]) -> None:
    observer = CloudWatchObserver()
    for phase in ("ready", "failed"):
        for built in (False, True):
            observer.launch_finished(phase, 12.0, built=built)
    for ok in (True, False):
        observer.build_finished(ok, 300.0)
    observer.sessions_active(3)
    assert emitted(capsys.readouterr().out) == expected(GATEWAY_METRICS)


def counted_names(source: str) -> set[str]:
    """The metric names ``functions/app.py`` passes to ``count``, its one way to emit."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                and node.func.attr == "add_metric":
            assert [k.arg for k in node.keywords if k.arg == "name"] == ["name"]
            name = next(k.value for k in node.keywords if k.arg == "name")
            assert isinstance(name, ast.Name) and name.id == "name", "only count() adds metrics"
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
                and node.func.id == "count":
            first = node.args[0]
            values = [first.body, first.orelse] if isinstance(first, ast.IfExp) else [first]
            for value in values:
                assert isinstance(value, ast.Constant), ast.unparse(node)
                names.add(str(value.value))
    return names


def test_the_functions_emit_what_metrics_lists(monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    source = (ROOT / "functions" / "app.py").read_text()
    assert counted_names(source) == set(FUNCTION_METRICS)
    monkeypatch.syspath_prepend(str(ROOT / "functions"))
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "elsewhere")  # the code's must win
    import app

    for name in FUNCTION_METRICS:
        app.count(name)
        app.metrics.flush_metrics()
    assert emitted(capsys.readouterr().out) == expected(FUNCTION_METRICS)


# ----- the template ----------------------------------------------------------------------

def dashboard(template: dict[str, Any]) -> dict[str, Any]:
    body = template["Resources"]["Dashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
    return json.loads(re.sub(r"\$\{[^}]+\}", "1", body))  # type: ignore[no-any-return]


def metric_lines(lines: list[list[Any]]) -> Iterator[list[Any]]:
    """A widget's metrics with the dashboard shorthand spelt out: "." repeats the value at
    the same place in the line before, a leading "..." repeats the line before up to where
    the values given next take over (the console's own notation)."""
    previous: list[Any] = []
    for line in lines:
        values = [v for v in line if not isinstance(v, dict)]
        if not values:
            options = line[-1]
            assert NAMESPACE not in json.dumps(options), f"unchecked expression: {options}"
            continue
        if values[0] == "...":
            rest = values[1:]
            values = previous[:len(previous) - len(rest)] + rest
        assert all(i < len(previous) for i, v in enumerate(values) if v == "."), line
        values = [previous[i] if v == "." else v for i, v in enumerate(values)]
        previous = values
        yield values


def plotted(template: dict[str, Any]) -> Iterator[tuple[str, Metric]]:
    """(where, metric) for each metric of ``NAMESPACE`` on the dashboard and in the alarms."""
    for widget in dashboard(template)["widgets"]:
        title = widget["properties"].get("title", "")
        for values in metric_lines(widget["properties"].get("metrics", [])):
            if values[0] == NAMESPACE:
                pairs = values[2:]
                dimensions = frozenset(zip(pairs[::2], pairs[1::2], strict=True))
                yield f"dashboard: {title}", (values[1], dimensions)
    for name, resource in template["Resources"].items():
        if resource["Type"] != "AWS::CloudWatch::Alarm":
            continue
        props = resource["Properties"]
        metrics = [q["MetricStat"]["Metric"] for q in props.get("Metrics", []) if "MetricStat" in q]
        if "MetricName" in props:
            metrics.append(props)
        for metric in metrics:
            if metric["Namespace"] == NAMESPACE:
                dimensions = frozenset((d["Name"], d["Value"]) for d in metric["Dimensions"])
                yield f"alarm: {name}", (metric["MetricName"], dimensions)


def not_emitted(template: dict[str, Any]) -> list[str]:
    return [f"{where}: {name} {sorted(dimensions)}" for where, (name, dimensions)
            in plotted(template) if (name, dimensions) not in METRICS]


def test_the_dashboard_and_alarms_plot_only_emitted_metrics(dry_run: DryRun) -> None:
    assert not_emitted(dry_run.service) == []
    shown = {name for _, (name, _) in plotted(dry_run.service)}
    assert {"LaunchesReady", "LaunchesFailed", "LaunchSeconds", "ActiveSessions", "BuildSeconds",
            "BuildsFailed", "LaunchesAbandoned", "LaunchesRequested",
            "SessionsEndedByTask"} <= shown
    for name in ("LaunchesReady", "LaunchesFailed", "LaunchSeconds"):  # one line per Kind
        assert {m for _, m in plotted(dry_run.service) if m[0] == name} == expected(
            {name: GATEWAY_METRICS[name]})
    alarmed = {metric for where, metric in plotted(dry_run.service)
               if where == "alarm: LaunchFailuresAlarm"}
    assert alarmed == {m for m in METRICS if m[0] == "LaunchesFailed"}  # both kinds


def test_the_check_finds_a_metric_nobody_emits(dry_run: DryRun) -> None:
    broken = copy.deepcopy(dry_run.service)
    sub = broken["Resources"]["Dashboard"]["Properties"]["DashboardBody"]
    # The gateways do not count abandoned launches: the reconcile function does.
    sub["Fn::Sub"] = sub["Fn::Sub"].replace(
        '["binderless", "LaunchesAbandoned", "service", "binderless",',
        '["binderless", "LaunchesAbandoned", "service", "gateway",', 1)
    assert not_emitted(broken) == [
        "dashboard: Launches (per 5 minutes): LaunchesAbandoned [('service', 'gateway')]"]
    alarm = copy.deepcopy(dry_run.service)
    metric = alarm["Resources"]["LaunchFailuresAlarm"]["Properties"]["Metrics"][0]
    metric["MetricStat"]["Metric"]["MetricName"] = "LaunchFailures"
    assert not_emitted(alarm) == [
        "alarm: LaunchFailuresAlarm: LaunchFailures [('Kind', 'cached'), ('service', 'gateway')]"]
