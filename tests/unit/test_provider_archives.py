"""The data-archive providers (zenodo, figshare, hydroshare, dataverse, ckan) and ``doi``.

Every answer is a hand-written recording in ``tests/fixtures/http/<provider>/``; nothing
leaves the machine. The clock stands still at 1,000,000 s so rate-limit waits are exact.
"""

from __future__ import annotations

import io
import re
import stat
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from binderless.errors import BadLink, ProviderUnavailable, RefNotFound, SpecNotAllowed
from binderless.providers import PROVIDERS
from binderless.providers._archive import human_size, parse_doi, retry_minutes
from binderless.providers.base import ResolvedRepo, not_found
from binderless.providers.ckan import CkanProvider
from binderless.providers.dataverse import DataverseProvider
from binderless.providers.doi import DoiProvider
from binderless.providers.figshare import FigshareProvider
from binderless.providers.hydroshare import HydroshareProvider
from binderless.providers.zenodo import ZenodoProvider
from binderless.settings import Settings
from binderless.urlguard import UrlGuard, guarded_client
from tests.http_replay import Replay

Routes = dict[str, str | Callable[[httpx.Request], httpx.Response]]

NOW = 1_000_000.0
CSV = "year,level_m\n2019,3.21\n2020,3.48\n"
ENV = "name: river\ndependencies:\n  - python=3.11\n  - pandas\n"

HANDLE = "https://doi.org/api/handles/"
ZENODO = "https://zenodo.org/api/records/"
FIGSHARE = "https://api.figshare.com/v2/articles/9782777"
FIGSHARE_FILES = "https://ndownloader.figshare.com/files/"
HS = "b8f6eae9d89241cf8b5904033460af61"
HS_API = f"https://www.hydroshare.org/hsapi/resource/{HS}"
HS_FILES = f"https://www.hydroshare.org/resource/{HS}/data/contents/"
HARVARD = "https://dataverse.harvard.edu"
DV_DATASET = f"{HARVARD}/api/datasets/:persistentId?persistentId=doi:10.7910/DVN/TJCLKP"
DV_VERSION = f"{HARVARD}/api/datasets/3035124/versions/3.0"
CKAN_API = "https://demo.ckan.org/api/3/action/"
CKAN_URL = "https://demo.ckan.org/dataset/sample-dataset-1"
CKAN_SPEC = quote(CKAN_URL, safe="")
CKAN_PKG = "https://demo.ckan.org/dataset/c322307a-b871-44fe-a602-32ee8437ff04/resource/"
ACTIVITY = "5d6e7f80-91a2-4b3c-8d4e-5f6a7b8c9d0e"
ACTIVITY_LIST = f"{CKAN_API}package_activity_list?id=sample-dataset-1&limit=1"

ARCHIVES: dict[str, Callable[..., Any]] = {
    "zenodo": ZenodoProvider,
    "figshare": FigshareProvider,
    "hydroshare": HydroshareProvider,
    "dataverse": DataverseProvider,
    "ckan": CkanProvider,
}


def make(prefix: str, routes: Routes, **kw: Any) -> Any:
    return ARCHIVES[prefix](Replay(routes).client(), clock=lambda: NOW, **kw)


def doi_provider(routes: Routes) -> tuple[DoiProvider, Replay]:
    replay = Replay(routes)
    client = replay.client()
    targets = [cls(client, clock=lambda: NOW) for cls in ARCHIVES.values()]
    return DoiProvider(client, targets, clock=lambda: NOW), replay


# ----------------------------------------------------------------------------- resolving


@dataclass
class Case:
    prefix: str
    spec: str
    routes: Routes
    resolved_ref: str
    persistent_spec: str
    repo_url: str
    clone_url: str
    slug: str
    extra: dict[str, str] = field(default_factory=dict)


