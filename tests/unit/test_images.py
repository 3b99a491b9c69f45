"""The container image definitions: what they copy exists, and they run the right program.

No Docker engine runs here, so the images are not built in the suite; this catches the
mistakes a build would (a missing file, a wrong command) without one.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
IMAGES = {"functions/gateway.Dockerfile": "binderless gateway",
          "build-runner/Dockerfile": "run_repo2docker.py"}


@pytest.mark.parametrize("dockerfile", sorted(IMAGES))
def test_image_definition(dockerfile: str) -> None:
    text = (ROOT / dockerfile).read_text()
    instructions = re.sub(r"\\\n", " ", text).splitlines()
    copies = [line.split()[1:-1] for line in instructions if line.startswith("COPY ")]
    assert copies
    for sources in copies:
        for source in sources:
            if not source.startswith("--"):
                assert (ROOT / source).exists(), f"{dockerfile} copies missing {source}"
    run = " ".join(line for line in instructions if line.startswith(("CMD", "ENTRYPOINT")))
    run += " " + text
    assert IMAGES[dockerfile] in run
    assert re.search(r"^FROM \S+", text, re.MULTILINE) or "ARG PYTHON_IMAGE" in text
    assert "USER root" not in text or dockerfile.startswith("build-runner")  # runner needs dockerd
    shlex.split(instructions[-1])  # the last instruction is well-formed
