"""Redirect targets stay inside the server: every known trick, in Python and in the loading
page's JavaScript (run by node), which must agree."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from binderless.redirects import safe_next, session_url
from tests.conftest import ROOT

BASE = "http://127.0.0.1:8585/user/abc123/"

#: (urlpath as the loading page gets it, the path it must open inside the session)
TRICKS = [
    ("", "/user/abc123/"),
    ("lab/tree/index.ipynb", "/user/abc123/lab/tree/index.ipynb"),
    ("/lab/tree/index.ipynb", "/user/abc123/lab/tree/index.ipynb"),
    ("doc/tree/a:b.ipynb", "/user/abc123/doc/tree/a:b.ipynb"),
    ("javascript:alert(document.cookie)", "/user/abc123/javascript:alert(document.cookie)"),
    ("JaVaScRiPt:alert(1)", "/user/abc123/JaVaScRiPt:alert(1)"),
    ("java\tscript:alert(1)", "/user/abc123/javascript:alert(1)"),
    ("java\nscript:alert(1)", "/user/abc123/javascript:alert(1)"),
    ("data:text/html,<script>alert(1)</script>", None),
    ("https://evil.example/", None),
    ("//evil.example/x", "/user/abc123/evil.example/x"),
    ("///evil.example", "/user/abc123/evil.example"),
    ("\\\\evil.example", "/user/abc123/evil.example"),
    ("/\\evil.example", "/user/abc123/evil.example"),
    ("\t//evil.example", "/user/abc123/evil.example"),
    ("/\t/evil.example", "/user/abc123/evil.example"),
    ("../../other/", "/user/abc123/"),
    ("lab/../../../other/", "/user/abc123/"),
    ("%2e%2e/%2e%2e/other/", "/user/abc123/"),
    ("%2E%2E/user/other/", "/user/abc123/"),
    ("..%2f..%2fother/", None),  # one segment to a browser; either answer stays inside
    (" https://evil.example", None),
]


def _inside(url: str) -> str:
    parts = urlsplit(url)
    assert (parts.scheme, parts.netloc) == ("http", "127.0.0.1:8585"), url
    assert parts.path.startswith("/user/abc123/"), url
    assert "token=T0K" in parts.query, url
    return parts.path


@pytest.mark.parametrize(("urlpath", "expected"), TRICKS)
def test_session_url_never_leaves_the_session(urlpath: str, expected: str | None) -> None:
    path = _inside(session_url(BASE, urlpath, "T0K"))
    if expected is not None:
        assert path == expected


@pytest.mark.skipif(shutil.which("node") is None, reason="node runs the loading page's JS")
def test_the_loading_page_keeps_the_same_rule(tmp_path: Path) -> None:
    # binder.js is an ES module served as .js; node reads it as one under a .mjs name.
    module = tmp_path / "binder.mjs"
    module.write_text((ROOT / "site" / "assets" / "js" / "binder.js").read_text())
    script = (f"import {{ sessionUrl }} from {json.dumps(str(module))};"
              f"const cases = {json.dumps([u for u, _ in TRICKS])};"
              f"console.log(JSON.stringify(cases.map((u) => sessionUrl("
              f"{{ url: {json.dumps(BASE)}, token: 'T0K' }}, u))));")
    out = subprocess.run(["node", "--input-type=module", "-e", script], capture_output=True,
                         text=True, timeout=60, check=True).stdout
    for (urlpath, expected), url in zip(TRICKS, json.loads(out), strict=True):
        path = _inside(url)
        if expected is not None:
            assert path == expected, (urlpath, url)


@pytest.mark.parametrize("value", [
    "//evil.example", "/\\evil.example", "\\\\evil.example", "/\t/evil.example/x",
    "/\n/evil.example", "https://evil.example/", "javascript:alert(1)", "data:text/html,x",
    "evil.example", " /projects", "/projects\r\nSet-Cookie: x=1", "", "http:/evil.example",
])
def test_next_after_sign_in_stays_on_the_server(value: str) -> None:
    assert safe_next(value) == "/projects"


@pytest.mark.parametrize("value", ["/projects", "/v2/gh/org/repo/HEAD?labpath=a.ipynb",
                                   "/%09/evil.example/x"])
def test_next_keeps_paths_on_the_server(value: str) -> None:
    assert safe_next(value) == value  # %09 stays encoded: a path segment, not a tab
