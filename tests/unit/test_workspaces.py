"""Persistent homes: project folders seeded once, never overwritten, deleted one at a time."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from binderless.errors import ProjectNotFound, QuotaExceeded
from binderless.workspaces import Workspaces, project_name_for

REPO = "https://github.com/org/analysis"


def checkout(tmp_path: Path, name: str, files: dict[str, str]) -> Path:
    root = tmp_path / "checkouts" / name
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    (root / ".git").mkdir(exist_ok=True)
    (root / ".git" / "HEAD").write_text(name)
    return root


@pytest.fixture
def spaces(tmp_path: Path) -> Workspaces:
    return Workspaces(tmp_path / "homes", max_projects=2)


def open_project(spaces: Workspaces, source: Path, ref: str, repo: str = REPO,
                 user: str = "alice"):  # type: ignore[no-untyped-def]
    return spaces.open(user, repo_url=repo, resolved_ref=ref,
                       launch_path=f"v2/gh/{repo.split('.com/')[-1]}/HEAD", checkout=source)


def test_first_launch_seeds_the_project_and_later_ones_never_overwrite(
        spaces: Workspaces, tmp_path: Path) -> None:
    v1 = checkout(tmp_path, "v1", {"a.txt": "a1", "b.txt": "b1", "sub/c.txt": "c1",
                                   "gone.txt": "g"})
    opened = open_project(spaces, v1, "1" * 40)
    assert opened.seeded and opened.project.name == "analysis"
    project = opened.project.path
    assert project == tmp_path / "homes" / "alice" / "analysis"
    assert (project / "sub" / "c.txt").read_text() == "c1"
    assert (project / ".git" / "HEAD").read_text() == "v1"  # the user can git pull
    assert "Created your project folder 'analysis'" in opened.messages()[0]

    (project / "a.txt").write_text("my edit")
    (project / "mine.txt").write_text("my own file")
    v2 = checkout(tmp_path, "v2", {"a.txt": "a2", "b.txt": "b2", "sub/c.txt": "c1",
                                   "new.txt": "n"})
    again = open_project(spaces, v2, "2" * 40)
    assert not again.seeded
    assert (project / "a.txt").read_text() == "my edit"
    assert (project / "b.txt").read_text() == "b1"  # upstream changed it: not copied in
    assert (project / "mine.txt").read_text() == "my own file"
    assert not (project / "new.txt").exists()
    changes = again.changes
    assert changes is not None
    assert changes.changed == ("a.txt", "b.txt")
    assert changes.added == ("new.txt",)
    assert changes.removed == ("gone.txt",)
    assert changes.edited == ("a.txt",)
    summary = "".join(again.messages())
    assert "Your copy is from 111111111111; the repository is now at 222222222222" in summary
    assert "2 changed (a.txt, b.txt)" in summary and "1 added (new.txt)" in summary
    assert "You have edited 1 of them yourself: a.txt" in summary
    assert "left as they are" in summary
    listed = spaces.get("alice", "analysis")
    assert listed.seeded_ref == "1" * 40 and listed.latest_ref == "2" * 40

    # The same commit again: nothing to report.
    assert open_project(spaces, v1, "1" * 40).changes is None


def test_project_limit_counts_new_repositories_only(spaces: Workspaces, tmp_path: Path) -> None:
    source = checkout(tmp_path, "src", {"x": "1"})
    open_project(spaces, source, "a" * 40, repo="https://github.com/o/one")
    open_project(spaces, source, "a" * 40, repo="https://github.com/o/two")
    with pytest.raises(QuotaExceeded, match="You have 2 projects"):
        open_project(spaces, source, "a" * 40, repo="https://github.com/o/three")
    open_project(spaces, source, "a" * 40, repo="https://github.com/o/two")  # still fine
    # Another user has their own limit.
    open_project(spaces, source, "a" * 40, repo="https://github.com/o/three", user="bob")


def test_deleting_removes_one_project_and_nothing_else(spaces: Workspaces,
                                                       tmp_path: Path) -> None:
    source = checkout(tmp_path, "src", {"x": "1"})
    one = open_project(spaces, source, "a" * 40, repo="https://github.com/o/one").project
    two = open_project(spaces, source, "a" * 40, repo="https://github.com/o/two").project
    bobs = open_project(spaces, source, "a" * 40, repo="https://github.com/o/one",
                        user="bob").project
    spaces.delete("alice", "one")
    assert not one.path.exists()
    assert two.path.is_dir() and bobs.path.is_dir()
    assert [p.name for p in spaces.projects("alice")] == ["two"]
    assert not list((tmp_path / "homes" / "alice" / ".binderless" / "trash").iterdir())
    with pytest.raises(ProjectNotFound):
        spaces.delete("alice", "one")
    for hostile in ("../bob/one", "..", ".binderless", "", "two/../../bob"):
        with pytest.raises(ProjectNotFound):
            spaces.delete("alice", hostile)
    assert bobs.path.is_dir()
    # A new launch of the deleted repository seeds it again.
    assert open_project(spaces, source, "a" * 40, repo="https://github.com/o/one").seeded


def test_names_are_safe_and_distinct(spaces: Workspaces, tmp_path: Path) -> None:
    assert project_name_for("https://github.com/org/repo.git") == "repo"
    assert project_name_for("https://gitlab.com/group/sub/..%2F..%2Fetc") == "etc"
    assert project_name_for("file:///srv/x/My%20Notebooks") == "My-Notebooks"
    assert project_name_for("https://doi.org/10.5281/zenodo.123") == "zenodo.123"
    assert project_name_for("https://example.org/") == "example.org"
    assert project_name_for("https://example.org/...") == "project"
    source = checkout(tmp_path, "src", {"x": "1"})
    first = open_project(spaces, source, "a" * 40, repo="https://github.com/a/repo").project
    second = open_project(spaces, source, "a" * 40, repo="https://gitlab.com/b/repo").project
    assert first.name == "repo" and second.name.startswith("repo-")
    with pytest.raises(ValueError):
        spaces.home("../alice")


def test_a_seed_that_never_finished_is_seeded_again(spaces: Workspaces, tmp_path: Path) -> None:
    source = checkout(tmp_path, "src", {"x": "1"})
    project = open_project(spaces, source, "a" * 40).project
    # As if the process died after writing the record, before the folder appeared.
    record = tmp_path / "homes" / "alice" / ".binderless" / "projects" / "analysis.json"
    data = json.loads(record.read_text())
    import shutil

    shutil.rmtree(project.path)
    assert spaces.projects("alice") == []
    again = open_project(spaces, source, "a" * 40)
    assert again.seeded and again.project.name == data["name"]
    assert (again.project.path / "x").read_text() == "1"


def test_unreadable_records_are_skipped(spaces: Workspaces, tmp_path: Path) -> None:
    source = checkout(tmp_path, "src", {"x": "1"})
    open_project(spaces, source, "a" * 40)
    folder = tmp_path / "homes" / "alice" / ".binderless" / "projects"
    (folder / "broken.json").write_text("{not json")
    assert [p.name for p in spaces.projects("alice")] == ["analysis"]


def test_a_project_remembers_where_its_link_opened(spaces: Workspaces, tmp_path: Path) -> None:
    source = checkout(tmp_path, "v1", {"index.ipynb": "{}"})
    opened = spaces.open("alice", repo_url=REPO, resolved_ref="1" * 40,
                         launch_path="v2/gh/org/analysis/HEAD", checkout=source,
                         open_path="doc/tree/index.ipynb")
    assert opened.project.to_json()["launch_url"] == \
        "/v2/gh/org/analysis/HEAD?urlpath=doc/tree/index.ipynb"
    # A later launch through a plain link keeps it; one with another path replaces it.
    again = spaces.open("alice", repo_url=REPO, resolved_ref="1" * 40,
                        launch_path="v2/gh/org/analysis/HEAD", checkout=source)
    assert again.project.open_path == "doc/tree/index.ipynb"
    other = spaces.open("alice", repo_url=REPO, resolved_ref="1" * 40,
                        launch_path="v2/gh/org/analysis/HEAD", checkout=source,
                        open_path="lab/tree/data")
    assert other.project.to_json()["launch_url"].endswith("?urlpath=lab/tree/data")
