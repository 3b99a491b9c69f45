"""Wire the AWS mode: the same launch service, with DynamoDB, CodeBuild + ECR and Fargate.

The session gateway runs this service behind the load balancer; several copies
share the DynamoDB state (build claims keep one build per environment). Clients
come from ``client_factory(service_name)`` so tests pass moto-backed ones, and
``overrides`` lets a test replace what an AWS emulator cannot do (run a build, run a task).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..backends.localfetch import LocalFetcher
from ..providers import ProviderRegistry, RepoProvider
from ..service import LaunchService
from ..settings import Settings
from ..tokens import load_secrets
from ..urlguard import UrlGuard, guarded_client
from ..workspaces import Workspaces
from .builder import CodeBuildBuilder
from .codebuild import CodeBuildProject
from .dynamodb import DynamoState
from .ecr import EcrRegistry
from .ecs import FargateTasks
from .efs import EfsAccessPoints
from .iam import HomeRoles
from .logs import LogReader
from .metrics import CloudWatchObserver
from .restores import S3RestoreShelf
from .s3 import S3Objects
from .spawner import FargateSpawner

__all__ = ["REQUIRED", "Overrides", "aws_service"]

ClientFactory = Callable[[str], Any]

#: Settings the AWS mode cannot start without (the deployment's outputs provide them).
REQUIRED = ("aws_bucket", "ecr_registry", "base_image", "execution_role_arn", "task_role_arn",
            "subnets", "security_groups")


class ProjectFactory(Protocol):
    """Makes the CodeBuild project adapter (``CodeBuildProject`` itself fits)."""

    def __call__(self, client: Any, project_name: str, /) -> CodeBuildProject: ...


class TasksFactory(Protocol):
    """Makes the ECS tasks adapter (``FargateTasks`` itself fits)."""

    def __call__(self, client: Any, /, *, cluster: str, subnets: Sequence[str],
                 security_groups: Sequence[str], execution_role_arn: str, task_role_arn: str,
                 log_group: str, assign_public_ip: bool = ...) -> FargateTasks: ...


@dataclass(frozen=True)
class Overrides:
    """Seams for running the AWS mode without AWS (a deployment sets none of these).

    ``project`` and ``tasks`` make the CodeBuild and ECS adapters (subclasses that do the
    work locally, for an emulator that cannot build or run anything); ``providers``
    replace repository providers by prefix; ``poll_interval`` (seconds) replaces the
    adapters' pauses between two looks at a build, a task and the shared state.
    """

    project: ProjectFactory = CodeBuildProject
    tasks: TasksFactory = FargateTasks
    providers: Mapping[str, RepoProvider] = field(default_factory=dict)
    poll_interval: float | None = None


def aws_service(settings: Settings, client_factory: ClientFactory,
                overrides: Overrides | None = None) -> LaunchService:
    """The launch service of a session gateway. Raises ``ValueError`` naming missing settings."""
    missing = [name for name in REQUIRED if not getattr(settings, name)]
    if missing:
        raise ValueError("the AWS mode needs " + ", ".join(
            f"BINDERLESS_{name.upper()}" for name in missing) + " (the deployment sets them)")
    seams = overrides or Overrides()
    settings = load_secrets(settings, client_factory)
    # The gateway drives launches, so it holds each launch's writes and sends them
    # together (see ``DynamoState``).
    state = DynamoState(client_factory("dynamodb"), settings.aws_table, write_behind=True)
    providers = ProviderRegistry(settings, guarded_client(UrlGuard(enforce=True)),
                                 overrides=seams.providers)
    logs = LogReader(client_factory("logs"))
    objects = S3Objects(client_factory("s3"), settings.aws_bucket)
    registry = EcrRegistry(client_factory("ecr"), registry_uri=settings.ecr_registry,
                           repository=settings.ecr_repository)
    builder = CodeBuildBuilder(
        registry=registry,
        sources=objects, project=seams.project(client_factory("codebuild"),
                                               settings.codebuild_project),
        logs=logs, base_image=settings.base_image, timeout=settings.build_timeout_seconds)
    tasks = seams.tasks(client_factory("ecs"), cluster=settings.ecs_cluster,
                        subnets=settings.subnets, security_groups=settings.security_groups,
                        execution_role_arn=settings.execution_role_arn,
                        task_role_arn=settings.task_role_arn,
                        log_group=settings.session_log_group,
                        assign_public_ip=settings.session_public_ip)
    # Signed-in users' homes: their EFS access points for the tasks, and the file
    # system's home root as the gateway mounts it (workspaces_dir) for their projects.
    homes = settings.workspaces_root if settings.efs_file_system_id else None
    # Each user's role, made with their access point, may mount only that one (iam.py).
    roles = HomeRoles(client_factory("iam"), path=settings.home_role_path,
                      boundary_arn=settings.home_role_boundary) if (
        homes and settings.home_role_path and settings.home_role_boundary) else None
    access_points = EfsAccessPoints(client_factory("efs"), settings.efs_file_system_id,
                                    home_root=settings.efs_home_root,
                                    roles=roles) if homes else None
    spawner = FargateSpawner(tasks, objects, logs, cpu=settings.session_cpu,
                             memory=settings.session_memory, access_points=access_points,
                             image_sizes=registry,
                             home_security_groups=settings.home_security_groups,
                             home_task_role_arn=settings.home_task_role_arn)
    if seams.poll_interval is not None:
        state.poll_interval = builder.poll_interval = seams.poll_interval
        spawner.poll_interval = seams.poll_interval
        if roles is not None:
            roles.settle_seconds = seams.poll_interval
    service = LaunchService(
        settings, providers=providers, store=state, routes=state, events=state,
        fetcher=LocalFetcher(settings.state_dir / "repos", archives=providers.get),
        builder=builder, spawner=spawner,
        workspaces=Workspaces(homes, max_projects=settings.max_projects_per_user)
        if homes else None,
    )
    service.observer = CloudWatchObserver()  # launch and build metrics, as log lines
    # Saved changes of anonymous sessions: records and tars in the bucket, saved by the
    # tasks themselves (aws/restores.py). A tar may come until the oldest a session gets.
    service.restores = spawner.restores = S3RestoreShelf(
        objects, days=settings.restore_days, max_bytes=settings.restore_max_bytes,
        pending_seconds=settings.max_age_seconds + spawner.start_timeout + 3600,
        clock=lambda: service.clock())
    return service
