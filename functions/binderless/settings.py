"""One settings object, one factory: explicit argument > environment variable > default.

Every environment variable binderless reads is named here, as ``BINDERLESS_<FIELD>``
(upper case), plus ``GITHUB_TOKEN`` and ``GITLAB_TOKEN`` for those providers. Lists
(``tuple`` fields) are comma-separated.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

__all__ = ["ENV_PREFIX", "Settings", "load_settings"]

ENV_PREFIX = "BINDERLESS_"


@dataclass(frozen=True)
class Settings:
    """Everything an operator can tune. Defaults suit the local embedded mode."""

    mode: Literal["local", "aws"] = "local"
    host: str = "127.0.0.1"
    port: int = 8585
    state_dir: Path = Path(".state")
    public_url: str = ""
    #: The launch pages; empty means the site/ folder of this source checkout.
    site_dir: str = ""
    builder: Literal["uv", "docker"] = "uv"
    spawner: Literal["local", "docker"] = "local"
    # Sessions
    cull_idle_seconds: float = 600.0
    max_age_seconds: float = 6 * 3600.0
    cull_interval_seconds: float = 30.0
    ready_timeout_seconds: float = 120.0
    max_sessions: int = 20
    max_sessions_per_repo: int = 10
    keep_sessions_on_exit: bool = False
    # Event stream
    keepalive_seconds: float = 20.0
    final_linger_seconds: float = 60.0
    # Builds
    jupyterlab_requirement: str = "jupyterlab>=4,<5"
    build_timeout_seconds: float = 1800.0
    uv_cache_dir: str = ""
    docker_image_prefix: str = "binderless/"
    # Providers and what operators allow
    github_host: str = "github.com"
    github_api_url: str = ""
    github_token: str = field(default="", repr=False)
    gitlab_host: str = "gitlab.com"
    gitlab_token: str = field(default="", repr=False)
    allowed_providers: tuple[str, ...] = ()
    banned_specs: tuple[str, ...] = ()
    allowed_specs: tuple[str, ...] = ()
    high_quota_specs: tuple[str, ...] = ()
    high_quota: int = 40
    spec_quotas: tuple[str, ...] = ()
    allowed_git_hosts: tuple[str, ...] = ()
    allow_git_protocol: bool = False
    allow_secret_gists: bool = False

    allow_local_paths: bool = True
    # AWS mode: the resources the templates in infra/ create (names and ids)
    aws_table: str = "binderless"
    aws_bucket: str = ""
    ecr_registry: str = ""
    ecr_repository: str = "binderless-envs"
    base_image: str = ""
    codebuild_project: str = "binderless-build"
    ecs_cluster: str = "binderless"
    subnets: tuple[str, ...] = ()
    security_groups: tuple[str, ...] = ()
    execution_role_arn: str = ""
    task_role_arn: str = ""
    session_log_group: str = "/binderless/sessions"
    session_cpu: int = 1024
    session_memory: int = 4096

    @property
    def allow_local_repos(self) -> bool:
        """``file://`` URLs and local directories: local mode only, and only when allowed."""
        return self.mode == "local" and self.allow_local_paths

    @property
    def enforce_url_guard(self) -> bool:
        """Refuse fetches from local, private and metadata addresses: always on AWS, and on a
        local server that others can reach (one that also refuses local paths)."""
        return self.mode == "aws" or not self.allow_local_paths

    def validate(self) -> None:
        """Raise ``ValueError`` with a readable message for a contradictory setting."""
        choices = {"mode": ("local", "aws"), "builder": ("uv", "docker"),
                   "spawner": ("local", "docker")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, "
                                 f"not {getattr(self, name)!r}")
        if self.mode == "local" and (self.builder == "docker") != (self.spawner == "docker"):
            raise ValueError("--builder docker and --spawner docker go together: docker images "
                             "run in containers, uv environments run as local processes")
        for name in ("banned_specs", "allowed_specs", "high_quota_specs", "spec_quotas"):
            for pattern in getattr(self, name):
                regex = pattern.rpartition("=")[0] if name == "spec_quotas" else pattern
                scope, sep, rest = regex.partition(":")
                if sep and re.fullmatch(r"[a-z0-9]+", scope):
                    regex = rest
                try:
                    re.compile(regex)
                except re.error as exc:
                    raise ValueError(f"{name}: {pattern!r} is not a valid pattern ({exc})") from exc
        for name in ("port", "max_sessions", "max_sessions_per_repo"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be a positive number")

    @property
    def github_api(self) -> str:
        """GitHub's API, or a GitHub Enterprise host's (``https://<host>/api/v3``)."""
        if self.github_api_url:
            return self.github_api_url
        if self.github_host == "github.com":
            return "https://api.github.com"
        return f"https://{self.github_host}/api/v3"

    @property
    def db_path(self) -> Path:
        return self.state_dir / "binderless.sqlite3"


_BOOL_TRUE = {"1", "true", "yes", "on"}


def _coerce(name: str, value: str, current: Any) -> Any:
    if isinstance(current, bool):
        return value.strip().lower() in _BOOL_TRUE
    if isinstance(current, int):
        return int(value)
    if isinstance(current, float):
        return float(value)
    if isinstance(current, Path):
        return Path(value)
    if isinstance(current, tuple):
        return tuple(v.strip() for v in value.split(",") if v.strip())
    return value


def load_settings(environ: Mapping[str, str], **overrides: Any) -> Settings:
    """Build settings from ``environ`` and explicit ``overrides`` (``None`` = not given)."""
    defaults = Settings()
    values: dict[str, Any] = {}
    for f in dataclasses.fields(Settings):
        env_name = ENV_PREFIX + f.name.upper()
        if env_name in environ:
            try:
                values[f.name] = _coerce(f.name, environ[env_name], getattr(defaults, f.name))
            except ValueError as exc:
                raise ValueError(f"{env_name}={environ[env_name]!r} is not valid: {exc}") from exc
    for name, variable in (("github_token", "GITHUB_TOKEN"), ("gitlab_token", "GITLAB_TOKEN")):
        if name not in values and environ.get(variable):
            values[name] = environ[variable]
    values.update({k: v for k, v in overrides.items() if v is not None})
    settings = Settings(**values)
    settings = dataclasses.replace(settings, state_dir=settings.state_dir.expanduser().absolute())
    settings.validate()
    return settings
