"""Fidelity to repo2docker, measured on repo2docker's own test repositories.

    .venv/bin/python bench/fidelity.py [--case PATTERN]... [--plan-only] [--jobs N]
    .venv/bin/python bench/fidelity.py --expected-table     # the docs' table, no run

The corpus is ``tests/fixtures/r2d-corpus/`` (copied by ``bench/fidelity_corpus.py``):
every folder with a ``verify`` script is one case. Each case is launched as a visitor
would launch it: committed to a local git repository and opened through ``/build`` on a
real ``binderless serve --builder uv`` (plan, uv build, session start). Once the session
is ready, its ``verify`` runs the way repo2docker's tests run it (``./verify`` from the
repository folder, which is the home folder, inside the container): here as the
session's user, in the session's folder, with the exact environment of the session's
Jupyter server (read from ``/proc``, so a ``start`` script's exports are in it).

Every case ends in one class:

* PASS: ready, and ``verify`` exits 0;
* REFUSED: a ``failed`` event with a 4xx status whose message names what would build it;
* DIFFERENCE: ready, and ``verify`` fails only on what ``expected.toml`` documents;
* WRONG: ready, and ``verify`` fails otherwise (the environment is not the author's);
* CRASH: a 5xx, a stream that ends without ``ready`` or ``failed``, or an error here;
* UNCLEAR: a 4xx refusal that does not say what would build the repository;
* SKIPPED: not run (``host_effects``: its build would change this machine).

``--plan-only`` stops each case before its first package is installed: the real
builder runs on the checkout (plan, repo2docker's detection, the refusals), with a uv
that answers questions (``uv python find``) but records the first thing it would make
(``uv venv``, ``uv pip install``, ``uv tool run``) and stops there. Classes: BUILDS,
REFUSED, UNCLEAR, CRASH. It takes seconds and needs no network.

The table compares each result with ``expected.toml``; ``pending`` marks a rule of the
uv builder not yet fixed (issue 16), so its result is shown but not held against it.
Exit status 1 on any WRONG, CRASH or UNCLEAR, or any result other than expected.
Talks to 127.0.0.1 and the package index only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fnmatch
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for _path in (ROOT, ROOT / "functions"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

CORPUS = ROOT / "tests" / "fixtures" / "r2d-corpus"
EXPECTED = CORPUS / "expected.toml"
CLASSES = ("PASS", "REFUSED", "DIFFERENCE")
#: What a refusal must name: something that builds the repository when uv cannot.
NAMES_A_BUILDER = re.compile(r"repo2docker|--builder|docker", re.IGNORECASE)
#: Seconds one ``verify`` may run (some install packages).
VERIFY_TIMEOUT = 600.0
#: Marks in the docs where the generated table goes.
DOCS_BEGIN = "<!-- fidelity-table:begin (bench/fidelity.py --expected-table) -->"
DOCS_END = "<!-- fidelity-table:end -->"


@dataclass(frozen=True)
class Expectation:
    """One case of ``expected.toml``: its class, why, and what is not yet so."""

    case: str
    klass: str
    reason: str
    #: DIFFERENCE: text that ``verify``'s output contains when it fails on the difference.
    difference: str = ""
    #: A rule of the uv builder not yet fixed: the full run may not give ``klass`` yet.
    pending: str = ""
    #: Like ``pending``, for the plan stage (``--plan-only``).
    plan_pending: str = ""
    #: Why the build would change this machine (the full run skips it unless asked).
    host_effects: str = ""
    #: The Python version the class holds with; without it here, the case is refused.
    needs_python: str = ""

    @property
    def plan_class(self) -> str:
        """The plan stage's class: everything but a refusal builds."""
        return "REFUSED" if self.klass == "REFUSED" else "BUILDS"


@dataclass
class Outcome:
    case: str
    klass: str
    detail: str = ""
    seconds: float = 0.0
    log: list[str] = field(default_factory=list)


def corpus_cases(corpus: Path = CORPUS) -> list[str]:
    """Every case of the corpus: the folders holding a ``verify`` script."""
    return sorted(str(p.parent.relative_to(corpus)) for p in corpus.rglob("verify"))


