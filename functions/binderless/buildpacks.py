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

__all__ = ["BUILDPACK_NAMES", "detect_buildpack"]

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
import json
from repo2docker.app import Repo2Docker
r2d = Repo2Docker()
found = None
for cls in r2d.buildpacks:
    bp = cls(base_image={BASE_IMAGE!r})
    if bp.detect():
        found = cls.__name__
        break
print(json.dumps(found or r2d.default_buildpack.__name__))
"""


def detect_buildpack(checkout: Path) -> str:
    """Return the repo2docker buildpack class name that would build ``checkout``."""
    try:
        result = subprocess.run(
            [sys.executable, "-c", _DETECT],
            cwd=checkout, capture_output=True, text=True, timeout=60, check=True,
        )
    except subprocess.CalledProcessError as exc:
        last = (exc.stderr.strip().splitlines() or ["no output"])[-1]
        raise UnsupportedRepository(
            f"repo2docker could not read this repository's configuration: {last}"
        ) from exc
    name = json.loads(result.stdout.strip().splitlines()[-1])
    return str(name)
