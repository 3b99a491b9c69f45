"""One dry run per test session: ``binderless deploy --dry-run`` with AWS clients forbidden."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import botocore.session
import pytest

from binderless.cli import build_parser
from binderless.deploy.cli import run

#: Settings only the gateway gets (infra/service/compute.yaml): the public URL (the functions
#: cannot have it: the distribution depends on their API), and sign-in with persistent
#: workspaces (the functions sign no one in and keep no files).
GATEWAY_ONLY = frozenset({
    "BINDERLESS_PUBLIC_URL", "BINDERLESS_SESSION_URL", "BINDERLESS_SIGN_IN",
    "BINDERLESS_OIDC_ISSUER", "BINDERLESS_OIDC_CLIENT_ID", "BINDERLESS_OIDC_CLIENT_SECRET", "BINDERLESS_AUTH_SECRET",
    "BINDERLESS_EFS_FILE_SYSTEM_ID", "BINDERLESS_EFS_HOME_ROOT", "BINDERLESS_WORKSPACES_DIR",
    "BINDERLESS_MAX_PROJECTS_PER_USER", "BINDERLESS_TRUSTED_PROXY_HOPS",
    "BINDERLESS_LAUNCH_BUDGET_PER_IP",
})


@dataclass(frozen=True)
class DryRun:
    out: Path
    printed: str
    service: dict[str, Any]
    assets: dict[str, Any]


def forbid_clients(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError(f"the dry run made an AWS client: {args[1:2]}")


@pytest.fixture(scope="session")
def dry_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DryRun]:
    out = tmp_path_factory.mktemp("deploy") / "packaged"
    printed = io.StringIO()
    args = build_parser().parse_args(["deploy", "--dry-run", "--output", str(out)])
    with pytest.MonkeyPatch.context() as patch:
        # Every boto3 and botocore client goes through this method.
        patch.setattr(botocore.session.Session, "create_client", forbid_clients)
        status = run(args, out=printed, err=printed)
    assert status == 0, printed.getvalue()
    yield DryRun(out=out, printed=printed.getvalue(),
                 service=json.loads((out / "binderless.template.json").read_text()),
                 assets=json.loads((out / "assets.template.json").read_text()))
