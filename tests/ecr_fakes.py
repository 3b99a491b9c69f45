"""What a registry push leaves behind, for tests that simulate one on moto's ECR."""

from __future__ import annotations

import hashlib
import json

__all__ = ["manifest"]


def manifest(tag: str) -> str:
    """A small image manifest unique to ``tag``, as ``docker push`` would send it."""
    digest = "sha256:" + hashlib.sha256(tag.encode()).hexdigest()
    return json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                   "size": 1000, "digest": digest},
        "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                    "size": 2000, "digest": digest}],
    })
