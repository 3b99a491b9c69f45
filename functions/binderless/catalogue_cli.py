"""``binderless environments list|show|prune``: the catalogue on the command line.

Thin: it opens the state the server uses (the local state folder's database, or on AWS
the DynamoDB table and ECR repository the settings name) and calls ``catalogue.py``.
Run it beside a running server: pruning takes the same atomic marks the server's
launches respect.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from .catalogue import (
    BuildCache,
    CacheEntry,
    Catalogue,
    EnvironmentEntry,
    FolderCache,
    PruneReport,
    format_bytes,
    local_catalogues,
    parse_age,
    parse_size,
)
from .errors import BinderlessError
from .settings import Settings, load_settings

__all__ = ["add_parser", "run"]

EPILOG = """\
Examples:
  binderless environments list                  every built environment, most recent first
  binderless environments list --json           the same as a JSON array (key, size_bytes,
                                                built_at, last_launched_at, launches, repos)
  binderless environments show 3f2a9c...        one environment: files, repositories, refs
  binderless environments prune --older-than 30d    not launched for 30 days
  binderless environments prune --budget 10G    least recently launched first, until the
                                                rest fit in 10 GiB
  binderless environments prune 3f2a9c...       one environment
  binderless environments prune --mirrors --older-than 30d   git mirrors instead
  binderless environments list --checkouts      folders stopped sessions left behind

