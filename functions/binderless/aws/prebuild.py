"""Prebuilds in the Chalice app (the AWS mode): start the CodeBuild build of a pushed
commit's environment from the Lambda function, without following it.

A Lambda function cannot follow a build for half an hour, so it does the first half of
``LaunchService._ensure_image`` and ``CodeBuildBuilder.build``: fetch the checkout, plan,
look in ECR, claim the build in the state table, upload the source and start the build.
The claim's stream gets a line saying so; when CodeBuild ends, the ``build_finished``
EventBridge handler closes the claim and appends ``built`` (or ``failed``) to that stream,
so a launch that arrived meanwhile, following the claim, goes on at once, and later ones
find the image in ECR. The source zip is left to the bucket's lifecycle rule on
``sources/``.

Without a ``git`` program in the function's runtime a git repository cannot be fetched
here: the prebuild is then recorded as a build-only launch with no driver, which a
gateway's reconciler picks up (``LaunchService.reconcile``) and drives to its end.
"""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..envplan import EnvironmentPlan
from ..errors import BinderlessError, BuildFailed
from ..events import Event, event_from_error
from ..phases import Phase
from ..service import LaunchRequest, LaunchService
from .builder import BUILDSPEC, CodeBuildBuilder
from .dynamodb import DynamoState
from .s3 import zip_directory

__all__ = ["start_prebuild"]


async def start_prebuild(service: LaunchService, request: LaunchRequest, *,
                         which: Callable[[str], str | None] = shutil.which) -> dict[str, Any]:
    """Start building ``request``'s environment on CodeBuild unless it is built or being
    built; returns what happened (``status``: ``built``, ``building`` (someone else's
    build), ``started`` or ``queued`` (left to a gateway)), with ``resolved_ref``."""
    builder = service.builder
    if not isinstance(builder, CodeBuildBuilder):
        raise TypeError("start_prebuild needs the AWS mode's CodeBuild builder")
    repo = await asyncio.to_thread(service.providers.resolve, request.provider, request.spec)
    answer: dict[str, Any] = {"resolved_ref": repo.resolved_ref}
    if repo.kind == "git" and which("git") is None and not Path(repo.clone_url).is_dir():
        launch_id = service.create(dataclasses.replace(request, build_only=True, owner=""))
        if isinstance(service.store, DynamoState):
            # The launch service holds a new launch's writes until a flush (the gateway's
            # write-behind, aws/wiring.py); a Lambda function returns before any would
            # come, and the launch would never reach the table for a gateway to find.
            service.store.flush(launch_id)
        return {**answer, "status": "queued", "launch_id": launch_id}
    with tempfile.TemporaryDirectory(prefix="prebuild-") as folder:
        checkout = Path(folder) / "repo"
        await service.fetcher.fetch(repo, checkout, lambda _line: None)
        plan = await asyncio.to_thread(builder.plan, checkout)
        answer["key"] = plan.key
        image = await builder.find(plan)
        if image is not None:
            return {**answer, "status": "built", "image": image.name}
        owner = f"prebuild-{uuid.uuid4().hex[:12]}"
        claim = await asyncio.to_thread(
            service.store.claim_build, plan.key, owner,
            f"build-{plan.key}-{uuid.uuid4().hex[:8]}", service.clock(),
            stale_after=service.settings.build_timeout_seconds + 300)
        if not claim.claimed:
            return {**answer, "status": "building"}
        try:
            build_id = await asyncio.to_thread(_start, builder, plan, checkout)
        except BaseException as exc:
            error = exc if isinstance(exc, BinderlessError) else BuildFailed(
                f"binderless could not start the build on AWS CodeBuild: {exc}",
                hint="Push again, or launch the repository to build it.")
            service.store.finish_build(plan.key, "failed", owner=owner)
            service.events.append(claim.stream, event_from_error(error))
            if isinstance(exc, BinderlessError) or not isinstance(exc, Exception):
                raise
            raise error from exc
        service.events.append(claim.stream, Event(
            Phase.BUILDING, f"Started AWS CodeBuild build {build_id} (a prebuild after a "
                            "push); binderless follows it when it ends.\n"))
        return {**answer, "status": "started", "build_id": build_id}


def _start(builder: CodeBuildBuilder, plan: EnvironmentPlan, checkout: Path) -> str:
    """``CodeBuildBuilder.build`` up to ``StartBuild``: the repository, the source, the build
    (with the runner's own buildspec, never the repository's)."""
    from .builder import _is_aws_error

    try:
        builder.registry.ensure_repository()
        cache_tag = builder.registry.latest_tag()
        source = builder.source_key(plan.key)
        archive = zip_directory(checkout)
        try:
            builder.sources.put_file(source, archive)
        finally:
            archive.unlink(missing_ok=True)
        return builder.project.start(f"{builder.sources.bucket}/{source}",
                                     builder.environment(plan, cache_tag), uuid.uuid4().hex,
                                     buildspec=BUILDSPEC)
    except Exception as exc:
        if not _is_aws_error(exc):
            raise
        raise BuildFailed(f"binderless could not start the build on AWS CodeBuild: {exc}",
                          hint="Push again, or launch the repository to build it.") from exc
