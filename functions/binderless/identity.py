"""Who is signed in: an ``Identity``, carried between requests in a signed cookie.

Signing in is optional: anonymous visitors have no identity and launch ephemeral sessions.
A signed-in person's sessions belong to them (``Route.owner`` is their ``user_id``) and
keep their files in a home of their own (``workspaces.py``).

Two ways in, chosen by ``Settings.sign_in_method``: the local user of a local server
(one person, no password: whoever reaches a server on loopback is already that person),
or OpenID Connect (``oidc.py``; Amazon Cognito on AWS). Either way the server then
issues the same cookie: ``<payload>.<signature>``, both base64url, the signature an
HMAC-SHA256 over the payload with the server's secret, so every gateway copy holding
the secret can check it without a shared session table.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "IDENTITY_COOKIE",
    "LOCAL_USER_ID",
    "CookieSigner",
    "Identity",
    "load_or_create_secret",
    "user_id_for",
    "valid_user_id",
]

IDENTITY_COOKIE = "binderless-user"
LOCAL_USER_ID = "local"
#: User ids name folders and EFS access points: short, lower-case, no path characters.
_USER_ID = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")


def valid_user_id(user_id: str) -> bool:
    return bool(_USER_ID.fullmatch(user_id))


def user_id_for(issuer: str, subject: str) -> str:
    """The user id of an OpenID Connect subject: stable, and safe as a folder name.

    Subjects are unique per issuer only, and may hold any character; a hash of both
    keeps two providers' users apart and never reaches the file system raw."""
    digest = hashlib.sha256(f"{issuer}\0{subject}".encode()).hexdigest()
    return f"u{digest[:24]}"


@dataclass(frozen=True)
class Identity:
    """A signed-in person. ``user_id`` owns sessions and names their home folder."""

    user_id: str
    name: str
    email: str = ""
    via: str = "local"

    def __post_init__(self) -> None:
        if not valid_user_id(self.user_id):
            raise ValueError(f"not a valid user id: {self.user_id!r}")

    def to_json(self) -> dict[str, str]:
        return {"id": self.user_id, "name": self.name, "email": self.email, "via": self.via}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class CookieSigner:
    """Signs and checks small JSON payloads for cookies, each for one ``purpose``.

    The purpose is part of what is signed, so a cookie made for one use (the state of
    a sign-in in progress) is never accepted for another (the identity)."""

    def __init__(self, secret: bytes, *, clock: Callable[[], float] = time.time) -> None:
        if len(secret) < 16:
            raise ValueError("the cookie secret needs at least 16 bytes")
        self._secret = secret
        self._clock = clock

    def _mac(self, purpose: str, body: str) -> str:
        message = f"binderless-v1\0{purpose}\0{body}".encode()
        return _b64(hmac.new(self._secret, message, hashlib.sha256).digest())

    def sign(self, purpose: str, payload: Mapping[str, Any], max_age: float) -> str:
        data = {**payload, "exp": int(self._clock() + max_age)}
        body = _b64(json.dumps(data, separators=(",", ":"), sort_keys=True).encode())
        return f"{body}.{self._mac(purpose, body)}"

    def verify(self, purpose: str, value: str) -> dict[str, Any] | None:
        """The payload of a valid, unexpired cookie; ``None`` for anything else."""
        body, sep, mac = value.partition(".")
        if not sep or not hmac.compare_digest(mac, self._mac(purpose, body)):
            return None
        try:
            data = json.loads(_unb64(body))
        except ValueError:
            return None
        if not isinstance(data, dict) or not isinstance(data.get("exp"), int):
            return None
        if data["exp"] < self._clock():
            return None
        return data

    def identity_cookie(self, identity: Identity, max_age: float) -> str:
        return self.sign("identity", {"sub": identity.user_id, "name": identity.name,
                                      "email": identity.email, "via": identity.via}, max_age)

    def identity(self, value: str) -> Identity | None:
        data = self.verify("identity", value)
        if data is None:
            return None
        try:
            return Identity(user_id=str(data.get("sub", "")), name=str(data.get("name", "")),
                            email=str(data.get("email", "")), via=str(data.get("via", "")))
        except ValueError:
            return None


def load_or_create_secret(path: Path) -> bytes:
    """The local server's cookie secret: made once, kept readable by its owner only.

    Written to a temporary file and renamed, so a crash never leaves half a secret. One
    found readable by others (made by an older version, or copied) is closed first: a
    session that read it could sign cookies as anyone."""
    try:
        if path.stat().st_mode & 0o077:
            os.chmod(path, 0o600)
        return bytes.fromhex(path.read_text().strip())
    except FileNotFoundError:
        pass
    except ValueError as exc:
        raise ValueError(f"{path} does not hold a secret; delete it to make a new one") from exc
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_bytes(32)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(secret.hex() + "\n")
    try:
        os.link(tmp, path)  # fails if another process made one meanwhile: use theirs
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
    return bytes.fromhex(path.read_text().strip())
