"""Where the bytes of files and images live: content-addressed blobs (named by their sha256)
and the staging area of uploads in progress.

Two stores keep the same contract:

- :class:`LocalBlobs`, the default: a directory (``blobs/ab/abcdef…`` and ``staging/<upload>``)
  under the data directory; one machine, any number of server processes.
- :class:`S3Blobs`: an S3-compatible bucket (AWS S3, MinIO) through boto3, for servers on
  several machines. Staged chunks are objects of their own; finishing an upload streams them
  into the blob object.

A blob is written once and never changed; writing one that exists only refreshes its time,
which :meth:`BlobStore.blobs` reports so that collection never removes a blob younger than
its grace period (an upload may be about to reference it).
"""

from __future__ import annotations

import contextlib
import os
import re
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Protocol

READ_SIZE = 1024 * 1024
_DIGEST = re.compile(r"^[0-9a-f]{64}$")


def check_digest(digest: str) -> str:
    if not _DIGEST.match(digest):
        raise ValueError(f"{digest[:80]!r} is not a sha256 hex digest")
    return digest


class BlobStore(Protocol):
    def size(self, digest: str) -> int | None:
        """The blob's size, or None when it is not stored."""

    def read(self, digest: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """The bytes ``[start, end)`` of a blob, in pieces."""

    def put(self, digest: str, data: bytes) -> None:
        """Store small content (a thumbnail) under its digest."""

    def delete(self, digest: str) -> None: ...

    def blobs(self) -> Iterator[tuple[str, float]]:
        """Every stored blob's digest and the time it was last written (seconds)."""

    def stage(self, upload: uuid.UUID, offset: int, data: bytes) -> None:
        """Write ``data`` at ``offset`` of an upload in progress, dropping what followed."""

    def staged(self, upload: uuid.UUID, length: int) -> Iterator[bytes]:
        """The first ``length`` bytes staged for an upload, in pieces."""

    def staged_size(self, upload: uuid.UUID) -> int:
        """How many bytes are staged for an upload (from its start, without a gap)."""

    def commit(self, upload: uuid.UUID, digest: str) -> None:
        """Make an upload's staged bytes the blob ``digest`` (kept once if it exists)."""

    def discard(self, upload: uuid.UUID) -> None: ...


class LocalBlobs:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def _blob(self, digest: str) -> Path:
        check_digest(digest)
        return self.root / "blobs" / digest[:2] / digest

    def _staging(self, upload: uuid.UUID) -> Path:
        return self.root / "staging" / uuid.UUID(str(upload)).hex

    def size(self, digest: str) -> int | None:
        try:
            return self._blob(digest).stat().st_size
        except FileNotFoundError:
            return None

    def read(self, digest: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        path = self._blob(digest)
        with path.open("rb") as f:
            f.seek(start)
            left = (path.stat().st_size if end is None else end) - start
            while left > 0:
                piece = f.read(min(READ_SIZE, left))
                if not piece:
                    return
                left -= len(piece)
                yield piece

    def put(self, digest: str, data: bytes) -> None:
        path = self._blob(digest)
        if path.exists():
            os.utime(path)
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{digest}.{uuid.uuid4().hex}")
        tmp.write_bytes(data)
        os.replace(tmp, path)

    def delete(self, digest: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._blob(digest).unlink()

    def blobs(self) -> Iterator[tuple[str, float]]:
        base = self.root / "blobs"
        if not base.exists():
            return
        for shard in base.iterdir():
            for path in shard.iterdir():
                if _DIGEST.match(path.name):
                    with contextlib.suppress(FileNotFoundError):
                        yield path.name, path.stat().st_mtime

    def stage(self, upload: uuid.UUID, offset: int, data: bytes) -> None:
        path = self._staging(upload)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("r+b" if path.exists() else "w+b") as f:
            f.seek(offset)
            f.write(data)
            f.truncate(offset + len(data))

    def staged(self, upload: uuid.UUID, length: int) -> Iterator[bytes]:
        path = self._staging(upload)
        if not path.exists():
            return
        with path.open("rb") as f:
            left = length
            while left > 0:
                piece = f.read(min(READ_SIZE, left))
                if not piece:
                    return
                left -= len(piece)
                yield piece

    def staged_size(self, upload: uuid.UUID) -> int:
        try:
            return self._staging(upload).stat().st_size
        except FileNotFoundError:
            return 0

    def commit(self, upload: uuid.UUID, digest: str) -> None:
        path, staged = self._blob(digest), self._staging(upload)
        if path.exists():
            os.utime(path)
            staged.unlink(missing_ok=True)
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staged, path)

    def discard(self, upload: uuid.UUID) -> None:
        self._staging(upload).unlink(missing_ok=True)


def s3_client(endpoint: str = "", **options: Any) -> Any:
    """A boto3 S3 client for AWS (no endpoint) or an S3-compatible server at ``endpoint``.

    Checksums are sent and checked only where S3 requires them: servers other than AWS may
    refuse the newer trailing checksums, or send the whole object's checksum with a ranged
    read, which boto3 would then reject. Every blob is verified against its sha256 anyway.
    Another endpoint is addressed by path (``endpoint/bucket/key``), as MinIO and most
    S3-compatible servers expect."""
    import boto3  # type: ignore[import-untyped]
    from botocore.config import Config  # type: ignore[import-untyped]

    config = Config(
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        retries={"mode": "standard", "max_attempts": 5},
        s3={"addressing_style": "path"} if endpoint else {},
    )
    return boto3.client("s3", endpoint_url=endpoint or None, config=config, **options)


class S3Blobs:
    """Blobs in an S3-compatible bucket under ``prefix``; credentials come the usual boto3
    way (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, a profile or an instance role)."""

    def __init__(self, bucket: str, prefix: str = "", *, endpoint: str = "", client: Any = None):
        self.s3 = s3_client(endpoint) if client is None else client
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""

    def _key(self, digest: str) -> str:
        check_digest(digest)
        return f"{self.prefix}blobs/{digest[:2]}/{digest}"

    def _parts(self, upload: uuid.UUID) -> str:
        return f"{self.prefix}staging/{uuid.UUID(str(upload)).hex}/"

    def _missing(self, exc: Exception) -> bool:
        code = str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))
        return code in ("404", "NoSuchKey", "NotFound")

    def size(self, digest: str) -> int | None:
        try:
            head = self.s3.head_object(Bucket=self.bucket, Key=self._key(digest))
        except Exception as exc:
            if self._missing(exc):
                return None
            raise
        return int(head["ContentLength"])

    def read(self, digest: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        if end is not None and end <= start:
            return
        ask: dict[str, str] = {}
        if start or end is not None:  # a Range on an empty object is refused (416)
            ask["Range"] = f"bytes={start}-" if end is None else f"bytes={start}-{end - 1}"
        body = self.s3.get_object(Bucket=self.bucket, Key=self._key(digest), **ask)["Body"]
        try:
            yield from body.iter_chunks(READ_SIZE)
        finally:
            body.close()

    def put(self, digest: str, data: bytes) -> None:
        self.s3.put_object(Bucket=self.bucket, Key=self._key(digest), Body=data)

    def delete(self, digest: str) -> None:
        self.s3.delete_object(Bucket=self.bucket, Key=self._key(digest))

    def _list(self, prefix: str) -> Iterator[dict[str, Any]]:
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        for page in pages:
            yield from page.get("Contents", [])

    def blobs(self) -> Iterator[tuple[str, float]]:
        for obj in self._list(f"{self.prefix}blobs/"):
            name = str(obj["Key"]).rsplit("/", 1)[-1]
            if _DIGEST.match(name):
                yield name, obj["LastModified"].timestamp()

    def _staged_parts(self, upload: uuid.UUID) -> list[tuple[int, str]]:
        prefix = self._parts(upload)
        return sorted(
            (int(str(o["Key"])[len(prefix) :]), str(o["Key"])) for o in self._list(prefix)
        )

    def staged_size(self, upload: uuid.UUID) -> int:
        prefix = self._parts(upload)
        at = 0
        for offset, size in sorted(
            (int(str(o["Key"])[len(prefix) :]), int(o["Size"])) for o in self._list(prefix)
        ):
            if offset != at:
                break
            at += size
        return at

    def stage(self, upload: uuid.UUID, offset: int, data: bytes) -> None:
        stale = [k for at, k in self._staged_parts(upload) if at >= offset]
        self._delete_keys(stale)
        self.s3.put_object(Bucket=self.bucket, Key=f"{self._parts(upload)}{offset:016d}", Body=data)

    def staged(self, upload: uuid.UUID, length: int) -> Iterator[bytes]:
        at = 0
        for offset, key in self._staged_parts(upload):
            if offset != at or at >= length:
                return
            body = self.s3.get_object(Bucket=self.bucket, Key=key)["Body"]
            try:
                for piece in body.iter_chunks(READ_SIZE):
                    piece = piece[: length - at]
                    at += len(piece)
                    yield piece
            finally:
                body.close()

    def commit(self, upload: uuid.UUID, digest: str) -> None:
        if self.size(digest) is None:
            parts = self._staged_parts(upload)
            total = 0
            for offset, key in parts:
                head = self.s3.head_object(Bucket=self.bucket, Key=key)
                total = max(total, offset + int(head["ContentLength"]))
            self.s3.upload_fileobj(
                _Reader(self.staged(upload, total)), self.bucket, self._key(digest)
            )
        else:  # refresh its time: collection spares young blobs
            key = self._key(digest)
            self.s3.copy_object(
                Bucket=self.bucket,
                Key=key,
                CopySource={"Bucket": self.bucket, "Key": key},
                MetadataDirective="REPLACE",
                Metadata={"touched": str(time.time())},
            )
        self.discard(upload)

    def discard(self, upload: uuid.UUID) -> None:
        self._delete_keys([k for _, k in self._staged_parts(upload)])

    def _delete_keys(self, keys: Iterable[str]) -> None:
        batch = [{"Key": k} for k in keys]
        for start in range(0, len(batch), 1000):
            self.s3.delete_objects(
                Bucket=self.bucket, Delete={"Objects": batch[start : start + 1000]}
            )


class _Reader:
    """A file-like reader over pieces of bytes (what boto3's upload_fileobj reads)."""

    def __init__(self, pieces: Iterator[bytes]) -> None:
        self.pieces = pieces
        self.buffer = b""

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self.buffer) < size:
            piece = next(self.pieces, None)
            if piece is None:
                break
            self.buffer += piece
        if size < 0:
            out, self.buffer = self.buffer, b""
        else:
            out, self.buffer = self.buffer[:size], self.buffer[size:]
        return out


def open_blobs(url: str, *, data_dir: str, endpoint: str = "") -> BlobStore:
    """``""`` (a ``files`` directory in the data directory), ``file:///path`` or a path, or
    ``s3://bucket/prefix``."""
    if not url:
        return LocalBlobs(Path(data_dir) / "files")
    if url.startswith("s3://"):
        bucket, _, prefix = url.removeprefix("s3://").partition("/")
        if not bucket:
            raise ValueError("an S3 files URL names a bucket: s3://bucket/prefix")
        return S3Blobs(bucket, prefix, endpoint=endpoint)
    return LocalBlobs(url.removeprefix("file://"))
