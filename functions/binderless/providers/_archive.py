"""What the archive providers share, as repo2docker keeps it in its ``DoiProvider`` base.

DOI parsing and resolution, HTTP with every failure turned into a binderless error,
downloading a record's files into a folder (sizes checked, names kept inside the
folder, a lone zip archive unpacked), and ``ArchiveBase``: the constructor and the
``/api/repoproviders`` entry of every archive provider.
"""

from __future__ import annotations

import contextlib
import email.utils
import math
import re
import shutil
import tempfile
import time
import zipfile
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote, unquote

import httpx

from ..errors import BadLink, ProviderUnavailable, RefNotFound
from .base import ResolvedRepo, slugify

__all__ = [
    "DEFAULT_MAX_BYTES",
    "SUPPORTED",
    "ArchiveBase",
    "ArchiveHttp",
    "RemoteFile",
    "doi_target",
    "download_record",
    "human_size",
    "iso_epoch",
    "parse_doi",
    "safe_path",
]

DOI_API = "https://doi.org/api/handles/"
SUPPORTED = "Zenodo, Figshare, HydroShare, Dataverse, CKAN"
DEFAULT_MAX_BYTES = 10 * 1000**3
METADATA_TIMEOUT = httpx.Timeout(30.0)
DOWNLOAD_TIMEOUT = httpx.Timeout(30.0, read=120.0)
CHUNK = 1 << 20
# The forms people paste: 10.x/y, doi:10.x/y, https://doi.org/10.x/y (a proxy may
# have merged the slashes after the scheme).
DOI_RE = re.compile(r"(?:doi:\s*|(?:https?:/+)?(?:dx\.)?doi\.org/)?(10\.\d+(?:\.\d+)*/\S.*)",
                    re.IGNORECASE)


def parse_doi(spec: str, *, prefix: str, example: str) -> str:
    """The bare DOI in ``spec`` (URL-encoded or not, with or without ``doi:`` or doi.org)."""
    text = unquote(spec).strip().rstrip("/")
    match = DOI_RE.fullmatch(text)
    if not match:
        raise BadLink(
            f"{spec!r} is not a DOI: use {prefix}/<DOI>, for example {prefix}/{example}."
        )
    return match.group(1)


def human_size(size: int) -> str:
    if size < 1000:
        return f"{size} bytes"
    value = float(size)
    for unit in ("kB", "MB", "GB"):
        value /= 1000
        if value < 1000:
            return f"{value:.1f} {unit}"
    return f"{value / 1000:.1f} TB"


def iso_epoch(stamp: str) -> int:
    """Whole seconds since the epoch of an ISO 8601 date; one without a zone is UTC."""
    parsed = datetime.fromisoformat(stamp.strip())
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp())


def retry_minutes(headers: httpx.Headers, now: float) -> int:
    """Whole minutes until a rate limit lifts, from Retry-After or a reset header."""
    wait: float | None = None
    retry_after = headers.get("retry-after", "").strip()
    if retry_after.isdigit():
        wait = float(retry_after)
    elif retry_after:
        with contextlib.suppress(TypeError, ValueError, IndexError):
            wait = email.utils.parsedate_to_datetime(retry_after).timestamp() - now
    for name in ("x-ratelimit-reset", "ratelimit-reset"):
        if wait is None and headers.get(name):
            with contextlib.suppress(ValueError):
                reset = float(headers[name])
                # Zenodo sends an epoch, the IETF draft header seconds to wait; a value
                # nearer the clock than to zero is an epoch.
                wait = reset - now if reset > now / 2 else reset
    return max(1, math.ceil((60.0 if wait is None else wait) / 60))


