"""Client helpers for the e2e tests: read a /build stream, run code in a session's kernel."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import httpx


@dataclass
class Stream:
    status: int
    headers: httpx.Headers
    events: list[dict[str, Any]] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    comments: int = 0

    @property
    def phases(self) -> list[str]:
        return [str(e.get("phase", "")) for e in self.events]

    @property
    def final(self) -> dict[str, Any]:
        return self.events[-1]

    def text(self) -> str:
        return "".join(str(e.get("message", "")) for e in self.events)


def read_stream(url: str, *, headers: dict[str, str] | None = None, stop_after: int | None = None,
                stop_when: Callable[[dict[str, Any]], bool] | None = None,
                timeout: float = 300.0) -> Stream:
    """Read SSE frames until a final event (or ``stop_after`` events, or an event
    ``stop_when`` accepts), like a BinderHub client."""
    hdrs = {"Accept": "text/event-stream", **(headers or {})}
    with httpx.stream("GET", url, headers=hdrs, timeout=httpx.Timeout(10, read=timeout)) as resp:
        stream = Stream(resp.status_code, resp.headers)
        for line in resp.iter_lines():
            if line.startswith(":"):
                stream.comments += 1
            elif line.startswith("id:"):
                stream.ids.append(line[3:].strip())
            elif line.startswith("data:"):
                event = json.loads(line[5:].strip())
                stream.events.append(event)
                if event.get("phase") in ("ready", "failed"):
                    break
                if stop_after is not None and len(stream.events) >= stop_after:
                    break
                if stop_when is not None and stop_when(event):
                    break
    return stream


def run_code(url: str, token: str, code: str, *, use_header: bool = True) -> str:
    """Start a kernel through the proxy, execute ``code`` over the WebSocket, return stdout."""
    return asyncio.run(_run_code(url, token, code, use_header))


async def _run_code(url: str, token: str, code: str, use_header: bool) -> str:
    headers = {"Authorization": f"token {token}"} if use_header else {}
    query = "" if use_header else f"?token={token}"
    async with aiohttp.ClientSession(headers=headers) as http:
        async with http.post(f"{url}api/kernels{query}", json={"name": "python3"}) as resp:
            assert resp.status == 201, await resp.text()
            kernel = await resp.json()
        ws_url = "ws" + url[4:] + f"api/kernels/{kernel['id']}/channels?token={token}"
        msg_id = uuid.uuid4().hex
        async with http.ws_connect(ws_url) as ws:
            await ws.send_json({
                "header": {"msg_id": msg_id, "username": "test", "session": uuid.uuid4().hex,
                           "msg_type": "execute_request", "version": "5.3"},
                "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
                "content": {"code": code, "silent": False, "store_history": False,
                            "user_expressions": {}, "allow_stdin": False},
            })
            out = []
            async with asyncio.timeout(60):
                async for message in ws:
                    data = json.loads(message.data)
                    if data.get("parent_header", {}).get("msg_id") != msg_id:
                        continue
                    kind = data["msg_type"]
                    if kind == "stream":
                        out.append(data["content"]["text"])
                    elif kind == "error":
                        raise AssertionError("\n".join(data["content"]["traceback"]))
                    elif kind == "status" and data["content"]["execution_state"] == "idle":
                        break
        async with http.delete(f"{url}api/kernels/{kernel['id']}{query}") as resp:
            assert resp.status == 204
    return "".join(out)
