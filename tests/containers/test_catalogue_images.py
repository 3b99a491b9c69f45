"""The catalogue's Docker images on the real engine: the ``docker`` output the fake engine
imitates (``image ls``/``ps`` JSON lines, ``image inspect`` sizes) is what Docker prints,
an image a container uses is kept, and ``docker image rm`` removes the rest."""

from __future__ import annotations

from pathlib import Path

import pytest

from binderless.backends.docker_images import ENVIRONMENT_LABEL, DockerImages
from binderless.errors import BinderlessError
from tests.containers.conftest import Engine, unique_tag


def test_images_are_listed_sized_kept_while_used_and_removed(
        engine: Engine, containers: list[str], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DOCKER_HOST", "DOCKER_CONFIG", "PATH"):
        if name in engine.env:
            monkeypatch.setenv(name, engine.env[name])
    prefix = f"binderless-catalogue-{unique_tag()}/"
    keys = (unique_tag() + "a" * 8, unique_tag() + "b" * 8)
    built: list[str] = []
    try:
        for key, labels in ((keys[0], {ENVIRONMENT_LABEL: keys[0]}),
                            (keys[1], {ENVIRONMENT_LABEL: keys[1]}),
                            ("handmade", {"made.by": "hand"})):
            context = tmp_path / key
            context.mkdir()
            label_lines = "".join(f'LABEL {k}="{v}"\n' for k, v in labels.items())
            (context / "Dockerfile").write_text(f"FROM {engine.base_image}\n{label_lines}")
            tag = f"{prefix}env:{key}"
            engine.docker("build", "--quiet", "--network", "host", "-t", tag, str(context),
                          timeout=300)
            built.append(tag)
        images = DockerImages(prefix)
        stored = {item.key: item for item in images.stored()}
        assert set(stored) == set(keys)  # not the one without the label
        size = int(engine.docker("image", "inspect", "-f", "{{.Size}}",
                                 built[0]).stdout.strip())
        assert stored[keys[0]].size_bytes == size > 0
        assert stored[keys[0]].created_at is not None

        name = f"binderless-catalogue-{unique_tag()}"
        containers.append(name)
        engine.docker("run", "-d", "--network", "host", "--name", name, built[0],
                      "sleep", "300")
        assert images.users() == {keys[0]: f"1 container running ({name})"}
        with pytest.raises(BinderlessError, match="container"):
            images.remove(keys[0])  # Docker itself refuses, whatever the check said
        images.remove(keys[1])
        images.remove(keys[1])  # gone already: fine
        assert {item.key for item in images.stored()} == {keys[0]}
    finally:
        for tag in built:
            engine.docker("image", "rm", "-f", tag, check=False, timeout=60)
