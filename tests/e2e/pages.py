"""Helpers for the launch-page browser tests: a module-scoped server, gated fixture
repositories, and a recorder of what the loading page shows as a launch goes on."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..conftest import FIXTURE_REPOS, git

if TYPE_CHECKING:
    from playwright.sync_api import Page

__all__ = ["GatedRepo", "Recorder", "gated_repo", "page_errors", "paste", "scroll_width"]

# Reports what the loading page shows (state, phase, status, title, favicon, estimate,
# progress) each time one of them changes, so that the sequence survives the redirect.
RECORD_LOADING = """
if (location.pathname.startsWith("/v2/")) {
  document.addEventListener("DOMContentLoaded", () => {
    const $ = (id) => document.getElementById(id);
    const pick = () => ({
      state: $("launch").dataset.state || "",
      phase: $("launch").dataset.phase || "",
      status: $("status").textContent,
      title: document.title,
      favicon: $("favicon").getAttribute("href"),
      estimate: $("estimate").hidden ? "" : $("estimate").textContent,
      progress: $("progress").getAttribute("aria-valuenow"),
    });
    const report = () => window.recordLoading(pick());
    report();
    const watch = (node, options) => new MutationObserver(report).observe(node, options);
    const text = { childList: true, characterData: true, subtree: true };
    watch($("launch"), { attributes: true, attributeFilter: ["data-state", "data-phase"] });
    watch($("status"), text);
    watch($("estimate"), { ...text, attributes: true, attributeFilter: ["hidden"] });
    watch($("progress"), { attributes: true, attributeFilter: ["aria-valuenow"] });
    watch($("favicon"), { attributes: true, attributeFilter: ["href"] });
    watch(document.querySelector("title"), text);
  });
}
"""

PASTE = """(field, text) => {
  const data = new DataTransfer();
  data.setData("text/plain", text);
  field.focus();
  field.dispatchEvent(new ClipboardEvent("paste", {clipboardData: data, bubbles: true,
                                                   cancelable: true}));
}"""


class Recorder:
    """Everything the loading page of ``page`` showed, in order (repeats dropped)."""

    def __init__(self, page: Page) -> None:
        self.seen: list[dict[str, Any]] = []
        page.expose_function("recordLoading", self._record)
        page.add_init_script(RECORD_LOADING)

    def _record(self, shown: dict[str, Any]) -> None:
        if not self.seen or self.seen[-1] != shown:
            self.seen.append(shown)

    def values(self, key: str) -> list[Any]:
        out: list[Any] = []
        for shown in self.seen:
            if not out or out[-1] != shown[key]:
                out.append(shown[key])
        return out


def page_errors(page: Page) -> list[str]:
    """Uncaught exceptions and console errors of ``page``."""
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    return errors


def paste(page: Page, selector: str, text: str) -> None:
    """A real paste event into a field, as the browser fires it for Ctrl+V."""
    page.locator(selector).evaluate(PASTE, text)


def scroll_width(page: Page) -> int:
    return int(page.evaluate("document.documentElement.scrollWidth"))


@dataclass(frozen=True)
class GatedRepo:
    path: Path
    gate: Path

    def release(self) -> None:
        """Let the build go on past its second step."""
        self.gate.touch()


def gated_repo(root: Path, name: str) -> GatedRepo:
    """The python-requirements fixture plus a ``postBuild`` that prints ``Step 1/3`` and a
    coloured ``Step 2/3``, then waits until the test touches its gate file (at most 5
    minutes) before ``Step 3/3``. Each name is its own environment."""
    dest = root / name
    gate = root / f"{name}.gate"
    root.mkdir(parents=True, exist_ok=True)
    shutil.copytree(FIXTURE_REPOS / "python-requirements", dest)
    script = dest / "postBuild"
    script.write_text(
        "#!/bin/bash\n"
        "echo 'Step 1/3 : preparing the data'\n"
        "printf '\\033[1;32mStep 2/3 : waiting for the test to let the build go on\\033[0m\\n'\n"
        f"for _ in $(seq 3000); do [ -e '{gate}' ] && break; sleep 0.1; done\n"
        "echo 'Step 3/3 : done'\n")
    script.chmod(0o755)
    git("init", "-q", "-b", "main", cwd=dest)
    git("add", "-A", cwd=dest)
    git("commit", "-q", "-m", "fixture", cwd=dest)
    return GatedRepo(dest, gate)