RESOLVE_CASES = {
    "zenodo": Case(
        "zenodo", "10.5281/zenodo.3242074",
        {HANDLE + "10.5281/zenodo.3242074": "doi/handle-zenodo.json",
         ZENODO + "3242074": "zenodo/record-3242074.json"},
        "3242074", "10.5281/zenodo.3242074", "https://zenodo.org/records/3242074",
        ZENODO + "3242074", "zenodo-3242074"),
    "zenodo-concept-doi-lands-on-newest-version": Case(
        "zenodo", "10.5281/zenodo.3242073",
        {HANDLE + "10.5281/zenodo.3242073": "doi/handle-zenodo-concept.json",
         ZENODO + "3242073": "zenodo/record-concept-redirect.json",
         ZENODO + "3242074": "zenodo/record-3242074.json"},
        "3242074", "10.5281/zenodo.3242074", "https://zenodo.org/records/3242074",
        ZENODO + "3242074", "zenodo-3242074"),
    "figshare-versioned": Case(
        "figshare", "10.6084/m9.figshare.9782777.v1",
        {FIGSHARE + "/versions/1": "figshare/article-9782777-v1.json"},
        "9782777.v1", "10.6084/m9.figshare.9782777.v1",
        "https://figshare.com/articles/software/binder-examples_requirements/9782777",
        FIGSHARE + "/versions/1", "figshare-9782777"),
    "figshare-latest-version": Case(
        "figshare", "10.6084%2Fm9.figshare.9782777",
        {FIGSHARE + "/versions": "figshare/versions-9782777.json",
         FIGSHARE + "/versions/2": "figshare/article-9782777-v2.json"},
        "9782777.v2", "10.6084/m9.figshare.9782777.v2",
        "https://figshare.com/articles/software/binder-examples_requirements/9782777",
        FIGSHARE + "/versions/2", "figshare-9782777"),
    "hydroshare-id": Case(
        "hydroshare", HS, {HS_API + "/scimeta/elements/": "hydroshare/scimeta.json"},
        f"{HS}.v1569427757", HS, f"https://www.hydroshare.org/resource/{HS}",
        HS_API + "/files/", f"hydroshare-{HS}"),
    "hydroshare-url": Case(
        "hydroshare", quote(f"https://www.hydroshare.org/resource/{HS}/", safe=""),
        {HS_API + "/scimeta/elements/": "hydroshare/scimeta.json"},
        f"{HS}.v1569427757", HS, f"https://www.hydroshare.org/resource/{HS}",
        HS_API + "/files/", f"hydroshare-{HS}"),
    "dataverse": Case(
        "dataverse", "doi:10.7910/DVN/TJCLKP",
        {HANDLE + "10.7910/DVN/TJCLKP": "doi/handle-dataverse.json",
         DV_DATASET: "dataverse/dataset-TJCLKP.json"},
        "3035124.v3.0", "10.7910/DVN/TJCLKP",
        f"{HARVARD}/dataset.xhtml?persistentId=doi:10.7910/DVN/TJCLKP", DV_VERSION,
        "dataverse-dvn-tjclkp",
        {"ref_url": f"{HARVARD}/dataset.xhtml?persistentId=doi:10.7910/DVN/TJCLKP&version=3.0"}),
    "dataverse-file-doi-launches-its-dataset": Case(
        "dataverse", "10.7910/DVN/6ZXAGT/3YRRYJ",
        {HANDLE + "10.7910/DVN/6ZXAGT/3YRRYJ": "doi/handle-dataverse-file.json",
         f"{HARVARD}/api/files/:persistentId?persistentId=doi:10.7910/DVN/6ZXAGT/3YRRYJ"
         "&returnDatasetVersion=true": "dataverse/file-3YRRYJ.json",
         f"{HARVARD}/api/datasets/:persistentId?persistentId=doi:10.7910/DVN/6ZXAGT":
             "dataverse/dataset-6ZXAGT.json"},
        "3035200.v3.0", "10.7910/DVN/6ZXAGT",
        f"{HARVARD}/dataset.xhtml?persistentId=doi:10.7910/DVN/6ZXAGT",
        f"{HARVARD}/api/datasets/3035200/versions/3.0", "dataverse-dvn-6zxagt",
        {"ref_url": f"{HARVARD}/dataset.xhtml?persistentId=doi:10.7910/DVN/6ZXAGT&version=3.0"}),
    "ckan-pinned-to-newest-activity": Case(
        "ckan", CKAN_SPEC,
        {CKAN_API + "package_show?id=sample-dataset-1": "ckan/package-show.json",
         ACTIVITY_LIST: "ckan/activity-list.json"},
        "sample-dataset-1.v1687341158", quote(f"{CKAN_URL}?activity_id={ACTIVITY}", safe=""),
        CKAN_URL, f"{CKAN_API}activity_data_show?id={ACTIVITY}&object_type=package",
        "ckan-sample-dataset-1", {"ref_url": f"{CKAN_URL}?activity_id={ACTIVITY}"}),
    "ckan-without-activities-is-not-pinned": Case(
        "ckan", CKAN_SPEC,
        {CKAN_API + "package_show?id=sample-dataset-1": "ckan/package-show.json",
         ACTIVITY_LIST: "ckan/activity-unknown.json"},
        "sample-dataset-1.v1687341158", CKAN_SPEC, CKAN_URL,
        f"{CKAN_API}package_show?id=sample-dataset-1", "ckan-sample-dataset-1"),
    "ckan-history-url": Case(
        "ckan", quote(f"{CKAN_URL}/history/{ACTIVITY}", safe=""),
        {f"{CKAN_API}activity_data_show?id={ACTIVITY}&object_type=package":
             "ckan/activity-data.json"},
        "sample-dataset-1.v1687262402", quote(f"{CKAN_URL}/history/{ACTIVITY}", safe=""),
        CKAN_URL, f"{CKAN_API}activity_data_show?id={ACTIVITY}&object_type=package",
        "ckan-sample-dataset-1", {"ref_url": f"{CKAN_URL}?activity_id={ACTIVITY}"}),
}


@pytest.mark.parametrize("case", RESOLVE_CASES.values(), ids=RESOLVE_CASES.keys())
def test_resolves_a_record_to_a_pinned_version(case: Case) -> None:
    replay = Replay(case.routes)
    repo = ARCHIVES[case.prefix](replay.client(), clock=lambda: NOW).resolve(case.spec)
    assert (repo.provider, repo.kind, repo.spec) == (case.prefix, "archive", case.spec)
    assert repo.resolved_ref == case.resolved_ref
    assert repo.persistent_spec == case.persistent_spec
    assert repo.persistent_request == f"v2/{case.prefix}/{case.persistent_spec}"
    assert repo.repo_url == case.repo_url
    assert repo.ref_url == case.extra.get("ref_url", case.repo_url)
    assert repo.clone_url == case.clone_url
    assert repo.slug == case.slug
    assert all(r.headers["User-Agent"] == "binderless" for r in replay.requests)


