"""S3: the primary bucket and its cross-region replica."""

from __future__ import annotations

from typing import Any

import boto3  # noqa: F401 - imported once here, not first inside concurrent task threads

from scaleops.clients import S3Region, s3_bucket, s3_client
from scaleops.retry import io_task
from scaleops.settings import Settings
from tasks.health import Check, timed_check


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
