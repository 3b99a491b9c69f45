"""Reading botocore errors without importing botocore at module import time."""

from __future__ import annotations

__all__ = ["error_code"]


def error_code(exc: BaseException) -> str:
    """The AWS error code of a ``botocore`` ``ClientError`` (``""`` for anything else)."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", ""))
    return ""
