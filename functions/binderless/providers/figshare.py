"""Figshare: ``figshare/<DOI>``, such as ``figshare/10.6084/m9.figshare.9782777.v1``.

The DOI names the article and, with a ``.vN`` suffix, its version; without one the
newest version is asked of the Figshare API, as BinderHub does. The resolved ref is
``<article>.v<version>`` and the persistent spec the DOI with that version.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from ..errors import BadLink, RefNotFound
from ._archive import (
    ArchiveBase,
    RemoteFile,
    download_record,
    parse_doi,
)
from .base import ResolvedRepo, not_found

__all__ = ["FigshareProvider"]

API = "https://api.figshare.com/v2"
EXAMPLE = "10.6084/m9.figshare.9782777.v1"
# The DOI suffix ends in the article id, then maybe the version: m9.figshare.9782777.v1
DOI_SUFFIX = re.compile(r"(?P<base>.+\.(?P<article>\d+))(?:\.v(?P<version>\d+))?", re.IGNORECASE)
# Article pages: /articles/<type>/<title>/<id>[/<version>] or /articles/<title>/<id>[/<version>]
ARTICLE_PATH = re.compile(r"/articles/(?:[^/]+/){1,2}(?P<article>\d+)(?:/(?P<version>\d+))?/?")


class FigshareProvider(ArchiveBase):
    prefix = "figshare"
    display_name = "FigShare DOI"
    archive = "Figshare"
    repo_label = 'FigShare DOI'
    placeholder = f"example: {EXAMPLE}"

    def serves(self, url: str) -> bool:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        return (host == "figshare.com" or host.endswith(".figshare.com")) and bool(
            ARTICLE_PATH.fullmatch(parts.path))

    def resolve(self, spec: str) -> ResolvedRepo:
        doi = parse_doi(spec, prefix=self.prefix, example=EXAMPLE)
        match = DOI_SUFFIX.fullmatch(doi.partition("/")[2])
        if not match:
            raise BadLink(
                f"{spec!r} is not a Figshare DOI: use {self.prefix}/<DOI ending in the article "
                f"number>, for example {self.prefix}/{EXAMPLE}."
            )
        base = f"{doi.partition('/')[0]}/{match['base']}"
        return self._article(match["article"], match["version"], spec=spec, doi_base=base,
                             check_doi=True)

    def resolve_target(self, doi: str, url: str) -> ResolvedRepo:
        page = ARTICLE_PATH.fullmatch(urlsplit(url).path)
        if page is None:
            raise BadLink(f"{url} is not a Figshare article.")
        own = DOI_SUFFIX.fullmatch(doi.partition("/")[2])
        if own is not None and own["article"] != page["article"]:
            own = None  # a DOI of another shape: it cannot be pinned by its suffix
        version = page["version"] or (own["version"] if own else None)
        base = f"{doi.partition('/')[0]}/{own['base']}" if own else None
        return self._article(page["article"], version, spec=doi, doi_base=base, check_doi=False)

    def _article(self, article: str, version: str | None, *, spec: str, doi_base: str | None,
                 check_doi: bool) -> ResolvedRepo:
        missing = not_found(self.prefix, spec)
        if version is None:
            version = self._latest(article, missing)
        url = f"{API}/articles/{article}/versions/{version}"
        data = self._http.json(url, missing=missing)
        try:
            article_doi = str(data.get("doi") or "")
            page = str(data.get("figshare_url") or data.get("url_public_html") or "")
        except AttributeError as exc:
            raise self._http.unreadable() from exc
        base = re.sub(r"\.v\d+$", "", article_doi, flags=re.IGNORECASE)
        if check_doi and base and doi_base and base.lower() != doi_base.lower():
            # Any DOI ending in digits would name some article; make sure it is this one.
            raise RefNotFound(missing, hint=f"Figshare article {article} has the DOI "
                                            f"{article_doi}, not {doi_base}.")
        persistent = f"{doi_base or base}.v{version}" if (doi_base or base) else spec
        page = page or f"https://doi.org/{persistent}"
        return self.record(spec, page=page, api_url=url, version_id=f"{article}.v{version}",
                           persistent_spec=persistent, slug_key=str(article))

    def _latest(self, article: str, missing: str) -> str:
        versions = self._http.json(f"{API}/articles/{article}/versions", missing=missing)
        try:
            numbers = [int(v["version"]) for v in versions]
        except (KeyError, TypeError, ValueError) as exc:
            raise self._http.unreadable() from exc
        if not numbers:
            raise RefNotFound(missing, hint=f"Figshare article {article} has no public version.")
        return str(max(numbers))

    def fetch(self, repo: ResolvedRepo, dest: Path, log: Callable[[str], None]) -> None:
        missing = not_found(self.prefix, repo.spec)
        log(f"Fetching Figshare article {repo.resolved_ref}...\n")
        data = self._http.json(repo.clone_url, missing=missing)
        try:
            files = [
                RemoteFile(name=str(f["name"]), url=str(f["download_url"]), size=int(f["size"]))
                for f in data["files"]
                if not f.get("is_link_only")
            ]
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise self._http.unreadable() from exc
        download_record(self._http, files, dest, log, missing=missing, unpack_lone_zip=True,
                        max_bytes=self.max_bytes)
