#!/usr/bin/env python3
"""The CodeBuild runner: build one environment image with repo2docker and push it to ECR.

``buildspec.yml`` runs it in the runner image (``Dockerfile``), in the unpacked source
folder (``CODEBUILD_SRC_DIR``), after starting the Docker daemon::

    run_repo2docker.py login   log Docker in to the ECR registries named below
    run_repo2docker.py build   repo2docker --config <runner>/repo2docker_config.py --no-run
                               --push --json-logs ... <checkout>

``build`` runs repo2docker from a temporary folder of its own with an explicit (empty)
configuration file, never from the checkout: repo2docker executes a
``repo2docker_config.py`` found in its current directory, and this process holds the
build's AWS credentials and a privileged engine. The checkout is only ever the build
context of ``docker buildx build``, whose steps are not privileged and see no AWS variable.

Environment variables, set per build by ``binderless.aws.builder.CodeBuildBuilder``:

IMAGE_URI        the image to build and push: ``<registry>/<repository>:<environment key>``
CACHE_FROM       optional: an earlier image of the repository whose layers may be reused
BASE_IMAGE       the base image, the ECR mirror of ``buildpack-deps:jammy``
BUILDER_VERSION  the repo2docker version the environment key was computed with

Every line it prints is JSON with a ``message``, like repo2docker's ``--json-logs``, so the
builder reads the whole log one way. It exits non-zero when the build fails.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from binderless.aws.builder import RUNNER_CONTEXT, SESSION_START_APPENDIX
from binderless.backends.docker import USER_ID, USER_NAME

#: The folder of this script, which holds ``session-start`` too: the extra build context
#: the appendix copies ``session-start`` from.
HERE = Path(__file__).resolve().parent
SESSION_START = "session-start"
#: The runner's own repo2docker configuration file, beside this script.
CONFIG = "repo2docker_config.py"
#: The first Docker engine whose BuildKit has named build contexts.
MIN_CONTEXT_ENGINE = 23
ECR_HOST = re.compile(
    r"^(?P<account>\d{12})\.dkr\.ecr(?:-fips)?\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(?:\.cn)?$")
#: Exit code of a runner that was started wrongly (not a failed build).
USAGE = 2

ClientFactory = Callable[[str], Any]


class RunnerError(Exception):
    """The runner's configuration is wrong; nothing was built."""


def emit(message: str, phase: str = "") -> None:
    record = {"message": message, **({"phase": phase} if phase else {})}
    print(json.dumps(record), flush=True)


def _tag(image_uri: str) -> str:
    name = image_uri.rsplit("/", 1)[-1]
    if ":" not in name or "@" in name:
        raise RunnerError(f"IMAGE_URI={image_uri!r} should end with :<environment key>.")
    return name.rsplit(":", 1)[1]


def build_command(env: Mapping[str, str], *, checkout: Path, context_dir: Path = HERE,
                  named_context: bool = True, host_network: bool = False,
                  metadata_file: Path | None = None) -> list[str]:
    """The repo2docker command line that builds ``checkout`` into the image ``env`` names.

    ``--config`` names the runner's own (empty) configuration file, so repo2docker never
    looks for ``repo2docker_config.py`` in its current directory; :func:`build` also runs
    it from a folder the runner owns. ``named_context`` passes the runner folder as the
    ``binderless`` build context the appendix copies ``session-start`` from (repo2docker
    ignores the appendix for a repository's own Dockerfile, and engines before Docker 23
    refuse named contexts). ``host_network`` runs the build's steps in the host's network,
    for engines without a bridge network."""
    image = env.get("IMAGE_URI", "").strip()
    if not image:
        raise RunnerError("IMAGE_URI is not set: the runner does not know what to build.")
    cmd = [
        "repo2docker",
        "--config", str(context_dir / CONFIG),
        "--no-run", "--push", "--json-logs",
        "--user-id", str(USER_ID), "--user-name", USER_NAME,
        "--image-name", image,
        "--label", f"binderless.environment={_tag(image)}",
    ]
    cache_from = env.get("CACHE_FROM", "").strip()
    if cache_from:
        cmd += ["--cache-from", cache_from]
    base_image = env.get("BASE_IMAGE", "").strip()
    if base_image:
        cmd.append(f"--Repo2Docker.base_image={base_image}")
    cmd += ["--appendix", SESSION_START_APPENDIX]
    buildx = []
    if named_context:
        buildx.append(f"--build-context={RUNNER_CONTEXT}={context_dir}")
    # Layer metadata in the pushed image, so a later build's --cache-from can use it.
    buildx.append("--cache-to=type=inline")
    if host_network:
        buildx.append("--network=host")
    if metadata_file is not None:
        buildx.append(f"--metadata-file={metadata_file}")
    cmd += [f"--DockerEngine.extra_buildx_build_args={arg}" for arg in buildx]
    return [*cmd, str(checkout.absolute())]


