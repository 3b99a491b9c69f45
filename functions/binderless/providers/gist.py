"""GitHub gists: ``gist/<user>/<id>[/<revision>]``.

``HEAD``, ``master``, ``main`` or no revision mean the newest revision.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import unquote

from ..errors import BadLink, ProviderUnavailable, RefNotFound, SpecNotAllowed
from .base import ResolvedRepo, not_found, slugify
from .github import GitHubApi

__all__ = ["GistProvider"]

NEWEST = ("", "HEAD", "master", "main")


class GistProvider:
    prefix = "gist"
    display_name = "GitHub Gist"

    def __init__(self, api: GitHubApi, *, allow_secret: bool = False) -> None:
        self.api = api
        self.allow_secret = allow_secret

    def display_config(self) -> dict[str, Any]:
        return {
            "id": self.prefix,
            "displayName": self.display_name,
            "spec": {"validateRegex": r"[^/]+/[0-9a-f]+(/.*)?"},
            "repo": {"label": "Gist ID (username/gistId) or URL", "placeholder": "user/abc123"},
            "ref": {"enabled": True, "default": "HEAD"},
        }

    @staticmethod
    def parse(spec: str) -> tuple[str, str, str]:
        parts = unquote(spec).strip("/").split("/")
        if len(parts) < 2 or not parts[0] or not re.fullmatch(r"[0-9a-fA-F]{1,64}", parts[1]):
            raise BadLink(f"{spec!r} is not a gist spec: use gist/<user>/<gist id>[/<revision>], "
                          "for example gist/jdoe/8f9c1b2a3d4e5f60718293a4b5c6d7e8.")
        return parts[0], parts[1], "/".join(parts[2:])

    def parse_offline(self, spec: str) -> tuple[str, str]:
        user, gist_id, ref = self.parse(spec)
        return f"https://gist.github.com/{user}/{gist_id}", ref or "HEAD"

    def resolve(self, spec: str) -> ResolvedRepo:
        user, gist_id, ref = self.parse(spec)
        try:
            data = self.api.get_json(f"{self.api.api_url}/gists/{gist_id}")
            versions = [str(h["version"]) for h in data.get("history") or []]
            owner = str((data.get("owner") or {}).get("login", ""))
            public = bool(data.get("public", True))
        except RefNotFound:
            raise RefNotFound(not_found(self.prefix, spec)) from None
        except (AttributeError, KeyError, TypeError) as exc:
            raise ProviderUnavailable("GitHub sent a gist answer binderless could not read.") from exc
        if owner and owner.lower() != user.lower():
            raise RefNotFound(not_found(self.prefix, spec),
                              hint=f"That gist belongs to {owner}, not {user}.")
        if not public and not self.allow_secret:
            raise SpecNotAllowed("Secret gists cannot be launched on this server.")
        if ref in NEWEST:
            if not versions:
                raise RefNotFound(not_found(self.prefix, spec))
            resolved = versions[0]
        elif ref in versions:
            resolved = ref
        else:
            raise RefNotFound(not_found(self.prefix, spec))
        repo_url = f"https://gist.github.com/{user}/{gist_id}"
        return ResolvedRepo(
            provider=self.prefix, spec=spec, repo_url=repo_url, clone_url=repo_url + ".git",
            ref=ref or "HEAD", resolved_ref=resolved,
            persistent_spec=f"{user}/{gist_id}/{resolved}",
            ref_url=f"{repo_url}/{resolved}", slug=slugify(f"{user}-{gist_id[:12]}"),
        )