def test_ckan_persistent_spec_relaunches_the_same_state() -> None:
    case = RESOLVE_CASES["ckan-pinned-to-newest-activity"]
    routes: Routes = {**case.routes, f"{CKAN_API}activity_data_show?id={ACTIVITY}"
                      "&object_type=package": "ckan/activity-data.json"}
    first = make("ckan", routes).resolve(case.spec)
    again = make("ckan", routes).resolve(first.persistent_spec)
    assert again.clone_url == first.clone_url
    assert again.persistent_spec == first.persistent_spec


def test_zenodo_serves_its_record_pages_only() -> None:
    zenodo = make("zenodo", {})
    for url in ("https://zenodo.org/record/1", "https://zenodo.org/records/1/",
                "https://sandbox.zenodo.org/records/1234",
                "https://zenodo.org/doi/10.5281/zenodo.3242073"):
        assert zenodo.serves(url), url
    for url in ("https://zenodo.org/communities/x", "https://example.org/records/1"):
        assert not zenodo.serves(url), url


def test_zenodo_refuses_a_doi_of_another_archive() -> None:
    routes: Routes = {HANDLE + "10.7910/DVN/TJCLKP": "doi/handle-dataverse.json"}
    with pytest.raises(BadLink, match=re.escape("dataverse.harvard.edu, not to a Zenodo record")) as info:
        make("zenodo", routes).resolve("10.7910/DVN/TJCLKP")
    assert "/v2/doi/10.7910/DVN/TJCLKP" in info.value.hint


# ------------------------------------------------------------- unknown records, failures


@dataclass
class Failing:
    prefix: str
    spec: str
    routes: Routes  # what answers before the request that fails
    key: str  # the request that fails


FIRST_REQUEST = {
    "zenodo": Failing("zenodo", "10.5281/zenodo.3242074",
                      {HANDLE + "10.5281/zenodo.3242074": "doi/handle-zenodo.json"},
                      ZENODO + "3242074"),
    "figshare": Failing("figshare", "10.6084/m9.figshare.9782777.v1", {},
                        FIGSHARE + "/versions/1"),
    "hydroshare": Failing("hydroshare", HS, {}, HS_API + "/scimeta/elements/"),
    "dataverse": Failing("dataverse", "10.7910/DVN/TJCLKP",
                         {HANDLE + "10.7910/DVN/TJCLKP": "doi/handle-dataverse.json"},
                         DV_DATASET),
    "ckan": Failing("ckan", CKAN_SPEC, {}, CKAN_API + "package_show?id=sample-dataset-1"),
}

UNKNOWN = {
    "zenodo-deleted-record": ("zenodo", "10.5281/zenodo.3242074", {
        HANDLE + "10.5281/zenodo.3242074": "doi/handle-zenodo.json",
        ZENODO + "3242074": "zenodo/record-gone.json"}, ""),
    "zenodo-missing-record": ("zenodo", "10.5281/zenodo.3242074", {
        HANDLE + "10.5281/zenodo.3242074": "doi/handle-zenodo.json",
        ZENODO + "3242074": "zenodo/record-missing.json"}, ""),
    "zenodo-unknown-doi": ("zenodo", "10.5281/zenodo.3242074", {
        HANDLE + "10.5281/zenodo.3242074": "doi/handle-not-found.json"}, "doi.org does not know"),
    "figshare-unknown-article": ("figshare", "10.6084/m9.figshare.9782777", {
        FIGSHARE + "/versions": "figshare/article-missing.json"}, ""),
    "figshare-unknown-version": ("figshare", "10.6084/m9.figshare.9782777.v9", {
        FIGSHARE + "/versions/9": "figshare/version-missing.json"}, ""),
    "figshare-no-public-version": ("figshare", "10.6084/m9.figshare.9782777", {
        FIGSHARE + "/versions": "figshare/versions-empty.json"}, "no public version"),
    "figshare-doi-of-another-article": ("figshare", "10.1234/not.figshare.9782777.v1", {
        FIGSHARE + "/versions/1": "figshare/article-9782777-v1.json"},
        "has the DOI 10.6084/m9.figshare.9782777.v1"),
    "hydroshare-unknown-resource": ("hydroshare", HS, {
        HS_API + "/scimeta/elements/": "hydroshare/resource-missing.json"}, ""),
    "hydroshare-private-resource": ("hydroshare", HS, {
        HS_API + "/scimeta/elements/": "hydroshare/resource-private.json"}, ""),
    "dataverse-unknown-dataset": ("dataverse", "10.7910/DVN/TJCLKP", {
        HANDLE + "10.7910/DVN/TJCLKP": "doi/handle-dataverse.json",
        DV_DATASET: "dataverse/dataset-missing.json",
        f"{HARVARD}/api/files/:persistentId?persistentId=doi:10.7910/DVN/TJCLKP"
        "&returnDatasetVersion=true": "dataverse/dataset-missing.json"}, ""),
    "dataverse-unknown-doi": ("dataverse", "10.7910/DVN/TJCLKP", {
        HANDLE + "10.7910/DVN/TJCLKP": "doi/handle-not-found.json"}, "doi.org does not know"),
    "ckan-unknown-dataset": ("ckan", CKAN_SPEC, {
        CKAN_API + "package_show?id=sample-dataset-1": "ckan/package-missing.json"},
        "has no public dataset 'sample-dataset-1'"),
    "ckan-site-is-not-ckan": ("ckan", CKAN_SPEC, {
        CKAN_API + "package_show?id=sample-dataset-1": "ckan/not-ckan.json"},
        "did not answer like a CKAN site"),
}


