"""Copy repo2docker's test repositories into ``tests/fixtures/r2d-corpus/``.

    .venv/bin/python bench/fidelity_corpus.py GIT_DIR [--commit SHA] [--dest DIR]

``GIT_DIR`` is a clone (or bare mirror) of https://github.com/jupyterhub/repo2docker.
Every folder of its ``tests/`` that holds a ``verify`` script is one case, copied whole
(files only, with their executable bit; ``tests/unit`` is code, not cases). Cases with a
file larger than ``--max-bytes`` are skipped and named. Reads git objects only: no
network, no checkout, and nothing of repo2docker is run. The commit copied is written to
the corpus README, which says where the files come from and under which licence.

The copy is checked in, so the test suite never needs the network for it; run this again
to move the corpus to a newer repo2docker, then review ``expected.toml``.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path, PurePosixPath

ROOT = Path(__file__).resolve().parents[1]
DEST = ROOT / "tests" / "fixtures" / "r2d-corpus"
#: Files of ours in the corpus folder, kept when the cases are copied again.
OURS = {"README.md", "expected.toml", "ruff.toml"}


def _git(git_dir: Path, *args: str) -> bytes:
    return subprocess.run(["git", f"--git-dir={git_dir}", *args], check=True,
                          capture_output=True).stdout


def _resolve_git_dir(path: Path) -> Path:
    """A work tree's ``.git`` or a bare repository."""
    return path / ".git" if (path / ".git").exists() else path


def list_cases(git_dir: Path, commit: str) -> dict[str, list[tuple[str, str, int]]]:
    """``case -> [(path in case, mode, size)]`` for every folder of ``tests/`` with a
    ``verify`` file."""
    out = _git(git_dir, "ls-tree", "-r", "-l", "-z", commit, "--", "tests").decode()
    entries: list[tuple[str, str, int]] = []
    for record in filter(None, out.split("\0")):
        meta, _, path = record.partition("\t")
        mode, kind, _sha, size = meta.split()
        if kind == "blob":
            entries.append((path, mode, int(size) if size.isdigit() else 0))
    case_dirs = {str(PurePosixPath(p).parent) for p, _, _ in entries
                 if PurePosixPath(p).name == "verify" and not p.startswith("tests/unit/")}
    cases: dict[str, list[tuple[str, str, int]]] = {}
    for case_dir in sorted(case_dirs):
        prefix = case_dir + "/"
        cases[case_dir.removeprefix("tests/")] = [
            (p.removeprefix(prefix), mode, size) for p, mode, size in entries
            if p.startswith(prefix)]
    return cases


def copy_cases(git_dir: Path, commit: str, dest: Path, max_bytes: int) -> tuple[list[str],
                                                                               list[str]]:
    """Copy every case under ``dest``; returns (copied, skipped with reason)."""
    copied: list[str] = []
    skipped: list[str] = []
    for child in dest.iterdir() if dest.is_dir() else []:
        if child.name not in OURS:
            shutil.rmtree(child) if child.is_dir() else child.unlink()
    for case, files in list_cases(git_dir, commit).items():
        big = [f"{p} ({size} bytes)" for p, _, size in files if size > max_bytes]
        if big:
            skipped.append(f"{case}: {', '.join(big)}")
            continue
        for rel, mode, _ in files:
            if mode not in ("100644", "100755"):
                skipped.append(f"{case}/{rel}: git mode {mode} (not a plain file)")
                continue
            target = dest / case / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(_git(git_dir, "show", f"{commit}:tests/{case}/{rel}"))
            target.chmod(0o755 if mode == "100755" else 0o644)
        copied.append(case)
    return copied, skipped


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("git_dir", type=Path, help="a clone or mirror of jupyterhub/repo2docker")
    parser.add_argument("--commit", default="HEAD")
    parser.add_argument("--dest", type=Path, default=DEST)
    parser.add_argument("--max-bytes", type=int, default=20_000,
                        help="skip cases with a file larger than this (default 20000)")
    args = parser.parse_args(argv)
    git_dir = _resolve_git_dir(args.git_dir)
    commit = _git(git_dir, "rev-parse", f"{args.commit}^{{commit}}").decode().strip()
    args.dest.mkdir(parents=True, exist_ok=True)
    copied, skipped = copy_cases(git_dir, commit, args.dest, args.max_bytes)
    described = _git(git_dir, "describe", "--tags", "--always", commit).decode().strip()
    print(f"repo2docker {described} ({commit}): {len(copied)} cases copied to {args.dest}")
    for line in skipped:
        print(f"skipped {line}")
    print("Update the commit in the corpus README and review expected.toml.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
