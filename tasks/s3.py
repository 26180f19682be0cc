"""S3: the primary bucket and its cross-region replica."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import random
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime
from typing import Any, Protocol

import boto3  # noqa: F401 - imported once here, not first inside concurrent task threads
from botocore.exceptions import FlexibleChecksumError
from pydantic import BaseModel, Field

from scaleops.clients import S3Region, s3_bucket, s3_client
from scaleops.retry import io_task
from scaleops.settings import Settings
from tasks.health import Check, timed_check

log = logging.getLogger(__name__)


def bucket_facts(client: Any, bucket: str) -> dict[str, Any]:
    """The bucket's region as S3 reports it (us-east-1 answers None)."""
    client.head_bucket(Bucket=bucket)
    location = client.get_bucket_location(Bucket=bucket).get("LocationConstraint") or "us-east-1"
    return {"bucket": bucket, "region": location}


def check_bucket(settings: Settings, region: S3Region) -> Check:
    """The bucket exists, answers, and lives in the region the settings say."""
    bucket = s3_bucket(settings, region)
    expected = settings.s3.primary_region if region == "primary" else settings.s3.replica_region

    def probe() -> tuple[bool, str, dict[str, Any]]:
        facts = bucket_facts(s3_client(settings, region), bucket)
        if facts["region"] != expected:
            return False, f"bucket is in {facts['region']}, settings say {expected}", facts
        return True, f"s3://{bucket} in {expected}", facts

    return timed_check(f"s3_{region}", f"s3://{bucket}", probe)


@io_task(task_run_name="s3-health-{region}")
def s3_health(settings: Settings, region: S3Region) -> Check:
    return check_bucket(settings, region)


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


class ReplicationFindings(BaseModel):
    """What a replication check found, by class of fault (lists of object keys)."""

    objects_checked: int = 0
    missing: list[str] = Field(default_factory=list)
    extra: list[str] = Field(default_factory=list)
    size_mismatch: list[str] = Field(default_factory=list)
    checksum_mismatch: list[str] = Field(default_factory=list)
    pending: list[str] = Field(default_factory=list)
    lag_seconds: float | None = None


class ReplicationDiff(ReplicationFindings):
    """Primary vs replica, from listings; `to_hash` are the pairs the listing cannot decide."""

    to_hash: list[str] = Field(default_factory=list, description="ETags differ and are not both MD5s")
    sampled: list[str] = Field(default_factory=list, description="equal ETags, hashed anyway (deep sample)")
    since: dict[str, datetime] = Field(default_factory=dict, description="flagged key -> its LastModified")


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
    upload_id = client.create_multipart_upload(Bucket=bucket, Key=key, Metadata=metadata or {})["UploadId"]
    slots = threading.BoundedSemaphore(max(1, in_flight))
    futures: list[Future[dict[str, Any]]] = []
    total = 0

    def send(number: int, body: bytes) -> dict[str, Any]:
        try:
            answer = client.upload_part(
                Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=body
            )
            return {"ETag": answer["ETag"], "PartNumber": number}
        finally:
            slots.release()

    try:
        with ThreadPoolExecutor(max_workers=max(1, in_flight)) as pool:
            body, first = first, b""  # no second reference to the first part
            while True:
                if not body and futures:
                    break
                hasher.update(body)
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
            Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
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


def is_plain_md5(etag: str) -> bool:
    """A single-part upload's ETag is the MD5 of its bytes; a multipart one ends in `-<parts>`."""
    return len(etag) == 32 and all(c in "0123456789abcdef" for c in etag.lower())


def diff_listings(
    primary: dict[str, ObjectInfo],
    replica: dict[str, ObjectInfo],
    *,
    now: datetime,
    sla_seconds: float,
    deep_sample: float = 0.0,
    seed: int = 0,
) -> ReplicationDiff:
    """Decide what the listings can decide; name the pairs that need hashing.

    Equal ETags mean equal bytes. Different ETags that are both plain MD5s mean different bytes.
    Any other difference (a multipart ETag on either side: part sizes may differ) goes to `to_hash`.
    Objects younger than the SLA that are missing or differ in size are `pending`, not errors.
    `deep_sample` of the pairs with equal ETags are hashed anyway (catches what ETags cannot).
    """
    diff = ReplicationDiff(objects_checked=len(primary))
    equal: list[str] = []
    for key in sorted(primary):
        p = primary[key]
        r = replica.get(key)
        young = (now - p.last_modified).total_seconds() < sla_seconds
        if r is None or r.size != p.size:
            if young:
                diff.pending.append(key)
            elif r is None:
                diff.missing.append(key)
            else:
                diff.size_mismatch.append(key)
        elif r.etag == p.etag:
            equal.append(key)
        elif is_plain_md5(r.etag) and is_plain_md5(p.etag):
            diff.checksum_mismatch.append(key)
        else:
            diff.to_hash.append(key)
    diff.extra = sorted(set(replica) - set(primary))
    for key in diff.missing + diff.size_mismatch + diff.checksum_mismatch + diff.pending + diff.to_hash:
        diff.since[key] = primary[key].last_modified
    for key in diff.extra:
        diff.since[key] = replica[key].last_modified
    if deep_sample > 0 and equal:
        count = min(len(equal), max(1, math.ceil(len(equal) * deep_sample)))
        diff.sampled = sorted(random.Random(seed).sample(equal, count))
    if primary:
        newest = max(primary.values(), key=lambda o: (o.last_modified, o.key))
        copy = replica.get(newest.key)
        if copy is not None and copy.size == newest.size:
            diff.lag_seconds = max(0.0, (copy.last_modified - newest.last_modified).total_seconds())
        else:  # not copied yet: the lag is at least its age
            diff.lag_seconds = max(0.0, (now - newest.last_modified).total_seconds())
    return diff


