"""Binder launch links: ``/v2/<provider>/<spec>?urlpath=..`` and their older forms.

Paths are handled undecoded: ``gl/group%2Fproject/main`` and
``git/https%3A%2F%2Fhost%2Frepo.git/HEAD`` keep their ``%2F`` until the provider
decodes its own spec.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote

from .errors import BadLink

__all__ = ["LaunchTarget", "final_urlpath", "legacy_redirect", "split_launch_path"]


@dataclass(frozen=True)
class LaunchTarget:
    """What a link asks for: a provider prefix and its (still encoded) spec."""

    provider: str
    spec: str

    @property
    def request(self) -> str:
        """BinderHub's ``binder_request``: ``v2/<provider>/<spec>``."""
        return f"v2/{self.provider}/{self.spec}"


def split_launch_path(raw_path: str, prefix: str) -> LaunchTarget:
    """Split ``/<prefix>/<provider>/<spec>`` (raw, undecoded) into its parts.

    ``prefix`` is ``v2`` for launch pages or ``build`` for the event stream.
    """
    head = f"/{prefix}/"
    if not raw_path.startswith(head):
        raise BadLink(f"Launch links start with /{prefix}/, not {raw_path[:40]!r}.")
    rest = raw_path[len(head):]
    provider, sep, spec = rest.partition("/")
    spec = spec.strip("/")
    if not provider or not sep or not spec:
        raise BadLink(
            "This link names no repository. Launch links look like "
            f"/{prefix}/gh/<user>/<repo>/<ref>.",
            hint="Check the link you followed, or build a new one on the home page.",
        )
    return LaunchTarget(provider=provider, spec=spec)


def final_urlpath(query: Mapping[str, str]) -> str:
    """The path to open in the session, by BinderHub's precedence.

    ``labpath=P`` opens ``doc/tree/P``; ``filepath=P`` opens ``tree/P``;
    ``urlpath`` is used as given, without one leading slash. Empty when none is set.
    """
    labpath = query.get("labpath", "")
    if labpath:
        return "doc/tree/" + labpath.lstrip("/")
    filepath = query.get("filepath", "")
    if filepath:
        return "tree/" + filepath.lstrip("/")
    urlpath = query.get("urlpath", "")
    if urlpath.startswith("/"):
        urlpath = urlpath[1:]
    return urlpath


def legacy_redirect(raw_path: str) -> str:
    """Map the old ``/repo/<user>/<repo>[/<path>]`` form to its ``/v2/gh`` link."""
    parts = [p for p in raw_path.split("/") if p]
    if len(parts) < 3 or parts[0] != "repo":
        raise BadLink("Old-style links look like /repo/<user>/<repo>[/<path>].")
    user, repo, path = parts[1], parts[2], "/".join(parts[3:])
    target = f"/v2/gh/{user}/{repo}/master"
    if path:
        target += "?urlpath=" + quote(path, safe="/")
    return target
