"""The gateway's memory and CPU with many proxied WebSockets held open: what sizes its task.

    .venv/bin/python bench/gateway_memory.py [--websockets 1000] [--seconds 30]

The gateway process (``create_app`` over a local service, served as ``binderless serve``
serves it, the process ``bench/proxy.py`` measures) routes one session to a trivial
upstream that echoes WebSocket messages. ``--websockets`` clients open WebSockets through
it, then each sends a message once a second for ``--seconds`` and waits for its echo, as
a notebook's kernel channel does when busy (a quiet kernel sends only pings). Printed:

  * the gateway's resident memory before, with every WebSocket open, and its peak;
  * its CPU while they talk, as a share of one vCPU;
  * the AWS SDK's share of a gateway in the AWS mode (boto3 and its clients, measured in
    a process of their own: the local service creates no AWS client);
  * the smallest Fargate size (cpu/memory pair) whose memory holds the AWS-mode estimate
    with half of it again to spare, and whose CPU stays under the autoscaling target.

Reuses ``bench/proxy.py``'s upstream, gateway and WebSocket clients; talks only to
127.0.0.1. Needs about ``2 x --websockets`` open files (raised to the hard limit).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]
MIB = 1024 * 1024
#: Fargate's smallest sizes: (vCPU units, memory MiB) pairs, cheapest first.
FARGATE_SIZES = [(256, 512), (256, 1024), (256, 2048), (512, 1024), (512, 2048),
                 (512, 3072), (512, 4096), (1024, 2048), (1024, 3072), (1024, 4096)]
#: The gateway service scales out at this average CPU (infra/service/compute.yaml).
CPU_TARGET = 0.60
#: Memory kept free above the estimate (Python's heap does not shrink back).
HEADROOM = 1.5

SDK_PROBE = """
import resource, boto3
session = boto3.session.Session(region_name="us-east-1")
clients = [session.client(name) for name in
           ("dynamodb", "s3", "ecs", "ecr", "codebuild", "logs", "efs", "iam",
            "secretsmanager", "ssm")]
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
"""
BARE_PROBE = """
import resource, aiohttp
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
"""


def proxy_bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_proxy", ROOT / "bench" / "proxy.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_proxy"] = module
    spec.loader.exec_module(module)
    return module


def sdk_bytes() -> int:
    """What importing boto3 and making the gateway's clients adds to a process."""
    env = {"AWS_EC2_METADATA_DISABLED": "true", "AWS_ACCESS_KEY_ID": "bench",
           "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1",
           "PATH": "/usr/bin:/bin"}
    with_sdk, bare = (int(subprocess.run([sys.executable, "-c", probe], env=env, check=True,
                                         capture_output=True, text=True).stdout)
                      for probe in (SDK_PROBE, BARE_PROBE))
    return max(0, with_sdk - bare)


def fargate_size(memory_bytes: float, cpu_share: float) -> tuple[int, int]:
    for cpu, memory in FARGATE_SIZES:
        if memory * MIB >= memory_bytes * HEADROOM and cpu_share <= CPU_TARGET * cpu / 1024:
            return cpu, memory
    return FARGATE_SIZES[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--websockets", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=30.0,
                        help="how long each WebSocket sends one message a second")
    args = parser.parse_args()
    bench = proxy_bench()
    bench.raise_nofile()
    node = None  # the Python upstream: the same in every run, no npm needed
    with tempfile.TemporaryDirectory(prefix="binderless-gwmem-") as tmp, \
            bench.upstream_process(node, Path(tmp)) as upstream_port, \
            bench.target_process("binderless", f"http://127.0.0.1:{upstream_port}",
                                 upstream_port, None, Path(tmp)) as target:
        time.sleep(1.0)  # settled after its start
        before = bench.rss_bytes(target.pid)
        url = target.base.replace("http://", "ws://") + target.path.replace(
            "api/status", "ws") + "?token=" + target.headers["Cookie"].split("=", 1)[1]
        report = Path(tmp) / "report.json"
        report.write_text("")
        loader = subprocess.Popen([sys.executable, str(ROOT / "bench" / "proxy.py"), "wsload",
                                   url, str(args.websockets), str(args.seconds), str(report)],
                                  preexec_fn=bench.raise_nofile)
        deadline = time.monotonic() + 120 + args.websockets / 20
        while report.read_text() != "open":
            if loader.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the WebSockets did not open")
            time.sleep(0.05)
        time.sleep(0.5)
        held_rss = bench.rss_bytes(target.pid)
        cpu_start, wall_start = bench.cpu_seconds(target.pid), time.monotonic()
        peak = held_rss
        while loader.poll() is None:
            peak = max(peak, bench.rss_bytes(target.pid))
            time.sleep(0.2)
        cpu_share = (bench.cpu_seconds(target.pid) - cpu_start) / max(
            time.monotonic() - wall_start, 1e-9)
        result = json.loads(report.read_text())
    sdk = sdk_bytes()
    estimate = peak + sdk
    cpu, memory = fargate_size(estimate, cpu_share)
    per = (held_rss - before) / max(result["held"], 1)
    print(f"WebSockets held: {result['held']} of {args.websockets}, errors {result['errors']}, "
          f"lost messages {result['lost']}, echo p99 {result['p99_ms']:.1f} ms")
    print(f"gateway memory: {before / MIB:.1f} MiB idle, {held_rss / MIB:.1f} MiB with "
          f"them open ({per / 1024:.1f} KiB each), {peak / MIB:.1f} MiB at peak")
    print(f"gateway CPU while each sends a message a second: {cpu_share * 100:.0f}% of one "
          "vCPU")
    print(f"AWS SDK and clients (AWS mode): +{sdk / MIB:.1f} MiB -> {estimate / MIB:.1f} MiB")
    print(f"smallest Fargate size with {HEADROOM:g}x memory and CPU under "
          f"{CPU_TARGET * 100:.0f}%: {cpu / 1024:g} vCPU / {memory} MiB")


if __name__ == "__main__":
    main()
