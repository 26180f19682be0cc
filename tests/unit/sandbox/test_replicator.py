"""The sandbox's CRR stand-in, against moto in-process: copy after the delay, once per version."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import boto3
import pytest
from moto import mock_aws

from scaleops.sandbox.replicator import replicate_once


@pytest.fixture
def buckets(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    with mock_aws():
        src = boto3.client("s3", region_name="us-east-1")
        dst = boto3.client("s3", region_name="us-west-2")
        src.create_bucket(Bucket="src")
        dst.create_bucket(Bucket="dst", CreateBucketConfiguration={"LocationConstraint": "us-west-2"})
        yield src, dst


def run(src, dst, copied, *, delay=0.0, now=None):
    return replicate_once(src, "src", dst, "dst", delay=delay, copied_from=copied, now=now)


def test_copies_new_objects_with_metadata(buckets) -> None:
    src, dst = buckets
    src.put_object(Bucket="src", Key="a", Body=b"alpha", Metadata={"sha256": "abc"})
    copied: dict[str, str] = {}
    assert run(src, dst, copied).copied == ["a"]
    got = dst.get_object(Bucket="dst", Key="a")
    assert got["Body"].read() == b"alpha" and got["Metadata"] == {"sha256": "abc"}
    assert run(src, dst, copied).copied == []


def test_waits_for_the_delay(buckets) -> None:
    src, dst = buckets
    src.put_object(Bucket="src", Key="a", Body=b"alpha")
    copied: dict[str, str] = {}
    first = run(src, dst, copied, delay=60)
    assert first.copied == [] and first.waiting == ["a"]
    later = run(src, dst, copied, delay=60, now=datetime.now(UTC) + timedelta(seconds=61))
    assert later.copied == ["a"]


def test_changed_source_is_copied_again_damaged_replica_is_not(buckets) -> None:
    src, dst = buckets
    src.put_object(Bucket="src", Key="a", Body=b"v1")
    copied: dict[str, str] = {}
    run(src, dst, copied)
    dst.put_object(Bucket="dst", Key="a", Body=b"tampered")
    dst.delete_object(Bucket="dst", Key="a")
    assert run(src, dst, copied).copied == []  # like CRR: a version is replicated once
    src.put_object(Bucket="src", Key="a", Body=b"v2")
    assert run(src, dst, copied).copied == ["a"]
    assert dst.get_object(Bucket="dst", Key="a")["Body"].read() == b"v2"


def test_a_multipart_copy_keeps_the_full_object_checksum_in_other_parts(buckets) -> None:
    import io
    import os

    from tasks.common.s3 import upload_stream

    src, dst = buckets
    body = os.urandom(11 * 1024 * 1024)
    upload_stream(src, "src", "m", io.BytesIO(body), part_size=5 * 1024 * 1024, metadata={"sha256": "abc"})
    assert run(src, dst, {}).copied == ["m"]
    a = src.head_object(Bucket="src", Key="m", ChecksumMode="ENABLED")
    b = dst.head_object(Bucket="dst", Key="m", ChecksumMode="ENABLED")
    assert a["ETag"] != b["ETag"]  # other parts (8 MiB), as with CRR of another part layout
    assert b["ChecksumType"] == "FULL_OBJECT" and b["ChecksumCRC32"] == a["ChecksumCRC32"]
    assert b["Metadata"] == {"sha256": "abc"}
    assert dst.get_object(Bucket="dst", Key="m")["Body"].read() == body
