"""Saved changes on AWS (``binderless.aws.restores``) on moto, and the rule the session's
own ``session-start`` applies, which must be ``restore.changed_files``'s (the image has no
binderless to import)."""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest

from binderless.aws.restores import _TAR_OVERHEAD, S3RestoreShelf, restore_key
from binderless.aws.s3 import S3Objects, client_config
from binderless.errors import AccessDenied
from binderless.restore import changed_files, write_manifest
from binderless.restore import scan as restore_scan

ROOT = Path(__file__).resolve().parents[3]
SESSION_START = ROOT / "build-runner" / "session-start"
BUCKET = "binderless-restores"
VISITOR = "a" * 32
STRANGER = "b" * 32
REPO = "https://example.org/r.git"
SHA = "0" * 40


def supervisor() -> dict[str, Any]:
    """The functions of session-start's supervisor (its ``main`` is not run)."""
    text = SESSION_START.read_text()
    code = text.split("<<'SUPERVISOR'\n", 1)[1].split("\nSUPERVISOR\n", 1)[0]
    namespace: dict[str, Any] = {"__name__": "session_start_supervisor"}
    exec(compile(code, str(SESSION_START), "exec"), namespace)
    return namespace


def checkout(root: Path) -> None:
    for rel, text in {"README.md": "r", "data/a.csv": "1,2", ".hidden-known": "h",
                      "nb/.ipynb_checkpoints/old.ipynb": "{}", ".git/HEAD": "ref"}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)


def visit(root: Path) -> None:
    """What a visitor does: change, add, add hidden things, link, add under .git."""
    (root / "README.md").write_text("changed")
    (root / ".hidden-known").write_text("changed too")
    (root / "new.txt").write_text("new")
    (root / "deep" / "er").mkdir(parents=True)
    (root / "deep" / "er" / "x.py").write_text("x")
    (root / ".local").mkdir()
    (root / ".local" / "state").write_text("tool")
    (root / ".new-hidden").write_text("h")
    (root / ".git" / "index").write_text("i")
    (root / "link").symlink_to("/etc/passwd")
    os.utime(root / "data" / "a.csv", ns=(1, 1))  # touched: mtime differs, kept


def test_session_start_keeps_the_files_restore_py_keeps(tmp_path: Path) -> None:
    rules = supervisor()
    home = tmp_path / "session" / "home"
    home.mkdir(parents=True)
    checkout(home)
    write_manifest(home)
    manifest = rules["manifest_of"](str(home))
    assert manifest == {rel: [st.st_size, st.st_mtime_ns] for rel, st in restore_scan(home)
                        if not os.path.islink(home / rel)}
    visit(home)
    written = json.loads((home.parent / "checkout-manifest.json").read_text())["files"]
    ours = sorted(rel for rel, _ in rules["changed"](str(home), manifest))
    assert ours == sorted(rel for rel, _ in changed_files(home, written))
    assert ours == [".hidden-known", "README.md", "data/a.csv", "deep/er/x.py", "link",
                    "new.txt"]

    # What is packed: the regular ones among them, within the cap.
    with rules["pack"](str(home), manifest, 100) as archive, \
            tarfile.open(fileobj=archive) as tar:
        assert sorted(tar.getnames()) == [".hidden-known", "README.md", "data/a.csv",
                                          "deep/er/x.py", "new.txt"]
    # The cap: files past it are left out.
    with rules["pack"](str(home), manifest, 8) as small, tarfile.open(fileobj=small) as tar:
        assert sum(m.size for m in tar) <= 8 and tar.getnames()
    assert rules["pack"](str(home), rules["manifest_of"](str(home)), 100) is None


def tar_of(entries: dict[str, str], links: dict[str, str] | None = None) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:") as tar:
        for name, text in entries.items():
            info = tarfile.TarInfo(name)
            info.size = len(text)
            tar.addfile(info, io.BytesIO(text.encode()))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    return out.getvalue()


def test_session_start_puts_back_nothing_outside_home(tmp_path: Path) -> None:
    rules = supervisor()
    home = tmp_path / "home"
    outside = tmp_path / "outside"
    home.mkdir()
    outside.mkdir()
    (home / "escape").symlink_to(outside)
    (home / "folder").mkdir()
    data = tar_of({"ok/new.txt": "fine", "/abs.txt": "no", "../up.txt": "no",
                   "escape/through.txt": "no", "folder": "not over a folder",
                   "persistent/x": "not the user's storage"}, links={"evil": "/etc"})
    assert rules["put_back"](os.path.realpath(home), data) == 1
    assert (home / "ok" / "new.txt").read_text() == "fine"
    assert list(outside.iterdir()) == [] and not (tmp_path / "up.txt").exists()
    assert (home / "folder").is_dir() and not (home / "evil").exists()
    assert not (home / "persistent").exists()


