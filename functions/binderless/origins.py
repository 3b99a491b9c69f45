"""Who is asking: the ``Host`` a request names and the origin of the page that sent it.

Two questions every route of the server answers before anything else (docs/security.md):

- **Is this request for us?** A page on ``evil.example`` whose DNS name is rebound to
  127.0.0.1 reaches a local server with ``Host: evil.example``. Only the names the server
  is known by are answered (Jupyter Server's ``check_host`` and ``allow_remote_access`` are
  the model): its listen address, the loopback names when it listens there, the public
  URL's host, and what the operator adds (``allowed_hosts``). A server listening on every
  address answers IP literals too, since rebinding needs a name.
- **Which page sent it?** A browser names the page's origin in ``Origin`` (and, where it
  leaves that out, says ``Sec-Fetch-Site``). Requests with neither come from no page (the
  CLI, scripts, tests) and count as the server's own. Other origins may launch and use
  sessions only when the operator allows them (``Settings.cross_origin``), and never
  launch local paths.

Pure functions over header values: the hosts (aiohttp server, Chalice) pass them in.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from .errors import BadLink
from .providers.git import split_git_spec
from .settings import LOOPBACK_HOSTS, Settings

__all__ = ["OriginPolicy", "host_name", "names_local_path"]

WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", ""})
#: Schemes that name a repository somewhere else; anything else a git spec names (a path,
#: ``file://``, ``~``) is on this machine.
REMOTE_GIT_SCHEMES = frozenset({"https", "http", "git", "ssh"})


def host_name(host: str) -> str:
    """The name part of a ``Host`` header, lower-cased: ``[::1]:8585`` -> ``::1``,
    ``Example.org.:80`` -> ``example.org``. ``""`` when it cannot be a host name."""
    host = host.strip().lower()
    if host.startswith("["):
        name, bracket, _rest = host[1:].partition("]")
        return name if bracket else ""
    if host.count(":") > 1:
        return host  # an IPv6 literal without brackets (not valid, but unambiguous)
    return host.partition(":")[0].rstrip(".")


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _is_loopback(name: str) -> bool:
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def names_local_path(provider: str, spec: str) -> bool:
    """Whether a launch of ``provider/spec`` names a folder or ``file://`` URL on this
    machine (only the ``git`` provider can)."""
    if provider != "git":
        return False
    try:
        url, _ref = split_git_spec(spec)
    except BadLink:
        return False
    return urlsplit(url.strip()).scheme.lower() not in REMOTE_GIT_SCHEMES


def _origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


@dataclass(frozen=True)
class OriginPolicy:
    """The host and origin rules of one server, from its settings."""

    any_host: bool
    hosts: frozenset[str]
    ip_literals: bool
    loopback: bool
    public_origin: str
    cross_origins: frozenset[str]

    @classmethod
    def from_settings(cls, settings: Settings) -> OriginPolicy:
        listen = host_name(settings.host) if settings.host not in WILDCARD_HOSTS else ""
        hosts = {host_name(h) for h in settings.allowed_hosts if h != "*"}
        wildcard = settings.host in WILDCARD_HOSTS
        if listen:
            hosts.add(listen)
        if wildcard:
            hosts.add(socket.gethostname().lower())
        public_origin = ""
        if settings.public_url:
            public_origin = _origin_of(settings.public_url)
            hosts.add(host_name(urlsplit(settings.public_url).netloc))
        return cls(
            # The AWS gateway sits behind CloudFront and an internal load balancer that no
            # browser reaches directly, and CloudFront may name the origin's own host:
            # there, host names are checked only when the operator lists them.
            any_host="*" in settings.allowed_hosts or (
                settings.mode == "aws" and not settings.allowed_hosts),
            hosts=frozenset(hosts),
            ip_literals=wildcard,
            loopback=wildcard or listen in LOOPBACK_HOSTS or _is_loopback(listen),
            public_origin=public_origin,
            cross_origins=frozenset(o.rstrip("/").lower() for o in settings.cross_origin),
        )

    # ----- Host ----------------------------------------------------------------------------

    def host_allowed(self, host: str | None) -> bool:
        """Whether a request naming ``host`` is for this server (the port is not checked:
        a reverse proxy may forward another one, and rebinding is about the name)."""
        if self.any_host:
            return True
        name = host_name(host or "")
        if not name:
            return False
        if name in self.hosts:
            return True
        if self.loopback and _is_loopback(name):
            return True
        return self.ip_literals and _is_ip(name)

    # ----- Origin --------------------------------------------------------------------------

    def own_origins(self, scheme: str, host: str) -> set[str]:
        """This server's origins as the request reached it (``host`` is already checked)."""
        origins = {f"{scheme}://{host}".lower()}
        if self.public_origin:
            origins.add(self.public_origin)
        return origins

    def page_origin(self, headers: Mapping[str, str], scheme: str, host: str) -> str | None:
        """The origin of another site's page that sent this request, or ``None`` when it
        came from this server's own pages or from no page at all (the CLI, scripts).

        ``"null"`` (a sandboxed frame, a ``data:`` page) counts as another site; so does a
        request without ``Origin`` that the browser marks cross-site or same-site (another
        port of the same host is another origin)."""
        origin = headers.get("Origin")
        if origin is not None:
            cleaned = origin.strip().rstrip("/").lower()
            return None if cleaned in self.own_origins(scheme, host) else (cleaned or "null")
        if headers.get("Sec-Fetch-Site", "").lower() in ("cross-site", "same-site"):
            return "null"
        return None

    def origin_allowed(self, origin: str) -> bool:
        """Whether pages of ``origin`` may launch (remote repositories) and use sessions."""
        return "*" in self.cross_origins or origin in self.cross_origins

    def cors_headers(self, origin: str | None) -> dict[str, str]:
        """The CORS answer for a request from ``origin`` (``None``: our own pages)."""
        if origin is None or not self.origin_allowed(origin):
            return {"Vary": "Origin"}
        allowed = "*" if "*" in self.cross_origins else origin
        return {"Access-Control-Allow-Origin": allowed, "Vary": "Origin"}
