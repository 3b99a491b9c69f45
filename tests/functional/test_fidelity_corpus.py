"""Fidelity to repo2docker on its own test repositories (``tests/fixtures/r2d-corpus``).

Three layers, cheapest first:

* the corpus, ``expected.toml`` and the docs' table agree (no builder runs);
* every case's plan stage: the real uv builder runs on the checkout (its plan,
  repo2docker's detection, its refusals) and is stopped at its first install, so pip-family
  cases must reach it and every other one must be refused with a 422 naming what builds it
  (``bench/fidelity.py --plan-only``; seconds, no network);
* a few pip-family cases launched for real on ``binderless serve --builder uv``, with
  repo2docker's ``verify`` run inside the session as repo2docker's tests run it.

A case whose ``expected.toml`` entry is ``pending`` (or ``plan_pending``) waits for a rule
of the uv builder (issue 16): it is expected to fail until then, strictly, so that the fix
lands together with the removal of its mark.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.fidelity import (
    CORPUS,
    DOCS_BEGIN,
    DOCS_END,
    Expectation,
    Outcome,
    classify_failure,
    classify_verify,
    compare,
    corpus_cases,
    default_uv_cache,
    expected_table,
    load_expectations,
    run_full,
    run_plan_stage,
)
from tests.conftest import ROOT

EXPECTED = load_expectations()
CASES = corpus_cases()
#: Launched for real (two environments: the first two share one): a start script's
#: exports, the session's REPO_DIR and PATH, and the Pipfile's precedence over
#: requirements.txt. ``bench/fidelity.py`` launches every case.
REAL_CASES = ("venv/start/start-script", "venv/usr-bin", "pipfile/requirements-txt")


def _pending(reason: str) -> pytest.MarkDecorator:
    return pytest.mark.xfail(reason=f"not yet (issue 16): {reason}", strict=True)


def _params(cases: tuple[str, ...] | list[str], plan: bool) -> list[object]:
    params: list[object] = []
    for case in cases:
        exp = EXPECTED.get(case)
        pending = exp and (exp.plan_pending if plan else exp.pending)
        params.append(pytest.param(case, marks=_pending(pending)) if pending else case)
    return params


# ----- the corpus and its table ---------------------------------------------------------

def test_every_case_has_an_expectation_and_no_other() -> None:
    assert len(CASES) >= 45  # repo2docker's tests/ had 50 cases with a verify script
    assert sorted(EXPECTED) == CASES


def test_each_case_is_repo2dockers_own_and_runnable() -> None:
    for case in CASES:
        verify = CORPUS / case / "verify"
        assert verify.stat().st_mode & 0o111, f"{case}/verify lost its executable bit"
        assert verify.read_bytes().startswith(b"#!"), case
    readme = (CORPUS / "README.md").read_text()
    assert "BSD 3-Clause" in readme and "github.com/jupyterhub/repo2docker" in readme


def test_pip_family_cases_are_expected_to_build_and_no_wrong_class_exists() -> None:
    """Every case a pip-family buildpack of repo2docker handles passes (or differs in a
    documented way); nothing outside that family is expected to build with uv."""
    pip_family = ("venv/", "pipfile/", "pyproject/")
    for case, exp in EXPECTED.items():
        assert exp.reason, case
        if case.startswith(pip_family) and exp.klass == "REFUSED":
            # Refused only for what uv cannot make: system packages or Python 2/3.5.
            assert any(word in exp.reason for word in ("apt.txt", "python-2", "2.7", "3.5")), \
                case
        if case.startswith(("dockerfile/", "julia/", "nix/", "r/")):
            assert exp.klass == "REFUSED", case


def test_the_docs_carry_the_expected_table() -> None:
    docs = (ROOT / "docs" / "providers.md").read_text()
    assert DOCS_BEGIN in docs and DOCS_END in docs, "docs/providers.md lost the table marks"
    table = docs.split(DOCS_BEGIN, 1)[1].split(DOCS_END, 1)[0].strip()
    assert table == expected_table(load_expectations(python_here=lambda _version: True)), \
        "docs/providers.md is stale: paste `.venv/bin/python bench/fidelity.py --expected-table`"


# ----- the classification itself ---------------------------------------------------------

def test_a_refusal_is_clear_only_when_it_names_what_builds_the_repository() -> None:
    assert classify_failure(422, "needs R; start binderless with --builder auto") == "REFUSED"
    assert classify_failure(422, "Python 3 not installed") == "UNCLEAR"
    assert classify_failure(500, "The build stopped unexpectedly (repo2docker)") == "CRASH"


def test_verify_fails_as_a_difference_only_on_the_documented_text() -> None:
    exp = Expectation("venv/default", "DIFFERENCE", "appendix", difference="/tmp/appendix")
    assert classify_verify(0, "", exp) == "PASS"
    assert classify_verify(1, "No such file: '/tmp/appendix'", exp) == "DIFFERENCE"
    assert classify_verify(1, "AssertionError: (3, 11)", exp) == "WRONG"
    assert classify_verify(1, "/tmp/appendix", None) == "WRONG"


def test_a_case_needing_a_python_not_installed_here_is_expected_refused(
        tmp_path: Path) -> None:
    path = tmp_path / "expected.toml"
    path.write_text('[cases."venv/py2"]\nclass = "PASS"\nreason = "kernel env"\n'
                    'needs_python = "2.7"\n[cases."venv/numpy"]\nclass = "PASS"\nreason = "r"\n')
    asked: list[str] = []

    def nowhere(version: str) -> bool:
        asked.append(version)
        return False

    expected = load_expectations(path, python_here=nowhere)
    assert asked == ["2.7"]
    assert expected["venv/py2"].klass == "REFUSED"
    assert expected["venv/numpy"].klass == "PASS"
    assert load_expectations(path, python_here=lambda _v: True)["venv/py2"].klass == "PASS"


def test_a_pending_case_is_not_held_against_the_run_but_others_are() -> None:
    pending = Expectation("x", "PASS", "r", pending="rule")
    fixed = Expectation("x", "PASS", "r")
    assert compare(Outcome("x", "WRONG"), pending, plan_stage=False) == "pending"
    assert compare(Outcome("x", "WRONG"), fixed, plan_stage=False).startswith("UNEXPECTED")
    assert compare(Outcome("x", "BUILDS"), fixed, plan_stage=True) == "ok"


# ----- the plan stage of every case ------------------------------------------------------

@pytest.fixture(scope="module")
def plan_stage() -> dict[str, Outcome]:
    return run_plan_stage(CASES, jobs=2)


@pytest.mark.parametrize("case", _params(CASES, plan=True))
def test_plan_stage_classifies_each_case_as_expected(plan_stage: dict[str, Outcome],
                                                     case: str) -> None:
    outcome = plan_stage[case]
    exp = EXPECTED[case]
    assert outcome.klass == exp.plan_class, f"{case}: {outcome.detail}\n" + "".join(outcome.log)
    if outcome.klass == "REFUSED":
        assert outcome.detail.startswith("422:"), outcome.detail


# ----- a few cases for real --------------------------------------------------------------

@pytest.fixture(scope="module")
def launched() -> dict[str, Outcome]:
    return run_full(REAL_CASES, EXPECTED, jobs=2, uv_cache=default_uv_cache())


@pytest.mark.e2e
@pytest.mark.parametrize("case", _params(REAL_CASES, plan=False))
def test_verify_passes_inside_the_session(launched: dict[str, Outcome], case: str) -> None:
    outcome = launched[case]
    assert outcome.klass == EXPECTED[case].klass, \
        f"{case}: {outcome.detail}\n" + "".join(outcome.log)[-4000:]


def test_real_cases_are_pip_family_and_expected_to_pass() -> None:
    for case in REAL_CASES:
        assert EXPECTED[case].klass == "PASS", case
        assert (CORPUS / case).is_dir(), case
