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
from collections.abc import Awaitable, Callable
from pathlib import Path

from ..buildpacks import BUILDPACK_NAMES
from ..envplan import R2D_DEFAULT_PYTHON, EnvironmentPlan, plan_environment
from ..errors import BinderlessError, BuildFailed, UnsupportedRepository
from ..settings import Settings
from .process import ProcessFailed, process_exists, stream_process
from .protocols import ImageRef, LogSink
from .pythons import available_python, default_python, find_python
from .uids import UidPool, chown_tree, kill_uid, unreachable_part

__all__ = ["KERNEL_DIR", "OTHER_BUILDER", "UvBuilder", "advise", "post_build_command",
           "swap_advice", "uv_binary"]

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
#: Where a kernel environment of its own (a Python older than the notebook server's,
#: repo2docker's ``KERNEL_PYTHON_PREFIX``) lives inside the environment folder.
KERNEL_DIR = "kernel"
#: The last virtualenv that creates Python 2 environments (uv does not).
PY2_VIRTUALENV = "virtualenv<20.22"
SUPPORTED_BUILDPACKS = {"PythonBuildPack", "PipfileBuildPack", "CondaBuildPack"}
#: The advice of a refusal under ``--builder uv``: the builder that can. A refusal says what
#: the repository asks for and why the uv builder cannot in its message, then gives one
#: piece of advice (``advise``): this, or ``autobuilder.NO_ENGINE_HINT`` without an engine.
OTHER_BUILDER = (
    "Start binderless with --builder auto (the default) where a Docker engine runs "
    "(`python3 dev.py engine` starts one): it builds such repositories with repo2docker, "
    "as a binderless deployed to AWS does."
)


def _lowered(sentence: str) -> str:
    return sentence[:1].lower() + sentence[1:]


def advise(advice: str, python: str = "") -> str:
    """A refusal's one piece of advice: ``advice`` (which builder can, and how to get
    it), after installing ``python`` here when the uv builder could then build it."""
    if not python:
        return advice
    return (f"Install Python {python} here (`pyenv install {python}`) and launch again, "
            f"or {_lowered(advice)}")


def swap_advice(hint: str, advice: str) -> str:
    """``hint`` with the ``--builder uv`` advice (``OTHER_BUILDER``) replaced by ``advice``,
    for a builder whose situation differs (no engine); unchanged when it has none."""
    return hint.replace(OTHER_BUILDER, advice).replace(_lowered(OTHER_BUILDER),
                                                       _lowered(advice))


def uv_binary() -> str:
    from uv import find_uv_bin

    return str(find_uv_bin())


