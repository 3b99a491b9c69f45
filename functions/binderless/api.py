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
        "builder_info": {"binderless": __version__, "builder": settings.builder,
                         "spawner": settings.spawner, "mode": settings.mode},
    }


def health_document(checks: Iterable[Check]) -> tuple[dict[str, Any], int]:
    """``/health``: ``ok`` only when every check is; 503 otherwise."""
    listed = list(checks)
    ok = all(bool(c.get("ok")) for c in listed)
    return {"ok": ok, "checks": listed}, 200 if ok else 503


def repoproviders_document(configs: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """``/api/repoproviders``: each provider's display configuration."""
    return list(configs)
