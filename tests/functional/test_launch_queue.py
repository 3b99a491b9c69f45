"""Builds and server starts past their caps wait in a queue and are told their place in it;
a cancelled launch leaves the queue; an anonymous session's files go when it ends.

The launch flow is the real one (SQLite, providers, the service); the fetcher, builder and
spawner are stand-ins held at gates (``launch_fakes``), so that the test decides when a
build or a start finishes."""

from __future__ import annotations

import asyncio
from pathlib import Path
from urllib.parse import unquote

from binderless.phases import Phase
from binderless.service import queue_message
from tests.conftest import FIXTURE_REPOS, file_spec, make_git_repo
from tests.functional.launch_fakes import Gate, Rig, until


def repos(tmp_path: Path, count: int) -> list[str]:
    """``count`` repositories (each its own environment for the fake builder)."""
    source = make_git_repo(FIXTURE_REPOS / "python-requirements", tmp_path / "repo-0")
    specs = [file_spec(source)]
    for i in range(1, count):
        specs.append(file_spec(make_git_repo(FIXTURE_REPOS / "python-requirements",
                                             tmp_path / f"repo-{i}")))
    return specs


def _checkout(tmp_path: Path, spec: str) -> Path:
    """A folder the fake builder plans like the checkout of ``spec``."""
    folder = tmp_path / "plan-of"
    folder.mkdir(exist_ok=True)
    (folder / "repo.txt").write_text(unquote(spec.split("/")[1]))
    return folder


def test_queue_messages_read_well() -> None:
    assert queue_message("build", 0) == "Waiting for a free build slot: this launch is next...\n"
    assert queue_message("start", 1) == (
        "Waiting for a free start slot: 1 launch ahead of this one...\n")
    assert queue_message("build", 3) == (
        "Waiting for a free build slot: 3 launches ahead of this one...\n")


def test_builds_past_the_cap_wait_in_order_and_are_told_their_place(tmp_path: Path) -> None:
    a, b, c = repos(tmp_path, 3)
    rig = Rig(tmp_path, max_concurrent_builds=1)
    rig.builds = rig.builder.gate = gate = Gate(open_=False)

    async def scenario() -> None:
        async with rig.running():
            first = rig.launch(a)
            await until(lambda: gate.inside == 1)
            second = rig.launch(b)
            await until(lambda: len(rig.queue_notes(second)) == 1)
            third = rig.launch(c)
            await until(lambda: len(rig.queue_notes(third)) == 1)
            assert gate.inside == 1  # the others wait for a slot, not inside a build
            gate.let()
            assert (await rig.final(first)).phase is Phase.READY
            await until(lambda: len(rig.queue_notes(third)) == 2)
            gate.let(2)
            for launch in (second, third):
                assert (await rig.final(launch)).phase is Phase.READY
            assert rig.queue_notes(first) == []
            assert rig.queue_notes(second) == [queue_message("build", 0)]
            assert rig.queue_notes(third) == [queue_message("build", 1),
                                              queue_message("build", 0)]
            assert gate.most == 1
            # The notes leave the launch's phase where it was: the stream still moves on.
            phases = [e.phase for e in rig.events(third) if e.phase is not None]
            assert phases[-3:] == [Phase.BUILT, Phase.LAUNCHING, Phase.READY]
            record = rig.service.store.get_launch(third)
            assert record is not None and record["phase"] == "ready"

    asyncio.run(scenario())


def test_many_simultaneous_launches_start_a_few_servers_at_a_time(tmp_path: Path) -> None:
    (spec,) = repos(tmp_path, 1)
    rig = Rig(tmp_path, max_concurrent_starts=3, max_sessions=40, max_sessions_per_repo=40)
    rig.starts = rig.spawner.gate = gate = Gate(open_=False)
    rig.builder.built.add(rig.builder.plan(_checkout(tmp_path, spec)).key)

    async def scenario() -> None:
        async with rig.running():
            launches = [rig.launch(spec) for _ in range(30)]
            await until(lambda: gate.inside == 3 and rig.service._start_slots is not None
                        and rig.service._start_slots.waiting == 27)
            await asyncio.sleep(0.2)
            assert gate.entered == 3  # 27 wait for a slot; none of them started a server
            last = launches[-1]
            notes = rig.queue_notes(last)
            assert notes and notes[0].startswith("Waiting for a free start slot: ")
            ahead = [int(n.split(": ")[1].split()[0]) for n in notes]
            assert ahead[0] <= 26
            gate.open()
            finals = await asyncio.gather(*(rig.final(launch) for launch in launches))
            assert all(f.phase is Phase.READY for f in finals), finals
            assert gate.most == 3
            assert len(rig.spawner.started) == 30
            notes = rig.queue_notes(last)
            counts = [int(n.split(": ")[1].split()[0]) if "ahead" in n else 0 for n in notes]
            assert counts == sorted(counts, reverse=True) and counts[-1] == 0  # it moved up

    asyncio.run(scenario())


