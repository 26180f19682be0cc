"""S3 streaming shared by the duties that keep objects: list, upload a stream in parts while hashing it,
read and hash objects, JSON objects, batched deletes. Plain functions over a boto3 client."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import threading
import zlib
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime
from typing import Any, Protocol

import boto3  # noqa: F401 - imported once here, not first inside concurrent task threads
from pydantic import BaseModel

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------------ backups
# Plain functions (clients in, data out) for duty backup-verification, and thin tasks over them.

MIB = 1024 * 1024
HASH_CHUNK = 8 * MIB


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class ObjectInfo(BaseModel):
    """One object as a listing shows it (no per-object request)."""

    key: str
    size: int
    etag: str
    last_modified: datetime


class Upload(BaseModel):
    """A finished streaming upload: what S3 holds and the SHA-256 of every byte sent."""

    key: str
    bytes: int
    sha256: str
    etag: str
    parts: int


def list_objects(client: Any, bucket: str, prefix: str = "") -> dict[str, ObjectInfo]:
    """key -> ObjectInfo for everything under `prefix` (paginated listing: 1 request per 1000 keys)."""
    found: dict[str, ObjectInfo] = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            found[obj["Key"]] = ObjectInfo(
                key=obj["Key"],
                size=obj["Size"],
                etag=obj["ETag"].strip('"'),
                last_modified=obj["LastModified"],
            )
    return found


def _read_exactly(stream: Readable, size: int) -> bytes:
    """Up to `size` bytes: short only at end of stream (pipes return what they have)."""
    chunks: list[bytes] = []
    need = size
    while need > 0:
        chunk = stream.read(need)
        if not chunk:
            break
        chunks.append(chunk)
        need -= len(chunk)
    return b"".join(chunks)


def upload_stream(
    client: Any,
    bucket: str,
    key: str,
    stream: Readable,
    *,
    part_size: int = 16 * MIB,
    metadata: dict[str, str] | None = None,
    in_flight: int = 2,
) -> Upload:
    """Stream `stream` into `bucket/key` by multipart upload, hashing SHA-256 on the way.

    A multipart object gets S3's full-object CRC32 checksum (`ChecksumType=FULL_OBJECT`: the same value
    whatever the part sizes, so a replica copied in other parts can be compared without downloading it;
    SHA-256 full-object checksums do not exist for multipart uploads, and CRC64NVME needs awscrt). Each
    part carries its own CRC32 and the whole object's, computed while reading, goes with the completion.

    A stream shorter than one part is a single PUT. Otherwise up to `in_flight` parts upload in parallel
    while the next one is read, so memory holds at most `in_flight + 1` parts whatever the stream's
    length (and the producer, e.g. pg_dump, is not held up by each upload). On any error the upload is
    aborted, so no partial object ever appears under `key`. The whole-object SHA-256 cannot be known
    when the upload starts (S3 takes metadata then), so it goes into the backup's manifest, written after.
    """
    hasher = hashlib.sha256()
    first = _read_exactly(stream, part_size)
    if len(first) < part_size:  # it all fits in one part: one PUT, and a plain-MD5 ETag replicas keep
        hasher.update(first)
        answer = client.put_object(Bucket=bucket, Key=key, Body=first, Metadata=metadata or {})
        etag = str(answer["ETag"]).strip('"')
        return Upload(key=key, bytes=len(first), sha256=hasher.hexdigest(), etag=etag, parts=1)
    upload_id = client.create_multipart_upload(
        Bucket=bucket,
        Key=key,
        Metadata=metadata or {},
        ChecksumAlgorithm="CRC32",
        ChecksumType="FULL_OBJECT",
    )["UploadId"]
    crc = 0
    slots = threading.BoundedSemaphore(max(1, in_flight))
    futures: list[Future[dict[str, Any]]] = []
    total = 0

    def send(number: int, body: bytes) -> dict[str, Any]:
        try:
            answer = client.upload_part(
                Bucket=bucket,
                Key=key,
                UploadId=upload_id,
                PartNumber=number,
                Body=body,
                ChecksumAlgorithm="CRC32",
            )
            return {"ETag": answer["ETag"], "PartNumber": number, "ChecksumCRC32": answer["ChecksumCRC32"]}
        finally:
            slots.release()

    try:
        with ThreadPoolExecutor(max_workers=max(1, in_flight)) as pool:
            body, first = first, b""  # no second reference to the first part
            while True:
                if not body and futures:
                    break
                hasher.update(body)
                crc = zlib.crc32(body, crc)
                total += len(body)
                slots.acquire()
                failed = next((f for f in futures if f.done() and f.exception()), None)
                if failed is not None:
                    slots.release()
                    failed.result()  # raises the part's error: stop reading, abort below
                futures.append(pool.submit(send, len(futures) + 1, body))
                del body
                if len(futures) % 16 == 0:
                    log.info("uploading %d MiB of s3://%s/%s", total // MIB, bucket, key)
                body = _read_exactly(stream, part_size)
            parts = [f.result() for f in futures]
        done = client.complete_multipart_upload(
            Bucket=bucket,
            Key=key,
            UploadId=upload_id,
            MultipartUpload={"Parts": parts},
            ChecksumType="FULL_OBJECT",
            ChecksumCRC32=base64.b64encode(crc.to_bytes(4, "big")).decode(),
        )
    except BaseException:
        with contextlib.suppress(Exception):
            client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
        raise
    return Upload(
        key=key, bytes=total, sha256=hasher.hexdigest(), etag=done["ETag"].strip('"'), parts=len(parts)
    )


def iter_object(client: Any, bucket: str, key: str, chunk: int = HASH_CHUNK) -> Iterator[bytes]:
    """The object's bytes in chunks (streamed, never held whole)."""
    body = client.get_object(Bucket=bucket, Key=key)["Body"]
    try:
        yield from body.iter_chunks(chunk)
    finally:
        body.close()


