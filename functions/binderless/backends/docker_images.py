"""The docker builder's images, for the environment catalogue (``catalogue.py``).

An environment the docker builder made is the image ``<docker_image_prefix>env:<key>``
carrying the label ``binderless.environment=<key>`` (``DockerBuilder.command`` passes it
to repo2docker, which writes it into the image). Only images with both are listed and
pruned: an image someone tagged by hand, or another prefix's, is never touched.

Like the rest of the docker backend this reaches the engine only through the ``docker``
command line (so the tests' fake engine answers too), synchronously: the catalogue runs
in worker threads and the CLI. The commands:

- ``docker image ls --filter label=binderless.environment --format '{{json .}}'``: the
  names; ``docker image inspect <names>``: ``Size`` (bytes), ``Created``, the labels;
- ``docker ps -a --no-trunc --format '{{json .}}'``: what containers use (their
  ``Image``, as they were started: a name, or an image id once the name has moved to a
  newer build; such a container's key is found by the ids ``stored`` saw last);
- ``docker image rm <name>`` (never ``--force``): the engine itself refuses an image a
  container uses, so a container started between the check and the removal keeps it.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from ..catalogue import NotInCatalogue, StoredEnvironment
from ..errors import BinderlessError

__all__ = ["ENVIRONMENT_LABEL", "DockerImages"]

#: The label the docker builder gives every image (its value: the environment key).
ENVIRONMENT_LABEL = "binderless.environment"
#: Seconds one ``docker`` command of the catalogue may take.
TIMEOUT = 30.0
_GONE = ("no such image", "no such object")


def _plain(name: str) -> str:
    """``docker.io/library/x`` and ``x:latest`` are one image, as Docker sees it."""
    for prefix in ("docker.io/library/", "docker.io/"):
        if name.startswith(prefix):
            name = name[len(prefix):]
    if ":" not in name.rsplit("/", 1)[-1] and "@" not in name:
        name += ":latest"
    return name


def _timestamp(text: str) -> float | None:
    """Docker's ``Created`` (RFC 3339, nanoseconds) as seconds since the epoch."""
    match = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)",
                         text.strip())
    if match is None:
        return None
    zone = "+00:00" if match.group(3) == "Z" else match.group(3)
    fraction = (match.group(2) or "0")[:6]
    return datetime.fromisoformat(f"{match.group(1)}.{fraction:0<6}{zone}").timestamp()


def _json_lines(text: str) -> list[dict[str, Any]]:
    found = []
    for line in text.splitlines():
        try:
            item = json.loads(line)
        except ValueError:
            continue
        if isinstance(item, dict):
            found.append(item)
    return found


