#!/usr/bin/env python3
"""Set up binderless on a fresh machine, then run it or its test suite.

    python3 dev.py serve [binderless serve options]   # local mode: serve and launch the example
    python3 dev.py test [pytest options]               # ruff, mypy, docs, and the whole test suite

Needs only Python 3.11 or newer. Creates `.venv/` beside this file, installs the
project into it with uv, and (for the tests) installs Debian's Chromium when it
is missing and the browser tests' npm packages (`npm ci` in tests/js). Re-running is
cheap: nothing is reinstalled unless pyproject.toml or tests/js/package-lock.json changed.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / "bin"
STAMP = VENV / ".binderless-installed"
# The browser tests' npm packages (thebe, axe-core), pinned by tests/js/package-lock.json.
JS_DIR = ROOT / "tests" / "js"
JS_STAMP = JS_DIR / "node_modules" / ".binderless-installed"

# No AWS SDK or CLI started from here may look for credentials on the network.
SAFE_AWS_ENV = {
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SECURITY_TOKEN": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
}


def say(message: str) -> None:
    print(f"==> {message}", flush=True)


def run(cmd: list[str], env: dict[str, str] | None = None) -> None:
    result = subprocess.run(cmd, cwd=ROOT, env=env)
    if result.returncode != 0:
        sys.exit(f"dev.py: `{' '.join(cmd)}` failed with exit code {result.returncode}")


def base_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(SAFE_AWS_ENV)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["NO_MKDOCS_2_WARNING"] = "1"
    env.setdefault("UV_PYTHON_DOWNLOADS", "never")
    return env


def setup_python() -> None:
    if sys.version_info < (3, 11):  # noqa: UP036 - dev.py may be started by an older python3
        sys.exit("dev.py: binderless needs Python 3.11 or newer; run it with python3.11.")
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if STAMP.exists() and STAMP.read_text().strip() == wanted:
        return
    if not (BIN / "python").exists():
        say("creating .venv")
        run([sys.executable, "-m", "venv", str(VENV)])
    if not (BIN / "uv").exists():
        say("installing uv into .venv")
        run([str(BIN / "python"), "-m", "pip", "install", "--quiet", "uv"], env=base_env())
    say("installing binderless and its development tools into .venv")
    run(
        [str(BIN / "uv"), "pip", "install", "--quiet", "--python", str(BIN / "python"),
         "-e", ".[dev]"],
        env=base_env(),
    )
    STAMP.write_text(wanted + "\n")


def setup_chromium() -> None:
    if shutil.which("chromium") or Path("/usr/bin/chromium").exists():
        return
    say("installing Debian's chromium for the browser tests")
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    run([*sudo, "apt-get", "update", "-qq"], env=env)
    run([*sudo, "apt-get", "install", "-y", "-qq", "--no-install-recommends", "chromium"], env=env)


def setup_npm() -> None:
    """`npm ci` in tests/js when its lock file changed (or node_modules is missing)."""
    wanted = hashlib.sha256((JS_DIR / "package.json").read_bytes()
                            + (JS_DIR / "package-lock.json").read_bytes()).hexdigest()
    if JS_STAMP.exists() and JS_STAMP.read_text().strip() == wanted:
        return
    npm = shutil.which("npm")
    if npm is None:
        sys.exit("dev.py: npm is missing. The browser tests load thebe and axe-core from the npm "
                 "registry: install Node.js with npm (on Debian: apt-get install -y nodejs npm), "
                 "then run this again.")
    say("installing the browser tests' npm packages (npm ci in tests/js)")
    run([npm, "ci", "--prefix", str(JS_DIR), "--ignore-scripts", "--no-audit", "--no-fund"],
        env=base_env())
    JS_STAMP.write_text(wanted + "\n")


def serve(args: list[str]) -> None:
    setup_python()
    env = base_env()
    cmd = [str(BIN / "binderless"), "serve", "--demo", *args]
    say("starting: binderless serve --demo " + " ".join(args))
    os.execve(cmd[0], cmd, env)


def test(args: list[str]) -> None:
    setup_python()
    setup_chromium()
    setup_npm()
    env = base_env()
    say("ruff")
    run([str(BIN / "ruff"), "check", "functions", "tests", "bench", "dev.py"], env=env)
    say("mypy")
    run([str(BIN / "mypy")], env=env)
    say("mkdocs build --strict")
    run([str(BIN / "mkdocs"), "build", "--strict", "--quiet", "--site-dir", "site-build"], env=env)
    say("pytest")
    run([str(BIN / "python"), "-m", "pytest", *args], env=env)


def main() -> None:
    commands = {"serve": serve, "test": test}
    if len(sys.argv) < 2 or sys.argv[1] not in commands:
        sys.exit(__doc__)
    commands[sys.argv[1]](sys.argv[2:])


if __name__ == "__main__":
    main()
