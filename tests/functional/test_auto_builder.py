"""``--builder auto``: which builder and spawner each repository gets, and the refusal
without a Docker engine.

The uv and docker builders here are stand-ins implementing the ``Builder`` protocol on
the real planner (``plan_environment``), so the routing sees real plans of the fixture
repositories; the refusal without an engine uses the real uv builder. The real engine's
part is in ``tests/containers``.
"""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path

import httpx
import pytest

from binderless.backends.autobuilder import (
    NO_ENGINE_HINT,
    AutoBuilder,
    AutoSpawner,
    EngineProbe,
    UvBuilderWithoutEngine,
    docker_engine_version,
    engine_may_answer,
)
from binderless.backends.docker import DockerBuilder, DockerSpawner
from binderless.backends.localfetch import LocalFetcher
from binderless.backends.localspawn import LocalSpawner
from binderless.backends.protocols import ImageRef, LogSink, SessionHandle, SessionSpec
from binderless.backends.uvbuilder import OTHER_BUILDER, UvBuilder
from binderless.envplan import EnvironmentPlan, plan_environment
from binderless.errors import BuildFailed, UnsupportedRepository
from binderless.local import local_service
from binderless.phases import Phase
from binderless.service import LaunchRequest
from binderless.settings import Settings, load_settings
from tests.conftest import FIXTURE_REPOS, file_spec, make_git_repo
from tests.functional.launch_fakes import fake_jupyter

CONTAINER_ID = "4f" * 32  # what `docker run -d` prints: 64 hex digits


class FakeUv:
    """The uv builder's plan and refusal, without building anything."""

    name = "uv"

    def __init__(self, fail: BuildFailed | None = None) -> None:
        self.built: dict[str, ImageRef] = {}
        self.fail = fail

    def plan(self, checkout: Path) -> EnvironmentPlan:
        return plan_environment(checkout, salt="uv")

    async def find(self, plan: EnvironmentPlan) -> ImageRef | None:
        return self.built.get(plan.key)

    async def build(self, plan: EnvironmentPlan, checkout: Path, log: LogSink) -> ImageRef:
        if plan.unsupported:
            raise UnsupportedRepository(f"This repository needs {plan.unsupported[0]}.",
                                        hint=OTHER_BUILDER)
        if self.fail is not None:
            raise self.fail
        log("uv build\n")
        image = ImageRef(plan.key, f"local-env:{plan.key}", f"/envs/{plan.key}")
        self.built[plan.key] = image
        return image


class FakeDocker:
    """The docker builder's plan; its images are names, as Docker's are."""

    name = "docker"

    def __init__(self) -> None:
        self.built: dict[str, ImageRef] = {}

    def plan(self, checkout: Path) -> EnvironmentPlan:
        return plan_environment(checkout, salt="docker")

    async def find(self, plan: EnvironmentPlan) -> ImageRef | None:
        return self.built.get(plan.key)

    async def build(self, plan: EnvironmentPlan, checkout: Path, log: LogSink) -> ImageRef:
        log("repo2docker build\n")
        image = ImageRef(plan.key, f"binderless/env:{plan.key}", f"binderless/env:{plan.key}")
        self.built[plan.key] = image
        return image


class Engine:
    """An engine probe answer, counting how often it is asked."""

    def __init__(self, answers: bool) -> None:
        self.answers = answers
        self.asked = 0

    def __call__(self) -> bool:
        self.asked += 1
        return self.answers


def auto(engine: Engine, uv: FakeUv | None = None,
         installed: tuple[str, ...] = ("3.11", "3.12")) -> tuple[AutoBuilder, FakeUv, FakeDocker]:
    uv = uv or FakeUv()
    docker = FakeDocker()
    return AutoBuilder(uv, docker, engine, python_installed=lambda v: v in installed), uv, docker


def build(builder: AutoBuilder, checkout: Path) -> tuple[EnvironmentPlan, ImageRef, list[str]]:
    lines: list[str] = []
    plan = builder.plan(checkout)
    image = asyncio.run(builder.build(plan, checkout, lines.append))
    return plan, image, lines


def test_python_repositories_stay_on_uv_and_never_ask_for_an_engine() -> None:
    engine = Engine(True)
    builder, uv, docker = auto(engine)
    for fixture in ("python-requirements", "pipfile", "runtime-txt", "binder-dir"):
        plan, image, _ = build(builder, FIXTURE_REPOS / fixture)
        assert plan == uv.plan(FIXTURE_REPOS / fixture)
        assert uv.built[plan.key] == image and image.location.startswith("/")
        assert asyncio.run(builder.find(plan)) == image
    assert docker.built == {} and engine.asked == 0


