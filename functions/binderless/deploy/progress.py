"""Follow a CloudFormation stack operation, printing its events as they happen."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TextIO

from .errors import DeployError

__all__ = ["StackWatch", "event_line", "is_done"]

#: Reasons CloudFormation gives resources it stopped because another one failed.
_KNOCK_ON = ("Resource creation cancelled", "Resource update cancelled")


def is_done(status: str) -> bool:
    """``CREATE_COMPLETE``, ``ROLLBACK_COMPLETE``, ``UPDATE_ROLLBACK_FAILED`` ... but not
    ``UPDATE_COMPLETE_CLEANUP_IN_PROGRESS``."""
    return not status.endswith("_IN_PROGRESS")


def event_line(event: dict[str, Any]) -> str:
    when = event["Timestamp"].strftime("%H:%M:%S")
    reason = event.get("ResourceStatusReason") or ""
    line = (f"  {when}  {event.get('ResourceStatus', ''):<32} "
            f"{event.get('ResourceType', ''):<44} {event.get('LogicalResourceId', '')}")
    return f"{line}  {reason}" if reason else line


class StackWatch:
    """Prints a stack's events from the moment it was made until the operation ends."""

    def __init__(self, client: Any, stack: str, out: TextIO,
                 sleep: Callable[[float], None], poll: float = 5.0) -> None:
        self.client = client
        self.stack = stack
        self.out = out
        self.sleep = sleep
        self.poll = poll
        self.seen: set[str] = {e["EventId"] for e in self._events(stack)}
        self.failures: list[dict[str, Any]] = []

    def _events(self, stack: str) -> Iterable[dict[str, Any]]:
        try:
            pages = self.client.get_paginator("describe_stack_events").paginate(StackName=stack)
            for page in pages:
                yield from page["StackEvents"]
        except Exception as exc:
            if "does not exist" in str(exc):
                return
            raise

    def _status(self, stack: str) -> str:
        try:
            stacks = self.client.describe_stacks(StackName=stack)["Stacks"]
        except Exception as exc:
            if "does not exist" in str(exc):
                return "DELETE_COMPLETE"
            raise
        return str(stacks[0]["StackStatus"]) if stacks else "DELETE_COMPLETE"

    def _print_new(self, stack: str) -> None:
        new = [e for e in self._events(stack) if e["EventId"] not in self.seen]
        for event in reversed(new):  # the API lists the newest first
            self.seen.add(event["EventId"])
            print(event_line(event), file=self.out, flush=True)
            reason = event.get("ResourceStatusReason") or ""
            if (event.get("ResourceStatus", "").endswith("_FAILED") and reason
                    and not reason.startswith(_KNOCK_ON)):
                self.failures.append(event)

    def wait(self, stack_id: str, succeeded: tuple[str, ...]) -> str:
        """Print events until the stack ``stack_id`` settles; raise unless it ``succeeded``."""
        while True:
            status = self._status(stack_id)
            self._print_new(stack_id)
            if is_done(status):
                break
            self.sleep(self.poll)
        if status not in succeeded:
            raise DeployError(self.explain(status))
        return status

    def explain(self, status: str) -> str:
        lines = [f"the stack {self.stack} ended {status}."]
        own = [e for e in self.failures if e.get("LogicalResourceId") != self.stack]
        for event in own or self.failures:
            lines.append(f"  {event.get('LogicalResourceId')} ({event.get('ResourceType')}): "
                         f"{event.get('ResourceStatusReason')}")
        if status == "ROLLBACK_COMPLETE":
            lines.append("Nothing was created. Fix the cause and run binderless deploy again "
                         "(it deletes the failed stack first).")
        elif status == "UPDATE_ROLLBACK_COMPLETE":
            lines.append("The stack is back as it was before this deployment.")
        return "\n".join(lines)
