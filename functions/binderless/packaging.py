"""Stage the Chalice project for packaging: ``app.py`` plus this package vendored beside it.

Chalice deploys ``app.py``, ``chalicelib/``, ``vendor/`` and the wheels named in
``requirements.txt``. binderless is not on PyPI, so ``stage_chalice_project``
copies it into ``vendor/`` of a fresh directory; ``chalice package`` runs there.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

__all__ = ["FUNCTIONS_DIR", "PackagingFailed", "chalice_package", "stage_chalice_project"]

FUNCTIONS_DIR = Path(__file__).resolve().parents[1]
PACKAGE_DIR = Path(__file__).resolve().parent
IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", ".mypy_cache")


def stage_chalice_project(dest: Path) -> Path:
    """Copy the Chalice project into ``dest`` (which must not exist) and vendor binderless."""
    shutil.copytree(FUNCTIONS_DIR / ".chalice", dest / ".chalice", ignore=IGNORE)
    for name in ("app.py", "requirements.txt"):
        shutil.copy2(FUNCTIONS_DIR / name, dest / name)
    shutil.copytree(PACKAGE_DIR, dest / "vendor" / "binderless", ignore=IGNORE)
    return dest


def chalice_package(project: Path, out: Path, *, stage: str = "prod",
                    environ: Mapping[str, str] | None = None,
                    merge_template: Path | None = None) -> Path:
    """Run ``chalice package`` (no AWS call; needs a region and no credentials) into ``out``,
    deep-merging ``merge_template`` (JSON or YAML) into the template it writes."""
    env = dict(environ if environ is not None else os.environ)
    env.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    env["AWS_EC2_METADATA_DISABLED"] = "true"
    chalice = Path(sys.executable).with_name("chalice")
    cmd = [str(chalice), "package", "--stage", stage, str(out)]
    if merge_template is not None:
        cmd[2:2] = ["--merge-template", str(merge_template.resolve())]
    result = subprocess.run(cmd, cwd=project, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise PackagingFailed(_why_packaging_failed(result.stdout + result.stderr))
    return out


class PackagingFailed(Exception):
    """``chalice package`` did not produce the Lambda package; the message says why."""


def _why_packaging_failed(output: str) -> str:
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    last = lines[-1] if lines else "no output"
    if "NoSuchPackageError" in output or "Could not satisfy the requirement" in output:
        return (f"chalice package could not download the Lambda's Python dependencies "
                f"({last.rpartition(': ')[2]}) from the package index. Check the network "
                "connection (or PIP_INDEX_URL), then run the command again.")
    return f"chalice package failed: {last}"
