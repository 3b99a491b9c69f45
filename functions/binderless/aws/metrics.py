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

Every record also carries ``service=gateway``. The Lambda functions (``functions/app.py``)
print their own records, with ``service=binderless``. CloudWatch names a metric by its
namespace, name and *full* set of dimensions, so ``METRICS`` lists each one exactly as
it is emitted; the operations dashboard and alarms of ``infra/`` may only plot these (a
test reads them out of the template and checks).
"""

from __future__ import annotations

import warnings

from aws_lambda_powertools import Metrics
from aws_lambda_powertools.metrics import MetricUnit

__all__ = [
    "FUNCTIONS_SERVICE",
    "FUNCTION_METRICS",
    "GATEWAY_METRICS",
    "GATEWAY_SERVICE",
    "LAUNCH_KINDS",
    "METRICS",
    "NAMESPACE",
    "CloudWatchObserver",
    "Dimensions",
]

NAMESPACE = "binderless"
#: The ``service`` dimension of the gateway's records and of the Lambda functions'.
GATEWAY_SERVICE = "gateway"
FUNCTIONS_SERVICE = "binderless"
#: The ``Kind`` dimension of launch metrics: the image was found, or was built first.
LAUNCH_KINDS = ("cached", "built")

Dimensions = frozenset[tuple[str, str]]


def _by_kind(service: str) -> tuple[Dimensions, ...]:
    return tuple(frozenset({("Kind", kind), ("service", service)}) for kind in LAUNCH_KINDS)


def _only(service: str) -> tuple[Dimensions, ...]:
    return (frozenset({("service", service)}),)


#: The gateway's metrics (``CloudWatchObserver``), by name: each dimension set it carries.
GATEWAY_METRICS: dict[str, tuple[Dimensions, ...]] = {
    "LaunchesReady": _by_kind(GATEWAY_SERVICE),
    "LaunchesFailed": _by_kind(GATEWAY_SERVICE),
    "LaunchSeconds": _by_kind(GATEWAY_SERVICE),
    "BuildsSucceeded": _only(GATEWAY_SERVICE),
    "BuildsFailed": _only(GATEWAY_SERVICE),
    "BuildSeconds": _only(GATEWAY_SERVICE),
    "ActiveSessions": _only(GATEWAY_SERVICE),
}
#: The Lambda functions' metrics (counts; Powertools' one dimension, ``service``).
FUNCTION_METRICS: dict[str, tuple[Dimensions, ...]] = {
    "LaunchesRequested": _only(FUNCTIONS_SERVICE),   # POST /api/launches
    "LaunchesAbandoned": _only(FUNCTIONS_SERVICE),   # the reconcile schedule
    "SessionsEndedByTask": _only(FUNCTIONS_SERVICE),  # task_stopped: a task ended by itself
    "BuildsSucceeded": _only(FUNCTIONS_SERVICE),     # build_finished: every build, as
    "BuildsFailed": _only(FUNCTIONS_SERVICE),        # CodeBuild reports it
}
#: Every metric of ``NAMESPACE`` as CloudWatch identifies it: (name, dimensions).
METRICS: frozenset[tuple[str, Dimensions]] = frozenset(
    (name, dimensions)
    for table in (GATEWAY_METRICS, FUNCTION_METRICS)
    for name, sets in table.items() for dimensions in sets)


class CloudWatchObserver:
    """An ``Observer`` printing one embedded-metric-format record per event."""

    def __init__(self, namespace: str = NAMESPACE, service: str = GATEWAY_SERVICE) -> None:
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
