"""The container tier: real images on the project's own Docker engine (``dev.py engine``).

These tests need the three variables ``python3 dev.py engine`` prints (``DOCKER_HOST``,
``REGISTRY``, ``BASE_IMAGE``); ``python3 dev.py test`` brings the engine up and passes them
(with the engine's ``docker`` first on ``PATH`` and its ``DOCKER_CONFIG``, which holds
buildx). Without them the tier is skipped here, while ``dev.py test`` fails instead unless
``BINDERLESS_SKIP_CONTAINERS=1`` says to skip it. The engine has no bridge network: builds
use ``--network=host`` and containers ``--network host`` with free loopback ports.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
FIXTURE_REPOS = ROOT / "tests" / "fixtures" / "repos"
ENGINE_VARIABLES = ("DOCKER_HOST", "REGISTRY", "BASE_IMAGE")


@dataclass(frozen=True)
class Engine:
    """The project's engine: its environment for ``docker``, registry and base image."""

    env: dict[str, str]
    registry: str
    base_image: str

    def docker(self, *args: str, check: bool = True, timeout: float = 600,
               env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(["docker", *args], env={**self.env, **(env or {})},
                              capture_output=True, text=True, timeout=timeout, check=False)
        if check and done.returncode != 0:
            raise AssertionError(f"docker {' '.join(args[:3])} failed ({done.returncode}):\n"
                                 f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
        return done

    def manifest_digest(self, image: str) -> str:
        """The digest the registry serves for ``<registry>/<name>:<tag>``."""
        assert image.startswith(self.registry + "/")
        name, _, tag = image[len(self.registry) + 1:].rpartition(":")
        accept = ", ".join([
            "application/vnd.oci.image.index.v1+json",
            "application/vnd.oci.image.manifest.v1+json",
            "application/vnd.docker.distribution.manifest.list.v2+json",
            "application/vnd.docker.distribution.manifest.v2+json",
        ])
        answer = httpx.head(f"http://{self.registry}/v2/{name}/manifests/{tag}",
                            headers={"Accept": accept}, timeout=10)
        answer.raise_for_status()
        return answer.headers["Docker-Content-Digest"]


@pytest.fixture(scope="session")
def engine() -> Engine:
    missing = [name for name in ENGINE_VARIABLES if not os.environ.get(name)]
    if missing:
        pytest.skip("the container tier needs the project's Docker engine: run "
                    "`python3 dev.py engine` and export its last three lines "
                    f"(missing: {', '.join(missing)}), or run `python3 dev.py test`")
    env = dict(os.environ)
    engine = Engine(env=env, registry=env["REGISTRY"], base_image=env["BASE_IMAGE"])
    # The variables promise an engine: one that does not answer is a failure, not a skip.
    engine.docker("version", "--format", "{{.Server.Version}}", timeout=30)
    engine.docker("buildx", "version", timeout=30)
    return engine


def unique_tag() -> str:
    return uuid.uuid4().hex[:12]


def copy_repo(name: str, dest: Path, base_image: str) -> Path:
    """A fixture repository in ``dest``, with ``@BASE_IMAGE@`` in Dockerfiles filled in."""
    shutil.copytree(FIXTURE_REPOS / name, dest, symlinks=True)
    for dockerfile in dest.rglob("Dockerfile"):
        dockerfile.write_text(dockerfile.read_text().replace("@BASE_IMAGE@", base_image))
    return dest


def json_lines(text: str) -> list[dict[str, object]]:
    records = []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


@pytest.fixture
def containers(engine: Engine) -> Iterator[list[str]]:
    """Names of containers a test starts; each is removed at the end, whatever happened."""
    names: list[str] = []
    yield names
    for name in names:
        engine.docker("rm", "-f", "-v", name, check=False, timeout=60)


@pytest.fixture(scope="session")
def runner_image(engine: Engine) -> str:
    """``build-runner/Dockerfile`` built on the engine, from the local base image."""
    tag = "binderless-runner:test"
    engine.docker("build", "--quiet", "--network", "host",
                  "--build-arg", f"BASE_IMAGE={engine.base_image}",
                  "-f", str(ROOT / "build-runner" / "Dockerfile"), "-t", tag, str(ROOT),
                  timeout=900)
    return tag


def buildspec_script() -> str:
    """The buildspec's commands, phase by phase, as one shell script that stops at the first
    failing command (as CodeBuild stops a build at a failing phase)."""
    spec = yaml.safe_load((ROOT / "build-runner" / "buildspec.yml").read_text())
    commands = [command for phase in ("install", "pre_build", "build", "post_build")
                for command in spec["phases"].get(phase, {}).get("commands", [])]
    return "set -e\n" + "\n".join(commands) + "\n"


#: Where CodeBuild unpacks the source (CODEBUILD_SRC_DIR) in the stand-in below.
SRC_DIR = "/codebuild/output/src1/src"


def run_buildspec(engine: Engine, image: str, source: Path, variables: Mapping[str, str],
                  names: list[str], mounts: Sequence[str] = ()) -> subprocess.CompletedProcess[str]:
    """Run the buildspec in the runner image as CodeBuild does: privileged, the source at
    CODEBUILD_SRC_DIR, the build's variables in the environment. The engine inside keeps
    its data in a volume (overlay2 cannot stack on the container's own overlay)."""
    spec = yaml.safe_load((ROOT / "build-runner" / "buildspec.yml").read_text())
    env = {**{str(k): str(v) for k, v in spec.get("env", {}).get("variables", {}).items()},
           **variables, "CODEBUILD_SRC_DIR": SRC_DIR,
           # No bridge network on this engine: the inner engine must not make one in the
           # host's network namespace, which the runner shares.
           "DOCKERD_ARGS": "--bridge=none --iptables=false --ip6tables=false"}
    name = f"binderless-runner-{unique_tag()}"
    names.append(name)
    args = ["run", "--name", name, "--privileged", "--network", "host",
            "-v", "/var/lib/docker", "-v", f"{source}:{SRC_DIR}", "-w", SRC_DIR]
    for mount in mounts:
        args += ["-v", mount]
    for key in env:
        args += ["-e", key]
    return engine.docker(*args, image, "sh", "-c", buildspec_script(), check=False,
                         timeout=900, env=env)