@pytest.mark.parametrize(("prefix", "spec", "routes", "hint"), UNKNOWN.values(),
                         ids=UNKNOWN.keys())
def test_unknown_record_or_repository(prefix: str, spec: str, routes: Routes, hint: str) -> None:
    with pytest.raises(RefNotFound) as info:
        make(prefix, routes).resolve(spec)
    assert info.value.message == not_found(prefix, spec)
    assert info.value.message.startswith(f"Could not resolve ref for {prefix}:{spec}. ")
    assert hint in info.value.hint


RATE_LIMITS = {
    "zenodo": "Zenodo rate limit exceeded. Try again in 5 minutes.",  # X-RateLimit-Reset epoch
    "figshare": "Figshare rate limit exceeded. Try again in 1 minute.",  # no header: a minute
    "hydroshare": "HydroShare rate limit exceeded. Try again in 3 minutes.",  # Retry-After 125
    "dataverse": "Dataverse rate limit exceeded. Try again in 2 minutes.",  # RateLimit-Reset 90
    "ckan": "CKAN rate limit exceeded. Try again in 5 minutes.",  # Retry-After 300
}


@pytest.mark.parametrize("prefix", ARCHIVES)
def test_rate_limit(prefix: str) -> None:
    case = FIRST_REQUEST[prefix]
    routes: Routes = {**case.routes, case.key: f"{prefix}/rate-limited.json"}
    with pytest.raises(ProviderUnavailable) as info:
        make(prefix, routes).resolve(case.spec)
    assert info.value.message == RATE_LIMITS[prefix]


@pytest.mark.parametrize("prefix", ["zenodo", "dataverse"])
def test_doi_org_rate_limit_and_failure(prefix: str) -> None:
    handle = next(iter(FIRST_REQUEST[prefix].routes))
    with pytest.raises(ProviderUnavailable,
                       match=r"^doi\.org rate limit exceeded\. Try again in 4 minutes\.$"):
        make(prefix, {handle: "doi/rate-limited.json"}).resolve(FIRST_REQUEST[prefix].spec)
    with pytest.raises(ProviderUnavailable, match=r"doi\.org failed to answer \(HTTP 503\)"):
        make(prefix, {handle: "doi/server-error.json"}).resolve(FIRST_REQUEST[prefix].spec)


ARCHIVE_NAMES = {"zenodo": "Zenodo", "figshare": "Figshare", "hydroshare": "HydroShare",
                 "dataverse": "Dataverse", "ckan": "CKAN"}


@pytest.mark.parametrize("prefix", ARCHIVES)
def test_server_error(prefix: str) -> None:
    case = FIRST_REQUEST[prefix]
    routes: Routes = {**case.routes, case.key: f"{prefix}/server-error.json"}
    with pytest.raises(ProviderUnavailable) as info:
        make(prefix, routes).resolve(case.spec)
    name = ARCHIVE_NAMES[prefix]
    assert re.fullmatch(rf"{name} failed to answer \(HTTP 5\d\d\)\.", info.value.message)
    assert "try again in a few minutes" in info.value.user_message()


@pytest.mark.parametrize("prefix", ARCHIVES)
def test_network_error(prefix: str) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    case = FIRST_REQUEST[prefix]
    with pytest.raises(ProviderUnavailable) as info:
        make(prefix, {**case.routes, case.key: refuse}).resolve(case.spec)
    assert info.value.message == f"{ARCHIVE_NAMES[prefix]} could not be reached."
    assert isinstance(info.value.__cause__, httpx.ConnectError)
    assert "Try again" in info.value.hint


MALFORMED = [
    ("zenodo", "zenodo.3242074", "zenodo/10.5281/zenodo.3242074"),
    ("zenodo", "https%3A%2F%2Fzenodo.org%2Frecords%2F3242074", "zenodo/10.5281/zenodo.3242074"),
    ("figshare", "10.6084/m9.figshare.abc", "figshare/10.6084/m9.figshare.9782777.v1"),
    ("figshare", "9782777", "figshare/10.6084/m9.figshare.9782777.v1"),
    ("hydroshare", "not-a-resource", f"hydroshare/{'8f7c2f0341ef4180b0dbe97f59130756'}"),
    ("dataverse", "DVN/TJCLKP", "dataverse/10.7910/DVN/TJCLKP"),
    ("ckan", quote("https://demo.ckan.org/organization/city", safe=""), "ckan/https%3A%2F%2F"),
    ("ckan", "ftp%3A%2F%2Fdemo.ckan.org%2Fdataset%2Fx", "ckan/https%3A%2F%2F"),
]


@pytest.mark.parametrize(("prefix", "spec", "example"), MALFORMED)
def test_malformed_spec_names_the_expected_form(prefix: str, spec: str, example: str) -> None:
    replay = Replay({})
    with pytest.raises(BadLink) as info:
        ARCHIVES[prefix](replay.client()).resolve(spec)
    assert "for example" in info.value.message and example in info.value.message
    assert replay.requests == []


def test_retry_minutes_reads_every_header_form() -> None:
    headers = httpx.Headers
    assert retry_minutes(headers({"retry-after": "61"}), NOW) == 2
    date = "Mon, 12 Jan 1970 13:50:40 GMT"  # 1,000,240 s: four minutes after NOW
    assert retry_minutes(headers({"retry-after": date}), NOW) == 4
    assert retry_minutes(headers({"x-ratelimit-reset": str(int(NOW) + 600)}), NOW) == 10
    assert retry_minutes(headers({"ratelimit-reset": "30"}), NOW) == 1
    assert retry_minutes(headers({}), NOW) == 1


