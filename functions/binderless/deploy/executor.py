"""Executors of a plan: ``PrintExecutor`` describes it, ``AwsExecutor`` carries it out.

``AwsExecutor`` gets its boto3 clients from ``clients(service_name)`` (tests pass moto's)
and sleeps through ``sleep`` between two looks at a stack or a build.
"""

from __future__ import annotations

import json
import mimetypes
import uuid
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from .errors import DeployError
from .plan import (
    BuildImages,
    CheckImages,
    DeleteStack,
    DeployStack,
    EmptyBucket,
    Invalidate,
    ShowOutputs,
    StackOutput,
    Step,
    SyncSite,
    Upload,
    Value,
)
from .progress import StackWatch

__all__ = ["AwsExecutor", "PrintExecutor"]

ClientFactory = Callable[[str], Any]
CAPABILITIES = ["CAPABILITY_IAM"]
#: How to delete what a stack keeps (DeletionPolicy Retain), by resource type.
RETAINED_KINDS = {
    "AWS::DynamoDB::Table": "the state table",
    "AWS::S3::Bucket": "the sessions bucket",
    "AWS::ECR::Repository": "the environment images",
    "AWS::EFS::FileSystem": "the persistent homes",
    "AWS::Cognito::UserPool": "the sign-in accounts",
}


class PrintExecutor:
    """The dry run: describe each step; no AWS client is made."""

    def __init__(self, out: TextIO) -> None:
        self.out = out

    def execute(self, plan: Sequence[Step]) -> None:
        for number, step in enumerate(plan, 1):
            print(f"{number}. {step.describe()}", file=self.out)


def _not_found(exc: BaseException) -> bool:
    code = getattr(exc, "response", {}).get("Error", {}).get("Code", "")
    return code in ("NoSuchKey", "404", "NotFound", "NoSuchBucket", "RepositoryNotFoundException",
                    "ImageNotFoundException", "ResourceNotFoundException",
                    "FileSystemNotFound") or "does not exist" in str(exc)


