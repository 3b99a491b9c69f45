"""Launches created through the REST API (``POST /api/launches``).

A REST client (a notebook front end, a script, a course platform) asks for a launch and
gets its id and three addresses back at once: its status, its events, and the ``/build``
stream that shows it live. The launch itself runs in a session gateway (locally: the
server that answered), because it outlives any API request: on AWS the first gateway its
stream is asked of drives it, or a gateway's reconciler after a few seconds
(``LaunchService.resume``). The same request with the same ``Idempotency-Key`` header
gives the same launch back (on AWS through Powertools' idempotency utility, locally
through ``RecentKeys``).

The body is JSON, either a link ``{"link": "https://mybinder.org/v2/gh/org/repo/HEAD"}``
(anything ``binderless resolve`` accepts) or ``{"provider": "gh", "spec":
"org/repo/HEAD"}``, with an optional ``"build_only": true``.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

from .backends.protocols import EventLog, Store
from .errors import BadLink, LaunchNotFound
from .events import launch_id_like, parse_seq
from .links import parse_link
from .providers import ProviderRegistry
from .service import LaunchRequest

__all__ = ["RecentKeys", "events_document", "launch_document", "launch_request",
           "status_document"]

#: The longest idempotency key accepted (Powertools hashes it; this bounds the body).
MAX_KEY_LENGTH = 255
#: The longest link or spec a body may name: far above any real one (a clone URL and a
#: ref), far below what would bloat the store and the event log.
MAX_SPEC_LENGTH = 2048


def _text(value: object, name: str, limit: int = MAX_SPEC_LENGTH) -> str | None:
    """``value`` if it is a string the store can keep (``None`` when absent).

    JSON may carry lone surrogates ("\\ud800") that no UTF-8 store accepts, and control
    characters that have no place in a link: both are the client's mistake (400), not a
    crash when the launch is written."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadLink(f"The {name} must be a string.",
                      hint='For example {"provider": "gh", "spec": "org/repo/HEAD"}.')
    if len(value) > limit:
        raise BadLink(f"The {name} is longer than {limit} characters.")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise BadLink(f"The {name} is not valid text (it holds an unpaired surrogate).") \
            from None
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise BadLink(f"The {name} contains control characters (such as a line break).")
    return value


def launch_request(body: Any, *, registry: ProviderRegistry, launch_host: str,
                   client_ip: str = "", owner: str = "") -> LaunchRequest:
    """The launch a request body asks for, checked against the providers and the policy.

    Raises ``BadLink`` (400) for a body that names no launchable repository and
    ``SpecNotAllowed`` (403) for one the policy refuses; nothing is resolved here."""
    if not isinstance(body, Mapping):
        raise BadLink("The request body must be a JSON object.",
                      hint='For example {"link": "https://mybinder.org/v2/gh/org/repo/HEAD"}.')
    link, provider, spec = (_text(body.get(key), key) for key in ("link", "provider", "spec"))
    build_only = body.get("build_only", False)
    if not isinstance(build_only, bool):
        raise BadLink("build_only must be true or false.")
    if link and provider is None and spec is None:
        target = parse_link(link).target
        provider, spec = target.provider, target.spec
    elif not (provider and spec):
        raise BadLink("Name the repository to launch: a link, or a provider and a spec.",
                      hint='For example {"provider": "gh", "spec": "org/repo/HEAD"}.')
    registry.get(provider)  # an unknown provider is a BadLink naming the known ones
    registry.policy.check(provider, spec)
    return LaunchRequest(provider=provider, spec=spec, launch_host=launch_host,
                         client_ip=client_ip, build_only=build_only, owner=owner)


def launch_document(launch_id: str, request: LaunchRequest) -> dict[str, str]:
    """The answer to a created launch: its id and where to follow it."""
    host = request.launch_host
    query = f"?last_event_id={launch_id}:0" + ("&build_only=true" if request.build_only else "")
    return {
        "launch_id": launch_id,
        "status_url": f"{host}api/launches/{launch_id}",
        "events_url": f"{host}api/launches/{launch_id}/events",
        "stream_url": f"{host}build/{request.provider}/{request.spec}{query}",
    }


def idempotency_key(headers: Mapping[str, str]) -> str:
    """The request's ``Idempotency-Key`` header ("" without one)."""
    key = next((v for k, v in headers.items() if k.lower() == "idempotency-key"), "").strip()
    if len(key) > MAX_KEY_LENGTH:
        raise BadLink(f"The Idempotency-Key header is longer than {MAX_KEY_LENGTH} characters.")
    return key


class RecentKeys:
    """Idempotency keys of one process (the local server): the same key within
    ``ttl`` seconds gives the first answer back. Holds at most ``size`` keys."""

    def __init__(self, ttl: float = 3600.0, size: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.size = size
        self.clock = clock
        self._answers: OrderedDict[str, tuple[float, dict[str, str]]] = OrderedDict()

    def get(self, key: str) -> dict[str, str] | None:
        found = self._answers.get(key)
        if found is None or self.clock() - found[0] > self.ttl:
            self._answers.pop(key, None)
            return None
        return found[1]

    def put(self, key: str, answer: dict[str, str]) -> None:
        self._answers[key] = (self.clock(), answer)
        self._answers.move_to_end(key)
        while len(self._answers) > self.size:
            self._answers.popitem(last=False)


def status_document(store: Store, launch_id: str) -> dict[str, Any]:
    """A launch record as ``GET /api/launches/<id>`` shows it (no driver internals).
    Raises ``LaunchNotFound``."""
    launch = store.get_launch(launch_id) if launch_id_like(launch_id) else None
    if launch is None:
        raise LaunchNotFound(f"There is no launch {launch_id[:64]}.")
    hidden = {"request", "driver", "lease_until"}
    return {k: v for k, v in launch.items() if k not in hidden}


def events_document(store: Store, events: EventLog, launch_id: str,
                    after: str) -> dict[str, Any]:
    """``GET /api/launches/<id>/events?after=N``: the launch's events after ``N``, each
    with the id the ``/build`` stream gives it. Raises ``BadLink`` for an ``after`` that is
    not a whole number and ``LaunchNotFound``."""
    seq = parse_seq(after)
    if seq is None:
        raise BadLink("after must be a whole number (the seq of an event id).")
    if not launch_id_like(launch_id) or store.get_launch(launch_id) is None:
        raise LaunchNotFound(f"There is no launch {launch_id[:64]}.")
    return {"events": [{"id": f"{launch_id}:{n}", **event.to_json()}
                       for n, event in events.read(launch_id, seq)]}
