"""One parser for the home page, ``binderless launch`` and ``binderless resolve``.

The same inputs (every link form in the docs, pasted URLs of each provider, ``git@``
addresses, folders, garbage) go to the home page in Chromium (pasted, and some typed),
to ``launch``'s parsing and to ``resolve --offline``; all three must agree on what is
launched (provider, repository, ref and the path opened) or all three refuse.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from binderless.cli import main as cli_main
from binderless.client import parse_target
from binderless.errors import BadLink, BinderlessError
from binderless.links import split_spec
from binderless.providers import ProviderRegistry
from binderless.resolve import resolve_link
from binderless.settings import Settings

from ..conftest import ROOT, LiveServer, start_server, stop_server
from . import browser as chromium
from .browser import DESKTOP, guard_network, new_context
from .pages import page_errors, paste

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

pytestmark = [pytest.mark.e2e, pytest.mark.browser]
browser = chromium.browser

SERVER = "http://127.0.0.1:8585"
DOCS = ("getting-started.md", "providers.md", "publishers.md")
LINK_RE = re.compile(r"(?:https?://[^\s)`'\"<>]*)?/(?:v2|build)/[a-z]+/[^\s)`'\"]+")


def docs_links() -> list[str]:
    """Every launch link written in the docs people read first."""
    found: list[str] = []
    for name in DOCS:
        for link in LINK_RE.findall((ROOT / "docs" / name).read_text()):
            link = link.rstrip(".,;:")
            if "<" not in link and "…" not in link and link not in found:
                found.append(link if link.startswith("http") else SERVER + link)
    return found


PASTED = [
    "gh/binder-examples/requirements/HEAD",
    "https://github.com/binder-examples/requirements",
    "https://github.com/org/repo.git",
    "https://github.com/org/repo/tree/dev",
    "https://github.com/org/repo/blob/main/notebooks/intro.ipynb",
    "github.com/org/repo",
    "https://gitlab.com/group/sub/project",
    "https://gitlab.com/group/project/-/tree/v1.0",
    "https://gitlab.com/group/project/-/blob/main/a.ipynb",
    "https://gist.github.com/jdoe/8f9c1b2a3d4e5f60718293a4b5c6d7e8",
    "https://codeberg.org/org/repo.git",
    "https://zenodo.org/records/3242074",
    "https://doi.org/10.5281/zenodo.3242074",
    "doi:10.6084/m9.figshare.9782777.v1",
    "https://figshare.com/articles/dataset/title/9782777/1",
    "https://www.hydroshare.org/resource/8b826c43f55043f583c85ae312a8894f/",
    "https://dataverse.harvard.edu/dataset.xhtml?persistentId=doi:10.7910/DVN/TJCLKP",
    "https://mybinder.org/v2/gh/org/repo/main?labpath=index.ipynb",
    "https://mybinder.org/v2/gl/group%2Fproject/v1.0?urlpath=lab/tree/a.ipynb",
    "https://mybinder.org/repo/org/repo",
    "git@github.com:org/repo.git",
    "git@gitlab.com:group/project.git",
    "ssh://git@github.com/org/repo.git",
    "/home/me/repo",
    "~/repo",
    "./examples/hello",
]
GARBAGE = [
    "git@codeberg.org:org/repo.git",
    "git//home/me/repo/HEAD",
    "git/https://codeberg.org/org/repo.git/main",
    "https://example.org/",
    "ftp://example.org/repo",
    "https://mybinder.org/v2/",
    "nope://x/y/z",
]
INPUTS = docs_links() + PASTED + GARBAGE
#: Typed letter by letter (not pasted): the page reads them when typing pauses.
TYPED = ["https://mybinder.org/v2/gh/org/repo/main?labpath=a.ipynb",
         "gh/binder-examples/requirements/HEAD", "git@github.com:org/repo.git",
         "git//home/me/repo/HEAD"]

Outcome = tuple[Any, ...] | str


def offline_registry() -> ProviderRegistry:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise AssertionError(f"offline parsing used the network: {request.url}")

    return ProviderRegistry(Settings(), httpx.Client(transport=httpx.MockTransport(refuse)))


REGISTRY = offline_registry()


def meaning(link: str) -> Outcome:
    """What a link launches, in words that do not depend on how it is spelt."""
    try:
        result = resolve_link(link, REGISTRY, server=SERVER, offline=True, cwd=str(ROOT))
    except BinderlessError:
        return "refused"
    repo, _ref = split_spec(result["provider"], result["spec"])
    return (result["provider"], repo, result["repo_url"], result["ref"] or "",
            result["urlpath"])


def by_launch(text: str) -> Outcome:
    try:
        _base, spec, urlpath = parse_target(text, SERVER, cwd=str(ROOT))
    except BadLink:
        return "refused"
    outcome = meaning(spec)
    return outcome if outcome == "refused" else (*outcome[:4], urlpath)


def by_resolve_command(text: str, capsys: pytest.CaptureFixture[str]) -> Outcome:
    """``binderless resolve --offline TEXT``, run in this process (one process per input
    would take a minute); its JSON's launch_url read back."""
    with contextlib.suppress(SystemExit), contextlib.chdir(ROOT):
        cli_main(["resolve", "--offline", "--server", SERVER, text])
    out = capsys.readouterr().out
    if not out.strip():
        return "refused"
    result = json.loads(out)
    repo, _ref = split_spec(result["provider"], result["spec"])
    return (result["provider"], repo, result["repo_url"], result["ref"] or "",
            result["urlpath"])


