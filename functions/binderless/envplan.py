"""What a repository's environment needs, read from its environment files by repo2docker's rules.

``plan_environment`` reads a checkout the way repo2docker does and returns a plan plus
the environment key. Each rule follows one repo2docker buildpack, and the tests in
``tests/unit/test_r2d_rules.py`` name the behaviour they follow:

- the ``binder/`` or ``.binder/`` folder (both is an error) replaces the root: files at
  the root then count only where repo2docker reads them at the root;
- the buildpack is chosen in repo2docker's order (Dockerfile, Julia, Nix, R, conda,
  Pipfile, Python): only its files count. An ``environment.yml`` ignores
  ``requirements.txt``, ``setup.py`` and ``runtime.txt``; a ``Pipfile`` ignores
  ``requirements.txt``, ``setup.py`` and ``runtime.txt``; the Python buildpack installs
  ``requirements.txt`` and then the repository itself when it is a package;
- ``requirements3.txt`` goes into the notebook server's environment, and only when the
  kernel has a Python of its own (older than 3.7); it is never merged into the kernel's;
- the Python version comes from ``runtime.txt`` (Python buildpack), ``environment.yml``'s
  ``python=`` (conda) or ``[requires]`` (Pipfile), else repo2docker's default
  (``R2D_DEFAULT_PYTHON``); ``python_source`` names the file it came from.

What this builder cannot do the same way (conda-only packages, apt.txt, R...) is listed
in ``unsupported``, and the builder refuses it naming the builder that can; it never
installs something else instead.

The key hashes the environment files, not the commit, so a commit that changes only
notebooks reuses the built environment. Like repo2docker's "preassemble" rule, a
repository that installs itself (a package, or local paths in its requirements) keys on
the whole tree instead.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import yaml
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

from .errors import BadLink, UnsupportedRepository

__all__ = ["ENV_FILES", "R2D_DEFAULT_PYTHON", "EnvironmentPlan", "plan_environment",
           "tree_hash"]

# 3: repo2docker's file rules (buildpack-specific files, kernel environments, default Python)
KEY_VERSION = "3"

#: Files that define an environment, in the binder folder or the root. ``start`` is not
#: one: each session runs its own checkout's ``start``, so repositories that differ only
#: there share one environment (and, on AWS, one image).
ENV_FILES = (
    "requirements.txt", "requirements3.txt", "runtime.txt", "environment.yml",
    "environment.yaml", "Pipfile", "Pipfile.lock", "postBuild", "apt.txt",
    "install.R", "DESCRIPTION", "REQUIRE", "Project.toml", "Manifest.toml",
    "JuliaProject.toml", "default.nix", "Dockerfile", "setup.py", "setup.cfg",
    "pyproject.toml",
)

#: repo2docker's ``major_pythons``: what ``python-3`` (or no version at all) and
#: ``python-2`` mean (repo2docker/buildpacks/conda/__init__.py).
R2D_MAJOR_PYTHONS = {"2": "2.7", "3": "3.10"}
R2D_DEFAULT_PYTHON = R2D_MAJOR_PYTHONS["3"]
#: repo2docker gives the kernel an environment of its own below this version
#: (``kernel_env_cutoff_version``); only then does it install requirements3.txt.
R2D_KERNEL_ENV_CUTOFF = (3, 7)
#: The Pythons repo2docker picks from when pyproject.toml's requires-python excludes the
#: default (``SUPPORTED_PYTHON_VERSION``).
R2D_SUPPORTED_PYTHONS = ("3.8", "3.9", "3.10", "3.11", "3.12", "3.13", "3.14")

#: conda packages that are the same package, with the same dependencies, on PyPI under
#: the name given. Anything else in an environment.yml is refused: pip would install
#: something else (conda's ``dask`` brings pyarrow, PyPI's does not; conda's
#: ``python-graphviz`` brings the ``dot`` program, PyPI's ``graphviz`` does not).
CONDA_SAME_ON_PYPI = {
    name: name for name in (
        "altair", "attrs", "beautifulsoup4", "bokeh", "click", "cycler", "cython",
        "docutils", "idna", "ipython", "ipywidgets", "jinja2", "jsonschema",
        "kiwisolver", "lxml", "markdown", "matplotlib-inline", "mpmath", "nbformat",
        "networkx", "numpy", "packaging", "pandas", "pillow", "plotly", "pytest",
        "python-dateutil", "pytz", "pyyaml", "requests", "scikit-learn", "scipy",
        "seaborn", "simplejson", "six", "sympy", "tabulate", "toolz", "tqdm",
        "traitlets", "xarray",
    )
} | {"matplotlib-base": "matplotlib", "pytables": "tables"}
#: conda packages the environment has anyway: the interpreter and its packaging tools
#: (versions other than the server's are refused below), and the Jupyter server.
CONDA_PROVIDED = {"python", "pip", "setuptools", "wheel", "ipykernel", "jupyterlab",
                  "notebook", "jupyter", "nb_conda_kernels"}
#: conda's ``python=`` spec (repo2docker's PYTHON_REGEX).
CONDA_PYTHON_RE = re.compile(r"python\s*=+\s*([\d.]*)")

#: A postBuild line that runs conda's package managers.
CONDA_COMMAND_RE = re.compile(r"^[^#\n]*\b(?:conda|mamba|micromamba)\s+(?:install|create|env|"
                              r"update|run|remove|activate|clean)\b", re.MULTILINE)
LOCAL_REQ_RE = re.compile(r"^\s*(-e\s+)?(\.|\.\.|/|file:|-r\s|-c\s|--requirement|--constraint)")
PIPFILE_VERSION_RE = re.compile(r"\d+(\.\d+)*")


@dataclass(frozen=True)
class EnvironmentPlan:
    """How to build one environment with uv. ``key`` names the built environment.

    ``python_version`` is the version the repository asks for (``None``: repo2docker's
    default, ``R2D_DEFAULT_PYTHON``, which the builder uses when it has it) and
    ``python_source`` the file it came from. Below ``SERVER_MIN_PYTHON`` the kernel gets
    an environment of its own (``separate_kernel``): ``requirement_files``,
    ``requirements`` and the repository go into it; ``server_requirement_files`` into
    the notebook server's.
    """

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
    python_source: str = ""
    buildpack: str = "PythonBuildPack"
    server_requirement_files: tuple[str, ...] = ()

    @property
    def separate_kernel(self) -> bool:
        """Whether the kernel runs on a Python the notebook server cannot (JupyterLab 4
        needs 3.8 or newer): repo2docker's separate kernel environment."""
        return self.python_version is not None and \
            _version_tuple(self.python_version) < SERVER_MIN_PYTHON

    def describe(self) -> str:
        parts = [f"Python {self.python_version or R2D_DEFAULT_PYTHON}"
                 + (f" (from {self.python_source})" if self.python_source else "")]
        if self.separate_kernel:
            parts[0] += " in a kernel environment of its own"
        parts += [f"-r {f}" for f in self.requirement_files]
        parts += [f"-r {f} (notebook server)" for f in self.server_requirement_files]
        if self.requirements:
            parts.append(f"{len(self.requirements)} packages from environment files")
        if self.install_repo:
            parts.append("the repository itself")
        if self.post_build:
            parts.append(self.post_build)
        return ", ".join(parts)


