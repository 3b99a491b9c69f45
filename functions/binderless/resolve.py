"""``binderless resolve``: what a link launches, as JSON, with or without the network."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from .links import DOI_RE, parse_link
from .providers import ProviderRegistry
from .providers.base import OfflineParser

__all__ = ["resolve_link"]


def _launch_url(host: str, provider: str, spec: str, urlpath: str) -> str:
    url = f"{host.rstrip('/')}/v2/{provider}/{spec}"
    return url + ("?urlpath=" + quote(urlpath, safe="/") if urlpath else "")


def resolve_link(text: str, registry: ProviderRegistry, *, server: str,
                 offline: bool) -> dict[str, Any]:
    """Describe the launch ``text`` asks for, as a link on ``server``.

    Offline, only parsing fills the fields; ``resolved_ref`` and ``persistent_url``
    stay ``None``."""
    link = parse_link(text)
    host = server  # the same link, on this server: the host is swapped
    provider = registry.get(link.target.provider)
    registry.policy.check(link.target.provider, link.target.spec)
    result: dict[str, Any] = {
        "provider": link.target.provider,
        "spec": link.target.spec,
        "repo_url": None,
        "ref": None,
        "resolved_ref": None,
        "urlpath": link.urlpath,
        "launch_url": _launch_url(host, link.target.provider, link.target.spec, link.urlpath),
        "persistent_url": None,
    }
    if offline:
        if isinstance(provider, OfflineParser):
            result["repo_url"], result["ref"] = provider.parse_offline(link.target.spec)
        else:
            doi = DOI_RE.match(link.target.spec)
            if doi:
                result["repo_url"] = f"https://doi.org/{doi.group(1)}"
        return result
    repo = registry.resolve(link.target.provider, link.target.spec)
    result.update(
        provider=repo.provider,
        repo_url=repo.repo_url,
        ref=repo.ref,
        resolved_ref=repo.resolved_ref,
        persistent_url=_launch_url(host, repo.provider, repo.persistent_spec, link.urlpath),
    )
    return result
