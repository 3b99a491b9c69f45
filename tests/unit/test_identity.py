"""The signed sign-in cookie and user ids."""

from __future__ import annotations

from pathlib import Path

import pytest

from binderless.identity import (
    CookieSigner,
    Identity,
    load_or_create_secret,
    user_id_for,
    valid_user_id,
)
from binderless.settings import Settings

SECRET = b"0123456789abcdef0123456789abcdef"


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_identity_cookie_round_trips_and_expires() -> None:
    clock = Clock()
    signer = CookieSigner(SECRET, clock=clock)
    alice = Identity("alice", "Alice A.", email="alice@example.org", via="oidc")
    cookie = signer.identity_cookie(alice, max_age=60)
    assert signer.identity(cookie) == alice
    clock.now += 61
    assert signer.identity(cookie) is None


@pytest.mark.parametrize("tamper", [
    lambda c: c[:-2] + ("AA" if not c.endswith("AA") else "BB"),  # signature
    lambda c: "x" + c,  # payload
    lambda c: c.split(".")[0],  # no signature
    lambda c: "",
    lambda c: "not.a.cookie",
])
def test_tampered_cookies_are_refused(tamper: object) -> None:
    signer = CookieSigner(SECRET)
    cookie = signer.identity_cookie(Identity("alice", "Alice"), max_age=60)
    assert callable(tamper)
    assert signer.identity(tamper(cookie)) is None


def test_other_secrets_and_other_purposes_do_not_verify() -> None:
    signer = CookieSigner(SECRET)
    cookie = signer.identity_cookie(Identity("alice", "Alice"), max_age=60)
    assert CookieSigner(b"another secret of 32 bytes......").identity(cookie) is None
    # A sign-in-in-progress cookie is never an identity, even with an identity's fields.
    state = signer.sign("signin", {"sub": "alice", "name": "Alice", "via": "local"}, 60)
    assert signer.identity(state) is None
    assert signer.verify("signin", state) is not None


def test_user_ids_are_folder_safe() -> None:
    uid = user_id_for("https://issuer.example", "../../etc/passwd")
    assert valid_user_id(uid) and "/" not in uid
    assert uid != user_id_for("https://other.example", "../../etc/passwd")
    assert uid == user_id_for("https://issuer.example", "../../etc/passwd")
    for bad in ("", "..", "a/b", "A", "-x", "x" * 65):
        assert not valid_user_id(bad)
        with pytest.raises(ValueError):
            Identity(bad, "x")


def test_secret_is_made_once_and_kept_private(tmp_path: Path) -> None:
    path = tmp_path / "state" / "auth-secret"
    first = load_or_create_secret(path)
    assert len(first) == 32
    assert load_or_create_secret(path) == first
    assert path.stat().st_mode & 0o077 == 0
    path.write_text("not hex\n")
    with pytest.raises(ValueError, match="delete it"):
        load_or_create_secret(path)


@pytest.mark.parametrize(("settings", "method"), [
    (Settings(), "local"),
    (Settings(host="0.0.0.0"), "off"),
    (Settings(sign_in="off"), "off"),
    (Settings(oidc_issuer="https://idp.example", oidc_client_id="c"), "oidc"),
    (Settings(mode="aws", oidc_issuer="https://idp.example", oidc_client_id="c",
              auth_secret="s" * 32), "oidc"),
    (Settings(mode="aws"), "off"),
])
def test_sign_in_method_follows_the_settings(settings: Settings, method: str) -> None:
    settings.validate()
    assert settings.sign_in_method == method


@pytest.mark.parametrize(("settings", "message"), [
    (Settings(sign_in="oidc"), "needs oidc_issuer"),
    (Settings(mode="aws", sign_in="local"), "local mode only"),
    (Settings(mode="aws", oidc_issuer="https://idp.example", oidc_client_id="c"),
     "auth_secret"),
    (Settings(efs_file_system_id="fs-1"), "workspaces_dir"),
    (Settings(max_projects_per_user=0), "max_projects_per_user"),
    (Settings(auth_secret="short"), "at least 16 characters"),
    (Settings(sign_in="maybe"), "sign_in must be one of"),  # type: ignore[arg-type]
])
def test_contradictory_sign_in_settings_are_refused(settings: Settings, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        settings.validate()
