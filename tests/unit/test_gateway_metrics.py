"""The gateway's metrics: one embedded-metric-format record per finished launch or build."""

from __future__ import annotations

import json
from typing import Any

import pytest

from binderless.aws.metrics import CloudWatchObserver


def records(output: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in output.splitlines() if '"_aws"' in line]


def test_launches_builds_and_sessions_become_cloudwatch_metrics(
        capsys: pytest.CaptureFixture[str]) -> None:
    observer = CloudWatchObserver()
    observer.launch_finished("ready", 4.5, built=False)
    observer.launch_finished("failed", 61.0, built=True)
    observer.build_finished(True, 120.25)
    observer.sessions_active(7)
    ready, failed, build, sessions = records(capsys.readouterr().out)

    def names(record: dict[str, Any]) -> set[str]:
        [directive] = record["_aws"]["CloudWatchMetrics"]
        assert directive["Namespace"] == "binderless"
        return {m["Name"] for m in directive["Metrics"]}

    assert names(ready) == {"LaunchesReady", "LaunchSeconds"}
    assert (ready["LaunchSeconds"], ready["Kind"]) == ([4.5], "cached")
    assert names(failed) == {"LaunchesFailed", "LaunchSeconds"} and failed["Kind"] == "built"
    assert names(build) == {"BuildsSucceeded", "BuildSeconds"} and build["BuildSeconds"] == [120.25]
    assert "Kind" not in build  # dimensions do not leak from one record to the next
    assert names(sessions) == {"ActiveSessions"} and sessions["ActiveSessions"] == [7.0]
