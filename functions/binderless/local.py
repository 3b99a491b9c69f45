"""Wire the local mode: SQLite state, local fetcher, uv (or Docker) builder and spawner."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx

from .backends.localfetch import LocalFetcher
from .backends.localspawn import LocalSpawner
from .backends.protocols import Builder, Spawner
from .backends.sqlite import Database, SqliteEventLog, SqliteRoutes, SqliteStore
from .backends.uvbuilder import UvBuilder
from .providers import ProviderRegistry
from .service import LaunchService
from .settings import Settings
from .tokens import load_secrets
from .urlguard import UrlGuard, guarded_client
from .workspaces import Workspaces

__all__ = ["local_service"]


def _builder(settings: Settings) -> Builder:
    if settings.builder == "docker":
        from .backends.docker import DockerBuilder

        return DockerBuilder(settings)
    return UvBuilder(settings)


def _spawner(settings: Settings) -> Spawner:
    if settings.spawner == "docker":
        from .backends.docker import DockerSpawner

        return DockerSpawner(settings)
    return LocalSpawner(settings)


def local_service(settings: Settings, http_client: httpx.Client | None = None, *,
                  clock: Callable[[], float] = time.time) -> LaunchService:
    """The launch service with every local backend; creates no AWS client."""
    settings = load_secrets(settings, None)  # refuses ssm:/secretsmanager: references locally
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    db = Database(settings.db_path)
    providers = ProviderRegistry(
        settings, http_client or guarded_client(UrlGuard(enforce=settings.enforce_url_guard)))
    return LaunchService(
        settings,
        providers=providers,
        store=SqliteStore(db),
        routes=SqliteRoutes(db),
        events=SqliteEventLog(db, clock=clock),
        fetcher=LocalFetcher(settings.state_dir / "repos", archives=providers.get),
        builder=_builder(settings),
        spawner=_spawner(settings),
        clock=clock,
        workspaces=Workspaces(settings.workspaces_root or settings.state_dir / "homes",
                              max_projects=settings.max_projects_per_user, clock=clock),
    )
