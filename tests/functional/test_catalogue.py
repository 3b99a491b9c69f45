"""The environment catalogue over real launches: sizes and usage as recorded, pruning by
budget (least recently launched first, never one in use), the rule that keeps a launch's
environment while a prune runs, the size budget after builds, the CLI agreeing with the
core, and git mirrors and saved checkouts.

The launch flow is the real one (SQLite, providers, the service); the builder writes real
folders where the uv builder keeps its environments, of sizes the test chooses."""

from __future__ import annotations

import asyncio
import io
import json
import os
import sqlite3
import time
from pathlib import Path

import pytest

from binderless.backends.protocols import ImageRef, LogSink
from binderless.backends.sqlite import Database, SqliteStore
from binderless.catalogue import (
    UV_MARKER,
    Catalogue,
    NotInCatalogue,
    UvEnvironments,
    git_mirrors,
    parse_age,
    parse_size,
    saved_checkouts,
)
from binderless.catalogue_cli import run as run_cli
from binderless.cli import build_parser
from binderless.envplan import EnvironmentPlan
from binderless.errors import BadLink
from binderless.phases import Phase
from binderless.settings import Settings
from tests.conftest import FIXTURE_REPOS, file_spec, make_git_repo
from tests.functional.launch_fakes import FakeBuilder, Gate, Rig

PAYLOAD = 1000


class DiskBuilder(FakeBuilder):
    """Builds ``<state>/envs/<key>/`` as the uv builder lays it out: a payload of
    ``PAYLOAD`` bytes and the marker written last; finds only what is on disk."""

    def __init__(self, gate: Gate, envs: Path) -> None:
        super().__init__(gate)
        self.envs = envs
        self.builds: list[str] = []

    def expected_size(self, key: str) -> int:
        return PAYLOAD + len(key + "\n")

    async def find(self, plan: EnvironmentPlan) -> ImageRef | None:
        found = (self.envs / plan.key / UV_MARKER).is_file()
        return ImageRef(plan.key, f"local-env:{plan.key}", "") if found else None

    async def build(self, plan: EnvironmentPlan, checkout: Path, log: LogSink) -> ImageRef:
        await self.gate.pass_through()
        folder = self.envs / plan.key
        folder.mkdir(parents=True)
        (folder / "payload").write_bytes(b"x" * PAYLOAD)
        (folder / UV_MARKER).write_text(plan.key + "\n")
        self.builds.append(plan.key)
        return ImageRef(plan.key, f"local-env:{plan.key}", str(folder))


def rig_with_disk(tmp_path: Path, **settings: object) -> tuple[Rig, DiskBuilder]:
    # The uv builder: with an engine answering (dev.py test), auto's catalogue would list,
    # and its budget prune remove, the engine's images too.
    rig = Rig(tmp_path, **{"builder": "uv", **settings})
    builder = DiskBuilder(rig.builds, rig.service.settings.state_dir / "envs")
    rig.builder = builder
    rig.service.builder = builder
    return rig, builder


def specs(tmp_path: Path, count: int) -> list[str]:
    return [file_spec(make_git_repo(FIXTURE_REPOS / "python-requirements",
                                    tmp_path / f"repo-{i}")) for i in range(count)]


def catalogue_of(rig: Rig, grace: float = 0.0) -> Catalogue:
    """The catalogue over the rig's state; ``grace`` 0: the test's own recent launches do
    not count as holding their environments (their sessions still do)."""
    store = rig.service.store
    assert isinstance(store, SqliteStore)
    return Catalogue(UvEnvironments(rig.service.settings.state_dir / "envs"), store,
                     grace=grace)


async def launch(rig: Rig, spec: str, *, stop: bool = True) -> tuple[str, str]:
    """Launch ``spec`` to ``ready``; returns (environment key, session id)."""
    launch_id = rig.launch(spec)
    final = await rig.final(launch_id)
    assert final.phase is Phase.READY, final.message
    record = rig.service.store.get_launch(launch_id) or {}
    if stop:
        await rig.service.stop_session(record["session_id"], reason="idle")
    return str(record["image_key"]), str(record["session_id"])


def age_holds(rig: Rig, seconds: float = 3600.0) -> None:
    """Make every launch's hold ``seconds`` older, as if time had passed since."""
    store = rig.service.store
    assert isinstance(store, SqliteStore)
    with store.db.transaction() as cur:
        cur.execute("UPDATE environments SET held_at = held_at - ?", (seconds,))


