"""One real repo2docker build against the uv build of the same requirements, in one run.

    .venv/bin/python bench/build_real.py [--package "jupyterlab>=4,<5"]

Brings up the project's Docker engine if needed (as ``python3 dev.py engine`` does), then:
  * builds a Dockerfile repository (the local base image, a virtual environment, ``pip
    install`` of the package) with ``--builder docker``: real repo2docker and BuildKit, the
    base image's layers cached, every later layer built afresh (a unique build argument);
  * builds a repository with the same package in ``requirements.txt`` with the uv builder
    (``--builder uv``, the default), with its usual shared package cache.
Prints both times and their ratio. Needs root for the engine (see docs/development.md).
Talks to the package registries (PyPI, Debian) and 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import dev  # noqa: E402

DOCKERFILE = """\
FROM {base}
ARG BENCH_RUN
RUN echo "bench run $BENCH_RUN" \\
 && python3 -m venv /opt/venv \\
 && /opt/venv/bin/pip install --no-cache-dir --quiet "{package}"
ENV PATH=/opt/venv/bin:$PATH
"""


async def timed_build(builder_name: str, repo: Path, state: Path) -> float:
    from binderless.backends.docker import DockerBuilder
    from binderless.backends.uvbuilder import UvBuilder
    from binderless.settings import Settings

    settings = Settings(state_dir=state, builder=builder_name,  # type: ignore[arg-type]
                        spawner="docker" if builder_name == "docker" else "local")
    builder = DockerBuilder(settings) if builder_name == "docker" else UvBuilder(settings)
    plan = builder.plan(repo)
    lines: list[str] = []
    started = time.perf_counter()
    await builder.build(plan, repo, lines.append)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--package", default="jupyterlab>=4,<5")
    args = parser.parse_args()
    try:
        values = dev.engine_up()
    except dev.EngineError as exc:
        sys.exit(f"build_real.py: the project's Docker engine is needed: {exc}")
    # The builders find `docker` (and the engine) through this process's environment.
    os.environ.update(dev.engine_env(values))
    with tempfile.TemporaryDirectory(prefix="binderless-bench-build-") as tmp:
        work = Path(tmp)
        docker_repo = work / "dockerfile-repo"
        docker_repo.mkdir()
        (docker_repo / "Dockerfile").write_text(
            DOCKERFILE.format(base=values["BASE_IMAGE"], package=args.package)
            .replace("ARG BENCH_RUN", f"ARG BENCH_RUN={uuid.uuid4().hex}"))
        uv_repo = work / "requirements-repo"
        uv_repo.mkdir()
        (uv_repo / "requirements.txt").write_text(args.package + "\n")

        docker_seconds = asyncio.run(timed_build("docker", docker_repo, work / "docker-state"))
        uv_seconds = asyncio.run(timed_build("uv", uv_repo, work / "uv-state"))
    print(f"repo2docker build of a Dockerfile repository ({args.package}): "
          f"{docker_seconds:.1f} s")
    print(f"uv build of the same requirements.txt                        : {uv_seconds:.1f} s")
    print(f"ratio (repo2docker / uv): {docker_seconds / uv_seconds:.1f}")


if __name__ == "__main__":
    main()
