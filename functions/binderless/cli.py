"""The ``binderless`` command line: thin parsing around the service and the client."""

from __future__ import annotations

import argparse
import asyncio
import io
import logging
import os
import signal
import sys
import webbrowser
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from . import __version__
from .settings import load_settings

if TYPE_CHECKING:
    from .service import LaunchService

__all__ = ["main"]

EXAMPLE_DIR = Path(__file__).resolve().parents[2] / "examples" / "hello"
DEFAULT_SERVER = "http://127.0.0.1:8585"


def _serve_parser(sub: Any) -> None:
    p = sub.add_parser(
        "serve",
        help="run a Binder on this machine (launch pages, /build stream, session proxy)",
        description="Serve the launch pages, the BinderHub /build event stream and the session "
        "proxy on one port. Sessions are local Jupyter servers in uv-built environments. "
        "Settings can also come from BINDERLESS_* environment variables (for example "
        "BINDERLESS_PORT, BINDERLESS_CULL_IDLE_SECONDS); an option given here wins.",
        epilog="Example: binderless serve --port 8585, then open "
        "http://127.0.0.1:8585/v2/gh/binder-examples/requirements/HEAD",
    )
    p.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port to listen on (default 8585)")
    p.add_argument("--state-dir", type=Path,
                   help="where environments, sessions and the database live (default .state)")
    p.add_argument("--public-url", help="the URL people reach this server at, when it is "
                   "behind a proxy (default: taken from each request)")
    p.add_argument("--builder", choices=["auto", "uv", "docker"],
                   help="auto (default: uv, and repo2docker on a Docker engine, when one "
                   "answers, for what uv cannot build: Dockerfile, R, Julia, apt.txt, "
                   "conda-only packages, a Python not installed here), uv (never Docker) "
                   "or docker (repo2docker for everything; needs --spawner docker)")
    p.add_argument("--spawner", choices=["local", "docker"],
                   help="local (default: Jupyter processes; with --builder auto, images "
                   "built with repo2docker run in containers) or docker (containers only)")
    p.add_argument("--allow-local-paths", choices=["yes", "no"],
                   help="launch local folders and file:// URLs (default yes; always no when "
                   "listening beyond 127.0.0.1 or with --public-url, since anyone reaching "
                   "the server could read your files)")
    p.add_argument("--allowed-host", action="append", dest="allowed_hosts", metavar="NAME",
                   help="also answer requests for this Host name (repeatable; * for any). "
                   "By default only the listen address, its loopback names and the public "
                   "URL's host are answered, which keeps DNS-rebinding pages out")
    p.add_argument("--allow-origin", action="append", dest="allow_origins", metavar="ORIGIN",
                   help="let pages of this origin (https://site.example, or *) launch and use "
                   "sessions, as thebe and live code cells do (repeatable). Default: none on a "
                   "local server whose sessions run as you; every origin where sessions are "
                   "isolated (--spawner docker, per-session users)")
    p.add_argument("--session-isolation", choices=["auto", "uids", "off"],
                   help="run each session under a user id of its own (uids; needs root), or as "
                   "you (off). Default auto: own user ids as soon as more than one person can "
                   "use the server (listening beyond 127.0.0.1, --public-url, or OIDC sign-in)")
    p.add_argument("--cull-idle", type=float, dest="cull_idle_seconds", metavar="SECONDS",
                   help="stop sessions idle this long (default 600)")
    p.add_argument("--max-age", type=float, dest="max_age_seconds", metavar="SECONDS",
                   help="stop sessions older than this (default 21600, six hours)")
    p.add_argument("--max-sessions", type=int, help="sessions running at once (default 20)")
    p.add_argument("--max-concurrent-builds", type=int, metavar="N",
                   help="environments built at once (default 2); later launches queue and "
                   "are told their place")
    p.add_argument("--max-concurrent-starts", type=int, metavar="N",
                   help="Jupyter servers starting at once (default 4)")
    p.add_argument("--keep-sessions", action="store_true", default=None,
                   dest="keep_sessions_on_exit",
                   help="leave sessions running on exit; the next serve adopts them")
    p.add_argument("--demo", action="store_true",
                   help="also launch the bundled example repository and print its link")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])