def python_here(version: str) -> bool:
    """Whether the uv builder finds Python ``version`` on this machine."""
    from binderless.backends.pythons import find_python
    from binderless.errors import UnsupportedRepository

    try:
        find_python(version)
    except UnsupportedRepository:
        return False
    return True


def load_expectations(path: Path = EXPECTED,
                      python_here: Callable[[str], bool] = python_here,
                      ) -> dict[str, Expectation]:
    """``expected.toml``, for this machine: a case whose ``needs_python`` is not
    installed here is expected to be refused."""
    data = tomllib.loads(path.read_text())
    have: dict[str, bool] = {}
    found: dict[str, Expectation] = {}
    for case, entry in data.get("cases", {}).items():
        klass = entry.get("class", "")
        if klass not in CLASSES:
            raise ValueError(f"{path}: {case}: class {klass!r} is not one of {CLASSES}")
        if klass == "DIFFERENCE" and not entry.get("difference"):
            raise ValueError(f"{path}: {case}: a DIFFERENCE names the text verify fails with")
        exp = Expectation(case=case, klass=klass, reason=entry.get("reason", ""),
                          difference=entry.get("difference", ""),
                          pending=entry.get("pending", ""),
                          plan_pending=entry.get("plan_pending", ""),
                          host_effects=entry.get("host_effects", ""),
                          needs_python=str(entry.get("needs_python", "")))
        version = exp.needs_python
        if version and version not in have:
            have[version] = python_here(version)
        if version and not have[version]:
            exp = Expectation(case=case, klass="REFUSED",
                              reason=f"Python {version} is not installed here")
        found[case] = exp
    return found


def classify_failure(status: int, message: str) -> str:
    """A ``failed`` event's class: a clear refusal, an unclear one, or a crash (a 429,
    the server being full, is the run's fault, not the repository's: a crash too)."""
    if 400 <= status < 500 and status != 429:
        return "REFUSED" if NAMES_A_BUILDER.search(message) else "UNCLEAR"
    return "CRASH"


def classify_verify(returncode: int, output: str, expected: Expectation | None) -> str:
    if returncode == 0:
        return "PASS"
    if expected is not None and expected.difference and expected.difference in output:
        return "DIFFERENCE"
    return "WRONG"


# ----- plan stage: the real builder, stopped before its first install ------------------

STUB_UV = """#!/bin/sh
# binderless fidelity: let uv answer questions, stop it at the first thing it would make.
case "$1" in
  python|cache|version|--version|help|--help) exec {uv} "$@";;
esac
echo "$*" >> {marker}
echo "error: stopped by fidelity --plan-only" >&2
exit 97
"""


async def plan_case(case_dir: Path, work: Path) -> Outcome:
    """Run the uv builder on a copy of ``case_dir`` up to its first install."""
    from binderless.backends.uvbuilder import UvBuilder
    from binderless.errors import BinderlessError
    from binderless.settings import Settings

    began = time.perf_counter()
    work.mkdir(parents=True)
    checkout = work / "checkout"
    shutil.copytree(case_dir, checkout, symlinks=True)
    marker = work / "reached"
    builder = UvBuilder(Settings(state_dir=work / "state", builder="uv"))
    stub = work / "uv"
    stub.write_text(STUB_UV.format(marker=marker, uv=builder.uv))
    stub.chmod(0o755)
    builder.uv = str(stub)
    lines: list[str] = []
    outcome = Outcome(case="", klass="CRASH")
    try:
        plan = await asyncio.to_thread(builder.plan, checkout)
        await builder.build(plan, checkout, lines.append)
        outcome = Outcome("", "CRASH", "the build finished without installing anything")
    except BinderlessError as exc:
        if marker.exists():
            first = marker.read_text().splitlines()[0]
            outcome = Outcome("", "BUILDS", f"uv {first[:160]}")
        else:
            outcome = Outcome("", classify_failure(exc.status_code, exc.user_message()),
                              f"{exc.status_code}: {exc.user_message()}")
    except Exception as exc:  # a crash is a result here
        outcome = Outcome("", "CRASH", f"{type(exc).__name__}: {exc}")
    outcome.seconds = time.perf_counter() - began
    outcome.log = lines
    return outcome


