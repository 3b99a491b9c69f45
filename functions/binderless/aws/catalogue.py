"""The environment catalogue on AWS: images in ECR and their ECS task-definition families.

An environment is the ECR image tagged with its key; each is run through task-definition
families named ``<family_prefix><key>-<digest>`` (and ``-<access point>`` for signed-in
users; see ``ecs.task_family``). Removing an environment deregisters every ACTIVE
revision of those families, then deletes the image's tag (ECR deletes the image with its
last tag; the repository's lifecycle rule expires anything left untagged).

What uses an image, besides the sessions the store knows: ECS tasks binderless started
that are not stopping and carry the tag ``binderless:image`` with its key (a task whose
record was lost still runs it). The calls, checked against the API references:

- ECR ``DescribeImages`` (``filter.tagStatus`` TAGGED, paged by ``nextToken``): size
  ``imageSizeInBytes``, push time ``imagePushedAt``; ``BatchDeleteImage`` with
  ``imageIds=[{"imageTag": key}]``;
- ECS ``ListTaskDefinitionFamilies`` (``familyPrefix`` is a prefix there, with
  ``status`` ACTIVE); ``ListTaskDefinitions`` (its ``familyPrefix`` is a *full family
  name*); ``DeregisterTaskDefinition`` (a revision's ARN);
- ECS ``ListTasks`` with ``startedBy`` as its only filter (AWS refuses it with
  ``desiredStatus`` or ``family``), then ``DescribeTasks`` with ``include=["TAGS"]``,
  at most 100 tasks a call.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from ..catalogue import Catalogue, StoredEnvironment
from ..settings import Settings
from ._errors import error_code
from .dynamodb import DynamoState
from .ecs import STARTED_BY

__all__ = ["IMAGE_TAG", "EcrEnvironments", "aws_catalogue"]

#: The tag the Fargate spawner puts on a session's task: the environment key it runs.
IMAGE_TAG = "binderless:image"
_DESCRIBE_MAX = 100
_NOT_FOUND = {"RepositoryNotFoundException", "ImageNotFoundException"}
_STOPPING = {"DEACTIVATING", "STOPPING", "DEPROVISIONING", "STOPPED", "DELETED"}


class EcrEnvironments:
    """``EnvironmentStorage`` over one ECR repository and the ECS cluster running it."""

    kind = "image"

    def __init__(self, ecr: Any, ecs: Any, *, repository: str, registry_uri: str,
                 cluster: str, family_prefix: str = "binderless-session-") -> None:
        self.ecr = ecr
        self.ecs = ecs
        self.repository = repository
        self.registry_uri = registry_uri.rstrip("/")
        self.cluster = cluster
        self.family_prefix = family_prefix

    def _images(self) -> Iterator[dict[str, Any]]:
        request: dict[str, Any] = {"repositoryName": self.repository,
                                   "filter": {"tagStatus": "TAGGED"}, "maxResults": 1000}
        while True:
            try:
                answer = self.ecr.describe_images(**request)
            except Exception as exc:
                if error_code(exc) in _NOT_FOUND:
                    return
                raise
            yield from answer.get("imageDetails") or []
            if not answer.get("nextToken"):
                return
            request["nextToken"] = answer["nextToken"]

    def stored(self) -> list[StoredEnvironment]:
        found = []
        for image in self._images():
            pushed = image.get("imagePushedAt")
            for tag in image.get("imageTags") or []:
                uri = f"{self.registry_uri}/{self.repository}:{tag}"
                found.append(StoredEnvironment(
                    key=str(tag), name=uri, size_bytes=int(image.get("imageSizeInBytes") or 0),
                    created_at=pushed.timestamp() if pushed is not None else None,
                    location=uri))
        return found

    def families(self, key: str) -> list[str]:
        """The ACTIVE task-definition families that run the image of ``key``."""
        names: list[str] = []
        request: dict[str, Any] = {"familyPrefix": f"{self.family_prefix}{key}-",
                                   "status": "ACTIVE"}
        while True:
            answer = self.ecs.list_task_definition_families(**request)
            names += answer.get("families") or []
            if not answer.get("nextToken"):
                return names
            request["nextToken"] = answer["nextToken"]

    def _revisions(self, family: str) -> list[str]:
        arns: list[str] = []
        request: dict[str, Any] = {"familyPrefix": family, "status": "ACTIVE"}
        while True:
            answer = self.ecs.list_task_definitions(**request)
            arns += answer.get("taskDefinitionArns") or []
            if not answer.get("nextToken"):
                return arns
            request["nextToken"] = answer["nextToken"]

    def remove(self, key: str) -> None:
        # Task definitions first: a RunTask between the two steps then fails with "no
        # ACTIVE revision" (and registers again from an image that still exists), never
        # starts a task of a deleted image.
        for family in self.families(key):
            for arn in self._revisions(family):
                self.ecs.deregister_task_definition(taskDefinition=arn)
        try:
            self.ecr.batch_delete_image(repositoryName=self.repository,
                                        imageIds=[{"imageTag": key}])
        except Exception as exc:
            if error_code(exc) not in _NOT_FOUND:
                raise

    def users(self) -> dict[str, str]:
        arns: list[str] = []
        request: dict[str, Any] = {"cluster": self.cluster, "startedBy": STARTED_BY}
        while True:
            answer = self.ecs.list_tasks(**request)
            arns += answer.get("taskArns") or []
            if not answer.get("nextToken"):
                break
            request["nextToken"] = answer["nextToken"]
        running: dict[str, int] = {}
        for start in range(0, len(arns), _DESCRIBE_MAX):
            answer = self.ecs.describe_tasks(cluster=self.cluster,
                                             tasks=arns[start:start + _DESCRIBE_MAX],
                                             include=["TAGS"])
            for task in answer.get("tasks") or []:
                if task.get("desiredStatus") == "STOPPED" or task.get("lastStatus") in _STOPPING:
                    continue
                tags = {t.get("key"): t.get("value") for t in task.get("tags") or []}
                key = tags.get(IMAGE_TAG)
                if key:
                    running[str(key)] = running.get(str(key), 0) + 1
        return {key: f"{n} ECS task{'s' if n != 1 else ''} running it"
                for key, n in running.items()}


def aws_catalogue(settings: Settings, client_factory: Callable[[str], Any]) -> Catalogue:
    """The catalogue of a deployment: its DynamoDB table, ECR repository and cluster."""
    state = DynamoState(client_factory("dynamodb"), settings.aws_table)
    storage = EcrEnvironments(client_factory("ecr"), client_factory("ecs"),
                              repository=settings.ecr_repository,
                              registry_uri=settings.ecr_registry, cluster=settings.ecs_cluster)
    return Catalogue(storage, state)
