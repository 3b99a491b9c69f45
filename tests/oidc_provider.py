"""A minimal OpenID Connect provider on 127.0.0.1 for tests: never a real one.

It signs ID tokens with an RSA key generated for the test run and serves the discovery
document, the JWKS, an authorization endpoint that signs in ``next_user`` at once (no
login form) and a token endpoint that checks the client secret and the PKCE verifier.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

CLIENT_ID = "binderless-test-client"
CLIENT_SECRET = "test-client-secret"
KID = "test-key-1"


def new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@dataclass
class Provider:
    issuer: str
    key: rsa.RSAPrivateKey
    next_user: dict[str, Any] = field(default_factory=lambda: {"sub": "alice-sub",
                                                               "name": "Alice"})
    codes: dict[str, dict[str, Any]] = field(default_factory=dict)
    token_requests: int = 0

    def id_token(self, claims: dict[str, Any], *, key: rsa.RSAPrivateKey | None = None,
                 kid: str = KID) -> str:
        now = int(time.time())
        body = {"iss": self.issuer, "aud": CLIENT_ID, "iat": now, "exp": now + 300,
                "token_use": "id", **claims}
        return jwt.encode(body, key or self.key, algorithm="RS256", headers={"kid": kid})

    def jwks(self) -> dict[str, Any]:
        public = json.loads(RSAAlgorithm.to_jwk(self.key.public_key()))
        return {"keys": [{**public, "kid": KID, "use": "sig", "alg": "RS256"}]}


def _handler(provider: Provider) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:  # quiet
            pass

        def _json(self, data: dict[str, Any], status: int = 200) -> None:
            body = json.dumps(data).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            if url.path == "/.well-known/openid-configuration":
                self._json({"issuer": provider.issuer,
                            "authorization_endpoint": provider.issuer + "/authorize",
                            "token_endpoint": provider.issuer + "/token",
                            "jwks_uri": provider.issuer + "/jwks"})
            elif url.path == "/jwks":
                self._json(provider.jwks())
            elif url.path == "/authorize":
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                code = secrets.token_urlsafe(16)
                provider.codes[code] = {**query, "user": dict(provider.next_user)}
                self.send_response(302)
                target = query["redirect_uri"] + "?" + urlencode(
                    {"code": code, "state": query["state"]})
                self.send_header("Location", target)
                self.send_header("Content-Length", "0")
                self.end_headers()
            else:
                self._json({"error": "not found"}, 404)

        def do_POST(self) -> None:
            provider.token_requests += 1
            length = int(self.headers.get("Content-Length", "0"))
            form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
            expected = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
            if self.headers.get("Authorization") != f"Basic {expected}":
                self._json({"error": "invalid_client"}, 401)
                return
            grant = provider.codes.pop(form.get("code", ""), None)
            verifier = form.get("code_verifier", "")
            challenge = base64.urlsafe_b64encode(
                hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
            if grant is None or grant.get("code_challenge") != challenge or \
                    grant.get("redirect_uri") != form.get("redirect_uri"):
                self._json({"error": "invalid_grant"}, 400)
                return
            token = provider.id_token({**grant["user"], "nonce": grant["nonce"]})
            self._json({"id_token": token, "access_token": "opaque", "token_type": "Bearer"})

    return Handler


@contextmanager
def running_provider() -> Iterator[Provider]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    provider = Provider(f"http://127.0.0.1:{server.server_address[1]}", new_key())
    server.RequestHandlerClass = _handler(provider)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield provider
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
