"""What a deployment does, as data: a plan of small frozen steps, built without AWS.

Like Chalice's deployer, ``binderless deploy`` first builds a plan, then hands it to an
executor: ``AwsExecutor`` carries it out, ``PrintExecutor`` only describes it (the dry
run). Values known only in the account (a stack's output, the CloudFront prefix list of
the region) are placeholders the executor resolves when it reaches them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .errors import DeployError
from .package import Packaged
from .templates import ROOT

__all__ = [
    "PLUMBING",
    "BuildImages",
    "CheckImages",
    "DeleteStack",
    "DeployStack",
    "EmptyBucket",
    "Invalidate",
    "PrefixList",
    "ShowOutputs",
    "StackOutput",
    "Step",
    "SyncSite",
    "Upload",
    "Value",
    "assets_stack",
    "check_stack_name",
    "deploy_plan",
    "destroy_plan",
    "image_project",
    "image_repositories",
]

#: Parameters of the service stack that binderless deploy sets itself.
PLUMBING = ("ArtifactsBucket", "LambdaCodeKey", "OriginFacingPrefixListId")
CLOUDFRONT_PREFIX_LIST = "com.amazonaws.global.cloudfront.origin-facing"
_STACK_NAME = re.compile(r"[a-z](?:[a-z0-9-]{0,21}[a-z0-9])?")


@dataclass(frozen=True)
class StackOutput:
    """An output of a stack, read when the executor needs it."""

    stack: str
    key: str

    def __str__(self) -> str:
        return f"<output {self.key} of {self.stack}>"


@dataclass(frozen=True)
class PrefixList:
    """The id of an AWS-managed prefix list of the region, looked up by name."""

    name: str

    def __str__(self) -> str:
        return f"<id of the prefix list {self.name}>"


Value = str | StackOutput | PrefixList


@dataclass(frozen=True)
class DeployStack:
    """Create ``stack``, or update it; ``keep`` names the operator's parameters that were not
    given this time (an update keeps their previous values). With ``bucket``, the template
    is uploaded there as ``key`` first (a template over 51,200 bytes must come from S3)."""

    stack: str
    template: Path
    parameters: Mapping[str, Value]
    keep: tuple[str, ...] = ()
    bucket: Value | None = None
    key: str = ""

    def describe(self) -> str:
        given = ", ".join(f"{k}={v}" for k, v in sorted(self.parameters.items()))
        kept = "; the other parameters keep their values" if self.keep else ""
        where = f" (uploaded to {self.bucket}/{self.key})" if self.bucket else ""
        return (f"create or update the stack {self.stack} from {self.template.name}{where} "
                f"with {given or 'the defaults'}{kept}, showing its events")


@dataclass(frozen=True)
class Upload:
    path: Path
    bucket: Value
    key: str

    def describe(self) -> str:
        return f"upload {self.path.name} to s3://{self.bucket}/{self.key} (unless it is there)"


@dataclass(frozen=True)
class BuildImages:
    """Build the gateway and runner images tagged ``tag``, unless both exist already."""

    project: Value
    bucket: Value
    source: Path
    source_key: str
    tag: str
    repositories: tuple[str, ...]

    def describe(self) -> str:
        return (f"unless {', '.join(f'{r}:{self.tag}' for r in self.repositories)} exist: "
                f"upload {self.source.name} to s3://{self.bucket}/{self.source_key}, run the "
                f"CodeBuild project {self.project} on it and follow the build")


@dataclass(frozen=True)
class CheckImages:
    """The images of a pinned ImageTag must exist already."""

    tag: str
    repositories: tuple[str, ...]

    def describe(self) -> str:
        return f"check that {', '.join(f'{r}:{self.tag}' for r in self.repositories)} exist"


@dataclass(frozen=True)
class SyncSite:
    bucket: Value
    site: Path

    def describe(self) -> str:
        return f"upload the site ({self.site.name}/) to s3://{self.bucket}/, removing old files"


@dataclass(frozen=True)
class Invalidate:
    distribution: Value

    def describe(self) -> str:
        return f"invalidate /* on the CloudFront distribution {self.distribution}"


@dataclass(frozen=True)
class ShowOutputs:
    stack: str

    def describe(self) -> str:
        return f"print the outputs of {self.stack} (its URL first)"


@dataclass(frozen=True)
class EmptyBucket:
    bucket: Value

    def describe(self) -> str:
        return f"empty s3://{self.bucket}/ (CloudFormation deletes only empty buckets)"


@dataclass(frozen=True)
class DeleteStack:
    """Delete ``stack``; with ``delete_data``, also what it keeps (DeletionPolicy Retain)."""

    stack: str
    delete_data: bool = False
    prefixes: tuple[str, ...] = field(default=())

    def describe(self) -> str:
        data = ("then delete the data it keeps (DeletionPolicy Retain) and the ECR "
                f"repositories under {', '.join(self.prefixes)}" if self.delete_data and
                self.prefixes else "then delete the data it keeps (DeletionPolicy Retain)"
                if self.delete_data else "keeping its data (DeletionPolicy Retain)")
        return f"delete the stack {self.stack}, showing its events; {data}"


Step = (DeployStack | Upload | BuildImages | CheckImages | SyncSite | Invalidate | ShowOutputs
        | EmptyBucket | DeleteStack)


def check_stack_name(stack: str) -> str:
    """Stack names prefix ECR repositories, so they are lowercase; ``-assets`` is added."""
    if not _STACK_NAME.fullmatch(stack):
        raise DeployError(
            f"{stack!r} cannot name a binderless stack: use 1 to 23 lowercase letters, digits "
            "and hyphens, starting with a letter and not ending with a hyphen (it prefixes "
            "ECR repository names)")
    return stack


def assets_stack(stack: str) -> str:
    return f"{stack}-assets"


def image_repositories(stack: str) -> tuple[str, str]:
    """The gateway's and the runner's ECR repositories (named so in infra/assets.yaml)."""
    return (f"{stack}/gateway", f"{stack}/runner")


def image_project(stack: str) -> str:
    """The CodeBuild project that builds them (named so in infra/assets.yaml)."""
    return f"{stack}-images"


def deploy_plan(packaged: Packaged, stack: str, params: Mapping[str, str],
                operator_params: tuple[str, ...], site: Path = ROOT / "site") -> list[Step]:
    """The steps of ``binderless deploy``: ``params`` are the operator's ``--param`` values,
    ``operator_params`` every parameter an operator may set."""
    assets = assets_stack(stack)
    bucket = StackOutput(assets, "ArtifactsBucket")
    tag = params.get("ImageTag") or packaged.image_tag
    repositories = image_repositories(stack)
    images: Step = (CheckImages(tag, repositories) if "ImageTag" in params else BuildImages(
        project=image_project(stack), bucket=bucket,
        source=packaged.image_source, source_key=f"images/{tag}.zip", tag=tag,
        repositories=repositories))
    parameters: dict[str, Value] = {
        **params, "ImageTag": tag, "ArtifactsBucket": bucket,
        "LambdaCodeKey": packaged.lambda_key,
        "OriginFacingPrefixListId": PrefixList(CLOUDFRONT_PREFIX_LIST),
    }
    keep = tuple(sorted(p for p in operator_params if p not in parameters))
    return [
        DeployStack(assets, packaged.assets_template_path, {"ServiceStackName": stack}),
        images,
        Upload(packaged.lambda_zip, bucket, packaged.lambda_key),
        DeployStack(stack, packaged.service_template_path, parameters, keep=keep,
                    bucket=bucket, key=packaged.template_key),
        SyncSite(StackOutput(stack, "SiteBucket"), site),
        Invalidate(StackOutput(stack, "DistributionId")),
        ShowOutputs(stack),
    ]


def destroy_plan(stack: str, *, delete_data: bool) -> list[Step]:
    """The steps of ``binderless destroy``: the service stack, then its assets."""
    assets = assets_stack(stack)
    return [
        EmptyBucket(StackOutput(stack, "SiteBucket")),
        DeleteStack(stack, delete_data=delete_data, prefixes=(f"{stack}-mirror/",)),
        EmptyBucket(StackOutput(assets, "ArtifactsBucket")),
        DeleteStack(assets),
    ]
