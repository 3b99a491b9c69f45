from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import pytest

from binderless.errors import BadLink, RefNotFound, SpecNotAllowed
from binderless.providers.git import GitProvider, split_git_spec
from tests.conftest import FIXTURE_REPOS, git, make_git_repo


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_git_repo(FIXTURE_REPOS / "python-requirements", tmp_path / "repo")


def test_split_git_spec_forms() -> None:
    assert split_git_spec("https%3A%2F%2Fexample.org%2Fa%2Fb.git/main") == (
        "https://example.org/a/b.git", "main")
    # Jupyter Book's quote() keeps the slashes.
    assert split_git_spec("https%3A//example.org/a/b/main") == ("https://example.org/a/b", "main")
    with pytest.raises(BadLink):
        split_git_spec("https%3A%2F%2Fexample.org")


def test_local_repository_resolves_any_ref(repo: Path) -> None:
    head = git("rev-parse", "HEAD", cwd=repo)
    provider = GitProvider(allow_local=True)
    for ref in ("HEAD", "main", head[:8], head):
        spec = f"{quote('file://' + str(repo), safe='')}/{ref}"
        resolved = provider.resolve(spec)
        assert resolved.resolved_ref == head
        assert resolved.persistent_request.endswith("/" + head)


def test_local_unknown_ref_and_missing_path(repo: Path, tmp_path: Path) -> None:
    provider = GitProvider(allow_local=True)
    with pytest.raises(RefNotFound, match="Could not resolve ref"):
        provider.resolve(f"{quote(str(repo), safe='')}/no-such-branch")
    with pytest.raises(RefNotFound, match="no directory"):
        provider.resolve(f"{quote(str(tmp_path / 'missing'), safe='')}/HEAD")


def test_plain_directory_is_pinned_by_content(tmp_path: Path) -> None:
    folder = tmp_path / "plain"
    folder.mkdir()
    (folder / "a.txt").write_text("one")
    provider = GitProvider(allow_local=True)
    spec = f"{quote(str(folder), safe='')}/HEAD"
    first = provider.resolve(spec)
    assert first.kind == "dir"
    (folder / "a.txt").write_text("two")
    assert provider.resolve(spec).resolved_ref != first.resolved_ref


def test_local_paths_refused_outside_local_mode(repo: Path) -> None:
    with pytest.raises(SpecNotAllowed):
        GitProvider(allow_local=False).resolve(f"{quote('file://' + str(repo), safe='')}/HEAD")


def test_ls_remote_resolution(repo: Path) -> None:
    head = git("rev-parse", "HEAD", cwd=repo)
    git("tag", "v1", cwd=repo)
    provider = GitProvider(allow_local=False)
    url = "file://" + str(repo)
    assert provider._ls_remote("s", url, "main") == head
    assert provider._ls_remote("s", url, "v1") == head
    assert provider._ls_remote("s", url, "HEAD") == head
    with pytest.raises(RefNotFound):
        provider._ls_remote("s", url, "nope")


def test_non_git_urls_are_rejected() -> None:
    with pytest.raises(BadLink, match="not a git URL"):
        GitProvider(allow_local=False).resolve("javascript%3Aalert(1)/HEAD")