def hash_object(client: Any, bucket: str, key: str) -> tuple[str, int]:
    """(SHA-256 hex, bytes) of the object, streamed."""
    hasher = hashlib.sha256()
    size = 0
    for chunk in iter_object(client, bucket, key):
        hasher.update(chunk)
        size += len(chunk)
    return hasher.hexdigest(), size


def put_json(client: Any, bucket: str, key: str, data: dict[str, Any]) -> str:
    """Write a small JSON document; its SHA-256 goes along as S3's own checksum. Returns the ETag."""
    body = json.dumps(data, indent=2, sort_keys=True, default=str).encode()
    answer = client.put_object(
        Bucket=bucket, Key=key, Body=body, ContentType="application/json", ChecksumAlgorithm="SHA256"
    )
    return str(answer["ETag"]).strip('"')


def get_json(client: Any, bucket: str, key: str) -> dict[str, Any]:
    data = json.loads(client.get_object(Bucket=bucket, Key=key)["Body"].read())
    if not isinstance(data, dict):
        raise ValueError(f"s3://{bucket}/{key} is not a JSON object")
    return data


def get_json_many(
    client: Any, bucket: str, keys: list[str], *, workers: int = 8
) -> dict[str, dict[str, Any]]:
    """Read many small JSON documents in parallel (one request each: manifests, not data objects)."""
    if not keys:
        return {}
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(keys)))) as pool:
        return dict(zip(keys, pool.map(lambda k: get_json(client, bucket, k), keys), strict=True))


def delete_keys(client: Any, bucket: str, keys: list[str]) -> list[str]:
    """Delete in batches of 1000 (one request per batch); returns the keys S3 could not delete."""
    failed: list[str] = []
    for start in range(0, len(keys), 1000):
        batch = keys[start : start + 1000]
        answer = client.delete_objects(
            Bucket=bucket, Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True}
        )
        failed += [e["Key"] for e in answer.get("Errors", [])]
    return failed