class ArchiveHttp:
    """One archive's HTTP: requests follow redirects (the injected client's guard checks
    every hop) and every failure becomes a ``RefNotFound`` or ``ProviderUnavailable``."""

    def __init__(self, client: httpx.Client, archive: str, clock: Callable[[], float]) -> None:
        self.client = client
        self.archive = archive
        self.clock = clock

    def unreachable(self) -> ProviderUnavailable:
        return ProviderUnavailable(f"{self.archive} could not be reached.",
                                   hint="Try again in a few minutes.")

    def unreadable(self) -> ProviderUnavailable:
        return ProviderUnavailable(f"{self.archive} sent an answer binderless could not read.",
                                   hint="Try again later; if it persists, please report it.")

    def check(self, response: httpx.Response, *, missing: str, hint: str = "",
              keep_missing: bool = False) -> None:
        """Raise the binderless error for a failed response (a 404 passes if ``keep_missing``)."""
        status = response.status_code
        if status == 429 or (status == 403 and response.headers.get("x-ratelimit-remaining") == "0"):
            minutes = retry_minutes(response.headers, self.clock())
            unit = "minute" if minutes == 1 else "minutes"
            raise ProviderUnavailable(
                f"{self.archive} rate limit exceeded. Try again in {minutes} {unit}."
            )
        if 200 <= status < 300 or (keep_missing and status in (404, 410)):
            return
        if 400 <= status < 500:
            raise RefNotFound(missing, hint=hint)
        raise ProviderUnavailable(
            f"{self.archive} failed to answer (HTTP {status}).",
            hint=f"This is a problem at {self.archive}; try again in a few minutes.",
        )

    def get(self, url: str, *, missing: str, hint: str = "",
            keep_missing: bool = False) -> httpx.Response:
        try:
            response = self.client.get(
                url, headers={"Accept": "application/json", "User-Agent": "binderless"},
                follow_redirects=True, timeout=METADATA_TIMEOUT,
            )
        except httpx.HTTPError as exc:
            raise self.unreachable() from exc
        self.check(response, missing=missing, hint=hint, keep_missing=keep_missing)
        return response

    def decode(self, response: httpx.Response) -> Any:
        try:
            return response.json()
        except ValueError as exc:
            raise self.unreadable() from exc

    def json(self, url: str, *, missing: str, hint: str = "") -> Any:
        return self.decode(self.get(url, missing=missing, hint=hint))

    def download(self, url: str, target: Path, *, name: str, limit: int, missing: str) -> int:
        """Stream ``url`` into ``target`` and return the byte count; stop past ``limit``."""
        written = 0
        try:
            with self.client.stream(
                "GET", url, headers={"User-Agent": "binderless"},
                follow_redirects=True, timeout=DOWNLOAD_TIMEOUT,
            ) as response:
                self.check(response, missing=missing)
                with target.open("wb") as out:
                    for chunk in response.iter_bytes(CHUNK):
                        written += len(chunk)
                        if written > limit:
                            raise ProviderUnavailable(
                                f"{name} from {self.archive} is larger than expected "
                                f"({human_size(limit)}); binderless stopped downloading it."
                            )
                        out.write(chunk)
        except httpx.HTTPError as exc:
            raise self.unreachable() from exc
        return written


def doi_target(http: ArchiveHttp, doi: str, *, missing: str) -> str:
    """The URL ``doi`` points to, from the doi.org handle API (no landing page is fetched)."""
    data = http.json(DOI_API + quote(doi, safe="/"), missing=missing,
                     hint=f"doi.org does not know the DOI {doi}.")
    try:
        for value in data["values"]:
            if value.get("type") == "URL":
                return str(value["data"]["value"])
    except (KeyError, TypeError, AttributeError) as exc:
        raise http.unreadable() from exc
    raise RefNotFound(missing, hint=f"The DOI {doi} does not point to a web address.")


@dataclass(frozen=True)
class RemoteFile:
    """One file of a record: its path inside the record, where to get it, its size.

    ``exact`` says the archive's size is trustworthy (checked after the download);
    CKAN's, typed in by people, is not.
    """

    name: str
    url: str
    size: int | None = None
    exact: bool = True