@pytest.fixture
def s3(moto: Any) -> S3Objects:
    client = boto3.client("s3", config=client_config())
    client.create_bucket(Bucket=BUCKET)
    return S3Objects(client, BUCKET)


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def shelf(s3: S3Objects, clock: Clock, max_bytes: int = 1000) -> S3RestoreShelf:
    return S3RestoreShelf(s3, days=7, max_bytes=max_bytes, pending_seconds=3600, clock=clock)


def start(restores: S3RestoreShelf, session: str, *, visitor: str = VISITOR,
          restore: str = "") -> tuple[list[str], dict[str, str]]:
    lines = restores.prepare(Path("/nonexistent"), restore_id=restore, visitor=visitor,
                             repo_url=REPO, resolved_ref=SHA, provider="gh",
                             persistent_request=f"v2/gh/org/r/{SHA}", session_id=session,
                             spec="org/r/HEAD")
    return lines, restores.handoff(session)


def test_a_session_saves_through_its_url_and_is_offered_to_its_browser_only(
        s3: S3Objects) -> None:
    clock = Clock()
    restores = shelf(s3, clock)
    _lines, handoff = start(restores, "s1")
    assert set(handoff) == {"save_url", "save_fields", "save_max_bytes"}
    assert handoff["save_max_bytes"] == "1000"
    assert restores.handoff("s1") == {}  # handed over once
    # Before the session saved: no offer (the record is pending).
    assert restores.offers(VISITOR, session_id="s1") == []
    # The presigned POST: S3 takes exactly this key, and no more than the cap and tar's
    # overhead (moto checks neither the policy nor its signature: the policy is read here).
    fields = json.loads(handoff["save_fields"])
    key = fields["key"]
    assert key.startswith("restores/") and key.endswith(".tar")
    policy = json.loads(base64.b64decode(fields["policy"]))
    assert ["content-length-range", 0, 1000 + _TAR_OVERHEAD] in policy["conditions"]
    assert {"key": key} in policy["conditions"] and {"bucket": BUCKET} in policy["conditions"]
    assert not any(c[0] == "starts-with" for c in policy["conditions"] if isinstance(c, list))
    assert fields["x-amz-algorithm"] == "AWS4-HMAC-SHA256" and fields["x-amz-signature"]
    assert httpx.URL(handoff["save_url"]).host.startswith(BUCKET)
    # The task's upload, as session-start sends it, stood in for by a PutObject.
    s3.client.put_object(Bucket=BUCKET, Key=key,
                         Body=tar_of({"notes.txt": "mine", "../x": "no"}))
    [work] = restores.offers(VISITOR, launch="v2/gh/org/r/HEAD")
    assert work.files == ["notes.txt"] and work.size_bytes == 4 and work.session_id == "s1"
    assert restores.offers(VISITOR, launch=f"v2/gh/org/r/{SHA}") == [work]
    assert restores.offers(STRANGER, session_id="s1") == []
    assert work.restore_link == f"/v2/gh/org/r/{SHA}?restore={work.restore_id}"

    # The owner's next launch gets a GET of the tar and a new record of its own.
    lines, handoff = start(restores, "s2", restore=work.restore_id)
    assert lines == ["Putting back 1 file you changed in your earlier session.\n"]
    assert set(handoff) == {"save_url", "save_fields", "save_max_bytes", "restore_url"}
    assert restore_key(work.restore_id, "tar").split("/")[1] in handoff["restore_url"]
    with pytest.raises(AccessDenied):
        start(restores, "s3", visitor=STRANGER, restore=work.restore_id)
    with pytest.raises(AccessDenied):
        start(restores, "s4", visitor="", restore=work.restore_id)
    # Shared on purpose, any browser may.
    _work, link = restores.share(work.restore_id, VISITOR)
    _lines, handoff = start(restores, "s5", visitor=STRANGER,
                            restore=link.rsplit("restore=", 1)[1])
    assert "restore_url" in handoff

    # After the retention time the offer is gone (the lifecycle rule deletes the objects).
    clock.now = work.saved_at + 7 * 86400 + 1
    assert restores.offers(VISITOR, session_id="s1") == []
    assert restores.find(work.restore_id) is None


def test_a_tar_past_the_cap_or_without_files_is_dropped(s3: S3Objects) -> None:
    restores = shelf(s3, Clock(), max_bytes=10)
    for session, body in (("big", tar_of({"a.txt": "x" * 11})), ("empty", tar_of({})),
                          ("junk", b"not a tar")):
        _lines, _handoff = start(restores, session)
        [item] = [i for i in restores._read_index(VISITOR) if i["session_id"] == session]
        s3.put_bytes(restore_key(item["restore_id"], "tar"), body)
        assert restores.offers(VISITOR, session_id=session) == []
        assert s3.get_bytes(restore_key(item["restore_id"], "tar"), 10**6) is None
        assert s3.get_bytes(restore_key(item["restore_id"], "json"), 10**6) is None