def cli(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    args = build_parser().parse_args(["environments", *argv])
    # The uv builder only: with an engine answering (dev.py test), auto would list its
    # images too.
    return run_cli(args, out=out, environ={"BINDERLESS_BUILDER": "uv"}), out.getvalue()


def test_the_catalogue_lists_what_was_built_with_sizes_and_usage(tmp_path: Path) -> None:
    rig, builder = rig_with_disk(tmp_path)
    first, second = specs(tmp_path, 2)

    async def scenario() -> tuple[str, str]:
        async with rig.running():
            a, _ = await launch(rig, first)
            await launch(rig, first)
            b, _ = await launch(rig, second)
            return a, b

    a, b = asyncio.run(scenario())
    assert builder.builds == [a, b]  # the second launch of the first found it built
    entries = {e.key: e for e in catalogue_of(rig).list()}
    assert set(entries) == {a, b}
    assert entries[a].size_bytes == builder.expected_size(a)
    assert entries[a].launches == 2 and entries[b].launches == 1
    assert entries[a].built_at is not None and entries[a].last_launched_at is not None
    assert entries[a].last_launched_at < entries[b].last_launched_at  # type: ignore[operator]
    (use,) = entries[a].repos
    assert use.repo_url.endswith("repo-0") and use.launches == 2 and len(use.ref) == 40
    assert not entries[a].in_use

    status, printed = cli("--state-dir", str(rig.service.settings.state_dir), "list", "--json")
    assert status == 0
    listed = {item["key"]: item for item in json.loads(printed)}
    assert set(listed) == {a, b}
    for key, entry in entries.items():
        for field in ("size_bytes", "built_at", "last_launched_at", "launches"):
            assert listed[key][field] == getattr(entry, field)
        assert [r["repo_url"] for r in listed[key]["repos"]] == [r.repo_url for r in entry.repos]
    status, shown = cli("--state-dir", str(rig.service.settings.state_dir), "show", a)
    assert status == 0 and "2 launches" in shown and use.repo_url in shown


def test_prune_by_budget_removes_the_least_recently_launched_first_never_one_in_use(
        tmp_path: Path) -> None:
    rig, builder = rig_with_disk(tmp_path)
    a_spec, b_spec, c_spec, d_spec = specs(tmp_path, 4)

    async def scenario() -> None:
        async with rig.running():
            a, _ = await launch(rig, a_spec)
            b, running = await launch(rig, b_spec, stop=False)  # b stays in use
            c, _ = await launch(rig, c_spec)
            d, _ = await launch(rig, d_spec)
            await launch(rig, a_spec)  # a: built first, launched last
            catalogue = catalogue_of(rig)
            size = builder.expected_size(a)
            report = catalogue.prune(budget=size * 5 // 2)
            # least recently launched first: b (in use, kept), then c, then d; a stays.
            assert [item["key"] for item in report.removed] == [c, d]
            assert [(item["key"], item["reason"]) for item in report.kept] == [
                (b, "1 session running")]
            assert {e.key for e in catalogue.list()} == {a, b}
            assert not (builder.envs / c).exists() and (builder.envs / b).is_dir()
            # A launch of a pruned environment builds it again.
            await launch(rig, c_spec)
            assert builder.builds.count(c) == 2
            await rig.service.stop_session(running, reason="idle")

    asyncio.run(scenario())


def test_a_launch_and_a_prune_never_share_an_environment(tmp_path: Path) -> None:
    """Either the prune sees the launch's hold and keeps it, or the launch sees the prune's
    mark, waits for it to end, and builds the environment again."""
    rig, builder = rig_with_disk(tmp_path)
    (spec,) = specs(tmp_path, 1)
    store = rig.service.store
    assert isinstance(store, SqliteStore)

    async def scenario() -> None:
        async with rig.running():
            key, _ = await launch(rig, spec)
            # Held a moment ago by that launch: a prune with a grace period keeps it.
            now = rig.service.clock()
            assert store.begin_prune(key, now, grace=60) == "a launch started using it moments ago"
            # A prune that marks it first: the next launch waits for it ...
            assert store.begin_prune(key, now + 120, grace=60) == ""
            assert not store.hold_environment(key, now + 121)
            second = rig.launch(spec)
            await asyncio.sleep(0.5)
            notes = [e.message for e in rig.events(second)]
            assert any("being removed" in m for m in notes)
            assert rig.service.store.get_launch(second)["phase"] != "ready"  # type: ignore[index]
            # ... and once the prune has removed it, builds it again.
            UvEnvironments(builder.envs).remove(key)
            store.end_prune(key, removed=True)
            final = await rig.final(second)
            assert final.phase is Phase.READY
            assert builder.builds == [key, key]

    asyncio.run(scenario())


def test_a_size_budget_prunes_after_each_build(tmp_path: Path) -> None:
    rig, builder = rig_with_disk(tmp_path, environment_budget_bytes=PAYLOAD * 2 + 60)
    first, second, third = specs(tmp_path, 3)
    assert rig.service.after_build is not None

    async def scenario() -> list[str]:
        async with rig.running():
            keys = [(await launch(rig, spec))[0] for spec in (first, second)]
            await launch(rig, first)  # the first is now the most recently launched
            age_holds(rig)
            keys.append((await launch(rig, third))[0])  # over the budget: the second goes
            for _ in range(200):  # the prune runs in the background after the build
                if not (builder.envs / keys[1]).exists():
                    break
                await asyncio.sleep(0.05)
            return keys

    a, _b, c = asyncio.run(scenario())
    assert {e.key for e in catalogue_of(rig).list()} == {a, c}


def test_one_by_one_and_unknown_keys(tmp_path: Path) -> None:
    rig, _builder = rig_with_disk(tmp_path)
    (spec,) = specs(tmp_path, 1)

    async def scenario() -> str:
        async with rig.running():
            return (await launch(rig, spec))[0]

    key = asyncio.run(scenario())
    state = str(rig.service.settings.state_dir)
    status, _ = cli("--state-dir", state, "prune", "0" * 20)
    assert status == 1
    # Launched a moment ago: the CLI (with the server's grace period) keeps it.
    status, printed = cli("--state-dir", state, "prune", key, "--json")
    assert status == 0 and json.loads(printed)["kept"][0]["key"] == key
    age_holds(rig)
    status, printed = cli("--state-dir", state, "prune", key, "--json")
    assert status == 0 and [i["key"] for i in json.loads(printed)["removed"]] == [key]
    assert json.loads(cli("--state-dir", state, "list", "--json")[1]) == []
    with pytest.raises(NotInCatalogue):
        catalogue_of(rig).show(key)


def test_the_new_tables_are_added_to_an_existing_database(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as old:
        old.execute("CREATE TABLE sessions (session_id TEXT PRIMARY KEY, image_key TEXT, "
                    "status TEXT)")
        old.execute("INSERT INTO sessions VALUES ('s1', 'k1', 'running')")
    store = SqliteStore(Database(path))
    assert store.hold_environment("k1", 10.0)
    store.note_environment("k1", 11.0, repo_url="https://example.org/r", ref="abc")
    (record,) = store.environment_records()
    assert (record.launches, record.last_launched_at) == (1, 11.0)
    assert store.begin_prune("k1", 500.0, grace=60) == "1 session running"


def test_units() -> None:
    assert parse_size("10G") == 10 * 1024**3
    assert parse_size("500M") == 500 * 1024**2
    assert parse_size("1536") == 1536
    assert parse_age("30d") == 30 * 86400
    assert parse_age("12h") == 12 * 3600
    assert parse_age("2") == 2 * 86400
    for bad in ("ten", "10X", "-1G"):
        with pytest.raises(BadLink):
            parse_size(bad)
    with pytest.raises(BadLink):
        parse_age("30 days")


def test_git_mirrors_and_saved_checkouts(tmp_path: Path) -> None:
    rig, _builder = rig_with_disk(tmp_path)
    spec_a, spec_b = specs(tmp_path, 2)
    state = rig.service.settings.state_dir
    store = rig.service.store
    assert isinstance(store, SqliteStore)

    async def scenario() -> None:
        async with rig.running():
            _, stopped = await launch(rig, spec_a)
            _, running = await launch(rig, spec_b, stop=False)
            # Signed-in users' sessions leave their folders; here, one of each kind by hand.
            for session in (stopped, running):
                (state / "sessions" / session / "home").mkdir(parents=True, exist_ok=True)
                (state / "sessions" / session / "home" / "work.txt").write_bytes(b"w" * 300)
            checkouts = saved_checkouts(state / "sessions", store)
            listed = {c.key: c for c in checkouts.list()}
            assert listed[stopped].size_bytes == 300 and not listed[stopped].in_use
            assert listed[running].in_use
            report = checkouts.prune(budget=0)
            assert [i["key"] for i in report.removed] == [stopped]
            assert (state / "sessions" / running).is_dir()

    asyncio.run(scenario())
    mirror = state / "repos" / "0123456789abcdef.git"
    mirror.mkdir(parents=True)
    (mirror / "config").write_text("[remote \"origin\"]\n\turl = https://example.org/r.git\n")
    (mirror / "packed-refs").write_bytes(b"p" * 200)
    mirrors = git_mirrors(state / "repos", store)
    (entry,) = mirrors.list()
    assert entry.detail == "https://example.org/r.git"
    assert entry.size_bytes == len((mirror / "config").read_bytes()) + 200
    assert mirrors.prune(older_than=3600).removed == []  # used just now
    assert [i["key"] for i in mirrors.prune(keys=[entry.key]).removed] == [entry.key]
    assert not mirror.exists()


# ----- the uv builder's cache -------------------------------------------------------------

def uv_cache_rig(tmp_path: Path) -> tuple[Catalogue, Path, Path]:
    """Two uv environments (2000 and 3000 bytes) and a real uv cache in the place the
    server's uv builder keeps it: made by uv itself, with a dangling entry ``uv cache
    prune`` drops (an unreferenced archive) and a file an environment links to."""
    import subprocess

    from binderless.backends.uvbuilder import UvBuilder, uv_binary
    from binderless.catalogue import local_catalogues

    settings = Settings(state_dir=tmp_path / "state", builder="uv")
    builder = UvBuilder(settings)
    cache = builder.cache_dir
    subprocess.run([uv_binary(), "venv", "-q", "--cache-dir", str(cache), str(tmp_path / "v")],
                   check=True, capture_output=True)
    store = SqliteStore(Database(settings.db_path))
    for n, size in ((1, 2000), (2, 3000)):
        env = settings.state_dir / "envs" / (str(n) * 20)
        env.mkdir(parents=True)
        (env / "payload").write_bytes(b"x" * size)
        (env / UV_MARKER).write_text("")
        store.note_environment(str(n) * 20, time.time() - 300.0 + 100.0 * n, built=True)
    dangling = cache / "archive-v0" / "0123456789abcdef"
    dangling.mkdir(parents=True)
    (dangling / "module.py").write_bytes(b"d" * 4000)
    (cache / "wheels-v5").mkdir(exist_ok=True)
    os.link(settings.state_dir / "envs" / ("2" * 20) / "payload", cache / "wheels-v5" / "linked")
    found = local_catalogues(settings.state_dir, store, builder=builder)
    assert found.cache is not None and found.cache.path == cache
    found.environments.grace = 0.0
    return found.environments, cache, dangling


def test_the_uv_cache_is_counted_apart_and_trimmed_after_a_prune(tmp_path: Path) -> None:
    catalogue, cache, dangling = uv_cache_rig(tmp_path)
    assert catalogue.cache is not None
    entry = catalogue.cache.entry()
    # Only what the cache alone holds (the linked payload is the environment's) ...
    alone = sum(f.stat().st_size for f in cache.rglob("*") if f.is_file()
                and not f.is_symlink() and f.stat().st_nlink == 1)
    assert entry.size_bytes == alone >= 4000 and "2.9 KiB more shared" in entry.detail
    # ... and it is no environment.
    assert [e.key for e in catalogue.list()] == ["2" * 20, "1" * 20]

    nothing = catalogue.prune(older_than=3600.0)  # removes nothing: the cache is left alone
    assert nothing.removed == [] and nothing.cache == "" and dangling.exists()

    report = catalogue.prune(keys=["1" * 20])  # removed one: uv cache prune
    assert report.cache == "pruned" and report.cache_freed_bytes >= 4000
    assert not dangling.exists() and (cache / "CACHEDIR.TAG").exists()
    # what an environment links from the cache stays whole in the environment
    assert (cache.parent.parent / "envs" / ("2" * 20) / "payload").read_bytes() == b"x" * 3000


def test_over_the_budget_with_its_cache_the_cache_is_emptied(tmp_path: Path) -> None:
    catalogue, cache, _dangling = uv_cache_rig(tmp_path)
    # The younger environment (3000 bytes) fits the budget once the older goes; with the
    # cache's own files (tens of bytes even once trimmed) it would not: the cache is
    # emptied, and the environment survives.
    report = catalogue.prune(budget=3010)
    assert [i["key"] for i in report.removed] == ["1" * 20]
    assert report.cache == "emptied"
    assert not [p for p in cache.rglob("*") if p.is_file() and p.name != ".lock"]
    assert (tmp_path / "state" / "envs" / ("2" * 20) / "payload").read_bytes() == b"x" * 3000
    status, printed = cli("--state-dir", str(tmp_path / "state"), "list")
    assert status == 0 and f"uv cache: 0 B in {cache}" in printed
