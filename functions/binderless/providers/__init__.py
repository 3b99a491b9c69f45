"""Repository providers, one module each, registered by link prefix."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

import httpx

from ..errors import BadLink
from ..policy import SpecPolicy
from ..settings import Settings
from ..urlguard import UrlGuard
from .base import RepoProvider, ResolvedRepo
from .ckan import CkanProvider
from .codecommit import CodeCommitProvider
from .dataverse import DataverseProvider
from .doi import DoiProvider
from .figshare import FigshareProvider
from .gist import GistProvider
from .git import GitProvider
from .github import GitHubApi, GitHubProvider
from .gitlab import GitLabProvider
from .hydroshare import HydroshareProvider
from .zenodo import ZenodoProvider

__all__ = ["PROVIDERS", "ProviderRegistry", "RepoProvider", "ResolvedRepo"]

ProviderFactory = Callable[[Settings, httpx.Client], RepoProvider]



def _git_guard(settings: Settings) -> UrlGuard:
    schemes = ("https", "git") if settings.allow_git_protocol else ("https",)
    return UrlGuard(enforce=settings.enforce_url_guard, schemes=schemes,
                    allowed_hosts=settings.allowed_git_hosts)


def _codecommit(settings: Settings, _client: httpx.Client) -> RepoProvider:
    if settings.mode != "aws":
        return CodeCommitProvider(None)  # the local mode creates no AWS client

    def client(region: str) -> object:
        import boto3

        return boto3.client("codecommit", region_name=region)

    return CodeCommitProvider(client)


PROVIDERS: dict[str, ProviderFactory] = {
    "gh": lambda s, c: GitHubProvider(c, api_url=s.github_api, token=s.github_token,
                                      host=s.github_host),
    "gist": lambda s, c: GistProvider(
        GitHubApi(c, api_url=s.github_api, token=s.github_token, clock=time.time),
        allow_secret=s.allow_secret_gists),
    "gl": lambda s, c: GitLabProvider(c, host=s.gitlab_host, token=s.gitlab_token),
    "git": lambda s, c: GitProvider(allow_local=s.allow_local_repos, guard=_git_guard(s)),
    "codecommit": _codecommit,
    "zenodo": lambda s, c: ZenodoProvider(c),
    "figshare": lambda s, c: FigshareProvider(c),
    "hydroshare": lambda s, c: HydroshareProvider(c),
    "dataverse": lambda s, c: DataverseProvider(c),
    "ckan": lambda s, c: CkanProvider(c),
    # Any DOI, handed over to the archive that serves it (the order is the order of checks).
    "doi": lambda s, c: DoiProvider(c, [ZenodoProvider(c), FigshareProvider(c),
                                        HydroshareProvider(c), DataverseProvider(c),
                                        CkanProvider(c)]),
}


class ProviderRegistry:
    """The providers this server offers, built once from settings and one HTTP client."""

    def __init__(self, settings: Settings, client: httpx.Client,
                 overrides: Mapping[str, RepoProvider] | None = None) -> None:
        self.settings = settings
        self.policy = SpecPolicy(settings)
        self._providers = {prefix: make(settings, client) for prefix, make in PROVIDERS.items()}
        self._providers.update(overrides or {})

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
        self.policy.check(prefix, spec)
        repo = provider.resolve(spec)
        if repo.provider != prefix:
            # A hand-over (doi -> zenodo, ...) must not get around the real provider's policy.
            self.policy.check(repo.provider, repo.spec)
        return repo

    def display_configs(self) -> list[dict[str, object]]:
        allowed = self.settings.allowed_providers
        return [p.display_config() for prefix, p in self._providers.items()
                if not allowed or prefix in allowed]