def test_human_size() -> None:
    assert [human_size(n) for n in (33, 1_234, 1_200_000, 3_400_000_000)] == [
        "33 bytes", "1.2 kB", "1.2 MB", "3.4 GB"]


# ----------------------------------------------------------------------------- fetching


def archive_repo(prefix: str, clone_url: str, spec: str = "spec") -> ResolvedRepo:
    return ResolvedRepo(provider=prefix, spec=spec, repo_url="https://example.org/record",
                        clone_url=clone_url, ref="", resolved_ref="1.v1", persistent_spec=spec,
                        ref_url="https://example.org/record", slug=prefix, kind="archive")


def tree(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): p.read_text()
            for p in sorted(root.rglob("*")) if p.is_file()}


FETCH_CASES: dict[str, tuple[str, Routes, dict[str, str]]] = {
    "zenodo": (ZENODO + "3242075", {
        ZENODO + "3242075": "zenodo/record-3242075.json",
        ZENODO + "3242075/files": "zenodo/files-3242075.json",
        ZENODO + "3242075/files/data.csv/content": "zenodo/file-data-csv.json",
        ZENODO + "3242075/files/environment.yml/content": "zenodo/file-environment-yml.json",
    }, {"data.csv": CSV, "environment.yml": ENV}),
    "figshare": (FIGSHARE + "/versions/2", {
        FIGSHARE + "/versions/2": "figshare/article-9782777-v2.json",
        FIGSHARE_FILES + "17481250": "figshare/file-data-csv.json",
        FIGSHARE_FILES + "17481251": "figshare/file-environment-yml.json",
    }, {"data.csv": CSV, "environment.yml": ENV}),
    "hydroshare": (HS_API + "/files/", {
        HS_API + "/files/": "hydroshare/files-page1.json",
        HS_API + "/files/?page=2": "hydroshare/files-page2.json",
        HS_FILES + "data.csv": "hydroshare/file-data-csv.json",
        HS_FILES + "binder/environment.yml": "hydroshare/file-environment-yml.json",
    }, {"data.csv": CSV, "binder/environment.yml": ENV}),
    # Folders are kept (repo2docker's unwrapping never applies: it tests the name against
    # its working directory); the restricted file is skipped.
    "dataverse": (DV_VERSION, {
        DV_VERSION: "dataverse/version-3.0.json",
        f"{HARVARD}/api/access/datafile/3323458?format=original": "dataverse/file-data-csv.json",
        f"{HARVARD}/api/access/datafile/3323459?format=original":
            "dataverse/file-environment-yml.json",
    }, {"river/data.csv": CSV, "river/binder/environment.yml": ENV}),
    # The resource without a URL (a web page) is skipped.
    "ckan": (f"{CKAN_API}package_show?id=sample-dataset-1", {
        f"{CKAN_API}package_show?id=sample-dataset-1": "ckan/package-show.json",
        CKAN_PKG + "e6c4b4b1-1e0a-4b5c-8f2a-7d9b6c5e4f3a/download/data.csv":
            "ckan/file-data-csv.json",
        CKAN_PKG + "0b9d9c5e-2f3a-4d6b-9c1e-8a7f6e5d4c3b/download/environment.yml":
            "ckan/file-environment-yml.json",
    }, {"data.csv": CSV, "environment.yml": ENV}),
}


@pytest.mark.parametrize("prefix", FETCH_CASES)
def test_fetch_downloads_every_file(prefix: str, tmp_path: Path) -> None:
    clone_url, routes, expected = FETCH_CASES[prefix]
    lines: list[str] = []
    dest = tmp_path / "home"
    make(prefix, routes).fetch(archive_repo(prefix, clone_url), dest, lines.append)
    assert tree(dest) == expected
    assert [p.name for p in dest.iterdir() if p.name.startswith(".")] == []
    folder = "river/" if prefix == "dataverse" else ""
    assert f"Downloading {folder}data.csv (33 bytes)...\n" in lines
    assert all(line.endswith("\n") for line in lines)
    if prefix == "dataverse":
        assert "Skipping secret.txt: it is restricted.\n" in lines


ZIP_CASES: dict[str, tuple[str, Routes]] = {
    "zenodo": (ZENODO + "3242074", {
        ZENODO + "3242074": "zenodo/record-3242074.json",
        ZENODO + "3242074/files": "zenodo/files-3242074.json",
        ZENODO + "3242074/files/requirements-v1.0.zip/content": "zenodo/file-zip.json"}),
    "figshare": (FIGSHARE + "/versions/1", {
        FIGSHARE + "/versions/1": "figshare/article-9782777-v1.json",
        FIGSHARE_FILES + "17481250": "figshare/file-zip.json"}),
}


@pytest.mark.parametrize("prefix", ZIP_CASES)
def test_a_lone_zip_is_unpacked_and_its_top_folder_unwrapped(prefix: str, tmp_path: Path) -> None:
    clone_url, routes = ZIP_CASES[prefix]
    lines: list[str] = []
    dest = tmp_path / "home"
    make(prefix, routes).fetch(archive_repo(prefix, clone_url), dest, lines.append)
    assert sorted(p.name for p in dest.iterdir()) == ["index.ipynb", "postBuild",
                                                       "requirements.txt"]
    assert (dest / "requirements.txt").read_text() == "numpy\nmatplotlib\n"
    assert (dest / "postBuild").stat().st_mode & stat.S_IXUSR
    assert "Downloading requirements-v1.0.zip (992 bytes)...\n" in lines
    assert "Unpacking requirements-v1.0.zip...\n" in lines


