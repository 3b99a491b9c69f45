"""Every link form the ecosystem emits, through ``binderless resolve --offline``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from binderless.errors import BadLink
from binderless.providers import ProviderRegistry
from binderless.resolve import resolve_link
from binderless.settings import Settings

SERVER = "http://127.0.0.1:8585"


def offline_registry() -> ProviderRegistry:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise AssertionError(f"--offline used the network: {request.url}")

    return ProviderRegistry(Settings(), httpx.Client(transport=httpx.MockTransport(refuse)))


# (who emits it, the link, provider, spec, repo_url, ref, urlpath)
TABLE = [
    ("mybinder badge", "https://mybinder.org/v2/gh/binder-examples/requirements/HEAD",
     "gh", "binder-examples/requirements/HEAD", "https://github.com/binder-examples/requirements",
     "HEAD", ""),
    ("labpath link", "https://mybinder.org/v2/gh/org/repo/main?labpath=notebooks/intro.ipynb",
     "gh", "org/repo/main", "https://github.com/org/repo", "main", "doc/tree/notebooks/intro.ipynb"),
    ("filepath link", "https://mybinder.org/v2/gh/org/repo/main?filepath=data/x.csv",
     "gh", "org/repo/main", "https://github.com/org/repo", "main", "tree/data/x.csv"),
    ("branch with slash", "https://mybinder.org/v2/gh/org/repo/feature/new-ui",
     "gh", "org/repo/feature/new-ui", "https://github.com/org/repo", "feature/new-ui", ""),
    ("Jupyter Book, GitHub", "https://mybinder.org/v2/gh/executablebooks/jupyter-book/master"
     "?urlpath=tree/docs/start/overview.md",
     "gh", "executablebooks/jupyter-book/master", "https://github.com/executablebooks/jupyter-book",
     "master", "tree/docs/start/overview.md"),
    ("Jupyter Book, lab", "https://mybinder.org/v2/gh/org/book/main?urlpath=lab/tree/ch1.ipynb",
     "gh", "org/book/main", "https://github.com/org/book", "main", "lab/tree/ch1.ipynb"),
    ("Jupyter Book, GitLab", "https://mybinder.org/v2/gl/group%2Fbook/main?urlpath=tree/a.ipynb",
     "gl", "group%2Fbook/main", "https://gitlab.com/group/book", "main", "tree/a.ipynb"),
    ("Jupyter Book, other git", "https://mybinder.org/v2/git/https%3A//codeberg.org/org/book/main"
     "?urlpath=tree/a.ipynb",
     "git", "https%3A//codeberg.org/org/book/main", "https://codeberg.org/org/book", "main",
     "tree/a.ipynb"),
    ("thebe, git", "https://mybinder.org/build/git/https%3A%2F%2Fcodeberg.org%2Forg%2Frepo.git/main",
     "git", "https%3A%2F%2Fcodeberg.org%2Forg%2Frepo.git/main", "https://codeberg.org/org/repo.git",
     "main", ""),
    ("thebe, git ref with slash",
     "https://mybinder.org/build/git/https%3A%2F%2Fhost.org%2Fr.git/feature/x",
     "git", "https%3A%2F%2Fhost.org%2Fr.git/feature/x", "https://host.org/r.git", "feature/x", ""),
    ("thebe, gitlab", "https://mybinder.org/build/gl/group%2Fsub%2Fproject/v1.0",
     "gl", "group%2Fsub%2Fproject/v1.0", "https://gitlab.com/group/sub/project", "v1.0", ""),
    ("thebe, gist", "https://mybinder.org/build/gist/jdoe/8f9c1b2a3d4e5f60718293a4b5c6d7e8/HEAD",
     "gist", "jdoe/8f9c1b2a3d4e5f60718293a4b5c6d7e8/HEAD",
     "https://gist.github.com/jdoe/8f9c1b2a3d4e5f60718293a4b5c6d7e8", "HEAD", ""),
    ("MyST, unencoded GitLab", "https://mybinder.org/v2/gl/group/sub/repo/main"
     "?urlpath=/lab/tree/a.ipynb",
     "gl", "group/sub/repo/main", "https://gitlab.com/group/sub/repo", "main", "lab/tree/a.ipynb"),
    ("legacy /repo", "https://mybinder.org/repo/org/repo/notebooks/a.ipynb",
     "gh", "org/repo/master", "https://github.com/org/repo", "master", "notebooks/a.ipynb"),
    ("bare spec", "gh/org/repo/HEAD", "gh", "org/repo/HEAD", "https://github.com/org/repo",
     "HEAD", ""),
    ("pasted GitHub URL", "https://github.com/org/repo", "gh", "org/repo/HEAD",
     "https://github.com/org/repo", "HEAD", ""),
    ("pasted GitHub branch", "https://github.com/org/repo/tree/dev", "gh", "org/repo/dev",
     "https://github.com/org/repo", "dev", ""),
    ("pasted GitHub file", "https://github.com/org/repo/blob/main/a.ipynb", "gh",
     "org/repo/main", "https://github.com/org/repo", "main", "doc/tree/a.ipynb"),
    ("pasted GitHub .git", "https://github.com/org/repo.git", "gh", "org/repo/HEAD",
     "https://github.com/org/repo", "HEAD", ""),
    ("pasted GitLab URL", "https://gitlab.com/group/sub/project/-/tree/main", "gl",
     "group%2Fsub%2Fproject/main", "https://gitlab.com/group/sub/project", "main", ""),
    ("pasted gist", "https://gist.github.com/jdoe/8f9c1b2a3d4e5f60718293a4b5c6d7e8", "gist",
     "jdoe/8f9c1b2a3d4e5f60718293a4b5c6d7e8",
     "https://gist.github.com/jdoe/8f9c1b2a3d4e5f60718293a4b5c6d7e8", "HEAD", ""),
    ("pasted other git", "https://codeberg.org/org/repo.git", "git",
     "https%3A%2F%2Fcodeberg.org%2Forg%2Frepo.git/HEAD", "https://codeberg.org/org/repo.git",
     "HEAD", ""),
]


@pytest.mark.parametrize(("who", "link", "provider", "spec", "repo_url", "ref", "urlpath"), TABLE,
                         ids=[row[0] for row in TABLE])
def test_offline_resolution_of_real_world_links(who: str, link: str, provider: str, spec: str,
                                                repo_url: str, ref: str, urlpath: str) -> None:
    result = resolve_link(link, offline_registry(), server=SERVER, offline=True)
    assert (result["provider"], result["spec"]) == (provider, spec)
    assert (result["repo_url"], result["ref"]) == (repo_url, ref)
    assert result["urlpath"] == urlpath
    assert result["launch_url"].startswith(f"{SERVER}/v2/{provider}/{spec}")
    assert result["resolved_ref"] is None and result["persistent_url"] is None


@pytest.mark.parametrize(("link", "provider", "spec"), [
    ("https://zenodo.org/records/3242074", "zenodo", "10.5281/zenodo.3242074"),
    ("https://zenodo.org/record/3242074", "zenodo", "10.5281/zenodo.3242074"),
    ("https://doi.org/10.5281/zenodo.3242074", "zenodo", "10.5281/zenodo.3242074"),
    ("doi:10.6084/m9.figshare.9782777.v1", "doi", "10.6084/m9.figshare.9782777.v1"),
    ("10.7910/DVN/TJCLKP", "doi", "10.7910/DVN/TJCLKP"),
])
def test_record_and_doi_urls_pick_the_provider(link: str, provider: str, spec: str) -> None:
    from binderless.links import parse_link

    assert (parse_link(link).target.provider, parse_link(link).target.spec) == (provider, spec)


@pytest.mark.parametrize("link", ["gh", "gh/x", "https://mybinder.org/v2/", "ftp://x/y",
                                  "nope/x/y"])
def test_bad_links_are_clear_errors(link: str) -> None:
    with pytest.raises(BadLink):
        resolve_link(link, offline_registry(), server=SERVER, offline=True)


def test_resolve_command_offline_prints_json() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "binderless", "resolve", "--offline",
         "https://mybinder.org/v2/gh/org/repo/main?labpath=a.ipynb"],
        capture_output=True, text=True, check=True)
    data = json.loads(result.stdout)
    assert data["launch_url"] == f"{SERVER}/v2/gh/org/repo/main?urlpath=doc/tree/a.ipynb"
    bad = subprocess.run([sys.executable, "-m", "binderless", "resolve", "--offline", "gh/x"],
                         capture_output=True, text=True)
    assert bad.returncode == 1 and "Traceback" not in bad.stderr


# ----- issue 15: the one parser's answers to what people paste ---------------------------

@pytest.mark.parametrize(("text", "provider", "spec", "path", "kind"), [
    ("gh/binder-examples/requirements/HEAD", "gh", "binder-examples/requirements/HEAD", "", ""),
    ("git@github.com:org/repo.git", "gh", "org/repo/HEAD", "", ""),
    ("git@gitlab.com:group/sub/project.git", "gl", "group%2Fsub%2Fproject/HEAD", "", ""),
    ("ssh://git@github.com/org/repo.git", "gh", "org/repo/HEAD", "", ""),
    ("https://github.com/org/repo/blob/main/nb/a.ipynb", "gh", "org/repo/main", "nb/a.ipynb",
     "file"),
    ("https://gitlab.com/group/project/-/blob/v2/a.ipynb", "gl", "group%2Fproject/v2",
     "a.ipynb", "file"),
    ("/home/me/repo", "git", "%2Fhome%2Fme%2Frepo/HEAD", "", ""),
    ("~/repo", "git", "~%2Frepo/HEAD", "", ""),
    ("./repo", "git", "%2Fsrv%2Frepo/HEAD", "", ""),
    (".", "git", "%2Fsrv/HEAD", "", ""),
    ("https://mybinder.org/v2/gh/o/r/main?filepath=x.csv", "gh", "o/r/main", "tree/x.csv", "url"),
    ("https://figshare.com/articles/dataset/t/9782777/1", "figshare",
     "10.6084/m9.figshare.9782777.v1", "", ""),
])
def test_parse_link_reads_what_people_paste(text: str, provider: str, spec: str, path: str,
                                            kind: str) -> None:
    from binderless.links import parse_link

    link = parse_link(text, cwd="/srv")
    assert (link.target.provider, link.target.spec, link.path, link.path_kind) == (
        provider, spec, path, kind)


@pytest.mark.parametrize(("text", "says"), [
    ("git//home/me/repo/HEAD", "git/%2Fhome%2Fme%2Frepo/HEAD"),
    ("git/https://host.org/r.git/main", "git/https%3A%2F%2Fhost.org%2Fr.git/main"),
    ("git@codeberg.org:org/repo.git", "https://codeberg.org/org/repo"),
    ("org/repo", "gh/binder-examples/requirements/HEAD"),
    ("https://example.org/", "names no repository"),
])
def test_parse_link_refusals_say_what_to_write(text: str, says: str) -> None:
    from binderless.links import parse_link

    with pytest.raises(BadLink) as caught:
        parse_link(text)
    assert says in caught.value.user_message()


def test_the_parser_knows_every_provider_of_the_registry() -> None:
    from binderless.links import PROVIDER_PREFIXES
    from binderless.providers import PROVIDERS

    assert set(PROVIDERS) == PROVIDER_PREFIXES


def test_launch_parses_like_resolve() -> None:
    from binderless.client import parse_target

    assert parse_target("https://github.com/org/repo/blob/main/a.ipynb", SERVER) == (
        SERVER, "gh/org/repo/main", "doc/tree/a.ipynb")
    assert parse_target("https://other.org/hub/v2/gh/o/r/HEAD", SERVER) == (
        "https://other.org/hub", "gh/o/r/HEAD", "")


def test_build_failure_names_the_file_and_line(tmp_path: Path) -> None:
    from binderless.backends.process import ProcessFailed
    from binderless.backends.uvbuilder import _build_failure
    from binderless.envplan import EnvironmentPlan

    (tmp_path / "requirements.txt").write_text("six\nnumpy==>1\n")
    plan = EnvironmentPlan(key="k", binder_dir="", requirement_files=("requirements.txt",))
    typo = ProcessFailed(["uv"], 2, [
        "error: Couldn't parse requirement in `requirements.txt` at position 4",
        '  cause: no such comparison operator "==>", must be one of ~= == != <= >= < > ===',
        "         numpy==>1", "              ^^^^"])
    error = _build_failure(plan, "installing the packages", typo, tmp_path)
    assert (error.fault, error.file, error.line) == ("repository", "requirements.txt", 2)
    assert "Fix line 2 of requirements.txt: numpy==>1" in error.hint
    assert error.hint.count("no such comparison operator") == 1
    (tmp_path / "requirements.txt").write_text("six\n# numpy\nnot-a-package-xyz==1\n")
    missing = ProcessFailed(["uv"], 1, [
        " + six==1.17.0", "error: No solution found when resolving dependencies",
        "  cause: Because not-a-package-xyz was not found in the package registry"])
    error = _build_failure(plan, "installing the packages", missing, tmp_path)
    assert (error.file, error.line) == ("requirements.txt", 3)
    offline = ProcessFailed(["uv"], 2, ["error: Failed to fetch: https://pypi.org/simple/six/"])
    assert _build_failure(plan, "installing the packages", offline, tmp_path).fault == "server"


def test_launch_failure_summary_is_whole_and_last() -> None:
    from binderless.client import failure_summary

    cause = "cause: Because x was not found in the package registry"
    final = {"phase": "failed", "message": "Building failed.\nuv said: Because x was not found "
             "in the package registry\nFix line 1 of requirements.txt: x==1\n"}
    text = failure_summary(final, ["Building with uv\n", "error: No solution\n", f"  {cause}\n",
                                   final["message"]])
    assert text.endswith("[Failed] Building failed.\n  uv said: Because x was not found in the "
                         "package registry\n  Fix line 1 of requirements.txt: x==1\n")
    assert text.count("was not found") == 1 and "Building with uv" in text


def test_resolve_query_answers_any_text_with_a_result_or_a_clear_error() -> None:
    """What the home page sends as a person types: mangled links, repeats, control
    characters, lone surrogates. Every answer is a result or a BinderlessError (a 4xx)."""
    import random
    import string

    from binderless.errors import BinderlessError
    from binderless.resolve import resolve_query

    registry = offline_registry()
    rng = random.Random(15)
    alphabet = string.printable + "%~@:/\\?#&=\u00e9\u202e\ud800\x00"
    seeds = [row[1] for row in TABLE] + ["git@github.com:o/r.git", "~/r", "./r", "git//a/b"]
    for _ in range(3000):
        base = rng.choice(seeds)
        pos = rng.randrange(len(base) + 1)
        noise = "".join(rng.choice(alphabet) for _ in range(rng.randrange(1, 8)))
        text = rng.choice([base[:pos] + noise + base[pos:], noise * rng.randrange(1, 30),
                           rng.choice(["git/", "gh/", "doi/", "/v2/", "git@x:"]) + noise])
        try:
            resolve_query({"link": text}, registry, server=SERVER, cwd="/srv")
        except BinderlessError as exc:
            assert 400 <= exc.status_code < 500, (text, exc)