def version_problem(env: Mapping[str, str]) -> str:
    """Why this runner must not build for ``env`` ("" when it may)."""
    expected = env.get("BUILDER_VERSION", "").strip()
    try:
        installed = metadata.version("jupyter-repo2docker")
    except metadata.PackageNotFoundError:
        return "repo2docker is not installed in the runner image."
    if expected and expected != "unknown" and expected != installed:
        return (f"The environment key was computed for repo2docker {expected}, but the runner "
                f"has repo2docker {installed}: rebuild and push the runner image "
                "(build-runner/Dockerfile) from the deployed binderless.")
    return ""


def builds_own_dockerfile(checkout: Path) -> bool:
    """Whether repo2docker builds the repository's own Dockerfile (and so drops the
    appendix). Mirrors repo2docker's choice of folder: ``binder/``, else ``.binder/``,
    else the root. Only names are looked at; no file of the checkout is read."""
    for folder in ("binder", ".binder"):
        if (checkout / folder).is_dir():
            return (checkout / folder / "Dockerfile").exists()
    return (checkout / "Dockerfile").exists()


def _engine_facts() -> tuple[int, bool]:
    """The engine's major version (0 when unknown) and whether it has a bridge network."""
    answer = subprocess.run(["docker", "version", "--format", "{{.Server.Version}}"],
                            capture_output=True, text=True, check=False)
    match = re.match(r"(\d+)\.", answer.stdout.strip())
    bridge = subprocess.run(["docker", "network", "inspect", "bridge"],
                            capture_output=True, check=False).returncode == 0
    return (int(match.group(1)) if match else 0), bridge


def build_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """repo2docker's environment: the runner's, without AWS credentials or settings.

    repo2docker needs none (``login`` has already stored the registry tokens), and
    whatever it does not hold cannot leak into a build."""
    return {name: value for name, value in environ.items()
            if not name.startswith(("AWS_", "CODEBUILD_AUTH", "ECS_CONTAINER_METADATA"))}


