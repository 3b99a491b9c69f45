from __future__ import annotations

import pytest

from binderless.errors import BadLink
from binderless.links import final_urlpath, legacy_redirect, split_launch_path


@pytest.mark.parametrize(
    ("path", "provider", "spec"),
    [
        ("/v2/gh/org/repo/HEAD", "gh", "org/repo/HEAD"),
        ("/v2/gh/org/repo/feature/x", "gh", "org/repo/feature/x"),
        ("/v2/gl/group%2Fsub%2Frepo/main", "gl", "group%2Fsub%2Frepo/main"),
        ("/v2/git/https%3A%2F%2Fexample.org%2Fr.git/HEAD", "git",
         "https%3A%2F%2Fexample.org%2Fr.git/HEAD"),
        ("/v2/gh/org/repo/HEAD/", "gh", "org/repo/HEAD"),
    ],
)
def test_split_launch_path_keeps_encoding(path: str, provider: str, spec: str) -> None:
    target = split_launch_path(path, "v2")
    assert (target.provider, target.spec) == (provider, spec)
    assert target.request == f"v2/{provider}/{spec}"


@pytest.mark.parametrize("path", ["/v2/", "/v2/gh", "/v2/gh/", "/build/gh/org", "/x/gh/a/b"])
def test_split_launch_path_rejects_incomplete_links(path: str) -> None:
    with pytest.raises(BadLink):
        split_launch_path(path, "v2")


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"labpath": "index.ipynb"}, "doc/tree/index.ipynb"),
        ({"labpath": "/a/b.ipynb", "urlpath": "lab"}, "doc/tree/a/b.ipynb"),
        ({"filepath": "data/x.csv"}, "tree/data/x.csv"),
        ({"urlpath": "/lab/tree/x.ipynb"}, "lab/tree/x.ipynb"),
        ({"urlpath": "voila/render/x.ipynb"}, "voila/render/x.ipynb"),
        ({"filepath": "f", "urlpath": "u"}, "tree/f"),
        ({}, ""),
    ],
)
def test_final_urlpath_precedence(query: dict[str, str], expected: str) -> None:
    assert final_urlpath(query) == expected


def test_legacy_redirect() -> None:
    assert legacy_redirect("/repo/org/repo") == "/v2/gh/org/repo/master"
    assert legacy_redirect("/repo/org/repo/notebooks/a b.ipynb") == (
        "/v2/gh/org/repo/master?urlpath=notebooks/a%20b.ipynb")
    with pytest.raises(BadLink):
        legacy_redirect("/repo/org")
