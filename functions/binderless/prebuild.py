"""Prebuild on push: ``POST /api/prebuild`` builds a repository's environment before
anyone clicks its link.

Three callers, each checked against the one setting ``webhook_secret``
(``BINDERLESS_WEBHOOK_SECRET``; without it the route is off and answers 404):

- **GitHub** push webhooks: ``X-Hub-Signature-256: sha256=<hex>``, the HMAC-SHA256 of the
  raw body keyed with the secret; ``X-GitHub-Event`` names the event and
  ``X-GitHub-Delivery`` the delivery (a GUID);
- **GitLab** push (and tag push) webhooks: ``X-Gitlab-Token: <secret>``, with
  ``X-Gitlab-Event`` and ``X-Gitlab-Event-UUID``;
- **CI systems and scripts**: ``Authorization: Bearer <secret>`` and the body of
  ``POST /api/launches`` (``{"link": ...}`` or ``{"provider": ..., "spec": ...}``).
  binderless has no API tokens of its own, so the webhook secret is the bearer token.

A webhook is refused, with a JSON ``{"message", "status_code"}`` and nothing built, when
it is unsigned (401), wrongly signed (403), not a push (400), larger than
``webhook_max_bytes`` (413, before the body is read), or a replay (409): GitHub signs
the body but not the delivery header, so a delivery is remembered both by its id and by
the digest of its body, for ``REPLAY_TTL_SECONDS``, in the store (``Deliveries``; one
atomic write each). A push that deletes a branch, and GitHub's ``ping``, are answered
200 with nothing to build. Bearer calls are not replay-checked: starting a build that
exists or runs builds nothing.

What a push names becomes a launch link through the same parser, providers and policy as
a launch (``launches.launch_request``): ``gh/<owner>/<repo>/<branch>`` for the GitHub host
of ``github_host``, ``gl/<namespace>/<branch>`` for ``gitlab_host``, and
``git/<clone URL>/<branch>`` for any other host. Hosts then resolve it (a ref that does
not exist is a 404 with nothing built) and start a build-only launch
(``LaunchService.prebuild``), whose build later launches attach to or find finished. On
AWS the Chalice app starts CodeBuild itself (``aws/prebuild.py``).

Everything here is pure: hosts read the body (``too_large`` first), pass the headers, and
serialise the answers.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote, urlsplit

from .backends.protocols import Deliveries
from .errors import BinderlessError
from .launches import launch_document, launch_request
from .providers import ProviderRegistry
from .service import LaunchRequest
from .settings import Settings

__all__ = [
    "REPLAY_TTL_SECONDS",
    "Delivery",
    "NothingToBuild",
    "WebhookRefused",
    "accepted_document",
    "authenticate",
    "check_request",
    "ignored_document",
    "push_body",
    "too_large",
]

#: How long a delivery is remembered. GitHub redelivers only by hand, within days;
#: GitLab retries within minutes. A week outlasts both.
REPLAY_TTL_SECONDS = 7 * 86400.0
#: Delivery ids are GUIDs; anything much longer is not one.
MAX_DELIVERY_ID = 128
GITHUB_EVENTS = frozenset({"push"})
GITLAB_EVENTS = frozenset({"Push Hook", "Tag Push Hook"})
GITHUB_FULL_NAME = re.compile(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+")
NO_COMMIT = "0" * 40
HOW_TO_SIGN = ("GitHub: set the webhook's secret; GitLab: set its secret token; a CI job or "
               "script: send Authorization: Bearer <the secret>.")

Sender = Literal["github", "gitlab", "token"]


class WebhookRefused(BinderlessError):
    """A call of ``/api/prebuild`` that is refused before anything is resolved or built."""

    fault = "link"

    def __init__(self, message: str, *, status_code: int, hint: str = "") -> None:
        super().__init__(message, hint=hint)
        self.status_code = status_code


class NothingToBuild(Exception):
    """A genuine delivery that asks for no build (a ping, a deleted branch): 200."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class Delivery:
    """Who sent a call (authenticated) and what it says it is."""

    sender: Sender
    event: str = ""
    delivery_id: str = ""


def _header(headers: Mapping[str, str], name: str) -> str:
    """A header, whatever the case of its name (Chalice and aiohttp differ)."""
    wanted = name.lower()
    return next((str(v) for k, v in headers.items() if k.lower() == wanted), "").strip()


