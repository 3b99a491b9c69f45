"""CKAN: ``ckan/<URL-encoded dataset URL>``, such as
``ckan/https%3A%2F%2Fdemo.ckan.org%2Fdataset%2Fsample-dataset-1``.

As in BinderHub, the dataset (or, with ``?activity_id=`` or ``/history/<id>``, one
past state of it) is read with ``package_show`` or ``activity_data_show``; the resolved
ref is ``<dataset>.v<epoch of metadata_modified>``. Where the site keeps activities,
the persistent spec names the newest one, so a re-launch gets the same resources.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit

import httpx

from ..errors import BadLink, ProviderUnavailable, RefNotFound
from ._archive import (
    ArchiveBase,
    RemoteFile,
    download_record,
    iso_epoch,
)
from .base import ResolvedRepo, not_found

__all__ = ["CkanProvider", "DatasetUrl"]

EXAMPLE = "https://demo.ckan.org/dataset/my-sample-dataset-001"


@dataclass(frozen=True)
class DatasetUrl:
    """A CKAN dataset page: the site (with any path prefix), the dataset, an activity."""

    site: str
    dataset: str
    activity: str | None

    @classmethod
    def parse(cls, url: str) -> DatasetUrl | None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            return None
        # CKAN may live under a path prefix: https://host/data/dataset/<name>
        prefix, marker, rest = parts.path.partition("/dataset/")
        segments = rest.split("/")
        if not marker or not segments[0]:
            return None
        activity = None
        if "history" in segments[1:-1]:
            activity = segments[segments.index("history", 1) + 1]
        elif parse_qs(parts.query).get("activity_id"):
            activity = parse_qs(parts.query)["activity_id"][0]
        return cls(f"{parts.scheme}://{parts.netloc}{prefix}", segments[0], activity or None)

    @property
    def api(self) -> str:
        return f"{self.site}/api/3/action/"

    @property
    def page(self) -> str:
        return f"{self.site}/dataset/{self.dataset}"

    @property
    def show_url(self) -> str:
        if self.activity:
            query = urlencode({"id": self.activity, "object_type": "package"})
            return f"{self.api}activity_data_show?{query}"
        return f"{self.api}package_show?{urlencode({'id': self.dataset})}"


class CkanProvider(ArchiveBase):
    prefix = "ckan"
    display_name = "CKAN dataset"
    archive = "CKAN"
    repo_label = 'CKAN dataset URL'
    placeholder = EXAMPLE
    spec_regex = r"[^/]+"
    url_encode = True

    def serves(self, url: str) -> bool:
        """A dataset page on a site that answers ``status_show``, as repo2docker checks."""
        target = DatasetUrl.parse(url)
        if target is None:
            return False
        try:
            answer = self._http.json(f"{target.api}status_show", missing="")
        except (RefNotFound, ProviderUnavailable):
            return False
        return isinstance(answer, dict) and answer.get("success") is True

    def resolve(self, spec: str) -> ResolvedRepo:
        target = DatasetUrl.parse(unquote(spec).strip())
        if target is None:
            raise BadLink(
                f"{spec!r} is not a CKAN dataset URL: use {self.prefix}/<URL-encoded dataset "
                f"URL>, for example {self.prefix}/{quote(EXAMPLE, safe='')}."
            )
        missing = not_found(self.prefix, spec)
        response = self._http.get(target.show_url, missing=missing, keep_missing=True)
        if response.status_code in (404, 410):
            raise RefNotFound(missing, hint=self._why_missing(response, target))
        try:
            answer = self._http.decode(response)
            if answer.get("success") is not True:
                raise RefNotFound(missing)
            epoch = iso_epoch(str(answer["result"]["metadata_modified"]))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise self._http.unreadable() from exc
        pinned, persistent = target, spec
        if target.activity is None:
            activity = self._newest_activity(target)
            if activity:
                pinned = DatasetUrl(target.site, target.dataset, activity)
        ref_url = target.page + (f"?activity_id={pinned.activity}" if pinned.activity else "")
        if pinned is not target:
            persistent = quote(ref_url, safe="")
        return self.record(spec, page=target.page, api_url=pinned.show_url,
                           version_id=f"{target.dataset}.v{epoch}", persistent_spec=persistent,
                           slug_key=target.dataset, ref_url=ref_url)

    def resolve_target(self, doi: str, url: str) -> ResolvedRepo:
        return self.resolve(quote(url, safe=""))

    @staticmethod
    def _why_missing(response: httpx.Response, target: DatasetUrl) -> str:
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if isinstance(answer, dict) and "success" in answer:
            return f"The CKAN site {target.site} has no public dataset {target.dataset!r}."
        return f"{target.site} did not answer like a CKAN site."

    def _newest_activity(self, target: DatasetUrl) -> str | None:
        """The id of the dataset's newest activity, or None where the site keeps none."""
        query = urlencode({"id": target.dataset, "limit": 1})
        try:
            answer = self._http.json(f"{target.api}package_activity_list?{query}", missing="")
            return str(answer["result"][0]["id"]) if answer.get("success") is True else None
        except (RefNotFound, ProviderUnavailable, KeyError, IndexError, TypeError,
                AttributeError):
            # CKAN 2.10 made activities a plugin; without it the launch is not pinned.
            return None

    def fetch(self, repo: ResolvedRepo, dest: Path, log: Callable[[str], None]) -> None:
        missing = not_found(self.prefix, repo.spec)
        log(f"Fetching CKAN dataset {repo.resolved_ref}...\n")
        answer = self._http.json(repo.clone_url, missing=missing)
        files: list[RemoteFile] = []
        taken: set[str] = set()
        try:
            for resource in answer["result"]["resources"]:
                url = str(resource.get("url") or "")
                if not url.startswith(("https://", "http://")):
                    continue  # a resource without a file, or a relative link
                name = unquote(urlsplit(url).path.rsplit("/", 1)[-1]) or str(resource["id"])
                if name in taken:
                    name = f"{resource['id']}-{name}"
                taken.add(name)
                size = resource.get("size")
                files.append(RemoteFile(name=name, url=url, exact=False,
                                        size=size if isinstance(size, int) else None))
        except (KeyError, TypeError, AttributeError) as exc:
            raise self._http.unreadable() from exc
        download_record(self._http, files, dest, log, missing=missing, max_bytes=self.max_bytes)
