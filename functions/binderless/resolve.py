"""``binderless resolve``: what a link launches, as JSON, with or without the network.

The same answer, offline, is what the home page fills its form from
(``GET /api/resolve?link=...&offline=true``), so the page, ``binderless launch`` and
``binderless resolve`` read every link with the one parser, ``links.parse_link``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from .errors import BadLink
from .links import DOI_RE, launch_path, parse_link, split_spec
from .providers import ProviderRegistry
from .providers.base import OfflineParser

__all__ = ["resolve_link", "resolve_query"]

#: Longest link ``/api/resolve`` reads: longer is no link a person pastes.
MAX_LINK = 4096


def _launch_url(host: str, provider: str, spec: str, urlpath: str) -> str:
    url = f"{host.rstrip('/')}/v2/{provider}/{spec}"
    return url + ("?urlpath=" + quote(urlpath, safe="/") if urlpath else "")


def resolve_link(text: str, registry: ProviderRegistry, *, server: str,
                 offline: bool, cwd: str | None = None) -> dict[str, Any]:
    """Describe the launch ``text`` asks for, as a link on ``server``.

    Offline, only parsing fills the fields; ``resolved_ref`` and ``persistent_url``
    stay ``None``. ``repo``, ``path`` and ``path_kind`` are the link as a person writes it
    (the home page's form); ``launch_path`` is the link without a host, with ``labpath``
    kept. ``cwd`` makes a relative folder (``./repo``) absolute."""
    link = parse_link(text, cwd=cwd)
    host = server  # the same link, on this server: the host is swapped
    provider = registry.get(link.target.provider)
    registry.policy.check(link.target.provider, link.target.spec)
    repo, ref = split_spec(link.target.provider, link.target.spec)
    result: dict[str, Any] = {
        "provider": link.target.provider,
        "spec": link.target.spec,
        "repo": repo,
        "repo_url": None,
        "ref": None,
        "resolved_ref": None,
        "urlpath": link.urlpath,
        "path": link.path,
        "path_kind": link.path_kind,
        "launch_path": launch_path(link),
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
            result["ref"] = ref or None
        return result
    resolved = registry.resolve(link.target.provider, link.target.spec)
    result.update(
        provider=resolved.provider,
        repo_url=resolved.repo_url,
        ref=resolved.ref,
        resolved_ref=resolved.resolved_ref,
        persistent_url=_launch_url(host, resolved.provider, resolved.persistent_spec,
                                   link.urlpath),
    )
    return result


def resolve_query(query: Mapping[str, str], registry: ProviderRegistry, *, server: str,
                  cwd: str | None = None) -> dict[str, Any]:
    """``GET /api/resolve?link=...`` of the local server: always offline (it answers the
    home page as a person types, and must not reach a repository host per keystroke)."""
    link = query.get("link", "")
    if not link:
        raise BadLink("Pass the link to resolve as ?link=...")
    if len(link) > MAX_LINK:
        raise BadLink(f"The link is longer than {MAX_LINK} characters.")
    return resolve_link(link, registry, server=query.get("server") or server,
                        offline=True, cwd=cwd)