def run_plan_stage(cases: Iterable[str], corpus: Path = CORPUS, jobs: int = 4,
                   ) -> dict[str, Outcome]:
    """The plan stage of every case, ``jobs`` at a time (each in a thread with its own
    event loop: parts of the builder block, as they may in a build)."""
    from binderless.backends.uvbuilder import uv_binary

    cases = list(cases)
    # Once before the threads: its first call fills sysconfig's variables, which is not
    # safe to do from several threads at once.
    uv_binary()
    with tempfile.TemporaryDirectory(prefix="fidelity-plan-") as tmp:
        def one(index: int, case: str) -> Outcome:
            outcome = asyncio.run(plan_case(corpus / case, Path(tmp) / str(index)))
            outcome.case = case
            return outcome

        with ThreadPoolExecutor(max_workers=jobs) as pool:
            outcomes = list(pool.map(one, range(len(cases)), cases))
    return {o.case: o for o in outcomes}


# ----- full run: a real server, a real session, repo2docker's verify -------------------

def session_process(token: str) -> int | None:
    """The pid of the session's Jupyter server: the process whose environment carries
    the session's token and id (kernels, started later, are its children)."""
    wanted = f"JUPYTER_TOKEN={token}".encode()
    with os.scandir("/proc") as entries:
        pids = [entry.name for entry in entries if entry.name.isdigit()]
    for pid in pids:
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if wanted in environ and b"jupyter" in cmdline:
            return int(pid)
    return None


def session_context(pid: int) -> tuple[dict[str, str], str, int]:
    """The environment, working folder and uid of process ``pid``."""
    env: dict[str, str] = {}
    for item in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
        key, sep, value = item.decode(errors="surrogateescape").partition("=")
        if sep:
            env[key] = value
    cwd = os.readlink(f"/proc/{pid}/cwd")
    uid = os.getuid()
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            uid = int(line.split()[1])
    return env, cwd, uid


def run_verify(pid: int) -> tuple[int, str]:
    """Run ``./verify`` inside the session of Jupyter process ``pid``, as repo2docker's
    tests run it in the container: from the repository (home) folder, as its user."""
    env, cwd, uid = session_context(pid)
    as_user: dict[str, int] = {}
    if uid != os.getuid():
        as_user = {"user": uid, "group": uid}
    try:
        done = subprocess.run(["./verify"], cwd=cwd, env=env, capture_output=True, text=True,
                              timeout=VERIFY_TIMEOUT, stdin=subprocess.DEVNULL,
                              check=False, **as_user)  # type: ignore[call-overload]
    except FileNotFoundError as exc:
        # ENOENT from exec: verify's #! line names an interpreter that is not here.
        first = Path(cwd, "verify").read_text(errors="replace").splitlines()[:1]
        return 127, f"bad interpreter: {first[0] if first else ''} ({exc})"
    except subprocess.TimeoutExpired:
        return 124, f"verify ran longer than {VERIFY_TIMEOUT:.0f} s"
    return done.returncode, (done.stdout or "") + (done.stderr or "")


def launch_case(server_url: Callable[[str], str], case: str, case_dir: Path, repos: Path,
                expected: Expectation | None) -> Outcome:
    """Launch one case on the server and classify it."""
    from tests.conftest import file_spec, make_git_repo
    from tests.e2e.streams import read_stream

    began = time.perf_counter()
    repo = make_git_repo(case_dir, repos / case.replace("/", "--"))
    try:
        stream = read_stream(server_url(f"/build/{file_spec(repo)}"), timeout=1800)
    except Exception as exc:  # a broken stream is a crash of the launch
        return Outcome(case, "CRASH", f"the event stream broke: {exc}",
                       time.perf_counter() - began)
    log = [str(e.get("message", "")) for e in stream.events]
    final = stream.final if stream.events else {}
    if final.get("phase") == "failed":
        status = int(final.get("status_code", 0))
        message = str(final.get("message", "")).strip()
        return Outcome(case, classify_failure(status, message), f"{status}: {message}",
                       time.perf_counter() - began, log)
    if final.get("phase") != "ready":
        return Outcome(case, "CRASH", f"the stream ended at {final.get('phase')!r}",
                       time.perf_counter() - began, log)
    token = str(final["token"])
    pid: int | None = None
    try:
        pid = session_process(token)
        if pid is None:
            return Outcome(case, "CRASH", "ready, but no Jupyter process has its token",
                           time.perf_counter() - began, log)
        code, output = run_verify(pid)
    finally:
        _shut_down(str(final["url"]), token, pid)
    klass = classify_verify(code, output, expected)
    tail = " | ".join(line.strip() for line in output.strip().splitlines()[-3:])
    detail = "verify passed" if code == 0 else f"verify exit {code}: {tail}"
    return Outcome(case, klass, detail, time.perf_counter() - began, [*log, output])


