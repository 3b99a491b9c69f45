"""HydroShare: ``hydroshare/<resource id or URL-encoded resource URL>``.

The spec holds a 32-hex resource id. As in BinderHub the resolved ref is
``<id>.v<epoch of the resource's modified date>``; HydroShare keeps no history, so
the persistent spec is the id itself. Files are listed with the ``hsapi`` file list
and downloaded one by one, which gives the resource's ``data/contents`` exactly as
repo2docker keeps them from the resource's bag.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from ..errors import BadLink, ProviderUnavailable
from ._archive import (
    ArchiveBase,
    RemoteFile,
    download_record,
    iso_epoch,
)
from .base import ResolvedRepo, not_found

__all__ = ["HydroshareProvider"]

SITE = "https://www.hydroshare.org"
HOSTS = ("www.hydroshare.org", "hydroshare.org")
RESOURCE_ID = re.compile(r"(?<![0-9a-f])[0-9a-f]{32}(?![0-9a-f])", re.IGNORECASE)
EXAMPLE = "8f7c2f0341ef4180b0dbe97f59130756"
MAX_PAGES = 200


def _https(url: str) -> str:
    """HydroShare's API sometimes names its own pages with http://; fetch them with https."""
    parts = urlsplit(url)
    if parts.scheme == "http" and (parts.hostname or "").lower() in HOSTS:
        return urlunsplit(parts._replace(scheme="https"))
    return url


class HydroshareProvider(ArchiveBase):
    prefix = "hydroshare"
    display_name = "Hydroshare resource"
    archive = "HydroShare"
    repo_label = 'Hydroshare resource id'
    placeholder = f"example: {EXAMPLE}"
    spec_regex = r"[^/]+"
    url_encode = True

    def serves(self, url: str) -> bool:
        parts = urlsplit(url)
        return ((parts.hostname or "").lower() in HOSTS and "/resource/" in parts.path
                and RESOURCE_ID.search(parts.path) is not None)

    def resolve(self, spec: str) -> ResolvedRepo:
        match = RESOURCE_ID.search(unquote(spec))
        if not match:
            raise BadLink(
                f"{spec!r} names no HydroShare resource: use {self.prefix}/<resource id>, "
                f"for example {self.prefix}/{EXAMPLE}."
            )
        return self._resource(match.group(0).lower(), spec)

    def resolve_target(self, doi: str, url: str) -> ResolvedRepo:
        match = RESOURCE_ID.search(urlsplit(url).path)
        if not match:
            raise BadLink(f"{url} is not a HydroShare resource.")
        resource = match.group(0).lower()
        return self._resource(resource, resource)

    def _resource(self, resource: str, spec: str) -> ResolvedRepo:
        meta = self._http.json(f"{SITE}/hsapi/resource/{resource}/scimeta/elements/",
                               missing=not_found(self.prefix, spec))
        try:
            stamp = next(d["start_date"] for d in meta["dates"] if d["type"] == "modified")
            epoch = iso_epoch(str(stamp))
        except (KeyError, TypeError, ValueError, StopIteration) as exc:
            raise self._http.unreadable() from exc
        page = f"{SITE}/resource/{resource}"
        return self.record(spec, page=page, api_url=f"{SITE}/hsapi/resource/{resource}/files/",
                           version_id=f"{resource}.v{epoch}", persistent_spec=resource,
                           slug_key=resource)

    def fetch(self, repo: ResolvedRepo, dest: Path, log: Callable[[str], None]) -> None:
        missing = not_found(self.prefix, repo.spec)
        log(f"Fetching HydroShare resource {repo.resolved_ref}...\n")
        files: list[RemoteFile] = []
        page: str | None = repo.clone_url
        for pages in range(MAX_PAGES + 1):
            if not page:
                break
            if pages == MAX_PAGES:
                raise ProviderUnavailable(f"This HydroShare resource lists more than "
                                          f"{MAX_PAGES} pages of files; binderless gave up.")
            data = self._http.json(_https(page), missing=missing)
            try:
                files += [self._file(item) for item in data["results"]]
                following = data.get("next")
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                raise self._http.unreadable() from exc
            page = str(following) if following and following != page else None
        download_record(self._http, files, dest, log, missing=missing, max_bytes=self.max_bytes)

    @staticmethod
    def _file(item: dict[str, Any]) -> RemoteFile:
        url = _https(str(item["url"]))
        # The path under data/contents/ keeps the resource's folders.
        _, marker, inside = urlsplit(url).path.partition("/data/contents/")
        name = unquote(inside) if marker and inside else str(item["file_name"])
        size = item.get("size")
        return RemoteFile(name=name, url=url, size=int(size) if size is not None else None)
