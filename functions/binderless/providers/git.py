"""Any git repository: ``git/<url-encoded clone URL>/<ref>``.

In local mode the URL may also be a ``file://`` URL or a local directory; a
directory without its own ``.git`` is launched as it is, pinned by a hash of
its content.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from ..errors import (
    BadLink,
    ProviderUnavailable,
    RefNotFound,
    SpecNotAllowed,
    UnsupportedRepository,
)
from ..urlguard import UrlGuard
from .base import ResolvedRepo, not_found, slugify

__all__ = ["GitProvider", "content_hash", "split_git_spec"]

SHA_RE = re.compile(r"^[0-9a-f]{40}$")
GIT_TIMEOUT = 60.0
GIT_ENV = {"GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "true", "LC_ALL": "C"}


def split_git_spec(spec: str) -> tuple[str, str]:
    """Split ``<encoded url>/<ref>`` into the decoded URL and the ref.

    Also accepts Jupyter Book's form, where ``quote()`` left the URL's slashes
    in place (``https%3A//host/org/repo/main``): then the ref is the last segment.
    """
    head, sep, ref = spec.partition("/")
    url = unquote(head)
    if not sep:
        raise BadLink(f"The git spec {spec!r} has no ref: use git/<encoded URL>/<ref>.")
    if head.endswith("%3A") or head.endswith("%3a") or url.endswith(":"):
        # Jupyter Book: the URL kept its slashes, so the last segment is the ref.
        url_part, _, ref = spec.rpartition("/")
        url = unquote(url_part)
    if not url or not ref:
        raise BadLink(f"The git spec {spec!r} needs a repository URL and a ref.")
    return url, unquote(ref)


MAX_DIR_FILES = 20_000
MAX_DIR_BYTES = 2 * 1024**3


def content_hash(root: Path) -> str:
    """A stable hash of a directory's files (names, modes and contents), ``.git`` aside.

    Refuses folders of more than 20,000 files or 2 GiB: launching ``/`` by mistake
    must not copy a whole disk.
    """
    digest = hashlib.sha256()
    files = size = 0
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d != ".git")
        files += len(filenames)
        if files > MAX_DIR_FILES:
            raise UnsupportedRepository(
                f"{root} holds more than {MAX_DIR_FILES:,} files, too many to launch as a folder.",
                hint="Launch the project folder itself, or make it a git repository.")
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if path.is_file() and not path.is_symlink():
                size += path.stat().st_size
                if size > MAX_DIR_BYTES:
                    raise UnsupportedRepository(
                        f"{root} holds more than 2 GiB, too much to launch as a folder.",
                        hint="Launch the project folder itself, or make it a git repository.")
            rel = path.relative_to(root).as_posix()
            digest.update(rel.encode() + b"\0")
            if path.is_symlink():
                digest.update(b"L" + os.readlink(path).encode())
            elif path.is_file():
                digest.update(b"X" if os.access(path, os.X_OK) else b"F")
                digest.update(path.read_bytes())
            digest.update(b"\0")
    return digest.hexdigest()


class GitProvider:
    prefix = "git"
    display_name = "Git repository"

    def __init__(self, *, allow_local: bool, guard: UrlGuard | None = None,
                 run_git: Callable[[Sequence[str]], str] | None = None) -> None:
        self.allow_local = allow_local
        self.guard = guard or UrlGuard(enforce=not allow_local)
        self._run_git = run_git or _git

    def display_config(self) -> dict[str, Any]:
        return {
            "id": self.prefix,
            "displayName": self.display_name,
            "spec": {"validateRegex": r"[^/].+"},
            "repo": {
                "label": "Arbitrary git repository URL",
                "placeholder": "https://example.com/org/repo.git",
                "urlEncode": True,
            },
            "ref": {"enabled": True, "default": "HEAD"},
        }

    def _local_path(self, url: str) -> Path | None:
        parts = urlsplit(url)
        if parts.scheme == "file":
            return Path(unquote(parts.path))
        if not parts.scheme and url.startswith(("/", "~", ".")):
            return Path(url).expanduser()
        return None

    def parse_offline(self, spec: str) -> tuple[str, str]:
        return split_git_spec(spec)

    def resolve(self, spec: str) -> ResolvedRepo:
        url, ref = split_git_spec(spec)
        local = self._local_path(url)
        if local is not None:
            if not self.allow_local:
                raise SpecNotAllowed(
                    "This server does not launch local paths or file:// URLs.",
                    hint="Use an https:// clone URL. (A local binderless listening on 127.0.0.1 "
                    "allows them; see --allow-local-paths.)",
                )
            return self._resolve_local(spec, url, local, ref)
        scheme = urlsplit(url).scheme
        if scheme not in ("https", "http", "git", "ssh") and not re.match(r"^[\w.-]+@[\w.-]+:", url):
            raise BadLink(f"{url!r} is not a git URL. Use an https:// clone URL.")
        self.guard.check(url)
        resolved = ref if SHA_RE.match(ref) else self._ls_remote(spec, url, ref)
        return self._result(spec, url, ref, resolved)

    def _result(self, spec: str, url: str, ref: str, resolved: str, *, kind: str = "git",
                clone_url: str | None = None) -> ResolvedRepo:
        name = url.rstrip("/").removesuffix(".git").rsplit("/", 1)[-1]
        return ResolvedRepo(
            provider=self.prefix,
            spec=spec,
            repo_url=url,
            clone_url=clone_url or url,
            ref=ref,
            resolved_ref=resolved,
            persistent_spec=f"{quote(url, safe='')}/{resolved}",
            ref_url=url,
            slug=slugify(name),
            kind="dir" if kind == "dir" else "git",
        )

    def _resolve_local(self, spec: str, url: str, path: Path, ref: str) -> ResolvedRepo:
        if not path.is_dir():
            raise RefNotFound(f"There is no directory at {path}.", hint="Check the path in the link.")
        if (path / ".git").exists():
            try:
                out = self._run_git(["git", "-C", str(path), "rev-parse", "--verify", "--quiet",
                            f"{ref}^{{commit}}"])
            except subprocess.CalledProcessError as exc:
                raise RefNotFound(not_found(self.prefix, spec)) from exc
            return self._result(spec, url, ref, out.strip(), clone_url=str(path))
        if ref not in ("HEAD", "master", "main"):
            raise RefNotFound(
                f"{path} is a plain directory, not a git repository, so it has no ref {ref!r}.",
                hint="Use HEAD as the ref.",
            )
        digest = content_hash(path)[:40]
        return self._result(spec, url, ref, digest, kind="dir", clone_url=str(path))

    def _ls_remote(self, spec: str, url: str, ref: str) -> str:
        try:
            # Redirects are not followed: a redirect could lead past the URL guard.
            out = self._run_git(["git", "-c", "http.followRedirects=false", "ls-remote", "--",
                                 url, ref])
        except subprocess.CalledProcessError as exc:
            raise RefNotFound(not_found(self.prefix, spec)) from exc
        except subprocess.TimeoutExpired as exc:
            raise ProviderUnavailable(
                f"The git server for {url} did not answer in time.", hint="Try again later."
            ) from exc
        refs: dict[str, str] = {}
        for line in out.splitlines():
            sha, _, name = line.partition("\t")
            refs[name] = sha
        for candidate in (ref, f"refs/heads/{ref}", f"refs/tags/{ref}^{{}}", f"refs/tags/{ref}"):
            if candidate in refs:
                return refs[candidate]
        raise RefNotFound(not_found(self.prefix, spec))


def _git(cmd: Sequence[str]) -> str:
    env = {**os.environ, **GIT_ENV}
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=GIT_TIMEOUT,
                            check=True)
    return result.stdout
