from __future__ import annotations

from pathlib import Path

import pytest

from binderless.settings import load_settings


def test_argument_beats_environment_beats_default(tmp_path: Path) -> None:
    env = {"BINDERLESS_PORT": "9000", "BINDERLESS_CULL_IDLE_SECONDS": "5",
           "BINDERLESS_STATE_DIR": str(tmp_path), "BINDERLESS_BANNED_SPECS": "a/b, c/d"}
    settings = load_settings(env, port=9100, host=None)
    assert settings.port == 9100
    assert settings.host == "127.0.0.1"
    assert settings.cull_idle_seconds == 5.0
    assert settings.state_dir == tmp_path
    assert settings.banned_specs == ("a/b", "c/d")
    assert settings.allow_local_repos


def test_github_token_from_environment_is_not_in_repr() -> None:
    settings = load_settings({"GITHUB_TOKEN": "ghp_secret"})
    assert settings.github_token == "ghp_secret"
    assert "ghp_secret" not in repr(settings)


def test_bad_value_names_the_variable() -> None:
    with pytest.raises(ValueError, match="BINDERLESS_PORT"):
        load_settings({"BINDERLESS_PORT": "eighty"})


def test_url_guard_follows_reachability() -> None:
    assert not load_settings({}).enforce_url_guard  # a laptop on 127.0.0.1
    assert load_settings({}, allow_local_paths=False).enforce_url_guard  # reachable by others
    assert load_settings({"BINDERLESS_MODE": "aws"}).enforce_url_guard

