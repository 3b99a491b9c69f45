"""``binderless launch``: a command-line client of any binderless or BinderHub server."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, TextIO

import httpx

from .links import parse_link
from .redirects import session_url

__all__ = ["LaunchOutcome", "failure_summary", "follow_build", "parse_target", "run_launch"]

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


def parse_target(target: str, server: str, *, cwd: str | None = None) -> tuple[str, str, str]:
    """Return (server base URL, ``<provider>/<spec>``, urlpath) for anything
    ``links.parse_link`` reads: a Binder link (its own server), or a spec, a repository
    address or a folder (launched on ``server``). Raises ``BadLink``."""
    link = parse_link(target, cwd=cwd)
    base = link.host or server
    return base.rstrip("/"), f"{link.target.provider}/{link.target.spec}", link.urlpath


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


def failure_summary(final: dict[str, Any], log: list[str]) -> str:
    """What ``launch`` prints when a launch fails: the end of the log for context, then the
    failed event's whole message (the cause and what to do about it), last and once."""
    message = str(final.get("message", "")).strip() or "The launch failed, and the server " \
        "gave no reason."
    said = [line.strip() for line in message.splitlines() if line.strip()]
    # Lines the summary repeats (the build log's last line is often the cause) are left out
    # of the tail, so the cause is printed in one place.
    def repeated(line: str) -> bool:
        core = re.sub(r"^(?:cause|error):\s*", "", line.strip())
        return not core.strip("^~ ") or any(core in told for told in said)

    # One event may carry several lines (a builder logs its failure whole): judged a line
    # at a time.
    lines = [line for m in log[:-1] for line in m.splitlines()]
    tail = [m.rstrip() for m in lines if m.strip() and not repeated(m)][-15:]
    text = ("Last lines of the log:\n" + "".join(f"  {m}\n" for m in tail)) if tail else ""
    first, *rest = said
    return text + f"[Failed] {first}\n" + "".join(f"  {line}\n" for line in rest)


def run_launch(target: str, *, server: str, build_only: bool = False, out: TextIO = sys.stdout,
               err: TextIO = sys.stderr, verbose: bool = False,
               client: httpx.Client | None = None, cwd: str | None = None) -> LaunchOutcome:
    """Launch ``target`` (anything ``parse_link`` reads; ``BadLink`` when it reads nothing),
    follow its progress on ``err`` and print the session's URL on ``out``."""
    base, spec, urlpath = parse_target(target, server, cwd=cwd)
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
            final = event
            if new_phase == "failed":
                break  # said in full, once, by the summary below
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
    except httpx.HTTPError as exc:
        err.write(f"\nCould not reach {base}: {exc}\nIs the server running? "
                  "Start one with `binderless serve`.\n")
        return LaunchOutcome(False, {"phase": "failed", "message": str(exc)})
    if interactive:
        err.write("\r\033[K")
    if final.get("phase") != "ready":
        err.write(failure_summary(final, [] if verbose else log))
        return LaunchOutcome(False, final)
    if build_only or "url" not in final:
        out.write(f"{final.get('imageName', final.get('image', ''))}\n")
        return LaunchOutcome(True, final)
    open_url = session_url(str(final["url"]), urlpath, str(final.get("token", "")))
    out.write(open_url + "\n")
    return LaunchOutcome(True, final, open_url)
