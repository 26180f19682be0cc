"""Leftovers of earlier backup runs that died (a SIGKILL during a restore test, or mid-upload): scratch
databases and incomplete multipart uploads older than `SCALEOPS_BACKUP__LEFTOVER_AFTER_SECONDS`. Every
run finds, removes and reports them first, so a killed run never leaks a full-size database for good."""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import psycopg

from scaleops.core.clients import s3_bucket, s3_client
from scaleops.core.reporting import run_logger
from scaleops.core.retry import io_task
from scaleops.core.settings import Settings
from tasks.backup.dump import server_conninfo
from tasks.backup.restore import SCRATCH_PREFIX, drop_database

if TYPE_CHECKING:
    from tasks.backup.report import BackupReport

SCRATCH_STAMP = re.compile(r"_(\d{14})$")


def stale_scratch_databases(names: Iterable[str], now: datetime, older_than: timedelta) -> list[str]:
    """Scratch databases whose name stamps a start older than `older_than` (a live restore is younger)."""
    stale = []
    for name in names:
        match = SCRATCH_STAMP.search(name)
        if not name.startswith(SCRATCH_PREFIX) or not match:
            continue
        started = datetime.strptime(match.group(1), "%Y%m%d%H%M%S").replace(tzinfo=UTC)
        if now - started > older_than:
            stale.append(name)
    return sorted(stale)


def stale_uploads(
    uploads: Iterable[dict[str, Any]], now: datetime, older_than: timedelta
) -> list[tuple[str, str]]:
    """(key, upload id) of incomplete multipart uploads initiated longer ago than `older_than`."""
    return sorted(
        (u["Key"], u["UploadId"]) for u in uploads if now - u["Initiated"].astimezone(UTC) > older_than
    )


def remove_leftovers(settings: Settings, now: datetime) -> list[str]:
    """Drop stale scratch databases and abort stale uploads under the backup prefix; say what went."""
    older_than = timedelta(seconds=settings.backup.leftover_after_seconds)
    removed: list[str] = []
    conninfo = server_conninfo(settings, "restore")
    with psycopg.connect(conninfo, autocommit=True) as conn:
        rows = conn.execute(
            "select datname from pg_database where datname like %s", (SCRATCH_PREFIX + "%",)
        ).fetchall()
    for name in stale_scratch_databases([r[0] for r in rows], now, older_than):
        drop_database(conninfo, name, source="")
        removed.append(f"scratch database {name} (left by a run that did not finish)")
    client, bucket = s3_client(settings, "primary"), s3_bucket(settings, "primary")
    pages = client.get_paginator("list_multipart_uploads").paginate(
        Bucket=bucket, Prefix=settings.backup.prefix
    )
    uploads = [u for page in pages for u in page.get("Uploads", [])]
    for key, upload_id in stale_uploads(uploads, now, older_than):
        client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
        removed.append(f"incomplete upload s3://{bucket}/{key} (left by a run that did not finish)")
    return removed


@io_task(task_run_name="backup-remove-leftovers")
def remove_leftovers_task(settings: Settings, now: datetime) -> list[str]:
    return remove_leftovers(settings, now)


def clean_leftovers(settings: Settings, now: datetime, report: BackupReport) -> None:
    """Remove what earlier runs left; each removal is a warning (an earlier run died: worth a look)."""
    removed = remove_leftovers_task(settings, now)
    for what in removed:
        report.problem(f"removed {what}", severity="warn")
    run_logger().info("leftovers of earlier runs: %d removed", len(removed))