def test_a_cancelled_launch_leaves_the_queue_and_its_slot(tmp_path: Path) -> None:
    (spec,) = repos(tmp_path, 1)
    rig = Rig(tmp_path, max_concurrent_starts=1)
    rig.starts = rig.spawner.gate = gate = Gate(open_=False)
    rig.builder.built.add(rig.builder.plan(_checkout(tmp_path, spec)).key)

    async def scenario() -> None:
        async with rig.running():
            service = rig.service
            first = rig.launch(spec)
            await until(lambda: gate.inside == 1)
            second = rig.launch(spec)
            await until(lambda: len(rig.queue_notes(second)) == 1)
            third = rig.launch(spec)
            await until(lambda: len(rig.queue_notes(third)) == 1)
            assert service.store.count_active() == 3  # each holds its quota slot
            assert service.cancel(second)
            failed = await rig.final(second)
            assert failed.phase is Phase.FAILED and "cancelled" in failed.message
            await until(lambda: len(rig.queue_notes(third)) == 2)
            assert rig.queue_notes(third) == [queue_message("start", 1),
                                              queue_message("start", 0)]
            assert service.store.count_active() == 2  # its reservation was given back
            gate.open()
            assert (await rig.final(first)).phase is Phase.READY
            assert (await rig.final(third)).phase is Phase.READY
            assert gate.entered == 2  # the cancelled launch never started a server

    asyncio.run(scenario())


def test_a_queued_build_nobody_waits_for_any_more_leaves_the_queue(tmp_path: Path) -> None:
    a, b = repos(tmp_path, 2)
    rig = Rig(tmp_path, max_concurrent_builds=1)
    rig.builds = rig.builder.gate = gate = Gate(open_=False)

    async def scenario() -> None:
        async with rig.running():
            service = rig.service
            first = rig.launch(a)
            await until(lambda: gate.inside == 1)
            second = rig.launch(b)
            await until(lambda: len(rig.queue_notes(second)) == 1)
            assert service._build_slots is not None and service._build_slots.waiting == 1
            service.cancel(second)
            assert (await rig.final(second)).phase is Phase.FAILED
            await until(lambda: service._build_slots is not None
                        and service._build_slots.waiting == 0)
            key = rig.builder.plan(_checkout(tmp_path, b)).key
            claim = service.store.get_build(key)
            assert claim is not None and claim.status == "failed"  # the next launch builds
            gate.open()
            assert (await rig.final(first)).phase is Phase.READY
            assert gate.entered == 1

    asyncio.run(scenario())


def test_an_anonymous_sessions_files_go_when_it_ends_a_signed_in_project_stays(
        tmp_path: Path) -> None:
    (spec,) = repos(tmp_path, 1)
    rig = Rig(tmp_path)

    async def scenario() -> None:
        async with rig.running():
            service = rig.service
            anonymous = rig.launch(spec)
            signed_in = rig.launch(spec, owner="alice")
            ready = [await rig.final(anonymous), await rig.final(signed_in)]
            assert all(e.phase is Phase.READY for e in ready), ready
            ids = {launch: service.store.get_launch(launch)["session_id"]  # type: ignore[index]
                   for launch in (anonymous, signed_in)}
            folders = {launch: service.sessions_dir / sid for launch, sid in ids.items()}
            assert all((f / "home" / "repo.txt").is_file() for f in folders.values())
            assert service.workspaces is not None
            (project,) = service.workspaces.projects("alice")
            assert (project.path / "repo.txt").is_file()

            await service.stop_session(ids[anonymous], reason="stopped by its user")
            await service.stop_session(ids[signed_in], reason="stopped by its user")
            assert not folders[anonymous].exists()
            assert folders[signed_in].exists()  # keeps_files: a signed-in user's session
            assert (project.path / "repo.txt").is_file()  # the project is never touched

            # The culler's way (the server ended) removes them too.
            again = rig.launch(spec)
            assert (await rig.final(again)).phase is Phase.READY
            sid = service.store.get_launch(again)["session_id"]  # type: ignore[index]
            assert (service.sessions_dir / sid).exists()
            rig.spawner.stopped.append(sid)  # its server died
            assert await service.cull() == [sid]
            assert not (service.sessions_dir / sid).exists()

    asyncio.run(scenario())
