"""The local builder: a uv virtual environment per environment key, no Docker needed.

Environments live in ``<state>/envs/<key>/``; a marker file written last says the
build finished, so a crash or a failure never leaves a half-built environment in use.
``postBuild`` runs in a scratch copy of the repository with the environment active;
the files it adds to the repository folder (the session's home) are kept in
``<env>/home/`` and copied into each session, as repo2docker's image would have them.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import time
from pathlib import Path

from ..buildpacks import BUILDPACK_NAMES, detect_buildpack
from ..envplan import EnvironmentPlan, plan_environment
from ..errors import BuildFailed, UnsupportedRepository
from ..settings import Settings
from .process import ProcessFailed, stream_process
from .protocols import ImageRef, LogSink
from .pythons import default_python, find_python

__all__ = ["UvBuilder", "uv_binary"]

MARKER = ".binderless-complete"
SUPPORTED_BUILDPACKS = {"PythonBuildPack", "PipfileBuildPack", "CondaBuildPack"}
OTHER_BUILDER = (
    "Start binderless with --builder docker (repo2docker, needs a Docker engine), "
    "or launch it on a binderless deployed to AWS, which builds with repo2docker."
)


def uv_binary() -> str:
    from uv import find_uv_bin

    return str(find_uv_bin())


class UvBuilder:
    name = "uv"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.envs_dir = settings.state_dir / "envs"
        self.uv = uv_binary()

    def plan(self, checkout: Path) -> EnvironmentPlan:
        return plan_environment(checkout, salt=f"uv:{self.settings.jupyterlab_requirement}")

    def env_dir(self, key: str) -> Path:
        return self.envs_dir / key

    def image(self, key: str) -> ImageRef:
        return ImageRef(key=key, name=f"local-env:{key}", location=str(self.env_dir(key)))

    async def find(self, plan: EnvironmentPlan) -> ImageRef | None:
        if (self.env_dir(plan.key) / MARKER).exists():
            return self.image(plan.key)
        return None

    def _env(self, env_dir: Path, home: Path) -> dict[str, str]:
        env = dict(os.environ)
        env.update({
            "VIRTUAL_ENV": str(env_dir),
            "PATH": f"{env_dir / 'bin'}{os.pathsep}{env.get('PATH', '')}",
            "HOME": str(home),
            "UV_PYTHON_DOWNLOADS": "never",
            "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        })
        if self.settings.uv_cache_dir:
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
        python = find_python(plan.python_version) if plan.python_version else default_python()
        env_dir = self.env_dir(plan.key)
        scratch = self.envs_dir / f".build-{plan.key}-{os.getpid()}-{time.monotonic_ns()}"
        shutil.rmtree(env_dir, ignore_errors=True)
        try:
            await asyncio.to_thread(shutil.copytree, checkout, scratch, symlinks=True)
            await self._run(plan, scratch, env_dir, python, log)
            (env_dir / MARKER).write_text(plan.key + "\n")
        except BaseException:
            shutil.rmtree(env_dir, ignore_errors=True)
            raise
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return self.image(plan.key)

    async def _run(self, plan: EnvironmentPlan, work: Path, env_dir: Path, python: str,
                   log: LogSink) -> None:
        env = self._env(env_dir, work)
        timeout = self.settings.build_timeout_seconds
        step = "creating the Python environment"
        try:
            await stream_process([self.uv, "venv", "--quiet", "--seed", "--python", python,
                                  str(env_dir)], log=log, env=env, timeout=timeout)
            step = "installing the packages"
            install = [self.uv, "pip", "install", "--python", str(env_dir / "bin" / "python"),
                       self.settings.jupyterlab_requirement]
            for req_file in plan.requirement_files:
                install += ["-r", req_file]
            install += list(plan.requirements)
            if plan.install_repo:
                install.append(".")
            await stream_process(install, log=log, cwd=work, env=env, timeout=timeout)
            _quiet_jupyterlab(env_dir)
            if plan.post_build:
                step = plan.post_build
                script = work / plan.post_build
                script.chmod(script.stat().st_mode | 0o755)
                before = _snapshot(work)
                log(f"Running {plan.post_build}\n")
                await stream_process([str(script)], log=log, cwd=work, env=env, timeout=timeout)
                _keep_changes(work, before, env_dir / "home")
        except ProcessFailed as exc:
            last = next((line for line in reversed(exc.tail) if line.strip()), "")
            if exc.returncode is None:
                what = f"Building the environment took too long ({step})."
            else:
                what = f"Building the environment failed while {step}" if step.startswith(
                    ("creating", "installing")) else f"{step} failed (exit code {exc.returncode})"
                what = what.rstrip(".") + "."
            hint = f"The last line of the build log was: {last}" if last else ""
            if plan.requirements and step.startswith("installing"):
                hint += ("\nPackages from environment.yml are installed with pip here; "
                         "conda-only packages need --builder docker.")
            raise BuildFailed(what, hint=hint.strip()) from exc


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
    """Turn off JupyterLab's news pop-up: sessions are short and the network may be closed."""
    config = env_dir / "etc" / "jupyter" / "labconfig" / "page_config.json"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(json.dumps({"disabledExtensions": {
        "@jupyterlab/apputils-extension:announcements": True}}, indent=1) + "\n")
