"""binderless's session proxy against configurable-http-proxy and a direct connection.

    .venv/bin/python bench/proxy.py [--quick] [--websockets 3000] [--seconds 10]

In one run, against the same trivial upstream (a Jupyter stand-in answering a small JSON
document and echoing WebSocket messages):

  * HTTP requests/s, p50 and p99 at concurrency 1, 32 and 128 (``wrk``), and the proxy's
    CPU time per request;
  * ``--websockets`` WebSockets held open at once, each echoing a message once a second:
    connection errors, lost messages, round-trip p99 and the proxy's memory per
    connection;

for a direct connection, configurable-http-proxy (JupyterHub's proxy, the npm package,
installed on first use into ~/.cache/binderless-bench) and binderless (its aiohttp app
from ``create_app`` over a local service whose store routes a session to the upstream,
served as ``binderless serve`` serves it; ``--targets`` adds binderless-aiohttp, binderless
with aiohttp's client in place of its lean forwarder). The upstream, each proxy and each
load generator run in processes of their own; the HTTP figures are measured in rounds,
the targets taking turns (``--rounds``), so that load from elsewhere on the machine
falls on all of them alike. Prints binderless/CHP ratios; the targets are
at least CHP's requests/s and no worse p99 at concurrency 32 and 128, and every
WebSocket held with no error and no lost message. Without ``wrk`` (Debian: ``apt-get
install wrk``) a slower Python load generator stands in; without ``npm``/``node`` CHP is
left out and the ratios are not printed. Talks only to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("BINDERLESS_BENCH_CACHE", Path.home() / ".cache" / "binderless-bench"))
SESSION_PATH = "/user/{session}/api/status"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

# A trivial upstream in node (when there is node): fast enough that it is never what
# the proxies wait for. WebSocket frames are parsed by hand (small text frames, pings,
# close), so it needs no package.
NODE_UPSTREAM = r"""
const http = require("http"), crypto = require("crypto");
const body = JSON.stringify({version: "2.0.0", started: "now", connections: 0});
const server = http.createServer((req, res) => {
  res.writeHead(200, {"Content-Type": "application/json", "Content-Length": Buffer.byteLength(body)});
  res.end(body);
});
server.on("upgrade", (req, socket) => {
  const accept = crypto.createHash("sha1")
    .update(req.headers["sec-websocket-key"] + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest("base64");
  socket.write("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
               "Sec-WebSocket-Accept: " + accept + "\r\n\r\n");
  socket.setNoDelay(true);
  let buf = Buffer.alloc(0);
  socket.on("data", (data) => {
    buf = Buffer.concat([buf, data]);
    for (;;) {
      if (buf.length < 2) return;
      const op = buf[0] & 15, masked = buf[1] & 128;
      let len = buf[1] & 127, off = 2;
      if (len === 126) { if (buf.length < 4) return; len = buf.readUInt16BE(2); off = 4; }
      else if (len === 127) { if (buf.length < 10) return; len = Number(buf.readBigUInt64BE(2)); off = 10; }
      const need = off + (masked ? 4 : 0) + len;
      if (buf.length < need) return;
      let payload = buf.subarray(off + (masked ? 4 : 0), need);
      if (masked) {
        const mask = buf.subarray(off, off + 4);
        payload = Buffer.from(payload.map((b, i) => b ^ mask[i % 4]));
      }
      buf = buf.subarray(need);
      if (op === 8) { socket.end(Buffer.from([0x88, 0])); return; }
      const reply = op === 9 ? 10 : op;  // ping -> pong, text/binary -> echo
      if (reply === 10 || op === 1 || op === 2) {
        const head = len < 126 ? Buffer.from([0x80 | reply, len])
          : Buffer.from([0x80 | reply, 126, len >> 8, len & 255]);
        socket.write(Buffer.concat([head, payload]));
      }
    }
  });
  socket.on("error", () => socket.destroy());
});
server.keepAliveTimeout = 120000;
server.listen(Number(process.argv[2]), "127.0.0.1");
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def raise_nofile() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def wait_for_port(port: int, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited early")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not start")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


# ----- the processes ----------------------------------------------------------------------


@dataclass
class Target:
    """Something to send load to: a base URL, the path of the session, and its process."""

    name: str
    base: str
    path: str
    headers: dict[str, str]
    pid: int | None


@contextmanager
def process(cmd: list[str], port: int, what: str, **options: Any) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            preexec_fn=raise_nofile, start_new_session=True, **options)
    try:
        wait_for_port(port, proc, what)
        yield proc
    finally:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        if proc.stderr is not None:
            errors = proc.stderr.read().decode(errors="replace").strip()
            if errors and "Traceback" in errors:
                print(f"{what} wrote to stderr:\n{errors[-3000:]}", file=sys.stderr)
            proc.stderr.close()