def _shut_down(url: str, token: str, pid: int | None) -> None:
    """End the session as its user would (Jupyter's shutdown); should its server still
    run seconds later, end its process group, so that sessions do not pile up."""
    import httpx

    with contextlib.suppress(httpx.HTTPError):
        httpx.post(f"{url}api/shutdown", headers={"Authorization": f"token {token}"},
                   timeout=10)
    if pid is None:
        return
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
        time.sleep(0.1)
    with contextlib.suppress(OSError):
        os.killpg(pid, signal.SIGTERM)


def default_uv_cache() -> str:
    """uv's own cache folder, so that repeated runs download nothing again."""
    from binderless.backends.uvbuilder import uv_binary

    done = subprocess.run([uv_binary(), "cache", "dir"], capture_output=True, text=True,
                          check=False)
    return done.stdout.strip()


def run_full(cases: Iterable[str], expected: dict[str, Expectation], *, jobs: int = 2,
             corpus: Path = CORPUS, uv_cache: str = "", host_effects: bool = False,
             progress: Callable[[Outcome], None] | None = None) -> dict[str, Outcome]:
    """Launch every case on one ``binderless serve --builder uv``, ``jobs`` at a time."""
    from tests.conftest import start_server, stop_server

    results: dict[str, Outcome] = {}
    to_run = []
    for case in cases:
        exp = expected.get(case)
        if exp is not None and exp.host_effects and not host_effects:
            results[case] = Outcome(case, "SKIPPED", f"host effects: {exp.host_effects}")
        else:
            to_run.append(case)
    if not to_run:
        return results
    with tempfile.TemporaryDirectory(prefix="fidelity-") as tmp:
        env = {"BINDERLESS_UV_CACHE_DIR": uv_cache} if uv_cache else {}
        # Room for every session: a stopped one may hold its slot until it is reaped.
        server = start_server(Path(tmp) / "state", "--builder", "uv", "--max-sessions",
                              str(len(to_run) + jobs), "--max-concurrent-builds", str(jobs),
                              env=env)
        try:
            with ThreadPoolExecutor(max_workers=jobs) as pool:
                futures = [pool.submit(launch_case, server.url, case, corpus / case,
                                       Path(tmp) / "repos", expected.get(case))
                           for case in to_run]
                for future in futures:
                    outcome = future.result()
                    results[outcome.case] = outcome
                    if progress is not None:
                        progress(outcome)
        finally:
            stop_server(server)
    return results


# ----- the table -----------------------------------------------------------------------

def compare(outcome: Outcome, exp: Expectation | None, plan_stage: bool) -> str:
    """``ok``, ``pending`` (a known rule not yet fixed) or ``UNEXPECTED``."""
    if outcome.klass == "SKIPPED":
        return "skipped"
    if exp is None:
        return "UNEXPECTED (not in expected.toml)"
    wanted = exp.plan_class if plan_stage else exp.klass
    if outcome.klass == wanted:
        return "ok"
    if exp.plan_pending if plan_stage else exp.pending:
        return "pending"
    return f"UNEXPECTED (expected {wanted})"