def _same(given: str, expected: str) -> bool:
    """Constant-time comparison of two texts (bytes: ``compare_digest`` refuses non-ASCII
    strings, which a forged header may hold)."""
    return hmac.compare_digest(given.encode("utf-8", "replace"), expected.encode("utf-8"))


def too_large(content_length: int | None, settings: Settings) -> WebhookRefused | None:
    """The refusal of a body that announces more than ``webhook_max_bytes`` (hosts check
    this before reading, and count while reading a body of unknown length)."""
    if content_length is None or content_length <= settings.webhook_max_bytes:
        return None
    return body_too_large(settings)


def body_too_large(settings: Settings) -> WebhookRefused:
    return WebhookRefused(
        f"The request body is larger than this server accepts for a prebuild "
        f"({settings.webhook_max_bytes} bytes).", status_code=413,
        hint="Its operator can raise webhook_max_bytes.")


def authenticate(headers: Mapping[str, str], body: bytes, secret: str) -> Delivery:
    """Who sent this call, checked against ``secret``; raises ``WebhookRefused``."""
    if not secret:
        raise WebhookRefused(
            "Prebuilds are off on this server.", status_code=404,
            hint="Its operator turns them on by setting webhook_secret "
                 "(BINDERLESS_WEBHOOK_SECRET).")
    signature = _header(headers, "X-Hub-Signature-256")
    if signature:
        expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        if not _same(signature, expected):
            raise WebhookRefused(
                "The X-Hub-Signature-256 signature does not match this server's webhook "
                "secret.", status_code=403,
                hint="Set the same secret in the webhook's settings and on this server.")
        return Delivery("github", _header(headers, "X-GitHub-Event"),
                        _header(headers, "X-GitHub-Delivery"))
    token = _header(headers, "X-Gitlab-Token")
    if token:
        if not _same(token, secret):
            raise WebhookRefused(
                "The X-Gitlab-Token does not match this server's webhook secret.",
                status_code=403,
                hint="Set the same secret token in the webhook's settings and on this server.")
        return Delivery("gitlab", _header(headers, "X-Gitlab-Event"),
                        _header(headers, "X-Gitlab-Event-UUID"))
    scheme, _, credential = _header(headers, "Authorization").partition(" ")
    if scheme.lower() == "bearer" and credential.strip():
        if not _same(credential.strip(), secret):
            raise WebhookRefused("The bearer token is not this server's webhook secret.",
                                 status_code=403)
        return Delivery("token")
    if _header(headers, "X-Hub-Signature"):
        raise WebhookRefused("binderless checks X-Hub-Signature-256 (SHA-256); this "
                             "request carries only the older SHA-1 signature.",
                             status_code=401, hint=HOW_TO_SIGN)
    raise WebhookRefused("This request is not signed, so it starts no build.",
                         status_code=401, hint=HOW_TO_SIGN)


def _check_event(delivery: Delivery) -> None:
    """Refuse what is not a push; a GitHub ping is answered (nothing to build)."""
    if delivery.sender == "token":
        return
    if delivery.sender == "github" and delivery.event == "ping":
        raise NothingToBuild("pong: the webhook reaches this server. Pushes will be built.")
    events = GITHUB_EVENTS if delivery.sender == "github" else GITLAB_EVENTS
    if delivery.event not in events:
        raise WebhookRefused(
            f"binderless builds on push events only; this was {delivery.event[:64]!r}.",
            status_code=400,
            hint="Choose push events (and tag pushes, if you like) in the webhook's settings.")
    if not delivery.delivery_id or len(delivery.delivery_id) > MAX_DELIVERY_ID:
        header = "X-GitHub-Delivery" if delivery.sender == "github" else "X-Gitlab-Event-UUID"
        raise WebhookRefused(f"The {header} header is missing or too long, so a replay "
                             "could not be told apart.", status_code=400)


def _refuse_replays(deliveries: Deliveries, delivery: Delivery, body: bytes,
                    now: float) -> None:
    """Remember the delivery by its id and by its body; either seen before is a replay."""
    keys = (f"{delivery.sender}:{delivery.delivery_id}",
            "body:" + hashlib.sha256(body).hexdigest())
    for key in keys:
        if not deliveries.remember_delivery(key, now, REPLAY_TTL_SECONDS):
            raise WebhookRefused(
                "This delivery was received before; it is not built twice.", status_code=409,
                hint="Push again to build again.")