#: The oldest Python the notebook server (JupyterLab 4) runs on.
SERVER_MIN_PYTHON = (3, 8)


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(x) for x in version.split(".") if x.isdigit())


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


def _invalid(file: str, what: str) -> UnsupportedRepository:
    """A file repo2docker cannot read either: the repository's to fix."""
    return UnsupportedRepository(f"{file} {what}", hint="repo2docker cannot build it "
                                 "either: fix the file.", fault="repository", file=file)


def _runtime(text: str, file: str) -> tuple[str | None, str | None]:
    """repo2docker's ``runtime.txt`` (``name-version``, ``name-yyyy-mm-dd``,
    ``name-version-yyyy-mm-dd``): ``(name, version)``, both ``None`` when empty."""
    line = text.strip()
    if not line:
        return None, None
    parts = line.split("-")
    if len(parts) not in (2, 4, 5) or not all(parts):
        raise _invalid(file, f"is not valid: {line!r} (expected for example python-3.10).")
    return parts[0], parts[1] if len(parts) in (2, 5) else None


def _major_minor(version: str, file: str) -> str:
    """``3`` -> repo2docker's default 3.x; ``3.10.4`` -> ``3.10``."""
    parts = version.split(".")
    if not all(p.isdigit() for p in parts):
        raise _invalid(file, f"asks for Python {version!r}, which is not a version.")
    if len(parts) == 1:
        if parts[0] not in R2D_MAJOR_PYTHONS:
            raise _invalid(file, f"asks for Python {version}, which does not exist.")
        return R2D_MAJOR_PYTHONS[parts[0]]
    return ".".join(parts[:2])


def _asked(root: Path, file: str) -> str:
    """The version text a file asks for (``3`` in ``python-3``), for telling a bare major
    version from a full one."""
    text = _read(root, file)
    if file.endswith("runtime.txt"):
        parts = text.strip().split("-")
        return parts[1] if len(parts) in (2, 5) else ""
    found = CONDA_PYTHON_RE.search(text) if file.endswith((".yml", ".yaml")) else \
        re.search(r"python_(?:full_)?version\W+([\d.]+)", text)
    return found.group(1).rstrip(".") if found else ""