READ_JS = """() => {
    const link = document.getElementById('link').textContent;
    const error = document.getElementById('repo-error');
    return link.startsWith('Reading') ? null : {link, error: error.hidden ? '' : error.textContent};
}"""


def read_page(page: Page) -> dict[str, str]:
    handle = page.wait_for_function(READ_JS, timeout=10_000)
    value: dict[str, str] = handle.json_value()
    return value


def by_home_page(page: Page, text: str, *, typed: bool = False) -> Outcome:
    page.locator("#provider").select_option("gh")
    page.locator("#ref").fill("HEAD")  # a typed address keeps a ref and path it does not name
    page.locator("#path").fill("")
    page.locator("#repo").fill("")
    if typed:
        page.locator("#repo").focus()
        page.keyboard.type(text, delay=5)
    else:
        paste(page, "#repo", text)
    shown = read_page(page)
    if shown["error"]:
        return "refused"
    return meaning(shown["link"])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = start_server(tmp_path_factory.mktemp("links") / "state")
    try:
        yield live
    finally:
        stop_server(live)


def test_the_docs_links_are_all_in_the_table() -> None:
    assert len(docs_links()) >= 40  # the regex still finds them


def test_home_page_launch_and_resolve_agree(browser: Browser, server: LiveServer,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    context = new_context(browser, DESKTOP)
    refused_hosts = guard_network(context)
    page = context.new_page()
    errors = page_errors(page)
    try:
        page.goto(server.url("/"))
        disagreements = []
        for text in INPUTS:
            expected = meaning(text)
            seen = {"launch": by_launch(text), "resolve": by_resolve_command(text, capsys),
                    "home page": by_home_page(page, text)}
            if any(outcome != expected for outcome in seen.values()):
                disagreements.append((text, expected, seen))
        assert not disagreements, "\n".join(map(str, disagreements))
        for text in TYPED:
            assert by_home_page(page, text, typed=True) == meaning(text), text
        # The wrong answers of the old parsers, each seen on the page.
        paste(page, "#repo", "gh/binder-examples/requirements/HEAD")
        assert read_page(page)["link"] == server.url("/v2/gh/binder-examples/requirements/HEAD")
        paste(page, "#repo", "git//home/me/repo/HEAD")
        assert "git/%2Fhome%2Fme%2Frepo/HEAD" in read_page(page)["error"]
        paste(page, "#repo", "git@codeberg.org:org/repo.git")
        assert "https://codeberg.org/org/repo" in read_page(page)["error"]
        assert not refused_hosts, refused_hosts
        # A refused address is a 400 from /api/resolve, which Chromium logs; nothing else.
        assert not [e for e in errors if "status of 400" not in e], errors
    finally:
        context.close()
    # Every input was read: not all refused, not all accepted.
    outcomes = [meaning(text) for text in INPUTS]
    assert outcomes.count("refused") == len(GARBAGE)
