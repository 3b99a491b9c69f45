"""Buildpack detection with repo2docker's own classes.

repo2docker's ``detect()`` methods read paths relative to the current directory,
so detection runs in a short-lived child process started in the checkout; the
server never changes its own working directory.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from .errors import UnsupportedRepository

__all__ = ["BUILDPACK_NAMES", "detect_buildpack", "detect_buildpacks"]

#: repo2docker class name -> the name people know.
BUILDPACK_NAMES = {
    "LegacyBinderDockerBuildPack": "Dockerfile (legacy)",
    "DockerBuildPack": "Dockerfile",
    "JuliaProjectTomlBuildPack": "Julia",
    "JuliaRequireBuildPack": "Julia (REQUIRE)",
    "NixBuildPack": "Nix",
    "RBuildPack": "R",
    "CondaBuildPack": "conda (environment.yml)",
    "PipfileBuildPack": "Pipfile",
    "PythonBuildPack": "Python",
}

BASE_IMAGE = "docker.io/library/buildpack-deps:jammy"

_DETECT = f"""
import json, os, sys
from repo2docker.app import Repo2Docker
r2d = Repo2Docker()
found = {{}}
for checkout in sys.argv[1:]:
    os.chdir(checkout)
    name = r2d.default_buildpack.__name__
    for cls in r2d.buildpacks:
        if cls(base_image={BASE_IMAGE!r}).detect():
            name = cls.__name__
            break
    found[checkout] = name
print(json.dumps(found))
"""


def detect_buildpacks(checkouts: list[Path]) -> dict[Path, str]:
    """The repo2docker buildpack class name that would build each checkout.

    One child process for all of them: importing repo2docker costs about a second."""
    if not checkouts:
        return {}
    try:
        result = subprocess.run(
            [sys.executable, "-c", _DETECT, *(str(c.absolute()) for c in checkouts)],
            capture_output=True, text=True, timeout=120, check=True,
        )
    except subprocess.CalledProcessError as exc:
        last = (exc.stderr.strip().splitlines() or ["no output"])[-1]
        raise UnsupportedRepository(
            f"repo2docker could not read this repository's configuration: {last}"
        ) from exc
    found = json.loads(result.stdout.strip().splitlines()[-1])
    return {c: str(found[str(c.absolute())]) for c in checkouts}


def detect_buildpack(checkout: Path) -> str:
    """Return the repo2docker buildpack class name that would build ``checkout``."""
    return detect_buildpacks([checkout])[checkout]
