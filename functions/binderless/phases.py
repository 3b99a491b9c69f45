"""The launch state machine: which phase may follow which.

A launch walks ``waiting -> fetching -> building -> pushing -> built -> launching -> ready``,
skipping phases it does not need (a cached image goes from ``fetching`` to ``built``),
or ends in ``failed`` from anywhere before the end. Log lines repeat the current phase.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["ORDER", "TERMINAL", "IllegalTransition", "Phase", "advance"]


class Phase(StrEnum):
    WAITING = "waiting"
    FETCHING = "fetching"
    BUILDING = "building"
    PUSHING = "pushing"
    BUILT = "built"
    LAUNCHING = "launching"
    READY = "ready"
    FAILED = "failed"


ORDER: tuple[Phase, ...] = (
    Phase.WAITING,
    Phase.FETCHING,
    Phase.BUILDING,
    Phase.PUSHING,
    Phase.BUILT,
    Phase.LAUNCHING,
    Phase.READY,
)
TERMINAL = frozenset({Phase.READY, Phase.FAILED})


class IllegalTransition(RuntimeError):
    """A programming error: the orchestrator tried to move a launch backwards."""


def advance(current: Phase | None, new: Phase) -> Phase:
    """Return the phase after ``current`` receives an event of phase ``new``.

    Staying in the same phase is allowed (log lines); moving back is not; nothing
    follows a terminal phase.
    """
    if current is None:
        return new
    if current in TERMINAL:
        raise IllegalTransition(f"launch already ended in {current}, cannot move to {new}")
    if new is Phase.FAILED:
        return new
    if ORDER.index(new) < ORDER.index(current):
        raise IllegalTransition(f"cannot move from {current} back to {new}")
    return new
