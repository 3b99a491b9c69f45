from __future__ import annotations

import pytest

from binderless.errors import BadLink, ProviderUnavailable, RefNotFound, SpecNotAllowed
from binderless.providers.gist import GistProvider
from binderless.providers.github import GitHubApi
from binderless.providers.gitlab import GitLabProvider
from tests.http_replay import Replay

GL_SHA = "89abcdef0123456789abcdef0123456789abcdef"
GL = "/api/v4/projects/"
GIST = "/gists/8f9c1b2a3d4e5f60718293a4b5c6d7e8"
NEWEST = "aaaa1111bbbb2222cccc3333dddd4444eeee5555"
OLDER = "1111aaaa2222bbbb3333cccc4444dddd5555eeee"


def gitlab(replay: Replay, token: str = "") -> GitLabProvider:
    return GitLabProvider(replay.client(), token=token, clock=lambda: 1_000_000.0)


def gist(replay: Replay, **kw: bool) -> GistProvider:
    api = GitHubApi(replay.client(), api_url="https://api.github.com", token="",
                    clock=lambda: 1_000_000.0)
    return GistProvider(api, **kw)


def test_gitlab_encoded_namespace() -> None:
    replay = Replay({GL + "group%2Fsub%2Fproject/repository/commits/main": "gitlab/commit-ok.json"})
    repo = gitlab(replay, token="glpat-secret").resolve("group%2Fsub%2Fproject/main")
    assert repo.resolved_ref == GL_SHA
    assert repo.repo_url == "https://gitlab.com/group/sub/project"
    assert repo.persistent_request == f"v2/gl/group%2Fsub%2Fproject/{GL_SHA}"
    assert replay.requests[0].headers["PRIVATE-TOKEN"] == "glpat-secret"


def test_gitlab_unencoded_myst_form_tries_namespace_splits() -> None:
    replay = Replay({
        GL + "group%2Fsub%2Fproject%2Ffeature/repository/commits/x": "gitlab/project-unknown.json",
        GL + "group%2Fsub%2Fproject/repository/commits/feature%2Fx": "gitlab/commit-ok.json",
    })
    repo = gitlab(replay).resolve("group/sub/project/feature/x")
    assert repo.resolved_ref == GL_SHA and repo.ref == "feature/x"


def test_gitlab_errors() -> None:
    unknown_ref = Replay({GL + "g%2Fp/repository/commits/nope": "gitlab/ref-unknown.json"})
    with pytest.raises(RefNotFound, match="Could not resolve ref for gl:g%2Fp/nope"):
        gitlab(unknown_ref).resolve("g%2Fp/nope")
    unknown_repo = Replay({GL + "g%2Fp/repository/commits/main": "gitlab/project-unknown.json"})
    with pytest.raises(RefNotFound):
        gitlab(unknown_repo).resolve("g%2Fp/main")
    limited = Replay({GL + "g%2Fp/repository/commits/main": "gitlab/rate-limited.json"})
    with pytest.raises(ProviderUnavailable, match=r"GitLab rate limit exceeded\. Try again in 3 minutes\."):
        gitlab(limited).resolve("g%2Fp/main")
    broken = Replay({GL + "g%2Fp/repository/commits/main": "gitlab/server-error.json"})
    with pytest.raises(ProviderUnavailable, match="500"):
        gitlab(broken).resolve("g%2Fp/main")
    with pytest.raises(BadLink):
        gitlab(Replay({})).resolve("justone")


@pytest.mark.parametrize(("ref", "expected"), [("", NEWEST), ("HEAD", NEWEST), ("main", NEWEST),
                                               (OLDER, OLDER)])
def test_gist_revisions(ref: str, expected: str) -> None:
    spec = "jdoe/8f9c1b2a3d4e5f60718293a4b5c6d7e8" + (f"/{ref}" if ref else "")
    repo = gist(Replay({GIST: "gist/gist-ok.json"})).resolve(spec)
    assert repo.resolved_ref == expected
    assert repo.clone_url == "https://gist.github.com/jdoe/8f9c1b2a3d4e5f60718293a4b5c6d7e8.git"


def test_gist_errors() -> None:
    spec = "jdoe/8f9c1b2a3d4e5f60718293a4b5c6d7e8"
    with pytest.raises(RefNotFound, match="Could not resolve ref for gist"):
        gist(Replay({GIST: "gist/gist-ok.json"})).resolve(spec + "/" + "f" * 40)
    with pytest.raises(RefNotFound) as wrong_owner:
        gist(Replay({GIST: "gist/gist-ok.json"})).resolve("someoneelse/8f9c1b2a3d4e5f60718293a4b5c6d7e8")
    assert "belongs to jdoe" in wrong_owner.value.user_message()
    with pytest.raises(RefNotFound):
        gist(Replay({GIST: "gist/gist-unknown.json"})).resolve(spec)
    with pytest.raises(SpecNotAllowed, match="Secret gists"):
        gist(Replay({GIST: "gist/gist-secret.json"})).resolve(spec)
    assert gist(Replay({GIST: "gist/gist-secret.json"}), allow_secret=True).resolve(spec)
    with pytest.raises(ProviderUnavailable, match=r"GitHub rate limit exceeded\. Try again in 2 minutes\."):
        gist(Replay({GIST: "gist/rate-limited.json"})).resolve(spec)
    with pytest.raises(ProviderUnavailable, match="503"):
        gist(Replay({GIST: "gist/server-error.json"})).resolve(spec)
    with pytest.raises(BadLink):
        gist(Replay({})).resolve("jdoe/not-hex!")
