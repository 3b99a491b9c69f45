"""The gateway's launch and build metrics, in CloudWatch's embedded metric format.

Each finished launch or build is one JSON line on standard output, written by
Powertools ``Metrics``. The gateway's container logs go to CloudWatch Logs, which turns
such lines into metrics: no API call, no agent. The names, in namespace ``binderless``:

- ``LaunchesReady`` and ``LaunchesFailed`` (counts) and ``LaunchSeconds`` (request to
  ready or failed), each with the dimension ``Kind``: ``cached`` (the image was found)
  or ``built`` (the launch waited for a build);
- ``BuildsSucceeded``, ``BuildsFailed`` (counts) and ``BuildSeconds``;
- ``ActiveSessions``: sessions starting or running, at each reconciler pass of each
  gateway (read its Maximum).

The operations dashboard of ``infra/`` plots them.
"""

from __future__ import annotations

import warnings

from aws_lambda_powertools import Metrics
from aws_lambda_powertools.metrics import MetricUnit

__all__ = ["NAMESPACE", "CloudWatchObserver"]

NAMESPACE = "binderless"


class CloudWatchObserver:
    """An ``Observer`` printing one embedded-metric-format record per event."""

    def __init__(self, namespace: str = NAMESPACE, service: str = "gateway") -> None:
        self.metrics = Metrics(namespace=namespace, service=service)

    def _flush(self) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Powertools warns about its own cold-start logic
            self.metrics.flush_metrics()

    def launch_finished(self, phase: str, seconds: float, built: bool) -> None:
        self.metrics.add_dimension(name="Kind", value="built" if built else "cached")
        name = "LaunchesReady" if phase == "ready" else "LaunchesFailed"
        self.metrics.add_metric(name=name, unit=MetricUnit.Count, value=1)
        self.metrics.add_metric(name="LaunchSeconds", unit=MetricUnit.Seconds,
                                value=max(seconds, 0.0))
        self._flush()

    def build_finished(self, ok: bool, seconds: float) -> None:
        self.metrics.add_metric(name="BuildsSucceeded" if ok else "BuildsFailed",
                                unit=MetricUnit.Count, value=1)
        self.metrics.add_metric(name="BuildSeconds", unit=MetricUnit.Seconds,
                                value=max(seconds, 0.0))
        self._flush()

    def sessions_active(self, count: int) -> None:
        self.metrics.add_metric(name="ActiveSessions", unit=MetricUnit.Count, value=count)
        self._flush()