def chp_command() -> list[str] | None:
    """configurable-http-proxy, installed into the cache on first use; None without npm."""
    binary = CACHE / "node_modules" / ".bin" / "configurable-http-proxy"
    if binary.exists():
        return [str(binary)]
    if shutil.which("npm") is None or shutil.which("node") is None:
        return None
    CACHE.mkdir(parents=True, exist_ok=True)
    print(f"installing configurable-http-proxy into {CACHE} ...", flush=True)
    result = subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--prefix", str(CACHE),
                             "configurable-http-proxy"], capture_output=True, text=True,
                            timeout=600)
    if result.returncode != 0 or not binary.exists():
        print(f"could not install configurable-http-proxy:\n{result.stderr[-2000:]}")
        return None
    return [str(binary)]


def serve_binderless(port: int, upstream: str, state_dir: str, forwarder: str = "lean") -> None:
    """The ``binderless`` subcommand: the proxy as ``binderless serve`` runs it, with one
    session routed to ``upstream``; ``forwarder`` "aiohttp" sends plain requests through
    aiohttp's client instead of the lean forwarder (the comparison of the two)."""
    sys.path.insert(0, str(ROOT / "functions"))
    from binderless.backends.protocols import Route, SessionRecord
    from binderless.local import local_service
    from binderless.server import create_app
    from binderless.server.connections import start_listener
    from binderless.server.proxy import SessionProxy
    from binderless.settings import Settings

    SessionProxy.lean_forwarder = forwarder == "lean"

    settings = Settings(state_dir=Path(state_dir), port=port, cull_interval_seconds=1e6)
    service = local_service(settings)
    session_id, token = "bench0session", "bench-token-" + "0" * 40

    async def run() -> None:
        listener = await start_listener(create_app(service), settings)
        # After the start: opening the service stops sessions it finds no server for.
        now = time.time()
        service.store.add_session(SessionRecord(
            session_id=session_id, launch_id="bench", owner="", repo_url="bench",
            resolved_ref="0" * 40, image_key="bench", home="", target="", token=token,
            backend_id="", status="starting", created_at=now, last_activity=now))
        service.routes.add(Route(session_id, upstream, token))
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await listener.close()

    asyncio.run(run())


def serve_python_upstream(port: int) -> None:
    """The ``upstream`` subcommand (no node): the same upstream in aiohttp."""
    from aiohttp import WSMsgType, web

    body = json.dumps({"version": "2.0.0", "started": "now", "connections": 0})

    async def handle(request: web.Request) -> web.StreamResponse:
        if request.headers.get("Upgrade", "").lower() == "websocket":
            ws = web.WebSocketResponse()
            await ws.prepare(request)
            async for message in ws:
                if message.type == WSMsgType.TEXT:
                    await ws.send_str(message.data)
            return ws
        return web.Response(text=body, content_type="application/json")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


# ----- HTTP load --------------------------------------------------------------------------


@dataclass
class HttpFigures:
    rps: float
    p50_ms: float
    p99_ms: float
    cpu_ms_per_request: float | None
    errors: int
    requests: int = 0


