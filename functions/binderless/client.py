"""``binderless launch``: a command-line client of any binderless or BinderHub server."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, TextIO
from urllib.parse import parse_qsl, urlsplit

import httpx

from .links import final_urlpath
from .redirects import session_url

__all__ = ["LaunchOutcome", "follow_build", "parse_target", "run_launch"]

PHASE_LABELS = {
    "waiting": "Waiting", "fetching": "Fetching the repository", "building": "Building",
    "pushing": "Pushing", "built": "Environment ready", "launching": "Starting the server",
    "ready": "Ready", "failed": "Failed",
}


@dataclass(frozen=True)
class LaunchOutcome:
    ok: bool
    final: dict[str, Any]
    open_url: str = ""


def parse_target(target: str, server: str) -> tuple[str, str, str]:
    """Return (server base URL, ``<provider>/<spec>``, urlpath) for a link or a bare spec."""
    if target.startswith(("http://", "https://")):
        parts = urlsplit(target)
        path = parts.path
        for marker in ("/v2/", "/build/"):
            if marker in path:
                base, _, rest = path.partition(marker)
                params = dict(parse_qsl(parts.query))
                return f"{parts.scheme}://{parts.netloc}{base}", rest.strip("/"), final_urlpath(params)
        raise ValueError(f"{target} is not a Binder link: it has no /v2/ in its path.")
    spec, _, query = target.partition("?")
    spec = spec.strip("/").removeprefix("v2/")
    if spec.count("/") < 1:
        raise ValueError(f"{target!r} is not <provider>/<spec>, e.g. gh/binder-examples/requirements/HEAD")
    return server.rstrip("/"), spec, final_urlpath(dict(parse_qsl(query)))


def follow_build(client: httpx.Client, url: str) -> Iterator[dict[str, Any]]:
    """Yield the events of one ``/build`` stream until ``ready`` or ``failed``."""
    with client.stream("GET", url, headers={"Accept": "text/event-stream"}) as response:
        if response.status_code != 200:
            yield {"phase": "failed", "status_code": response.status_code,
                   "message": f"The server answered {response.status_code} to {url}\n"}
            return
        for line in response.iter_lines():
            if not line.startswith("data:"):
                continue
            event = json.loads(line[5:].strip())
            yield event
            if str(event.get("phase", "")).lower() in ("ready", "failed"):
                return


def run_launch(target: str, *, server: str, build_only: bool = False, out: TextIO = sys.stdout,
               err: TextIO = sys.stderr, verbose: bool = False,
               client: httpx.Client | None = None) -> LaunchOutcome:
    base, spec, urlpath = parse_target(target, server)
    url = f"{base}/build/{spec}" + ("?build_only=true" if build_only else "")
    client = client or httpx.Client(timeout=httpx.Timeout(10.0, read=90.0))
    interactive = err.isatty()
    phase = ""
    log: list[str] = []
    final: dict[str, Any] = {}
    try:
        for event in follow_build(client, url):
            new_phase = str(event.get("phase", phase)).lower()
            message = str(event.get("message", ""))
            log.append(message)
            if new_phase != phase:
                phase = new_phase
                if interactive:
                    err.write("\r\033[K")
                err.write(f"[{PHASE_LABELS.get(phase, phase)}] {message.strip()[:100]}\n")
            elif verbose and message.strip():
                err.write(f"  {message.rstrip()}\n")
            elif interactive and message.strip():
                err.write(f"\r\033[K  {message.strip()[:100]}")
            err.flush()
            final = event
    except httpx.HTTPError as exc:
        err.write(f"\nCould not reach {base}: {exc}\nIs the server running? "
                  "Start one with `binderless serve`.\n")
        return LaunchOutcome(False, {"phase": "failed", "message": str(exc)})
    if interactive:
        err.write("\r\033[K")
    if final.get("phase") != "ready":
        if not verbose:
            tail = [m.rstrip() for m in log[-15:] if m.strip()]
            err.write("Last lines of the log:\n" + "\n".join(f"  {m}" for m in tail) + "\n")
        return LaunchOutcome(False, final)
    if build_only or "url" not in final:
        out.write(f"{final.get('imageName', final.get('image', ''))}\n")
        return LaunchOutcome(True, final)
    open_url = session_url(str(final["url"]), urlpath, str(final.get("token", "")))
    out.write(open_url + "\n")
    return LaunchOutcome(True, final, open_url)
