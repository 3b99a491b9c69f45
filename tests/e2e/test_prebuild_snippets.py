"""The home page's "Prebuild on push" snippets, as a publisher sees them (Chromium).

Pasting a repository's address fills in a CI job and the webhook settings for it: for
GitHub, a GitHub Actions workflow (valid YAML) that POSTs the pushed commit's link to this
server's ``/api/prebuild`` with the secret from the repository's secrets, and GitHub's
webhook form; for GitLab, a GitLab CI job and GitLab's own wording. What the jobs send is
read with the same parser ``/api/prebuild`` uses."""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest
import yaml

from binderless.links import parse_link
from binderless.local import local_service
from binderless.settings import Settings
from tests.functional.inprocess import serve_in_thread

from . import browser as chromium
from .browser import DESKTOP, guard_network, new_context, screenshot
from .pages import page_errors, paste

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

browser = chromium.browser

SHA = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    service = local_service(Settings(state_dir=tmp_path_factory.mktemp("snippets") / "state",
                                     sign_in="off", webhook_secret="s" * 32))
    with serve_in_thread(service) as base:
        yield base


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = new_context(browser, DESKTOP)
    refused = guard_network(context)
    try:
        tab = context.new_page()
        errors = page_errors(tab)
        yield tab
        assert errors == [] and refused == []
    finally:
        context.close()


def pasted(page: Page, server: str, address: str, provider: str) -> tuple[str, str]:
    """Paste ``address`` into the home page's repository field; the CI job and the webhook
    settings shown for it, as visible text."""
    page.goto(server + "/")
    paste(page, "#repo", address)
    page.wait_for_function("p => document.getElementById('provider').value === p", arg=provider)
    job = page.locator("#snippet-prebuild-actions")
    webhook = page.locator("#snippet-prebuild-webhook")
    page.wait_for_function(
        "() => document.getElementById('snippet-prebuild-actions').textContent"
        ".includes('/api/prebuild')")
    job.scroll_into_view_if_needed()
    assert job.is_visible() and webhook.is_visible()
    return job.inner_text(), webhook.inner_text()


def curl_call(command: str) -> dict[str, Any]:
    """What a shell command line sends with curl: its URL, method, headers and body."""
    words = shlex.split(command)
    start = words.index("curl")
    call: dict[str, Any] = {"headers": [], "url": "", "method": "GET", "data": None}
    args = iter(words[start + 1:])
    for word in args:
        if word == "-X":
            call["method"] = next(args)
        elif word == "-H":
            call["headers"].append(next(args))
        elif word in ("-d", "--data-binary"):
            call["data"] = next(args)
        elif word.startswith("http"):
            call["url"] = word
    return call


def test_a_github_repository_gets_a_workflow_and_githubs_webhook_settings(
        server: str, page: Page) -> None:
    job, webhook = pasted(page, server, "https://github.com/binder-examples/requirements",
                          "gh")
    workflow = yaml.safe_load(job)
    assert workflow["on"] == {"push": None}  # every push; "on" stays a key, not True
    [step] = workflow["jobs"]["prebuild"]["steps"]
    assert workflow["jobs"]["prebuild"]["runs-on"] == "ubuntu-latest"
    # The secret comes from the repository's secrets, never from the file itself.
    assert step["env"] == {
        "BINDERLESS_WEBHOOK_SECRET": "${{ secrets.BINDERLESS_WEBHOOK_SECRET }}"}
    call = curl_call(step["run"])
    assert call["method"] == "POST"
    assert call["url"] == f"{server}/api/prebuild"
    assert "Authorization: Bearer $BINDERLESS_WEBHOOK_SECRET" in call["headers"]
    assert "Content-Type: application/json" in call["headers"]
    assert "--fail-with-body" in step["run"]  # a refused prebuild fails the job
    # GitHub puts the pushed commit in; /api/prebuild reads the link like any launch link.
    body = json.loads(call["data"].replace("${{ github.sha }}", SHA))
    target = parse_link(body["link"]).target
    assert (target.provider, target.spec) == ("gh", f"binder-examples/requirements/{SHA}")

    assert webhook.splitlines() == [
        f"Payload URL:   {server}/api/prebuild",
        "Content type:  application/json",
        "Secret:        this server's webhook secret",
        "Events:        Just the push event"]
    assert page.locator("#prebuild-job-name").inner_text() == "GitHub Actions workflow"
    assert ".github/workflows/" in page.locator("#prebuild-job-where").inner_text()
    copy = page.get_by_role("button", name="Copy the GitHub Actions workflow")
    assert copy.is_enabled()
    screenshot(page, "prebuild-snippets-github")


def test_a_gitlab_repository_gets_gitlabs_job_and_wording(server: str, page: Page) -> None:
    job, webhook = pasted(page, server, "https://gitlab.com/group/sub/project", "gl")
    assert page.locator("#prebuild-job-name").inner_text() == "GitLab CI job"
    assert ".gitlab-ci.yml" in page.locator("#prebuild-job-where").inner_text()
    assert "GitHub" not in job and "Payload URL" not in webhook
    assert page.locator("#prebuild-webhook-where").inner_text() == \
        "the project's Settings, Webhooks"
    assert webhook.splitlines() == [
        f"URL:           {server}/api/prebuild",
        "Secret token:  this server's webhook secret",
        "Trigger:       Push events (and Tag push events, if you like)"]
    pipeline = yaml.safe_load(job)
    prebuild = pipeline["binderless-prebuild"]
    assert prebuild["rules"] == [{"if": '$CI_PIPELINE_SOURCE == "push"'}]
    [script] = prebuild["script"]
    call = curl_call(script)
    assert call["method"] == "POST" and call["url"] == f"{server}/api/prebuild"
    assert "Authorization: Bearer $BINDERLESS_WEBHOOK_SECRET" in call["headers"]
    assert call["data"] == "@-"  # the body comes from printf, with the pushed commit
    printf = shlex.split(script)
    assert printf[:2] == ["printf", '{"link": "%s"}']
    body = json.loads(printf[1] % printf[2].replace("$CI_COMMIT_SHA", SHA))
    target = parse_link(body["link"]).target
    assert (target.provider, target.spec) == ("gl", f"group%2Fsub%2Fproject/{SHA}")
    assert page.get_by_role("button", name="Copy the GitLab CI job").is_enabled()
    screenshot(page, "prebuild-snippets-gitlab")


def test_sources_without_pushes_get_no_prebuild_snippet(server: str, page: Page) -> None:
    page.goto(server + "/")
    page.locator("#provider").select_option("zenodo")
    page.locator("#repo").fill("10.5281/zenodo.3242074")
    job = page.locator("#snippet-prebuild-actions")
    assert "prebuilds are for GitHub, GitLab and git repositories" in job.inner_text()
    assert page.locator("#prebuild-job-copy").is_disabled()
