"""The one error ``binderless deploy`` and ``destroy`` show, and the translation into it."""

from __future__ import annotations

__all__ = ["DeployError", "translate"]


class DeployError(Exception):
    """Something the operator can read and act on; the command prints it and exits 1."""

    @property
    def message(self) -> str:
        return str(self)


def translate(exc: BaseException) -> DeployError | None:
    """An AWS SDK error as a ``DeployError`` (``None`` for anything else)."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict) and "Error" in response:
        error = response["Error"]
        operation = getattr(exc, "operation_name", "") or "an AWS call"
        code = error.get("Code", "Error")
        hint = ""
        if code in ("AccessDenied", "AccessDeniedException", "UnauthorizedOperation"):
            hint = " The credentials in use may not deploy binderless (see Prerequisites in the operator guide)."
        elif code in ("ExpiredToken", "ExpiredTokenException", "InvalidClientTokenId"):
            hint = " Refresh your AWS credentials and try again."
        return DeployError(f"{operation} failed: {code}: {error.get('Message', '')}.{hint}")
    name = type(exc).__name__
    if name in ("NoCredentialsError", "PartialCredentialsError", "NoAuthTokenError"):
        return DeployError("no AWS credentials were found: configure them (aws configure, "
                           "AWS_PROFILE, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)")
    if name == "NoRegionError":
        return DeployError("no AWS region: pass --region REGION or set AWS_REGION")
    if name in ("EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError",
                "ConnectionClosedError"):
        return DeployError(f"could not reach AWS: {exc}")
    if name in ("WaiterError", "S3UploadFailedError", "ParamValidationError"):
        return DeployError(str(exc))
    return None
