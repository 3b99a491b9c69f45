"""Events of the BinderHub ``/build`` stream and their wire encoding.

Each event is a JSON object with ``phase`` and ``message`` plus phase-specific
fields (``imageName`` on ``built``, the session fields on ``ready``,
``status_code`` on ``failed``). The stream is Server-Sent Events made of plain
``data:`` lines, an ``id:`` per event so that a reconnecting client resumes,
and ``:keepalive`` comments.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import BinderlessError
from .phases import Phase

__all__ = ["KEEPALIVE", "Event", "event_from_error", "sse_frame"]

KEEPALIVE = b":keepalive\n\n"


@dataclass(frozen=True)
class Event:
    """One event of a launch. ``phase`` is ``None`` for free-form log lines."""

    phase: Phase | None
    message: str
    fields: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        if self.phase is not None:
            data["phase"] = str(self.phase)
        data["message"] = self.message
        data.update(self.fields)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Event:
        raw_phase = data.get("phase")
        try:
            phase = Phase(str(raw_phase).lower()) if raw_phase is not None else None
        except ValueError:
            phase = None
        rest = {k: v for k, v in data.items() if k not in ("phase", "message")}
        return cls(phase=phase, message=str(data.get("message", "")), fields=rest)

    @property
    def is_final(self) -> bool:
        return self.phase in (Phase.READY, Phase.FAILED)


def event_from_error(error: BaseException) -> Event:
    """The one place where an error becomes a ``failed`` event.

    Known errors keep their message; anything else is reported without its
    traceback (which belongs in the server log, not in front of a user).
    """
    if isinstance(error, BinderlessError):
        message = error.user_message()
        status = error.status_code
    else:
        message = (
            "Something went wrong inside binderless while launching this repository. "
            "Try again; if it keeps failing, report it to the operators of this server."
        )
        status = 500
    if not message.endswith("\n"):
        message += "\n"
    return Event(Phase.FAILED, message, {"status_code": status})


def sse_frame(event: Event, event_id: str | None = None) -> bytes:
    """Encode one event as an SSE frame: optional ``id:`` line, one ``data:`` line."""
    payload = json.dumps(event.to_json(), separators=(",", ":"))
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}data: {payload}\n\n".encode()