class AwsExecutor:
    def __init__(self, clients: ClientFactory, region: str, out: TextIO, *,
                 sleep: Callable[[float], None], poll: float = 5.0) -> None:
        self.clients = clients
        self.region = region
        self.out = out
        self.sleep = sleep
        self.poll = poll
        self._outputs: dict[str, dict[str, str]] = {}

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def introduce(self) -> None:
        """Say which account and region; the first call, so bad credentials show at once."""
        identity = self.clients("sts").get_caller_identity()
        self.say(f"AWS account {identity['Account']}, region {self.region} "
                 f"(as {identity['Arn']}).")

    def execute(self, plan: Sequence[Step]) -> None:
        for step in plan:
            handler = getattr(self, f"_{type(step).__name__}")
            handler(step)

    # ----- values ------------------------------------------------------------------------

    def resolve(self, value: Value) -> str:
        if isinstance(value, str):
            return value
        if isinstance(value, StackOutput):
            outputs = self.outputs(value.stack)
            if value.key not in outputs:
                raise DeployError(f"the stack {value.stack} has no output {value.key}; "
                                  "was it deployed by this version of binderless?")
            return outputs[value.key]
        answer = self.clients("ec2").describe_managed_prefix_lists(
            Filters=[{"Name": "prefix-list-name", "Values": [value.name]}])
        lists = answer.get("PrefixLists", [])
        if not lists:
            raise DeployError(f"this region has no managed prefix list {value.name}; "
                              "pass --param OriginFacingPrefixListId=pl-...")
        return str(lists[0]["PrefixListId"])

    def outputs(self, stack: str, *, fresh: bool = False) -> dict[str, str]:
        if fresh or stack not in self._outputs:
            found = self._describe(stack)
            if found is None:
                raise DeployError(f"there is no stack {stack} in {self.region}")
            self._outputs[stack] = {o["OutputKey"]: o["OutputValue"]
                                    for o in found.get("Outputs", [])}
        return self._outputs[stack]

    def _describe(self, stack: str) -> dict[str, Any] | None:
        try:
            stacks = self.clients("cloudformation").describe_stacks(StackName=stack)["Stacks"]
        except Exception as exc:
            if "does not exist" in str(exc):
                return None
            raise
        return dict(stacks[0]) if stacks else None

    # ----- stacks ------------------------------------------------------------------------

    def _DeployStack(self, step: DeployStack) -> None:
        cf = self.clients("cloudformation")
        existing = self._describe(step.stack)
        if existing and existing["StackStatus"] in ("ROLLBACK_COMPLETE", "ROLLBACK_FAILED",
                                                    "REVIEW_IN_PROGRESS"):
            self.say(f"The stack {step.stack} never finished its creation "
                     f"({existing['StackStatus']}); deleting it before creating it again.")
            self._delete(step.stack, existing)
            existing = None
        if existing and not existing["StackStatus"].endswith(("_COMPLETE",)):
            raise DeployError(f"the stack {step.stack} is {existing['StackStatus']}: wait until "
                              "it settles (or fix it in the CloudFormation console), then run "
                              "binderless deploy again")
        parameters: list[dict[str, Any]] = [
            {"ParameterKey": k, "ParameterValue": self.resolve(v)}
            for k, v in sorted(step.parameters.items())]
        if existing:
            before = {p["ParameterKey"] for p in existing.get("Parameters", [])}
            parameters += [{"ParameterKey": k, "UsePreviousValue": True}
                           for k in step.keep if k in before]
        request: dict[str, Any] = {
            "StackName": step.stack, "Parameters": parameters, "Capabilities": CAPABILITIES,
            "Tags": [{"Key": "binderless:stack", "Value": step.stack.removesuffix("-assets")}],
        }
        if step.bucket is not None:
            bucket = self.resolve(step.bucket)
            self.clients("s3").put_object(Bucket=bucket, Key=step.key,
                                          Body=step.template.read_bytes())
            request["TemplateURL"] = self._object_url(bucket, step.key)
        else:
            request["TemplateBody"] = step.template.read_text()
        watch = StackWatch(cf, step.stack, self.out, self.sleep, self.poll)
        if existing is None:
            self.say(f"Creating the stack {step.stack}...")
            stack_id = cf.create_stack(**request)["StackId"]
            watch.wait(stack_id, ("CREATE_COMPLETE",))
        else:
            self.say(f"Updating the stack {step.stack}...")
            try:
                stack_id = cf.update_stack(**request)["StackId"]
            except Exception as exc:
                if "No updates are to be performed" not in str(exc):
                    raise
                self.say(f"The stack {step.stack} is up to date.")
                return
            watch.wait(stack_id, ("UPDATE_COMPLETE",))
        self._outputs.pop(step.stack, None)
        self.say(f"The stack {step.stack} is ready.")

    def _object_url(self, bucket: str, key: str) -> str:
        suffix = "amazonaws.com.cn" if self.region.startswith("cn-") else "amazonaws.com"
        return f"https://{bucket}.s3.{self.region}.{suffix}/{key}"

    def _delete(self, stack: str, existing: dict[str, Any]) -> None:
        cf = self.clients("cloudformation")
        watch = StackWatch(cf, stack, self.out, self.sleep, self.poll)
        cf.delete_stack(StackName=existing["StackId"])
        watch.wait(existing["StackId"], ("DELETE_COMPLETE",))
        self._outputs.pop(stack, None)

    def _DeleteStack(self, step: DeleteStack) -> None:
        existing = self._describe(step.stack)
        if existing is None:
            self.say(f"There is no stack {step.stack}; nothing to delete.")
            return
        kept = self._retained(step.stack, existing["StackId"])
        self.say(f"Deleting the stack {step.stack}...")
        self._delete(step.stack, existing)
        self.say(f"The stack {step.stack} is deleted.")
        if not kept and not step.prefixes:
            return
        if not step.delete_data:
            self.say("Kept (the stack's data; delete it later in the console or with the AWS CLI):")
            for kind, physical in kept:
                self.say(f"  {RETAINED_KINDS.get(kind, kind)}: {physical} ({kind})")
            return
        for kind, physical in kept:
            self.say(f"Deleting {RETAINED_KINDS.get(kind, kind)}: {physical}")
            self._delete_retained(kind, physical)
        for prefix in step.prefixes:
            self._delete_repositories(prefix)

    def _retained(self, stack: str, stack_id: str) -> list[tuple[str, str]]:
        cf = self.clients("cloudformation")
        body = cf.get_template(StackName=stack_id)["TemplateBody"]
        template = json.loads(body) if isinstance(body, str) else body
        retained = {name for name, r in template.get("Resources", {}).items()
                    if r.get("DeletionPolicy") == "Retain"}
        found = []
        for page in cf.get_paginator("list_stack_resources").paginate(StackName=stack_id):
            for summary in page["StackResourceSummaries"]:
                if summary["LogicalResourceId"] in retained and summary.get("PhysicalResourceId"):
                    found.append((summary["ResourceType"], summary["PhysicalResourceId"]))
        return found

    def _delete_retained(self, kind: str, physical: str) -> None:
        try:
            if kind == "AWS::DynamoDB::Table":
                self.clients("dynamodb").delete_table(TableName=physical)
            elif kind == "AWS::S3::Bucket":
                self._empty(physical)
                self.clients("s3").delete_bucket(Bucket=physical)
            elif kind == "AWS::ECR::Repository":
                self.clients("ecr").delete_repository(repositoryName=physical, force=True)
            elif kind == "AWS::EFS::FileSystem":
                self._delete_file_system(physical)
            elif kind == "AWS::Cognito::UserPool":
                self.clients("cognito-idp").delete_user_pool(UserPoolId=physical)
            else:
                self.say(f"  {physical} ({kind}) is kept: binderless does not delete this kind")
        except Exception as exc:
            if not _not_found(exc):
                raise

    def _delete_file_system(self, file_system: str) -> None:
        efs = self.clients("efs")
        for _ in range(60):  # the stack deleted the mount targets; EFS may lag behind
            if not efs.describe_mount_targets(FileSystemId=file_system).get("MountTargets"):
                break
            self.sleep(self.poll)
        efs.delete_file_system(FileSystemId=file_system)

    def _delete_repositories(self, prefix: str) -> None:
        ecr = self.clients("ecr")
        for page in ecr.get_paginator("describe_repositories").paginate():
            for repository in page["repositories"]:
                if repository["repositoryName"].startswith(prefix):
                    self.say(f"Deleting the base image cache: {repository['repositoryName']}")
                    ecr.delete_repository(repositoryName=repository["repositoryName"], force=True)

    # ----- files -------------------------------------------------------------------------

    def _Upload(self, step: Upload) -> None:
        bucket = self.resolve(step.bucket)
        s3 = self.clients("s3")
        try:
            s3.head_object(Bucket=bucket, Key=step.key)
            self.say(f"s3://{bucket}/{step.key} is there already.")
            return
        except Exception as exc:
            if not _not_found(exc):
                raise
        self.say(f"Uploading {step.path.name} to s3://{bucket}/{step.key}...")
        s3.upload_file(str(step.path), bucket, step.key)

    def _EmptyBucket(self, step: EmptyBucket) -> None:
        try:
            bucket = self.resolve(step.bucket)
        except DeployError:
            return  # no stack, or no such output: nothing to empty
        self._empty(bucket)

    def _empty(self, bucket: str) -> None:
        s3 = self.clients("s3")
        try:
            for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
                doomed = [{"Key": v["Key"], "VersionId": v["VersionId"]}
                          for v in page.get("Versions", []) + page.get("DeleteMarkers", [])]
                if doomed:
                    s3.delete_objects(Bucket=bucket, Delete={"Objects": doomed, "Quiet": True})
        except Exception as exc:
            if not _not_found(exc):
                raise

    def _SyncSite(self, step: SyncSite) -> None:
        bucket = self.resolve(step.bucket)
        s3 = self.clients("s3")
        files = {p.relative_to(step.site).as_posix(): p
                 for p in sorted(step.site.rglob("*")) if p.is_file()}
        self.say(f"Uploading the site ({len(files)} files) to s3://{bucket}/...")
        for key, path in files.items():
            body = path.read_bytes()
            if key == "loading.html":  # the gateway fills in the title; a static copy cannot
                body = body.replace(b"{{og_title}}", b"binderless")
            content_type = mimetypes.guess_type(key)[0] or "application/octet-stream"
            s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType=content_type,
                          CacheControl="no-cache")
        stale = [{"Key": o["Key"]}
                 for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
                 for o in page.get("Contents", []) if o["Key"] not in files]
        if stale:
            s3.delete_objects(Bucket=bucket, Delete={"Objects": stale, "Quiet": True})

    def _Invalidate(self, step: Invalidate) -> None:
        distribution = self.resolve(step.distribution)
        self.clients("cloudfront").create_invalidation(
            DistributionId=distribution, InvalidationBatch={
                "Paths": {"Quantity": 1, "Items": ["/*"]},
                "CallerReference": f"binderless-deploy-{uuid.uuid4()}"})
        self.say("CloudFront drops its cached copies of the site within minutes.")

    def _ShowOutputs(self, step: ShowOutputs) -> None:
        outputs = self.outputs(step.stack, fresh=True)
        self.say(f"\nbinderless is deployed as {step.stack} in {self.region}.")
        if "Url" in outputs:
            self.say(f"  Launch repositories at {outputs['Url']}/v2/<provider>/<spec>")
        for key in ("Url", "Dashboard", "StateTable", "BuildProject", "Cluster"):
            if key in outputs:
                self.say(f"  {key}: {outputs[key]}")

    # ----- images ------------------------------------------------------------------------

    def _missing_images(self, tag: str, repositories: tuple[str, ...]) -> list[str]:
        ecr = self.clients("ecr")
        missing = []
        for repository in repositories:
            try:
                found = ecr.describe_images(repositoryName=repository,
                                            imageIds=[{"imageTag": tag}])["imageDetails"]
            except Exception as exc:
                if not _not_found(exc):
                    raise
                found = []
            if not found:
                missing.append(f"{repository}:{tag}")
        return missing

    def _CheckImages(self, step: CheckImages) -> None:
        missing = self._missing_images(step.tag, step.repositories)
        if missing:
            raise DeployError(f"ImageTag={step.tag}: there is no image {', '.join(missing)}. "
                              "Leave ImageTag out to build this checkout's images.")
        self.say(f"The images {step.tag} are there.")

    def _BuildImages(self, step: BuildImages) -> None:
        if not self._missing_images(step.tag, step.repositories):
            self.say(f"The gateway and runner images {step.tag} are built already.")
            return
        bucket = self.resolve(step.bucket)
        project = self.resolve(step.project)
        self.clients("s3").upload_file(str(step.source), bucket, step.source_key)
        codebuild = self.clients("codebuild")
        build = codebuild.start_build(
            projectName=project, sourceTypeOverride="S3",
            sourceLocationOverride=f"{bucket}/{step.source_key}",
            environmentVariablesOverride=[{"name": "IMAGE_TAG", "value": step.tag,
                                           "type": "PLAINTEXT"}])["build"]
        self.say(f"Building the gateway and runner images {step.tag} in CodeBuild "
                 f"({build['id']}); this takes about ten minutes...")
        phase = ""
        while build["buildStatus"] == "IN_PROGRESS":
            if build.get("currentPhase", "") != phase:
                phase = build.get("currentPhase", "")
                self.say(f"  image build: {phase}")
            self.sleep(self.poll * 2)
            build = codebuild.batch_get_builds(ids=[build["id"]])["builds"][0]
        if build["buildStatus"] != "SUCCEEDED":
            raise DeployError(f"the image build ended {build['buildStatus']}.\n"
                              + self._build_log_tail(build))
        missing = self._missing_images(step.tag, step.repositories)
        if missing:
            raise DeployError(f"the image build succeeded but {', '.join(missing)} is missing")
        self.say(f"The images {step.tag} are built.")

    def _build_log_tail(self, build: dict[str, Any], lines: int = 20) -> str:
        logs = build.get("logs") or {}
        group, stream = logs.get("groupName"), logs.get("streamName")
        if not group or not stream:
            return "Its log is in the CodeBuild console."
        try:
            events = self.clients("logs").get_log_events(
                logGroupName=group, logStreamName=stream, limit=lines,
                startFromHead=False)["events"]
        except Exception:
            return f"Its log: CloudWatch Logs {group} {stream}"
        tail = "\n".join("  " + e["message"].rstrip() for e in events)
        return f"The end of its log ({group} {stream}):\n{tail}"
