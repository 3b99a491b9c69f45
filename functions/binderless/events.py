"""Events of the BinderHub ``/build`` stream and their wire encoding.

Each event is a JSON object with ``phase`` and ``message`` plus phase-specific
fields (``imageName`` on ``built``, the session fields on ``ready``,
``status_code`` on ``failed``, with ``fault`` and, when known, the ``file`` and
``line`` at fault: see ``errors.BinderlessError``). The stream is Server-Sent Events made of plain
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

__all__ = ["KEEPALIVE", "MAX_SEQ_DIGITS", "Event", "event_from_error", "launch_id_like",
           "parse_event_id", "parse_seq", "sse_frame"]

KEEPALIVE = b":keepalive\n\n"
#: Sequence numbers clients send back have at most this many digits: any more is not an
#: event of ours, and would overflow SQLite's 64-bit INTEGER (or Python's 4,300-digit
#: limit on int()).
MAX_SEQ_DIGITS = 15
#: Launch ids are 32 hex digits; anything much longer is not one (and DynamoDB refuses
#: keys over 2 KB with an error rather than "not found").
MAX_LAUNCH_ID = 128


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
    fields: dict[str, Any] = {}
    if isinstance(error, BinderlessError):
        message = error.user_message()
        status = error.status_code
        # Who can fix it, and where: the loading page and the CLI say what helps.
        fields["fault"] = error.fault
        if error.file:
            fields["file"] = error.file
        if error.line:
            fields["line"] = error.line
    else:
        message = (
            "Something went wrong inside binderless while launching this repository. "
            "Try again; if it keeps failing, report it to the operators of this server."
        )
        status = 500
    if not message.endswith("\n"):
        message += "\n"
    return Event(Phase.FAILED, message, {"status_code": status, **fields})


def parse_seq(text: str) -> int | None:
    """A sequence number as a client sends it back (``after=``, the tail of an event id):
    ASCII digits only, at most ``MAX_SEQ_DIGITS``; ``None`` for anything else.

    ``str.isdigit`` alone is not enough: it accepts "²" and "١", which ``int`` refuses or
    reads as another number."""
    if not 0 < len(text) <= MAX_SEQ_DIGITS or not text.isascii() or not text.isdigit():
        return None
    return int(text)


def parse_event_id(text: str) -> tuple[str, int] | None:
    """``(launch id, seq)`` from an event id as the stream writes it (``<launch id>:<seq>``),
    sent back in ``Last-Event-ID`` or ``?last_event_id=``; ``None`` when it is not one."""
    launch_id, sep, seq = text.partition(":")
    number = parse_seq(seq)
    if not sep or number is None or not launch_id_like(launch_id):
        return None
    return launch_id, number


def launch_id_like(text: str) -> bool:
    """Whether ``text`` could be a launch id (worth looking up in the store)."""
    return 0 < len(text) <= MAX_LAUNCH_ID and text.isascii() and text.isprintable() \
        and ":" not in text and "/" not in text


def sse_frame(event: Event, event_id: str | None = None) -> bytes:
    """Encode one event as an SSE frame: optional ``id:`` line, one ``data:`` line."""
    payload = json.dumps(event.to_json(), separators=(",", ":"))
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}data: {payload}\n\n".encode()
