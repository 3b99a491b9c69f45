"""What a repository's environment needs, read from its environment files.

``plan_environment`` reads a checkout the way repo2docker does (the ``binder/`` or
``.binder/`` folder wins over the root) and returns a plan plus the environment
key. The key hashes the environment files, not the commit, so a commit that
changes only notebooks reuses the built environment. Like repo2docker's
"preassemble" rule, a repository that installs itself (a ``setup.py`` or a
``pyproject.toml`` package, or local paths in ``requirements.txt``) keys on the
whole tree instead.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .errors import BadLink, UnsupportedRepository

__all__ = ["ENV_FILES", "EnvironmentPlan", "plan_environment", "tree_hash"]

KEY_VERSION = "2"  # 2: JupyterLab news pop-up disabled in built environments

#: Files that define an environment, in the binder folder or the root.
ENV_FILES = (
    "requirements.txt", "requirements3.txt", "runtime.txt", "environment.yml",
    "environment.yaml", "Pipfile", "Pipfile.lock", "postBuild", "apt.txt", "install.R",
    "DESCRIPTION", "REQUIRE", "Project.toml", "Manifest.toml", "JuliaProject.toml",
    "default.nix", "Dockerfile", "setup.py", "setup.cfg", "pyproject.toml",
)

#: conda package names whose PyPI name differs.
CONDA_TO_PYPI = {
    "pytorch": "torch",
    "py-opencv": "opencv-python",
    "pytables": "tables",
    "python-graphviz": "graphviz",
    "matplotlib-base": "matplotlib",
    "pyqt": "PyQt5",
}
#: conda packages that are part of the interpreter or the tool chain, not PyPI packages.
CONDA_SKIP = {"python", "pip", "setuptools", "wheel", "nodejs", "ipykernel", "jupyterlab",
              "notebook", "conda", "mamba"}

LOCAL_REQ_RE = re.compile(r"^\s*(-e\s+)?(\.|\.\.|/|file:|-r\s|-c\s|--requirement|--constraint)")


@dataclass(frozen=True)
class EnvironmentPlan:
    """How to build one environment with uv. ``key`` names the built environment."""

    key: str
    binder_dir: str
    python_version: str | None = None
    requirement_files: tuple[str, ...] = ()
    requirements: tuple[str, ...] = ()
    install_repo: bool = False
    post_build: str | None = None
    start: str | None = None
    unsupported: tuple[str, ...] = ()
    files: dict[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        parts = [f"Python {self.python_version or '(default)'}"]
        parts += [f"-r {f}" for f in self.requirement_files]
        if self.requirements:
            parts.append(f"{len(self.requirements)} packages from environment files")
        if self.install_repo:
            parts.append("the repository itself")
        if self.post_build:
            parts.append(self.post_build)
        return ", ".join(parts)


def _binder_dir(root: Path) -> str:
    has_binder = (root / "binder").is_dir()
    has_dot = (root / ".binder").is_dir()
    if has_binder and has_dot:
        raise BadLink(
            "The repository has both a 'binder' and a '.binder' folder; use only one.",
            hint="repo2docker refuses this too. Remove one of the two folders.",
        )
    return ".binder" if has_dot else "binder" if has_binder else ""


def tree_hash(root: Path) -> str:
    """Hash every file in the checkout except ``.git`` (for repositories that install themselves)."""
    from .providers.git import content_hash

    return content_hash(root)


def _read(root: Path, rel: str) -> str:
    return (root / rel).read_text(encoding="utf-8", errors="replace")


def _runtime_python(text: str) -> tuple[str | None, str | None]:
    """Parse runtime.txt: ``python-3.10`` -> ("3.10", None); ``r-2024-01-01`` -> (None, "R")."""
    line = text.strip().splitlines()[0].strip() if text.strip() else ""
    match = re.fullmatch(r"python-(\d+(?:\.\d+)?)(?:\.\d+)?", line)
    if match:
        return match.group(1), None
    if line.startswith("r-"):
        return None, "R (runtime.txt asks for R)"
    if line:
        return None, f"runtime.txt entry {line!r}"
    return None, None


def _conda_to_pip(dep: str) -> tuple[str | None, str | None]:
    """One conda spec to a pip requirement, or the Python version it pins."""
    dep = dep.split("::")[-1].strip()
    match = re.match(r"^([A-Za-z0-9_.\-]+)\s*(.*)$", dep)
    if not match:
        return None, None
    name, rest = match.group(1), match.group(2).replace(" ", "")
    if name == "python":
        pinned = re.match(r"^=*(\d+\.\d+)", rest)
        return None, pinned.group(1) if pinned else None
    if name.lower() in CONDA_SKIP:
        return None, None
    name = CONDA_TO_PYPI.get(name.lower(), name)
    if rest.startswith("=") and not rest.startswith("=="):
        version = rest[1:].split("=")[0]  # drop a conda build string
        rest = f"=={version}" if version.count(".") >= 2 or "*" in version else f"=={version}.*"
        rest = rest.replace(".*.*", ".*")
    return name + rest, None


def _environment_yml(text: str) -> tuple[list[str], str | None]:
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise UnsupportedRepository(f"environment.yml is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise UnsupportedRepository("environment.yml should be a mapping with 'dependencies'.")
    reqs: list[str] = []
    python: str | None = None
    for dep in data.get("dependencies") or []:
        if isinstance(dep, dict):
            reqs.extend(str(x) for x in dep.get("pip") or [])
            continue
        req, version = _conda_to_pip(str(dep))
        python = version or python
        if req:
            reqs.append(req)
    return reqs, python


def _pipfile(root: Path, binder: str) -> list[str]:
    lock = root / binder / "Pipfile.lock"
    if lock.exists():
        try:
            data = json.loads(lock.read_text())
        except json.JSONDecodeError as exc:
            raise UnsupportedRepository(f"Pipfile.lock is not valid JSON: {exc}") from exc
        reqs = []
        for section in ("default", "develop"):
            for name, info in (data.get(section) or {}).items():
                version = info.get("version", "") if isinstance(info, dict) else ""
                reqs.append(f"{name}{version}")
        return reqs
    try:
        data = tomllib.loads((root / binder / "Pipfile").read_text())
    except tomllib.TOMLDecodeError as exc:
        raise UnsupportedRepository(f"Pipfile is not valid TOML: {exc}") from exc
    reqs = []
    for section in ("packages", "dev-packages"):
        for name, spec in (data.get(section) or {}).items():
            if isinstance(spec, str):
                reqs.append(name if spec == "*" else f"{name}{spec}")
            elif isinstance(spec, dict) and "version" in spec:
                reqs.append(name if spec["version"] == "*" else f"{name}{spec['version']}")
            else:
                reqs.append(name)
    return reqs


def _is_python_package(root: Path, binder: str) -> bool:
    if binder:
        return False
    if (root / "setup.py").exists():
        return True
    pyproject = root / "pyproject.toml"
    if pyproject.exists():
        try:
            data = tomllib.loads(pyproject.read_text())
        except tomllib.TOMLDecodeError:
            return False
        return "project" in data and "build-system" in data
    return False


def plan_environment(root: Path, *, salt: str = "") -> EnvironmentPlan:
    """Read the checkout at ``root`` and plan its environment.

    ``salt`` folds builder settings (the JupyterLab requirement, the builder name)
    into the key. Things this builder cannot do are listed in ``unsupported``;
    the builder refuses them with a message naming the builder that can.
    """
    binder = _binder_dir(root)

    def rel(name: str) -> str:
        return f"{binder}/{name}" if binder else name

    def has(name: str) -> bool:
        return (root / rel(name)).is_file()

    unsupported: list[str] = []
    python_version: str | None = None
    requirements: list[str] = []
    requirement_files: list[str] = []

    if has("runtime.txt"):
        python_version, other = _runtime_python(_read(root, rel("runtime.txt")))
        if other:
            unsupported.append(other)
    for name, what in (
        ("Dockerfile", "a Dockerfile"), ("default.nix", "Nix (default.nix)"),
        ("Project.toml", "Julia (Project.toml)"), ("JuliaProject.toml", "Julia (JuliaProject.toml)"),
        ("REQUIRE", "Julia (REQUIRE)"), ("install.R", "R (install.R)"),
        ("DESCRIPTION", "R (DESCRIPTION)"), ("apt.txt", "system packages (apt.txt)"),
    ):
        if has(name):
            unsupported.append(what)

    env_yml = next((n for n in ("environment.yml", "environment.yaml") if has(n)), None)
    if env_yml:
        reqs, py = _environment_yml(_read(root, rel(env_yml)))
        requirements += reqs
        python_version = python_version or py
    elif has("Pipfile") or has("Pipfile.lock"):
        requirements += _pipfile(root, binder)
    for name in ("requirements.txt", "requirements3.txt"):
        if not env_yml and has(name):
            requirement_files.append(rel(name))

    install_repo = not env_yml and _is_python_package(root, binder)
    local_refs = any(
        LOCAL_REQ_RE.match(line)
        for f in requirement_files
        for line in _read(root, f).splitlines()
    )
    files = {rel(n): _read(root, rel(n)) for n in ENV_FILES if has(n)}

    digest = hashlib.sha256()
    digest.update(f"binderless-env:{KEY_VERSION}:{salt}:{binder}\0".encode())
    for name in sorted(files):
        digest.update(name.encode() + b"\0" + files[name].encode() + b"\0")
        if name.endswith("postBuild"):
            digest.update(b"x" if os.access(root / name, os.X_OK) else b"-")
    if install_repo or local_refs:
        digest.update(b"tree:" + tree_hash(root).encode())

    return EnvironmentPlan(
        key=digest.hexdigest()[:20],
        binder_dir=binder,
        python_version=python_version,
        requirement_files=tuple(requirement_files),
        requirements=tuple(requirements),
        install_repo=install_repo,
        post_build=rel("postBuild") if has("postBuild") else None,
        start=rel("start") if has("start") else None,
        unsupported=tuple(unsupported),
        files=files,
    )
