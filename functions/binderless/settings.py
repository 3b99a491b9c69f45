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

__all__ = ["ENV_PREFIX", "LOOPBACK_HOSTS", "Settings", "load_settings"]

ENV_PREFIX = "BINDERLESS_"
#: Listen addresses that only this machine reaches.
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


@dataclass(frozen=True)
class Settings:
    """Everything an operator can tune. Defaults suit the local embedded mode."""

    mode: Literal["local", "aws"] = "local"
    host: str = "127.0.0.1"
    port: int = 8585
    state_dir: Path = Path(".state")
    public_url: str = ""
    #: Where sessions (/user/...) are served, when not from public_url: an origin that
    #: never receives the sign-in cookie (docs/security.md). Empty: the launch's own host.
    session_url: str = ""
    #: The launch pages; empty means the site/ folder of this source checkout.
    site_dir: str = ""
    #: auto: the uv builder, and repo2docker on a Docker engine for what uv cannot build
    #: (when an engine answers; see backends/autobuilder.py); with spawner docker: docker.
    builder: Literal["uv", "docker", "auto"] = "auto"
    spawner: Literal["local", "docker"] = "local"
    # Sessions
    cull_idle_seconds: float = 600.0
    max_age_seconds: float = 6 * 3600.0
    cull_interval_seconds: float = 30.0
    ready_timeout_seconds: float = 120.0
    # A gateway driving a launch renews a lease on it; once it runs out (the gateway
    # died), another gateway takes the launch over.
    launch_lease_seconds: float = 60.0
    max_sessions: int = 20
    max_sessions_per_repo: int = 10
    #: Builds and server starts this process runs at once; later launches wait in a queue
    #: and are told their place in it.
    max_concurrent_builds: int = 2
    max_concurrent_starts: int = 4
    keep_sessions_on_exit: bool = False
    #: The store is asked whether it answers this often (off the request path); ``/ready``
    #: fails once it has not answered for the grace period, ``/health`` never does.
    store_probe_seconds: float = 10.0
    store_outage_grace_seconds: float = 60.0
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

    #: Local folders and file:// URLs; never on a server others can reach (``exposed``).
    allow_local_paths: bool = True
    # Who may talk to this server (docs/security.md)
    #: Host headers answered besides the listen address, its loopback names and the public
    #: URL's host ("*": any; the only defence against DNS rebinding is this list).
    allowed_hosts: tuple[str, ...] = ()
    #: Origins whose pages may use ``/build`` and sessions (thebe, live code cells): empty
    #: means the default (every origin where sessions are isolated from the server's user:
    #: AWS, docker, per-session uids; none on a single-user local server), "*" any origin.
    allow_origins: tuple[str, ...] = ()
    #: How local sessions are kept apart: "auto" (their own uids when more than one person
    #: can use the server), "uids" (always), "off" (as the server's user; refused on a
    #: shared server unless the docker spawner runs them).
    session_isolation: Literal["auto", "uids", "off"] = "auto"
    #: The uids sessions run as, when isolated ("first-last", inclusive).
    session_uid_range: str = "61000-64999"
    # Connections and bodies
    #: Request bodies binderless reads itself (API calls, forms).
    max_body_bytes: int = 64 * 1024
    #: Request bodies passed to a session (uploads, notebook saves).
    max_upload_bytes: int = 512 * 1024 * 1024
    #: Open client connections at once; 0: derived from the open-files limit.
    max_connections: int = 0
    #: An idle keep-alive connection is closed after this long; a request whose headers
    #: have not all arrived by then, too.
    idle_connection_seconds: float = 75.0
    header_timeout_seconds: float = 15.0
    #: WebSocket pings to both ends of a proxied connection (CloudFront closes one with no
    #: bytes for 10 minutes).
    websocket_ping_seconds: float = 30.0
    #: Launches one client address may start in 5 minutes, counted by each server process
    #: on its own (launchbudget.py); 0: no budget.
    launch_budget_per_ip: int = 0
    #: Proxies in front that append the address they saw to X-Forwarded-For (AWS:
    #: CloudFront and the load balancer, 2); 0: the connection's own address is the client.
    trusted_proxy_hops: int = 0
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
    #: AWS: session tasks get a public address (subnets routed to an internet gateway, no
    #: NAT; their security group still admits only the gateway).
    session_public_ip: bool = False
    #: AWS: signed-in users' sessions (persistent homes) run with these groups (the only
    #: ones the file system's mount targets admit) and this role (EFS mounts through an
    #: access point); anonymous sessions get security_groups and task_role_arn.
    home_security_groups: tuple[str, ...] = ()
    home_task_role_arn: str = ""
    #: AWS: each signed-in user's sessions get a role of their own, made under this IAM
    #: path with this permissions boundary, that mounts only their access point
    #: (binderless.aws.iam); the stack sets both.
    home_role_path: str = ""
    home_role_boundary: str = ""
    # Sign-in and persistent workspaces (docs/workspaces.md)
    #: auto: OpenID Connect when oidc_issuer is set, else the local user on a local server
    #: listening on loopback, else off (anonymous launches only).
    sign_in: Literal["auto", "local", "oidc", "off"] = "auto"
    local_user_name: str = ""
    oidc_issuer: str = ""
    oidc_client_id: str = ""
    oidc_client_secret: str = field(default="", repr=False)
    oidc_scopes: tuple[str, ...] = ("openid", "email", "profile")
    #: Signs the sign-in cookie; every gateway copy needs the same one (local: generated).
    auth_secret: str = field(default="", repr=False)
    auth_cookie_seconds: float = 7 * 24 * 3600.0
    #: Where users' homes are, as this process sees them (local default: <state_dir>/homes;
    #: AWS: where the gateway mounts the EFS directory efs_home_root).
    workspaces_dir: str = ""
    max_projects_per_user: int = 10
    #: The countdown banner shows this long before a session is stopped.
    cull_warning_seconds: float = 300.0
    download_max_bytes: int = 500 * 1024 * 1024
    efs_file_system_id: str = ""
    efs_home_root: str = "/homes"
    # The environment catalogue (docs/operators.md#environments; catalogue.py)
    #: After each build, the least recently launched environments are removed until the
    #: rest fit in this many bytes (never one in use); 0: no automatic pruning.
    environment_budget_bytes: int = 0
    #: Signed-in user ids who may see and prune /environments on a shared server (on a
    #: personal server, its one person may; with no operators, nobody else may).
    operators: tuple[str, ...] = ()
    # Bringing back an ended anonymous session (docs/operators.md#restoring-sessions):
    # the files its visitor created or changed, kept this long, up to this size each.
    restore_days: float = 7.0
    restore_max_bytes: int = 100 * 1024 * 1024
    # Branding of the home and loading pages (docs/operators.md#branding; branding.py):
    # a name, a logo (an https URL or an image file here), colours (#rgb or #rrggbb),
    # a footer and an announcement line (text and <a href> links only).
    brand_name: str = ""
    brand_logo: str = ""
    brand_accent: str = ""
    brand_background: str = ""
    brand_text: str = ""
    brand_footer: str = ""
    brand_announcement: str = ""
    # Prebuilds (docs/publishers.md): POST /api/prebuild
    #: Checks GitHub's X-Hub-Signature-256, GitLab's X-Gitlab-Token and a CI's
    #: "Authorization: Bearer" (empty: the route is off). May be an ssm:/secretsmanager: reference.
    webhook_secret: str = field(default="", repr=False)
    #: Webhook bodies past this size are refused (413) before they are read.
    webhook_max_bytes: int = 1024 * 1024

    @property
    def exposed(self) -> bool:
        """Whether people other than this machine's user can reach the server: the AWS
        mode, a listen address beyond loopback, or a public URL (a reverse proxy)."""
        return self.mode == "aws" or bool(self.public_url) or self.host not in LOOPBACK_HOSTS

    @property
    def shared(self) -> bool:
        """Whether more than one person can use the server: exposed, or signing in with
        OpenID Connect (several accounts)."""
        return self.exposed or self.sign_in_method == "oidc"

    @property
    def allow_local_repos(self) -> bool:
        """``file://`` URLs and local directories: a local server only this machine reaches,
        and only when allowed."""
        return self.mode == "local" and self.allow_local_paths and not self.exposed

    @property
    def enforce_url_guard(self) -> bool:
        """Refuse fetches from local, private and metadata addresses: always on AWS, and on a
        local server that others can reach (one that also refuses local paths)."""
        return not self.allow_local_repos

    @property
    def uid_sessions(self) -> bool:
        """Whether local sessions run under uids of their own (``session_uid_range``)."""
        if self.mode != "local" or self.spawner == "docker":
            return False
        if self.session_isolation == "auto":
            return self.shared
        return self.session_isolation == "uids"

    @property
    def sessions_isolated(self) -> bool:
        """Whether a session's code runs apart from the server's user and secrets."""
        return self.mode == "aws" or self.spawner == "docker" or self.uid_sessions

    @property
    def cross_origin(self) -> tuple[str, ...]:
        """The origins (besides this server's) whose pages may launch and use sessions."""
        if self.allow_origins:
            return self.allow_origins
        return ("*",) if self.sessions_isolated else ()

    @property
    def uid_range(self) -> tuple[int, int]:
        first, _, last = self.session_uid_range.partition("-")
        return int(first), int(last or first)

    def validate(self) -> None:
        """Raise ``ValueError`` with a readable message for a contradictory setting."""
        choices = {"mode": ("local", "aws"), "builder": ("uv", "docker", "auto"),
                   "spawner": ("local", "docker"), "sign_in": ("auto", "local", "oidc", "off")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, "
                                 f"not {getattr(self, name)!r}")
        # auto with the docker spawner builds everything with repo2docker (``local.py``).
        if self.mode == "local" and self.builder != "auto" and (
                (self.builder == "docker") != (self.spawner == "docker")):
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
        for name in ("port", "max_sessions", "max_sessions_per_repo", "max_projects_per_user",
                     "download_max_bytes", "launch_lease_seconds", "max_concurrent_builds",
                     "max_concurrent_starts", "max_body_bytes", "max_upload_bytes",
                     "idle_connection_seconds", "header_timeout_seconds",
                     "websocket_ping_seconds", "store_probe_seconds",
                     "store_outage_grace_seconds"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be a positive number")
        if self.webhook_max_bytes <= 0:
            raise ValueError("webhook_max_bytes must be a positive number")
        if self.webhook_secret and not self.webhook_secret.startswith(
                ("ssm:", "secretsmanager:")) and len(self.webhook_secret) < 16:
            raise ValueError("webhook_secret needs at least 16 characters (anyone who guesses "
                             "it can start builds here); 32 random bytes, hex-encoded, is a "
                             "good choice")
        if self.environment_budget_bytes < 0:
            raise ValueError("environment_budget_bytes must be 0 (no budget) or a positive "
                             "number of bytes")
        if self.max_connections < 0:
            raise ValueError("max_connections must be 0 (automatic) or a positive number")
        if self.launch_budget_per_ip < 0 or self.trusted_proxy_hops < 0:
            raise ValueError("launch_budget_per_ip and trusted_proxy_hops must not be negative")
        if self.session_isolation not in ("auto", "uids", "off"):
            raise ValueError("session_isolation must be one of auto, uids, off")
        try:
            first, last = self.uid_range
        except ValueError:
            first = last = -1
        if not 1000 <= first <= last:
            raise ValueError(f"session_uid_range must be 'first-last' with 1000 <= first <= "
                             f"last, not {self.session_uid_range!r}")
        for origin in self.allow_origins:
            if origin != "*" and not re.fullmatch(r"https?://[^/\s]+", origin):
                raise ValueError(f"allow_origins: {origin!r} is not an origin (scheme://host"
                                 "[:port], no path), nor *")
        if self.public_url and not re.fullmatch(r"https?://[^/\s?#]+(/[^\s?#]*)?",
                                                self.public_url):
            raise ValueError(f"public_url must be an http(s) URL, not {self.public_url!r}")
        if self.session_url and not re.fullmatch(r"https?://[^/\s?#]+/?", self.session_url):
            raise ValueError("session_url must be an http(s) origin (no path), not "
                             f"{self.session_url!r}")
        self._validate_sign_in()
        if self.restore_days <= 0 or self.restore_max_bytes <= 0:
            raise ValueError("restore_days and restore_max_bytes must be positive numbers")
        from .branding import Branding  # refuses a bad colour, logo or footer link
        Branding.from_settings(self)

    def _validate_sign_in(self) -> None:
        method = self.sign_in_method
        if method == "oidc" and not (self.oidc_issuer and self.oidc_client_id):
            raise ValueError("sign_in oidc needs oidc_issuer and oidc_client_id")
        if method == "local" and self.mode != "local":
            raise ValueError("sign_in local (one local user) is for the local mode only")
        if method == "local" and self.exposed:
            raise ValueError("sign_in local signs every visitor in as this machine's user: it "
                             "is only for a server on 127.0.0.1 with no public URL. Use "
                             "sign_in oidc (or off) on a server others can reach")
        if method != "off" and self.mode == "aws" and not self.auth_secret:
            raise ValueError("signing in on AWS needs auth_secret (the same in every gateway "
                             "copy; it may be an ssm: or secretsmanager: reference)")
        reference = self.auth_secret.startswith(("ssm:", "secretsmanager:"))
        if self.auth_secret and not reference and len(self.auth_secret) < 16:
            raise ValueError("auth_secret needs at least 16 characters (32 random bytes, "
                             "hex-encoded, is a good choice)")
        if self.efs_file_system_id and not self.workspaces_dir:
            raise ValueError("efs_file_system_id needs workspaces_dir: where the gateway "
                             "mounts the file system's efs_home_root")
        if not self.efs_home_root.startswith("/"):
            raise ValueError("efs_home_root must be an absolute path on the file system")

    @property
    def sign_in_method(self) -> Literal["local", "oidc", "off"]:
        """How people sign in here (``off``: anonymous launches only)."""
        if self.sign_in != "auto":
            return self.sign_in
        if self.oidc_issuer:
            return "oidc"
        if self.mode == "local" and not self.exposed:
            return "local"
        return "off"

    @property
    def workspaces_root(self) -> Path | None:
        """Where signed-in users' homes live; ``None``: nowhere (sessions stay ephemeral)."""
        if self.workspaces_dir:
            return Path(self.workspaces_dir)
        return self.state_dir / "homes" if self.mode == "local" else None

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