Nothing a running session uses is ever removed (it is listed as kept, with the reason);
a launch that starts while a prune runs either keeps its environment or builds it again.
A prune that removes environments then trims the uv builder's download cache (uv cache
prune), and empties it (uv cache clean) when environments and cache are still over
--budget; list shows the cache on a line of its own. Images the docker builder made
(--builder docker, or auto with an engine answering) are listed and pruned beside the
uv environments; docker removes none that a container uses.
Sizes take binary units (500M, 10G); ages s, m, h, d or w (a bare number is days).
Times are printed in UTC. Set BINDERLESS_MODE=aws (and the deployment's BINDERLESS_*
settings) to work on the ECR images of an AWS deployment.
"""


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "environments",
        help="list, show and prune built environments (and git mirrors, saved checkouts)",
        description="The environment catalogue: every built environment with its key, the "
        "files it was built from, the repositories and refs that launched it, its size, "
        "when it was built and last launched, and how often; and pruning by age, by size "
        "budget or one by one.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--state-dir", type=Path,
                   help="the server's state folder (default .state, or BINDERLESS_STATE_DIR)")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)

    def what(parser: argparse.ArgumentParser) -> None:
        group = parser.add_mutually_exclusive_group()
        group.add_argument("--mirrors", dest="what", action="store_const", const="mirrors",
                           help="git mirrors (<state>/repos) instead of environments")
        group.add_argument("--checkouts", dest="what", action="store_const",
                           const="checkouts", help="folders of stopped sessions "
                           "(<state>/sessions) instead of environments")
        parser.set_defaults(what="environments")
        parser.add_argument("--json", action="store_true", help="print JSON")

    listing = actions.add_parser("list", help="list them, most recently used first")
    what(listing)
    show = actions.add_parser("show", help="everything about one environment")
    show.add_argument("key", help="its key (as list prints it)")
    show.add_argument("--json", action="store_true", help="print JSON")
    show.set_defaults(what="environments")
    prune = actions.add_parser(
        "prune", help="remove by age, by size budget or by key (never one in use)",
        description="Remove the environments named, those not launched for --older-than, "
        "then the least recently launched until the rest fit in --budget. One in use is "
        "kept and reported.", epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    prune.add_argument("keys", nargs="*", metavar="KEY", help="remove these")
    prune.add_argument("--older-than", metavar="AGE",
                       help="remove what was not used for AGE (30d, 12h, 2w)")
    prune.add_argument("--budget", metavar="SIZE",
                       help="remove the least recently used until the rest fit in SIZE (10G)")
    prune.add_argument("--dry-run", action="store_true", help="say what would go; remove nothing")
    what(prune)


def _when(stamp: float | None) -> str:
    if not stamp:
        return "-"
    return datetime.fromtimestamp(stamp, UTC).strftime("%Y-%m-%d %H:%M")


def _print_environments(entries: list[EnvironmentEntry], out: TextIO,
                        cache: CacheEntry | None = None) -> None:
    if not entries:
        print("No environments are built.", file=out)
        _print_cache_line(cache, out)
        return
    print(f"{'KEY':22} {'SIZE':>10} {'BUILT':16} {'LAST LAUNCH':16} {'LAUNCHES':>8}  "
          "REPOSITORY", file=out)
    for e in entries:
        repo = e.repos[0].repo_url if e.repos else ""
        more = f" (+{len(e.repos) - 1})" if len(e.repos) > 1 else ""
        use = "  [in use]" if e.in_use else ""
        print(f"{e.key:22} {format_bytes(e.size_bytes):>10} {_when(e.built_at):16} "
              f"{_when(e.last_launched_at):16} {e.launches:>8}  {repo}{more}{use}", file=out)
    total = sum(e.size_bytes for e in entries)
    print(f"{len(entries)} environment{'s' if len(entries) != 1 else ''}, "
          f"{format_bytes(total)} in all", file=out)
    _print_cache_line(cache, out)


def _print_cache_line(cache: CacheEntry | None, out: TextIO) -> None:
    """The build cache: not an environment, but part of what the budget bounds."""
    if cache is not None:
        shared = f"; {cache.detail}" if cache.detail else ""
        print(f"{cache.key}: {format_bytes(cache.size_bytes)} in {cache.path}{shared}",
              file=out)


def _print_entry(e: EnvironmentEntry, out: TextIO) -> None:
    print(f"Environment {e.key} ({e.kind})", file=out)
    print(f"  name:          {e.name}", file=out)
    print(f"  location:      {e.location}", file=out)
    print(f"  size:          {format_bytes(e.size_bytes)} ({e.size_bytes} bytes)", file=out)
    print(f"  built:         {_when(e.built_at)}", file=out)
    print(f"  last launched: {_when(e.last_launched_at)}", file=out)
    print(f"  launches:      {e.launches}", file=out)
    print(f"  in use:        {e.in_use or 'no'}", file=out)
    print(f"  built from:    {', '.join(e.files) or '(not recorded)'}", file=out)
    print("  launched by:" + ("" if e.repos else "   (no launch recorded)"), file=out)
    for r in e.repos:
        print(f"    {r.repo_url} @ {r.ref[:12]}  {r.launches} launch"
              f"{'es' if r.launches != 1 else ''}, last {_when(r.last_launched_at)}", file=out)


def _print_cache(kind: str, entries: list[CacheEntry], out: TextIO) -> None:
    if not entries:
        print(f"No {kind}s.", file=out)
        return
    print(f"{'KEY':18} {'SIZE':>10} {'LAST USED':16}  WHAT", file=out)
    for c in entries:
        use = "  [in use]" if c.in_use else ""
        print(f"{c.key:18} {format_bytes(c.size_bytes):>10} {_when(c.last_used_at):16}  "
              f"{c.detail}{use}", file=out)


def _print_report(report: PruneReport, out: TextIO) -> None:
    verb = "Would remove" if report.dry_run else "Removed"
    for item in report.removed:
        print(f"{verb} {item['key']} ({format_bytes(int(item['size_bytes']))})", file=out)
    for item in report.kept:
        print(f"Kept {item['key']}: {item['reason']}", file=out)
    print(f"{verb} {len(report.removed)}, freeing {format_bytes(report.freed_bytes)}; "
          f"kept {len(report.kept)} in use.", file=out)
    if report.cache:
        print(f"The build cache was {report.cache}, freeing "
              f"{format_bytes(report.cache_freed_bytes)}.", file=out)


def _catalogues(settings: Settings, client_factory: Callable[[str], Any] | None,
                environ: dict[str, str]) -> tuple[Catalogue, Any, Any]:
    """The environment catalogue, and the mirrors and checkouts (``None`` on AWS)."""
    if settings.mode == "aws":
        from .aws.catalogue import aws_catalogue

        if client_factory is None:
            import boto3

            client_factory = boto3.client
        return aws_catalogue(settings, client_factory), None, None
    from .backends.sqlite import Database, SqliteStore

    if not settings.db_path.exists():
        raise BinderlessError(f"There is no binderless state in {settings.state_dir}.",
                              hint="Pass the server's --state-dir (or BINDERLESS_STATE_DIR).")
    builder, docker = _local_builder(settings, environ)
    found = local_catalogues(settings.state_dir, SqliteStore(Database(settings.db_path)),
                             builder=builder, docker=docker)
    return found.environments, found.mirrors, found.checkouts


def _local_builder(settings: Settings, environ: dict[str, str]) -> tuple[object, Any]:
    """The builder the server builds with, as the catalogue needs it: the uv builder
    (its cache), and the docker builder's images when it builds with one (``auto``: when
    an engine answers now, as the server decides at its start)."""
    if settings.builder == "docker":
        from .backends.docker import DockerBuilder

        return DockerBuilder(settings), None
    from .backends.uvbuilder import UvBuilder

    docker = None
    if settings.builder == "auto":
        from .backends.autobuilder import docker_engine_version, engine_may_answer

        if engine_may_answer(environ) and docker_engine_version():
            from .backends.docker_images import DockerImages

            docker = DockerImages(settings.docker_image_prefix)
    return UvBuilder(settings), docker


def run(args: argparse.Namespace, *, out: TextIO = sys.stdout,
        environ: dict[str, str] | None = None,
        client_factory: Callable[[str], Any] | None = None) -> int:
    """Run one ``binderless environments`` command; the exit status."""
    environ = dict(os.environ) if environ is None else environ
    try:
        settings = load_settings(environ, state_dir=args.state_dir)
    except ValueError as exc:
        print(f"binderless environments: {exc}", file=sys.stderr)
        return 2
    try:
        environments, mirrors, checkouts = _catalogues(settings, client_factory, environ)
        cache: FolderCache | None = {"mirrors": mirrors, "checkouts": checkouts}.get(args.what)
        if args.what != "environments" and cache is None:
            raise BinderlessError("Git mirrors and saved checkouts are kept only in the "
                                  "local mode.")
        if args.action == "list":
            if cache is not None:
                entries = cache.list()
                if args.json:
                    print(json.dumps([c.to_json() for c in entries], indent=2), file=out)
                else:
                    _print_cache(cache.kind, entries, out)
                return 0
            listed = environments.list()
            if args.json:
                print(json.dumps([e.to_json() for e in listed], indent=2), file=out)
            else:
                build_cache: BuildCache | None = environments.cache
                _print_environments(listed, out,
                                    build_cache.entry() if build_cache is not None else None)
            return 0
        if args.action == "show":
            entry = environments.show(args.key)
            if args.json:
                print(json.dumps(entry.to_json(), indent=2), file=out)
            else:
                _print_entry(entry, out)
            return 0
        if not (args.keys or args.older_than or args.budget):
            print("binderless environments prune: say what to remove: KEY..., --older-than "
                  "AGE or --budget SIZE", file=sys.stderr)
            return 2
        options: dict[str, Any] = {
            "keys": tuple(args.keys), "dry_run": args.dry_run,
            "older_than": parse_age(args.older_than) if args.older_than else None,
            "budget": parse_size(args.budget) if args.budget else None}
        report = (cache or environments).prune(**options)
    except BinderlessError as exc:
        print(f"binderless environments: {exc.user_message()}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(report.to_json(), indent=2), file=out)
    else:
        _print_report(report, out)
    return 0
