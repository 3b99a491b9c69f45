"""Reading botocore errors without importing botocore at module import time."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..errors import LaunchFailed

__all__ = ["error_code", "error_message", "launch_failure"]


def error_code(exc: BaseException) -> str:
    """The AWS error code of a ``botocore`` ``ClientError`` (``""`` for anything else)."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", ""))
    return ""


def error_message(exc: BaseException) -> str:
    """The AWS error message of a ``ClientError`` (``str(exc)`` for anything else)."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Message", "")) or str(exc)
    return str(exc)


def launch_failure(action: str, exc: BaseException, hint: str) -> LaunchFailed:
    """``Could not <action>: <code>: <message>`` as a launch failure, with ``hint``."""
    from ..errors import LaunchFailed

    return LaunchFailed(f"Could not {action}: {error_code(exc) or type(exc).__name__}: "
                        f"{error_message(exc)}", hint=hint)
