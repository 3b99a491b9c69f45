#!/usr/bin/env python3
"""Set up binderless on a fresh machine, then run it or its test suite.

    python3 dev.py serve [binderless serve options]   # local mode: serve and launch the example
    python3 dev.py test [pytest options]               # ruff, mypy, docs, and the whole test suite
    python3 dev.py engine [--stop]                     # the tests' own Docker engine and registry

Needs only Python 3.11 or newer. Creates `.venv/` beside this file, installs the
project into it with uv, and (for the tests) installs Debian's Chromium when it
is missing and the browser tests' npm packages (`npm ci` in tests/js). Re-running is
cheap: nothing is reinstalled unless pyproject.toml or tests/js/package-lock.json changed.

`engine` brings up a Docker engine of the project's own (Debian 13's docker.io, unpacked
into a cache folder, with its own socket, data root and exec root; never a system daemon),
a local registry standing in for ECR, and a local base image with Python, and prints
DOCKER_HOST=, REGISTRY= and BASE_IMAGE= as its last three lines. `test` runs the container
tier (tests/containers) against it; BINDERLESS_SKIP_CONTAINERS=1 skips that tier
explicitly, otherwise an engine that cannot start fails the run. The other tiers run on
two pytest-xdist workers (BINDERLESS_TEST_WORKERS sets how many; 0 runs them in one process).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
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


# ---------------------------------------------------------------------------------------
# The tests' own Docker engine (`dev.py engine`). Everything lives under ENGINE_DIR, which
# survives between runs on one machine: Debian 13's engine packages unpacked with `dpkg -x`
# (Debian 12's docker.io 20.10 has no named build contexts, which the runner needs), the
# engine's data root and exec root, the registry's storage, and a private apt state used
# only to download those packages (the system's apt sources are never changed).
ENGINE_DIR = Path(os.environ.get("BINDERLESS_ENGINE_DIR")
                  or Path.home() / ".cache" / "binderless-engine")
ENGINE_SUITE = "trixie"
ENGINE_DEBS = ("docker.io", "docker-cli", "docker-buildx", "containerd", "docker-registry")
#: Host packages from the machine's own Debian suite: runc (trixie's needs a newer glibc)
#: and mmdebstrap, which makes the base image without any registry.
HOST_DEBS = {"runc": "runc", "mmdebstrap": "mmdebstrap"}
BASE_NAME = "binderless-base:trixie"
BASE_PACKAGES = "python3,python3-venv,python3-pip,ca-certificates,git"
#: Set to 1 to skip the container tier of `dev.py test` on purpose (it fails otherwise).
SKIP_CONTAINERS = "BINDERLESS_SKIP_CONTAINERS"
ENGINE_START_SECONDS = 60


class EngineError(Exception):
    """The engine, registry or base image could not be brought up."""


def _engine_paths() -> dict[str, Path]:
    d = ENGINE_DIR
    return {"root": d / "root", "config": d / "config", "data": d / "data",
            "exec": d / "exec", "sock": d / "docker.sock", "apt": d / "apt",
            "registry": d / "registry"}


def engine_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment in which `docker` talks to the project's engine and finds buildx."""
    p = _engine_paths()
    env = base_env()
    tools = [str(p["root"] / "usr" / "bin"), str(p["root"] / "usr" / "sbin")]
    env["PATH"] = os.pathsep.join([*tools, env.get("PATH", "")])
    env["DOCKER_HOST"] = f"unix://{p['sock']}"
    env["DOCKER_CONFIG"] = str(p["config"])
    env.update(extra or {})
    return env


def _quiet(cmd: list[str], env: dict[str, str] | None = None,
           timeout: float | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout,
                          check=False)


def _must(cmd: list[str], what: str, env: dict[str, str] | None = None) -> str:
    done = _quiet(cmd, env=env)
    if done.returncode != 0:
        said = (done.stderr or done.stdout).strip().splitlines()[-15:]
        raise EngineError(f"{what} failed (`{' '.join(cmd[:4])} ...`, exit code "
                          f"{done.returncode}):\n    " + "\n    ".join(said))
    return done.stdout


