"""The docker builder's images in the environment catalogue, against the fake engine
(``tests/fixtures/fake-docker/docker``): listed beside uv environments with the size and
creation time Docker reports and the usage the store recorded; pruned with ``docker image
rm``, least recently launched first, never one a container uses (running or stopped), and
never an image that is not this server's (another prefix, or no label)."""

from __future__ import annotations

import asyncio
import io
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from binderless.backends.docker import DockerBuilder
from binderless.backends.docker_images import ENVIRONMENT_LABEL, DockerImages
from binderless.backends.sqlite import Database, SqliteStore
from binderless.catalogue import UV_MARKER, Catalogue, Storages, UvEnvironments, local_catalogues
from binderless.catalogue_cli import run as run_cli
from binderless.cli import build_parser
from binderless.errors import BinderlessError
from binderless.settings import Settings

FAKE_DOCKER = Path(__file__).resolve().parents[1] / "fixtures" / "fake-docker"
KEYS = ("a" * 24, "b" * 24, "c" * 24, "d" * 24)
SIZES = {KEYS[0]: 5_000_000, KEYS[1]: 7_000_000, KEYS[2]: 3_000_000, KEYS[3]: 4_000_000}


class Engine:
    """The fake engine's files: images (with labels and sizes) and containers."""

    def __init__(self, state: Path) -> None:
        self.state = state
        self.log = state / "calls.jsonl"

    def add_image(self, name: str, *, size: int, labels: dict[str, str]) -> None:
        with (self.state / "images.txt").open("a") as f:
            f.write(name + "\n")
        meta_path = self.state / "images.json"
        meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
        meta[name] = {"labels": labels, "size": size, "created": "2026-04-01T10:00:00.5Z"}
        meta_path.write_text(json.dumps(meta))

    def images(self) -> set[str]:
        return {line for line in (self.state / "images.txt").read_text().splitlines() if line}

    def run(self, image: str, name: str, *, keep: bool = False) -> None:
        """A container of ``image`` (``keep``: without ``--rm``, so stopping keeps it)."""
        import subprocess

        subprocess.run(["docker", "run", "-d", *([] if keep else ["--rm"]), "--name", name,
                        image, "sleep"], check=True, capture_output=True)

    def stop(self, name: str) -> None:
        import subprocess

        subprocess.run(["docker", "stop", name], check=True, capture_output=True)

    def calls(self, *prefix: str) -> list[list[str]]:
        calls = [json.loads(line) for line in self.log.read_text().splitlines()]
        return [c for c in calls if c[: len(prefix)] == list(prefix)]


@pytest.fixture
def engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Engine:
    state = tmp_path / "fake-docker"
    state.mkdir()
    (state / "images.txt").write_text("")
    monkeypatch.setenv("PATH", f"{FAKE_DOCKER}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_DOCKER_LOG", str(state / "calls.jsonl"))
    monkeypatch.setenv("FAKE_DOCKER_IMAGES", str(state / "images.txt"))
    monkeypatch.setenv("FAKE_DOCKER_STATE", str(state))
    for name in ("DOCKER_HOST", "FAKE_DOCKER_FAIL_BUILD", "FAKE_DOCKER_DOWN", "FAKE_DOCKER_HANG",
                 "FAKE_DOCKER_IMAGE_SIZE"):
        monkeypatch.delenv(name, raising=False)
    return Engine(state)


def seeded(engine: Engine, tmp_path: Path) -> tuple[Catalogue, SqliteStore, Path]:
    """Four images of this server (launched last: a, then d, then b, then c), one uv
    environment, and images the catalogue must never list: another prefix's, and one of
    this prefix without the label."""
    for key in KEYS:
        engine.add_image(f"binderless/env:{key}", size=SIZES[key],
                         labels={ENVIRONMENT_LABEL: key})
    engine.add_image("other/env:" + "e" * 24, size=9, labels={ENVIRONMENT_LABEL: "e" * 24})
    engine.add_image("binderless/env:handmade", size=9, labels={})
    state = tmp_path / "state"
    uv = state / "envs" / ("f" * 24)
    uv.mkdir(parents=True)
    (uv / "payload").write_bytes(b"x" * 2000)
    (uv / UV_MARKER).write_text("done\n")
    store = SqliteStore(Database(state / "binderless.sqlite3"))
    for when, key in ((400.0, KEYS[0]), (100.0, KEYS[1]), (50.0, KEYS[2]), (300.0, KEYS[3]),
                      (200.0, "f" * 24)):
        store.note_environment(key, when - 10, built=True, files=("environment.yml",))
        store.note_environment(key, when, repo_url=f"https://example.org/{key[0]}",
                               ref=key[0] * 40)
    catalogue = Catalogue(Storages(UvEnvironments(state / "envs"), DockerImages("binderless/")),
                          store, grace=0.0)
    return catalogue, store, state


