"""CodeBuild: start, watch and stop builds of one project.

The project (runner image, privileged mode, service role, log group) is infrastructure;
each build overrides only its source, environment variables and buildspec.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import BuildFailed
from ._errors import error_code

__all__ = ["FINAL_STATUSES", "BuildState", "CodeBuildProject"]

FINAL_STATUSES = frozenset({"SUCCEEDED", "FAILED", "FAULT", "STOPPED", "TIMED_OUT"})
_PHASE_FAILED = {"FAILED", "FAULT", "TIMED_OUT", "STOPPED", "CLIENT_ERROR"}


@dataclass(frozen=True)
class BuildState:
    """Where a build is.

    ``status`` is CodeBuild's: IN_PROGRESS, SUCCEEDED, FAILED, FAULT, STOPPED or TIMED_OUT;
    ``phase`` the current phase (SUBMITTED ... BUILD ... COMPLETED); ``log_group`` and
    ``log_stream`` are empty until CodeBuild has created the stream; ``failure`` is CodeBuild's
    own account of a failed phase, such as "BUILD: COMMAND_EXECUTION_ERROR: ...".
    """

    status: str
    phase: str = ""
    log_group: str = ""
    log_stream: str = ""
    failure: str = ""

    @property
    def done(self) -> bool:
        return self.status in FINAL_STATUSES


def _failure(phases: list[dict[str, Any]]) -> str:
    for phase in phases:
        if phase.get("phaseStatus") in _PHASE_FAILED:
            details = [": ".join(part for part in (c.get("statusCode"), c.get("message")) if part)
                       for c in phase.get("contexts") or []]
            detail = "; ".join(d for d in details if d) or str(phase["phaseStatus"])
            return f"{phase.get('phaseType', '')}: {detail}"
    return ""


class CodeBuildProject:
    """Builds of the project ``project_name``; ``client`` is a boto3 CodeBuild client."""

    def __init__(self, client: Any, project_name: str) -> None:
        self.client = client
        self.project_name = project_name

    def start(self, source_s3: str, env: Mapping[str, str], idempotency_token: str, *,
              buildspec: str | None = None) -> str:
        """Start a build of the zip at ``source_s3`` (``<bucket>/<key>``); returns its id.

        ``env`` becomes plain-text environment variables (never put secrets in it: they show
        in the console). ``buildspec`` (inline YAML) replaces the project's; pass it always,
        or a ``buildspec.yml`` in the built repository would be run in the privileged runner.
        CodeBuild answers a repeated request with the same ``idempotency_token`` (within
        five minutes) with the same build.
        """
        params: dict[str, Any] = {
            "projectName": self.project_name,
            "sourceTypeOverride": "S3",
            "sourceLocationOverride": source_s3,
            "environmentVariablesOverride": [
                {"name": name, "value": value, "type": "PLAINTEXT"}
                for name, value in env.items()
            ],
            "idempotencyToken": idempotency_token,
        }
        if buildspec is not None:
            params["buildspecOverride"] = buildspec
        answer = self.client.start_build(**params)
        return str(answer["build"]["id"])

    def status(self, build_id: str) -> BuildState:
        answer = self.client.batch_get_builds(ids=[build_id])
        builds = answer.get("builds") or []
        if not builds:
            raise BuildFailed(f"AWS CodeBuild has no build {build_id}.",
                              hint="The build project may have been deleted; try again.")
        build = builds[0]
        logs = build.get("logs") or {}
        return BuildState(
            status=str(build.get("buildStatus", "IN_PROGRESS")),
            phase=str(build.get("currentPhase", "")),
            log_group=str(logs.get("groupName") or ""),
            log_stream=str(logs.get("streamName") or ""),
            failure=_failure(build.get("phases") or []),
        )

    def stop(self, build_id: str) -> None:
        """Stop the build; stopping one that has finished or is unknown is not an error."""
        try:
            self.client.stop_build(id=build_id)
        except Exception as exc:
            if error_code(exc) in {"InvalidInputException", "ResourceNotFoundException"}:
                return
            raise
