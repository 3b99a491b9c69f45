from __future__ import annotations

import pytest

from binderless.errors import SpecNotAllowed
from binderless.policy import SpecPolicy, quota_for
from binderless.settings import Settings


def test_banned_specs_match_like_binderhub() -> None:
    policy = SpecPolicy(Settings(banned_specs=("^evil-org/.*", "gl:^bad%2F")))
    with pytest.raises(SpecNotAllowed, match="Sorry, evil-org/x/HEAD is not allowed to launch"):
        policy.check("gh", "evil-org/x/HEAD")
    with pytest.raises(SpecNotAllowed):
        policy.check("gh", "EVIL-ORG/x/HEAD")  # case-insensitive
    with pytest.raises(SpecNotAllowed):
        policy.check("gl", "bad%2Fproject/main")
    policy.check("gh", "bad%2Fproject/main")  # scoped to gl only
    policy.check("gh", "good/repo/HEAD")


def test_allowed_specs_and_providers() -> None:
    policy = SpecPolicy(Settings(allowed_specs=("^my-org/",), allowed_providers=("gh", "git")))
    policy.check("gh", "my-org/repo/HEAD")
    with pytest.raises(SpecNotAllowed):
        policy.check("gh", "other/repo/HEAD")
    with pytest.raises(SpecNotAllowed, match="not enabled on this server"):
        policy.check("zenodo", "10.5281/zenodo.1")


def test_quotas() -> None:
    settings = Settings(max_sessions_per_repo=5, high_quota_specs=("^popular/",), high_quota=50,
                        spec_quotas=("gh:^tiny/=1", "^course/.*=200"))
    assert quota_for(settings, "gh", "someone/repo/HEAD") == 5
    assert quota_for(settings, "gh", "popular/repo/HEAD") == 50
    assert quota_for(settings, "gh", "tiny/repo/HEAD") == 1
    assert quota_for(settings, "gl", "tiny/repo/HEAD") == 5
    assert quota_for(settings, "gh", "course/x/HEAD") == 200


def test_doi_hand_over_cannot_get_around_a_provider_ban() -> None:
    from binderless.providers import ProviderRegistry
    from binderless.providers.base import ResolvedRepo

    class FakeDoi:
        prefix = "doi"
        display_name = "DOI"

        def resolve(self, spec: str) -> ResolvedRepo:
            return ResolvedRepo(provider="zenodo", spec="10.5281/zenodo.1", repo_url="u",
                                clone_url="u", ref="", resolved_ref="1", persistent_spec="s",
                                ref_url="u", slug="s", kind="archive")

        def display_config(self) -> dict[str, object]:
            return {"id": "doi"}

    settings = Settings(allowed_providers=("gh", "doi"))
    registry = ProviderRegistry(settings, client=None, overrides={"doi": FakeDoi()})  # type: ignore[arg-type]
    with pytest.raises(SpecNotAllowed, match="'zenodo'"):
        registry.resolve("doi", "10.5281/zenodo.1")
    assert {c["id"] for c in registry.display_configs()} == {"gh", "doi"}


def test_invalid_patterns_are_refused_at_startup() -> None:
    from binderless.settings import load_settings

    with pytest.raises(ValueError, match="banned_specs"):
        load_settings({"BINDERLESS_BANNED_SPECS": "gh:[unclosed"})
