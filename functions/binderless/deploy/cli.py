"""``binderless deploy`` and ``binderless destroy``: parse, plan, execute, report.

Errors reach the operator as one readable message and exit status 1 (2 for bad usage),
never as a traceback: AWS SDK errors are translated in ``run``, the one boundary.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TextIO

from ..packaging import PackagingFailed
from .errors import DeployError, translate

if TYPE_CHECKING:
    from .package import Packaged

__all__ = ["add_parsers", "destroy", "run"]

ClientFactory = Callable[[str], Any]


class Packager(Protocol):
    """Makes the deployment's files (``package.package`` itself fits)."""

    def __call__(self, out: Path, *, environ: Mapping[str, str] | None = ...) -> Packaged: ...


def add_parsers(sub: Any) -> None:
    deploy_parser = sub.add_parser(
        "deploy",
        help="deploy binderless into an AWS account (CloudFormation)",
        description="Package binderless (the templates of infra/, the Lambda code, the "
        "gateway and runner image sources) and deploy it with CloudFormation: first the "
        "stack <NAME>-assets (artifacts bucket, image repositories, image build), then the "
        "images if this checkout's are not built yet, then the stack NAME itself, then the "
        "launch pages. A new stack is created, an existing one updated; the stacks' events "
        "are shown as they happen. Parameters not given keep their previous value on an "
        "update. --dry-run only writes the packaged templates and the plan, with no AWS call. "
        "What idles (the gateway, its load balancer; no NAT gateway by default) and what a "
        "session-hour and a build cost are printed before each deploy (--estimate prints "
        "them alone). Tested on moto and a local Docker engine; not yet run on a real AWS "
        "account (docs/operators.md, 'Not verified yet').",
        epilog="Examples:\n"
        "  binderless deploy --stack binder --region eu-west-1\n"
        "  binderless deploy --stack binder --param SessionMemory=8192 --param MaxSessions=50\n"
        "  binderless deploy --dry-run --output build/deploy\n"
        "Parameters: see infra/service/parameters.yaml or the operator guide.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    deploy_parser.add_argument("--stack", help="the stack name: 1-23 lowercase letters, digits "
                               "and hyphens (required, except with --dry-run: binderless)")
    deploy_parser.add_argument("--region", help="the AWS region (default: AWS_REGION, "
                               "AWS_DEFAULT_REGION or your AWS configuration)")
    deploy_parser.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                               help="a stack parameter, for example SessionCpu=2048 "
                               "(repeatable)")
    deploy_parser.add_argument("--dry-run", action="store_true",
                               help="write the packaged templates and the plan to --output; "
                               "make no AWS call")
    deploy_parser.add_argument("--estimate", action="store_true",
                               help="print what the deployment would cost (idle a month, "
                               "a session-hour, a build) for both network layouts, from the "
                               "generated templates and infra/prices.yaml; make no AWS call")
    deploy_parser.add_argument("--output", type=Path, metavar="DIR",
                               help="where the packaged files go (required with --dry-run; "
                               "default: a temporary folder)")

    destroy_parser = sub.add_parser(
        "destroy",
        help="delete a binderless deployment (asks whether to keep its user data)",
        description="Delete the stack NAME and its assets stack. The user data - the state "
        "table, the sessions bucket, the environment images, the persistent homes (EFS) and "
        "the sign-in accounts (Cognito) - is kept or deleted as you choose: pass --keep-data or --delete-data, or answer the "
        "question. The launch pages and the packaged code are always deleted.",
        epilog="Example: binderless destroy --stack binder --region eu-west-1 --keep-data",
    )
    destroy_parser.add_argument("--stack", required=True, help="the stack to delete")
    destroy_parser.add_argument("--region", help="the AWS region (default: as for deploy)")
    data = destroy_parser.add_mutually_exclusive_group()
    data.add_argument("--keep-data", dest="delete_data", action="store_false", default=None,
                      help="keep the user data (listed when the stack is gone)")
    data.add_argument("--delete-data", dest="delete_data", action="store_true",
                      help="delete the user data too; it cannot be recovered")
    destroy_parser.add_argument("--yes", action="store_true",
                                help="do not ask to confirm the stack name")


def region_of(args: argparse.Namespace, environ: Mapping[str, str]) -> str:
    region = args.region or environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION")
    if not region:
        import boto3  # reads the configuration files only; no client, no network

        region = boto3.session.Session().region_name
    if not region:
        raise DeployError("no AWS region: pass --region REGION or set AWS_REGION")
    return str(region)


def default_clients(region: str) -> ClientFactory:
    import boto3
    from botocore.config import Config

    session = boto3.session.Session(region_name=region)
    config = Config(retries={"mode": "standard", "max_attempts": 8})
    made: dict[str, Any] = {}

    def client(service: str) -> Any:
        if service not in made:
            made[service] = session.client(service, config=config)
        return made[service]

    return client