def combined(rounds: list[HttpFigures], seconds: float) -> HttpFigures:
    """One figure from rounds of ``seconds`` each: requests/s over all of them, the
    median round's p50 and p99, CPU over all requests."""
    def median(values: list[float]) -> float:
        return sorted(values)[len(values) // 2]

    requests = sum(r.requests for r in rounds)
    cpu = [r.cpu_ms_per_request * r.requests for r in rounds
           if r.cpu_ms_per_request is not None]
    return HttpFigures(
        sum(r.rps for r in rounds) / len(rounds), median([r.p50_ms for r in rounds]),
        median([r.p99_ms for r in rounds]),
        sum(cpu) / requests if cpu and len(cpu) == len(rounds) and requests else None,
        sum(r.errors for r in rounds), requests)


def _ms(value: str, unit: str) -> float:
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def wrk_load(target: Target, concurrency: int, seconds: float) -> HttpFigures:
    cmd = ["wrk", "-t1", f"-c{concurrency}", f"-d{max(1, round(seconds))}s", "--latency",
           "--timeout", "10s"]
    for key, value in target.headers.items():
        cmd += ["-H", f"{key}: {value}"]
    cmd.append(target.base + target.path)
    cpu = cpu_seconds(target.pid) if target.pid else None
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60).stdout
    used = cpu_seconds(target.pid) - cpu if target.pid and cpu is not None else None
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    p50 = re.search(r"50%\s+([\d.]+)(us|ms|s)", out)
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    errors = 0
    if match := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                          out):
        errors += sum(int(g) for g in match.groups())
    if match := re.search(r"Non-2xx or 3xx responses: (\d+)", out):
        errors += int(match.group(1))
    return HttpFigures(rps, _ms(*p50.groups()) if p50 else float("nan"),
                       _ms(*p99.groups()) if p99 else float("nan"),
                       used * 1000 / total if used is not None and total else None, errors,
                       total)


def python_load(target: Target, concurrency: int, seconds: float) -> HttpFigures:
    """The stand-in for wrk: the ``load`` subcommand in its own process."""
    cpu = cpu_seconds(target.pid) if target.pid else None
    out = subprocess.run([sys.executable, __file__, "load", target.base + target.path,
                          str(concurrency), str(seconds), json.dumps(target.headers)],
                         capture_output=True, text=True, timeout=seconds + 60, check=True).stdout
    used = cpu_seconds(target.pid) - cpu if target.pid and cpu is not None else None
    result = json.loads(out)
    return HttpFigures(result["rps"], result["p50_ms"], result["p99_ms"],
                       used * 1000 / result["total"] if used is not None and result["total"]
                       else None, result["errors"], result["total"])


