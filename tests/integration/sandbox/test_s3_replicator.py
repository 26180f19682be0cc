"""The running S3 replicator copies primary-region objects to the replica region, bytes and metadata."""

from __future__ import annotations

import time
import uuid

import pytest

from scaleops.core.clients import s3_bucket, s3_client
from scaleops.core.settings import load_settings

pytestmark = pytest.mark.integration


def test_object_reaches_the_replica_region(sandbox_env: dict[str, str]) -> None:
    settings = load_settings()
    primary, replica = s3_client(settings, "primary"), s3_client(settings, "replica")
    key = f"tests/replicator/{uuid.uuid4()}"
    body = uuid.uuid4().bytes * 1000
    primary.put_object(Bucket=s3_bucket(settings, "primary"), Key=key, Body=body, Metadata={"sha256": "x"})
    deadline = time.monotonic() + 30
    while True:
        try:
            got = replica.get_object(Bucket=s3_bucket(settings, "replica"), Key=key)
            break
        except replica.exceptions.NoSuchKey:
            assert time.monotonic() < deadline, "object never reached the replica bucket"
            time.sleep(0.25)
    assert got["Body"].read() == body
    assert got["Metadata"] == {"sha256": "x"}
    location = replica.get_bucket_location(Bucket=s3_bucket(settings, "replica"))["LocationConstraint"]
    assert location == settings.s3.replica_region
