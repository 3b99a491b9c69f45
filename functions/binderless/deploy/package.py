"""Package everything a deployment needs, offline: templates, Lambda code, image sources.

``package(out)`` writes into ``out``:

- ``binderless.template.json``: the service stack. ``chalice package --merge-template``
  merges ``infra/service/*.yaml`` into the Chalice app's template; the shared settings go
  into the gateway container's and every function's environment; the SAM resources are
  expanded (``sam.py``); every function's code is ``s3://<ArtifactsBucket>/<LambdaCodeKey>``;
- ``assets.template.json``: the assets stack (``infra/assets.yaml``);
- ``deployment.zip``: the Lambda package, uploaded as ``lambda/<sha256>.zip``;
- ``images-source.zip``: what the gateway and runner images are built from, uploaded as
  ``images/<tag>.zip``; the image tag is a digest of its content, so an unchanged source
  is never built twice.

Nothing here creates an AWS client: ``binderless deploy --dry-run`` stops after this.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import tempfile
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..packaging import chalice_package, stage_chalice_project
from .errors import DeployError
from .sam import expand_sam
from .templates import ROOT, TemplateError, load_fragments, load_template

__all__ = ["GATEWAY_CONTAINER", "IMAGE_SOURCES", "Packaged", "load_packaged", "package"]

SERVICE_TEMPLATE = "binderless.template.json"
ASSETS_TEMPLATE = "assets.template.json"
#: The container of GatewayTaskDefinition that gets the shared settings.
GATEWAY_CONTAINER = ("GatewayTaskDefinition", "gateway")
#: What the gateway and runner Dockerfiles copy (build context: the repository root).
IMAGE_SOURCES = ("pyproject.toml", "README.md", "functions", "site", "examples", "build-runner")
_SKIP = {"__pycache__", ".mypy_cache", ".pytest_cache", ".chalice"}
#: A fixed time for every zip entry: the same files give the same bytes (and image tag).
_ZIP_TIME = (2020, 1, 1, 0, 0, 0)


@dataclass(frozen=True)
class Packaged:
    """What ``package`` wrote, and the names the deployment uses for it."""

    out: Path
    service_template: dict[str, Any]
    assets_template: dict[str, Any]
    lambda_key: str
    image_tag: str

    @property
    def service_template_path(self) -> Path:
        return self.out / SERVICE_TEMPLATE

    @property
    def assets_template_path(self) -> Path:
        return self.out / ASSETS_TEMPLATE

    @property
    def lambda_zip(self) -> Path:
        return self.out / "deployment.zip"

    @property
    def image_source(self) -> Path:
        return self.out / "images-source.zip"

    @property
    def template_key(self) -> str:
        digest = hashlib.sha256(self.service_template_path.read_bytes()).hexdigest()
        return f"templates/{digest}.json"

    @property
    def image_source_key(self) -> str:
        return f"images/{self.image_tag}.zip"


def package(out: Path, *, root: Path = ROOT, environ: Mapping[str, str] | None = None) -> Packaged:
    """Write the deployment's files into ``out`` (created if needed); no AWS call."""
    out.mkdir(parents=True, exist_ok=True)
    fragments = load_fragments(root / "infra" / "service", root)
    with tempfile.TemporaryDirectory(prefix="binderless-package-") as tmp:
        work = Path(tmp)
        merge = work / "infra.json"
        merge.write_text(json.dumps(fragments.template))
        project = stage_chalice_project(work / "project")
        try:
            chalice_out = chalice_package(project, work / "chalice", environ=environ,
                                          merge_template=merge)
        except RuntimeError as exc:
            raise DeployError(str(exc)) from exc
        sam = json.loads((chalice_out / "sam.json").read_text())
        shutil.copyfile(chalice_out / "deployment.zip", out / "deployment.zip")
    lambda_key = f"lambda/{_sha256(out / 'deployment.zip')}.zip"
    service = service_template(sam, fragments.settings)
    assets = load_template(root / "infra" / "assets.yaml", root)
    _write_json(out / SERVICE_TEMPLATE, service)
    _write_json(out / ASSETS_TEMPLATE, assets)
    image_tag = write_image_source(root, out / "images-source.zip")
    return Packaged(out=out, service_template=service, assets_template=assets,
                    lambda_key=lambda_key, image_tag=image_tag)


def load_packaged(out: Path) -> Packaged:
    """What an earlier ``package(out)`` (a dry run) wrote, read back."""
    return Packaged(
        out=out, service_template=json.loads((out / SERVICE_TEMPLATE).read_text()),
        assets_template=json.loads((out / ASSETS_TEMPLATE).read_text()),
        lambda_key=f"lambda/{_sha256(out / 'deployment.zip')}.zip",
        image_tag=_sha256(out / "images-source.zip")[:20])


def service_template(sam: Mapping[str, Any], settings: Mapping[str, Any]) -> dict[str, Any]:
    """Chalice's merged template, with the settings filled in and SAM expanded."""
    resources = sam["Resources"]
    functions = [name for name, r in resources.items()
                 if r.get("Type") == "AWS::Serverless::Function"]
    if not functions:
        raise TemplateError("chalice package wrote no function")
    for name in functions:
        env = resources[name]["Properties"].setdefault("Environment", {})
        env.setdefault("Variables", {}).update(settings)
    task, container_name = GATEWAY_CONTAINER
    containers = resources[task]["Properties"]["ContainerDefinitions"]
    container = next(c for c in containers if c["Name"] == container_name)
    given = {e["Name"] for e in container.get("Environment", [])}
    container.setdefault("Environment", []).extend(
        {"Name": k, "Value": v} for k, v in settings.items() if k not in given)
    template = expand_sam(sam, {"S3Bucket": {"Ref": "ArtifactsBucket"},
                                "S3Key": {"Ref": "LambdaCodeKey"}})
    template["AWSTemplateFormatVersion"] = "2010-09-09"
    template["Description"] = ("binderless: launch Binder links on AWS (CloudFront, the session "
                               "gateway on ECS Fargate, builds in CodeBuild, state in DynamoDB)")
    for name, resource in template["Resources"].items():
        if "Type" not in resource:
            raise TemplateError(f"infra/service names {name}, which chalice package did not "
                                "write (was a handler renamed?)")
    return template


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=1) + "\n")


def _image_files(root: Path) -> Iterator[tuple[str, Path]]:
    for name in IMAGE_SOURCES:
        path = root / name
        if path.is_file():
            yield name, path
            continue
        for current, dirs, files in os.walk(path):
            dirs[:] = sorted(d for d in dirs if d not in _SKIP and not d.endswith(".egg-info"))
            for file in sorted(files):
                if not file.endswith((".pyc", ".pyo")):
                    full = Path(current) / file
                    yield full.relative_to(root).as_posix(), full


def write_image_source(root: Path, dest: Path) -> str:
    """Zip the image build's sources reproducibly; return the image tag (a digest)."""
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, path in sorted(_image_files(root)):
            info = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
            executable = path.stat().st_mode & stat.S_IXUSR
            info.external_attr = (0o100755 if executable else 0o100644) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, path.read_bytes())
    return _sha256(dest)[:20]