def run_python_load(url: str, concurrency: int, seconds: float, headers: dict[str, str]) -> None:
    import aiohttp

    async def main() -> None:
        latencies: list[float] = []
        errors = 0
        end = time.perf_counter() + seconds
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector, headers=headers) as session:
            async def worker() -> None:
                nonlocal errors
                while (start := time.perf_counter()) < end:
                    try:
                        async with session.get(url) as response:
                            await response.read()
                            errors += response.status != 200
                    except aiohttp.ClientError:
                        errors += 1
                    latencies.append(time.perf_counter() - start)

            began = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            took = time.perf_counter() - began
        latencies.sort()
        print(json.dumps({"rps": len(latencies) / took, "total": len(latencies),
                          "p50_ms": latencies[len(latencies) // 2] * 1000,
                          "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000,
                          "errors": errors}))

    asyncio.run(main())


# ----- WebSocket load ---------------------------------------------------------------------


@dataclass
class WsFigures:
    held: int
    errors: int
    lost: int
    p99_ms: float
    bytes_per_connection: float | None
    notes: list[str] = field(default_factory=list)


def run_ws_load(url: str, count: int, seconds: float, report: str) -> None:
    """The ``wsload`` subcommand: ``count`` WebSockets, opened 100 at a time, then each
    sends a numbered message once a second for ``seconds`` and waits for its echo. Writes
    "open" to ``report`` once all are open (the caller measures memory then), then the
    figures as JSON."""
    import aiohttp

    raise_nofile()

    async def main() -> None:
        connector = aiohttp.TCPConnector(limit=0)
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=30)
        errors: list[str] = []
        rtts: list[float] = []
        sent = received = 0
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            gate = asyncio.Semaphore(100)

            async def connect() -> aiohttp.ClientWebSocketResponse | None:
                async with gate:
                    try:
                        return await session.ws_connect(url, autoping=True)
                    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                        errors.append(f"connect: {type(exc).__name__}: {exc}")
                        return None

            sockets = [ws for ws in await asyncio.gather(*(connect() for _ in range(count)))
                       if ws is not None]
            Path(report).write_text("open")
            await asyncio.sleep(1.0)  # the caller reads the proxy's memory now

            async def talk(index: int, ws: aiohttp.ClientWebSocketResponse) -> None:
                nonlocal sent, received
                await asyncio.sleep(index / len(sockets))  # spread over the second
                loop = asyncio.get_running_loop()
                next_at = loop.time()
                for n in range(int(seconds)):
                    start = time.perf_counter()
                    text = f"{index}:{n}"
                    try:
                        await ws.send_str(text)
                        sent += 1
                        message = await ws.receive(timeout=10)
                    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                        errors.append(f"echo: {type(exc).__name__}")
                        return
                    if message.type != aiohttp.WSMsgType.TEXT or message.data != text:
                        errors.append(f"echo: got {message.type.name}")
                        return
                    received += 1
                    rtts.append(time.perf_counter() - start)
                    next_at += 1.0
                    await asyncio.sleep(max(0.0, next_at - loop.time()))

            await asyncio.gather(*(talk(i, ws) for i, ws in enumerate(sockets)))
            for ws in sockets:
                await ws.close()
        rtts.sort()
        Path(report).write_text(json.dumps({
            "held": len(sockets), "errors": len(errors), "lost": sent - received,
            "p99_ms": rtts[int(len(rtts) * 0.99)] * 1000 if rtts else float("nan"),
            "examples": sorted(set(errors))[:3]}))

    asyncio.run(main())


def ws_load(target: Target, count: int, seconds: float) -> WsFigures:
    url = target.base.replace("http://", "ws://") + target.path.replace("api/status", "ws")
    if "Cookie" in target.headers:
        url += "?token=" + target.headers["Cookie"].split("=", 1)[1]
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as handle:
        report = Path(handle.name)
    report.write_text("")
    before = rss_bytes(target.pid) if target.pid else 0
    loader = subprocess.Popen([sys.executable, __file__, "wsload", url, str(count), str(seconds),
                               str(report)], preexec_fn=raise_nofile)
    memory = None
    try:
        deadline = time.monotonic() + 120 + count / 20
        while report.read_text() != "open" and loader.poll() is None:
            if time.monotonic() > deadline:
                raise RuntimeError("WebSockets took too long to open")
            time.sleep(0.05)
        time.sleep(0.5)
        if target.pid and report.read_text() == "open":
            memory = (rss_bytes(target.pid) - before) / max(count, 1)
        loader.wait(timeout=seconds + 120)
        result = json.loads(report.read_text())
    finally:
        if loader.poll() is None:
            loader.kill()
        report.unlink(missing_ok=True)
    return WsFigures(result["held"], result["errors"], result["lost"], result["p99_ms"],
                     memory, result["examples"])