def _pyproject_python(root: Path, version: str | None, source: str) -> tuple[str | None, str]:
    """repo2docker's Python buildpack: a root pyproject.toml's ``requires-python`` that
    excludes the default picks the newest supported Python it allows; one that excludes
    runtime.txt's version is an error."""
    path = root / "pyproject.toml"
    if not path.is_file():
        return version, source
    try:
        spec = SpecifierSet(str(tomllib.loads(path.read_text())["project"]["requires-python"]))
    except (KeyError, TypeError, tomllib.TOMLDecodeError, InvalidSpecifier):
        return version, source
    try:
        if Version(version or R2D_DEFAULT_PYTHON) in spec:
            return version, source
    except InvalidVersion:
        return version, source
    if version is not None:
        raise _invalid("runtime.txt", f"asks for Python {version}, which pyproject.toml's "
                       f"requires-python ({spec}) excludes.")
    allowed = list(spec.filter(R2D_SUPPORTED_PYTHONS))
    if not allowed:
        raise _invalid("pyproject.toml", f"requires Python {spec}, which no Python "
                       "repo2docker supports satisfies.")
    return allowed[-1], "pyproject.toml"


def _conda_dependency(dep: str) -> tuple[str | None, str | None]:
    """One conda spec to ``(pip requirement, None)``, or ``(None, what is not on PyPI)``;
    ``(None, None)`` for what the environment has anyway."""
    spec = dep.split("::")[-1].strip()
    match = re.match(r"^([A-Za-z0-9_.\-]+)\s*(.*)$", spec)
    if not match:
        return None, dep
    name, rest = match.group(1).lower(), match.group(2).replace(" ", "")
    if name in CONDA_PROVIDED:
        return None, None
    if name.startswith("r-"):
        return None, f"R packages ({name})"
    pypi = CONDA_SAME_ON_PYPI.get(name)
    if pypi is None:
        return None, name
    if "[" in rest or rest.count("=") > 2 or re.search(r"=\S*=", rest.lstrip("=")):
        return None, dep  # a build string or selector pip cannot read
    if rest.startswith("=") and not rest.startswith("=="):
        version = rest[1:]
        # conda's ``=1.16`` means 1.16.*; ``=1.16.2`` the version itself
        rest = f"=={version}" if version.count(".") >= 2 or "*" in version else \
            f"=={version}.*"
    return pypi + rest, None


