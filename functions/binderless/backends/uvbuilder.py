"""The local builder: a uv virtual environment per environment key, no Docker needed.

Environments live in ``<state>/envs/<key>/``; a marker file written last says the
build finished, so a crash or a failure never leaves a half-built environment in use.
``postBuild`` runs in a scratch copy of the repository with the environment active;
the files it adds to the repository folder (the session's home) are kept in
``<env>/home/`` and copied into each session, as repo2docker's image would have them.

A build in progress works in ``<state>/envs/.build-<key>-<pid>-<n>/``; the folders of
builds whose process died (killed mid-way) are removed when a builder starts, with any
environment folder they left unfinished. When sessions run under uids of their own,
builds run under a uid of their own too (a repository's ``setup.py`` and ``postBuild``
are its code, never to run as the server's user), on a Python interpreter sessions can
reach; the finished environment is handed back to the server, readable and never
writable by sessions.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import shutil
import stat
import sys
import time
from pathlib import Path

from ..buildpacks import BUILDPACK_NAMES, detect_buildpack
from ..envplan import EnvironmentPlan, plan_environment
from ..errors import BuildFailed, UnsupportedRepository
from ..settings import Settings
from .process import ProcessFailed, process_exists, stream_process
from .protocols import ImageRef, LogSink
from .pythons import default_python, find_python
from .uids import UidPool, chown_tree, kill_uid, unreachable_part

__all__ = ["UvBuilder", "uv_binary"]

log = logging.getLogger("binderless.uvbuilder")

#: Run the rest of the command line as the uid given first (and its gid, no other
#: groups): ``python -I -c DROP_PRIVILEGES <uid> <cmd>...``.
DROP_PRIVILEGES = ("import os, sys; uid = int(sys.argv[1]); os.setgroups([]); os.setgid(uid); "
                   "os.setuid(uid); os.umask(0o022); os.execvp(sys.argv[2], sys.argv[2:])")
#: What an isolated build sees of the server's environment (never its secrets).
BUILD_ENV = {"PATH", "LANG", "LANGUAGE", "TERM", "TZ", "SSL_CERT_FILE", "SSL_CERT_DIR",
             "REQUESTS_CA_BUNDLE", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy",
             "https_proxy", "no_proxy"}

MARKER = ".binderless-complete"
SUPPORTED_BUILDPACKS = {"PythonBuildPack", "PipfileBuildPack", "CondaBuildPack"}
OTHER_BUILDER = (
    "Start binderless with --builder auto or docker where a Docker engine runs "
    "(python3 dev.py engine starts one), or launch it on a binderless deployed to AWS, "
    "which builds with repo2docker."
)


def uv_binary() -> str:
    from uv import find_uv_bin

    return str(find_uv_bin())


class UvBuilder:
    name = "uv"
    #: What it builds, in the words launches show ("Built the environment, launching...").
    artifact = "environment"

    def __init__(self, settings: Settings, *, uids: UidPool | None = None) -> None:
        """``uids``: where builds get their uid when sessions are isolated (share the
        spawner's pool, so that a build and a session never get the same one)."""
        self.settings = settings
        self.envs_dir = settings.state_dir / "envs"
        self.uv = uv_binary()
        if uids is None and settings.uid_sessions:
            uids = UidPool(settings.state_dir / "uids.json", *settings.uid_range)
        self.uids = uids
        self.remove_interrupted()

    def remove_interrupted(self) -> list[str]:
        """Remove what builds killed mid-way left: their scratch folders, and environment
        folders without the marker a finished build writes last (unless a live process
        is building them). Returns the names removed."""
        if not self.envs_dir.is_dir():
            return []
        building: set[str] = set()
        leftovers: list[Path] = []
        for entry in self.envs_dir.iterdir():
            if not entry.name.startswith(".build-"):
                continue
            key, _, rest = entry.name[len(".build-"):].partition("-")
            pid = rest.partition("-")[0]
            if pid.isdigit() and int(pid) != os.getpid() and process_exists(int(pid)):
                building.add(key)
            else:
                leftovers.append(entry)
        for entry in self.envs_dir.iterdir():
            if (not entry.name.startswith(".") and entry.is_dir()
                    and not (entry / MARKER).exists() and entry.name not in building):
                leftovers.append(entry)
        for entry in leftovers:
            log.info("removing %s, left by an interrupted build", entry)
            shutil.rmtree(entry, ignore_errors=True)
        return [entry.name for entry in leftovers]

    def plan(self, checkout: Path) -> EnvironmentPlan:
        return plan_environment(checkout, salt=f"uv:{self.settings.jupyterlab_requirement}")

    def env_dir(self, key: str) -> Path:
        return self.envs_dir / key

    def image(self, key: str) -> ImageRef:
        return ImageRef(key=key, name=f"local-env:{key}", location=str(self.env_dir(key)))

    async def find(self, plan: EnvironmentPlan) -> ImageRef | None:
        env_dir = self.env_dir(plan.key)
        if not (env_dir / MARKER).exists():
            return None
        if self.settings.uid_sessions and unreachable_part(env_dir / "bin" / "python"):
            # Built before sessions had uids of their own, on an interpreter they cannot
            # reach (under root's home): build it again on one they can.
            return None
        return self.image(plan.key)

    def _python(self, plan: EnvironmentPlan) -> str:
        """The interpreter to build on: with uid sessions, one every user can run."""
        python = find_python(plan.python_version) if plan.python_version else default_python()
        if not self.settings.uid_sessions or unreachable_part(python) is None:
            return python
        version = plan.python_version or f"{sys.version_info[0]}.{sys.version_info[1]}"
        for candidate in (shutil.which(f"python{version}") or "",
                          f"/usr/bin/python{version}", f"/usr/local/bin/python{version}"):
            if candidate and Path(candidate).exists() and unreachable_part(candidate) is None:
                return candidate
        raise BuildFailed(
            f"Sessions run under user ids of their own, and cannot run Python {version} "
            f"from {python}: {unreachable_part(python)} is closed to other users.",
            hint=f"Install Python {version} where every user can run it (for example "
                 f"apt-get install python{version}), or open that folder (chmod o+x).")

    def _env(self, env_dir: Path, home: Path) -> dict[str, str]:
        env = dict(os.environ)
        if self.uids is not None:
            env = {k: v for k, v in env.items()
                   if k in BUILD_ENV or k.startswith(("LC_", "UV_", "PIP_"))}
            # The build's own cache: a shared one would let one build plant files in
            # environments built after it. UV_LINK_MODE: no file shared with it either.
            env.update({"UV_CACHE_DIR": str(home / ".cache" / "uv"), "UV_LINK_MODE": "copy"})
        env.update({
            "VIRTUAL_ENV": str(env_dir),
            "PATH": f"{env_dir / 'bin'}{os.pathsep}{env.get('PATH', '')}",
            "HOME": str(home),
            "UV_PYTHON_DOWNLOADS": "never",
            "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        })
        if self.settings.uv_cache_dir and self.uids is None:
            env["UV_CACHE_DIR"] = self.settings.uv_cache_dir
        return env

    async def check_supported(self, plan: EnvironmentPlan, checkout: Path) -> str:
        buildpack = await asyncio.to_thread(detect_buildpack, checkout)
        if buildpack not in SUPPORTED_BUILDPACKS or plan.unsupported:
            needs = ", ".join(plan.unsupported) or BUILDPACK_NAMES.get(buildpack, buildpack)
            raise UnsupportedRepository(
                f"This repository needs {needs} (repo2docker's "
                f"{BUILDPACK_NAMES.get(buildpack, buildpack)} buildpack), which the local uv "
                "builder cannot build.",
                hint=OTHER_BUILDER,
            )
        return buildpack

    async def build(self, plan: EnvironmentPlan, checkout: Path, log: LogSink) -> ImageRef:
        buildpack = await self.check_supported(plan, checkout)
        log(f"Building with uv (repo2docker would use its {BUILDPACK_NAMES[buildpack]} "
            f"buildpack): {plan.describe()}\n")
        python = self._python(plan)
        env_dir = self.env_dir(plan.key)
        scratch = self.envs_dir / f".build-{plan.key}-{os.getpid()}-{time.monotonic_ns()}"
        shutil.rmtree(env_dir, ignore_errors=True)
        uid: int | None = None
        if self.uids is not None:
            for needed in (self.uv, python):
                if unreachable_part(needed) is not None:
                    raise BuildFailed(f"Builds run under user ids of their own, and cannot "
                                      f"run {needed}: {unreachable_part(needed)} is closed "
                                      "to other users.", hint="Open it (chmod o+x), or install "
                                      "binderless where every user can run it.")
            uid = await asyncio.to_thread(self.uids.for_session, scratch.name)
        try:
            await asyncio.to_thread(shutil.copytree, checkout, scratch, symlinks=True)
            if uid is not None:
                await asyncio.to_thread(_give, scratch, env_dir, uid)
            await self._run(plan, scratch, env_dir, python, log, uid)
            if uid is not None:
                await asyncio.to_thread(_take_back, env_dir, uid)
            _quiet_jupyterlab(env_dir)
            if uid is not None:
                await asyncio.to_thread(_open_to_sessions, env_dir)
            (env_dir / MARKER).write_text(plan.key + "\n")
        except BaseException:
            shutil.rmtree(env_dir, ignore_errors=True)
            raise
        finally:
            if uid is not None and self.uids is not None:
                await asyncio.to_thread(kill_uid, uid)
                self.uids.release(scratch.name)
            shutil.rmtree(scratch, ignore_errors=True)
        return self.image(plan.key)

    def _as(self, uid: int | None, cmd: list[str]) -> list[str]:
        return cmd if uid is None else [sys.executable, "-I", "-c", DROP_PRIVILEGES,
                                        str(uid), *cmd]

    async def _run(self, plan: EnvironmentPlan, work: Path, env_dir: Path, python: str,
                   log: LogSink, uid: int | None = None) -> None:
        """Build in ``work``; with ``uid``, every command runs as that uid, and between
        commands (when the server touches ``work`` itself) no process of it runs."""
        env = self._env(env_dir, work)
        timeout = self.settings.build_timeout_seconds
        step = "creating the Python environment"
        try:
            await stream_process(self._as(uid, [self.uv, "venv", "--quiet", "--seed",
                                                "--python", python, str(env_dir)]),
                                 log=log, env=env, timeout=timeout)
            step = "installing the packages"
            install = [self.uv, "pip", "install", "--python", str(env_dir / "bin" / "python"),
                       self.settings.jupyterlab_requirement]
            for req_file in plan.requirement_files:
                install += ["-r", req_file]
            install += list(plan.requirements)
            if plan.install_repo:
                install.append(".")
            await stream_process(self._as(uid, install), log=log, cwd=work, env=env,
                                 timeout=timeout)
            if plan.post_build:
                step = plan.post_build
                if uid is not None:
                    await asyncio.to_thread(kill_uid, uid)
                script = work / plan.post_build
                if not script.is_symlink():  # chmod would change the file it points to
                    script.chmod(script.stat().st_mode | 0o755)
                before = _snapshot(work)
                log(f"Running {plan.post_build}\n")
                await stream_process(self._as(uid, [str(script)]), log=log, cwd=work, env=env,
                                     timeout=timeout)
                if uid is not None:
                    await asyncio.to_thread(kill_uid, uid)
                _keep_changes(work, before, env_dir / "home")
        except ProcessFailed as exc:
            raise _build_failure(plan, step, exc, work) from exc


def _build_failure(plan: EnvironmentPlan, step: str, exc: ProcessFailed,
                   work: Path) -> BuildFailed:
    """The error a failed build step becomes: what failed, uv's reason once, and, when the
    repository is at fault, the file and line to fix."""
    if exc.returncode is None:
        return BuildFailed(f"Building the environment took too long ({step}).",
                           hint="A build that downloads a lot may pass when tried again; "
                           "one that always takes this long needs a smaller environment.")
    cause = _cause(exc.tail)
    if not step.startswith(("creating", "installing")):
        # postBuild (or another script of the repository) exited non-zero.
        return BuildFailed(f"{step} failed (exit code {exc.returncode}).",
                           hint=f"Its last output was: {cause}" if cause else "",
                           fault="repository", file=step)
    if step.startswith("creating"):
        return BuildFailed("Building the environment failed while creating the Python "
                           "environment.", hint=f"uv said: {cause}" if cause else "")
    files = list(plan.requirement_files)
    if plan.requirements:
        files += [f for f in ("environment.yml", "binder/environment.yml", ".binder/"
                              "environment.yml") if (work / f).is_file()]
    file, line, text = _culprit(exc.tail, files, work)
    what = "Building the environment failed while installing the packages" + (
        f" of {file}." if file else ".")
    hint = f"uv said: {cause}" if cause else ""
    if file and line:
        hint += f"\nFix line {line} of {file}: {text}"
    if plan.requirements and step.startswith("installing"):
        hint += ("\nPackages from environment.yml are installed with pip here; "
                 "conda-only packages need --builder docker.")
    # uv stops at what the repository asks for (a package that does not exist, a typo, a
    # version conflict) before it installs anything; a failure with no file named may
    # still be the network's or the index's.
    fault = "repository" if file or "No solution found" in "\n".join(exc.tail) else "server"
    return BuildFailed(what, hint=hint.strip(), fault=fault, file=file, line=line)


def _cause(tail: list[str]) -> str:
    """uv's reason, in one line: its ``cause:`` lines when it gives them (the last line
    of the log may be a caret under the requirement), else the last line."""
    lines = [line.strip() for line in tail if line.strip()]
    causes = [line.removeprefix("cause:").strip() for line in lines
              if line.startswith("cause:")]
    if causes:
        return " ".join(causes)
    errors = [line.removeprefix("error:").strip() for line in lines if line.startswith("error:")]
    return errors[-1] if errors else (lines[-1] if lines else "")


PARSE_ERROR_RE = re.compile(r"parse requirement in `([^`]+)` at position (\d+)")
#: uv's words when what the repository asks for cannot be had.
BLAMES_REQUIREMENT_RE = re.compile(r"No solution found|not found in the package registry|"
                                   r"unsatisfiable|no versions? of|does not exist", re.IGNORECASE)
REQUIREMENT_NAME_RE = re.compile(r"^\s*-?\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def _culprit(tail: list[str], files: list[str], work: Path) -> tuple[str, int, str]:
    """``(file, line, its text)`` of the requirement uv's output blames; ``("", 0, "")``
    when none can be told. uv names the file and byte offset of a line it cannot parse,
    and the package it cannot find or fit."""
    log = "\n".join(tail)

    def read(name: str) -> list[str]:
        try:
            return (work / name).read_text(errors="replace").splitlines()
        except (OSError, ValueError):
            return []

    parse = PARSE_ERROR_RE.search(log)
    if parse and parse.group(1) in files:
        offset = int(parse.group(2))
        try:
            before = (work / parse.group(1)).read_bytes()[:offset]
        except OSError:
            return parse.group(1), 0, ""
        number = before.count(b"\n") + 1
        lines = read(parse.group(1))
        return parse.group(1), number, lines[number - 1].strip() if number <= len(lines) else ""
    if not BLAMES_REQUIREMENT_RE.search(log):
        return "", 0, ""  # a download or network failure names packages it is not about
    # Only uv's error (from its first "error:" line) names the culprit: the progress above
    # it names every package.
    start = next((i for i, line in enumerate(tail) if line.lstrip().startswith("error:")), 0)
    error = "\n".join(tail[start:]).lower().replace("_", "-")
    said = set(re.findall(r"[a-z0-9][a-z0-9._-]*", error))
    for name in files:
        for number, text in enumerate(read(name), start=1):
            match = REQUIREMENT_NAME_RE.match(text)
            if match and not text.lstrip().startswith("#") and \
                    match.group(1).lower().replace("_", "-") in said:
                if name.endswith("environment.yml") and text.rstrip().endswith(":"):
                    continue  # a YAML key (dependencies:, pip:), not a package
                return name, number, text.strip()
    return "", 0, ""

    return True


def _open_to_sessions(env_dir: Path) -> None:
    """Let every user read the environment, and run what its owner may run (whatever the
    server's umask made it); nobody but the owner writes it."""
    for dirpath, dirnames, filenames in os.walk(env_dir):
        for name in (*dirnames, *filenames):
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                continue
            wanted = st.st_mode | stat.S_IROTH | stat.S_IRGRP
            if stat.S_ISDIR(st.st_mode) or st.st_mode & stat.S_IXUSR:
                wanted |= stat.S_IXOTH | stat.S_IXGRP
            wanted &= ~(stat.S_IWOTH | stat.S_IWGRP)
            if wanted != st.st_mode:
                os.chmod(path, stat.S_IMODE(wanted))
    os.chmod(env_dir, 0o755)


def _snapshot(root: Path) -> dict[str, tuple[float, int]]:
    seen: dict[str, tuple[float, int]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d != ".git"]
        for name in filenames:
            path = Path(dirpath) / name
            try:
                st = path.lstat()
            except OSError:
                continue
            seen[str(path.relative_to(root))] = (st.st_mtime, st.st_size)
    return seen


def _keep_changes(root: Path, before: dict[str, tuple[float, int]], overlay: Path) -> None:
    """Copy files that ``postBuild`` created or changed under ``root`` into ``overlay``."""
    after = _snapshot(root)
    for rel, stamp in after.items():
        if before.get(rel) == stamp or rel.startswith(".cache/"):
            continue
        target = overlay / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / rel, target, follow_symlinks=False)


def _quiet_jupyterlab(env_dir: Path) -> None:
    """Turn off JupyterLab's news pop-up: sessions are short and the network may be closed.

    Written after the build (a link the build left on the way is refused, never
    followed), keeping whatever else the build configured there."""
    folder = env_dir
    for part in ("etc", "jupyter", "labconfig"):
        folder = folder / part
        if folder.is_symlink():
            raise BuildFailed(f"The build left a link at {folder.relative_to(env_dir)}, "
                              "where JupyterLab's settings go.")
        folder.mkdir(exist_ok=True)
    config = folder / "page_config.json"
    data: dict[str, object] = {}
    if config.is_file() and not config.is_symlink():
        try:
            loaded = json.loads(config.read_text())
            data = loaded if isinstance(loaded, dict) else {}
        except (OSError, ValueError):
            data = {}
    config.unlink(missing_ok=True)
    disabled = data.get("disabledExtensions")
    data["disabledExtensions"] = {**(disabled if isinstance(disabled, dict) else {}),
                                  "@jupyterlab/apputils-extension:announcements": True}
    config.write_text(json.dumps(data, indent=1) + "\n")


def _give(scratch: Path, env_dir: Path, uid: int) -> None:
    """Hand the build's folders to its uid: the copy it works in, and the empty
    environment folder it fills."""
    chown_tree(scratch, uid, uid)
    env_dir.mkdir()
    os.chown(env_dir, uid, uid)


def _take_back(env_dir: Path, uid: int) -> None:
    """Make the finished environment the server's: no process of the build's uid runs
    any more, so the tree holds still. A file the build gave several names is copied
    first: the server must own every byte a session runs."""
    kill_uid(uid)
    me, group = os.geteuid(), os.getegid()
    os.chown(env_dir, me, group, follow_symlinks=False)
    for _dirpath, dirnames, filenames, dirfd in os.fwalk(env_dir, follow_symlinks=False):
        for name in (*dirnames, *filenames):
            st = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
            if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
                _own_copy(name, dirfd, st)
            os.chown(name, me, group, dir_fd=dirfd, follow_symlinks=False)


def _own_copy(name: str, dirfd: int, st: os.stat_result) -> None:
    """Replace the file ``name`` (in ``dirfd``) by a copy of its own, same mode."""
    tmp = f".{name}.binderless-copy"
    src = os.open(name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=dirfd)
    try:
        dst = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW,
                      stat.S_IMODE(st.st_mode), dir_fd=dirfd)
        try:
            while chunk := os.read(src, 1 << 20):
                os.write(dst, chunk)
        finally:
            os.close(dst)
    finally:
        os.close(src)
    os.replace(tmp, name, src_dir_fd=dirfd, dst_dir_fd=dirfd)