@pytest.mark.parametrize("fixture", ["dockerfile-repo", "apt-repo", "r-repo", "julia-repo",
                                     "runtime-missing"])
def test_what_uv_cannot_build_goes_to_repo2docker(fixture: str) -> None:
    engine = Engine(True)
    builder, uv, docker = auto(engine)
    checkout = FIXTURE_REPOS / fixture
    assert builder.uv_cannot(uv.plan(checkout))  # runtime-missing: Python 3.4
    plan, image, lines = build(builder, checkout)
    assert plan == docker.plan(checkout) and plan.key != uv.plan(checkout).key
    assert docker.built == {plan.key: image} and uv.built == {}
    assert lines == ["repo2docker build\n"]
    assert asyncio.run(builder.find(plan)) == image
    assert engine.asked == 1


def test_a_python_installed_here_stays_on_uv() -> None:
    builder, uv, docker = auto(Engine(True), installed=("3.4",))
    plan, _, _ = build(builder, FIXTURE_REPOS / "runtime-missing")
    assert plan.key in uv.built and docker.built == {}


def test_without_an_engine_the_real_uv_refusal_names_what_to_install(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path / "state")
    engine = Engine(False)
    builder = AutoBuilder(UvBuilder(settings), FakeDocker(), engine)
    checkout = FIXTURE_REPOS / "dockerfile-repo"
    plan = builder.plan(checkout)
    with pytest.raises(UnsupportedRepository) as refused:
        asyncio.run(builder.build(plan, checkout, lambda _line: None))
    assert "Dockerfile" in refused.value.message
    assert refused.value.hint == NO_ENGINE_HINT
    assert "python3 dev.py engine" in refused.value.hint and "Install Docker" in refused.value.hint
    assert "--builder docker" not in refused.value.hint  # it would fail the same way
    assert not (tmp_path / "state" / "envs" / plan.key).exists()


def test_without_an_engine_a_missing_python_keeps_its_own_advice(tmp_path: Path) -> None:
    builder = AutoBuilder(UvBuilder(Settings(state_dir=tmp_path / "state")), FakeDocker(),
                          Engine(False), python_installed=lambda _v: False)
    checkout = FIXTURE_REPOS / "runtime-missing"
    with pytest.raises(UnsupportedRepository) as refused:
        asyncio.run(builder.build(builder.plan(checkout), checkout, lambda _line: None))
    assert "Python 3.4" in refused.value.message
    # Installing Python 3.4 here would not help (uv handles 2.7 and 3.6 or newer): one
    # piece of advice, what to install for repo2docker.
    assert refused.value.hint == NO_ENGINE_HINT


def conda_failure(file: str = "environment.yml") -> BuildFailed:
    return BuildFailed("Building the environment failed while installing the packages.",
                       hint="Packages from environment.yml are installed with pip here, "
                       f"and a conda-only one needs repo2docker: {OTHER_BUILDER}",
                       fault="repository", file=file, line=5)


def test_conda_packages_pip_cannot_install_are_built_with_repo2docker_under_the_same_key(
        ) -> None:
    engine = Engine(True)
    builder, uv, docker = auto(engine, FakeUv(fail=conda_failure()))
    checkout = FIXTURE_REPOS / "environment-yml"
    plan, image, lines = build(builder, checkout)
    assert plan == uv.plan(checkout)  # planned for uv: the failure came in the build
    assert docker.built == {plan.key: image} and not image.location.startswith("/")
    assert "conda-only" in "".join(lines) and lines[-1] == "repo2docker build\n"
    # After a restart, the next launch finds that image instead of failing with uv again.
    again = AutoBuilder(uv, docker, engine, python_installed=lambda _v: True)
    assert asyncio.run(again.find(again.plan(checkout))) == image


def test_other_uv_failures_are_not_retried_with_repo2docker() -> None:
    engine = Engine(True)
    # A typo in requirements.txt is the repository's to fix, whichever builder runs it.
    builder, _, docker = auto(engine, FakeUv(fail=conda_failure("requirements.txt")))
    with pytest.raises(BuildFailed) as failed:
        build(builder, FIXTURE_REPOS / "python-requirements")
    assert failed.value.file == "requirements.txt" and docker.built == {}
    # Nor a failure that is not the repository's (the network, the index).
    builder, _, docker = auto(engine, FakeUv(fail=BuildFailed("uv failed", fault="server")))
    with pytest.raises(BuildFailed):
        build(builder, FIXTURE_REPOS / "environment-yml")
    assert docker.built == {} and engine.asked == 0