def safe_path(name: str, archive: str) -> PurePosixPath:
    """``name`` as a relative path that stays inside the download folder, or an error."""
    parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]
    if not parts or name.startswith(("/", "\\")) or ".." in parts or "\0" in name:
        raise ProviderUnavailable(
            f"{archive} lists a file named {name!r}, which would be written outside the "
            "download folder; binderless refused to download the record.",
            hint="Ask the record's owner to rename the file.",
        )
    return PurePosixPath(*parts)


class _Budget:
    def __init__(self, archive: str, max_bytes: int) -> None:
        self.archive = archive
        self.max_bytes = max_bytes
        self.left = max_bytes

    def refuse(self) -> ProviderUnavailable:
        return ProviderUnavailable(
            f"This {self.archive} record is larger than the {human_size(self.max_bytes)} "
            "binderless downloads."
        )

    def spend(self, size: int) -> None:
        if size > self.left:
            raise self.refuse()
        self.left -= size


def download_record(http: ArchiveHttp, files: Sequence[RemoteFile], dest: Path,
                    log: Callable[[str], None], *, missing: str, unpack_lone_zip: bool = False,
                    max_bytes: int = DEFAULT_MAX_BYTES) -> None:
    """Download ``files`` into the empty folder ``dest``, laid out as repo2docker does.

    With ``unpack_lone_zip`` (Zenodo, Figshare) a record of one ``.zip`` archive is
    unpacked and a single top-level folder in it unwrapped. Other layouts are kept as
    they are: launch links open paths inside them. On failure ``dest`` is left empty.
    """
    dest.mkdir(parents=True, exist_ok=True)
    if any(dest.iterdir()):
        raise ValueError(f"{dest} is not empty")
    try:
        _download_all(http, files, dest, log, missing=missing, max_bytes=max_bytes,
                      unpack_lone_zip=unpack_lone_zip)
    except OSError as exc:  # a full disk, or a file and a folder of the same name
        _empty(dest)
        raise ProviderUnavailable(
            f"binderless could not save the files of this {http.archive} record: "
            f"{exc.strerror or exc}") from exc
    except BaseException:
        _empty(dest)
        raise


