"""Replay recorded HTTP responses through ``httpx.MockTransport``.

A recording is a JSON file: ``{"status": 200, "headers": {...}, "body": ...}``, where
``body`` is JSON. Instead of ``body`` it may carry ``body_text`` (a string, sent as
UTF-8 text) or ``body_file`` (a path, relative to the recordings folder, sent as is).

Routes are keyed by the raw URL path (``/repos/org/repo/commits/main``); a key may also
carry a query (``/api/3/action/package_show?id=x``) or start with a scheme and host
(``https://doi.org/api/handles/10.1/x``). The most specific key that matches wins.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from urllib.parse import unquote

import httpx

RECORDINGS = Path(__file__).resolve().parent / "fixtures" / "http"


def recorded(path: str) -> httpx.Response:
    data = json.loads((RECORDINGS / path).read_text())
    if "body_file" in data:
        content = (RECORDINGS / data["body_file"]).read_bytes()
        content_type = "application/octet-stream"
    elif "body_text" in data:
        content = data["body_text"].encode()
        content_type = "text/plain; charset=utf-8"
    else:
        body = data.get("body")
        content = b"" if body is None else json.dumps(body).encode()
        content_type = "application/json"
    headers = {"content-type": content_type, **data.get("headers", {})}
    return httpx.Response(data["status"], headers=headers, content=content)


def route_keys(request: httpx.Request) -> list[str]:
    """The keys a request may be recorded under, most specific first."""
    raw = request.url.raw_path.decode()
    path, _, query = raw.partition("?")
    origin = f"{request.url.scheme}://{request.url.netloc.decode()}"
    keys: list[str] = []
    for base in (origin + path, path):
        if query:
            keys += [f"{base}?{query}", f"{base}?{unquote(query)}"]
        keys.append(base)
    return keys


class Replay:
    """A transport that answers with recorded responses and logs every request."""

    def __init__(self, routes: dict[str, str | Callable[[httpx.Request], httpx.Response]]) -> None:
        self.routes = routes
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        keys = route_keys(request)
        answer = next((self.routes[key] for key in keys if key in self.routes), None)
        if answer is None:
            return httpx.Response(599, text=f"no recording for {keys[0]}")
        return answer(request) if callable(answer) else recorded(answer)

    def client(self) -> httpx.Client:
        return httpx.Client(transport=httpx.MockTransport(self))
