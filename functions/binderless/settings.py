"""One settings object, one factory: explicit argument > environment variable > default.

Every environment variable binderless reads is named here, as ``BINDERLESS_<FIELD>``
(upper case), plus ``GITHUB_TOKEN`` for the GitHub provider.
"""

from __future__ import annotations

import dataclasses
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
    # Providers
    github_api_url: str = "https://api.github.com"
    github_token: str = field(default="", repr=False)
    banned_specs: tuple[str, ...] = ()

    @property
    def allow_local_repos(self) -> bool:
        """``file://`` URLs and local directories are for the local mode only."""
        return self.mode == "local"

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
    if "github_token" not in values and environ.get("GITHUB_TOKEN"):
        values["github_token"] = environ["GITHUB_TOKEN"]
    values.update({k: v for k, v in overrides.items() if v is not None})
    settings = Settings(**values)
    return dataclasses.replace(settings, state_dir=settings.state_dir.expanduser().absolute())