def form_parts(content_type: str, body: bytes) -> list[tuple[str, dict[str, str], bytes]]:
    """(name, part headers, content) of each part of a multipart/form-data body, in order,
    read by RFC 7578's framing by hand (the part headers with the email package)."""
    from email.parser import BytesHeaderParser
    from email.policy import HTTP

    boundary = content_type.split("boundary=", 1)[1].encode()
    delimiter = b"--" + boundary
    assert content_type.startswith("multipart/form-data; ")
    assert body.startswith(delimiter + b"\r\n") and body.endswith(b"\r\n" + delimiter + b"--\r\n")
    inner = body[len(delimiter) + 2:-(len(delimiter) + 6)]
    parts = []
    for part in inner.split(b"\r\n" + delimiter + b"\r\n"):
        head, separator, content = part.partition(b"\r\n\r\n")
        assert separator, part[:200]
        headers = BytesHeaderParser(policy=HTTP).parsebytes(head + b"\r\n\r\n")
        disposition = headers.get("Content-Disposition")
        assert disposition is not None and disposition.content_disposition == "form-data"
        parts.append((str(disposition.params["name"]), {k: str(v) for k, v in headers.items()},
                      content))
    return parts


def test_session_start_saves_and_puts_back_through_presigned_urls(tmp_path: Path) -> None:
    """The real script, end to end on this machine: it unpacks an earlier session's tar,
    runs the command (which changes a file), and POSTs the changes when it has ended, as
    S3's form upload wants them: the signed fields first, the file last. A tiny HTTP
    server stands in for S3's presigned URLs."""
    import http.server
    import threading

    received: dict[str, tuple[str, bytes]] = {}
    earlier = tar_of({"kept.txt": "from before"})

    class Fake(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(earlier)))
            self.end_headers()
            self.wfile.write(earlier)

        def do_POST(self) -> None:
            received[self.path] = (self.headers["Content-Type"],
                                   self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(204)  # what S3 answers by default
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Fake)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    home = tmp_path / "home"
    home.mkdir()
    (home / "README.md").write_text("checkout")
    fields = {"key": "restores/x.tar", "policy": "eyJjb25kaXRpb25zIjogW119",
              "x-amz-signature": "ab" * 32}
    env = {"PATH": os.environ["PATH"], "HOME": str(home),
           "BINDERLESS_SAVE_URL": f"{base}/bucket", "BINDERLESS_SAVE_MAX_BYTES": "1000",
           "BINDERLESS_SAVE_FIELDS": json.dumps(fields),
           "BINDERLESS_RESTORE_URL": f"{base}/restores/before.tar"}
    script = ("import os, pathlib; h = pathlib.Path(os.environ['HOME']); "
              "assert (h / 'kept.txt').read_text() == 'from before'; "
              "assert not [k for k in os.environ if k.startswith('BINDERLESS_SAVE')]; "
              "(h / 'README.md').write_text('edited')")
    try:
        done = subprocess.run(["sh", str(SESSION_START), sys.executable, "-c", script],
                              env=env, capture_output=True, text=True, timeout=60)
    finally:
        server.shutdown()
        server.server_close()
    assert done.returncode == 0, done.stderr
    content_type, body = received["/bucket"]
    parts = form_parts(content_type, body)
    assert [(name, content.decode()) for name, _headers, content in parts[:-1]] == \
        list(fields.items())
    name, headers, data = parts[-1]
    assert name == "file" and headers["Content-Type"] == "application/x-tar"
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        assert sorted(tar.getnames()) == ["README.md", "kept.txt"]
        assert tar.extractfile("README.md").read() == b"edited"  # type: ignore[union-attr]


def test_session_start_refuses_form_fields_that_would_break_the_form() -> None:
    form_upload = supervisor()["form_upload"]
    body, content_type = form_upload({"key": "k", "policy": "p"}, io.BytesIO(b"tar"))
    with body:
        assert [n for n, _h, _c in form_parts(content_type, body.read())] == \
            ["key", "policy", "file"]
    for fields in ({"key": "k\r\nx-amz-extra: 1"}, {'key"; x="': "k"}, {"file": "x"},
                   {"key": 1}):
        with pytest.raises(ValueError):
            form_upload(fields, io.BytesIO(b"tar"))


def test_the_presigned_post_carries_the_key_and_the_size_cap() -> None:
    """The presigned POST (``S3Objects.presigned_post``) is for the key alone, with
    the size cap in its policy; it lasts as long as asked."""
    client = boto3.client("s3", config=client_config(), region_name="us-east-1")
    url, fields = S3Objects(client, BUCKET).presigned_post("restores/x.tar", 5000, 60)
    assert fields["key"] == "restores/x.tar" and httpx.URL(url).scheme == "https"
    policy = json.loads(base64.b64decode(fields["policy"]))
    assert ["content-length-range", 0, 5000] in policy["conditions"]
    assert {"key": "restores/x.tar"} in policy["conditions"]
    expires = time.mktime(time.strptime(policy["expiration"], "%Y-%m-%dT%H:%M:%SZ"))
    assert 0 < expires - time.mktime(time.gmtime()) <= 60
