"""Replication check (duty backup-verification): does the replica region hold the same bytes as the
primary? Listing diff, hashing only what listings cannot decide, plus a deep sample."""

from __future__ import annotations

import logging
import math
import os
import random
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import TYPE_CHECKING, Any

import boto3  # noqa: F401 - imported once here, not first inside concurrent task threads
from botocore.exceptions import ClientError, FlexibleChecksumError
from pydantic import BaseModel, Field

from scaleops.core.clients import s3_bucket, s3_client
from scaleops.core.reporting import run_logger
from scaleops.core.retry import io_task
from scaleops.core.settings import Settings
from tasks.common.s3 import ObjectInfo, hash_object, list_objects

if TYPE_CHECKING:
    from tasks.backup.report import BackupReport

log = logging.getLogger(__name__)


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
    by_checksum: list[str] = Field(
        default_factory=list,
        description="ETags differ; decided by S3's full-object checksums, not downloaded",
    )
    since: dict[str, datetime] = Field(default_factory=dict, description="flagged key -> its LastModified")


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


# S3's checksums of a whole object, strongest first; a composite checksum (of the parts) depends on the part
# sizes and cannot compare two copies uploaded in other parts.
FULL_OBJECT_CHECKSUMS = (
    "ChecksumSHA256",
    "ChecksumCRC64NVME",
    "ChecksumSHA1",
    "ChecksumCRC32C",
    "ChecksumCRC32",
)


def full_object_checksum(head: dict[str, Any]) -> tuple[str, str] | None:
    """(field, value) of the object's full-object checksum in a HeadObject(ChecksumMode=ENABLED) answer,
    or None: no checksum stored, or a composite one."""
    kind = head.get("ChecksumType")
    if kind == "COMPOSITE" or (kind is None and "-" in str(head.get("ETag", ""))):
        return None
    for name in FULL_OBJECT_CHECKSUMS:
        value = head.get(name)
        if value and "-" not in str(value):
            return name, str(value)
    return None


def compare_checksums(
    primary_client: Any,
    primary_bucket: str,
    replica_client: Any,
    replica_bucket: str,
    keys: list[str],
    *,
    workers: int = 8,
) -> dict[str, bool]:
    """key -> same bytes?, for the pairs whose two copies both carry a full-object checksum of one algorithm
    (HeadObject on both, in parallel). Pairs left out (a checksum missing on either side, composite, or of
    different algorithms) must be hashed."""
    if not keys:
        return {}

    def checksum(client: Any, bucket: str, key: str) -> tuple[str, str] | None:
        try:
            return full_object_checksum(client.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED"))
        except ClientError:  # gone since the listing, or no right to read it: let hashing decide and say
            return None

    def one(key: str) -> tuple[str, tuple[str, str] | None, tuple[str, str] | None]:
        return (
            key,
            checksum(primary_client, primary_bucket, key),
            checksum(replica_client, replica_bucket, key),
        )

    decided: dict[str, bool] = {}
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(keys)))) as pool:
        for key, p, r in pool.map(one, keys):
            if p is not None and r is not None and p[0] == r[0]:
                decided[key] = p[1] == r[1]
    return decided


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
    """List both regions (concurrently), diff them, compare S3's full-object checksums of the pairs the
    listings leave open, and hash only the pairs without comparable checksums (and the deep sample)."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        p_future = pool.submit(list_objects, primary_client, primary_bucket, prefix)
        r_future = pool.submit(list_objects, replica_client, replica_bucket, prefix)
        primary, replica = p_future.result(), r_future.result()
    log.info("listed %d primary and %d replica object(s) under %r", len(primary), len(replica), prefix)
    diff = diff_listings(
        primary, replica, now=now, sla_seconds=sla_seconds, deep_sample=deep_sample, seed=seed
    )
    decided = compare_checksums(
        primary_client, primary_bucket, replica_client, replica_bucket, diff.to_hash, workers=workers
    )
    diff.by_checksum = sorted(decided)
    diff.to_hash = [key for key in diff.to_hash if key not in decided]
    if decided:
        log.info("%d pair(s) with other ETags decided by S3's full-object checksums", len(decided))
    keys = diff.to_hash + diff.sampled
    if keys:
        log.info(
            "hashing %d object(s) in both regions (%d with other ETags, %d sampled)",
            len(keys),
            len(diff.to_hash),
            len(diff.sampled),
        )
    hashes = hash_pairs(primary_client, primary_bucket, replica_client, replica_bucket, keys, workers=workers)
    bad = {key for key, (p, r) in hashes.items() if p != r} | {k for k, same in decided.items() if not same}
    diff.checksum_mismatch = sorted(set(diff.checksum_mismatch) | bad)
    return diff


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


@io_task(task_run_name="s3-wait-for-replica")
def wait_for_replica(settings: Settings, expected: dict[str, int], timeout: float) -> set[str]:
    return wait_for_objects(
        s3_client(settings, "replica"), s3_bucket(settings, "replica"), expected, timeout=timeout
    )


class ReplicationReport(ReplicationFindings):
    hashed: int = Field(default=0, description="objects downloaded and hashed in both regions")
    sampled: int = Field(default=0, description="of those, the deep sample (equal ETags)")
    by_checksum: int = Field(
        default=0, description="pairs with other ETags decided by S3's full-object checksums"
    )


def apply_replication(report: BackupReport, diff: ReplicationDiff, settings: Settings) -> None:
    """Record the replication findings in the report; what is missing or differs is a problem."""
    report.replication = ReplicationReport(
        **diff.model_dump(include=set(ReplicationFindings.model_fields)),
        hashed=len(diff.to_hash) + len(diff.sampled),
        sampled=len(diff.sampled),
        by_checksum=len(diff.by_checksum),
    )
    report.since.update({k: v.isoformat() for k, v in diff.since.items()})
    s3 = settings.s3
    where = f"s3://{s3.replica_bucket} ({s3.replica_region})"
    for label, keys in (
        ("missing from", diff.missing),
        ("size differs in", diff.size_mismatch),
        ("content differs in", diff.checksum_mismatch),
    ):
        if keys:
            report.problem(f"{len(keys)} object(s) {label} {where}: {', '.join(keys[:5])}")
    if diff.extra:
        report.problem(
            f"{len(diff.extra)} object(s) in {where} but not in the primary: {', '.join(diff.extra[:5])}"
        )
    sla = settings.backup.replication_sla_seconds
    if diff.lag_seconds is not None and diff.lag_seconds > sla:
        report.problem(f"replication lag {diff.lag_seconds:.0f} s is over the SLA of {sla:.0f} s")
    run_logger().info(
        "replication: %d checked, %d missing, %d extra, %d size, %d checksum, %d pending",
        diff.objects_checked,
        len(diff.missing),
        len(diff.extra),
        len(diff.size_mismatch),
        len(diff.checksum_mismatch),
        len(diff.pending),
    )
