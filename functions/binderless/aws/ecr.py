"""ECR: the registry of built environments, one repository, one tag per environment key.

ECR does not create repositories on push, so the builder calls ``ensure_repository`` first.
Images that lose their tag (a key rebuilt, a push that failed half-way) are expired by a
lifecycle policy.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from ._errors import error_code

__all__ = ["EcrRegistry", "untagged_expiry_policy"]

_NOT_FOUND = {"ImageNotFoundException", "RepositoryNotFoundException"}


def untagged_expiry_policy(days: int) -> str:
    """The lifecycle policy text that expires untagged images ``days`` after their push."""
    return json.dumps({"rules": [{
        "rulePriority": 1,
        "description": "Expire untagged images (replaced tags, failed pushes)",
        "selection": {"tagStatus": "untagged", "countType": "sinceImagePushed",
                      "countUnit": "days", "countNumber": days},
        "action": {"type": "expire"},
    }]}, sort_keys=True)


class EcrRegistry:
    """One ECR repository, ``<registry_uri>/<repository>:<tag>``.

    ``client`` is a boto3 ECR client; ``registry_uri`` is the registry's host, such as
    ``123456789012.dkr.ecr.eu-west-1.amazonaws.com``. With ``kms_key`` a new repository is
    encrypted with that KMS key, otherwise with AES256.
    """

    def __init__(self, client: Any, *, registry_uri: str, repository: str,
                 kms_key: str | None = None, untagged_days: int = 1) -> None:
        self.client = client
        self.registry_uri = registry_uri.rstrip("/")
        self.repository = repository
        self.kms_key = kms_key
        self.untagged_days = untagged_days

    def image_uri(self, tag: str) -> str:
        return f"{self.registry_uri}/{self.repository}:{tag}"

    def find(self, tag: str) -> str | None:
        """The digest of the image tagged ``tag``, or ``None`` when there is none."""
        try:
            answer = self.client.describe_images(repositoryName=self.repository,
                                                 imageIds=[{"imageTag": tag}])
        except Exception as exc:
            if error_code(exc) in _NOT_FOUND:
                return None
            raise
        for image in answer.get("imageDetails", []):
            if tag in image.get("imageTags", []):
                return str(image["imageDigest"])
        return None

    def size_bytes(self, image_uri: str) -> int | None:
        """The compressed size ECR reports for ``image_uri`` (a tag of this repository),
        or ``None`` when it is not one of this repository's, or ECR does not know it."""
        prefix = f"{self.registry_uri}/{self.repository}:"
        if not image_uri.startswith(prefix):
            return None
        try:
            answer = self.client.describe_images(repositoryName=self.repository,
                                                 imageIds=[{"imageTag": image_uri[len(prefix):]}])
        except Exception as exc:
            if error_code(exc) in _NOT_FOUND:
                return None
            raise
        sizes = [int(i["imageSizeInBytes"]) for i in answer.get("imageDetails", [])
                 if i.get("imageSizeInBytes")]
        return max(sizes) if sizes else None

    def ensure_repository(self) -> bool:
        """Create the repository unless it exists; ``True`` when it was created now.

        A new repository scans images on push, is encrypted at rest and expires untagged
        images. An existing one is left as it is (the operator may have tuned it).
        """
        encryption: dict[str, str] = {"encryptionType": "AES256"}
        if self.kms_key:
            encryption = {"encryptionType": "KMS", "kmsKey": self.kms_key}
        try:
            self.client.create_repository(
                repositoryName=self.repository,
                imageTagMutability="MUTABLE",  # a key is rebuilt in place when its image is lost
                imageScanningConfiguration={"scanOnPush": True},
                encryptionConfiguration=encryption,
            )
        except Exception as exc:
            if error_code(exc) == "RepositoryAlreadyExistsException":
                return False
            raise
        self.client.put_lifecycle_policy(
            repositoryName=self.repository,
            lifecyclePolicyText=untagged_expiry_policy(self.untagged_days))
        return True

    def latest_tag(self) -> str | None:
        """A tag of the most recently pushed image (for ``--cache-from``), or ``None``."""
        latest: tuple[datetime, str] | None = None
        pages = self.client.get_paginator("describe_images").paginate(
            repositoryName=self.repository, filter={"tagStatus": "TAGGED"},
            PaginationConfig={"PageSize": 1000})  # the most DescribeImages gives at once
        try:
            for page in pages:
                for image in page.get("imageDetails", []):
                    tags = image.get("imageTags") or []
                    pushed = image.get("imagePushedAt")
                    # ``>=``: of images pushed within the same clock tick, the later listed
                    if tags and pushed is not None and (latest is None or pushed >= latest[0]):
                        latest = (pushed, str(tags[0]))
        except Exception as exc:
            if error_code(exc) in _NOT_FOUND:
                return None
            raise
        return latest[1] if latest else None
