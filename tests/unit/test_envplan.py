"""Environment plans, checked against repo2docker's own buildpack detection."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from binderless.buildpacks import detect_buildpacks
from binderless.envplan import plan_environment
from binderless.errors import BadLink

REPOS = Path(__file__).resolve().parents[1] / "fixtures" / "repos"

# fixture -> (repo2docker buildpack, supported by the uv builder)
EXPECTED = {
    "python-requirements": ("PythonBuildPack", True),
    "binder-dir": ("PythonBuildPack", True),
    "setup-py": ("PythonBuildPack", True),
    "pyproject-package": ("PythonBuildPack", True),
    "pipfile": ("PipfileBuildPack", True),
    "environment-yml": ("CondaBuildPack", True),
    "runtime-txt": ("PythonBuildPack", True),
    "postbuild": ("PythonBuildPack", True),
    "start-script": ("PythonBuildPack", True),
    "empty-repo": ("PythonBuildPack", True),
    "r-repo": ("RBuildPack", False),
    "dockerfile-repo": ("DockerBuildPack", False),
    "julia-repo": ("JuliaProjectTomlBuildPack", False),
    "apt-repo": ("PythonBuildPack", False),
}


@pytest.fixture(scope="module")
def detected() -> dict[Path, str]:
    """repo2docker's own choice for every fixture, from one child process."""
    return detect_buildpacks([REPOS / name for name in sorted(EXPECTED)])


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_plan_agrees_with_repo2docker(name: str, detected: dict[Path, str]) -> None:
    buildpack, supported = EXPECTED[name]
    assert detected[REPOS / name] == buildpack
    plan = plan_environment(REPOS / name)
    assert (not plan.unsupported) is supported, plan.unsupported


def test_binder_folder_wins_over_root() -> None:
    plan = plan_environment(REPOS / "binder-dir")
    assert plan.binder_dir == "binder"
    assert plan.requirement_files == ("binder/requirements.txt",)


def test_both_binder_folders_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "binder").mkdir()
    (tmp_path / ".binder").mkdir()
    with pytest.raises(BadLink, match="both"):
        plan_environment(tmp_path)


def test_environment_yml_becomes_pip_requirements() -> None:
    plan = plan_environment(REPOS / "environment-yml")
    assert plan.python_version == "3.11"
    assert plan.requirements == ("six==1.16.*", "idna")
    assert plan.requirement_files == ()


def test_runtime_and_packages() -> None:
    assert plan_environment(REPOS / "runtime-txt").python_version == "3.11"
    assert plan_environment(REPOS / "setup-py").install_repo
    assert plan_environment(REPOS / "pyproject-package").install_repo
    assert plan_environment(REPOS / "pipfile").requirements == ("six",)
    plan = plan_environment(REPOS / "postbuild")
    assert plan.post_build == "postBuild"
    assert plan_environment(REPOS / "start-script").start == "start"


def test_key_follows_environment_files_not_other_files(tmp_path: Path) -> None:
    repo = shutil.copytree(REPOS / "python-requirements", tmp_path / "r")
    key = plan_environment(repo).key
    (repo / "index.ipynb").write_text("{}")
    (repo / "new.py").write_text("x = 1\n")
    assert plan_environment(repo).key == key
    (repo / "requirements.txt").write_text("six\nidna\n")
    assert plan_environment(repo).key != key
    assert plan_environment(repo, salt="other").key != plan_environment(repo).key


def test_key_of_a_package_follows_the_whole_tree(tmp_path: Path) -> None:
    repo = shutil.copytree(REPOS / "setup-py", tmp_path / "r")
    key = plan_environment(repo).key
    (repo / "tinypkg" / "__init__.py").write_text("VALUE = 43\n")
    assert plan_environment(repo).key != key


def test_local_requirement_keys_on_tree(tmp_path: Path) -> None:
    repo = shutil.copytree(REPOS / "python-requirements", tmp_path / "r")
    (repo / "requirements.txt").write_text("-e .\n")
    key = plan_environment(repo).key
    (repo / "other.py").write_text("y = 2\n")
    assert plan_environment(repo).key != key