def _environment_yml(text: str, file: str) -> tuple[list[str], str | None, list[str]]:
    """``(pip requirements, python version, what pip cannot install)`` of an environment.yml."""
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise _invalid(file, f"is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise _invalid(file, "should be a mapping with 'dependencies'.")
    reqs: list[str] = []
    python: str | None = None
    conda_only: list[str] = []
    for dep in data.get("dependencies") or []:
        if isinstance(dep, dict):
            reqs.extend(str(x) for x in dep.get("pip") or [])
            continue
        text_dep = str(dep)
        pinned = CONDA_PYTHON_RE.match(text_dep)
        if pinned and python is None and pinned.group(1):
            python = _major_minor(pinned.group(1).rstrip("."), file)
            continue
        req, missing = _conda_dependency(text_dep)
        if req:
            reqs.append(req)
        elif missing:
            conda_only.append(missing)
    return reqs, python, conda_only


def _pipfile_requirement(name: str, spec: object, base: str) -> str:
    """One Pipfile or Pipfile.lock entry as a uv requirement. ``path`` entries install
    that path (relative to the folder pipenv runs in, ``base``), never the PyPI package
    of the same name; ``-e`` marks an editable one."""
    if isinstance(spec, str):
        return name if spec.strip() in ("*", "") else f"{name}{spec}"
    if not isinstance(spec, dict):
        return name
    markers = f" ; {spec['markers']}" if isinstance(spec.get("markers"), str) else ""
    extras = spec.get("extras")
    extra = f"[{','.join(map(str, extras))}]" if isinstance(extras, list) and extras else ""
    if isinstance(spec.get("path"), str) or isinstance(spec.get("file"), str):
        target = str(spec.get("path") or spec.get("file"))
        if "://" not in target:
            joined = os.path.normpath(os.path.join(base or ".", target))
            if joined.startswith("..") or os.path.isabs(joined):
                raise _invalid(f"{base}/Pipfile" if base else "Pipfile",
                               f"installs {target!r}, outside the repository.")
            target = "./" + PurePosixPath(joined).as_posix() if joined != "." else "."
        return f"-e {target}" if spec.get("editable") else target
    if isinstance(spec.get("git"), str):
        ref = f"@{spec['ref']}" if isinstance(spec.get("ref"), str) else ""
        url = spec["git"] if spec["git"].startswith("git+") else f"git+{spec['git']}"
        return f"{name}{extra} @ {url}{ref}{markers}"
    version = spec.get("version", "*")
    version = "" if not isinstance(version, str) or version.strip() == "*" else version
    return f"{name}{extra}{version}{markers}"


def _pipfile(root: Path, binder: str, rel: str) -> tuple[list[str], str | None, str]:
    """repo2docker's Pipfile buildpack: pipenv installs Pipfile.lock when there is one
    (``--ignore-pipfile``), else the Pipfile (``--skip-lock``), with the dev packages,
    from the binder folder. Returns ``(requirements, python version, its file)``."""
    lock_rel, pipfile_rel = f"{rel}.lock", rel
    requires: list[tuple[dict[str, object], str]] = []
    reqs: list[str] = []
    lock_data: dict[str, object] | None = None
    if (root / lock_rel).is_file():
        try:
            lock_data = json.loads((root / lock_rel).read_text())
        except json.JSONDecodeError as exc:
            raise _invalid(lock_rel, f"is not valid JSON: {exc}") from exc
        meta = lock_data.get("_meta") if isinstance(lock_data, dict) else None
        if isinstance(meta, dict) and isinstance(meta.get("requires"), dict):
            requires.append((meta["requires"], lock_rel))
    pipfile_data: dict[str, object] | None = None
    if (root / pipfile_rel).is_file():
        try:
            pipfile_data = tomllib.loads((root / pipfile_rel).read_text())
        except tomllib.TOMLDecodeError as exc:
            raise _invalid(pipfile_rel, f"is not valid TOML: {exc}") from exc
        if isinstance(pipfile_data.get("requires"), dict):
            requires.append((pipfile_data["requires"], pipfile_rel))  # type: ignore[arg-type]
    sections = ("default", "develop") if lock_data is not None else ("packages", "dev-packages")
    source = lock_data if lock_data is not None else pipfile_data or {}
    for section in sections:
        entries = source.get(section) if isinstance(source, dict) else None
        for name, spec in (entries if isinstance(entries, dict) else {}).items():
            reqs.append(_pipfile_requirement(str(name), spec, binder))
    for data, file in requires:
        for key in ("python_full_version", "python_version"):
            value = data.get(key)
            match = PIPFILE_VERSION_RE.match(value) if isinstance(value, str) else None
            if match:
                return reqs, _major_minor(match.group(), file), file
    return reqs, None, ""


def _is_python_package(root: Path, binder: str) -> bool:
    """repo2docker: a root ``setup.py``, or a root pyproject.toml with ``[project]`` and
    ``[build-system]``, and no binder folder."""
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


def _legacy_dockerfile(root: Path) -> bool:
    try:
        text = (root / "Dockerfile").read_text(errors="replace")
    except OSError:
        return False
    return any(line.startswith("FROM") and "andrewosh/binder-base" in line.split("#")[0].lower()
               for line in text.splitlines())


def detect(root: Path, binder: str) -> tuple[str, str]:
    """repo2docker's buildpack for the checkout, in its order (``app.py``'s
    ``buildpacks``, then ``default_buildpack``): ``(class name, what it needs)``."""

    def has(name: str) -> bool:
        return (root / binder / name).exists() if binder else (root / name).exists()

    runtime_name: str | None = None
    if has("runtime.txt"):
        rel = f"{binder}/runtime.txt" if binder else "runtime.txt"
        runtime_name, _ = _runtime(_read(root, rel), rel)
    # What each buildpack needs names the file that asked for it: the refusals quote it.
    def at(name: str) -> str:
        return f"{binder}/{name}" if binder else name

    if _legacy_dockerfile(root):
        return "LegacyBinderDockerBuildPack", "the legacy binder-base image (Dockerfile)"
    if has("Dockerfile"):
        return "DockerBuildPack", f"an image of its own ({at('Dockerfile')})"
    if has("Project.toml") or has("JuliaProject.toml"):
        toml = "Project.toml" if has("Project.toml") else "JuliaProject.toml"
        return "JuliaProjectTomlBuildPack", f"Julia ({at(toml)})"
    if has("REQUIRE"):
        return "JuliaRequireBuildPack", f"Julia ({at('REQUIRE')})"
    if has("default.nix"):
        return "NixBuildPack", f"Nix ({at('default.nix')})"
    if runtime_name == "r":
        return "RBuildPack", f"R ({at('runtime.txt')})"
    if not binder and (root / "DESCRIPTION").exists():
        return "RBuildPack", "R (DESCRIPTION)"
    if has("environment.yml") or has("environment.yaml"):
        return "CondaBuildPack", ""
    if (runtime_name is None or runtime_name == "python") and (
            has("Pipfile") or has("Pipfile.lock")):
        return "PipfileBuildPack", ""
    return "PythonBuildPack", ""


def plan_environment(root: Path, *, salt: str = "") -> EnvironmentPlan:
    """Read the checkout at ``root`` and plan its environment by repo2docker's rules.

    ``salt`` folds builder settings (the JupyterLab requirement, the builder name)
    into the key. Things this builder cannot do are listed in ``unsupported``;
    the builder refuses them with a message naming the builder that can.
    """
    binder = _binder_dir(root)

    def rel(name: str) -> str:
        return f"{binder}/{name}" if binder else name

    def has(name: str) -> bool:
        return (root / rel(name)).is_file()

    buildpack, needs = detect(root, binder)
    unsupported: list[str] = [needs] if needs else []
    python_version: str | None = None
    python_source = ""
    requirements: list[str] = []
    requirement_files: list[str] = []
    install_repo = False

    if buildpack == "CondaBuildPack":
        env_yml = next(n for n in ("environment.yml", "environment.yaml") if has(n))
        requirements, python_version, conda_only = _environment_yml(
            _read(root, rel(env_yml)), rel(env_yml))
        python_source = rel(env_yml) if python_version else ""
        if conda_only:
            unsupported.append(f"conda packages pip would install differently or not at "
                               f"all ({rel(env_yml)}: {', '.join(conda_only)})")
    elif buildpack == "PipfileBuildPack":
        requirements, python_version, python_source = _pipfile(root, binder, rel("Pipfile"))
    elif buildpack == "PythonBuildPack" and has("runtime.txt"):
        name, version = _runtime(_read(root, rel("runtime.txt")), rel("runtime.txt"))
        if name == "python" and version:
            python_version = _major_minor(version, rel("runtime.txt"))
            python_source = rel("runtime.txt")
        elif name is not None and name != "python":
            # repo2docker builds such a repository (julia-..., say) as a plain Python one
            pass
    if python_version == R2D_DEFAULT_PYTHON and python_source and \
            "." not in _asked(root, python_source):
        # ``python-3`` (or ``python=3``) means repo2docker's default 3.x: the builder's
        # default, not a version of its own
        python_version, python_source = None, ""
    if buildpack == "PythonBuildPack":
        if not binder:
            python_version, python_source = _pyproject_python(
                root, python_version, python_source)
        if has("requirements.txt"):
            requirement_files.append(rel("requirements.txt"))
        install_repo = _is_python_package(root, binder)
    if has("apt.txt") and not unsupported:
        unsupported.append("system packages (apt.txt)")
    if has("postBuild") and CONDA_COMMAND_RE.search(_read(root, rel("postBuild"))):
        # Every repo2docker image has conda's tools; a postBuild that uses them needs one.
        unsupported.append(f"conda's tools ({rel('postBuild')} runs conda or mamba)")

    plan_kernel = python_version is not None and \
        _version_tuple(python_version) < R2D_KERNEL_ENV_CUTOFF
    server_requirement_files: tuple[str, ...] = ()
    if plan_kernel and buildpack in ("PythonBuildPack", "PipfileBuildPack") and \
            has("requirements3.txt"):
        server_requirement_files = (rel("requirements3.txt"),)

    local_refs = any(
        LOCAL_REQ_RE.match(line)
        for f in (*requirement_files, *server_requirement_files)
        for line in _read(root, f).splitlines()
    ) or any(r.startswith(("-e ", ".")) for r in requirements)
    files = {rel(n): _read(root, rel(n)) for n in ENV_FILES if has(n)}
    if binder:
        # repo2docker reads these at the root even with a binder folder (R's DESCRIPTION,
        # the legacy Dockerfile): they are part of what decides the environment.
        files |= {n: _read(root, n) for n in ("DESCRIPTION", "Dockerfile")
                  if (root / n).is_file()}

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
        python_source=python_source,
        buildpack=buildpack,
        requirement_files=tuple(requirement_files),
        server_requirement_files=server_requirement_files,
        requirements=tuple(requirements),
        install_repo=install_repo,
        post_build=rel("postBuild") if has("postBuild") else None,
        start=rel("start") if has("start") else None,
        unsupported=tuple(unsupported),
        files=files,
    )
