"""GitHub: ``gh/<user>/<repo>/<ref>``, resolved with the REST API.

Resolution keeps an ETag cache (a 304 reuses the known commit and does not count
against the rate limit) and a short not-found cache. A missing ``master`` or
``main`` falls back to the default branch at once, and says so.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, unquote

import httpx

from ..errors import BadLink, ProviderUnavailable, RefNotFound
from .base import ResolvedRepo, not_found, slugify

__all__ = ["GitHubApi", "GitHubProvider"]

NOT_FOUND_TTL = 300.0
FALLBACK_REFS = ("master", "main")


class GitHubProvider:
    prefix = "gh"
    display_name = "GitHub"

    def __init__(
        self,
        client: httpx.Client,
        *,
        api_url: str = "https://api.github.com",
        token: str = "",
        host: str = "github.com",
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``host``/``api_url`` point at a GitHub Enterprise server when it is not github.com."""
        self.host = host
        self.api = GitHubApi(client, api_url=api_url, token=token, clock=clock)

    def display_config(self) -> dict[str, Any]:
        return {
            "id": self.prefix,
            "displayName": self.display_name,
            "spec": {"validateRegex": r"[^/]+/[^/]+/.+"},
            "repo": {"label": "GitHub repository name or URL", "placeholder": "org/repo"},
            "ref": {"enabled": True, "default": "HEAD"},
        }

    @staticmethod
    def parse(spec: str) -> tuple[str, str, str]:
        parts = unquote(spec).split("/", 2)
        if len(parts) < 3 or not all(parts):
            raise BadLink(
                f"{spec!r} is not a GitHub spec: use gh/<user>/<repo>/<ref>, "
                "for example gh/binder-examples/requirements/HEAD."
            )
        user, repo, ref = parts
        repo = repo.removesuffix(".git")
        for part in (user, repo):
            if part in (".", "..") or not all(c.isalnum() or c in "-_." for c in part):
                raise BadLink(f"{part!r} is not a valid GitHub user or repository name.")
        return user, repo, ref.strip("/")

    def parse_offline(self, spec: str) -> tuple[str, str]:
        user, repo, ref = self.parse(spec)
        return f"https://{self.host}/{user}/{repo}", ref

    def resolve(self, spec: str) -> ResolvedRepo:
        user, repo, ref = self.parse(spec)
        notes: list[str] = []
        try:
            sha = self._commit(user, repo, ref)
        except RefNotFound:
            if ref not in FALLBACK_REFS:
                raise RefNotFound(not_found(self.prefix, spec)) from None
            try:
                sha = self._commit(user, repo, "HEAD")
            except RefNotFound:
                raise RefNotFound(not_found(self.prefix, spec)) from None
            notes.append(
                f"There is no branch {ref!r} in {user}/{repo}; "
                "launching its default branch instead.\n"
            )
        repo_url = f"https://{self.host}/{user}/{repo}"
        return ResolvedRepo(
            provider=self.prefix,
            spec=spec,
            repo_url=repo_url,
            clone_url=repo_url,
            ref=ref,
            resolved_ref=sha,
            persistent_spec=f"{user}/{repo}/{sha}",
            ref_url=f"{repo_url}/tree/{sha}",
            slug=slugify(f"{user}-{repo}"),
            notes=tuple(notes),
        )

    def _commit(self, user: str, repo: str, ref: str) -> str:
        url = f"{self.api.api_url}/repos/{quote(user)}/{quote(repo)}/commits/{quote(ref, safe='')}"
        try:
            return str(self.api.get_json(url)["sha"])
        except (KeyError, TypeError) as exc:
            raise ProviderUnavailable("GitHub sent an answer binderless could not read.") from exc
        except RefNotFound:
            raise RefNotFound(f"{user}/{repo} has no ref {ref!r}.") from None


class GitHubApi:
    """GitHub's REST API with an ETag cache, a not-found cache and readable errors."""

    def __init__(self, client: httpx.Client, *, api_url: str, token: str,
                 clock: Callable[[], float]) -> None:
        self.client = client
        self.api_url = api_url.rstrip("/")
        self._token = token
        self._clock = clock
        self._etags: dict[str, tuple[str, Any]] = {}
        self._missing: dict[str, float] = {}

    def get_json(self, url: str) -> Any:
        """GET ``url``; raises ``RefNotFound`` on 404/422 and ``ProviderUnavailable`` otherwise."""
        now = self._clock()
        if self._missing.get(url, 0.0) > now:
            raise RefNotFound("not found (cached)")
        headers = {"Accept": "application/vnd.github+json", "User-Agent": "binderless"}
        if self._token:
            headers["Authorization"] = f"token {self._token}"
        cached = self._etags.get(url)
        if cached:
            headers["If-None-Match"] = cached[0]
        try:
            response = self.client.get(url, headers=headers, timeout=30.0)
        except httpx.HTTPError as exc:
            raise ProviderUnavailable(
                "GitHub could not be reached.", hint="Try again in a few minutes."
            ) from exc
        if response.status_code == 304 and cached:
            return cached[1]
        if response.status_code in (403, 429) and response.headers.get("x-ratelimit-remaining") == "0":
            reset = float(response.headers.get("x-ratelimit-reset", now + 60))
            minutes = max(1, math.ceil((reset - now) / 60))
            raise ProviderUnavailable(f"GitHub rate limit exceeded. Try again in {minutes} minutes.")
        if response.status_code in (404, 422):
            self._missing[url] = now + NOT_FOUND_TTL
            raise RefNotFound("not found")
        if response.status_code != 200:
            raise ProviderUnavailable(
                f"GitHub answered {response.status_code} for {url.removeprefix(self.api_url)}.",
                hint="Try again in a few minutes.",
            )
        try:
            data = response.json()
        except ValueError as exc:
            raise ProviderUnavailable("GitHub sent an answer binderless could not read.") from exc
        etag = response.headers.get("etag")
        if etag:
            self._etags[url] = (etag, data)
        return data