def build(env: Mapping[str, str], *, cwd: Path, context_dir: Path = HERE,
          engine: Callable[[], tuple[int, bool]] = _engine_facts) -> int:
    """Build and push the image of the checkout at ``cwd``; repo2docker's exit code."""
    checkout = cwd.absolute()
    problem = version_problem(env)
    if not problem and not (context_dir / SESSION_START).is_file():
        problem = (f"{context_dir / SESSION_START} is missing from the runner image: "
                   "rebuild it with build-runner/Dockerfile.")
    if not problem and not (context_dir / CONFIG).is_file():
        problem = (f"{context_dir / CONFIG} is missing from the runner image: "
                   "rebuild it with build-runner/Dockerfile.")
    own_dockerfile = builds_own_dockerfile(checkout)
    major, bridge = engine()
    if not problem and not own_dockerfile and 0 < major < MIN_CONTEXT_ENGINE:
        problem = (f"The runner's Docker engine {major} is too old for named build contexts "
                   f"(Docker {MIN_CONTEXT_ENGINE} or newer): rebuild the runner image with "
                   "build-runner/Dockerfile.")
    with tempfile.TemporaryDirectory(prefix="binderless-runner-") as work:
        metadata_file = Path(work) / "build-metadata.json"
        try:
            cmd = build_command(env, checkout=checkout, context_dir=context_dir,
                                named_context=not own_dockerfile, host_network=not bridge,
                                metadata_file=metadata_file)
        except RunnerError as exc:
            problem = problem or str(exc)
        if problem:
            emit(problem, "failed")
            return USAGE
        if not env.get("BASE_IMAGE", "").strip():
            emit("BASE_IMAGE is not set: pulling repo2docker's default base image from Docker "
                 "Hub, which limits pulls.")
        cache = env.get("CACHE_FROM", "").strip()
        emit(f"Building {env['IMAGE_URI']} with repo2docker "
             f"{metadata.version('jupyter-repo2docker')}"
             + (f", reusing layers of {cache}" if cache else ""))
        if not bridge:
            emit("The Docker engine has no bridge network: build steps use the host's network.")
        child_env = {**build_environment({**os.environ, **env}), "PYTHONUNBUFFERED": "1"}
        # A folder of the runner's, not the checkout: repo2docker would load a
        # repo2docker_config.py from its current directory.
        code = subprocess.run(cmd, cwd=work, env=child_env, check=False).returncode
        if code == 0:
            _report_digest(env["IMAGE_URI"], metadata_file)
        return code


def _report_digest(image: str, metadata_file: Path) -> None:
    """Say which manifest was pushed (buildx's metadata file names its digest)."""
    try:
        digest = json.loads(metadata_file.read_text()).get("containerimage.digest", "")
    except (OSError, ValueError):
        digest = ""
    if digest:
        print(json.dumps({"message": f"Pushed {image}@{digest}", "digest": digest}),
              flush=True)


def registries(env: Mapping[str, str]) -> list[tuple[str, str]]:
    """The ECR registries (host, region) that the images in ``env`` live in, in order."""
    found: list[tuple[str, str]] = []
    for name in ("IMAGE_URI", "BASE_IMAGE", "CACHE_FROM"):
        host = env.get(name, "").strip().split("/", 1)[0]
        match = ECR_HOST.match(host)
        if match and (host, match["region"]) not in found:
            found.append((host, match["region"]))
    return found


def _ecr_client(region: str) -> Any:
    import boto3

    return boto3.client("ecr", region_name=region)


def login(env: Mapping[str, str], *, client_factory: ClientFactory = _ecr_client) -> int:
    """``docker login`` to each ECR registry of ``env`` with a token of the build's role."""
    passwords: dict[str, tuple[str, str]] = {}
    for host, region in registries(env):
        if region not in passwords:  # one token serves every registry of a region
            try:
                data = client_factory(region).get_authorization_token()["authorizationData"][0]
            except Exception as exc:  # botocore's errors: the build role may not log in
                emit(f"Could not get an ECR login token in {region}: {exc}", "failed")
                return 1
            token = base64.b64decode(data["authorizationToken"]).decode()
            user, _, password = token.partition(":")
            passwords[region] = (user, password)
        user, password = passwords[region]
        done = subprocess.run(["docker", "login", "--username", user, "--password-stdin", host],
                              input=password.encode(), capture_output=True, check=False)
        if done.returncode != 0:
            said = (done.stderr or done.stdout).decode(errors="replace").strip().splitlines()
            emit(f"Could not log in to {host}: {said[-1] if said else done.returncode}", "failed")
            return done.returncode
        emit(f"Logged in to {host}")
    return 0


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    env = os.environ if environ is None else environ
    if args == ["login"]:
        return login(env)
    if args == ["build"]:
        return build(env, cwd=Path(env.get("CODEBUILD_SRC_DIR") or "."))
    emit("usage: run_repo2docker.py login|build", "failed")
    return USAGE


if __name__ == "__main__":
    sys.exit(main())
