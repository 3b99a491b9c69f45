"""Refuse URLs that point into the server's own network, before any connection opens.

In AWS mode a launch link must never make binderless fetch from loopback,
private, link-local or metadata addresses (server-side request forgery). The
guard checks the scheme, resolves the host, and checks every address; the
guarded httpx transport applies it to each request, so every redirect hop is
checked again before it is followed. The local mode allows everything: it is
the user's own machine.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

import httpx

from .errors import SpecNotAllowed

__all__ = ["GuardedTransport", "UrlGuard", "guarded_client"]

Resolver = Callable[[str], Sequence[str]]

METADATA_HOSTS = {"169.254.169.254", "fd00:ec2::254", "metadata.google.internal",
                  "metadata", "instance-data"}


def system_resolver(host: str) -> list[str]:
    infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    return sorted({str(info[4][0]) for info in infos})


class UrlGuard:
    """Decides whether binderless may fetch a URL."""

    def __init__(
        self,
        *,
        enforce: bool,
        schemes: Sequence[str] = ("https",),
        allowed_hosts: Sequence[str] = (),
        resolver: Resolver = system_resolver,
    ) -> None:
        self.enforce = enforce
        self.schemes = tuple(schemes)
        self.allowed_hosts = tuple(h.lower() for h in allowed_hosts)
        self.resolver = resolver

    def check(self, url: str) -> None:
        """Raise ``SpecNotAllowed`` unless ``url`` may be fetched. Opens no connection."""
        if not self.enforce:
            return
        parts = urlsplit(url)
        if parts.scheme not in self.schemes:
            raise SpecNotAllowed(
                f"binderless only fetches {' or '.join(s + '://' for s in self.schemes)} URLs; "
                f"{parts.scheme or 'no scheme'}:// is not allowed here."
            )
        host = (parts.hostname or "").lower().rstrip(".")
        if not host:
            raise SpecNotAllowed(f"{url!r} names no host.")
        if self.allowed_hosts and not any(
            host == allowed or host.endswith("." + allowed) for allowed in self.allowed_hosts
        ):
            raise SpecNotAllowed(f"Fetching from {host} is not allowed on this server.",
                                 hint="Ask its operators to add the host to the allowed git hosts.")
        if host in METADATA_HOSTS or host == "localhost" or host.endswith(".localhost"):
            raise self._refuse(host)
        try:
            addresses = [host] if _is_ip(host) else list(self.resolver(host))
        except OSError as exc:
            raise SpecNotAllowed(f"The host {host} could not be found.",
                                 hint="Check the spelling of the URL.") from exc
        if not addresses:
            raise SpecNotAllowed(f"The host {host} could not be found.")
        for address in addresses:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
            if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
                ip = ip.ipv4_mapped
            if not ip.is_global or ip.is_multicast or str(ip) in METADATA_HOSTS:
                raise self._refuse(host)

    @staticmethod
    def _refuse(host: str) -> SpecNotAllowed:
        return SpecNotAllowed(
            f"binderless will not fetch from {host}: it is a local, private or metadata address.",
            hint="Launch links must point at public repositories.",
        )


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return False
    return True


class GuardedTransport(httpx.BaseTransport):
    """An httpx transport that checks every request (each redirect hop too) with a guard."""

    def __init__(self, guard: UrlGuard, inner: httpx.BaseTransport | None = None) -> None:
        self.guard = guard
        self.inner = inner or httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.guard.check(str(request.url))
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


def guarded_client(guard: UrlGuard, inner: httpx.BaseTransport | None = None,
                   **kwargs: Any) -> httpx.Client:
    """An httpx client whose every request, redirects included, passes ``guard`` first."""
    return httpx.Client(transport=GuardedTransport(guard, inner), follow_redirects=True,
                        timeout=httpx.Timeout(30.0), **kwargs)