def test_conda_failure_without_an_engine_says_what_to_install() -> None:
    builder, _, _ = auto(Engine(False), FakeUv(fail=conda_failure()))
    with pytest.raises(BuildFailed) as failed:
        build(builder, FIXTURE_REPOS / "environment-yml")
    assert failed.value.file == "environment.yml" and failed.value.line == 5
    assert failed.value.hint.endswith(NO_ENGINE_HINT) and "--builder" not in failed.value.hint


def test_the_engine_probe_remembers_an_answer_and_asks_again_after_silence() -> None:
    now = [0.0]
    answers = ["", "", "27.3.1"]
    probe = EngineProbe(lambda: answers.pop(0), retry_after=30, clock=lambda: now[0])
    assert probe() is False
    now[0] = 29
    assert probe() is False and len(answers) == 2  # not asked again yet
    now[0] = 31
    assert probe() is False and len(answers) == 1
    now[0] = 62
    assert probe() is True and probe.version == "27.3.1"
    now[0] = 1000
    assert probe() is True and answers == []  # an engine that answered is not asked again


def fake_docker_command(folder: Path, script: str) -> str:
    folder.mkdir()
    docker = folder / "docker"
    docker.write_text("#!/bin/sh\n" + script)
    docker.chmod(docker.stat().st_mode | stat.S_IXUSR)
    return str(folder)


def test_docker_engine_version_reads_the_cli(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    assert docker_engine_version() == ""  # no docker command at all
    monkeypatch.setenv("PATH", fake_docker_command(
        tmp_path / "down", 'echo "Cannot connect to the Docker daemon" >&2; exit 1\n'))
    assert docker_engine_version() == ""
    monkeypatch.setenv("PATH", fake_docker_command(
        tmp_path / "up", '[ "$1 $2 $3" = "version --format {{.Server.Version}}" ] && '
        'echo 27.3.1\n'))
    assert docker_engine_version() == "27.3.1"


class RecordingSpawner:
    def __init__(self, name: str, target: str, backend_id: str) -> None:
        self.name, self.target, self.backend_id = name, target, backend_id
        self.calls: list[tuple[str, str]] = []

    async def prepare(self, image: ImageRef) -> None:
        self.calls.append(("prepare", image.name))

    async def start(self, spec: SessionSpec, log: LogSink) -> SessionHandle:
        self.calls.append(("start", spec.session_id))
        return SessionHandle(spec.session_id, self.target, self.backend_id)

    async def stop(self, handle: SessionHandle) -> None:
        self.calls.append(("stop", handle.session_id))

    async def alive(self, handle: SessionHandle) -> bool:
        self.calls.append(("alive", handle.session_id))
        return True

    async def running(self) -> dict[str, str]:
        return {}

    async def tail(self, handle: SessionHandle, lines: int = 20) -> list[str]:
        self.calls.append(("tail", handle.session_id))
        return [self.name]


def test_the_spawner_runs_each_environment_where_its_builder_made_it(tmp_path: Path) -> None:
    local = RecordingSpawner("local", "http://127.0.0.1:1", "4242")
    docker = RecordingSpawner("docker", "http://127.0.0.1:2", CONTAINER_ID)
    spawner = AutoSpawner(local, docker)

    def spec(session_id: str, image: ImageRef) -> SessionSpec:
        return SessionSpec(session_id, image, tmp_path, f"/user/{session_id}/", "t")

    async def scenario() -> None:
        uv_image = ImageRef("k1", "local-env:k1", "/state/envs/k1")
        docker_image = ImageRef("k2", "binderless/env:k2", "binderless/env:k2")
        await spawner.prepare(docker_image)
        a = await spawner.start(spec("a", uv_image), lambda _line: None)
        b = await spawner.start(spec("b", docker_image), lambda _line: None)
        assert (a.backend_id, b.backend_id) == ("4242", CONTAINER_ID)
        # Handles rebuilt from the store (after a restart) carry only the backend id.
        for handle in (SessionHandle("a", "", "4242"), SessionHandle("b", "", CONTAINER_ID)):
            assert await spawner.alive(handle)
            assert await spawner.tail(handle) == ["local" if handle.session_id == "a"
                                                  else "docker"]
            await spawner.stop(handle)
        await spawner.stop(SessionHandle("c", "", ""))  # never started: nothing to stop

    asyncio.run(scenario())
    assert local.calls == [("start", "a"), ("alive", "a"), ("tail", "a"), ("stop", "a"),
                           ("stop", "c")]
    assert docker.calls == [("prepare", "binderless/env:k2"), ("start", "b"), ("alive", "b"),
                            ("tail", "b"), ("stop", "b")]


def test_launches_through_the_service_reach_ready_on_their_own_backends(
        tmp_path: Path) -> None:
    python_repo = make_git_repo(FIXTURE_REPOS / "python-requirements", tmp_path / "py")
    docker_repo = make_git_repo(FIXTURE_REPOS / "dockerfile-repo", tmp_path / "df")
    service = local_service(Settings(state_dir=tmp_path / "state"), httpx.Client())
    engine = Engine(True)
    builder, uv, docker = auto(engine)
    local = RecordingSpawner("local", "", "4242")
    containers = RecordingSpawner("docker", "", CONTAINER_ID)
    service.builder, service.spawner = builder, AutoSpawner(local, containers)
    service.fetcher = LocalFetcher(tmp_path / "state" / "repos")

    async def scenario() -> None:
        async with fake_jupyter() as url:
            local.target = containers.target = url
            await service.open()
            try:
                launches = [service.start(LaunchRequest(*file_spec(repo).split("/", 1),
                                                        "http://binder.test/"))
                            for repo in (python_repo, docker_repo)]
                for launch in launches:
                    async def final(launch: str = launch) -> Phase | None:
                        async for item in service.events.follow(launch, 0, tick=0.05):
                            if item is not None and item[1].is_final:
                                return item[1].phase
                        return None

                    assert await asyncio.wait_for(final(), 30) is Phase.READY
            finally:
                await service.close()

    asyncio.run(scenario())
    assert len(uv.built) == 1 and len(docker.built) == 1
    assert [c[0] for c in local.calls].count("start") == 1
    assert [c[0] for c in containers.calls].count("start") == 1


def test_auto_uses_an_engine_only_when_one_answers_at_startup(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    monkeypatch.delenv("DOCKER_CONTEXT", raising=False)
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "no-config"))
    monkeypatch.setenv("PATH", fake_docker_command(
        tmp_path / "bin", 'echo run >> "$0.log"; echo 27.3.1\n') + os.pathsep
        + os.environ["PATH"])
    asked = tmp_path / "bin" / "docker.log"
    # A docker command but nowhere an engine could answer (on a machine with a
    # /var/run/docker.sock, docker is asked: that is the case below).
    if not Path("/var/run/docker.sock").exists():
        assert not engine_may_answer()
        service = local_service(Settings(state_dir=tmp_path / "a"), httpx.Client())
        assert type(service.builder) is UvBuilderWithoutEngine
        assert type(service.spawner) is LocalSpawner
        assert not asked.exists()  # no docker process at all
    monkeypatch.setenv("DOCKER_HOST", "unix:///run/an-engine.sock")
    assert engine_may_answer()
    service = local_service(Settings(state_dir=tmp_path / "b"), httpx.Client())
    assert isinstance(service.builder, AutoBuilder) and isinstance(service.builder.uv, UvBuilder)
    assert isinstance(service.builder.docker, DockerBuilder)
    assert isinstance(service.spawner, AutoSpawner)
    assert asked.read_text() == "run\n"  # once, at startup
    # An engine that does not answer: uv only.
    (tmp_path / "bin" / "docker").write_text("#!/bin/sh\nexit 1\n")
    service = local_service(Settings(state_dir=tmp_path / "c"), httpx.Client())
    assert type(service.builder) is UvBuilderWithoutEngine
    assert type(service.spawner) is LocalSpawner