def print_table(results: dict[str, Outcome], expected: dict[str, Expectation],
                plan_stage: bool, out: Callable[[str], None] = print) -> bool:
    """Print the table and the counts; return whether the run is acceptable."""
    width = max((len(c) for c in results), default=4)
    out(f"{'case':<{width}}  {'class':<10} {'vs expected':<12} {'s':>5}  detail")
    bad = False
    for case in sorted(results):
        outcome = results[case]
        verdict = compare(outcome, expected.get(case), plan_stage)
        if outcome.klass in ("WRONG", "CRASH", "UNCLEAR") or verdict.startswith("UNEXPECTED"):
            bad = bad or verdict != "pending"
        detail = " ".join(outcome.detail.split())
        out(f"{case:<{width}}  {outcome.klass:<10} {verdict:<12} {outcome.seconds:5.1f}  "
            f"{detail[:200]}")
    counts = {k: sum(1 for o in results.values() if o.klass == k) for k in
              ("PASS", "BUILDS", "REFUSED", "DIFFERENCE", "WRONG", "CRASH", "UNCLEAR",
               "SKIPPED")}
    pending = sum(1 for c, o in results.items()
                  if compare(o, expected.get(c), plan_stage) == "pending")
    out("")
    out(" / ".join(f"{k.lower()} {v}" for k, v in counts.items() if v or k in CLASSES)
        + f"  ({len(results)} cases; {pending} pending a builder fix)")
    return not bad


def expected_table(expected: dict[str, Expectation]) -> str:
    """``expected.toml`` as the Markdown table the docs carry (load it with every Python
    taken as installed, so that the table is the same on every machine)."""
    rows = ["| case | class | why |", "|---|---|---|"]
    for case in sorted(expected):
        exp = expected[case]
        why = exp.reason + (f" (where Python {exp.needs_python} is installed)"
                             if exp.needs_python else "")
        why += f" (not yet: {exp.pending})" if exp.pending else ""
        rows.append(f"| `{case}` | {exp.klass} | {why.replace('|', '/')} |")
    counts = {k: sum(1 for e in expected.values() if e.klass == k) for k in CLASSES}
    rows.append("")
    rows.append(f"{len(expected)} cases: " + ", ".join(
        f"{v} {k.lower()}" for k, v in counts.items()) + ".")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", action="append", default=[], metavar="PATTERN",
                        help="only cases matching this glob (repeatable), e.g. 'pipfile/*'")
    parser.add_argument("--plan-only", action="store_true",
                        help="stop each case before its first install (seconds, no network)")
    parser.add_argument("--jobs", type=int, default=2, help="cases at once (default 2)")
    parser.add_argument("--uv-cache", default=None,
                        help="uv cache for the server's builds (default: uv's own)")
    parser.add_argument("--host-effects", action="store_true",
                        help="also run cases whose build changes this machine")
    parser.add_argument("--expected-table", action="store_true",
                        help="print expected.toml as the docs' Markdown table and exit")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="print each case's build log and verify output")
    args = parser.parse_args(argv)
    expected = load_expectations()
    if args.expected_table:
        print(expected_table(load_expectations(python_here=lambda _version: True)))
        return 0
    cases = [c for c in corpus_cases() if not args.case
             or any(fnmatch.fnmatch(c, pattern) for pattern in args.case)]
    missing = sorted(set(corpus_cases()) - set(expected))
    if missing:
        print(f"cases without an expectation: {', '.join(missing)}", file=sys.stderr)
    if args.plan_only:
        results = run_plan_stage(cases, jobs=max(args.jobs, 4))
    else:
        uv_cache = default_uv_cache() if args.uv_cache is None else args.uv_cache

        def progress(outcome: Outcome) -> None:
            print(f"  {outcome.case}: {outcome.klass} ({outcome.seconds:.1f} s)",
                  file=sys.stderr, flush=True)

        results = run_full(cases, expected, jobs=args.jobs, uv_cache=uv_cache,
                           host_effects=args.host_effects, progress=progress)
    if args.verbose:
        for case in sorted(results):
            print(f"===== {case}\n" + "".join(results[case].log))
    ok = print_table(results, expected, args.plan_only)
    return 0 if ok and not missing else 1


if __name__ == "__main__":
    os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
    sys.exit(main())
