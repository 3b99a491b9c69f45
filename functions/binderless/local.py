"""Wire the local mode: SQLite state, local fetcher, uv and/or Docker builder and spawner."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from .backends.localfetch import LocalFetcher
from .backends.localspawn import LocalSpawner
from .backends.protocols import Builder, Spawner
from .backends.sqlite import Database, SqliteEventLog, SqliteRoutes, SqliteStore
from .backends.uids import UidPool, unreachable_part
from .backends.uvbuilder import UvBuilder
from .providers import ProviderRegistry
from .service import LaunchService
from .settings import Settings
from .tokens import load_secrets
from .urlguard import UrlGuard, guarded_client
from .workspaces import Workspaces

__all__ = ["check_isolation", "local_service", "protect_state"]

log = logging.getLogger("binderless.local")

HOW_TO_ISOLATE = ("run binderless as root so that sessions get user ids of their own, or "
                  "use --spawner docker, or serve on 127.0.0.1 without a public URL or "
                  "OIDC sign-in (one person's server)")


def _why_shared(settings: Settings) -> str:
    if settings.public_url:
        return f"it has a public URL ({settings.public_url})"
    if settings.exposed:
        return f"it listens on {settings.host}, beyond this machine"
    return "people sign in with OpenID Connect"


def check_isolation(settings: Settings, euid: int | None = None) -> None:
    """Refuse (``ValueError``) a local server that more than one person can use whose
    sessions would run as the server's own user: one person's code could read another's
    files and tokens, and the server's secrets. ``euid``: the server's (default: ours)."""
    if settings.mode != "local" or settings.spawner == "docker":
        return
    if settings.shared and not settings.uid_sessions:
        raise ValueError(
            f"more than one person can use this server ({_why_shared(settings)}), but "
            "--session-isolation off would run everyone's sessions as the server's own "
            f"user, able to read each other's files and the server's secrets. Use "
            f"--session-isolation auto (the default) and {HOW_TO_ISOLATE}.")
    euid = os.geteuid() if euid is None else euid
    if settings.uid_sessions and euid != 0:
        why = (_why_shared(settings) if settings.shared else
               "--session-isolation uids asks for it")
        raise ValueError(
            f"sessions must run under user ids of their own ({why}), which needs root: "
            f"{HOW_TO_ISOLATE}.")


def _chmod(path: Path, mode: int) -> None:
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, mode)


def protect_state(settings: Settings, homes: Path) -> None:
    """Set the state dir's modes so that sessions under other uids pass through to what
    they run (environments, their own folders) and read nothing else: no listing, no
    database, no git mirrors, no other session's folder. The database is the server's
    alone in every mode; the rest matters only with ``uid_sessions``."""
    db = settings.db_path
    for path in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
        if path.exists():
            os.chmod(path, 0o600)  # SQLite gives its -wal and -shm files the same mode
    if not settings.uid_sessions:
        return
    _chmod(settings.state_dir, 0o711)
    _chmod(settings.state_dir / "repos", 0o700)
    for folder in (settings.state_dir / "sessions", settings.state_dir / "envs", homes):
        _chmod(folder, 0o711)
    for folder in (settings.state_dir, homes):
        closed = unreachable_part(folder)
        if closed is not None:
            log.warning("sessions run under user ids of their own and cannot reach %s: %s "
                        "is closed to other users; every launch will fail until it is "
                        "opened (chmod o+x) or the server uses another --state-dir",
                        folder, closed)


def _engine_version(settings: Settings) -> str:
    """For ``--builder auto`` (the default) with the local spawner: the version of the
    Docker engine that answers now, or ``""``. Asked once, at startup, and only where an
    engine may be (a machine without Docker starts no ``docker`` process)."""
    if settings.mode != "local" or settings.builder != "auto" or settings.spawner == "docker":
        return ""
    from .backends.autobuilder import docker_engine_version, engine_may_answer

    version = docker_engine_version() if engine_may_answer() else ""
    if version:
        log.info("--builder auto: Docker engine %s answers; repositories the uv builder "
                 "cannot build are built with repo2docker and run in containers", version)
    else:
        log.info("--builder auto: no Docker engine answers; building with uv only")
    return version


def _builder(settings: Settings, uids: UidPool | None, engine: str) -> Builder:
    """The builder ``settings.builder`` names. ``auto``: docker with the docker spawner
    (everything in containers); else uv, with repo2docker besides when ``engine`` (its
    version) answered at startup."""
    if settings.builder == "docker" or (settings.builder == "auto"
                                        and settings.spawner == "docker"):
        from .backends.docker import DockerBuilder

        return DockerBuilder(settings)
    if settings.builder == "auto":
        from .backends.autobuilder import AutoBuilder, EngineProbe, UvBuilderWithoutEngine
        from .backends.docker import DockerBuilder

        if not engine:
            return UvBuilderWithoutEngine(settings, uids=uids)
        return AutoBuilder(UvBuilder(settings, uids=uids), DockerBuilder(settings),
                           EngineProbe(lambda: engine))
    return UvBuilder(settings, uids=uids)


def _spawner(settings: Settings, uids: UidPool | None, engine: str) -> Spawner:
    if settings.spawner == "docker":
        from .backends.docker import DockerSpawner

        return DockerSpawner(settings)
    if settings.builder == "auto" and engine:
        from .backends.autobuilder import AutoSpawner
        from .backends.docker import DockerSpawner

        # Each environment runs where its builder made it (a uv folder, a docker image).
        return AutoSpawner(LocalSpawner(settings, uids=uids), DockerSpawner(settings))
    return LocalSpawner(settings, uids=uids)


def local_service(settings: Settings, http_client: httpx.Client | None = None, *,
                  clock: Callable[[], float] = time.time) -> LaunchService:
    """The launch service with every local backend; creates no AWS client."""
    settings = load_secrets(settings, None)  # refuses ssm:/secretsmanager: references locally
    check_isolation(settings)
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    db = Database(settings.db_path)
    homes = settings.workspaces_root or settings.state_dir / "homes"
    protect_state(settings, homes)
    # One pool for builds and sessions: the same uid is never handed to both at once.
    uids = (UidPool(settings.state_dir / "uids.json", *settings.uid_range)
            if settings.uid_sessions else None)
    engine = _engine_version(settings)
    providers = ProviderRegistry(
        settings, http_client or guarded_client(UrlGuard(enforce=settings.enforce_url_guard)))
    store = SqliteStore(db)
    service = LaunchService(
        settings,
        providers=providers,
        store=store,
        routes=SqliteRoutes(db),
        events=SqliteEventLog(db, clock=clock),
        fetcher=LocalFetcher(settings.state_dir / "repos", archives=providers.get),
        builder=_builder(settings, uids, engine),
        spawner=_spawner(settings, uids, engine),
        clock=clock,
        workspaces=Workspaces(homes, max_projects=settings.max_projects_per_user,
                              clock=clock),
    )
    if settings.environment_budget_bytes:
        from .catalogue import budget_pruner, local_catalogues

        service.after_build = budget_pruner(
            local_catalogues(settings.state_dir, store, clock=clock,
                             builder=service.builder).environments,
            settings.environment_budget_bytes)
    return service