class DockerImages:
    """``EnvironmentStorage`` over the images of one ``docker_image_prefix``."""

    kind = "docker image"

    def __init__(self, prefix: str, *, timeout: float = TIMEOUT) -> None:
        self.repository = _plain(f"{prefix}env:x")[:-2]
        self.timeout = timeout
        #: Image ids (without ``sha256:``) of the environments ``stored`` found last.
        self._ids: dict[str, str] = {}

    def image_name(self, key: str) -> str:
        return f"{self.repository}:{key}"

    def _docker(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``docker <args>``; a missing or silent ``docker`` is a ``BinderlessError``."""
        try:
            return subprocess.run(["docker", *args], capture_output=True, text=True,
                                  timeout=self.timeout, stdin=subprocess.DEVNULL, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise BinderlessError(f"Docker did not answer `docker {args[0]}`: {exc}",
                                  hint="Check that Docker runs and answers `docker info`.",
                                  ) from exc

    def _checked(self, *args: str) -> str:
        answer = self._docker(*args)
        if answer.returncode != 0:
            last = (answer.stderr.strip() or answer.stdout.strip()).splitlines()[-1:]
            raise BinderlessError(f"`docker {' '.join(args[:2])}` failed: "
                                  f"{last[0] if last else answer.returncode}",
                                  hint="Check that Docker runs and answers `docker info`.")
        return answer.stdout

    def _inspect(self) -> list[dict[str, Any]]:
        """``docker image inspect`` of this prefix's labelled images."""
        listed = self._checked("image", "ls", "--no-trunc", "--filter",
                               f"label={ENVIRONMENT_LABEL}", "--format", "{{json .}}")
        names = sorted({_plain(f"{item.get('Repository')}:{item.get('Tag')}")
                        for item in _json_lines(listed)
                        if _plain(f"{item.get('Repository')}:x") == f"{self.repository}:x"})
        if not names:
            return []
        answer = self._docker("image", "inspect", *names)
        try:  # a name removed meanwhile fails the command, not the others' answers
            images = json.loads(answer.stdout or "[]")
        except ValueError as exc:
            raise BinderlessError("`docker image inspect` did not answer JSON.") from exc
        return [image for image in images if isinstance(image, dict)]

    def _ours(self, image: dict[str, Any]) -> list[str]:
        """The keys ``image`` is the environment of (its labelled key, under our name)."""
        labels = (image.get("Config") or {}).get("Labels") or {}
        key = str(labels.get(ENVIRONMENT_LABEL) or "")
        tags = {_plain(str(tag)) for tag in image.get("RepoTags") or []}
        return [key] if key and self.image_name(key) in tags else []

    def stored(self) -> list[StoredEnvironment]:
        found = []
        ids: dict[str, str] = {}
        for image in self._inspect():
            for key in self._ours(image):
                found.append(StoredEnvironment(
                    key=key, name=self.image_name(key), size_bytes=int(image.get("Size") or 0),
                    created_at=_timestamp(str(image.get("Created") or "")),
                    location=self.image_name(key)))
                ids[str(image.get("Id") or "").removeprefix("sha256:")] = key
        self._ids = ids
        return found

    def _key_of(self, ref: str) -> str | None:
        """The key of the image a container was started from: by our name, or (once the
        name has moved to a newer build) by the id of an image listed last."""
        name = _plain(ref)
        if name.startswith(f"{self.repository}:"):
            return name.split(":", 1)[1] or None
        ref = ref.removeprefix("sha256:")
        if len(ref) >= 12:
            return next((key for image_id, key in self._ids.items()
                         if image_id.startswith(ref)), None)
        return None

    def users(self) -> dict[str, str]:
        """Containers (running, or stopped and not removed: Docker refuses to remove
        their image too) of this server's images, by key. One ``docker ps``: it runs
        before every removal."""
        running: dict[str, list[str]] = {}
        stopped: dict[str, list[str]] = {}
        listed = self._checked("ps", "--all", "--no-trunc", "--format", "{{json .}}")
        for container in _json_lines(listed):
            used = self._key_of(str(container.get("Image") or ""))
            if used is None:
                continue
            name = str(container.get("Names") or container.get("ID", ""))[:40]
            alive = str(container.get("State") or "") in ("running", "restarting", "paused",
                                                           "created")
            (running if alive else stopped).setdefault(used, []).append(name)
        users = {key: _say(names, "running") for key, names in running.items()}
        for key, names in stopped.items():
            users.setdefault(key, _say(names, "stopped, not removed"))
        return users

    def remove(self, key: str) -> None:
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", key) or key.startswith("."):
            raise NotInCatalogue(f"{key!r} is not an environment key.")
        answer = self._docker("image", "rm", self.image_name(key))
        text = f"{answer.stdout}\n{answer.stderr}".lower()
        if answer.returncode != 0 and not any(gone in text for gone in _GONE):
            last = (answer.stderr.strip() or answer.stdout.strip()).splitlines()[-1:]
            raise BinderlessError(f"Docker did not remove {self.image_name(key)}: "
                                  f"{last[0] if last else answer.returncode}")


def _say(names: Sequence[str], state: str) -> str:
    shown = ", ".join(names[:3]) + (" ..." if len(names) > 3 else "")
    return f"{len(names)} container{'s' if len(names) != 1 else ''} {state} ({shown})"