def _field(payload: Mapping[str, Any], *path: str) -> str:
    value: Any = payload
    for name in path:
        value = value.get(name) if isinstance(value, Mapping) else None
    return value if isinstance(value, str) else ""


def _http_url(value: str, what: str) -> str:
    try:
        parts = urlsplit(value)
    except ValueError:
        parts = urlsplit("")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise WebhookRefused(f"The push names no http(s) {what}.", status_code=400)
    return value


def _host(url: str) -> str:
    try:
        return (urlsplit(url).hostname or "").lower()
    except ValueError:
        return ""


def push_body(delivery: Delivery, payload: object, settings: Settings) -> dict[str, str]:
    """The ``{"provider", "spec"}`` a push payload names (as ``POST /api/launches`` takes
    it); raises ``WebhookRefused`` or ``NothingToBuild``."""
    if not isinstance(payload, Mapping):
        raise WebhookRefused("The webhook's body is not a JSON object.", status_code=400,
                             hint="Set the webhook's content type to application/json.")
    ref = _field(payload, "ref")
    kind, _, name = ref.removeprefix("refs/").partition("/")
    if kind not in ("heads", "tags") or not name:
        raise NothingToBuild(f"{ref[:100]!r} is neither a branch nor a tag: nothing to build.")
    after = _field(payload, "after")
    if payload.get("deleted") is True or after == NO_COMMIT:
        raise NothingToBuild(f"The push deleted {name[:100]!r}: nothing to build.")
    if delivery.sender == "github":
        page = _field(payload, "repository", "html_url")
        full_name = _field(payload, "repository", "full_name")
        if _host(page) == settings.github_host.lower() and GITHUB_FULL_NAME.fullmatch(full_name):
            return {"provider": "gh", "spec": f"{full_name}/{quote(name, safe='/')}"}
        clone = _http_url(_field(payload, "repository", "clone_url"), "repository.clone_url")
    else:
        page = _field(payload, "project", "web_url")
        namespace = _field(payload, "project", "path_with_namespace")
        if _host(page) == settings.gitlab_host.lower() and namespace:
            return {"provider": "gl",
                    "spec": f"{quote(namespace, safe='')}/{quote(name, safe='')}"}
        clone = _http_url(_field(payload, "project", "git_http_url"), "project.git_http_url")
    return {"provider": "git", "spec": f"{quote(clone, safe='')}/{quote(name, safe='')}"}


def check_request(headers: Mapping[str, str], body: bytes, *, settings: Settings,
                  registry: ProviderRegistry, deliveries: Deliveries, launch_host: str,
                  client_ip: str, now: float) -> LaunchRequest:
    """Everything a host checks before it resolves and builds: who sent it, that it is a
    push not seen before, and what it names, under the launch policy. Returns the
    build-only launch to start; raises ``WebhookRefused`` (or the launch parser's
    ``BadLink``/``SpecNotAllowed``) and ``NothingToBuild``."""
    delivery = authenticate(headers, body, settings.webhook_secret)
    _check_event(delivery)
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):
        payload = None
    if delivery.sender == "token":
        request_body: object = payload
    else:
        _refuse_replays(deliveries, delivery, body, now)
        request_body = push_body(delivery, payload, settings)
    launch = launch_request(request_body, registry=registry, launch_host=launch_host,
                            client_ip=client_ip)
    return LaunchRequest(provider=launch.provider, spec=launch.spec,
                         launch_host=launch.launch_host, client_ip=client_ip,
                         build_only=True)


def accepted_document(launch_id: str, request: LaunchRequest, resolved_ref: str,
                      status: str = "building") -> dict[str, str]:
    """The 202 answer: what is built, and where to follow it (``POST /api/launches``'s
    addresses; the stream shows the build and ends with ``ready``, nothing launched)."""
    document = {"status": status, "provider": request.provider, "spec": request.spec,
                "resolved_ref": resolved_ref,
                "launch_url": f"{request.launch_host}v2/{request.provider}/{request.spec}"}
    if launch_id:
        document.update(launch_document(launch_id, request))
    return document


def ignored_document(reason: NothingToBuild) -> dict[str, str]:
    """The 200 answer to a delivery that asks for no build."""
    return {"status": "ignored", "message": reason.message}