TRAVERSAL_CASES: dict[str, tuple[str, Routes]] = {
    "zenodo": (ZENODO + "3242076", {
        ZENODO + "3242076": "zenodo/record-3242076.json",
        ZENODO + "3242076/files": "zenodo/files-3242076.json"}),
    "figshare": (FIGSHARE + "/versions/3", {
        FIGSHARE + "/versions/3": "figshare/article-9782777-v3.json"}),
    "hydroshare": (HS_API + "/files/", {HS_API + "/files/": "hydroshare/files-traversal.json"}),
    "dataverse": (DV_VERSION, {DV_VERSION: "dataverse/version-traversal.json"}),
    "ckan": (f"{CKAN_API}package_show?id=sample-dataset-1", {
        f"{CKAN_API}package_show?id=sample-dataset-1": "ckan/package-show-traversal.json"}),
}


@pytest.mark.parametrize("prefix", TRAVERSAL_CASES)
def test_a_file_name_outside_the_folder_is_refused(prefix: str, tmp_path: Path) -> None:
    clone_url, routes = TRAVERSAL_CASES[prefix]
    dest = tmp_path / "home"
    replay = Replay(routes)
    provider = ARCHIVES[prefix](replay.client(), clock=lambda: NOW)
    with pytest.raises(ProviderUnavailable, match="outside the download folder"):
        provider.fetch(archive_repo(prefix, clone_url), dest, lambda line: None)
    assert list(dest.iterdir()) == []
    assert not (tmp_path / ".bashrc").exists() and not (tmp_path / ".profile").exists()
    # Names are checked before anything is downloaded.
    assert len(replay.requests) == len(routes)


def zenodo_single_file(key: str, content: bytes, size: int | None = None) -> Routes:
    """A Zenodo record of one file, its listing written for this test."""
    def listing(request: httpx.Request) -> httpx.Response:
        entry = {"key": key, "size": len(content) if size is None else size,
                 "links": {"content": f"{ZENODO}9/files/{key}/content"}}
        return httpx.Response(200, json={"entries": [entry]})

    return {ZENODO + "9": lambda r: httpx.Response(
                200, json={"id": 9, "links": {"files": ZENODO + "9/files"}}),
            ZENODO + "9/files": listing,
            f"{ZENODO}9/files/{key}/content": lambda r: httpx.Response(200, content=content)}


