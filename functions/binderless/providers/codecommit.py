"""AWS CodeCommit: ``codecommit/<region>/<repository>/<ref>``.

Resolved with boto3 in AWS mode; the local mode creates no AWS client and
refuses these links with a message saying where they work.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

from ..errors import BadLink, ProviderUnavailable, RefNotFound, SpecNotAllowed
from .base import ResolvedRepo, not_found, slugify

__all__ = ["CodeCommitProvider"]

REGION_RE = re.compile(r"^[a-z]{2}(-gov)?-[a-z]+-\d$")
REPO_RE = re.compile(r"^[\w.-]{1,100}$")
SHA_RE = re.compile(r"^[0-9a-f]{40}$")
NOT_FOUND = {"RepositoryDoesNotExistException", "BranchDoesNotExistException",
             "CommitDoesNotExistException", "CommitIdDoesNotExistException",
             "InvalidBranchNameException", "InvalidCommitIdException",
             "InvalidRepositoryNameException"}

ClientFactory = Callable[[str], Any]


class CodeCommitProvider:
    prefix = "codecommit"
    display_name = "AWS CodeCommit"

    def __init__(self, client_factory: ClientFactory | None) -> None:
        """``client_factory(region)`` returns a boto3 CodeCommit client; ``None`` in local mode."""
        self.client_factory = client_factory

    def display_config(self) -> dict[str, Any]:
        return {
            "id": self.prefix,
            "displayName": self.display_name,
            "spec": {"validateRegex": r"[a-z0-9-]+/[\w.-]+/.+"},
            "repo": {"label": "Region and repository", "placeholder": "eu-west-1/my-repo"},
            "ref": {"enabled": True, "default": "HEAD"},
        }

    @staticmethod
    def parse(spec: str) -> tuple[str, str, str]:
        parts = unquote(spec).split("/", 2)
        if len(parts) < 3 or not REGION_RE.match(parts[0]) or not REPO_RE.match(parts[1]) \
                or not parts[2]:
            raise BadLink(f"{spec!r} is not a CodeCommit spec: use codecommit/<region>/"
                          "<repository>/<ref>, for example codecommit/eu-west-1/analysis/main.")
        return parts[0], parts[1], parts[2]

    def parse_offline(self, spec: str) -> tuple[str, str]:
        region, repo, ref = self.parse(spec)
        return self._repo_url(region, repo), ref

    @staticmethod
    def _repo_url(region: str, repo: str) -> str:
        return f"https://git-codecommit.{region}.amazonaws.com/v1/repos/{repo}"

    def resolve(self, spec: str) -> ResolvedRepo:
        region, repo, ref = self.parse(spec)
        if self.client_factory is None:
            raise SpecNotAllowed(
                "CodeCommit repositories can be launched only by a binderless running on AWS.",
                hint="Use an https:// git link, or launch it on your AWS deployment.")
        client = self.client_factory(region)
        try:
            if SHA_RE.match(ref):
                client.get_commit(repositoryName=repo, commitId=ref)
                sha = ref
            else:
                branch = ref
                if ref == "HEAD":
                    meta = client.get_repository(repositoryName=repo)["repositoryMetadata"]
                    branch = meta.get("defaultBranch") or "main"
                sha = client.get_branch(repositoryName=repo, branchName=branch)["branch"]["commitId"]
        except Exception as exc:
            code = getattr(exc, "response", {}).get("Error", {}).get("Code", "")
            if code in NOT_FOUND:
                raise RefNotFound(not_found(self.prefix, spec)) from exc
            if code in ("AccessDeniedException", "EncryptionKeyAccessDeniedException"):
                raise SpecNotAllowed(f"This deployment may not read the CodeCommit repository "
                                     f"{repo} in {region}.",
                                     hint="Its operators can grant codecommit:GitPull.") from exc
            raise ProviderUnavailable(f"CodeCommit in {region} did not answer ({code or exc}).",
                                      hint="Try again in a few minutes.") from exc
        url = self._repo_url(region, repo)
        return ResolvedRepo(
            provider=self.prefix, spec=spec, repo_url=url, clone_url=url, ref=ref,
            resolved_ref=sha, persistent_spec=f"{region}/{repo}/{sha}",
            ref_url=f"https://{region}.console.aws.amazon.com/codesuite/codecommit/repositories/"
                    f"{repo}/commit/{sha}?region={region}",
            slug=slugify(repo),
        )