def _download_all(http: ArchiveHttp, files: Sequence[RemoteFile], dest: Path,
                  log: Callable[[str], None], *, missing: str, max_bytes: int,
                  unpack_lone_zip: bool) -> None:
    if not files:
        raise RefNotFound(f"This {http.archive} record has no files binderless can download.",
                          hint="Its files may be restricted, embargoed or only linked.")
    paths = [safe_path(f.name, http.archive) for f in files]
    budget = _Budget(http.archive, max_bytes)
    if sum(f.size or 0 for f in files) > max_bytes:
        raise budget.refuse()
    if unpack_lone_zip and len(files) == 1 and files[0].name.lower().endswith(".zip"):
        _fetch_lone_zip(http, files[0], paths[0], dest, log, budget, missing)
        return
    for file, path in zip(files, paths, strict=True):
        target = dest.joinpath(*path.parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        _fetch_one(http, file, target, log, budget, missing)


def _fetch_one(http: ArchiveHttp, file: RemoteFile, target: Path, log: Callable[[str], None],
               budget: _Budget, missing: str) -> None:
    size = f" ({human_size(file.size)})" if file.size is not None else ""
    log(f"Downloading {file.name}{size}...\n")
    limit = budget.left
    if file.exact and file.size is not None:
        limit = min(limit, file.size)
    written = http.download(file.url, target, name=file.name, limit=limit, missing=missing)
    if file.exact and file.size is not None and written != file.size:
        raise ProviderUnavailable(
            f"{file.name} from {http.archive} was cut short: {written} of {file.size} bytes "
            "arrived.", hint="Try again in a few minutes.")
    budget.spend(written)


def _fetch_lone_zip(http: ArchiveHttp, file: RemoteFile, path: PurePosixPath, dest: Path,
                    log: Callable[[str], None], budget: _Budget, missing: str) -> None:
    work = Path(tempfile.mkdtemp(prefix=".binderless-", dir=dest))
    download = work / "download.zip"
    _fetch_one(http, file, download, log, budget, missing)
    if zipfile.is_zipfile(download):
        log(f"Unpacking {file.name}...\n")
        unpacked = work / "unpacked"
        _extract(download, unpacked, budget, file.name)
        download.unlink()
        entries = list(unpacked.iterdir())
        source = entries[0] if len(entries) == 1 and _is_dir(entries[0]) else unpacked
        for child in source.iterdir():
            child.rename(dest / child.name)
    else:
        target = dest.joinpath(*path.parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        download.rename(target)
    shutil.rmtree(work)


def _extract(archive: Path, out: Path, budget: _Budget, name: str) -> None:
    """Unpack ``archive`` into ``out``: names checked, sizes counted, no symlinks made."""
    try:
        with zipfile.ZipFile(archive) as zf:
            # Finder adds __MACOSX/ beside the real folder; it would stop the unwrapping.
            members = [m for m in zf.infolist() if not m.filename.startswith("__MACOSX/")]
            if sum(m.file_size for m in members) > budget.left:
                raise budget.refuse()
            for member in members:
                target = out.joinpath(*safe_path(member.filename, budget.archive).parts)
                if member.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(member) as src, target.open("wb") as dst:
                    while chunk := src.read(CHUNK):
                        budget.spend(len(chunk))
                        dst.write(chunk)
                if (member.external_attr >> 16) & 0o111:
                    target.chmod(0o755)
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError) as exc:
        raise ProviderUnavailable(
            f"{name} from {budget.archive} is not a zip archive binderless can unpack: {exc}"
        ) from exc


def _is_dir(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink()


def _empty(root: Path) -> None:
    for child in root.iterdir():
        if _is_dir(child):
            shutil.rmtree(child)
        else:
            child.unlink()


class ArchiveBase:
    """The shared part of an archive provider: its HTTP access and its display entry.

    Subclasses set ``prefix``, ``display_name``, ``archive`` (the name in messages) and
    the ``/api/repoproviders`` fields ``spec_regex``, ``repo_label``, ``placeholder`` and
    ``url_encode``.
    """

    prefix: str
    display_name: str
    archive: str
    spec_regex: str = r"10\.\d+\/(.)+"
    repo_label: str
    placeholder: str
    url_encode: bool = False

    def __init__(self, client: httpx.Client, *, clock: Callable[[], float] = time.time,
                 max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self._http = ArchiveHttp(client, self.archive, clock)
        self._doi = ArchiveHttp(client, "doi.org", clock)
        self.max_bytes = max_bytes

    def record(self, spec: str, *, page: str, api_url: str, version_id: str,
               persistent_spec: str, slug_key: str, ref_url: str = "") -> ResolvedRepo:
        """The resolved form of ``spec``: a record ``page`` (its ``ref_url`` too unless
        given), the ``api_url`` its files are read from, the pinned ``version_id`` and the
        ``persistent_spec`` that launches exactly that version again."""
        return ResolvedRepo(
            provider=self.prefix,
            spec=spec,
            repo_url=page,
            clone_url=api_url,
            ref="",
            resolved_ref=version_id,
            persistent_spec=persistent_spec,
            ref_url=ref_url or page,
            slug=slugify(f"{self.prefix}-{slug_key}"),
            kind="archive",
        )

    def display_config(self) -> dict[str, Any]:
        return {
            "id": self.prefix,
            "displayName": self.display_name,
            "spec": {"validateRegex": self.spec_regex},
            "repo": {"label": self.repo_label, "placeholder": self.placeholder,
                     "urlEncode": self.url_encode},
            "ref": {"enabled": False},
        }
