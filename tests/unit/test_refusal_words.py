"""A refusal of the uv builder is said once: what the repository asks for and why this
server cannot build it (naming the file that asked), then one piece of advice that fits
the server's situation, never two overlapping ones.

Every kind of refusal x every situation: no Docker engine at startup (``--builder auto``,
``UvBuilderWithoutEngine``), an engine that stopped answering (``AutoBuilder``), and
``--builder uv`` chosen explicitly (where an engine may well run). Each refusal comes
before uv runs, so these are quick.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from binderless.backends.autobuilder import NO_ENGINE_HINT, AutoBuilder, UvBuilderWithoutEngine
from binderless.backends.pythons import available_python
from binderless.backends.uvbuilder import OTHER_BUILDER, UvBuilder, _build_failure
from binderless.envplan import EnvironmentPlan
from binderless.errors import BinderlessError, BuildFailed, UnsupportedRepository
from binderless.settings import Settings

#: Phrases of advice: each may appear once in a refusal, at most.
ADVICE_PHRASES = ("dev.py engine", "AWS", "Install Docker", "pyenv install", "--builder",
                  "DOCKER_HOST")


def _uv(settings: Settings) -> UvBuilder:
    return UvBuilder(settings)


def _without_engine(settings: Settings) -> UvBuilder:
    return UvBuilderWithoutEngine(settings)


def _engine_gone(settings: Settings) -> AutoBuilder:
    # The docker builder is never reached: the engine does not answer.
    return AutoBuilder(UvBuilder(settings), UvBuilder(settings), lambda: False,
                       python_installed=lambda _version: False)


SITUATIONS: dict[str, Callable[[Settings], UvBuilder | AutoBuilder]] = {
    "no engine (--builder auto)": _without_engine,
    "engine gone (--builder auto)": _engine_gone,
    "--builder uv": _uv,
}

#: kind -> (the repository's files, the file the refusal names, whether installing a
#: Python here is advice). ``{old}`` is an old Python not installed here.
KINDS: dict[str, tuple[dict[str, str], str, bool]] = {
    "Dockerfile": ({"Dockerfile": "FROM scratch\n"}, "Dockerfile", False),
    "binder/Dockerfile": ({"binder/Dockerfile": "FROM scratch\n"}, "binder/Dockerfile", False),
    "R": ({"runtime.txt": "r-4.1-2022-01-01\n"}, "runtime.txt", False),
    "Julia": ({"Project.toml": "[deps]\n"}, "Project.toml", False),
    "Nix": ({"default.nix": "{ }\n"}, "default.nix", False),
    "apt.txt": ({"apt.txt": "curl\n", "requirements.txt": "six\n"}, "apt.txt", False),
    "conda-only package": ({"environment.yml": "dependencies:\n  - r-ggplot2\n"},
                           "environment.yml", False),
    "missing new Python": ({"runtime.txt": "python-3.99\n"}, "runtime.txt", True),
    "missing old Python": ({"runtime.txt": "python-{old}\n"}, "runtime.txt", True),
    "Python 3.5": ({"runtime.txt": "python-3.5\n"}, "runtime.txt", False),
}


def sentences(text: str) -> list[str]:
    return [s.strip().lower() for s in re.split(r"(?<=[.;:!?])\s+|\n", text) if s.strip()]


def check_said_once(text: str) -> None:
    said = sentences(text)
    assert len(said) == len(set(said)), f"a sentence twice in: {text}"
    for phrase in ADVICE_PHRASES:
        assert text.count(phrase) <= 1, f"{phrase!r} twice in: {text}"
    assert len(text) < 600, f"{len(text)} characters: {text}"


@pytest.fixture
def no_pyenv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Only the Pythons of the system are found; returns an old one not among them."""
    monkeypatch.setenv("PYENV_ROOT", str(tmp_path / "no-pyenv"))
    old = next((v for v in ("3.6", "3.7", "2.7") if available_python(v) is None), None)
    if old is None:
        pytest.skip("every old Python is installed on this machine")
    return old


@pytest.mark.parametrize("situation", SITUATIONS)
@pytest.mark.parametrize("kind", KINDS)
def test_each_refusal_says_what_why_and_one_advice(
        tmp_path: Path, no_pyenv: str, kind: str, situation: str) -> None:
    files, named, install_python = KINDS[kind]
    checkout = tmp_path / "repo"
    for name, text in files.items():
        (checkout / name).parent.mkdir(parents=True, exist_ok=True)
        (checkout / name).write_text(text.replace("{old}", no_pyenv))
    builder = SITUATIONS[situation](Settings(state_dir=tmp_path / "state"))
    plan = builder.plan(checkout)
    lines: list[str] = []
    with pytest.raises(UnsupportedRepository) as refused:
        asyncio.run(builder.build(plan, checkout, lines.append))
    error = refused.value
    text = error.user_message()
    assert error.status_code == 422 and error.fault == "unsupported"
    assert named in error.message  # what asked for it, in the what-and-why part
    assert "repo2docker" in text or "Docker" in text
    check_said_once(text)
    assert error.hint.count("\n") == 0  # one piece of advice
    if situation == "--builder uv":
        assert error.hint.endswith(OTHER_BUILDER[1:]) and "Install Docker" not in text
    else:
        # --builder auto already: installing an engine is what helps, and a restart.
        assert error.hint.endswith(NO_ENGINE_HINT[1:]) and "--builder" not in text
    assert ("pyenv install" in error.hint) is install_python
    if install_python:
        assert f"Python {plan.python_version} here" in error.hint
        assert "found here:" in error.message
    assert not (tmp_path / "state" / "envs" / plan.key).exists()


@pytest.mark.parametrize("situation", SITUATIONS)
def test_conda_packages_pip_could_not_install_are_advised_once(
        tmp_path: Path, situation: str) -> None:
    """The build-time twin of a conda-only package: pip failed on environment.yml."""
    from binderless.backends.autobuilder import _failure_without_engine
    from binderless.backends.process import ProcessFailed

    (tmp_path / "environment.yml").write_text("dependencies:\n  - pip:\n    - nosuchpkg\n")
    plan = EnvironmentPlan(key="k", binder_dir="", buildpack="CondaBuildPack", requirements=("nosuchpkg",),
                           files={"environment.yml": ""})
    builder = SITUATIONS[situation](Settings(state_dir=tmp_path / "state"))
    uv = builder.uv if isinstance(builder, AutoBuilder) else builder
    failure = ProcessFailed(["uv", "pip", "install"], 1, ["error: nosuchpkg was not found"])
    error: BinderlessError = _build_failure(plan, "installing packages", failure, tmp_path,
                                            uv.advice)
    if isinstance(builder, AutoBuilder):
        assert isinstance(error, BuildFailed)
        error = _failure_without_engine(error)
    text = error.user_message()
    assert "environment.yml" in text and "repo2docker" in text
    check_said_once(text)
    assert ("Install Docker" in text) is (situation != "--builder uv")


def test_the_message_and_its_hint_are_joined_once() -> None:
    """``user_message`` puts the advice on a line of its own, and never repeats a hint the
    message already says (a refusal re-raised with its own words as the hint)."""
    error = UnsupportedRepository("It needs R.", hint=OTHER_BUILDER)
    assert error.user_message() == f"It needs R.\n{OTHER_BUILDER}"
    assert UnsupportedRepository(f"It needs R. {OTHER_BUILDER}",
                                 hint=OTHER_BUILDER).user_message().count(OTHER_BUILDER) == 1
    assert UnsupportedRepository("It needs R.").user_message() == "It needs R."