class UvBuilder:
    name = "uv"
    #: What it builds, in the words launches show ("Built the environment, launching...").
    artifact = "environment"
    #: The advice its refusals end with (``advise``): the builder that can build them.
    advice = OTHER_BUILDER

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

    def _reachable(self, python: str, version: str) -> str | None:
        """``python``, or another ``python<version>`` every user can run when sessions
        have uids of their own; ``None`` when there is none."""
        if not self.settings.uid_sessions or unreachable_part(python) is None:
            return python
        for candidate in (shutil.which(f"python{version}") or "",
                          f"/usr/bin/python{version}", f"/usr/local/bin/python{version}"):
            if candidate and Path(candidate).exists() and unreachable_part(candidate) is None:
                return candidate
        return None

    def _closed(self, python: str, version: str) -> BuildFailed:
        return BuildFailed(
            f"Sessions run under user ids of their own, and cannot run Python {version} "
            f"from {python}: {unreachable_part(python)} is closed to other users.",
            hint=f"Install Python {version} where every user can run it (for example "
                 f"apt-get install python{version}), or open that folder (chmod o+x).")

    def _server_python(self) -> tuple[str, str]:
        """The notebook server's interpreter when the repository names no version:
        repo2docker's default (``R2D_DEFAULT_PYTHON``) when this machine has it, else
        the one binderless runs on (a documented difference). ``(path, version)``."""
        found = available_python(R2D_DEFAULT_PYTHON)
        if found is not None and self._reachable(found, R2D_DEFAULT_PYTHON) is not None:
            return self._reachable(found, R2D_DEFAULT_PYTHON) or found, R2D_DEFAULT_PYTHON
        version = f"{sys.version_info[0]}.{sys.version_info[1]}"
        python = default_python()
        reachable = self._reachable(python, version)
        if reachable is None:
            raise self._closed(python, version)
        return reachable, version

    def _python(self, plan: EnvironmentPlan) -> str:
        """The interpreter of the environment's own Python (the notebook server's; the
        kernel's too unless it has an environment of its own, ``_kernel_python``)."""
        if plan.python_version is None or plan.separate_kernel:
            return self._server_python()[0]
        python = self._find_python(plan.python_version, plan.python_source or "runtime.txt")
        reachable = self._reachable(python, plan.python_version)
        if reachable is None:
            raise self._closed(python, plan.python_version)
        return reachable

    def _find_python(self, version: str, source: str) -> str:
        """``find_python``, its refusal ending with this builder's advice."""
        try:
            return find_python(version, source)
        except UnsupportedRepository as exc:
            raise UnsupportedRepository(exc.message,
                                        hint=advise(self.advice, version)) from exc

    def _kernel_python(self, plan: EnvironmentPlan) -> str | None:
        """The kernel's interpreter when it gets an environment of its own (repo2docker
        does so for Pythons older than 3.7; here below 3.8, which JupyterLab 4 needs)."""
        if not plan.separate_kernel or plan.python_version is None:
            return None
        version = plan.python_version
        source = plan.python_source or "runtime.txt"
        # Before looking for it: installing such a Python here would not help.
        if tuple(int(x) for x in version.split(".")) < (3, 6) and version != "2.7":
            raise UnsupportedRepository(
                f"{source} asks for Python {version}, which the uv builder cannot "
                "install packages for (it handles 2.7 and 3.6 or newer).",
                hint=advise(self.advice))
        python = self._find_python(version, source)
        reachable = self._reachable(python, version)
        if reachable is None:
            raise self._closed(python, version)
        return reachable

    def _env(self, env_dir: Path, home: Path) -> dict[str, str]:
        """The environment of every build step: ``home`` (the scratch copy of the
        repository) is ``HOME`` and ``REPO_DIR``, as in repo2docker's images, where
        ``~/.local/bin`` comes first on ``PATH`` (buildpacks/base.py), then the
        notebook server's environment, then a kernel environment of its own."""
        # uv wraps its messages at COLUMNS: unwrapped, a cause is one line to quote.
        env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
        if self.uids is None:
            env["UV_CACHE_DIR"] = str(self.cache_dir)
        else:
            env = {k: v for k, v in env.items()
                   if k in BUILD_ENV or k.startswith(("LC_", "UV_", "PIP_"))}
            # The build's own cache, never the server's: a build runs the repository's
            # code (setup.py, postBuild) as its uid, which could plant files in a shared
            # cache for environments built after it; uv does not check what it finds
            # there. A per-uid cache would not do either: sessions get the same uids.
            # UV_LINK_MODE: no file of the environment shared with the cache.
            env.update({"UV_CACHE_DIR": str(home / ".cache" / "uv"), "UV_LINK_MODE": "copy"})
        env.update({
            "VIRTUAL_ENV": str(env_dir),
            "PATH": os.pathsep.join([str(home / ".local" / "bin"), str(env_dir / "bin"),
                                     str(env_dir / KERNEL_DIR / "bin"), env.get("PATH", "")]),
            "HOME": str(home),
            "REPO_DIR": str(home),
            "UV_PYTHON_DOWNLOADS": "never",
            "PIP_DISABLE_PIP_VERSION_CHECK": "1",
            # repo2docker points npm's global prefix into the image (NPM_CONFIG_PREFIX,
            # buildpacks/base.py), so `npm install --global` in a postBuild lands in the
            # environment, whose bin/ is on the sessions' PATH, never in this machine's.
            "NPM_CONFIG_PREFIX": str(env_dir),
        })
        return env

    @property
    def cache_dir(self) -> Path:
        """uv's cache for the builds of this server (``uv_cache_dir``, by default
        ``<state>/cache/uv``): kept across builds, so an environment built again
        downloads nothing it downloaded before. Builds under uids of their own keep a
        cache of their own instead (``_env`` says why)."""
        if self.settings.uv_cache_dir:
            return Path(self.settings.uv_cache_dir).expanduser().absolute()
        return self.settings.state_dir / "cache" / "uv"

    async def prune_cache(self, *, everything: bool = False) -> None:
        """Bound uv's cache: ``uv cache prune`` removes what no current uv version
        reads; ``everything`` empties it (``uv cache clean``), which built environments
        survive (they hold their own links or copies of its files). For the catalogue
        to call once it has removed environments to stay within its budget."""
        if self.uids is not None or not self.cache_dir.is_dir():
            return
        await stream_process([self.uv, "cache", "clean" if everything else "prune",
                              "--cache-dir", str(self.cache_dir)],
                             log=lambda _line: None, timeout=600)

    async def check_supported(self, plan: EnvironmentPlan, checkout: Path) -> str:
        # The plan chose the buildpack by repo2docker's own order and rules (the tests
        # check it against repo2docker's detect() on every fixture and corpus case), so no
        # child process importing repo2docker is needed on each build.
        buildpack = plan.buildpack
        if buildpack not in SUPPORTED_BUILDPACKS or plan.unsupported:
            needs = ", ".join(plan.unsupported) or BUILDPACK_NAMES.get(buildpack, buildpack)
            raise UnsupportedRepository(
                f"This repository needs {needs}, which the uv builder cannot build "
                f"(repo2docker's {BUILDPACK_NAMES.get(buildpack, buildpack)} buildpack can).",
                hint=advise(self.advice),
            )
        return buildpack

    async def build(self, plan: EnvironmentPlan, checkout: Path, log: LogSink) -> ImageRef:
        """Build ``plan``'s environment from ``checkout``. Every failure ends as a
        ``BinderlessError`` whose message says its cause, and in the log."""
        try:
            return await self._build(plan, checkout, log)
        except BinderlessError as exc:
            log(f"{exc.user_message()}\n")
            raise
        except Exception as exc:
            # Not a step's exit code: the server could not do its own part (copying the
            # checkout, starting a program). Say what, rather than "stopped unexpectedly".
            log(f"The build stopped: {type(exc).__name__}: {exc}\n")
            raise BuildFailed(f"The build stopped: {type(exc).__name__}: {exc}",
                              hint="The server's log has the details.") from exc

    async def _build(self, plan: EnvironmentPlan, checkout: Path, log: LogSink) -> ImageRef:
        buildpack = await self.check_supported(plan, checkout)
        python = self._python(plan)
        kernel_python = self._kernel_python(plan)
        log(f"Building with uv (repo2docker would use its {BUILDPACK_NAMES[buildpack]} "
            f"buildpack): {plan.describe()}\n")
        if plan.python_version is None or kernel_python is not None:
            server_version = self._server_python()[1]
            if server_version != R2D_DEFAULT_PYTHON:
                log(f"Python {R2D_DEFAULT_PYTHON}, repo2docker's default, is not installed "
                    f"here: the environment uses Python {server_version}.\n")
        env_dir = self.env_dir(plan.key)
        scratch = self.envs_dir / f".build-{plan.key}-{os.getpid()}-{time.monotonic_ns()}"
        shutil.rmtree(env_dir, ignore_errors=True)
        uid: int | None = None
        if self.uids is not None:
            for needed in (self.uv, python, kernel_python or python):
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
            await self._run(plan, scratch, env_dir, python, log, uid,
                            kernel_python=kernel_python)
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

    def _packages(self, plan: EnvironmentPlan) -> list[str]:
        """The installer's arguments for what the repository asks for, in repo2docker's
        order: requirements.txt (or the Pipfile's, or environment.yml's packages), then
        the repository itself (``pip install .``)."""
        args: list[str] = []
        for req_file in plan.requirement_files:
            args += ["-r", req_file]
        for req in plan.requirements:
            # A Pipfile's editable path entry (``-e ./sub``): two arguments.
            args += ["-e", req[3:]] if req.startswith("-e ") else [req]
        if plan.install_repo:
            args.append(".")
        return args

    async def _run(self, plan: EnvironmentPlan, work: Path, env_dir: Path, python: str,
                   log: LogSink, uid: int | None = None, *,
                   kernel_python: str | None = None) -> None:
        """Build in ``work``; with ``uid``, every command runs as that uid, and between
        commands (when the server touches ``work`` itself) no process of it runs.

        With ``kernel_python``, the kernel gets an environment of its own in
        ``<env>/kernel`` with the repository's packages and ipykernel, registered as the
        notebook server's kernel (repo2docker's ``ipython kernel install --prefix``); the
        server's environment gets JupyterLab and requirements3.txt."""
        env = self._env(env_dir, work)
        timeout = self.settings.build_timeout_seconds

        async def run(cmd: list[str], cwd: Path | None = work) -> None:
            await stream_process(self._as(uid, cmd), log=log, cwd=cwd, env=env,
                                 timeout=timeout)

        step = "creating the Python environment"
        try:
            await run([self.uv, "venv", "--quiet", "--seed", "--python", python, str(env_dir)],
                      cwd=None)
            step = "installing the packages"
            install = [self.uv, "pip", "install", "--python", str(env_dir / "bin" / "python"),
                       self.settings.jupyterlab_requirement]
            if kernel_python is None:
                install += self._packages(plan)
            else:
                for req_file in plan.server_requirement_files:
                    install += ["-r", req_file]
            await run(install)
            if kernel_python is not None:
                step = "creating the kernel's Python environment"
                await self._kernel_env(plan, env_dir, kernel_python, run, log)
                step = "installing the packages"
                kernel = env_dir / KERNEL_DIR / "bin" / "python"
                if plan.python_version and plan.python_version.startswith("2."):
                    # uv does not install for Python 2: the environment's own pip does.
                    await run([str(kernel), "-m", "pip", "install", "--no-cache-dir",
                               "ipykernel", *self._packages(plan)])
                else:
                    await run([self.uv, "pip", "install", "--python", str(kernel),
                               "ipykernel", *self._packages(plan)])
                step = "registering the kernel"
                await run([str(kernel), "-m", "ipykernel", "install", "--prefix",
                           str(env_dir)])
            if plan.post_build:
                step = plan.post_build
                if uid is not None:
                    await asyncio.to_thread(kill_uid, uid)
                script = work / plan.post_build
                if not script.is_symlink():  # chmod would change the file it points to
                    script.chmod(script.stat().st_mode | 0o755)
                before = _snapshot(work)
                log(f"Running {plan.post_build}\n")
                await run(post_build_command(plan.post_build))
                if uid is not None:
                    await asyncio.to_thread(kill_uid, uid)
                _keep_changes(work, before, env_dir / "home")
        except ProcessFailed as exc:
            raise _build_failure(plan, step, exc, work, self.advice) from exc
        except OSError as exc:
            raise BuildFailed(f"Building the environment failed while {step}: {exc}",
                              fault="server") from exc

    async def _kernel_env(self, plan: EnvironmentPlan, env_dir: Path, kernel_python: str,
                          run: Callable[..., Awaitable[None]], log: LogSink) -> None:
        """Create the kernel's environment on ``kernel_python``: uv's for Python 3,
        virtualenv's last Python 2 release (run by uv) for Python 2, which uv refuses."""
        target = str(env_dir / KERNEL_DIR)
        log(f"Python {plan.python_version} is older than JupyterLab runs on: the kernel "
            f"gets an environment of its own, as repo2docker does.\n")
        if plan.python_version and plan.python_version.startswith("2."):
            await run([self.uv, "tool", "run", "--quiet", "--from", PY2_VIRTUALENV,
                       "virtualenv", "--quiet", "--no-periodic-update", "--python",
                       kernel_python, target], cwd=None)
        else:
            await run([self.uv, "venv", "--quiet", "--seed", "--python", kernel_python,
                       target], cwd=None)


def post_build_command(script: str) -> list[str]:
    """How postBuild (``script``, relative to the repository) runs: repo2docker's
    ``RUN ./postBuild``, a shell that execs it, and runs it as a shell script itself when
    it has no ``#!`` line (the kernel refuses to exec such a file)."""
    return ["/bin/sh", "-c", './"$0"', script]


def _build_failure(plan: EnvironmentPlan, step: str, exc: ProcessFailed,
                   work: Path, advice: str = OTHER_BUILDER) -> BuildFailed:
    """The error a failed build step becomes: what failed, uv's reason once, and, when the
    repository is at fault, the file and line to fix (for conda packages pip could not
    install, ``advice``: the builder that installs them with conda)."""
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
    if plan.buildpack == "CondaBuildPack" and plan.requirements and \
            file.rpartition("/")[2] in ("", "environment.yml", "environment.yaml"):
        hint += ("\nPackages from environment.yml are installed with pip here, and a "
                 f"conda-only one needs repo2docker: {advice}")
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
