"""Wire the AWS mode: the same launch service, with DynamoDB, CodeBuild + ECR and Fargate.

The session gateway runs this service behind the load balancer; several copies
share the DynamoDB state (build claims keep one build per environment). Clients
come from ``client_factory(service_name)`` so tests pass moto-backed ones.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..backends.localfetch import LocalFetcher
from ..providers import ProviderRegistry
from ..service import LaunchService
from ..settings import Settings
from ..tokens import load_secrets
from ..urlguard import UrlGuard, guarded_client
from .builder import CodeBuildBuilder
from .codebuild import CodeBuildProject
from .dynamodb import DynamoState
from .ecr import EcrRegistry
from .ecs import FargateTasks
from .logs import LogReader
from .s3 import S3Objects
from .spawner import FargateSpawner

__all__ = ["REQUIRED", "aws_service"]

ClientFactory = Callable[[str], Any]

#: Settings the AWS mode cannot start without (the deployment's outputs provide them).
REQUIRED = ("aws_bucket", "ecr_registry", "base_image", "execution_role_arn", "task_role_arn",
            "subnets", "security_groups")


def aws_service(settings: Settings, client_factory: ClientFactory) -> LaunchService:
    """The launch service of a session gateway. Raises ``ValueError`` naming missing settings."""
    missing = [name for name in REQUIRED if not getattr(settings, name)]
    if missing:
        raise ValueError("the AWS mode needs " + ", ".join(
            f"BINDERLESS_{name.upper()}" for name in missing) + " (the deployment sets them)")
    settings = load_secrets(settings, client_factory)
    state = DynamoState(client_factory("dynamodb"), settings.aws_table)
    providers = ProviderRegistry(settings, guarded_client(UrlGuard(enforce=True)))
    logs = LogReader(client_factory("logs"))
    objects = S3Objects(client_factory("s3"), settings.aws_bucket)
    builder = CodeBuildBuilder(
        registry=EcrRegistry(client_factory("ecr"), registry_uri=settings.ecr_registry,
                             repository=settings.ecr_repository),
        sources=objects, project=CodeBuildProject(client_factory("codebuild"),
                                                  settings.codebuild_project),
        logs=logs, base_image=settings.base_image, timeout=settings.build_timeout_seconds)
    tasks = FargateTasks(client_factory("ecs"), cluster=settings.ecs_cluster,
                         subnets=settings.subnets, security_groups=settings.security_groups,
                         execution_role_arn=settings.execution_role_arn,
                         task_role_arn=settings.task_role_arn,
                         log_group=settings.session_log_group)
    spawner = FargateSpawner(tasks, objects, logs, cpu=settings.session_cpu,
                             memory=settings.session_memory)
    return LaunchService(
        settings, providers=providers, store=state, routes=state, events=state,
        fetcher=LocalFetcher(settings.state_dir / "repos", archives=providers.get),
        builder=builder, spawner=spawner,
    )
