"""Values that become addresses the browser goes to: kept inside the server.

``next`` after signing in may only name a path on this server, and a launch's
``urlpath`` / ``labpath`` / ``filepath`` only a path inside the session. Both are parsed
and rebuilt, never joined as strings, and read the way a browser reads them: browsers
drop tabs and newlines from URLs, take ``\\`` for ``/`` and ``%2e`` for ``.``, so
``/\\t/evil.example`` is ``//evil.example`` to them. The loading page's ``sessionUrl``
(site/assets/js/binder.js) keeps the same rule in the browser.
"""

from __future__ import annotations

import posixpath
import re
from urllib.parse import unquote, urlencode, urljoin, urlsplit, urlunsplit

__all__ = ["safe_next", "session_url"]

_INVISIBLE = re.compile(r"[\x00-\x20\x7f]")


def _as_browser_reads(value: str) -> str:
    return _INVISIBLE.sub("", value).replace("\\", "/")


def safe_next(value: str, default: str = "/projects") -> str:
    """``value`` when it is a path on this server (``/projects?x=1``), else ``default``."""
    if not value or value != _as_browser_reads(value):
        return default  # hidden characters: a browser would read another address
    parts = urlsplit(value)
    if parts.scheme or parts.netloc or not value.startswith("/") or value.startswith("//"):
        return default
    return value


def session_url(base: str, urlpath: str, token: str) -> str:
    """The address to open once a session at ``base`` (``.../user/<id>/``) is ready:
    ``urlpath`` resolved inside it, with the token. Anything that would lead elsewhere
    (another scheme or host, ``..`` above the session) opens the session's root."""
    cleaned = _as_browser_reads(urlpath).lstrip("/")
    target = urljoin(base, "./" + cleaned) if cleaned else base
    parts, root = urlsplit(target), urlsplit(base)
    path = posixpath.normpath(unquote(parts.path)) + ("/" if parts.path.endswith("/") else "")
    inside = (parts.scheme, parts.netloc) == (root.scheme, root.netloc) and \
        (path + "/").startswith(root.path) and ".." not in unquote(parts.path).split("/")
    if not inside:
        parts = root
    query = "&".join(q for q in (parts.query, urlencode({"token": token})) if q)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))
