"""The repository provider interface: turn a spec into a pinned, fetchable source."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

__all__ = [
    "ArchiveProvider",
    "OfflineParser",
    "RepoProvider",
    "ResolvedRepo",
    "not_found",
    "slugify",
]


@dataclass(frozen=True)
class ResolvedRepo:
    """A spec resolved to one immutable revision.

    ``clone_url`` is what the fetcher reads: a git URL, a local directory when
    ``kind`` is ``"dir"``, or (``"archive"``) whatever the provider's own ``fetch``
    needs, such as a record's API URL. ``repo_url`` and ``ref_url`` are for people.
    ``notes`` are things the user should be told (shown as ``waiting`` events).
    """

    provider: str
    spec: str
    repo_url: str
    clone_url: str
    ref: str
    resolved_ref: str
    persistent_spec: str
    ref_url: str
    slug: str
    kind: Literal["git", "dir", "archive"] = "git"
    notes: tuple[str, ...] = ()

    @property
    def persistent_request(self) -> str:
        return f"v2/{self.provider}/{self.persistent_spec}"


class RepoProvider(Protocol):
    """One source of repositories, named by its link prefix (``gh``, ``git``, ...)."""

    prefix: str
    display_name: str

    def resolve(self, spec: str) -> ResolvedRepo:
        """Resolve ``spec`` (still URL-encoded, as it appears in the link).

        Raises ``BadLink`` for a malformed spec, ``RefNotFound`` for an unknown
        repository or ref, ``SpecNotAllowed`` when policy refuses it and
        ``ProviderUnavailable`` when the host fails or rate-limits.
        """
        ...

    def display_config(self) -> dict[str, Any]:
        """The entry for ``/api/repoproviders``: id, displayName, spec regex, labels."""
        ...


def slugify(text: str) -> str:
    """A lower-case, image-name-safe rendering of a repository name."""
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return slug[:60] or "repo"


def not_found(prefix: str, spec: str) -> str:
    return (
        f"Could not resolve ref for {prefix}:{spec}. "
        "Double check your URL and that your repo is public."
    )


@runtime_checkable
class ArchiveProvider(RepoProvider, Protocol):
    """A provider of data archives (Zenodo, Figshare, ...): it downloads its own content."""

    def fetch(self, repo: ResolvedRepo, dest: Path, log: Callable[[str], None]) -> None:
        """Download the record's files into the empty directory ``dest``; unpack a lone
        zip archive the way repo2docker does. Raises ``RefNotFound`` or
        ``ProviderUnavailable``; leaves ``dest`` empty on failure."""
        ...


@runtime_checkable
class OfflineParser(Protocol):
    """A provider that can tell, without the network, which repository and ref a spec names."""

    def parse_offline(self, spec: str) -> tuple[str, str]:
        """Return ``(repo_url, ref)``; raise ``BadLink`` when the spec is malformed."""
        ...
