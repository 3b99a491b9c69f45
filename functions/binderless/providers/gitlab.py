"""GitLab: ``gl/<url-encoded namespace>/<ref>`` (and MyST's unencoded ``gl/group/sub/repo/ref``).

Resolved with the REST API of gitlab.com or the configured GitLab host; a
token from settings is sent as ``PRIVATE-TOKEN`` and never shown.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, unquote

import httpx

from ..errors import BadLink, ProviderUnavailable, RefNotFound
from .base import ResolvedRepo, not_found, slugify

__all__ = ["GitLabProvider"]


class GitLabProvider:
    prefix = "gl"
    display_name = "GitLab.com"

    def __init__(self, client: httpx.Client, *, host: str = "gitlab.com", token: str = "",
                 clock: Callable[[], float] = time.time) -> None:
        self.client = client
        self.host = host
        self._token = token
        self._clock = clock

    def display_config(self) -> dict[str, Any]:
        return {
            "id": self.prefix,
            "displayName": self.display_name,
            "spec": {"validateRegex": r"[^/]+/.+"},
            "repo": {"label": "GitLab.com repository or URL", "placeholder": "group/project",
                     "urlEncode": True},
            "ref": {"enabled": True, "default": "HEAD"},
        }

    @staticmethod
    def candidates(spec: str) -> list[tuple[str, str]]:
        """Possible (namespace, ref) splits of a spec, most likely first."""
        head, sep, rest = spec.partition("/")
        if not sep or not head or not rest:
            raise BadLink(f"{spec!r} is not a GitLab spec: use gl/<group%2Fproject>/<ref>, "
                          "for example gl/gitlab-org%2Fgitlab-docs/main.")
        if "%2f" in head.lower():
            return [(unquote(head), unquote(rest))]
        # MyST's unencoded form: group/sub/project/ref, where the ref may contain slashes.
        parts = spec.split("/")
        if len(parts) < 3:
            raise BadLink(f"{spec!r} is not a GitLab spec: a project is <group>/<project>.")
        return [("/".join(parts[:i]), "/".join(parts[i:])) for i in range(len(parts) - 1, 1, -1)]

    def parse_offline(self, spec: str) -> tuple[str, str]:
        namespace, ref = self.candidates(spec)[0]
        return f"https://{self.host}/{namespace}", ref

    def resolve(self, spec: str) -> ResolvedRepo:
        for namespace, ref in self.candidates(spec):
            sha = self._commit(namespace, ref or "HEAD", spec)
            if sha is None:
                continue
            repo_url = f"https://{self.host}/{namespace}"
            return ResolvedRepo(
                provider=self.prefix, spec=spec, repo_url=repo_url, clone_url=repo_url + ".git",
                ref=ref, resolved_ref=sha,
                persistent_spec=f"{quote(namespace, safe='')}/{sha}",
                ref_url=f"{repo_url}/-/tree/{sha}", slug=slugify(namespace.replace("/", "-")),
            )
        raise RefNotFound(not_found(self.prefix, spec))

    def _commit(self, namespace: str, ref: str, spec: str) -> str | None:
        """The commit of ``ref``; ``None`` when the project does not exist (try another split)."""
        url = (f"https://{self.host}/api/v4/projects/{quote(namespace, safe='')}"
               f"/repository/commits/{quote(ref, safe='')}")
        headers = {"User-Agent": "binderless"}
        if self._token:
            headers["PRIVATE-TOKEN"] = self._token
        try:
            response = self.client.get(url, headers=headers, timeout=30.0)
        except httpx.HTTPError as exc:
            raise ProviderUnavailable(f"{self.host} could not be reached.",
                                      hint="Try again in a few minutes.") from exc
        if response.status_code == 429:
            retry = response.headers.get("retry-after") or response.headers.get("ratelimit-reset")
            wait = float(retry) if retry and retry.isdigit() else 60.0
            if wait > 10**9:  # an epoch, not a delay
                wait -= self._clock()
            minutes = max(1, math.ceil(wait / 60))
            raise ProviderUnavailable(f"GitLab rate limit exceeded. Try again in {minutes} minutes.")
        if response.status_code == 404:
            message = ""
            with contextlib.suppress(ValueError):
                message = str(response.json().get("message", ""))
            if "project" in message.lower():
                return None
            raise RefNotFound(not_found(self.prefix, spec))
        if response.status_code != 200:
            raise ProviderUnavailable(f"GitLab answered {response.status_code} for {namespace}.",
                                      hint="Try again in a few minutes.")
        try:
            return str(response.json()["id"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ProviderUnavailable("GitLab sent an answer binderless could not read.") from exc
