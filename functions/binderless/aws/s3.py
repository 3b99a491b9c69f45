"""S3: objects in one bucket (build sources, session checkouts, saved changes of ended
sessions), and zipping a checkout.

CodeBuild's S3 source must be a zip archive, so ``zip_directory`` packs a checkout in a
reproducible way: the same tree always gives the same bytes.
"""

from __future__ import annotations

import os
import stat
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from ._errors import error_code

__all__ = ["S3Objects", "client_config", "zip_directory"]

#: Zip cannot store dates before 1980; every entry gets this one, so archives are reproducible.
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
_UNIX = 3  # ``create_system``: extractors honour the Unix mode in ``external_attr``


def client_config() -> Any:
    """The botocore ``Config`` for the S3 client of ``S3Objects``.

    botocore still presigns S3 URLs with Signature Version 2 on the global endpoint unless
    told otherwise; version 4 works with KMS-encrypted objects and names the bucket's region.
    """
    from botocore.config import Config

    return Config(signature_version="s3v4")


class S3Objects:
    """Put, presign and delete objects of one bucket.

    ``client`` is a boto3 S3 client, created with ``config=client_config()``.
    """

    def __init__(self, client: Any, bucket: str) -> None:
        self.client = client
        self.bucket = bucket

    def put_file(self, key: str, path: Path) -> None:
        """Upload the file at ``path`` (multipart when large)."""
        self.client.upload_file(str(path), self.bucket, key)

    def put_bytes(self, key: str, data: bytes, *, content_type: str = "") -> None:
        extra = {"ContentType": content_type} if content_type else {}
        self.client.put_object(Bucket=self.bucket, Key=key, Body=data, **extra)

    def presigned_get(self, key: str, expires: int = 3600) -> str:
        """A URL that downloads ``key`` without credentials for ``expires`` seconds.

        It stops working earlier when the credentials that signed it expire (a role's
        session): sign with credentials that outlive it.
        """
        url = self.client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=int(expires))
        return str(url)

    def presigned_post(self, key: str, max_bytes: int,
                       expires: int = 3600) -> tuple[str, dict[str, str]]:
        """The URL and form fields of a browser-style POST upload of exactly ``key``, of
        at most ``max_bytes``: S3 refuses a larger file (``EntityTooLarge``), which a
        presigned PUT could not ask for; the same caveat as ``presigned_get``. The form
        sends these fields first and the file (field ``file``) last."""
        post = self.client.generate_presigned_post(
            Bucket=self.bucket, Key=key, ExpiresIn=int(expires),
            Conditions=[["content-length-range", 0, int(max_bytes)]])
        return str(post["url"]), {str(k): str(v) for k, v in post["fields"].items()}

    def get_bytes(self, key: str, max_bytes: int) -> bytes | None:
        """The body of ``key``, or ``None`` when it does not exist; ``ValueError`` when it
        is larger than ``max_bytes`` (never read whole)."""
        try:
            answer = self.client.get_object(Bucket=self.bucket, Key=key)
        except Exception as exc:
            if error_code(exc) in ("NoSuchKey", "404", "NotFound"):
                return None
            raise
        body = answer["Body"]
        try:
            if int(answer.get("ContentLength", 0)) > max_bytes:
                raise ValueError(f"{key} is larger than {max_bytes} bytes")
            data = bytes(body.read(max_bytes + 1))
        finally:
            body.close()
        if len(data) > max_bytes:
            raise ValueError(f"{key} is larger than {max_bytes} bytes")
        return data

    def modified_at(self, key: str) -> float | None:
        """When ``key`` was last written (epoch seconds), or ``None`` when it does not
        exist (a HEAD request, authorized as GetObject)."""
        try:
            answer = self.client.head_object(Bucket=self.bucket, Key=key)
        except Exception as exc:
            if error_code(exc) in ("NoSuchKey", "404", "NotFound"):
                return None
            raise
        return float(answer["LastModified"].timestamp())

    def delete(self, key: str) -> None:
        """Delete ``key``; deleting a missing key is not an error (S3 says so too)."""
        self.client.delete_object(Bucket=self.bucket, Key=key)


def _entry(name: str, mode: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=_ZIP_EPOCH)
    info.create_system = _UNIX
    info.external_attr = (mode & 0xFFFF) << 16
    return info


def _add_tree(archive: zipfile.ZipFile, root: Path) -> None:
    for dirpath, dirnames, filenames in os.walk(root):  # does not follow directory symlinks
        here = Path(dirpath)
        dirnames.sort()
        linked = [d for d in dirnames if (here / d).is_symlink()]
        dirnames[:] = [d for d in dirnames if d not in linked]
        rel_dir = here.relative_to(root).as_posix()
        if rel_dir != ".":
            info = _entry(rel_dir + "/", stat.S_IFDIR | 0o755)
            info.external_attr |= 0x10  # MS-DOS directory flag
            archive.writestr(info, b"")
        for name in sorted([*filenames, *linked]):
            path = here / name
            rel = path.relative_to(root).as_posix()
            st = path.lstat()
            if stat.S_ISLNK(st.st_mode):
                # Info-ZIP's convention: the link's target as the content, S_IFLNK in the mode.
                archive.writestr(_entry(rel, stat.S_IFLNK | 0o777),
                                 os.readlink(path).encode(), zipfile.ZIP_STORED)
            elif stat.S_ISREG(st.st_mode):
                # Like git: only "executable or not" survives, so the umask does not matter.
                mode = 0o755 if st.st_mode & 0o111 else 0o644
                info = _entry(rel, stat.S_IFREG | mode)
                info.compress_type = zipfile.ZIP_DEFLATED
                info.file_size = st.st_size  # so that a file over 2 GiB gets a zip64 entry
                with path.open("rb") as src, archive.open(info, "w") as dest:
                    while chunk := src.read(1 << 20):
                        dest.write(chunk)
            # sockets, fifos and devices have no place in a build source


def zip_directory(path: Path, dest: Path | None = None) -> Path:
    """Zip the tree at ``path`` (``.git`` included) into ``dest`` or a new temporary file.

    Entries are sorted and carry a fixed date and normalised modes (0755 or 0644), so the
    same tree always gives the same archive. Symbolic links are stored as links, never
    followed. The caller removes the file.
    """
    if dest is None:
        fd, name = tempfile.mkstemp(prefix="binderless-source-", suffix=".zip")
        os.close(fd)
        dest = Path(name)
    try:
        with zipfile.ZipFile(dest, "w", compression=zipfile.ZIP_DEFLATED,
                             compresslevel=6) as archive:
            _add_tree(archive, path)
    except BaseException:
        dest.unlink(missing_ok=True)
        raise
    return dest
