"""How long a launch may still take, from earlier launches of the same environment.

The loading page asks once the launch has passed ``fetching``: by then the launch
record names its environment (``image_key``) and whether it builds it (``built``).
The store keeps how long recent launches of each environment took from request to
``ready``, apart for launches that built it and launches that found it built, and the
estimate is the median of those.
"""

from __future__ import annotations

import re
import statistics
from typing import Any, Protocol

from .errors import LaunchNotFound

__all__ = ["LaunchHistory", "launch_estimate"]

#: How many recent launches the estimate looks at.
SAMPLES = 10
_LAUNCH_ID = re.compile(r"[0-9a-f]{32}")


class LaunchHistory(Protocol):
    """The part of a ``Store`` the estimate reads."""

    def get_launch(self, launch_id: str) -> dict[str, Any] | None: ...

    def launch_durations(self, image_key: str, built: bool, limit: int = 10) -> list[float]: ...


def launch_estimate(store: LaunchHistory, launch_id: str, now: float) -> dict[str, Any]:
    """``/api/launches/<launch_id>/estimate``.

    ``typical_seconds`` (the median duration of the earlier launches) and
    ``remaining_seconds`` (never below zero) are ``None`` when no earlier launch of the
    environment is known, or the launch does not know its environment yet. Raises
    ``LaunchNotFound``.
    """
    launch = store.get_launch(launch_id) if _LAUNCH_ID.fullmatch(launch_id) else None
    if launch is None:
        raise LaunchNotFound(f"There is no launch {launch_id[:40]!r} on this server.")
    key = str(launch.get("image_key") or "")
    built = bool(launch.get("built"))
    durations = [d for d in store.launch_durations(key, built, SAMPLES) if d >= 0] if key else []
    created = float(launch.get("created_at") or now)
    elapsed = max(0.0, now - created)
    typical = statistics.median(durations) if durations else None
    return {
        "launch_id": launch_id,
        "phase": str(launch.get("phase") or ""),
        "image_key": key or None,
        "built": built,
        "samples": len(durations),
        "typical_seconds": None if typical is None else round(typical, 1),
        "elapsed_seconds": round(elapsed, 1),
        "remaining_seconds": None if typical is None else round(max(0.0, typical - elapsed), 1),
    }
