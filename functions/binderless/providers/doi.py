"""Any DOI: ``doi/<DOI>``, handed over to the archive provider that serves it.

The DOI is resolved with the doi.org handle API, which names the record's page
without fetching it; the first provider whose ``serves`` accepts that page resolves
it, and its ``ResolvedRepo`` names the real provider (``zenodo``, ``figshare``, ...).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx

from ..errors import BadLink, RefNotFound
from ._archive import SUPPORTED, ArchiveHttp, doi_target, parse_doi
from .base import ArchiveProvider, ResolvedRepo, not_found

__all__ = ["DoiProvider", "DoiTarget"]


class DoiTarget(ArchiveProvider, Protocol):
    """An archive provider that a DOI can be handed over to."""

    archive: str

    def serves(self, url: str) -> bool:
        """Whether ``url``, where a DOI points, is one of this provider's records.
        May ask the host (CKAN and unknown Dataverse installations)."""
        ...

    def resolve_target(self, doi: str, url: str) -> ResolvedRepo:
        """Resolve the record at ``url``, which ``doi`` points to."""
        ...


class DoiProvider:
    prefix = "doi"
    display_name = "DOI"

    def __init__(self, client: httpx.Client, targets: Sequence[DoiTarget], *,
                 clock: Callable[[], float] = time.time) -> None:
        self.targets = tuple(targets)
        self._doi = ArchiveHttp(client, "doi.org", clock)

    def display_config(self) -> dict[str, Any]:
        return {
            "id": self.prefix,
            "displayName": self.display_name,
            "spec": {"validateRegex": r"(doi:|https?://(dx\.)?doi\.org/)?10\.\d+\/(.)+"},
            "repo": {
                "label": "DOI (Zenodo, Figshare, HydroShare, Dataverse or CKAN)",
                "placeholder": "example: 10.5281/zenodo.3242074",
                "urlEncode": False,
            },
            "ref": {"enabled": False},
        }

    def resolve(self, spec: str) -> ResolvedRepo:
        doi = parse_doi(spec, prefix=self.prefix, example="10.5281/zenodo.3242074")
        url = doi_target(self._doi, doi, missing=not_found(self.prefix, spec))
        for target in self.targets:
            if target.serves(url):
                repo = target.resolve_target(doi, url)
                note = f"The DOI {doi} is a {target.archive} record.\n"
                return dataclasses.replace(repo, notes=(*repo.notes, note))
        host = urlsplit(url).hostname or url
        raise BadLink(
            f"The DOI {doi} points to {host}, which no binderless provider serves. "
            f"Supported: {SUPPORTED}."
        )

    def fetch(self, repo: ResolvedRepo, dest: Path, log: Callable[[str], None]) -> None:
        """A resolved DOI names its real provider; download with that one."""
        for target in self.targets:
            if target.prefix == repo.provider:
                target.fetch(repo, dest, log)
                return
        raise RefNotFound(f"binderless cannot download {repo.provider} records.")
