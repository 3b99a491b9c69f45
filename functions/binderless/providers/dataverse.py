"""Dataverse: ``dataverse/<DOI>``, such as ``dataverse/10.7910/DVN/TJCLKP``.

As in BinderHub, doi.org names the installation and ``/api/datasets/:persistentId``
the dataset; the resolved ref is ``<dataset id>.v<major>.<minor>`` of its latest
published version, and exactly that version is downloaded. A file's DOI launches
its dataset, as in repo2docker. The persistent spec is the dataset's DOI: Dataverse
links carry no version.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from ..errors import BadLink, ProviderUnavailable, RefNotFound
from ._archive import (
    ArchiveBase,
    RemoteFile,
    doi_target,
    download_record,
    parse_doi,
)
from .base import ResolvedRepo, not_found

__all__ = ["INSTALLATIONS", "DataverseProvider"]

EXAMPLE = "10.7910/DVN/TJCLKP"
# Well-known installations; repo2docker reads the full list from IQSS at start-up.
# Other hosts are recognised by asking their /api/info/version.
INSTALLATIONS = frozenset({
    "dataverse.harvard.edu", "demo.dataverse.org", "dataverse.nl", "dataverse.no",
    "borealisdata.ca", "dataverse.scholarsportal.info", "data.qdr.syr.edu",
    "dataverse.unc.edu", "researchdata.ntu.edu.sg", "data.sciencespo.fr", "rdr.kuleuven.be",
    "entrepot.recherche.data.gouv.fr", "darus.uni-stuttgart.de", "edmond.mpg.de",
    "dataverse.csuc.cat", "heidata.uni-heidelberg.de", "data.aussda.at", "dataverse.tdl.org",
    "dataverse.lib.virginia.edu", "archive.data.jhu.edu", "dataverse.ird.fr",
    "dataverse.cirad.fr", "data.inrae.fr", "repod.icm.edu.pl", "data.fz-juelich.de",
    "data.goettingen-research-online.de", "dataverse.ada.edu.au", "dataverse.icrisat.org",
    "data.cimmyt.org", "dataverse.fiocruz.br", "www.sodha.be",
})
# The pages a Dataverse DOI points to: a dataset's, or one of its files'.
DATASET_PAGES = ("/citation", "/dataset.xhtml")
FILE_PAGES = ("/file.xhtml", "/api/access/datafile/")


class DataverseProvider(ArchiveBase):
    prefix = "dataverse"
    display_name = "Dataverse DOI"
    archive = "Dataverse"
    repo_label = 'Dataverse DOI'
    placeholder = f"example: {EXAMPLE}"

    def serves(self, url: str) -> bool:
        parts = urlsplit(url)
        if not parts.path.startswith(DATASET_PAGES + FILE_PAGES):
            return False
        if (parts.hostname or "").lower() in INSTALLATIONS:
            return True
        try:
            answer = self._http.json(f"https://{parts.netloc}/api/info/version", missing="")
        except (RefNotFound, ProviderUnavailable):
            return False
        return isinstance(answer, dict) and answer.get("status") == "OK"

    def resolve(self, spec: str) -> ResolvedRepo:
        doi = parse_doi(spec, prefix=self.prefix, example=EXAMPLE)
        url = doi_target(self._doi, doi, missing=not_found(self.prefix, spec))
        if not urlsplit(url).path.startswith(DATASET_PAGES + FILE_PAGES):
            raise BadLink(f"The DOI {doi} points to {urlsplit(url).hostname or url}, "
                          "not to a Dataverse dataset.", hint=f"Try /v2/doi/{doi} instead.")
        return self._dataset(url, doi, spec)

    def resolve_target(self, doi: str, url: str) -> ResolvedRepo:
        return self._dataset(url, doi, doi)

    def _dataset(self, url: str, doi: str, spec: str) -> ResolvedRepo:
        parts = urlsplit(url)
        base = f"https://{parts.netloc}"
        missing = not_found(self.prefix, spec)
        pid = parse_qs(parts.query).get("persistentId", [f"doi:{doi}"])[0]
        if parts.path.startswith(FILE_PAGES[0]):
            pid = self._dataset_of_file(base, pid, missing)
        elif parts.path.startswith(FILE_PAGES[1]):
            pid = self._dataset_of_file(base, parts.path.rstrip("/").rsplit("/", 1)[-1], missing)
        ambiguous = parts.path.startswith("/citation")  # a dataset's or a file's citation
        response = self._http.get(self._dataset_api(base, pid), missing=missing,
                                  keep_missing=ambiguous)
        if response.status_code in (404, 410):
            pid = self._dataset_of_file(base, pid, missing)
            response = self._http.get(self._dataset_api(base, pid), missing=missing)
        try:
            data = self._http.decode(response)["data"]
            latest = data["latestVersion"]
            version = f"{int(latest['versionNumber'])}.{int(latest['versionMinorNumber'])}"
            dataset_id = int(data["id"])
            protocol, authority = str(data["protocol"]), str(data["authority"])
            identifier = str(data["identifier"])
        except (KeyError, TypeError, ValueError) as exc:
            raise self._http.unreadable() from exc
        page = f"{base}/dataset.xhtml?persistentId={protocol}:{authority}/{identifier}"
        return self.record(spec, page=page,
                           api_url=f"{base}/api/datasets/{dataset_id}/versions/{version}",
                           version_id=f"{dataset_id}.v{version}",
                           persistent_spec=f"{authority}/{identifier}", slug_key=identifier,
                           ref_url=f"{page}&version={version}")

    @staticmethod
    def _dataset_api(base: str, pid: str) -> str:
        return f"{base}/api/datasets/:persistentId?{urlencode({'persistentId': pid})}"

    def _dataset_of_file(self, base: str, file_id: str, missing: str) -> str:
        """The persistent id of the dataset a file (by number or DOI) belongs to."""
        if file_id.isdigit():
            url = f"{base}/api/files/{file_id}?returnDatasetVersion=true"
        else:
            query = urlencode({"persistentId": file_id, "returnDatasetVersion": "true"})
            url = f"{base}/api/files/:persistentId?{query}"
        answer = self._http.json(url, missing=missing)
        try:
            return str(answer["data"]["datasetVersion"]["datasetPersistentId"])
        except (KeyError, TypeError) as exc:
            raise self._http.unreadable() from exc

    def fetch(self, repo: ResolvedRepo, dest: Path, log: Callable[[str], None]) -> None:
        missing = not_found(self.prefix, repo.spec)
        parts = urlsplit(repo.clone_url)
        base = f"{parts.scheme}://{parts.netloc}"
        log(f"Fetching Dataverse dataset {repo.persistent_spec}, version "
            f"{repo.resolved_ref.partition('.v')[2]}...\n")
        answer = self._http.json(repo.clone_url, missing=missing)
        files: list[RemoteFile] = []
        try:
            for entry in answer["data"]["files"]:
                if entry.get("restricted"):
                    log(f"Skipping {entry.get('label')}: it is restricted.\n")
                    continue
                files.append(self._file(base, entry))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise self._http.unreadable() from exc
        download_record(self._http, files, dest, log, missing=missing, max_bytes=self.max_bytes)

    @staticmethod
    def _file(base: str, entry: dict[str, Any]) -> RemoteFile:
        data_file = entry["dataFile"]
        # Tabular files are stored converted; ask for (and name) the uploaded original.
        original = data_file.get("originalFileName")
        name = str(original or entry["label"])
        size = data_file.get("originalFileSize") if original else data_file.get("filesize")
        folder = entry.get("directoryLabel")
        return RemoteFile(
            name=f"{folder}/{name}" if folder else name,
            url=f"{base}/api/access/datafile/{int(data_file['id'])}?format=original",
            size=int(size) if size is not None else None,
        )
