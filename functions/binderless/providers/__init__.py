"""Repository providers, one module each, registered by link prefix."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from ..errors import BadLink, SpecNotAllowed
from ..settings import Settings
from .base import RepoProvider, ResolvedRepo
from .git import GitProvider
from .github import GitHubProvider

__all__ = ["PROVIDERS", "ProviderRegistry", "RepoProvider", "ResolvedRepo"]

ProviderFactory = Callable[[Settings, httpx.Client], RepoProvider]

PROVIDERS: dict[str, ProviderFactory] = {
    "gh": lambda s, c: GitHubProvider(c, api_url=s.github_api_url, token=s.github_token),
    "git": lambda s, c: GitProvider(allow_local=s.allow_local_repos),
}


class ProviderRegistry:
    """The providers this server offers, built once from settings and one HTTP client."""

    def __init__(self, settings: Settings, client: httpx.Client) -> None:
        self.settings = settings
        self._providers = {prefix: make(settings, client) for prefix, make in PROVIDERS.items()}

    def get(self, prefix: str) -> RepoProvider:
        try:
            return self._providers[prefix]
        except KeyError:
            known = ", ".join(sorted(self._providers))
            raise BadLink(
                f"No provider found for prefix {prefix!r}.",
                hint=f"This server knows: {known}.",
            ) from None

    def resolve(self, prefix: str, spec: str) -> ResolvedRepo:
        provider = self.get(prefix)
        for banned in self.settings.banned_specs:
            if banned and banned in f"{prefix}/{spec}":
                raise SpecNotAllowed(
                    f"Sorry, {spec} is not allowed to launch. Please contact admins for more info!"
                )
        return provider.resolve(spec)

    def display_configs(self) -> list[dict[str, object]]:
        return [p.display_config() for p in self._providers.values()]
