"""Signing in with OpenID Connect: the authorization code flow with PKCE.

On AWS the provider is the Amazon Cognito user pool the templates create (which may in
turn federate to GitHub, Google or an institution's provider); any provider that
publishes ``<issuer>/.well-known/openid-configuration`` works. The flow:

1. ``authorization_url`` sends the browser to the provider, with a fresh ``state``,
   ``nonce`` and PKCE challenge (the caller keeps them in a short-lived signed cookie);
2. the provider sends the browser back to ``/auth/callback`` with a code, which
   ``redeem`` exchanges (with the verifier, and the client secret when there is one)
   for an ID token;
3. ``identity`` checks the token: signed by a key of the issuer's JWKS (fetched again
   when an unknown key id shows up, at most once a minute), issued by the issuer, for
   this client, not expired, with the nonce of step 1.

HTTP goes through an injected ``httpx.Client``. Provider failures become
``ProviderUnavailable``; an answer that does not check out becomes ``SignInFailed``.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import httpx

from .errors import ProviderUnavailable, SignInFailed
from .identity import Identity, user_id_for

__all__ = ["OidcClient", "PendingSignIn"]

#: Signature algorithms accepted for ID tokens (Cognito signs with RS256).
ALGORITHMS = ("RS256", "RS384", "RS512", "ES256", "ES384", "PS256")
#: Seconds of clock difference tolerated between this server and the provider.
LEEWAY = 60
JWKS_REFRESH_SECONDS = 60.0


@dataclass(frozen=True)
class PendingSignIn:
    """What the server remembers (in a signed cookie) between steps 1 and 2."""

    state: str
    nonce: str
    verifier: str
    next_path: str

    @classmethod
    def new(cls, next_path: str) -> PendingSignIn:
        return cls(secrets.token_urlsafe(24), secrets.token_urlsafe(24),
                   secrets.token_urlsafe(48), next_path)

    @property
    def challenge(self) -> str:
        digest = hashlib.sha256(self.verifier.encode()).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


class OidcClient:
    """One OpenID Connect provider (``issuer``) and this server's client registration."""

    def __init__(self, issuer: str, client_id: str, client_secret: str, http: httpx.Client, *,
                 scopes: Sequence[str] = ("openid", "email", "profile"),
                 clock: Callable[[], float] = time.time) -> None:
        if not issuer or not client_id:
            raise ValueError("OpenID Connect needs an issuer and a client id")
        self.issuer = issuer.rstrip("/")
        self.client_id = client_id
        self.client_secret = client_secret
        self.http = http
        self.scopes = tuple(scopes) if "openid" in scopes else ("openid", *scopes)
        self.clock = clock
        self._lock = threading.Lock()
        self._config: dict[str, Any] | None = None
        self._jwks: Any = None
        self._jwks_at = 0.0

    # ----- provider documents ------------------------------------------------------------

    def _get_json(self, url: str, what: str) -> dict[str, Any]:
        try:
            response = self.http.get(url, timeout=10)
            response.raise_for_status()
            data = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise ProviderUnavailable(
                f"The sign-in provider did not answer as expected ({what}).",
                hint="Try again in a minute; if it keeps failing, tell the operators.") from exc
        if not isinstance(data, dict):
            raise ProviderUnavailable(f"The sign-in provider sent a malformed {what}.")
        return data

    def configuration(self) -> dict[str, Any]:
        """The provider's discovery document (fetched once)."""
        with self._lock:
            if self._config is None:
                config = self._get_json(f"{self.issuer}/.well-known/openid-configuration",
                                        "discovery document")
                for key in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
                    if not isinstance(config.get(key), str):
                        raise ProviderUnavailable(
                            f"The sign-in provider's discovery document has no {key}.")
                if config.get("issuer", self.issuer).rstrip("/") != self.issuer:
                    raise ProviderUnavailable(
                        "The sign-in provider names another issuer than the one configured.",
                        hint="The operator should check BINDERLESS_OIDC_ISSUER.")
                self._config = config
            return self._config

    def _key_set(self, refresh: bool) -> Any:
        import jwt

        with self._lock:
            stale = self.clock() - self._jwks_at >= JWKS_REFRESH_SECONDS
            if self._jwks is None or (refresh and stale):
                uri = str(self.configuration_unlocked()["jwks_uri"])
                try:
                    self._jwks = jwt.PyJWKSet.from_dict(self._get_json(uri, "key set"))
                except jwt.PyJWTError as exc:
                    raise ProviderUnavailable(
                        "The sign-in provider's key set cannot be used.") from exc
                self._jwks_at = self.clock()
            return self._jwks

    def configuration_unlocked(self) -> dict[str, Any]:
        if self._config is None:
            raise RuntimeError("configuration() was not called")
        return self._config

    # ----- the flow ----------------------------------------------------------------------

    def authorization_url(self, redirect_uri: str, pending: PendingSignIn) -> str:
        endpoint = str(self.configuration()["authorization_endpoint"])
        query = urlencode({
            "response_type": "code", "client_id": self.client_id,
            "redirect_uri": redirect_uri, "scope": " ".join(self.scopes),
            "state": pending.state, "nonce": pending.nonce,
            "code_challenge": pending.challenge, "code_challenge_method": "S256",
        })
        return f"{endpoint}{'&' if '?' in endpoint else '?'}{query}"

    def redeem(self, code: str, redirect_uri: str, pending: PendingSignIn) -> str:
        """Exchange the authorization code for the ID token."""
        endpoint = str(self.configuration()["token_endpoint"])
        form = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri,
                "client_id": self.client_id, "code_verifier": pending.verifier}
        try:
            if self.client_secret:  # client_secret_basic
                response = self.http.post(endpoint, data=form, timeout=10,
                                          auth=(self.client_id, self.client_secret))
            else:  # a public client: PKCE alone
                response = self.http.post(endpoint, data=form, timeout=10)
        except httpx.HTTPError as exc:
            raise ProviderUnavailable("The sign-in provider did not answer.",
                                      hint="Try signing in again in a minute.") from exc
        if response.status_code in (400, 401):
            raise SignInFailed("The sign-in provider refused the sign-in code.",
                               hint="Sign in again (the code may have expired).")
        try:
            response.raise_for_status()
            token = response.json().get("id_token")
        except (httpx.HTTPError, ValueError, AttributeError) as exc:
            raise ProviderUnavailable("The sign-in provider's answer was malformed.") from exc
        if not isinstance(token, str) or not token:
            raise SignInFailed("The sign-in provider sent no ID token.",
                               hint="The operator should check that the client asks for "
                                    "the openid scope.")
        return token

    def identity(self, id_token: str, nonce: str) -> Identity:
        """Check ``id_token`` and return who it names."""
        import jwt

        self.configuration()
        try:
            kid = jwt.get_unverified_header(id_token).get("kid")
        except jwt.PyJWTError as exc:
            raise SignInFailed("The sign-in provider sent an unreadable ID token.") from exc
        key = self._find_key(kid, refresh=False) or self._find_key(kid, refresh=True)
        if key is None:
            raise SignInFailed("The ID token is signed with a key the provider does not list.")
        if key.algorithm_name not in ALGORITHMS:
            raise SignInFailed(f"The provider's key uses {key.algorithm_name}, which is not "
                               "accepted here.")
        try:
            claims = jwt.decode(
                id_token, key.key, algorithms=[key.algorithm_name], audience=self.client_id,
                issuer=self.issuer, leeway=LEEWAY,
                options={"require": ["exp", "iat", "iss", "aud", "sub"]})
        except jwt.PyJWTError as exc:
            raise SignInFailed(f"The ID token did not check out: {exc}.",
                               hint="Sign in again.") from exc
        if claims.get("nonce") != nonce:
            raise SignInFailed("The ID token belongs to another sign-in.", hint="Sign in again.")
        if claims.get("token_use", "id") != "id":  # Cognito marks its token kinds
            raise SignInFailed("The provider sent an access token where an ID token belongs.")
        subject = str(claims["sub"])
        email = str(claims.get("email") or "")
        name = next((str(claims[k]) for k in ("name", "preferred_username", "cognito:username",
                                              "email") if claims.get(k)), subject)
        return Identity(user_id=user_id_for(self.issuer, subject), name=name, email=email,
                        via="oidc")

    def _find_key(self, kid: Any, *, refresh: bool) -> Any:
        keys = self._key_set(refresh).keys
        if kid is None and len(keys) == 1:
            return keys[0]
        return next((k for k in keys if k.key_id == kid), None)
