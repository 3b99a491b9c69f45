"""Handing a session task its secrets without the ECS API: ``HttpBootstrap``.

A session's Jupyter token and the presigned URL of its checkout grant access to the
session. Sent as RunTask overrides they would be readable by anyone allowed
``ecs:DescribeTasks`` and recorded in CloudTrail, so RunTask carries only the token's
SHA-256 (``BINDERLESS_TOKEN_SHA256``) and where the task's bootstrap listens
(``BINDERLESS_BOOTSTRAP``). The task's entrypoint (``build-runner/session-start``) listens
there, on Jupyter's port, before Jupyter starts; once the task runs, the gateway POSTs
``{"token": ..., "checkout_url": ...}`` to it. The listener accepts only a token whose hash
is the one RunTask carried, so whoever else might reach the port first cannot plant a
token of their own; it then closes, and Jupyter starts with the token on the same port.

Why this and not a store the task reads (an S3 object, a parameter, a secret): the task
would need a role that reads it, and a task role has no per-task identity that a policy
could scope to one object (every session of a kind shares its role), so any session could
read every other one's. Here nothing is stored, no call is billed, the session's role
needs no permission at all, and only the gateway's security group reaches the port.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Mapping

from ..errors import LaunchFailed

__all__ = ["BOOTSTRAP_HEADER", "BOOTSTRAP_PATH", "HttpBootstrap", "token_digest"]

#: The listener's path (Jupyter, once it runs, answers it with 404 and no marker).
BOOTSTRAP_PATH = "/.binderless/bootstrap"
#: The listener marks its answers with this header: an answer without it came from Jupyter,
#: which means the task was handed its secrets before (a launch resumed by another gateway).
BOOTSTRAP_HEADER = "X-Binderless-Bootstrap"
#: Seconds between two tries while the task's listener is not up yet.
RETRY_SECONDS = 0.5
#: Seconds one try may take.
ATTEMPT_SECONDS = 10.0


def token_digest(token: str) -> str:
    """What RunTask carries instead of the token: its SHA-256, in hex."""
    return hashlib.sha256(token.encode()).hexdigest()


class HttpBootstrap:
    """Delivers a session's secrets to its task's bootstrap listener over HTTP (in the VPC).

    ``deliver`` tries until the listener answers; the caller bounds it in time (the
    spawner's start timeout cancels it)."""

    def __init__(self, *, retry_seconds: float = RETRY_SECONDS,
                 attempt_seconds: float = ATTEMPT_SECONDS) -> None:
        self.retry_seconds = retry_seconds
        self.attempt_seconds = attempt_seconds

    async def deliver(self, target: str, secrets: Mapping[str, str]) -> bool:
        """POST ``secrets`` to ``target`` (``http://<task address>:<port>``).

        True when the listener took them; False when something else answered (Jupyter
        already serves: the task got them before). Raises ``LaunchFailed`` when the
        listener refuses them (a token other than the one RunTask named)."""
        import aiohttp  # the gateway's dependency; the Lambda functions never deliver

        body = json.dumps(dict(secrets)).encode()
        timeout = aiohttp.ClientTimeout(total=self.attempt_seconds)
        async with aiohttp.ClientSession(timeout=timeout, trust_env=False) as http:
            while True:
                try:
                    async with http.post(f"{target}{BOOTSTRAP_PATH}", data=body, headers={
                            "Content-Type": "application/json"}) as answer:
                        marked = answer.headers.get(BOOTSTRAP_HEADER, "")
                        if not marked:
                            return False
                        if answer.status == 200:
                            return True
                        raise LaunchFailed(
                            f"The session refused the key its launch gave it ({answer.status}: "
                            f"{(await answer.text())[:200]}).",
                            hint="This is a fault of the binderless deployment: tell its "
                                 "operator.")
                except (aiohttp.ClientConnectionError, TimeoutError):
                    pass  # not listening yet (the container is still starting)
                await asyncio.sleep(self.retry_seconds)