def test_a_zip_member_outside_the_folder_is_refused(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("repo/README.md", "hello\n")
        zf.writestr("repo/../../escaped.txt", "gotcha\n")
    dest = tmp_path / "home"
    with pytest.raises(ProviderUnavailable, match="outside the download folder"):
        make("zenodo", zenodo_single_file("bundle.zip", buffer.getvalue())).fetch(
            archive_repo("zenodo", ZENODO + "9"), dest, lambda line: None)
    assert list(dest.iterdir()) == []
    assert not (tmp_path / "escaped.txt").exists()


def test_a_file_that_is_not_a_zip_is_kept_as_it_is(tmp_path: Path) -> None:
    dest = tmp_path / "home"
    make("zenodo", zenodo_single_file("data.zip", b"not really a zip")).fetch(
        archive_repo("zenodo", ZENODO + "9"), dest, lambda line: None)
    assert tree(dest) == {"data.zip": "not really a zip"}


def test_ckan_keeps_a_lone_zip_as_repo2docker_does(tmp_path: Path) -> None:
    show = f"{CKAN_API}package_show?id=sample-dataset-1"
    zip_url = CKAN_PKG + "e6c4b4b1/download/bundle.zip"
    content = (Path(__file__).parents[1] / "fixtures/http/zenodo/files/requirements-v1.0.zip"
               ).read_bytes()
    routes: Routes = {
        show: lambda r: httpx.Response(200, json={"success": True, "result": {"resources": [
            {"id": "e6c4b4b1", "url": zip_url, "size": None}]}}),
        zip_url: lambda r: httpx.Response(200, content=content)}
    dest = tmp_path / "home"
    make("ckan", routes).fetch(archive_repo("ckan", show), dest, lambda line: None)
    assert [p.name for p in dest.iterdir()] == ["bundle.zip"]
    assert (dest / "bundle.zip").read_bytes() == content


@pytest.mark.parametrize(("declared", "match"), [
    (100, "was cut short: 33 of 100 bytes arrived"),
    (10, "larger than expected"),
])
def test_sizes_are_checked(declared: int, match: str, tmp_path: Path) -> None:
    dest = tmp_path / "home"
    with pytest.raises(ProviderUnavailable, match=match):
        make("zenodo", zenodo_single_file("data.csv", CSV.encode(), size=declared)).fetch(
            archive_repo("zenodo", ZENODO + "9"), dest, lambda line: None)
    assert list(dest.iterdir()) == []


def test_a_file_and_a_folder_of_the_same_name(tmp_path: Path) -> None:
    listing = {"entries": [
        {"key": key, "size": len(CSV), "links": {"content": f"{ZENODO}9/files/x/content"}}
        for key in ("data", "data/levels.csv")]}
    routes: Routes = {
        ZENODO + "9": lambda r: httpx.Response(200, json={"links": {"files": ZENODO + "9/f"}}),
        ZENODO + "9/f": lambda r: httpx.Response(200, json=listing),
        ZENODO + "9/files/x/content": lambda r: httpx.Response(200, text=CSV)}
    dest = tmp_path / "home"
    with pytest.raises(ProviderUnavailable, match="could not save the files of this Zenodo"):
        make("zenodo", routes).fetch(archive_repo("zenodo", ZENODO + "9"), dest, print)
    assert list(dest.iterdir()) == []


def test_a_record_larger_than_the_limit_is_refused(tmp_path: Path) -> None:
    clone_url, routes = ZIP_CASES["zenodo"]
    replay = Replay(routes)
    with pytest.raises(ProviderUnavailable, match="larger than the 500 bytes binderless"):
        ZenodoProvider(replay.client(), max_bytes=500).fetch(
            archive_repo("zenodo", clone_url), tmp_path / "home", lambda line: None)
    assert not any(r.url.path.endswith("/content") for r in replay.requests)


def test_a_failed_download_leaves_the_folder_empty(tmp_path: Path) -> None:
    clone_url, routes, _ = FETCH_CASES["zenodo"]
    routes = {**routes, ZENODO + "3242075/files/environment.yml/content":
              "zenodo/server-error.json"}
    dest = tmp_path / "home"
    lines: list[str] = []
    with pytest.raises(ProviderUnavailable, match="Zenodo failed to answer"):
        make("zenodo", routes).fetch(archive_repo("zenodo", clone_url), dest, lines.append)
    assert "Downloading data.csv (33 bytes)...\n" in lines  # it had been downloaded
    assert list(dest.iterdir()) == []


def test_a_record_gone_before_the_download(tmp_path: Path) -> None:
    routes: Routes = {ZENODO + "3242075": "zenodo/record-gone.json"}
    with pytest.raises(RefNotFound, match=re.escape("Could not resolve ref for zenodo:10.5281")):
        make("zenodo", routes).fetch(
            archive_repo("zenodo", ZENODO + "3242075", "10.5281/zenodo.3242075"),
            tmp_path / "home", lambda line: None)


# ----------------------------------------------------------------- the guarded client


def guarded(routes: Routes) -> tuple[httpx.Client, Replay]:
    replay = Replay(routes)
    addresses = {"demo.ckan.org": ["93.184.216.34"]}
    guard = UrlGuard(enforce=True, resolver=lambda host: addresses.get(host, ["10.0.0.7"]))
    return guarded_client(guard, httpx.MockTransport(replay)), replay


def test_archives_behind_the_guard_cannot_reach_private_hosts(tmp_path: Path) -> None:
    client, replay = guarded({})
    spec = quote("https://intranet.example/dataset/payroll", safe="")
    with pytest.raises(SpecNotAllowed, match="local, private or metadata address"):
        CkanProvider(client).resolve(spec)
    assert replay.requests == []

    client, replay = guarded(
        {f"{CKAN_API}package_show?id=sample-dataset-1": "ckan/package-show-private-host.json"})
    dest = tmp_path / "home"
    with pytest.raises(SpecNotAllowed):
        CkanProvider(client).fetch(
            archive_repo("ckan", f"{CKAN_API}package_show?id=sample-dataset-1"), dest,
            lambda line: None)
    assert list(dest.iterdir()) == []
    assert [r.url.host for r in replay.requests] == ["demo.ckan.org"]


# ------------------------------------------------------------------------------- doi


HANDOVERS: dict[str, tuple[str, Routes, str, str]] = {
    "zenodo": ("10.5281/zenodo.3242074", {
        HANDLE + "10.5281/zenodo.3242074": "doi/handle-zenodo.json",
        ZENODO + "3242074": "zenodo/record-3242074.json"},
        "v2/zenodo/10.5281/zenodo.3242074", "3242074"),
    "figshare": ("10.6084/m9.figshare.9782777", {
        HANDLE + "10.6084/m9.figshare.9782777": "doi/handle-figshare.json",
        FIGSHARE + "/versions": "figshare/versions-9782777.json",
        FIGSHARE + "/versions/2": "figshare/article-9782777-v2.json"},
        "v2/figshare/10.6084/m9.figshare.9782777.v2", "9782777.v2"),
    "hydroshare": (f"10.4211/hs.{HS}", {
        HANDLE + f"10.4211/hs.{HS}": "doi/handle-hydroshare.json",
        HS_API + "/scimeta/elements/": "hydroshare/scimeta.json"},
        f"v2/hydroshare/{HS}", f"{HS}.v1569427757"),
    "dataverse": ("10.7910/DVN/TJCLKP", {
        HANDLE + "10.7910/DVN/TJCLKP": "doi/handle-dataverse.json",
        DV_DATASET: "dataverse/dataset-TJCLKP.json"},
        "v2/dataverse/10.7910/DVN/TJCLKP", "3035124.v3.0"),
    "dataverse-installation-found-by-asking": ("10.80240/FK2/ABCDEF", {
        HANDLE + "10.80240/FK2/ABCDEF": "doi/handle-dataverse-other.json",
        "https://data.example-university.edu/api/info/version": "dataverse/info-version.json",
        "https://data.example-university.edu/api/datasets/:persistentId"
        "?persistentId=doi:10.80240/FK2/ABCDEF": "dataverse/dataset-TJCLKP.json"},
        "v2/dataverse/10.7910/DVN/TJCLKP", "3035124.v3.0"),
    "ckan-site-found-by-asking": ("10.25625/RIVER1", {
        HANDLE + "10.25625/RIVER1": "doi/handle-ckan.json",
        "https://data.example-city.org/api/3/action/status_show": "ckan/status-show.json",
        "https://data.example-city.org/api/3/action/package_show?id=river-levels":
            "ckan/package-show.json",
        "https://data.example-city.org/api/3/action/package_activity_list?id=river-levels"
        "&limit=1": "ckan/activity-unknown.json"},
        "v2/ckan/" + quote("https://data.example-city.org/dataset/river-levels", safe=""),
        "river-levels.v1687341158"),
}


@pytest.mark.parametrize(("spec", "routes", "request_", "resolved_ref"), HANDOVERS.values(),
                         ids=HANDOVERS.keys())
def test_doi_hands_over_to_the_provider_that_serves_it(
        spec: str, routes: Routes, request_: str, resolved_ref: str) -> None:
    provider, replay = doi_provider(routes)
    repo = provider.resolve(spec)
    assert repo.persistent_request == request_
    assert repo.provider == request_.split("/")[1] != "doi"
    assert repo.resolved_ref == resolved_ref and repo.kind == "archive"
    assert repo.notes[-1].startswith(f"The DOI {spec} is a ")
    # The handle API named the record page; nobody fetched it, only the archives' APIs.
    assert all(r.url.host == "doi.org" or "api" in r.url.host + r.url.path
               for r in replay.requests)


@pytest.mark.parametrize("spec", [
    "10.5281/zenodo.3242074", "10.5281%2Fzenodo.3242074", "doi:10.5281/zenodo.3242074",
    "DOI:10.5281/zenodo.3242074", "https://doi.org/10.5281/zenodo.3242074",
    "https:/doi.org/10.5281/zenodo.3242074", "http://dx.doi.org/10.5281/zenodo.3242074",
    "https%3A%2F%2Fdoi.org%2F10.5281%2Fzenodo.3242074",
])
def test_doi_spec_forms(spec: str) -> None:
    assert parse_doi(spec, prefix="doi", example="x") == "10.5281/zenodo.3242074"
    provider, _ = doi_provider(HANDOVERS["zenodo"][1])
    assert provider.resolve(spec).persistent_spec == "10.5281/zenodo.3242074"


NO_PROVIDER: list[tuple[str, Routes, str]] = [
    ("10.1000/182", {HANDLE + "10.1000/182": "doi/handle-handbook.json"}, "www.doi.org"),
    # Dryad's page has /dataset/ in it, so CKAN is asked, and says no.
    ("10.5061/dryad.2v6wwpzj4", {
        HANDLE + "10.5061/dryad.2v6wwpzj4": "doi/handle-dryad.json",
        "https://datadryad.org/stash/api/3/action/status_show": "ckan/not-ckan.json"},
        "datadryad.org"),
]


@pytest.mark.parametrize(("doi", "routes", "host"), NO_PROVIDER)
def test_doi_no_provider_serves_it(doi: str, routes: Routes, host: str) -> None:
    provider, _ = doi_provider(routes)
    with pytest.raises(BadLink) as info:
        provider.resolve(doi)
    assert info.value.message == (
        f"The DOI {doi} points to {host}, which no binderless provider serves. "
        "Supported: Zenodo, Figshare, HydroShare, Dataverse, CKAN.")


def test_doi_unknown_or_pointing_nowhere() -> None:
    provider, _ = doi_provider({HANDLE + "10.5281/zenodo.0": "doi/handle-not-found.json"})
    with pytest.raises(RefNotFound) as info:
        provider.resolve("10.5281/zenodo.0")
    assert info.value.message == not_found("doi", "10.5281/zenodo.0")
    provider, _ = doi_provider({HANDLE + "10.5555/no-url": "doi/handle-no-url.json"})
    with pytest.raises(RefNotFound, match=re.escape("Could not resolve ref for doi:10.5555/no-url")) as info:
        provider.resolve("10.5555/no-url")
    assert "does not point to a web address" in info.value.hint
    with pytest.raises(BadLink, match=re.escape("for example doi/10.5281/zenodo.3242074")):
        provider.resolve("zenodo.3242074")


def test_doi_fetch_uses_the_real_provider(tmp_path: Path) -> None:
    clone_url, routes, expected = FETCH_CASES["zenodo"]
    provider, _ = doi_provider(routes)
    provider.fetch(archive_repo("zenodo", clone_url), tmp_path / "home", lambda line: None)
    assert tree(tmp_path / "home") == expected


# ------------------------------------------------------------------ registry, display


def test_every_archive_is_registered_and_displayed() -> None:
    client = Replay({}).client()
    for prefix in (*ARCHIVES, "doi"):
        provider = PROVIDERS[prefix](Settings(), client)
        config = provider.display_config()
        assert provider.prefix == config["id"] == prefix
        assert config["displayName"] == provider.display_name
        assert config["ref"] == {"enabled": False}
        assert {"label", "placeholder", "urlEncode"} <= set(config["repo"])
        example = config["repo"]["placeholder"].removeprefix("example: ")
        if config["repo"]["urlEncode"]:
            example = quote(example, safe="")
        assert re.fullmatch(config["spec"]["validateRegex"], example), prefix
        assert callable(getattr(provider, "fetch", None))