# ----- the run ----------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="a short run (1 s per HTTP figure, 50 WebSockets for 2 s)")
    parser.add_argument("--seconds", type=float, default=10.0, help="per HTTP figure")
    parser.add_argument("--websockets", type=int, default=1000)
    parser.add_argument("--ws-seconds", type=float, default=20.0,
                        help="how long each WebSocket echoes (one message a second)")
    parser.add_argument("--concurrency", default="1,32,128")
    parser.add_argument("--targets", default="direct,chp,binderless",
                        help="what to measure, in order; binderless-aiohttp is binderless "
                             "with aiohttp's client instead of the lean forwarder and "
                             "without the fast path")
    parser.add_argument("--skip-websockets", action="store_true")
    parser.add_argument("--rounds", type=int, default=5,
                        help="each HTTP figure is measured in this many rounds, the "
                             "targets taking turns, so that load from elsewhere on the "
                             "machine falls on all of them alike")
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.websockets, args.ws_seconds = 1.0, 50, 2.0
    raise_nofile()
    levels = [int(c) for c in args.concurrency.split(",")]
    load = wrk_load if shutil.which("wrk") else python_load
    if load is python_load:
        print("wrk not found (Debian: apt-get install wrk): using a Python load generator, "
              "which is slower than the proxies and makes every figure close", flush=True)
    chp = chp_command()
    if chp is None:
        print("npm or node not found: configurable-http-proxy left out (no ratios)", flush=True)
    node = shutil.which("node")

    with tempfile.TemporaryDirectory(prefix="bench-proxy-") as tmp, \
            upstream_process(node, Path(tmp)) as upstream_port:
        upstream = f"http://127.0.0.1:{upstream_port}"
        results: dict[str, tuple[dict[int, HttpFigures], WsFigures]] = {}
        names = [n for n in args.targets.split(",") if n != "chp" or chp is not None]
        with ExitStack() as running:
            # Every target runs at once (an idle one costs nothing) and they take turns,
            # round after round: a burst of load from elsewhere is not one target's luck.
            targets = [running.enter_context(
                target_process(name, upstream, upstream_port, chp, Path(tmp)))
                for name in names]
            http: dict[str, dict[int, HttpFigures]] = {name: {} for name in names}
            rounds = max(1, args.rounds)
            for level in levels:
                measured: dict[str, list[HttpFigures]] = {name: [] for name in names}
                for target in targets:
                    if not args.quick:
                        load(target, level, 1.0)  # warm up
                for _ in range(rounds):
                    for target in targets:
                        measured[target.name].append(load(target, level,
                                                          args.seconds / rounds))
                for name in names:
                    http[name][level] = combined(measured[name], args.seconds / rounds)
            for target in targets:
                ws = (WsFigures(0, 0, 0, float("nan"), None) if args.skip_websockets
                      else ws_load(target, args.websockets, args.ws_seconds))
                results[target.name] = (http[target.name], ws)
                print_target(target.name, http[target.name], ws, args.websockets, flush=True)
    print_ratios(results, levels, args.websockets)


@contextmanager
def upstream_process(node: str | None, tmp: Path) -> Iterator[int]:
    port = free_port()
    if node:
        script = tmp / "upstream.js"
        script.write_text(NODE_UPSTREAM)
        cmd = [node, str(script), str(port)]
    else:
        cmd = [sys.executable, __file__, "upstream", str(port)]
    with process(cmd, port, "the upstream"):
        yield port


@contextmanager
def target_process(name: str, upstream: str, upstream_port: int, chp: list[str] | None,
                   tmp: Path) -> Iterator[Target]:
    path = SESSION_PATH.format(session="bench0session")
    if name == "direct":
        yield Target(name, upstream, path, {}, None)
        return
    port = free_port()
    if name == "chp":
        assert chp is not None
        cmd = [*chp, "--ip", "127.0.0.1", "--port", str(port), "--api-ip", "127.0.0.1",
               "--api-port", str(free_port()), "--default-target", upstream,
               "--log-level", "error"]
        env = {**os.environ, "CONFIGPROXY_AUTH_TOKEN": "bench"}
        with process(cmd, port, "configurable-http-proxy", env=env) as proc:
            yield Target(name, f"http://127.0.0.1:{port}", path, {}, proc.pid)
        return
    state = tmp / f"state-{port}"
    forwarder = "aiohttp" if name == "binderless-aiohttp" else "lean"
    cmd = [sys.executable, __file__, "binderless", str(port), upstream, str(state), forwarder]
    env = {**os.environ, "AWS_EC2_METADATA_DISABLED": "true"}
    with process(cmd, port, "binderless", env=env, cwd=ROOT) as proc:
        token = "bench-token-" + "0" * 40
        # As a browser sends it after its first answer (the WebSocket carries ?token=,
        # as JupyterLab's do).
        yield Target(name, f"http://127.0.0.1:{port}", path,
                     {"Cookie": f"binderless-session-bench0session={token}"}, proc.pid)


