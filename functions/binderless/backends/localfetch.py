"""Fetch repositories for the local mode: git through a mirror cache, directories by copy."""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from ..errors import RefNotFound
from ..providers.base import ArchiveProvider, RepoProvider, ResolvedRepo
from .process import ProcessFailed, stream_process
from .protocols import LogSink

__all__ = ["LocalFetcher"]

GIT_ENV = {
    "GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "true", "LC_ALL": "C",
    # Redirects are not followed: the URL guard checked this URL, not where it might lead.
    "GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "http.followRedirects",
    "GIT_CONFIG_VALUE_0": "false",
}


class LocalFetcher:
    """Remote git repositories are mirrored once under ``cache_dir`` and cloned from there."""

    def __init__(self, cache_dir: Path,
                 archives: Callable[[str], RepoProvider] | None = None) -> None:
        """``archives(prefix)`` returns the provider that downloads ``kind="archive"`` repos."""
        self.cache_dir = cache_dir
        self.archives = archives
        self._locks: dict[str, asyncio.Lock] = {}

    async def fetch(self, repo: ResolvedRepo, dest: Path, log: LogSink) -> None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        if repo.kind == "archive":
            provider = self.archives(repo.provider) if self.archives else None
            if not isinstance(provider, ArchiveProvider):
                raise RefNotFound(f"binderless cannot download {repo.provider} records here.")
            dest.mkdir(parents=True, exist_ok=True)
            await asyncio.to_thread(provider.fetch, repo, dest, log)
            return
        if repo.kind == "dir":
            await asyncio.to_thread(
                shutil.copytree, repo.clone_url, dest, symlinks=True,
                ignore=shutil.ignore_patterns(".git"), dirs_exist_ok=True,
            )
            log(f"Copied {repo.clone_url}\n")
            return
        env = {**os.environ, **GIT_ENV}
        source = repo.clone_url
        try:
            if not Path(source).is_dir():
                source = str(await self._mirror(repo, env, log))
            await stream_process(["git", "clone", "--quiet", "--no-checkout", source, str(dest)],
                                 log=log, env=env)
            await stream_process(["git", "-C", str(dest), "checkout", "--quiet", "--detach",
                                  repo.resolved_ref], log=log, env=env)
            await stream_process(["git", "-C", str(dest), "remote", "set-url", "origin",
                                  repo.repo_url], log=log, env=env)
        except ProcessFailed as exc:
            shutil.rmtree(dest, ignore_errors=True)
            raise RefNotFound(
                f"Could not check out {repo.resolved_ref[:12]} of {repo.repo_url}: "
                + (exc.tail[-1] if exc.tail else "git failed"),
                hint="Check that the repository is public and the ref exists.",
            ) from exc
        log(f"Checked out {repo.resolved_ref}\n")

    async def _mirror(self, repo: ResolvedRepo, env: dict[str, str], log: LogSink) -> Path:
        name = hashlib.sha256(repo.clone_url.encode()).hexdigest()[:16] + ".git"
        mirror = self.cache_dir / name
        lock = self._locks.setdefault(name, asyncio.Lock())
        async with lock:
            if not mirror.exists():
                log(f"Cloning {repo.repo_url}...\n")
                tmp = mirror.with_suffix(".tmp")
                shutil.rmtree(tmp, ignore_errors=True)
                self.cache_dir.mkdir(parents=True, exist_ok=True)
                await stream_process(["git", "clone", "--quiet", "--mirror", repo.clone_url,
                                      str(tmp)], log=log, env=env)
                tmp.rename(mirror)
            else:
                probe = await asyncio.create_subprocess_exec(
                    "git", "-C", str(mirror), "cat-file", "-e", f"{repo.resolved_ref}^{{commit}}",
                    stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL, env=env,
                )
                if await probe.wait() != 0:
                    log(f"Updating the cached copy of {repo.repo_url}...\n")
                    await stream_process(["git", "-C", str(mirror), "fetch", "--quiet", "--prune",
                                          "origin"], log=log, env=env)
        return mirror