def _launch_parser(sub: Any) -> None:
    p = sub.add_parser(
        "launch",
        help="launch a repository on a binderless or BinderHub server and print its URL",
        description="Follow the /build event stream of a Binder server, show the progress, "
        "and print the URL of the running session (with its token).",
        epilog="Examples:\n  binderless launch gh/binder-examples/requirements/HEAD\n"
        "  binderless launch 'https://mybinder.org/v2/gh/org/repo/main?labpath=index.ipynb'\n"
        "  binderless launch https://github.com/org/repo/blob/main/index.ipynb\n"
        "  binderless launch .    (this folder, on a local server)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("target", help="a Binder link (launched on its own server), or "
                   "<provider>/<spec>, a repository address (https://github.com/org/repo) or "
                   "a folder (launched on --server)")
    p.add_argument("--server", default=os.environ.get("BINDERLESS_SERVER", DEFAULT_SERVER),
                   help=f"server for a bare <provider>/<spec> (default {DEFAULT_SERVER}, "
                   "or BINDERLESS_SERVER)")
    p.add_argument("--open", action="store_true", help="open the session in a web browser")
    p.add_argument("--build-only", action="store_true", help="build the environment, launch nothing")
    p.add_argument("-v", "--verbose", action="store_true", help="print every log line")


