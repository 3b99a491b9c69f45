"""The uv builder reads a repository by repo2docker's rules: one test per rule, named after
the repo2docker behaviour it follows (``repo2docker/buildpacks/...``).

Repositories are small folders written by each test; the corpus of repo2docker's own test
repositories (``tests/fixtures/r2d-corpus``) checks the buildpack choice against
repo2docker's own detection, in one child process for all of them.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from binderless.backends.localspawn import script_command
from binderless.backends.process import stream_process
from binderless.backends.uvbuilder import UvBuilder
from binderless.envplan import (
    R2D_DEFAULT_PYTHON,
    R2D_KERNEL_ENV_CUTOFF,
    R2D_MAJOR_PYTHONS,
    R2D_SUPPORTED_PYTHONS,
    plan_environment,
)
from binderless.errors import BuildFailed, UnsupportedRepository
from binderless.settings import Settings

CORPUS = Path(__file__).resolve().parents[1] / "fixtures" / "r2d-corpus"


def repo(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


# ----- which files count ---------------------------------------------------------------

def test_pipfile_buildpack_uses_only_the_pipfile_never_requirements_txt_or_setup_py(
        tmp_path: Path) -> None:
    """PipfileBuildPack comes before PythonBuildPack and runs only ``pipenv install``:
    requirements.txt and setup.py beside a Pipfile are not installed."""
    plan = plan_environment(repo(tmp_path, {
        "Pipfile": '[packages]\nthere = "*"\n', "requirements.txt": "numpy\n",
        "setup.py": "from setuptools import setup\nsetup(name='dummy')\n"}))
    assert plan.buildpack == "PipfileBuildPack"
    assert plan.requirements == ("there",)
    assert plan.requirement_files == ()
    assert not plan.install_repo


def test_pipfile_lock_wins_over_pipfile_with_dev_packages(tmp_path: Path) -> None:
    """PipfileBuildPack: ``pipenv install --ignore-pipfile --dev`` when Pipfile.lock
    exists (its default and develop sections), ``--skip-lock --dev`` otherwise."""
    lock = {"_meta": {"requires": {}}, "default": {"pypi-pkg-test": {"version": "==0.0.4"}},
            "develop": {"there": {"version": "==0.0.9"}}}
    plan = plan_environment(repo(tmp_path, {
        "Pipfile": '[packages]\npypi-pkg-test = "*"\n[dev-packages]\nthere = "*"\n',
        "Pipfile.lock": json.dumps(lock)}))
    assert plan.requirements == ("pypi-pkg-test==0.0.4", "there==0.0.9")
    (tmp_path / "Pipfile.lock").unlink()
    assert plan_environment(tmp_path).requirements == ("pypi-pkg-test", "there")


def test_pipfile_path_entry_installs_the_path_not_the_pypi_package_of_that_name(
        tmp_path: Path) -> None:
    """PipfileBuildPack runs pipenv in the binder folder, so ``path = ".."`` there is the
    repository's root; the entry installs that folder (editable), never PyPI's ``dummy``."""
    plan = plan_environment(repo(tmp_path, {
        ".binder/Pipfile": '[packages]\nthere = "*"\ndummy = {path="..", editable=true}\n',
        "setup.py": "from setuptools import setup\nsetup(name='dummy')\n"}))
    assert plan.requirements == ("there", "-e .")
    assert not any(r == "dummy" or r.startswith("dummy") for r in plan.requirements)
    root = plan_environment(repo(tmp_path / "r", {
        "Pipfile": '[packages]\nsub = {path="./sub"}\nx = {version=">=1", extras=["a"]}\n'}))
    assert root.requirements == ("./sub", "x[a]>=1")


def test_pipfile_path_outside_the_repository_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedRepository, match="outside the repository"):
        plan_environment(repo(tmp_path, {"binder/Pipfile": '[packages]\nd = {path="../.."}\n'}))


def test_pipfile_python_comes_from_requires_and_runtime_txt_is_ignored(tmp_path: Path) -> None:
    """PipfileBuildPack.python_version reads Pipfile.lock's then the Pipfile's
    ``[requires]``; it never reads runtime.txt (repo2docker's tests/pipfile/py36)."""
    plan = plan_environment(repo(tmp_path, {
        "Pipfile": '[packages]\n[requires]\npython_version = "3.6"\n',
        "runtime.txt": "python-3.7"}))
    assert (plan.python_version, plan.python_source) == ("3.6", "Pipfile")
    assert plan.separate_kernel
    (tmp_path / "Pipfile").write_text("[packages]\n")
    assert plan_environment(tmp_path).python_version is None  # the default, not 3.7


def test_python_buildpack_installs_requirements_txt_and_then_the_package(
        tmp_path: Path) -> None:
    """PythonBuildPack.get_assemble_scripts: ``pip install -r requirements.txt``, and
    ``pip install .`` too when the root is a package (setup.py, or pyproject.toml with
    [project] and [build-system]) and there is no binder folder."""
    plan = plan_environment(repo(tmp_path, {
        "requirements.txt": "six\n",
        "setup.py": "from setuptools import setup\nsetup(name='x')\n"}))
    assert plan.requirement_files == ("requirements.txt",)
    assert plan.install_repo
    (tmp_path / "binder").mkdir()
    (tmp_path / "binder" / "requirements.txt").write_text("six\n")
    plan = plan_environment(tmp_path)
    assert plan.requirement_files == ("binder/requirements.txt",)
    assert not plan.install_repo


def test_requirements3_txt_only_for_a_python_2_kernel_and_never_merged(tmp_path: Path) -> None:
    """PythonBuildPack._get_pip_scripts: requirements3.txt goes into the notebook
    server's environment only with a separate kernel environment (below 3.7); else it
    is ignored. It never joins the kernel's requirements."""
    repo(tmp_path, {"requirements.txt": "numpy\n", "requirements3.txt": "nbgitpuller\n"})
    plan = plan_environment(tmp_path)
    assert plan.requirement_files == ("requirements.txt",)
    assert plan.server_requirement_files == ()
    (tmp_path / "runtime.txt").write_text("python-2.7\n")
    plan = plan_environment(tmp_path)
    assert plan.python_version == "2.7" and plan.separate_kernel
    assert plan.requirement_files == ("requirements.txt",)
    assert plan.server_requirement_files == ("requirements3.txt",)


def test_conda_buildpack_ignores_runtime_txt_requirements_txt_and_setup_py(
        tmp_path: Path) -> None:
    """CondaBuildPack.python_version reads only environment.yml's ``python=``, and it
    installs nothing but environment.yml; the message names the file the version came
    from (here .binder/environment.yml, not runtime.txt)."""
    plan = plan_environment(repo(tmp_path, {
        ".binder/environment.yml": "dependencies:\n  - python=3.9\n  - numpy\n",
        ".binder/runtime.txt": "python-3.12\n", ".binder/requirements.txt": "six\n"}))
    assert plan.buildpack == "CondaBuildPack"
    assert (plan.python_version, plan.python_source) == ("3.9", ".binder/environment.yml")
    assert plan.requirement_files == ()
    assert plan.requirements == ("numpy",)


def test_environment_yml_python_2_is_kept_never_replaced_by_python_3(tmp_path: Path) -> None:
    """CondaBuildPack: ``python=2`` is ``major_pythons["2"]`` (2.7), in a separate kernel
    environment (repo2docker's tests/conda/py2)."""
    plan = plan_environment(repo(tmp_path, {
        "environment.yml": "dependencies:\n  - python=2\n  - numpy\n"}))
    assert plan.python_version == "2.7"
    assert plan.separate_kernel
    assert "kernel environment of its own" in plan.describe()


def test_conda_names_pip_would_install_differently_are_refused(tmp_path: Path) -> None:
    """repo2docker installs environment.yml with conda. Only packages that are the same
    on PyPI become pip requirements; conda's ``dask`` (which brings pyarrow), ``nodejs``
    and R packages are refused, naming the file and the packages."""
    plan = plan_environment(repo(tmp_path, {"environment.yml": (
        "dependencies:\n  - conda-forge::numpy=1.26\n  - matplotlib-base\n  - dask\n"
        "  - nodejs\n  - r-base\n  - pip\n  - pip:\n    - idna\n")}))
    assert plan.requirements == ("numpy==1.26.*", "matplotlib", "idna")
    (refusal,) = plan.unsupported
    assert "environment.yml: dask, nodejs, R packages (r-base)" in refusal


def test_runtime_txt_forms_of_the_python_buildpack(tmp_path: Path) -> None:
    """PythonBuildPack.python_version: ``python-3`` is the default 3.x; ``python-X.Y``
    that version (a patch level is dropped here); a date alone keeps the default."""
    cases = {"python-3": None, "python-3.8": "3.8", "python-3.10.4": "3.10",
             "python-2": "2.7", "python-2020-01-01": None}
    for text, version in cases.items():
        plan = plan_environment(repo(tmp_path, {"runtime.txt": text + "\n"}))
        assert plan.python_version == version, text
        assert plan.python_source == ("runtime.txt" if version else ""), text


def test_invalid_runtime_txt_is_the_repository_s_to_fix(tmp_path: Path) -> None:
    """BuildPack.runtime raises on a runtime.txt it cannot split: a 422 naming the file."""
    with pytest.raises(UnsupportedRepository) as info:
        plan_environment(repo(tmp_path, {"runtime.txt": "python3.8\n"}))
    assert info.value.status_code == 422
    assert (info.value.fault, info.value.file) == ("repository", "runtime.txt")


def test_pyproject_requires_python_moves_the_default(tmp_path: Path) -> None:
    """PythonBuildPack.python_version: a requires-python excluding the default picks the
    newest supported version it allows; one excluding runtime.txt's version is an error."""
    plan = plan_environment(repo(tmp_path, {
        "pyproject.toml": '[project]\nname = "x"\nrequires-python = ">=3.12"\n'}))
    assert (plan.python_version, plan.python_source) == (R2D_SUPPORTED_PYTHONS[-1],
                                                         "pyproject.toml")
    (tmp_path / "runtime.txt").write_text("python-3.9\n")
    with pytest.raises(UnsupportedRepository, match="requires-python"):
        plan_environment(tmp_path)


def test_defaults_are_repo2docker_s_own() -> None:
    """The default Python (``major_pythons``), the kernel environment cutoff and the
    supported versions are repo2docker's, read from its installed buildpacks."""
    with warnings.catch_warnings():
        # repo2docker imports python-json-logger's old module name
        warnings.simplefilter("ignore", DeprecationWarning)
        from repo2docker.buildpacks.conda import CondaBuildPack
        from repo2docker.buildpacks.conda.supported_python_version import (
            SUPPORTED_PYTHON_VERSION,
        )

    assert CondaBuildPack.major_pythons == R2D_MAJOR_PYTHONS
    assert CondaBuildPack.major_pythons["3"] == R2D_DEFAULT_PYTHON
    assert ".".join(map(str, R2D_KERNEL_ENV_CUTOFF)) == CondaBuildPack.kernel_env_cutoff_version
    assert tuple(SUPPORTED_PYTHON_VERSION) == R2D_SUPPORTED_PYTHONS


_DETECT_ALL = """
import json, os, sys
from repo2docker.app import Repo2Docker
r2d = Repo2Docker()
found = {}
for case in sys.argv[1:]:
    os.chdir(case)
    name = r2d.default_buildpack.__name__
    for cls in r2d.buildpacks:
        try:
            if cls(base_image="docker.io/library/buildpack-deps:jammy").detect():
                name = cls.__name__
                break
        except Exception as exc:
            name = "error: " + str(exc)
            break
    found[case] = name
print(json.dumps(found))
"""


def test_buildpack_choice_agrees_with_repo2docker_on_its_own_test_repositories() -> None:
    """app.py's ``buildpacks`` order, then ``default_buildpack``: the plan's buildpack is
    the one repo2docker's own ``detect()`` picks, on every case of its tests/ folder."""
    cases = sorted(str(p.parent) for p in CORPUS.glob("*/*/verify"))
    if not cases:
        pytest.skip("the corpus of repo2docker's test repositories is not here")
    out = subprocess.run([sys.executable, "-c", _DETECT_ALL, *cases], capture_output=True,
                         text=True, timeout=120, check=True)
    expected = json.loads(out.stdout.strip().splitlines()[-1])
    mine = {case: plan_environment(Path(case)).buildpack for case in cases}
    assert mine == expected


# ----- scripts -------------------------------------------------------------------------

def test_post_build_without_a_shebang_runs_through_sh(tmp_path: Path) -> None:
    """repo2docker's Dockerfile: ``RUN chmod +x postBuild`` then ``RUN ./postBuild``, which
    ``/bin/sh -c`` runs as a shell script when it has no ``#!`` line."""
    from binderless.backends.uvbuilder import post_build_command

    script = tmp_path / "binder" / "postBuild"
    script.parent.mkdir()
    script.write_text('echo "ran by sh" > "$REPO_DIR/out.txt"\n')
    script.chmod(0o755)
    lines: list[str] = []
    asyncio.run(stream_process(post_build_command("binder/postBuild"), log=lines.append,
                               cwd=tmp_path, env={**os.environ, "REPO_DIR": str(tmp_path)}))
    assert (tmp_path / "out.txt").read_text() == "ran by sh\n"


def test_start_without_a_shebang_runs_through_sh(tmp_path: Path) -> None:
    """A start script with no ``#!`` line runs through ``/bin/sh`` (repo2docker's
    entrypoint cannot exec one: a documented difference); one with ``#!`` runs itself."""
    script = tmp_path / "start"
    script.write_text('export VAR=set\nexec "$@"\n')
    script.chmod(0o755)
    cmd = script_command(script)
    assert cmd == ["/bin/sh", str(script)]
    out = subprocess.run([*cmd, "sh", "-c", "echo $VAR"], capture_output=True, text=True,
                         check=True)
    assert out.stdout == "set\n"
    script.write_text('#!/bin/sh\nexec "$@"\n')
    assert script_command(script) == [str(script)]


# ----- the builder: Pythons, refusals, the cache ---------------------------------------

def test_a_missing_kernel_python_is_a_422_naming_the_file_and_repo2docker(
        tmp_path: Path) -> None:
    """A Python older than the notebook server's that is not installed here is refused
    with a 422 naming the file that asked for it and repo2docker, never uv's own error."""
    builder = UvBuilder(Settings(state_dir=tmp_path / "state"))
    plan = plan_environment(repo(tmp_path / "r", {
        ".binder/environment.yml": "dependencies:\n  - python=3.4\n"}))
    with pytest.raises(UnsupportedRepository) as info:
        builder._kernel_python(plan)
    assert info.value.status_code == 422
    assert ".binder/environment.yml asks for Python 3.4" in info.value.message
    assert "runtime.txt" not in info.value.message
    assert "--builder" in info.value.hint


def test_builds_share_one_uv_cache_under_the_state_folder(tmp_path: Path) -> None:
    """The cache is the server's (``uv_cache_dir``, default ``<state>/cache/uv``), not
    the build's scratch copy, which is deleted after every build."""
    state = tmp_path / "state"
    builder = UvBuilder(Settings(state_dir=state))
    env = builder._env(state / "envs" / "k", state / "envs" / ".build-k")
    assert env["UV_CACHE_DIR"] == str(state / "cache" / "uv")
    assert env["REPO_DIR"] == env["HOME"] == str(state / "envs" / ".build-k")
    assert env["PATH"].split(os.pathsep)[:2] == [
        str(state / "envs" / ".build-k" / ".local" / "bin"), str(state / "envs" / "k" / "bin")]
    other = UvBuilder(Settings(state_dir=state, uv_cache_dir=str(tmp_path / "c")))
    assert other._env(state / "envs" / "k", state)["UV_CACHE_DIR"] == str(tmp_path / "c")


def test_a_step_that_cannot_start_fails_with_its_cause_in_the_error(
        tmp_path: Path) -> None:
    """A program that cannot start is a ``BuildFailed`` saying which step and why, never
    "the build stopped unexpectedly"."""
    builder = UvBuilder(Settings(state_dir=tmp_path / "state"))
    builder.uv = str(tmp_path / "no-such-uv")
    plan = plan_environment(repo(tmp_path / "r", {"requirements.txt": "six\n"}))
    with pytest.raises(BuildFailed) as info:
        asyncio.run(builder._run(plan, tmp_path / "r", tmp_path / "env", sys.executable,
                                 lambda _line: None))
    assert "creating the Python environment" in info.value.message
    assert "no-such-uv" in info.value.message


def test_a_post_build_running_conda_tools_is_refused(tmp_path: Path) -> None:
    """Every repo2docker image has conda and mamba (its tests/conda/py36-postBuild runs
    ``mamba install``): a postBuild using them needs repo2docker, not a failed build."""
    plan = plan_environment(repo(tmp_path, {
        "requirements.txt": "six\n", "postBuild": "#!/bin/bash\nmamba install -y make\n"}))
    assert plan.unsupported == ("conda's tools (postBuild runs conda or mamba)",)
    (tmp_path / "postBuild").write_text("#!/bin/bash\n# not conda install\npip install x\n")
    assert plan_environment(tmp_path).unsupported == ()


def test_npm_global_installs_land_in_the_environment(tmp_path: Path) -> None:
    """repo2docker sets ``NPM_CONFIG_PREFIX`` to a folder of the image whose ``bin`` is on
    ``PATH`` (buildpacks/base.py), so a postBuild's ``npm install --global`` never writes
    to the machine's own npm prefix: here the prefix is the environment itself."""
    builder = UvBuilder(Settings(state_dir=tmp_path / "state"))
    env_dir, home = tmp_path / "env", tmp_path / "home"
    os.environ["COLUMNS"] = "60"  # a narrow terminal: uv would wrap its messages at 60
    try:
        env = builder._env(env_dir, home)
    finally:
        del os.environ["COLUMNS"]
    assert "COLUMNS" not in env
    assert env["NPM_CONFIG_PREFIX"] == str(env_dir)
    assert str(env_dir / "bin") in env["PATH"].split(os.pathsep)
    assert env["HOME"] == str(home)  # npm's own cache (~/.npm) stays in the scratch copy
