"""Binder launch links: ``/v2/<provider>/<spec>?urlpath=..`` and their older forms.

Paths are handled undecoded: ``gl/group%2Fproject/main`` and
``git/https%3A%2F%2Fhost%2Frepo.git/HEAD`` keep their ``%2F`` until the provider
decodes its own spec.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from .errors import BadLink

__all__ = [
    "LaunchTarget",
    "ParsedLink",
    "final_urlpath",
    "legacy_redirect",
    "parse_link",
    "split_launch_path",
    "target_from_url",
]


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


MAX_LEGACY_PATH = 2048


def legacy_redirect(raw_path: str) -> str:
    """Map the old ``/repo/<user>/<repo>[/<path>]`` form to its ``/v2/gh`` link."""
    if len(raw_path) > MAX_LEGACY_PATH:
        # Its redirect would be longer than a client reads in a header.
        raise BadLink("This old-style link is too long.",
                      hint="Old-style links look like /repo/<user>/<repo>[/<path>].")
    parts = [p for p in raw_path.split("/") if p]
    if len(parts) < 3 or parts[0] != "repo":
        raise BadLink("Old-style links look like /repo/<user>/<repo>[/<path>].")
    user, repo, path = parts[1], parts[2], "/".join(parts[3:])
    target = f"/v2/gh/{user}/{repo}/master"
    if path:
        target += "?urlpath=" + quote(path, safe="/")
    return target


DOI_RE = re.compile(r"^(?:doi:|https?://(?:dx\.)?doi\.org/)?(10\.\d{4,9}/\S+)$", re.IGNORECASE)


def target_from_url(text: str) -> LaunchTarget:
    """Turn a pasted repository or record URL into a provider and spec.

    Knows GitHub (repositories, ``/tree/<ref>`` and ``/blob/<ref>/...``), GitLab
    (``/-/tree/<ref>``), gists, Zenodo records, DOIs (``10.x/y``, ``doi:``,
    ``https://doi.org/...``) and any other ``https://...`` clone URL.
    """
    text = text.strip()
    doi = DOI_RE.match(text)
    if doi:
        value = unquote(doi.group(1))
        zenodo = re.match(r"10\.5281/zenodo\.(\d+)$", value, re.IGNORECASE)
        return LaunchTarget("zenodo" if zenodo else "doi", value)
    try:
        parts = urlsplit(text if "://" in text else "https://" + text)
        host = (parts.hostname or "").lower()
    except ValueError as exc:
        raise BadLink(f"{text!r} is not a valid URL: {exc}.") from exc
    segments = [unquote(p) for p in parts.path.split("/") if p]
    if parts.scheme not in ("http", "https") or not host:
        raise BadLink(f"{text!r} is not a repository URL.")
    if host in ("github.com", "www.github.com") and len(segments) >= 2:
        org, repo = segments[0], segments[1].removesuffix(".git")
        ref = "HEAD"
        if len(segments) >= 4 and segments[2] in ("tree", "blob", "commit"):
            ref = segments[3]
        return LaunchTarget("gh", f"{org}/{repo}/{ref}")
    if host == "gist.github.com" and len(segments) >= 2:
        return LaunchTarget("gist", "/".join(segments[:3]).removesuffix(".git"))
    if host == "gitlab.com" and len(segments) >= 2:
        path, _, rest = "/".join(segments).partition("/-/")
        ref = "HEAD"
        rest_parts = rest.split("/")
        if len(rest_parts) >= 2 and rest_parts[0] in ("tree", "blob", "commit"):
            ref = rest_parts[1]
        return LaunchTarget("gl", f"{quote(path.removesuffix('.git'), safe='')}/{ref}")
    if host in ("zenodo.org", "sandbox.zenodo.org") and len(segments) >= 2 and segments[0] in (
            "record", "records") and segments[1].isdigit():
        prefix = "10.5281" if host == "zenodo.org" else "10.5072"
        return LaunchTarget("zenodo", f"{prefix}/zenodo.{segments[1]}")
    clean = f"{parts.scheme}://{parts.netloc}{parts.path}".rstrip("/")
    return LaunchTarget("git", f"{quote(clean, safe='')}/HEAD")


@dataclass(frozen=True)
class ParsedLink:
    """A launch request as a link, a bare spec or a pasted URL gives it."""

    target: LaunchTarget
    urlpath: str = ""
    host: str = ""


def parse_link(text: str) -> ParsedLink:
    """Parse anything a person may hand binderless: a Binder link (``/v2/...``, ``/build/...``,
    legacy ``/repo/...``), ``<provider>/<spec>``, or a repository or record URL."""
    text = text.strip()
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise BadLink("The link contains control characters (such as a line break).",
                      hint="Copy the link again, on one line.")
    query: dict[str, str] = {}
    if "://" in text or text.startswith("/"):
        try:
            parts = urlsplit(text)
        except ValueError as exc:
            raise BadLink(f"{text!r} is not a valid URL: {exc}.") from exc
        query = dict(parse_qsl(parts.query))
        path = "/" + parts.path.lstrip("/")
        raw = text.split("?", 1)[0]
        raw_path = raw[raw.index(parts.netloc) + len(parts.netloc):] if parts.netloc else raw
        host = f"{parts.scheme}://{parts.netloc}" if parts.netloc else ""
        for marker in ("/v2/", "/build/"):
            if marker in raw_path:
                base, _, rest = raw_path.partition(marker)
                target = split_launch_path(marker + rest, marker.strip("/"))
                return ParsedLink(target, final_urlpath(query), host + base)
        if path.startswith("/repo/"):
            redirect = legacy_redirect(path)
            target = split_launch_path(redirect.split("?")[0], "v2")
            legacy_query = dict(parse_qsl(redirect.partition("?")[2]))
            return ParsedLink(target, final_urlpath(legacy_query), host)
        return ParsedLink(target_from_url(text), final_urlpath(query))
    spec, _, raw_query = text.partition("?")
    query = dict(parse_qsl(raw_query))
    spec = spec.strip("/").removeprefix("v2/")
    if DOI_RE.match(spec) or spec.startswith(("github.com/", "gitlab.com/", "gist.github.com/")):
        return ParsedLink(target_from_url(spec), final_urlpath(query))
    provider, sep, rest = spec.partition("/")
    if not sep or not rest:
        raise BadLink(f"{text!r} is neither a Binder link nor <provider>/<spec>, "
                      "e.g. gh/binder-examples/requirements/HEAD.")
    return ParsedLink(LaunchTarget(provider, rest), final_urlpath(query))
