"""CloudWatch Logs: read a log stream from the start, then only what was added since."""

from __future__ import annotations

from typing import Any

from ._errors import error_code

__all__ = ["LogReader"]

#: Answers that mean "nothing to read yet, ask again later" rather than a failure.
_NOT_YET = {"ResourceNotFoundException", "ThrottlingException"}


class LogReader:
    """Incremental reads of one stream with ``GetLogEvents``; ``client`` is a boto3 Logs client."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def lines(self, group: str, stream: str,
              token: str | None = None) -> tuple[list[str], str | None]:
        """The lines after ``token`` (all of them for ``None``) and the token to pass next.

        Pages forward until CloudWatch hands back the token it was given, its "no more for
        now". A stream or group that does not exist yet has no lines, and the token stays.
        """
        lines: list[str] = []
        while True:
            params: dict[str, Any] = {"logGroupName": group, "logStreamName": stream,
                                      "startFromHead": True}
            if token is not None:
                params["nextToken"] = token
            try:
                page = self.client.get_log_events(**params)
            except Exception as exc:
                if error_code(exc) in _NOT_YET:
                    return lines, token
                raise
            lines += [str(event.get("message", "")).rstrip("\r\n")
                      for event in page.get("events", [])]
            following = page.get("nextForwardToken")
            if following is None or following == token:
                return lines, token
            token = following
