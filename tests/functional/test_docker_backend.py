"""The Docker builder and spawner against a fake engine: ``tests/fixtures/fake-docker/docker``.

The fake is first on ``PATH``; real repo2docker (``--no-run``) drives it exactly as it
drives Docker: ``docker version``, ``docker buildx version``, ``docker image inspect`` and
``docker buildx build``. Nothing here needs a Docker engine or the network.
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from binderless.backends.docker import DockerBuilder, DockerSpawner
from binderless.backends.protocols import ImageRef, SessionHandle, SessionSpec
from binderless.errors import BuildFailed, LaunchFailed
from binderless.settings import Settings

FAKE_DOCKER = Path(__file__).resolve().parents[1] / "fixtures" / "fake-docker"
PORT = 49321
TOKEN = "0123456789abcdef" * 4


class FakeEngine:
    """What the fake ``docker`` recorded: its calls, images and containers."""

    def __init__(self, state: Path) -> None:
        self.state = state
        self.log = state / "calls.jsonl"
        self.images = state / "images.txt"

    def calls(self, *prefix: str) -> list[list[str]]:
        if not self.log.exists():
            return []
        calls = [json.loads(line) for line in self.log.read_text().splitlines()]
        return [c for c in calls if c[: len(prefix)] == list(prefix)]

    def add_image(self, name: str) -> None:
        with self.images.open("a") as f:
            f.write(name + "\n")

    def containers(self) -> dict[str, Any]:
        path = self.state / "containers.json"
        return json.loads(path.read_text()) if path.exists() else {}


@pytest.fixture
def engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeEngine:
    state = tmp_path / "fake-docker"
    state.mkdir()
    fake = FakeEngine(state)
    monkeypatch.setenv("PATH", f"{FAKE_DOCKER}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_DOCKER_LOG", str(fake.log))
    monkeypatch.setenv("FAKE_DOCKER_IMAGES", str(fake.images))
    monkeypatch.setenv("FAKE_DOCKER_STATE", str(state))
    monkeypatch.setenv("FAKE_DOCKER_PORT", str(PORT))
    for name in ("DOCKER_HOST", "FAKE_DOCKER_FAIL_BUILD", "FAKE_DOCKER_DOWN", "FAKE_DOCKER_HANG"):
        monkeypatch.delenv(name, raising=False)
    return fake


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(state_dir=tmp_path / "state", builder="docker", spawner="docker")


def test_fake_engine_is_executable() -> None:
    mode = (FAKE_DOCKER / "docker").stat().st_mode
    assert mode & stat.S_IXUSR
    assert (FAKE_DOCKER / "docker").read_text().startswith("#!/usr/bin/env python3\n")


# ----- builder ----------------------------------------------------------------------------


def test_repo2docker_builds_through_the_fake_engine(
    engine: FakeEngine, settings: Settings, fixture_repo: Callable[[str], Path]
) -> None:
    repo = fixture_repo("python-requirements")
    builder = DockerBuilder(settings)
    plan = builder.plan(repo)
    image_name = f"binderless/env:{plan.key}"
    assert builder.image_name(plan.key) == image_name
    assert asyncio.run(builder.find(plan)) is None
    assert engine.calls() == [["image", "inspect", image_name]]

    command = builder.command(plan, repo)
    assert command[1:3] == ["-m", "repo2docker"]
    assert command[3:5] == ["--no-run", "--json-logs"]
    assert "--user-id 1000 --user-name jovyan" in " ".join(command)
    assert command[-1] == str(repo)

    lines: list[str] = []
    image = asyncio.run(builder.build(plan, repo, lines.append))

    assert image == ImageRef(key=plan.key, name=image_name, location=image_name)
    assert asyncio.run(builder.find(plan)) == image
    # repo2docker checked the client and buildx, looked for the image, then built it.
    assert engine.calls("version") and engine.calls("buildx", "version")
    [build] = engine.calls("buildx", "build")
    assert build[build.index("--tag") + 1] == image_name
    # --user-id/--user-name reached the image as repo2docker's build arguments.
    assert "NB_UID=1000" in build and "NB_USER=jovyan" in build
    assert "--load" in build
    dockerfile = (engine.state / "last-build.Dockerfile").read_text()
    assert "requirements.txt" in dockerfile
    assert 'LABEL binderless.environment="' + plan.key in dockerfile

    # JSON log records arrive as their plain messages, one line each.
    assert all(line.endswith("\n") and line.strip() for line in lines)
    assert not any(line.lstrip().startswith("{") for line in lines)
    assert "Using PythonBuildPack builder\n" in lines
    assert f"naming to docker.io/{image_name} done\n" in "".join(lines)


def test_failed_build_names_the_failing_step(
    engine: FakeEngine, settings: Settings, fixture_repo: Callable[[str], Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FAKE_DOCKER_FAIL_BUILD", "1")
    repo = fixture_repo("python-requirements")
    builder = DockerBuilder(settings)
    plan = builder.plan(repo)
    lines: list[str] = []

    with pytest.raises(BuildFailed) as failed:
        asyncio.run(builder.build(plan, repo, lines.append))

    assert failed.value.message == "repo2docker could not build the image (exit code 1)."
    assert failed.value.hint.startswith(
        "The last line of the build log was: ERROR: failed to build: failed to solve:")
    assert "did not complete successfully: exit code: 1" in failed.value.hint
    assert any("No matching distribution found" in line for line in lines)
    assert asyncio.run(builder.find(plan)) is None


def test_build_without_a_running_engine_says_so(
    engine: FakeEngine, settings: Settings, fixture_repo: Callable[[str], Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FAKE_DOCKER_DOWN", "1")
    repo = fixture_repo("python-requirements")
    builder = DockerBuilder(settings)
    lines: list[str] = []

    with pytest.raises(BuildFailed) as failed:
        asyncio.run(builder.build(builder.plan(repo), repo, lines.append))

    assert failed.value.message == "Docker is not running: no Docker engine answered."
    assert "without --builder docker to use the default uv builder" in failed.value.hint
    assert any("Cannot connect to the Docker daemon" in line for line in lines)
    assert not engine.calls("buildx", "build")


def test_docker_plan_key_differs_from_other_builders(
    settings: Settings, fixture_repo: Callable[[str], Path]
) -> None:
    from binderless.envplan import plan_environment

    repo = fixture_repo("python-requirements")
    plan = DockerBuilder(settings).plan(repo)
    assert plan.key != plan_environment(repo).key
    assert plan.key == DockerBuilder(settings).plan(repo).key


# ----- spawner ----------------------------------------------------------------------------


def make_spec(settings: Settings, session_id: str = "5e551011ab", *,
              start_script: str | None = None) -> SessionSpec:
    home = settings.state_dir / "sessions" / session_id / "home"
    home.mkdir(parents=True)
    name = "binderless/env:0123456789abcdef0123"
    return SessionSpec(
        session_id=session_id,
        image=ImageRef(key="0123456789abcdef0123", name=name, location=name),
        home=home,
        base_url=f"/user/{session_id}/",
        token=TOKEN,
        environment={"BINDER_REPO_URL": "https://github.com/owner/repo",
                     "BINDER_REQUEST": "v2/gh/owner/repo/main",
                     "BINDER_LAUNCH_HOST": "http://127.0.0.1:8585/"},
        start_script=start_script,
    )


def option_values(argv: list[str], flag: str) -> list[str]:
    return [argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == flag]


def test_spawner_runs_stops_and_watches_a_container(
    engine: FakeEngine, settings: Settings
) -> None:
    spec = make_spec(settings)
    engine.add_image(spec.image.name)
    spawner = DockerSpawner(settings)
    lines: list[str] = []

    handle = asyncio.run(spawner.start(spec, lines.append))

    [run] = engine.calls("run")
    [container_id] = engine.containers()
    assert handle == SessionHandle(spec.session_id, f"http://127.0.0.1:{PORT}", container_id)
    assert lines == [f"Started container {container_id[:12]} of {spec.image.name} on port "
                     f"{PORT} (published)\n"]
    assert run[:3] == ["run", "-d", "--rm"]
    assert option_values(run, "--name") == [f"binderless-{spec.session_id}"]
    assert engine.calls("network") == [["network", "inspect", "--format", "{{.Name}}", "bridge"]]
    assert option_values(run, "-p") == ["127.0.0.1::8888"]  # loopback only, and nothing else
    assert "--network" not in run
    assert "-P" not in run and "--publish-all" not in run
    assert option_values(run, "--pull") == ["never"]
    assert option_values(run, "--label") == [f"binderless.session={spec.session_id}"]
    assert option_values(run, "-v") == [f"{spec.home}:/home/jovyan"]
    # The token travels in the environment, never on a command line.
    assert sorted(option_values(run, "-e")) == sorted([*spec.environment, "JUPYTER_TOKEN",
                                                       "R2D_ENTRYPOINT"])
    assert not any(TOKEN in arg for call in engine.calls() for arg in call)
    container = engine.containers()[container_id]
    entrypoint = f"/home/jovyan/{spec.start_script}" if spec.start_script else ""
    assert container["env"] == {**spec.environment, "JUPYTER_TOKEN": TOKEN,
                                "R2D_ENTRYPOINT": entrypoint}
    # The image's entrypoint runs Jupyter; nothing wraps the command.
    command = run[run.index(spec.image.location) + 1:]
    assert command[:2] == ["jupyter", "lab"]
    assert "--ip=0.0.0.0" in command and "--port=8888" in command
    assert f"--ServerApp.base_url={spec.base_url}" in command
    assert "--ServerApp.allow_origin=*" in command
    assert engine.calls("port") == [["port", container_id, "8888/tcp"]]

    assert asyncio.run(spawner.alive(handle)) is True
    assert engine.calls("inspect") == [["inspect", "-f", "{{.State.Running}}", container_id]]
    tail = asyncio.run(spawner.tail(handle, lines=2))
    assert engine.calls("logs") == [["logs", "--tail", "2", container_id]]
    assert len(tail) == 2 and "ServerApp" in tail[-1]

    asyncio.run(spawner.stop(handle))
    assert engine.calls("stop") == [["stop", "-t", "5", container_id]]
    assert engine.containers() == {}  # --rm
    assert asyncio.run(spawner.alive(handle)) is False
    asyncio.run(spawner.stop(handle))  # already gone: not an error
    assert len(engine.calls("stop")) == 2


def test_start_script_is_left_to_the_entrypoint(engine: FakeEngine, settings: Settings) -> None:
    spec = make_spec(settings, start_script="binder/start")
    script = spec.home / "binder" / "start"
    script.parent.mkdir()
    script.write_text('#!/bin/bash\nexport GREETING=hello\nexec "$@"\n')
    script.chmod(0o644)
    engine.add_image(spec.image.name)

    asyncio.run(DockerSpawner(settings).start(spec, lambda line: None))

    [run] = engine.calls("run")
    assert run[run.index(spec.image.location) + 1] == "jupyter"
    assert not any(arg.endswith("binder/start") for arg in run)
    assert script.stat().st_mode & stat.S_IXUSR  # the mounted copy must be executable


def test_tail_reads_the_entrypoint_log_once_the_container_is_gone(
    engine: FakeEngine, settings: Settings
) -> None:
    spec = make_spec(settings)
    (spec.home / ".jupyter-server-log.txt").write_text(
        "[E ServerApp] something broke\n\nTraceback: ValueError\n")
    handle = SessionHandle(spec.session_id, "", "0" * 64)

    assert asyncio.run(DockerSpawner(settings).tail(handle)) == [
        "[E ServerApp] something broke", "Traceback: ValueError"]
    assert asyncio.run(DockerSpawner(settings).alive(handle)) is False


def test_missing_image_fails_the_launch_clearly(engine: FakeEngine, settings: Settings) -> None:
    spec = make_spec(settings)

    with pytest.raises(LaunchFailed) as failed:
        asyncio.run(DockerSpawner(settings).start(spec, lambda line: None))

    assert failed.value.message == f"Docker could not start a container from {spec.image.name}."
    assert "No such image" in failed.value.hint
    assert not engine.calls("port")


def test_launch_without_a_running_engine_says_so(
    engine: FakeEngine, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_DOCKER_DOWN", "1")
    spec = make_spec(settings)
    engine.add_image(spec.image.name)
    spawner = DockerSpawner(settings)

    with pytest.raises(LaunchFailed) as failed:
        asyncio.run(spawner.start(spec, lambda line: None))
    assert failed.value.message == "Docker is not running: no Docker engine answered."
    assert "without --spawner docker" in failed.value.hint

    handle = SessionHandle(spec.session_id, "", "f" * 64)
    assert asyncio.run(spawner.alive(handle)) is False
    with pytest.raises(LaunchFailed, match="Docker is not running"):
        asyncio.run(spawner.stop(handle))


def test_a_stuck_engine_times_out_and_the_container_is_removed(
    engine: FakeEngine, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = make_spec(settings)
    engine.add_image(spec.image.name)
    spawner = DockerSpawner(settings, cli_timeout=0.5)

    monkeypatch.setenv("FAKE_DOCKER_HANG", "port")
    with pytest.raises(LaunchFailed) as failed:
        asyncio.run(spawner.start(spec, lambda line: None))
    assert failed.value.message == "`docker port` did not answer within 0.5 seconds."
    assert len(engine.calls("run")) == 1
    assert engine.calls("stop") and engine.containers() == {}

    monkeypatch.setenv("FAKE_DOCKER_HANG", "inspect")
    assert asyncio.run(spawner.alive(SessionHandle(spec.session_id, "", "f" * 64))) is False


def test_launch_without_the_docker_command(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    spec = make_spec(settings)

    with pytest.raises(LaunchFailed) as failed:
        asyncio.run(DockerSpawner(settings).start(spec, lambda line: None))
    assert failed.value.message == "The docker command is not installed."
    assert asyncio.run(DockerBuilder(settings).find(DockerBuilder(settings).plan(spec.home))) \
        is None


def test_uv_environments_are_refused(engine: FakeEngine, settings: Settings) -> None:
    spec = make_spec(settings)
    uv_env = ImageRef(key="k", name="local-env:k", location=str(settings.state_dir / "envs/k"))
    spec = SessionSpec(session_id=spec.session_id, image=uv_env, home=spec.home,
                       base_url=spec.base_url, token=spec.token)

    with pytest.raises(LaunchFailed, match="built by the uv builder"):
        asyncio.run(DockerSpawner(settings).start(spec, lambda line: None))
    assert engine.calls() == []



# ----- engines without a bridge network (dockerd --bridge=none) ---------------------------
# tests/containers launches for real on such an engine; these cover what it cannot show:
# the choice on an engine with a bridge, and the error when a port is not published.


def test_without_a_bridge_the_session_shares_the_host_network_on_loopback(
    engine: FakeEngine, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_DOCKER_NO_BRIDGE", "1")
    spec = make_spec(settings)
    engine.add_image(spec.image.name)
    spawner = DockerSpawner(settings)
    lines: list[str] = []

    handle = asyncio.run(spawner.start(spec, lines.append))

    assert spawner.network == "host"
    [run] = engine.calls("run")
    assert option_values(run, "--network") == ["host"] and "-p" not in run
    command = run[run.index(spec.image.location) + 1:]
    assert "--ip=127.0.0.1" in command  # never all of the host's addresses
    [port] = [int(a.split("=", 1)[1]) for a in command if a.startswith("--port=")]
    assert handle.target == f"http://127.0.0.1:{port}" and port != 8888
    assert not engine.calls("port")  # nothing is published, so nothing is asked
    assert lines[-1].endswith(f"on port {port} (in the host's network)\n")
    # The engine is asked once per spawner.
    asyncio.run(spawner.start(make_spec(settings, session_id="s2"), lines.append))
    assert len(engine.calls("network")) == 1


def test_a_running_container_without_a_published_port_is_named_as_such(
    engine: FakeEngine, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_DOCKER_NO_BRIDGE", "1")
    spec = make_spec(settings)
    engine.add_image(spec.image.name)
    spawner = DockerSpawner(settings, network="bridge")  # as if the engine had lied

    with pytest.raises(LaunchFailed) as failed:
        asyncio.run(spawner.start(spec, lambda line: None))

    assert failed.value.message == ("The session's container is running, but Docker "
                                    "published no port for Jupyter.")
    assert "without a bridge network" in failed.value.hint
    assert "stopped" not in failed.value.message
    assert engine.containers() == {}  # the unreachable container was stopped


def test_builds_on_an_engine_without_a_bridge_use_the_host_network_and_no_repo_config(
    engine: FakeEngine, settings: Settings, fixture_repo: Callable[[str], Path],
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    monkeypatch.setenv("FAKE_DOCKER_NO_BRIDGE", "1")
    repo = fixture_repo("python-requirements")
    (repo / "repo2docker_config.py").write_text(
        f"open({str(tmp_path / 'pwned')!r}, 'w').write('ran')\n")
    monkeypatch.chdir(repo)  # even a server started inside a checkout loads no config file
    builder = DockerBuilder(settings)
    lines: list[str] = []

    asyncio.run(builder.build(builder.plan(repo), repo, lines.append))

    [build] = engine.calls("buildx", "build")
    assert "--network=host" in build
    assert "The Docker engine has no bridge network: build steps use the host's network.\n" \
        in lines
    assert not (tmp_path / "pwned").exists()