def _host_packages() -> None:
    missing = [deb for tool, deb in HOST_DEBS.items()
               if not shutil.which(tool) and not Path("/usr/sbin", tool).exists()]
    if not missing:
        return
    if not shutil.which("apt-get"):
        raise EngineError("the container tier needs Debian (apt-get) to install "
                          + ", ".join(missing))
    say("installing " + ", ".join(missing) + " from the machine's Debian suite")
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    _must([*sudo, "apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing],
          "apt-get install " + " ".join(missing), env=env)


def _engine_packages() -> None:
    """Download Debian 13's engine packages with a private apt, and unpack them."""
    p = _engine_paths()
    stamp = p["root"] / ".binderless-debs"
    wanted = " ".join(ENGINE_DEBS)
    if stamp.exists() and stamp.read_text().strip() == wanted:
        return
    say(f"downloading Debian {ENGINE_SUITE}'s " + ", ".join(ENGINE_DEBS)
        + " (a private apt state; the system's apt sources are not changed)")
    apt = p["apt"]
    for sub in ("etc/sources.list.d", "etc/preferences.d", "etc/apt.conf.d",
                "state/lists/partial", "cache/archives/partial", "debs"):
        (apt / sub).mkdir(parents=True, exist_ok=True)
    (apt / "etc" / "sources.list").write_text(
        "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] "
        f"http://deb.debian.org/debian {ENGINE_SUITE} main\n")
    (apt / "state" / "status").touch()
    options = [f"-oDir::Etc={apt / 'etc'}", f"-oDir::State={apt / 'state'}",
               f"-oDir::State::status={apt / 'state' / 'status'}",
               f"-oDir::Cache={apt / 'cache'}", "-oAPT::Get::List-Cleanup=0",
               "-oDebug::NoLocking=1", "-qq"]
    _must(["apt-get", *options, "update"], f"apt-get update (private, {ENGINE_SUITE})")
    debs = apt / "debs"
    for old in debs.glob("*.deb"):
        old.unlink()
    done = subprocess.run(["apt-get", *options, "download", *ENGINE_DEBS], cwd=debs,
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise EngineError("apt-get download of the engine packages failed:\n"
                          + (done.stderr or done.stdout).strip())
    if p["root"].exists():
        shutil.rmtree(p["root"])
    p["root"].mkdir(parents=True)
    for deb in sorted(debs.glob("*.deb")):
        _must(["dpkg-deb", "-x", str(deb), str(p["root"])], f"dpkg-deb -x {deb.name}")
        deb.unlink()  # unpacked: the .deb is no longer needed
    stamp.write_text(wanted + "\n")


def _buildx_plugin() -> None:
    p = _engine_paths()
    plugin = p["config"] / "cli-plugins" / "docker-buildx"
    source = p["root"] / "usr" / "libexec" / "docker" / "cli-plugins" / "docker-buildx"
    if not source.exists():
        raise EngineError(f"docker-buildx is missing from {p['root']}: delete it and retry.")
    plugin.parent.mkdir(parents=True, exist_ok=True)
    if not plugin.exists():
        plugin.symlink_to(source)


def _filesystem_type(path: Path) -> str:
    """The type of the file system holding ``path``, from /proc/mounts."""
    best, kind = "", ""
    real = str(path.resolve())
    with contextlib.suppress(OSError):
        for line in Path("/proc/mounts").read_text().splitlines():
            fields = line.split()
            if len(fields) > 2 and (real == fields[1] or real.startswith(
                    fields[1].rstrip("/") + "/")) and len(fields[1]) >= len(best):
                best, kind = fields[1], fields[2]
    return kind


def _docker_answers(env: dict[str, str]) -> bool:
    try:
        # `docker info` exits 0 without a daemon; `docker version` does not.
        return _quiet(["docker", "version", "--format", "{{.Server.Version}}"], env=env,
                      timeout=10).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def _pid_alive(pidfile: Path) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        pid = int(pidfile.read_text().strip())
        os.kill(pid, 0)
        return pid
    return None


def _start_dockerd() -> None:
    p = _engine_paths()
    env = engine_env()
    if _docker_answers(env):
        return
    if os.geteuid() != 0:
        raise EngineError("the project's Docker engine runs as root: run dev.py as root "
                          "(as CI does), or set BINDERLESS_SKIP_CONTAINERS=1 to skip it.")
    if not shutil.which("runc", path=env["PATH"] + os.pathsep + "/usr/sbin"):
        raise EngineError("runc is missing (apt-get install runc).")
    pidfile = ENGINE_DIR / "dockerd.pid"
    stale = _pid_alive(pidfile)
    if stale is not None:
        _stop_pid(pidfile, "a dockerd that does not answer")
    for d in (p["data"], p["exec"]):
        d.mkdir(parents=True, exist_ok=True)
    driver = "overlay2" if _filesystem_type(p["data"]) == "ext4" else "vfs"
    say(f"starting the project's Docker engine ({driver}, socket {p['sock']})")
    cmd = ["dockerd", "--host", f"unix://{p['sock']}", "--data-root", str(p["data"]),
           "--exec-root", str(p["exec"]), "--pidfile", str(pidfile),
           "--storage-driver", driver,
           # No bridge, no iptables: the engine leaves the machine's network alone, so
           # builds and containers use the host's network (and loopback ports).
           "--bridge=none", "--iptables=false", "--ip6tables=false",
           "--insecure-registry", "127.0.0.1/8"]
    log = (ENGINE_DIR / "dockerd.log").open("ab")
    env["PATH"] += os.pathsep + "/usr/sbin"  # Debian 12's runc
    subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                     start_new_session=True)
    deadline = time.monotonic() + ENGINE_START_SECONDS
    while time.monotonic() < deadline:
        if _docker_answers(env):
            return
        time.sleep(0.5)
    tail = (ENGINE_DIR / "dockerd.log").read_text(errors="replace").splitlines()[-15:]
    raise EngineError(f"dockerd did not answer within {ENGINE_START_SECONDS} s; the end of "
                      f"{ENGINE_DIR / 'dockerd.log'}:\n    " + "\n    ".join(tail))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _registry_answers(port: int) -> bool:
    with contextlib.suppress(OSError), urllib.request.urlopen(
            f"http://127.0.0.1:{port}/v2/", timeout=3) as answer:
        return bool(answer.status == 200)
    return False


def _start_registry() -> str:
    """Debian's docker-registry on a loopback port (kept between runs when still free)."""
    p = _engine_paths()
    portfile = ENGINE_DIR / "registry.port"
    pidfile = ENGINE_DIR / "registry.pid"
    port = 0
    with contextlib.suppress(OSError, ValueError):
        port = int(portfile.read_text().strip())
    if port and _pid_alive(pidfile) and _registry_answers(port):
        return f"127.0.0.1:{port}"
    _stop_pid(pidfile, "the old registry")
    if not port or not _port_free(port):
        port = _free_port()
    p["registry"].mkdir(parents=True, exist_ok=True)
    config = ENGINE_DIR / "registry.yml"
    config.write_text(
        "version: 0.1\n"
        "log:\n  level: warn\n"
        f"storage:\n  filesystem:\n    rootdirectory: {p['registry']}\n"
        "  delete:\n    enabled: true\n"
        f"http:\n  addr: 127.0.0.1:{port}\n")
    say(f"starting the local registry on 127.0.0.1:{port}")
    log = (ENGINE_DIR / "registry.log").open("ab")
    proc = subprocess.Popen([str(p["root"] / "usr" / "bin" / "docker-registry"), "serve",
                             str(config)], stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                            start_new_session=True)
    pidfile.write_text(f"{proc.pid}\n")
    portfile.write_text(f"{port}\n")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if _registry_answers(port):
            return f"127.0.0.1:{port}"
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    tail = (ENGINE_DIR / "registry.log").read_text(errors="replace").splitlines()[-10:]
    raise EngineError("the registry did not start:\n    " + "\n    ".join(tail))


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _base_image(registry: str) -> str:
    """A Debian image with Python, pip, venv, git and this machine's CA certificates.

    Made with mmdebstrap from Debian's own packages (no Docker Hub), imported once, and
    pushed to the local registry so that engines inside containers can pull it too."""
    env = engine_env()
    if _quiet(["docker", "image", "inspect", BASE_NAME], env=env).returncode != 0:
        say(f"making the base image {BASE_NAME} with mmdebstrap (Debian {ENGINE_SUITE}, "
            "about 90 s)")
        tar = ENGINE_DIR / "rootfs.tar"
        # The machine's CA certificates: outgoing HTTPS may pass an intercepting proxy.
        hook = ('cp /usr/local/share/ca-certificates/*.crt "$1/usr/local/share/ca-certificates/"'
                ' 2>/dev/null || true; chroot "$1" update-ca-certificates >/dev/null')
        if not tar.exists():  # kept from an earlier run whose import failed
            partial = tar.with_suffix(".partial.tar")
            _must(["mmdebstrap", "--quiet", "--variant=minbase", f"--include={BASE_PACKAGES}",
                   f"--customize-hook={hook}", ENGINE_SUITE, str(partial),
                   "http://deb.debian.org/debian"], "mmdebstrap", env=base_env())
            partial.rename(tar)
        _must(["docker", "import", "--change", "ENV LANG=C.UTF-8",
               "--change", 'CMD ["/bin/bash"]', str(tar), BASE_NAME], "docker import", env=env)
        tar.unlink()
    pushed = f"{registry}/{BASE_NAME}"
    _must(["docker", "tag", BASE_NAME, pushed], "docker tag", env=env)
    _must(["docker", "push", "--quiet", pushed], f"docker push {pushed}", env=env)
    return pushed


def _stop_pid(pidfile: Path, what: str) -> None:
    pid = _pid_alive(pidfile)
    if pid is None:
        return
    say(f"stopping {what} (pid {pid})")
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and _pid_alive(pidfile) == pid:
        time.sleep(0.2)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
    if _pid_alive(pidfile) == pid:
        os.kill(pid, signal.SIGKILL)


def engine_up() -> dict[str, str]:
    """Bring up (or reuse) the engine, the registry and the base image; their variables."""
    ENGINE_DIR.mkdir(parents=True, exist_ok=True)
    _host_packages()
    _engine_packages()
    _buildx_plugin()
    _start_dockerd()
    registry = _start_registry()
    base = _base_image(registry)
    values = {"DOCKER_HOST": f"unix://{_engine_paths()['sock']}", "REGISTRY": registry,
              "BASE_IMAGE": base}
    env = engine_env(values)
    (ENGINE_DIR / "engine.env").write_text(
        "".join(f"{k}={env[k]}\n" for k in ("DOCKER_CONFIG", "PATH", *values)))
    return values


def engine_down() -> None:
    _stop_pid(ENGINE_DIR / "registry.pid", "the local registry")
    _stop_pid(ENGINE_DIR / "dockerd.pid", "the project's Docker engine")
    # dockerd leaves its data root and network namespace mounted; so that the folder can
    # be deleted, unmount what remains under it (deepest first).
    prefix = str(ENGINE_DIR.resolve()) + "/"
    with contextlib.suppress(OSError):
        mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
        for point in sorted((m for m in mounts if m.startswith(prefix)), key=len, reverse=True):
            _quiet(["umount", point])


def engine(args: list[str]) -> None:
    if args == ["--stop"]:
        engine_down()
        return
    if args:
        sys.exit("usage: python3 dev.py engine [--stop]")
    try:
        values = engine_up()
    except EngineError as exc:
        sys.exit(f"dev.py engine: {exc}")
    print(f"DOCKER_CONFIG={_engine_paths()['config']}")
    for name, value in values.items():
        print(f"{name}={value}", flush=True)


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
    containers = os.environ.get(SKIP_CONTAINERS) != "1"
    engine_values: dict[str, str] = {}
    if containers:
        say("the project's Docker engine for the container tier (python3 dev.py engine)")
        try:
            engine_values = engine_up()
        except EngineError as exc:
            sys.exit(f"dev.py: the container tier needs the project's Docker engine, which "
                     f"could not be brought up: {exc}\nSet {SKIP_CONTAINERS}=1 to run "
                     "everything else without it.")
    else:
        say(f"{SKIP_CONTAINERS}=1: the container tier (tests/containers) is skipped")
    if args:
        say("pytest " + " ".join(args))
        run([str(BIN / "python"), "-m", "pytest", *args],
            env=engine_env(engine_values) if containers else env)
        return
    # Two workers (pytest-xdist), each test module whole on one of them: most of the suite
    # waits on servers, Jupyter and Chromium, so two halves overlap well on two cores.
    workers = os.environ.get("BINDERLESS_TEST_WORKERS", "2")
    say(f"pytest (all tiers but the container tier, {workers} workers)")
    started = time.monotonic()
    run([str(BIN / "python"), "-m", "pytest", "--ignore=tests/containers", "-n", workers,
         "--dist", "loadfile", "--durations=15"], env=env)
    say(f"the main tiers took {time.monotonic() - started:.0f} s")
    if containers:
        say("pytest tests/containers (the container tier, on the project's Docker engine)")
        started = time.monotonic()
        run([str(BIN / "python"), "-m", "pytest", "tests/containers"],
            env=engine_env(engine_values))
        say(f"the container tier took {time.monotonic() - started:.0f} s")


def main() -> None:
    commands = {"serve": serve, "test": test, "engine": engine}
    if len(sys.argv) < 2 or sys.argv[1] not in commands:
        sys.exit(__doc__)
    commands[sys.argv[1]](sys.argv[2:])


if __name__ == "__main__":
    main()
