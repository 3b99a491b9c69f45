"""Binder launch links: ``/v2/<provider>/<spec>?urlpath=..`` and their older forms.

Paths are handled undecoded: ``gl/group%2Fproject/main`` and
``git/https%3A%2F%2Fhost%2Frepo.git/HEAD`` keep their ``%2F`` until the provider
decodes its own spec.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from .errors import BadLink

__all__ = [
    "PROVIDER_PREFIXES",
    "LaunchTarget",
    "ParsedLink",
    "final_urlpath",
    "launch_path",
    "legacy_redirect",
    "parse_link",
    "split_launch_path",
    "split_spec",
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


DOI_RE = re.compile(r"^(?:doi:\s*|https?://(?:dx\.)?doi\.org/)?(10\.\d{4,9}/\S+)$", re.IGNORECASE)

#: The provider prefixes binderless knows (``providers.PROVIDERS``; a unit test keeps the
#: two equal). Kept here so that parsing a link needs no provider code.
PROVIDER_PREFIXES = frozenset({"gh", "gist", "gl", "git", "codecommit", "zenodo", "figshare",
                               "hydroshare", "dataverse", "ckan", "doi"})
#: The providers whose specs end in ``/<ref>``; the others name an archive or a record.
REF_PROVIDERS = frozenset({"gh", "gist", "gl", "git", "codecommit"})
#: Git hosts whose ``git@host:org/repo.git`` addresses have a provider of their own.
SCP_HOSTS = {"github.com": "gh", "gitlab.com": "gl"}
#: Hosts whose addresses are repositories, never Binder links.
REPO_HOSTS = frozenset({"github.com", "gitlab.com", "gist.github.com"})
SCP_RE = re.compile(r"^(?:ssh://)?(?P<user>[\w.-]+)@(?P<host>[\w.-]+)(?::|/)(?P<path>.+)$")
LOCAL_PATH_PREFIXES = ("/", "~", "./", "../", ".\\", "..\\")
#: Link paths that are Binder links on any host, never a folder of this machine.
LINK_PATHS = ("/v2/", "/build/", "/repo/")


def _file_path(kind: str, rest: list[str]) -> str:
    """The file a pasted ``/blob/<ref>/<file>`` URL points at ("" for a tree or commit)."""
    return "/".join(rest) if kind == "blob" else ""


def _from_url(text: str) -> tuple[LaunchTarget, str]:
    """A pasted repository or record URL as a target, and the file it names ("" for none)."""
    text = text.strip()
    doi = DOI_RE.match(text)
    if doi:
        value = unquote(doi.group(1))
        zenodo = re.match(r"10\.5281/zenodo\.(\d+)$", value, re.IGNORECASE)
        return LaunchTarget("zenodo" if zenodo else "doi", value), ""
    try:
        parts = urlsplit(text if "://" in text else "https://" + text)
        host = (parts.hostname or "").lower().removeprefix("www.")
    except ValueError as exc:
        raise BadLink(f"{text[:200]!r} is not a valid URL: {exc}.") from exc
    segments = [unquote(p) for p in parts.path.split("/") if p]
    if parts.scheme not in ("http", "https") or not host:
        raise BadLink(f"{text[:200]!r} is not a repository URL.",
                      hint="Use an https:// address, a Binder link or <provider>/<spec>.")
    if host == "github.com" and len(segments) >= 2:
        org, repo = segments[0], segments[1].removesuffix(".git")
        ref, file = "HEAD", ""
        # /tree/<ref>/<dir> and /blob/<ref>/<file>: a branch named feature/x cannot be told
        # from branch "feature" and folder "x" without asking GitHub, so the first segment
        # is the ref (docs/getting-started.md says so).
        if len(segments) >= 4 and segments[2] in ("tree", "blob", "commit"):
            ref, file = segments[3], _file_path(segments[2], segments[4:])
        return LaunchTarget("gh", f"{org}/{repo}/{quote(ref, safe='')}"), file
    if host == "gist.github.com" and len(segments) >= 2:
        return LaunchTarget("gist", "/".join(segments[:3]).removesuffix(".git")), ""
    if host == "gitlab.com" and len(segments) >= 2:
        path, _, rest = "/".join(segments).partition("/-/")
        ref, file = "HEAD", ""
        rest_parts = rest.split("/")
        if len(rest_parts) >= 2 and rest_parts[0] in ("tree", "blob", "commit"):
            ref, file = rest_parts[1], _file_path(rest_parts[0], rest_parts[2:])
        project = quote(path.removesuffix(".git"), safe="")
        return LaunchTarget("gl", f"{project}/{quote(ref, safe='')}"), file
    if host in ("zenodo.org", "sandbox.zenodo.org") and len(segments) >= 2 and segments[0] in (
            "record", "records") and segments[1].isdigit():
        prefix = "10.5281" if host == "zenodo.org" else "10.5072"
        return LaunchTarget("zenodo", f"{prefix}/zenodo.{segments[1]}"), ""
    if host == "figshare.com" and segments[:1] == ["articles"] and segments[-1].isdigit():
        # /articles/<type>/<title>/<id>[/<version>] or /articles/<title>/<id>[/<version>]
        if len(segments) > 3 and segments[-2].isdigit():
            return LaunchTarget("figshare",
                                f"10.6084/m9.figshare.{segments[-2]}.v{segments[-1]}"), ""
        return LaunchTarget("figshare", f"10.6084/m9.figshare.{segments[-1]}"), ""
    if host == "hydroshare.org" and len(segments) >= 2 and segments[0] == "resource" \
            and re.fullmatch(r"[0-9a-f]{32}", segments[1]):
        return LaunchTarget("hydroshare", segments[1]), ""
    persistent_id = dict(parse_qsl(parts.query)).get("persistentId", "")
    if parts.path.endswith("/dataset.xhtml") and persistent_id.lower().startswith("doi:10."):
        return LaunchTarget("dataverse", persistent_id[4:]), ""
    if not segments or host in ("doi.org", "dx.doi.org"):
        raise BadLink(f"{text[:200]!r} names no repository.",
                      hint="Paste the address of the repository itself, such as "
                      "https://github.com/org/repo.")
    clean = f"{parts.scheme}://{parts.netloc}{parts.path}".rstrip("/")
    return LaunchTarget("git", f"{quote(clean, safe='')}/HEAD"), ""


def target_from_url(text: str) -> LaunchTarget:
    """Turn a pasted repository or record URL into a provider and spec.

    Knows GitHub (repositories, ``/tree/<ref>`` and ``/blob/<ref>/...``), GitLab
    (``/-/tree/<ref>``), gists, Zenodo, Figshare, HydroShare and Dataverse records, DOIs
    (``10.x/y``, ``doi:``, ``https://doi.org/...``) and any other ``https://...`` clone URL.
    """
    return _from_url(text)[0]


@dataclass(frozen=True)
class ParsedLink:
    """A launch request as a link, a bare spec, a pasted URL or a folder gives it.

    ``path`` and ``path_kind`` say what the link opens as a person writes it: a file
    (``file``: ``labpath``), a URL path (``url``: ``urlpath``, or ``tree/<P>`` for
    ``filepath``), or nothing (``""``); ``urlpath`` is what the session opens.
    """

    target: LaunchTarget
    urlpath: str = ""
    host: str = ""
    path: str = ""
    path_kind: str = ""


def _opened(query: Mapping[str, str]) -> tuple[str, str]:
    """``(path, path_kind)`` of a link's query, by the precedence of ``final_urlpath``."""
    if query.get("labpath"):
        return query["labpath"].lstrip("/"), "file"
    if query.get("filepath"):
        return "tree/" + query["filepath"].lstrip("/"), "url"
    if query.get("urlpath"):
        return query["urlpath"].removeprefix("/"), "url"
    return "", ""


def _link(target: LaunchTarget, query: Mapping[str, str], host: str = "",
          file: str = "") -> ParsedLink:
    if file and not any(query.get(k) for k in ("labpath", "filepath", "urlpath")):
        query = {"labpath": file}
    path, kind = _opened(query)
    return ParsedLink(target, final_urlpath(query), host, path, kind)


def _scp_address(text: str) -> LaunchTarget:
    """``git@github.com:org/repo.git`` (an SSH clone address) as a target, for the hosts
    that have a provider; other hosts are refused with the https form to use instead."""
    match = SCP_RE.match(text)
    if match is None:
        raise BadLink(f"{text[:200]!r} is not a repository address.")
    host, path = match["host"].lower(), match["path"].strip("/").removesuffix(".git")
    https = f"https://{host}/{path}"
    if host in SCP_HOSTS and path.count("/") >= 1:
        return _from_url(https)[0]
    raise BadLink(f"{text[:200]!r} is an SSH address, which needs a key binderless "
                  "does not have.", hint=f"Use its https:// form instead: {https}")


def _local_folder(text: str, cwd: str | None) -> LaunchTarget:
    """A folder on this machine as ``git/<encoded path>/HEAD``. A relative path is made
    absolute against ``cwd`` when one is given (the caller's directory, read at the edge);
    ``~`` is left for the git provider to expand."""
    path = text.rstrip("/") or "/"
    if path.startswith(".") and cwd is not None:
        path = posixpath.normpath(posixpath.join(cwd, path))
    return LaunchTarget("git", f"{quote(path, safe='')}/HEAD")


def _unencoded_git(rest: str) -> BadLink | None:
    """A ``git/`` spec whose URL or path kept its slashes (``git//home/me/repo/HEAD``,
    ``git/https://host/r.git/main``): the error that says how to encode it."""
    head = rest.partition("/")[0]
    if not (rest.startswith(("/", "~/")) or re.match(r"^[a-z][a-z0-9+.-]*:/", rest, re.I)) \
            or head.lower().endswith("%3a"):
        return None
    where, _, ref = rest.rstrip("/").rpartition("/")
    if not where or not ref:
        where, ref = rest.rstrip("/"), "HEAD"
    encoded = f"git/{quote(where, safe='')}/{quote(ref, safe='')}"
    return BadLink("The repository in a git/ spec must be URL-encoded, slashes too, so "
                   "that its ref can be told apart.", hint=f"Write it as {encoded}")


def parse_link(text: str, *, cwd: str | None = None) -> ParsedLink:
    """Parse anything a person may hand binderless, the one parser of the home page,
    ``binderless launch`` and ``binderless resolve``:

    - a Binder link (``/v2/...``, ``/build/...``, legacy ``/repo/...``, on any host);
    - ``<provider>/<spec>`` (an unknown provider is a ``BadLink``);
    - a repository or record URL (GitHub, GitLab, gists, Zenodo, Figshare, HydroShare,
      Dataverse, DOIs, any other https clone URL), ``git@github.com:org/repo.git``;
    - a folder on this machine (``/home/me/repo``, ``~/repo``, ``./repo``, made absolute
      against ``cwd`` when it is given).
    """
    text = text.strip()
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise BadLink("The link contains control characters (such as a line break).",
                      hint="Copy the link again, on one line.")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:  # a lone surrogate (undecodable bytes from argv)
        raise BadLink("The link is not valid text (it holds undecodable bytes).",
                      hint="Copy the link again.") from exc
    if not text:
        raise BadLink("Give a Binder link, <provider>/<spec> or a repository address.",
                      hint="For example gh/binder-examples/requirements/HEAD.")
    if SCP_RE.match(text) and ("://" not in text.split("@", 1)[0] or text.startswith("ssh://")):
        return _link(_scp_address(text), {})
    if (text in (".", "..") or text.startswith(LOCAL_PATH_PREFIXES)) \
            and not text.startswith(LINK_PATHS):
        return _link(_local_folder(text, cwd), {})
    query: dict[str, str] = {}
    is_spec = text.removeprefix("v2/").partition("/")[0] in PROVIDER_PREFIXES
    if not is_spec and ("://" in text or text.startswith("/")):
        try:
            parts = urlsplit(text)
        except ValueError as exc:
            raise BadLink(f"{text[:200]!r} is not a valid URL: {exc}.") from exc
        query = dict(parse_qsl(parts.query))
        path = "/" + parts.path.lstrip("/")
        raw = text.split("?", 1)[0].split("#", 1)[0]
        raw_path = raw[raw.index(parts.netloc) + len(parts.netloc):] if parts.netloc else raw
        host = f"{parts.scheme}://{parts.netloc}" if parts.netloc else ""
        # A repository host's own address may hold /v2/ (a branch named v2), never a link.
        repo_host = (parts.hostname or "").lower().removeprefix("www.") in REPO_HOSTS
        for marker in ("/v2/", "/build/"):
            if marker in raw_path and not repo_host:
                base, _, rest = raw_path.partition(marker)
                target = split_launch_path(marker + rest, marker.strip("/"))
                return _link(target, query, host + base)
        if path.startswith("/repo/") and not repo_host:
            redirect = legacy_redirect(path)
            target = split_launch_path(redirect.split("?")[0], "v2")
            return _link(target, dict(parse_qsl(redirect.partition("?")[2])), host)
        target, file = _from_url(text)
        return _link(target, query, file=file)
    spec, _, raw_query = text.partition("?")
    query = dict(parse_qsl(raw_query))
    spec = spec.removeprefix("/").removeprefix("v2/")
    if DOI_RE.match(spec) or spec.lower().startswith(
            ("github.com/", "gitlab.com/", "gist.github.com/", "www.github.com/")):
        target, file = _from_url(spec)
        return _link(target, query, file=file)
    provider, sep, rest = spec.partition("/")
    if provider == "git" and (problem := _unencoded_git(rest)) is not None:
        raise problem
    rest = rest.strip("/")
    if provider not in PROVIDER_PREFIXES:
        raise BadLink(f"{text[:200]!r} is neither a Binder link, <provider>/<spec> nor a "
                      "repository address.",
                      hint="For example gh/binder-examples/requirements/HEAD, "
                      "https://github.com/org/repo or a folder such as ~/repo. Providers: "
                      + ", ".join(sorted(PROVIDER_PREFIXES)) + ".")
    if not sep or not rest:
        raise BadLink(f"{text[:200]!r} names no repository after {provider}/.",
                      hint="For example gh/binder-examples/requirements/HEAD.")
    return _link(LaunchTarget(provider, rest), query)


def split_spec(provider: str, spec: str) -> tuple[str, str]:
    """A spec as a person writes it: ``(repository, ref)``, the ref "" for the providers
    that name a record. Reads BinderHub's encoded forms and the ones Jupyter Book and MyST
    write (``git/https%3A//host/org/repo/main``, ``gl/group/sub/project/main``); the home
    page fills its form from this (``binder.js`` ``splitSpec`` reads links the same way)."""
    parts = spec.split("/")
    if provider in ("gh", "gist", "codecommit"):
        return "/".join(unquote(p) for p in parts[:2]), unquote("/".join(parts[2:]))
    if provider in ("gl", "git"):
        first = unquote(parts[0])
        unencoded = ("%2f" not in parts[0].lower()) if provider == "gl" else bool(
            re.fullmatch(r"[a-z][a-z0-9+.-]*:", first, re.IGNORECASE))
        if unencoded and len(parts) > 2:
            return unquote("/".join(parts[:-1])), unquote(parts[-1])
        return first, unquote("/".join(parts[1:]))
    return unquote(spec), ""


def launch_path(link: ParsedLink) -> str:
    """The link as this server writes it, without a host: ``/v2/<provider>/<spec>`` and
    ``?labpath=`` or ``?urlpath=`` (what the home page's form makes of it)."""
    path = f"/v2/{link.target.provider}/{link.target.spec}"
    if link.path:
        key = "labpath" if link.path_kind == "file" else "urlpath"
        path += f"?{key}={quote(link.path, safe='/')}"
    return path
