from __future__ import annotations

import httpx
import pytest

from binderless.errors import BadLink, ProviderUnavailable, RefNotFound
from binderless.providers.github import GitHubProvider
from tests.http_replay import Replay, recorded

SHA = "0123456789abcdef0123456789abcdef01234567"
COMMITS = "/repos/org/repo/commits/"


def provider(replay: Replay, **kw: object) -> GitHubProvider:
    return GitHubProvider(replay.client(), clock=lambda: 1_000_000.0, **kw)  # type: ignore[arg-type]


def test_resolves_a_branch_to_its_commit() -> None:
    replay = Replay({COMMITS + "main": "github/commit-ok.json"})
    repo = provider(replay).resolve("org/repo/main")
    assert repo.resolved_ref == SHA
    assert repo.repo_url == "https://github.com/org/repo"
    assert repo.ref_url == f"https://github.com/org/repo/tree/{SHA}"
    assert repo.persistent_request == f"v2/gh/org/repo/{SHA}"


def test_ref_with_slashes_and_dot_git_suffix() -> None:
    replay = Replay({COMMITS + "feature%2Fx": "github/commit-ok.json"})
    repo = provider(replay).resolve("org/repo.git/feature/x")
    assert repo.resolved_ref == SHA and repo.ref == "feature/x"


def test_etag_cache_reuses_the_commit_on_304() -> None:
    calls: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return recorded("github/commit-ok.json" if len(calls) == 1 else "github/not-modified.json")

    p = provider(Replay({COMMITS + "HEAD": answer}))
    assert p.resolve("org/repo/HEAD").resolved_ref == SHA
    assert p.resolve("org/repo/HEAD").resolved_ref == SHA
    assert calls[1].headers["If-None-Match"] == 'W/"abc123"'


def test_unknown_ref_and_not_found_cache() -> None:
    replay = Replay({COMMITS + "nope": "github/ref-unknown.json"})
    p = provider(replay)
    for _ in range(2):
        with pytest.raises(RefNotFound, match="Could not resolve ref for gh:org/repo/nope"):
            p.resolve("org/repo/nope")
    assert len(replay.requests) == 1  # the second answer came from the not-found cache


def test_unknown_repository() -> None:
    replay = Replay({COMMITS + "HEAD": "github/repo-unknown.json"})
    with pytest.raises(RefNotFound, match="Double check your URL"):
        provider(replay).resolve("org/repo/HEAD")


def test_missing_master_falls_back_to_default_branch_and_says_so() -> None:
    replay = Replay({COMMITS + "master": "github/ref-unknown.json",
                     COMMITS + "HEAD": "github/commit-ok.json"})
    repo = provider(replay).resolve("org/repo/master")
    assert repo.resolved_ref == SHA
    assert "default branch" in repo.notes[0]


def test_rate_limit_message() -> None:
    replay = Replay({COMMITS + "HEAD": "github/rate-limited.json"})
    with pytest.raises(ProviderUnavailable, match=r"GitHub rate limit exceeded. Try again in 10 minutes."):
        provider(replay).resolve("org/repo/HEAD")


def test_server_error_and_network_error() -> None:
    with pytest.raises(ProviderUnavailable, match="502"):
        provider(Replay({COMMITS + "HEAD": "github/server-error.json"})).resolve("org/repo/HEAD")

    def boom(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with pytest.raises(ProviderUnavailable, match="could not be reached"):
        provider(Replay({COMMITS + "HEAD": boom})).resolve("org/repo/HEAD")


def test_token_is_sent_but_never_shown() -> None:
    replay = Replay({COMMITS + "HEAD": "github/commit-ok.json"})
    repo = provider(replay, token="ghp_secret").resolve("org/repo/HEAD")
    assert replay.requests[0].headers["Authorization"] == "token ghp_secret"
    assert "ghp_secret" not in repr(repo)


@pytest.mark.parametrize("spec", ["org", "org/repo", "org//HEAD", "../x/HEAD", "o r/x/HEAD"])
def test_malformed_specs(spec: str) -> None:
    with pytest.raises(BadLink):
        provider(Replay({})).resolve(spec)


def test_github_enterprise_host() -> None:
    from binderless.settings import Settings

    settings = Settings(github_host="git.example.edu")
    assert settings.github_api == "https://git.example.edu/api/v3"
    replay = Replay({"/api/v3/repos/org/repo/commits/HEAD": "github/commit-ok.json"})
    p = GitHubProvider(replay.client(), api_url=settings.github_api, host=settings.github_host,
                       token="ghe-token")
    repo = p.resolve("org/repo/HEAD")
    assert repo.repo_url == "https://git.example.edu/org/repo"
    assert str(replay.requests[0].url).startswith("https://git.example.edu/api/v3/")
    assert replay.requests[0].headers["Authorization"] == "token ghe-token"
