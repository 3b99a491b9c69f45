"""Every link form the ecosystem emits, through ``binderless resolve --offline``."""

from __future__ import annotations

import json
import subprocess
import sys

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
     "org/repo/main", "https://github.com/org/repo", "main", ""),
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
