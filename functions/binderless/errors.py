"""The errors a user can meet, each with the message they see and an HTTP-like status.

Vendor errors (httpx, git, uv, boto3) are translated into these at the boundary,
always with ``raise ... from exc``. One function in ``events`` turns any of them
into a ``failed`` event; the HTTP hosts map ``status_code`` to responses.
"""

from __future__ import annotations

__all__ = [
    "AccessDenied",
    "BadLink",
    "BinderlessError",
    "BuildFailed",
    "LaunchFailed",
    "LaunchNotFound",
    "ProjectNotFound",
    "ProviderUnavailable",
    "QuotaExceeded",
    "RefNotFound",
    "SessionNotFound",
    "SignInFailed",
    "SignInRequired",
    "SpecNotAllowed",
    "StateUnavailable",
    "TooLarge",
    "UnsupportedRepository",
]


class BinderlessError(Exception):
    """Base of every error whose message is meant for the person launching.

    ``fault`` says who can fix it, for the pages that say what to do next:
    ``repository`` (its author: ``file`` and ``line`` name the place, when known),
    ``link`` (whoever wrote the link), ``unsupported`` (another builder can build it),
    ``busy`` (trying again later may work) or ``server`` (unknown, or the operators).
    """

    status_code = 500
    fault = "server"

    def __init__(self, message: str, *, hint: str = "", fault: str = "", file: str = "",
                 line: int = 0) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        if fault:
            self.fault = fault
        self.file = file
        self.line = line

    def user_message(self) -> str:
        """The message and, when there is one, what to do about it, on a line of its own:
        each said once (a hint the message already says is not repeated)."""
        if self.hint and self.hint not in self.message:
            return f"{self.message}\n{self.hint}"
        return self.message


class BadLink(BinderlessError):
    """The launch link or spec cannot be parsed: unknown provider, malformed spec."""

    status_code = 400
    fault = "link"


class RefNotFound(BinderlessError):
    """The repository or the ref does not exist, or is not public."""

    status_code = 404
    fault = "link"


class SpecNotAllowed(BinderlessError):
    """Operator policy refuses this repository or provider."""

    status_code = 403
    fault = "link"


class ProviderUnavailable(BinderlessError):
    """The repository host failed or rate-limited us; trying later may work."""

    status_code = 503
    fault = "busy"


class UnsupportedRepository(BinderlessError):
    """This builder cannot build the repository; another builder can."""

    status_code = 422
    fault = "unsupported"


class BuildFailed(BinderlessError):
    """Building the environment failed; the log says where."""

    status_code = 500


class LaunchFailed(BinderlessError):
    """The session's server did not start or did not become ready."""

    status_code = 500


class LaunchNotFound(BinderlessError):
    """No launch has this id (or it is not one this server keeps)."""

    status_code = 404


class QuotaExceeded(BinderlessError):
    """Too many sessions are running, overall or for this repository."""

    status_code = 429
    fault = "busy"


class SessionNotFound(BinderlessError):
    """No running session has this id."""

    status_code = 404


class StateUnavailable(BinderlessError):
    """The state store (DynamoDB in AWS mode) failed or throttled us; trying later may work."""

    status_code = 503
    fault = "busy"


class SignInRequired(BinderlessError):
    """This needs a signed-in person (their projects, their files)."""

    status_code = 401


class SignInFailed(BinderlessError):
    """Signing in did not work: the identity provider refused, or its answer did not check out."""

    status_code = 401


class AccessDenied(BinderlessError):
    """The session or project belongs to someone else."""

    status_code = 403


class ProjectNotFound(BinderlessError):
    """The signed-in person has no project of this name."""

    status_code = 404


class TooLarge(BinderlessError):
    """What was asked for is bigger than this server hands out at once."""

    status_code = 413