def deploy(args: argparse.Namespace, *, clients: ClientFactory | None, out: TextIO,
           environ: Mapping[str, str], sleep: Callable[[float], None],
           packager: Packager | None = None) -> int:
    from .executor import AwsExecutor, PrintExecutor
    from .package import package
    from .params import operator_parameters, parse_params
    from .plan import check_stack_name, deploy_plan
    from .templates import ROOT, load_fragments

    if args.dry_run and args.estimate:
        raise DeployError("--estimate prints the costs only; --dry-run prints them too")
    if args.dry_run and args.output is None:
        raise DeployError("--dry-run writes into --output DIR; give one")
    offline = args.dry_run or args.estimate  # no AWS call at all
    stack = check_stack_name(args.stack or ("binderless" if offline else ""))
    # Check the parameters before anything slow or remote happens.
    fragments = load_fragments(ROOT / "infra" / "service")
    params = parse_params(args.param, fragments.template)
    executor = None
    region = (args.region or environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION")
              or "us-east-1") if offline else region_of(args, environ)
    if not offline:
        executor = AwsExecutor(clients or default_clients(region), region, out, sleep=sleep)
        executor.introduce()  # fails here, before the slow packaging, without credentials
    with tempfile.TemporaryDirectory(prefix="binderless-deploy-") as tmp:
        output = args.output or Path(tmp)
        print(f"Packaging binderless into {output}...", file=out, flush=True)
        packaged = (packager or package)(output, environ=environ)
        plan = deploy_plan(packaged, stack, params, operator_parameters(fragments.template))
        costs = cost_lines(packaged.service_template, region, params)
        if args.estimate:
            print("\n".join(costs), file=out)
            return 0
        print("\n".join(costs), file=out, flush=True)
        if args.dry_run:
            (output / "estimate.txt").write_text("\n".join(costs) + "\n")
            with open(output / "plan.txt", "w") as plan_file:
                PrintExecutor(plan_file).execute(plan)
            print(f"Dry run: the packaged templates are in {output}; a deployment of "
                  f"{stack} would:", file=out)
            PrintExecutor(out).execute(plan)
            return 0
        assert executor is not None
        executor.execute(plan)
    return 0


def cost_lines(template: dict[str, Any], region: str, params: Mapping[str, str]) -> list[str]:
    """The estimate of the packaged service template, and of the other network layout."""
    from .estimate import layouts

    chosen, other = layouts(template, region, params)
    return [*chosen.lines(),
            f"  with NetworkLayout={other.layout} instead: ${other.idle_month:.2f} a month "
            f"idle, ${other.session_hour:.4f} a session-hour"]


def destroy(args: argparse.Namespace, *, clients: ClientFactory | None, out: TextIO,
            environ: Mapping[str, str], sleep: Callable[[float], None],
            ask: Callable[[str], str] | None) -> int:
    from .executor import AwsExecutor
    from .plan import check_stack_name, destroy_plan

    stack = check_stack_name(args.stack)
    region = region_of(args, environ)
    delete_data = args.delete_data
    if delete_data is None or not args.yes:
        if ask is None:
            raise DeployError("binderless destroy asks before it deletes: pass --yes and one of "
                              "--keep-data or --delete-data when there is no terminal")
        if not args.yes:
            answer = ask(f"Delete the binderless stack {stack} in {region}? Type its name "
                         "to confirm: ").strip()
            if answer != stack:
                print("Nothing was deleted.", file=out)
                return 1
        while delete_data is None:
            answer = ask("Delete the user data too (the state table, the sessions bucket, "
                         "the environment images, the persistent homes and the sign-in "
                         "accounts)? [keep/delete]: ").strip().lower()
            if answer in ("keep", "delete"):
                delete_data = answer == "delete"
    executor = AwsExecutor(clients or default_clients(region), region, out, sleep=sleep)
    executor.introduce()
    executor.execute(destroy_plan(stack, delete_data=delete_data))
    print(f"binderless {stack} is gone from {region}"
          + ("." if delete_data else ", its user data kept."), file=out)
    return 0


def run(args: argparse.Namespace, *, clients: ClientFactory | None = None,
        out: TextIO | None = None, err: TextIO | None = None,
        environ: Mapping[str, str] | None = None, sleep: Callable[[float], None] = time.sleep,
        ask: Callable[[str], str] | None = None, packager: Packager | None = None) -> int:
    """Run ``args.command`` (deploy or destroy); the exit status."""
    out = out or sys.stdout
    err = err or sys.stderr
    environ = os.environ if environ is None else environ
    if ask is None and sys.stdin is not None and sys.stdin.isatty():
        ask = input
    try:
        if args.command == "deploy":
            return deploy(args, clients=clients, out=out, environ=environ, sleep=sleep,
                          packager=packager)
        return destroy(args, clients=clients, out=out, environ=environ, sleep=sleep, ask=ask)
    except (DeployError, PackagingFailed) as exc:
        print(f"binderless {args.command}: {exc}", file=err)
        return 1
    except KeyboardInterrupt:
        print(f"binderless {args.command}: interrupted. A stack operation already started "
              "goes on in CloudFormation; run the command again to follow up.", file=err)
        return 130
    except Exception as exc:
        translated = translate(exc)
        if translated is None:
            raise
        print(f"binderless {args.command}: {translated}", file=err)
        return 1