def test_without_an_engine_at_startup_the_uv_refusal_names_what_to_install(
        tmp_path: Path) -> None:
    builder = UvBuilderWithoutEngine(Settings(state_dir=tmp_path / "state"))
    checkout = FIXTURE_REPOS / "julia-repo"
    with pytest.raises(UnsupportedRepository) as refused:
        asyncio.run(builder.build(builder.plan(checkout), checkout, lambda _line: None))
    assert "Julia" in refused.value.message and refused.value.hint == NO_ENGINE_HINT


def test_settings_default_to_auto_and_keep_the_explicit_choices(tmp_path: Path) -> None:
    assert Settings().builder == "auto"
    with pytest.raises(ValueError, match="go together"):
        load_settings({}, builder="docker")
    with pytest.raises(ValueError, match="go together"):
        load_settings({}, builder="uv", spawner="docker")
    with pytest.raises(ValueError, match="builder must be one of uv, docker, auto"):
        load_settings({}, builder="conda")
    # auto with the docker spawner: everything in containers, with repo2docker.
    service = local_service(load_settings({}, spawner="docker", state_dir=tmp_path / "a"),
                            httpx.Client())
    assert isinstance(service.builder, DockerBuilder)
    assert isinstance(service.spawner, DockerSpawner)
    service = local_service(load_settings({"BINDERLESS_BUILDER": "uv"},
                                          state_dir=tmp_path / "b"), httpx.Client())
    assert isinstance(service.builder, UvBuilder)
    assert isinstance(service.spawner, LocalSpawner)