def hash_pairs(
    primary_client: Any,
    primary_bucket: str,
    replica_client: Any,
    replica_bucket: str,
    keys: list[str],
    *,
    workers: int = 8,
) -> dict[str, tuple[str, str]]:
    """key -> (primary SHA-256, replica SHA-256), downloads streamed in parallel."""
    if not keys:
        return {}

    def safe_hash(client: Any, bucket: str, key: str) -> str:
        try:
            return hash_object(client, bucket, key)[0]
        except FlexibleChecksumError as exc:  # S3's stored checksum disagrees with the bytes it served
            return f"checksum error: {exc}"

    def one(key: str) -> tuple[str, tuple[str, str]]:
        return key, (
            safe_hash(primary_client, primary_bucket, key),
            safe_hash(replica_client, replica_bucket, key),
        )

    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(keys)))) as pool:
        return dict(pool.map(one, keys))


def check_replication(
    primary_client: Any,
    primary_bucket: str,
    replica_client: Any,
    replica_bucket: str,
    prefix: str,
    *,
    now: datetime,
    sla_seconds: float,
    deep_sample: float = 0.0,
    seed: int = 0,
    workers: int = 8,
) -> ReplicationDiff:
    """List both regions (concurrently), diff them, hash what the listings leave open."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        p_future = pool.submit(list_objects, primary_client, primary_bucket, prefix)
        r_future = pool.submit(list_objects, replica_client, replica_bucket, prefix)
        primary, replica = p_future.result(), r_future.result()
    log.info("listed %d primary and %d replica object(s) under %r", len(primary), len(replica), prefix)
    diff = diff_listings(
        primary, replica, now=now, sla_seconds=sla_seconds, deep_sample=deep_sample, seed=seed
    )
    keys = diff.to_hash + diff.sampled
    if keys:
        log.info(
            "hashing %d object(s) in both regions (%d with other ETags, %d sampled)",
            len(keys),
            len(diff.to_hash),
            len(diff.sampled),
        )
    hashes = hash_pairs(primary_client, primary_bucket, replica_client, replica_bucket, keys, workers=workers)
    bad = {key for key, (p, r) in hashes.items() if p != r}
    diff.checksum_mismatch = sorted(set(diff.checksum_mismatch) | bad)
    return diff


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


@io_task(task_run_name="s3-replication-check")
def replication_check(settings: Settings, now: datetime, deep_sample: float, seed: int) -> ReplicationDiff:
    return check_replication(
        s3_client(settings, "primary"),
        s3_bucket(settings, "primary"),
        s3_client(settings, "replica"),
        s3_bucket(settings, "replica"),
        settings.backup.prefix,
        now=now,
        sla_seconds=settings.backup.replication_sla_seconds,
        deep_sample=deep_sample,
        seed=seed,
        workers=settings.s3.max_pool_connections // 2 or 1,
    )


@io_task(task_run_name="s3-delete-{region}")
def delete_backup_objects(settings: Settings, region: S3Region, keys: list[str]) -> list[str]:
    return delete_keys(s3_client(settings, region), s3_bucket(settings, region), keys)


class BackupListing(BaseModel):
    """Backup objects under the prefix in one region: dumps and manifests from a listing, plus each
    manifest's content (one small GET per backup, never per data object)."""

    dumps: dict[str, ObjectInfo] = Field(default_factory=dict)
    manifests: dict[str, dict[str, Any]] = Field(default_factory=dict, description="manifest key -> content")
    unreadable: dict[str, str] = Field(default_factory=dict, description="manifest key -> why")
    manifest_sizes: dict[str, int] = Field(default_factory=dict, description="manifest key -> bytes")


def list_backups(client: Any, bucket: str, prefix: str) -> BackupListing:
    objects = list_objects(client, bucket, prefix)
    listing = BackupListing(dumps={k: o for k, o in objects.items() if k.endswith(".dump")})
    manifest_keys = [k for k in objects if k.endswith(".manifest.json")]
    listing.manifest_sizes = {k: objects[k].size for k in manifest_keys}
    with ThreadPoolExecutor(max_workers=8) as pool:

        def read(key: str) -> tuple[str, dict[str, Any] | str]:
            try:
                return key, get_json(client, bucket, key)
            except (ValueError, UnicodeDecodeError) as exc:  # a corrupt manifest is a finding, not a crash
                return key, f"{type(exc).__name__}: {exc}"

        for key, content in pool.map(read, manifest_keys):
            if isinstance(content, dict):
                listing.manifests[key] = content
            else:
                listing.unreadable[key] = content
    return listing


def wait_for_objects(
    client: Any, bucket: str, expected: dict[str, int], *, timeout: float, interval: float = 1.0
) -> set[str]:
    """Poll (by listing) until every key in `expected` exists with its size, or `timeout` passes.

    Returns the keys present with the expected size."""
    deadline = time.monotonic() + timeout
    prefix = os.path.commonprefix(list(expected)) if expected else ""
    while True:
        present = list_objects(client, bucket, prefix)
        found = {k for k, size in expected.items() if k in present and present[k].size == size}
        if found == set(expected) or time.monotonic() >= deadline:
            return found
        time.sleep(min(interval, max(0.0, deadline - time.monotonic())))


@io_task(task_run_name="s3-list-backups-{region}")
def backup_listing(settings: Settings, region: S3Region) -> BackupListing:
    return list_backups(s3_client(settings, region), s3_bucket(settings, region), settings.backup.prefix)


@io_task(task_run_name="s3-wait-for-replica")
def wait_for_replica(settings: Settings, expected: dict[str, int], timeout: float) -> set[str]:
    return wait_for_objects(
        s3_client(settings, "replica"), s3_bucket(settings, "replica"), expected, timeout=timeout
    )
