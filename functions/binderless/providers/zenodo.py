"""Zenodo: ``zenodo/<DOI>``, such as ``zenodo/10.5281/zenodo.3242074``.

As in BinderHub, doi.org names the record and its id is the last path segment. The
Zenodo API then confirms the record; a concept DOI (all versions) lands on the newest
version, so the resolved ref is that record's id and the persistent spec its own DOI.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from ..errors import BadLink
from ._archive import (
    ArchiveBase,
    RemoteFile,
    doi_target,
    download_record,
    parse_doi,
)
from .base import ResolvedRepo, not_found

__all__ = ["ZenodoProvider"]

# Record pages by host, and the DOI prefix each host mints.
SITES = {
    "zenodo.org": ("https://zenodo.org", "10.5281"),
    "www.zenodo.org": ("https://zenodo.org", "10.5281"),
    "sandbox.zenodo.org": ("https://sandbox.zenodo.org", "10.5072"),
}
# /record/1, /records/1, /doi/10.5281/zenodo.1 (concept DOIs), /api/records/1
RECORD_PATH = re.compile(r"/(?:api/)?(?:records?/|doi/.*zenodo\.)(\d+)/?")
EXAMPLE = "10.5281/zenodo.3242074"


class ZenodoProvider(ArchiveBase):
    prefix = "zenodo"
    display_name = "Zenodo DOI"
    archive = "Zenodo"
    repo_label = 'Zenodo DOI'
    placeholder = f"example: {EXAMPLE}"

    @staticmethod
    def _locate(url: str) -> tuple[str, str, str] | None:
        """``(site, DOI prefix, record id)`` of a Zenodo record URL, else None."""
        parts = urlsplit(url)
        site = SITES.get((parts.hostname or "").lower())
        match = RECORD_PATH.fullmatch(parts.path)
        if site is None or match is None:
            return None
        return site[0], site[1], match.group(1)

    def serves(self, url: str) -> bool:
        return self._locate(url) is not None

    def resolve(self, spec: str) -> ResolvedRepo:
        doi = parse_doi(spec, prefix=self.prefix, example=EXAMPLE)
        url = doi_target(self._doi, doi, missing=not_found(self.prefix, spec))
        if not self.serves(url):
            raise BadLink(f"The DOI {doi} points to {urlsplit(url).hostname or url}, "
                          "not to a Zenodo record.", hint=f"Try /v2/doi/{doi} instead.")
        return self._record(url, spec)

    def resolve_target(self, doi: str, url: str) -> ResolvedRepo:
        return self._record(url, doi)

    def _record(self, url: str, spec: str) -> ResolvedRepo:
        located = self._locate(url)
        if located is None:
            raise BadLink(f"{url} is not a Zenodo record.")
        site, doi_prefix, record_id = located
        record = self._http.json(f"{site}/api/records/{record_id}",
                                 missing=not_found(self.prefix, spec))
        try:
            resolved = str(record["id"])
            version_doi = str(record.get("doi") or f"{doi_prefix}/zenodo.{resolved}")
            page = str(record.get("links", {}).get("self_html") or f"{site}/records/{resolved}")
        except (KeyError, TypeError, AttributeError) as exc:
            raise self._http.unreadable() from exc
        if not resolved.isdigit():
            raise self._http.unreadable()
        return self.record(spec, page=page, api_url=f"{site}/api/records/{resolved}",
                           version_id=resolved, persistent_spec=version_doi, slug_key=resolved)

    def fetch(self, repo: ResolvedRepo, dest: Path, log: Callable[[str], None]) -> None:
        missing = not_found(self.prefix, repo.spec)
        log(f"Fetching Zenodo record {repo.resolved_ref}...\n")
        record = self._http.json(repo.clone_url, missing=missing)
        try:
            listing = self._http.json(str(record["links"]["files"]), missing=missing)
            files = [
                RemoteFile(name=str(entry["key"]), url=str(entry["links"]["content"]),
                           size=int(entry["size"]))
                for entry in listing["entries"]
            ]
        except (KeyError, TypeError, ValueError) as exc:
            raise self._http.unreadable() from exc
        download_record(self._http, files, dest, log, missing=missing, unpack_lone_zip=True,
                        max_bytes=self.max_bytes)
