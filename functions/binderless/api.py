"""Answers shared by every host (the local server, the session gateway, the Chalice app).

Each function builds one JSON document; hosts only serialise it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from . import __version__
from .settings import Settings

__all__ = ["Check", "health_document", "repoproviders_document", "versions_document"]

Check = dict[str, Any]


def versions_document(settings: Settings) -> dict[str, Any]:
    """``/versions``: MyST detects a BinderHub by its ``binderhub`` key."""
    return {
        "binderhub": f"binderless-{__version__}",
        "builder_info": {
            "binderless": __version__, "mode": settings.mode,
            "builder": "codebuild" if settings.mode == "aws" else settings.builder,
            "spawner": "fargate" if settings.mode == "aws" else settings.spawner,
        },
    }


def health_document(checks: Iterable[Check]) -> tuple[dict[str, Any], int]:
    """``/health``: ``ok`` only when every check is; 503 otherwise."""
    listed = list(checks)
    ok = all(bool(c.get("ok")) for c in listed)
    return {"ok": ok, "checks": listed}, 200 if ok else 503


def repoproviders_document(configs: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """``/api/repoproviders``: each provider's display configuration."""
    return list(configs)


def metrics_text(metrics: dict[str, Any]) -> str:
    """``/metrics`` in the Prometheus text format, from a store's ``metrics()`` counts."""
    lines = [
        "# HELP binderless_launches_total Finished launches by outcome and whether they built.",
        "# TYPE binderless_launches_total counter",
    ]
    durations = ["# HELP binderless_launch_seconds Time from request to the final event.",
                 "# TYPE binderless_launch_seconds summary"]
    for phase, built, count, total in metrics["launches"]:
        labels = f'status="{phase}",built="{str(built).lower()}"'
        lines.append(f"binderless_launches_total{{{labels}}} {count}")
        durations.append(f"binderless_launch_seconds_count{{{labels}}} {count}")
        durations.append(f"binderless_launch_seconds_sum{{{labels}}} {total:.3f}")
    lines += durations
    lines += ["# HELP binderless_launches_in_progress Launches not yet ready or failed.",
              "# TYPE binderless_launches_in_progress gauge",
              f"binderless_launches_in_progress {metrics['in_progress']}",
              "# HELP binderless_sessions Sessions by status.",
              "# TYPE binderless_sessions gauge"]
    for status in ("starting", "running", "stopped"):
        lines.append(f'binderless_sessions{{status="{status}"}} {metrics["sessions"].get(status, 0)}')
    return "\n".join(lines) + "\n"
