"""Which Jupyter pages get the countdown banner, and where its script goes."""

from __future__ import annotations

from unittest.mock import Mock

import pytest
from aiohttp import web

from binderless.server.session_tools import inject_banner, wants_banner


@pytest.mark.parametrize(("method", "rest", "wanted"), [
    ("GET", "lab", True),
    ("GET", "lab/tree/index.ipynb?token=x", True),
    ("GET", "tree", True),
    ("GET", "doc/tree/a.ipynb", True),
    ("GET", "files/report.html", False),  # a user's own HTML file is served as it is
    ("GET", "api/contents", False),
    ("GET", "static/lab/main.js", False),
    ("POST", "lab", False),
])
def test_only_jupyter_pages_get_the_banner(method: str, rest: str, wanted: bool) -> None:
    request = Mock(spec=web.Request, method=method)
    assert wants_banner(request, rest) is wanted


def test_the_script_goes_before_the_end_of_head() -> None:
    page = b"<html><HEAD><title>x</title></HEAD ><body></body></html>"
    changed = inject_banner(page, "abc123")
    assert changed.index(b"session-banner.js") < changed.index(b"</HEAD >")
    assert b'data-binderless-session="abc123"' in changed
    assert inject_banner(b"<p>no head</p>", "s").startswith(b"<p>no head</p><script")