def print_target(name: str, http: dict[int, HttpFigures], ws: WsFigures, wanted: int,
                 flush: bool = False) -> None:
    for level, f in http.items():
        cpu = f"{f.cpu_ms_per_request:.3f} ms CPU/request" if f.cpu_ms_per_request else ""
        print(f"{name:>18} http c={level:<4} {f.rps:9.0f} req/s  p50 {f.p50_ms:7.2f} ms  "
              f"p99 {f.p99_ms:7.2f} ms  errors {f.errors}  {cpu}", flush=flush)
    memory = (f"  {ws.bytes_per_connection / 1024:.1f} KiB/connection"
              if ws.bytes_per_connection is not None else "")
    print(f"{name:>18} websockets {ws.held}/{wanted} held  errors {ws.errors}  lost {ws.lost}  "
          f"p99 {ws.p99_ms:.2f} ms{memory}"
          + (f"  ({'; '.join(ws.notes)})" if ws.notes else ""), flush=flush)


def print_ratios(results: dict[str, tuple[dict[int, HttpFigures], WsFigures]],
                 levels: list[int], wanted: int) -> None:
    if "chp" not in results:
        return
    theirs = results["chp"]
    for name in [n for n in results if n.startswith("binderless")]:
        ours = results[name]
        print(f"{name} / configurable-http-proxy:")
        rps_ratios, p99_ratios = [], []
        for level in levels:
            rps = ours[0][level].rps / theirs[0][level].rps
            p99 = ours[0][level].p99_ms / theirs[0][level].p99_ms
            cpu_ours = ours[0][level].cpu_ms_per_request
            cpu_theirs = theirs[0][level].cpu_ms_per_request
            cpu = f"  CPU/request {cpu_ours / cpu_theirs:.2f}x" if cpu_ours and cpu_theirs else ""
            print(f"  http c={level:<4} requests/s {rps:.2f}x  p99 {p99:.2f}x{cpu}")
            if level >= 32:
                rps_ratios.append(rps)
                p99_ratios.append(p99)
        ws_ours, ws_theirs = ours[1], theirs[1]
        if ws_ours.held or ws_theirs.held:
            print(f"  websockets: {name} held {ws_ours.held}/{wanted} (errors {ws_ours.errors}, "
                  f"lost {ws_ours.lost}), CHP {ws_theirs.held}/{wanted} (errors "
                  f"{ws_theirs.errors}, lost {ws_theirs.lost}); "
                  f"p99 {ws_ours.p99_ms / ws_theirs.p99_ms:.2f}x")
        if rps_ratios:
            print(f"  ratio requests/s at c>=32 (target >= 1.0): {min(rps_ratios):.2f}")
            print(f"  ratio p99 at c>=32 (target <= 1.0): {max(p99_ratios):.2f}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "binderless":
        serve_binderless(int(sys.argv[2]), sys.argv[3], sys.argv[4], *sys.argv[5:6])
    elif len(sys.argv) > 1 and sys.argv[1] == "upstream":
        serve_python_upstream(int(sys.argv[2]))
    elif len(sys.argv) > 1 and sys.argv[1] == "load":
        run_python_load(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), json.loads(sys.argv[5]))
    elif len(sys.argv) > 1 and sys.argv[1] == "wsload":
        run_ws_load(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), sys.argv[5])
    else:
        main()