def test_images_are_listed_with_docker_sizes_and_recorded_usage(engine: Engine,
                                                                tmp_path: Path) -> None:
    catalogue, _store, _state = seeded(engine, tmp_path)
    listed = catalogue.list()
    entries = {e.key: e for e in listed}
    assert set(entries) == {*KEYS, "f" * 24}  # not other/, not the unlabelled one
    for key in KEYS:
        entry = entries[key]
        assert entry.kind == "docker image" and entry.name == f"binderless/env:{key}"
        assert entry.size_bytes == SIZES[key]
        assert entry.launches == 1 and entry.files == ("environment.yml",)
    assert entries["f" * 24].kind == "uv environment"
    assert entries["f" * 24].size_bytes == 2000 + len("done\n")
    # the listing's order: most recently launched first, both kinds together
    assert [e.key for e in listed] == [KEYS[0], KEYS[3], "f" * 24, KEYS[1], KEYS[2]]
    assert entries[KEYS[0]].built_at == 390.0  # the store's record of the build
    assert not any(e.in_use for e in listed)


def test_prune_by_budget_removes_least_recent_images_never_one_a_container_uses(
        engine: Engine, tmp_path: Path) -> None:
    catalogue, _store, _state = seeded(engine, tmp_path)
    engine.run(f"binderless/env:{KEYS[2]}", "binderless-5e551")  # c: running
    engine.run(f"binderless/env:{KEYS[1]}", "left-behind", keep=True)  # b: a stopped one
    engine.stop("left-behind")

    # 19 MB and a bit in all; least recently launched first: c and b are used, then the
    # uv folder (2 kB) and d (4 MB) go, and the rest fits in 15 MB.
    report = catalogue.prune(budget=15_000_000)
    assert [item["key"] for item in report.removed] == ["f" * 24, KEYS[3]]
    kept = {item["key"]: item["reason"] for item in report.kept}
    assert list(kept) == [KEYS[2], KEYS[1]]
    assert kept[KEYS[2]] == "1 container running (binderless-5e551)"
    assert kept[KEYS[1]] == "1 container stopped, not removed (left-behind)"
    assert engine.calls("image", "rm") == [["image", "rm", f"binderless/env:{KEYS[3]}"]]
    assert engine.images() == {f"binderless/env:{k}" for k in KEYS[:3]} | {
        "other/env:" + "e" * 24, "binderless/env:handmade"}
    assert not (tmp_path / "state" / "envs" / ("f" * 24)).exists()


def test_the_engine_refusing_a_removal_keeps_the_image(engine: Engine, tmp_path: Path) -> None:
    """A container started after the check: ``docker image rm`` (never forced) refuses, and
    the prune reports the image kept with Docker's reason."""
    catalogue, _store, _state = seeded(engine, tmp_path)
    storage = catalogue.storage
    assert isinstance(storage, Storages)
    docker = storage.parts[1]
    assert isinstance(docker, DockerImages)
    docker.users = lambda: {}  # type: ignore[method-assign]  # the check saw no container
    engine.run(f"binderless/env:{KEYS[0]}", "raced")
    report = catalogue.prune(keys=[KEYS[0]])
    assert report.removed == []
    assert "must force" in report.kept[0]["reason"]
    assert f"binderless/env:{KEYS[0]}" in engine.images()


def test_the_cli_lists_and_prunes_images_of_a_docker_builder(engine: Engine,
                                                             tmp_path: Path) -> None:
    _catalogue, _store, state = seeded(engine, tmp_path)
    environ = {"BINDERLESS_BUILDER": "docker", "BINDERLESS_SPAWNER": "docker"}

    def cli(*argv: str) -> tuple[int, str]:
        out = io.StringIO()
        args = build_parser().parse_args(["environments", "--state-dir", str(state), *argv])
        return run_cli(args, out=out, environ=environ), out.getvalue()

    status, printed = cli("list", "--json")
    assert status == 0
    listed = {item["key"]: item for item in json.loads(printed)}
    assert {key: listed[key]["size_bytes"] for key in KEYS} == SIZES
    assert listed[KEYS[0]]["built_at"] == 390.0 and listed[KEYS[0]]["launches"] == 1
    status, printed = cli("prune", KEYS[2], "--json")
    assert status == 0 and [i["key"] for i in json.loads(printed)["removed"]] == [KEYS[2]]
    assert f"binderless/env:{KEYS[2]}" not in engine.images()


def test_an_engine_that_does_not_answer_is_said_so(engine: Engine, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    catalogue, _store, _state = seeded(engine, tmp_path)
    monkeypatch.setenv("FAKE_DOCKER_DOWN", "1")
    with pytest.raises(BinderlessError, match="Cannot connect to the Docker daemon"):
        catalogue.list()


def test_a_build_labels_its_image_and_the_server_lists_it(
        engine: Engine, tmp_path: Path, fixture_repo: Callable[[str], Path],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Through repo2docker: the image carries ``binderless.environment=<key>``, and the
    catalogue the server wires from its builder finds it with Docker's size."""
    monkeypatch.setenv("FAKE_DOCKER_IMAGE_SIZE", "123456789")
    settings = Settings(state_dir=tmp_path / "state", builder="docker", spawner="docker")
    builder = DockerBuilder(settings)
    repo = fixture_repo("python-requirements")
    plan = builder.plan(repo)
    asyncio.run(builder.build(plan, repo, lambda _line: None))
    store: Any = SqliteStore(Database(settings.db_path))
    found = local_catalogues(settings.state_dir, store, builder=builder)
    (entry,) = found.environments.list()
    assert (entry.key, entry.size_bytes, entry.kind) == (plan.key, 123456789, "docker image")
    assert entry.built_at is not None and entry.built_at > 1.7e9  # Docker's Created
    assert found.cache is None  # a docker builder keeps no uv cache
