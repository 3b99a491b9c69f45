"""Replay recorded HTTP responses through ``httpx.MockTransport``."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import httpx

RECORDINGS = Path(__file__).resolve().parent / "fixtures" / "http"


def recorded(path: str) -> httpx.Response:
    data = json.loads((RECORDINGS / path).read_text())
    body = data.get("body")
    content = b"" if body is None else json.dumps(body).encode()
    headers = {"content-type": "application/json", **data.get("headers", {})}
    return httpx.Response(data["status"], headers=headers, content=content)


class Replay:
    """A transport that answers by raw URL path with recorded responses and logs every request."""

    def __init__(self, routes: dict[str, str | Callable[[httpx.Request], httpx.Response]]) -> None:
        self.routes = routes
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path = request.url.raw_path.decode().split("?", 1)[0]
        answer = self.routes.get(path)
        if answer is None:
            return httpx.Response(599, text=f"no recording for {path}")
        return answer(request) if callable(answer) else recorded(answer)

    def client(self) -> httpx.Client:
        return httpx.Client(transport=httpx.MockTransport(self))
