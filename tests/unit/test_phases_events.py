from __future__ import annotations

import json

import pytest

from binderless.errors import BuildFailed, RefNotFound
from binderless.events import Event, event_from_error, sse_frame
from binderless.phases import IllegalTransition, Phase, advance


def test_phases_move_forward_and_may_skip() -> None:
    phase = advance(None, Phase.WAITING)
    for nxt in (Phase.FETCHING, Phase.FETCHING, Phase.BUILT, Phase.LAUNCHING, Phase.READY):
        phase = advance(phase, nxt)
    assert phase is Phase.READY


def test_phases_never_move_back_or_past_the_end() -> None:
    with pytest.raises(IllegalTransition):
        advance(Phase.BUILT, Phase.BUILDING)
    with pytest.raises(IllegalTransition):
        advance(Phase.READY, Phase.FAILED)
    with pytest.raises(IllegalTransition):
        advance(Phase.FAILED, Phase.WAITING)
    assert advance(Phase.BUILDING, Phase.FAILED) is Phase.FAILED


def test_sse_frame_is_plain_data_with_id() -> None:
    frame = sse_frame(Event(Phase.BUILT, "Found built image, launching...\n",
                            {"imageName": "x:1"}), "abc:3")
    text = frame.decode()
    assert text.startswith("id: abc:3\ndata: ")
    assert text.endswith("\n\n")
    assert "event:" not in text
    data = json.loads(text.split("data: ", 1)[1])
    assert data == {"phase": "built", "message": "Found built image, launching...\n",
                    "imageName": "x:1"}


def test_errors_become_failed_events_without_internals() -> None:
    event = event_from_error(RefNotFound("Could not resolve ref for gh:a/b/c."))
    assert event.to_json() == {"phase": "failed", "status_code": 404, "fault": "link",
                               "message": "Could not resolve ref for gh:a/b/c.\n"}
    hinted = event_from_error(BuildFailed("It broke.", hint="Fix requirements.txt"))
    assert hinted.to_json()["message"] == "It broke.\nFix requirements.txt\n"
    assert hinted.fields["fault"] == "server" and "file" not in hinted.fields
    # A failure the repository causes names the file and line to fix.
    blamed = event_from_error(BuildFailed("It broke.", fault="repository",
                                          file="requirements.txt", line=3))
    assert (blamed.fields["fault"], blamed.fields["file"], blamed.fields["line"]) == (
        "repository", "requirements.txt", 3)
    crash = event_from_error(KeyError("secret internal detail"))
    assert crash.fields["status_code"] == 500
    assert "secret" not in crash.message and "Traceback" not in crash.message


def test_event_from_json_lowercases_phase_and_tolerates_unknown() -> None:
    assert Event.from_json({"phase": "READY", "message": "m"}).phase is Phase.READY
    unknown = Event.from_json({"phase": "unknown", "message": "m", "x": 1})
    assert unknown.phase is None and unknown.fields == {"x": 1}
