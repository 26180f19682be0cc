"""Sandbox stand-in for S3 cross-region replication (moto stores a replication config but never copies).

Copies new and changed objects from the source bucket to the target bucket once they are older than
`delay` seconds, like CRR: deletes are not replicated, metadata is kept, and large objects are copied
in parts (so a replica of a multipart object may carry another ETag than its source, as in real life),
keeping the source's full-object checksum as CRR does (a multipart source that has one is re-uploaded in
8 MiB parts with a full-object CRC32 of the bytes copied).
`replicate_once` is the plain function; `main` loops it and touches a heartbeat file for health checks.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

log = logging.getLogger("scaleops.sandbox.replicator")


@dataclass
class ReplicationPass:
    copied: list[str] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)


def list_objects(client: Any, bucket: str) -> dict[str, dict[str, Any]]:
    """key -> {ETag, Size, LastModified} for every object (paginated listing, not one request per key)."""
    objects: dict[str, dict[str, Any]] = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", []):
            objects[obj["Key"]] = obj
    return objects


def replicate_once(
    source_client: Any,
    source_bucket: str,
    target_client: Any,
    target_bucket: str,
    *,
    delay: float,
    copied_from: dict[str, str],
    now: datetime | None = None,
) -> ReplicationPass:
    """One pass: copy every source object that is older than `delay` and not yet replicated as is.

    `copied_from` maps key -> source ETag last copied, kept across passes: each version is copied once
    (a replica whose ETag differs only by part size is not copied again, and a replica deleted or
    damaged later is not repaired, as with real CRR).
    """
    now = now or datetime.now(UTC)
    result = ReplicationPass()
    source = list_objects(source_client, source_bucket)
    target = list_objects(target_client, target_bucket)
    for key, obj in source.items():
        if copied_from.get(key) == obj["ETag"]:
            continue  # this version was replicated once; like CRR, later damage to the copy stays
        replica = target.get(key)
        if replica is not None and replica["ETag"] == obj["ETag"]:
            copied_from[key] = obj["ETag"]
            continue
        if (now - obj["LastModified"]).total_seconds() < delay:
            result.waiting.append(key)
            continue
        copy_object(source_client, source_bucket, target_client, target_bucket, key, int(obj["Size"]))
        copied_from[key] = obj["ETag"]
        result.copied.append(key)
    return result


COPY_PART_SIZE = 8 * 1024 * 1024


def copy_object(
    source_client: Any, source_bucket: str, target_client: Any, target_bucket: str, key: str, size: int
) -> None:
    """Bytes and metadata; a multipart source with a full-object checksum gets one on the replica too."""
    if size > COPY_PART_SIZE:
        head = source_client.head_object(Bucket=source_bucket, Key=key, ChecksumMode="ENABLED")
        if head.get("ChecksumType") == "FULL_OBJECT" and any(
            k.startswith("Checksum") and k != "ChecksumType" for k in head
        ):
            from tasks.common.s3 import upload_stream

            body = source_client.get_object(Bucket=source_bucket, Key=key)["Body"]
            try:
                upload_stream(
                    target_client,
                    target_bucket,
                    key,
                    body,
                    part_size=COPY_PART_SIZE,
                    metadata=head.get("Metadata"),
                )
            finally:
                body.close()
            return
    target_client.copy({"Bucket": source_bucket, "Key": key}, target_bucket, key, SourceClient=source_client)


def _client(endpoint_url: str, region: str) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.session.Session().client(
        "s3", endpoint_url=endpoint_url, config=Config(region_name=region, max_pool_connections=16)
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--endpoint-url", required=True)
    parser.add_argument("--source", required=True, help="bucket@region")
    parser.add_argument("--target", required=True, help="bucket@region")
    parser.add_argument("--delay", type=float, default=1.0, help="seconds before an object is copied")
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between passes")
    parser.add_argument("--heartbeat", type=Path, required=True)
    parser.add_argument("--state", type=Path, required=True, help="JSON file of copied source ETags")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    source_bucket, source_region = args.source.split("@", 1)
    target_bucket, target_region = args.target.split("@", 1)
    source_client = _client(args.endpoint_url, source_region)
    target_client = _client(args.endpoint_url, target_region)
    copied_from: dict[str, str] = {}
    if args.state.exists():
        copied_from = json.loads(args.state.read_text())

    stopping = False

    def stop(*_: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("replicating %s -> %s (delay %.1fs)", args.source, args.target, args.delay)
    while not stopping:
        try:
            done = replicate_once(
                source_client,
                source_bucket,
                target_client,
                target_bucket,
                delay=args.delay,
                copied_from=copied_from,
            )
            if done.copied:
                log.info("copied %d object(s)", len(done.copied))
                args.state.write_text(json.dumps(copied_from))
            args.heartbeat.touch()
        except Exception as exc:  # keep going: the S3 server may be restarting
            log.warning("replication pass failed: %s", exc)
        time.sleep(args.interval)


if __name__ == "__main__":
    main()