def _resolve_parser(sub: Any) -> None:
    p = sub.add_parser(
        "resolve",
        help="print, as JSON, what a Binder link or spec launches",
        description="Parse a Binder link, a <provider>/<spec>, or a pasted repository or record "
        "URL, resolve its ref to an immutable revision, and print JSON with provider, spec, "
        "repo_url, ref, resolved_ref, urlpath, launch_url and persistent_url.",
        epilog="Examples:\n  binderless resolve gh/binder-examples/requirements/HEAD\n"
        "  binderless resolve --offline 'https://mybinder.org/v2/gl/group%2Fproject/main'\n"
        "  binderless resolve --offline https://github.com/org/repo/tree/dev",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("target", help="a Binder link, <provider>/<spec>, or a repository URL")
    p.add_argument("--offline", action="store_true",
                   help="only parse: no network, resolved_ref and persistent_url stay null")
    p.add_argument("--server", default=os.environ.get("BINDERLESS_SERVER", DEFAULT_SERVER),
                   help="the server launch_url and persistent_url point at (default "
                   f"{DEFAULT_SERVER}, or BINDERLESS_SERVER): a mybinder.org link comes back "
                   "with this host swapped in")


def _resolve(args: argparse.Namespace) -> int:
    import json

    import httpx

    from .errors import BinderlessError
    from .providers import ProviderRegistry
    from .resolve import resolve_link
    from .urlguard import UrlGuard, guarded_client

    try:
        settings = load_settings(os.environ)
    except ValueError as exc:
        print(f"binderless resolve: {exc}", file=sys.stderr)
        return 2
    transport = None
    if args.offline:
        def refuse(request: httpx.Request) -> httpx.Response:
            raise RuntimeError("--offline must not use the network")
        transport = httpx.MockTransport(refuse)
    client = guarded_client(UrlGuard(enforce=settings.mode == "aws"), inner=transport)
    try:
        result = resolve_link(args.target, ProviderRegistry(settings, client),
                              server=args.server, offline=args.offline, cwd=os.getcwd())
    except BinderlessError as exc:
        print(f"binderless resolve: {exc.user_message()}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2))
    return 0


def _prebuild_parser(sub: Any) -> None:
    p = sub.add_parser(
        "prebuild",
        help="build a repository's environment on a server before anyone launches it",
        description="Ask a binderless server to build the environment of a link, launching "
        "nothing (POST /api/prebuild with Authorization: Bearer <secret>): for CI jobs after "
        "a push. The secret is the server's webhook_secret, read from "
        "BINDERLESS_WEBHOOK_SECRET. Prints the server's JSON answer.",
        epilog="Example: BINDERLESS_WEBHOOK_SECRET=... binderless prebuild "
        "https://github.com/org/repo --server https://binder.example.org --wait",
    )
    p.add_argument("target", help="a Binder link (built on its own server), or "
                   "<provider>/<spec> or a repository address (built on --server)")
    p.add_argument("--server", default=os.environ.get("BINDERLESS_SERVER", DEFAULT_SERVER),
                   help=f"server for a bare <provider>/<spec> (default {DEFAULT_SERVER}, "
                   "or BINDERLESS_SERVER)")
    p.add_argument("--wait", action="store_true",
                   help="follow the build until it ends; exit 1 if it fails")


def _prebuild(args: argparse.Namespace) -> int:
    import json

    import httpx

    from .client import follow_build, parse_target
    from .errors import BadLink

    secret = os.environ.get("BINDERLESS_WEBHOOK_SECRET", "")
    if not secret:
        print("binderless prebuild: set BINDERLESS_WEBHOOK_SECRET to the server's webhook "
              "secret", file=sys.stderr)
        return 2
    try:
        base, spec, _urlpath = parse_target(args.target, args.server, cwd=os.getcwd())
    except BadLink as exc:
        print(f"binderless prebuild: {exc.user_message()}", file=sys.stderr)
        return 2
    with httpx.Client(timeout=httpx.Timeout(30.0, read=None if args.wait else 60.0)) as client:
        try:
            answer = client.post(f"{base}/api/prebuild", json={"link": spec},
                                 headers={"Authorization": f"Bearer {secret}"})
            document = answer.json()
        except (httpx.HTTPError, ValueError) as exc:
            print(f"binderless prebuild: no answer from {base}: {exc}", file=sys.stderr)
            return 1
        if answer.status_code >= 400:
            print(f"binderless prebuild: {document.get('message', answer.text)}",
                  file=sys.stderr)
            return 1
        print(json.dumps(document, indent=2), flush=True)
        if not args.wait or "stream_url" not in document:
            return 0
        final: dict[str, Any] = {}
        for event in follow_build(client, document["stream_url"]):
            final = event
        if str(final.get("phase", "")).lower() != "ready":
            print(f"binderless prebuild: {str(final.get('message', 'the build failed')).strip()}",
                  file=sys.stderr)
            return 1
        print(f"Built: {final.get('imageName', '')}", file=sys.stderr)
        return 0


def _gateway_parser(sub: Any) -> None:
    p = sub.add_parser(
        "gateway",
        help="run the AWS session gateway (the /build stream and the session proxy)",
        description="The long-running process of the AWS mode: serves /build as an event stream "
        "and proxies /user/<session>/ to Fargate tasks, with state in DynamoDB, builds in "
        "CodeBuild and images in ECR. Configured by BINDERLESS_* variables that the "
        "deployment sets (table, bucket, registry, subnets, roles); stateless, so several "
        "copies can run behind the load balancer.",
    )
    p.add_argument("--host", default="0.0.0.0", help="address to listen on (default 0.0.0.0)")
    p.add_argument("--port", type=int, default=8080, help="port to listen on (default 8080)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="binderless",
        description="Binder, serverless: launch a repository's environment in JupyterLab "
        "from a Binder link, on this machine or on AWS.",
    )
    parser.add_argument("--version", action="version", version=f"binderless {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _serve_parser(sub)
    _launch_parser(sub)
    _resolve_parser(sub)
    _prebuild_parser(sub)
    _gateway_parser(sub)
    from .catalogue_cli import add_parser as _environments_parser

    _environments_parser(sub)
    from .deploy.cli import add_parsers as _deploy_parsers

    _deploy_parsers(sub)
    return parser


def example_link() -> str:
    return f"/v2/git/{quote(str(EXAMPLE_DIR), safe='')}/HEAD?labpath=welcome.ipynb"


async def _gateway(args: argparse.Namespace) -> int:
    from .aws.wiring import aws_service

    try:
        settings = load_settings(os.environ, mode="aws", host=args.host, port=args.port,
                                 allow_local_paths=False)

        def client(service: str) -> Any:
            import boto3

            if service == "s3":
                from .aws.s3 import client_config

                return boto3.client("s3", config=client_config())
            return boto3.client(service)

        service = aws_service(settings, client)
    except ValueError as exc:
        print(f"binderless gateway: {exc}", file=sys.stderr)
        return 2
    return await _run_server(service, demo=False)


async def _serve(args: argparse.Namespace) -> int:
    from .local import local_service

    overrides = {k: getattr(args, k, None) for k in (
        "host", "port", "state_dir", "public_url", "builder", "spawner", "cull_idle_seconds",
        "max_age_seconds", "max_sessions", "keep_sessions_on_exit", "session_isolation",
        "max_concurrent_builds", "max_concurrent_starts")}
    for name in ("allowed_hosts", "allow_origins"):
        if getattr(args, name):
            overrides[name] = tuple(getattr(args, name))
    if args.allow_local_paths is not None:
        overrides["allow_local_paths"] = args.allow_local_paths == "yes"
    try:
        settings = load_settings(os.environ, **overrides)
    except ValueError as exc:
        print(f"binderless serve: {exc}", file=sys.stderr)
        return 2
    try:
        service = local_service(settings)
    except ValueError as exc:
        print(f"binderless serve: {exc}", file=sys.stderr)
        return 2
    return await _run_server(service, demo=args.demo)


async def _run_server(service: LaunchService, *, demo: bool) -> int:
    from .server import create_app
    from .server.app import SITE_DIR
    from .server.connections import start_listener

    settings = service.settings
    site_dir = Path(settings.site_dir) if settings.site_dir else SITE_DIR
    try:
        # Connection limits, timeouts and a quiet accept loop: see server/connections.py.
        listener = await start_listener(create_app(service, site_dir), settings)
    except OSError as exc:
        print(f"binderless: cannot listen on {settings.host}:{settings.port}: {exc.strerror}. "
              "Is another server running there? Choose another with --port.", file=sys.stderr)
        return 1
    base = f"http://{settings.host}:{settings.port}"
    print(f"binderless {__version__} serving at {base}/  (state in {settings.state_dir})",
          flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    example: asyncio.Future[None] | None = None
    if demo:
        link = base + example_link()
        print(f"Launching the bundled example; its link is:\n  {link}", flush=True)
        example = asyncio.ensure_future(asyncio.to_thread(_demo_launch, link))
    await stop.wait()
    print("Stopping binderless" + (" (its sessions keep running; the next serve adopts them)"
                                   if settings.keep_sessions_on_exit
                                   else " and its sessions") + "...",
          flush=True)
    await listener.close()
    if example is not None and not example.done():
        example.cancel()
    return 0


def _demo_launch(link: str) -> None:
    from .client import run_launch

    outcome = run_launch(link, server="", out=io.StringIO())
    if outcome.ok:
        print(f"The example is running. Open it at:\n  {outcome.open_url}\n"
              "Press Ctrl+C to stop the server and its sessions.", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        sys.exit(2)
    if args.command == "serve":
        logging.basicConfig(level=args.log_level.upper(),
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        logging.getLogger("httpx").setLevel(logging.WARNING)
        sys.exit(asyncio.run(_serve(args)))
    if args.command == "gateway":
        logging.basicConfig(level=args.log_level.upper(),
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        sys.exit(asyncio.run(_gateway(args)))
    if args.command == "resolve":
        sys.exit(_resolve(args))
    if args.command == "prebuild":
        sys.exit(_prebuild(args))
    if args.command == "environments":
        from .catalogue_cli import run as run_environments

        sys.exit(run_environments(args))
    if args.command in ("deploy", "destroy"):
        from .deploy.cli import run as run_deployment

        sys.exit(run_deployment(args))
    if args.command == "launch":
        from .client import run_launch
        from .errors import BadLink

        try:
            outcome = run_launch(args.target, server=args.server, build_only=args.build_only,
                                 verbose=args.verbose, cwd=os.getcwd())
        except BadLink as exc:
            parser.exit(2, f"binderless launch: {exc.user_message()}\n")
        if outcome.ok and args.open and outcome.open_url:
            webbrowser.open(outcome.open_url)
        sys.exit(0 if outcome.ok else 1)
