"""Find a Python interpreter of a given version on this machine (never download one)."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
from pathlib import Path

from ..errors import UnsupportedRepository

__all__ = ["available_python", "default_python", "find_python"]


def _version_of(path: str) -> str | None:
    try:
        out = subprocess.run(
            [path, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True, text=True, timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def default_python() -> str:
    """The interpreter binderless itself runs on (its base, not its virtual env)."""
    base = Path(sys.base_prefix) / "bin"
    for name in (f"python{sys.version_info[0]}.{sys.version_info[1]}", "python3"):
        if (base / name).exists():
            return str(base / name)
    return sys.executable


def find_python(version: str, source: str = "runtime.txt") -> str:
    """Path of a ``python<version>`` (``"3.10"``) found on PATH, under pyenv or in /usr.

    Raises ``UnsupportedRepository`` naming ``source`` (the file that asked for the
    version) and the versions that are available, with no advice of its own.
    """
    if f"{sys.version_info[0]}.{sys.version_info[1]}" == version:
        return default_python()
    candidates: list[str] = []
    found = shutil.which(f"python{version}")
    if found:
        candidates.append(found)
    pyenv_root = os.environ.get("PYENV_ROOT", str(Path.home() / ".pyenv"))
    candidates += sorted(glob.glob(f"{pyenv_root}/versions/{version}.*/bin/python{version}"),
                         reverse=True)
    candidates += [f"/usr/bin/python{version}", f"/usr/local/bin/python{version}"]
    for path in candidates:
        if Path(path).exists() and _version_of(path) == version:
            return path
    versions = {
        v for p in glob.glob(f"{pyenv_root}/versions/[23].*/bin/python")
        + glob.glob("/usr/bin/python3.*[0-9]") + glob.glob("/usr/local/bin/python3.*[0-9]")
        if (v := _version_of(p))
    } | {f"{sys.version_info[0]}.{sys.version_info[1]}"}
    available = sorted(versions, key=lambda v: tuple(int(x) for x in v.split(".")))
    # What and why only: the builder that calls this adds the one piece of advice that
    # fits its situation (``uvbuilder.advise``), so it is never said twice.
    raise UnsupportedRepository(
        f"{source} asks for Python {version}, which is not installed on this machine "
        f"(found here: {', '.join(available)}), and the uv builder uses only Pythons "
        "installed here.",
    )


def available_python(version: str) -> str | None:
    """Path of a ``python<version>`` found here, or ``None``."""
    try:
        return find_python(version)
    except UnsupportedRepository:
        return None
