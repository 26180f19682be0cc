"""Grandfather-father-son retention of backups in both regions (duty backup-verification)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any

import boto3  # noqa: F401 - imported once here, not first inside concurrent task threads
from pydantic import BaseModel, Field

from scaleops.core.clients import S3Region, s3_bucket, s3_client
from scaleops.core.reporting import run_logger
from scaleops.core.retry import io_task
from scaleops.core.settings import Settings
from tasks.backup.catalog import CatalogEntry, newest_verified
from tasks.backup.dump import manifest_key
from tasks.common.s3 import delete_keys

if TYPE_CHECKING:
    from tasks.backup.report import BackupReport


class RetentionReport(BaseModel):
    kept: list[str] = Field(default_factory=list)
    deleted: list[str] = Field(default_factory=list, description="deleted, or would be on a dry run")
    dry_run: bool = True


@io_task(task_run_name="s3-delete-{region}")
def delete_backup_objects(settings: Settings, region: S3Region, keys: list[str]) -> list[str]:
    return delete_keys(s3_client(settings, region), s3_bucket(settings, region), keys)


# ------------------------------------------------------------------------------------------------ retention
def gfs_keep(times: dict[str, datetime], *, daily: int, weekly: int, monthly: int) -> set[str]:
    """Grandfather-father-son: the newest backup of each of the newest `daily` days, `weekly` ISO weeks
    and `monthly` months that have a backup. Returns the keys to keep."""
    ordered = sorted(times, key=lambda k: (times[k], k), reverse=True)
    keep: set[str] = set()
    for count, bucket in (
        (daily, lambda t: t.date()),
        (weekly, lambda t: t.isocalendar()[:2]),
        (monthly, lambda t: (t.year, t.month)),
    ):
        seen: set[Any] = set()
        for key in ordered:
            period = bucket(times[key])
            if period in seen:
                continue
            if len(seen) >= count:
                break
            seen.add(period)
            keep.add(key)
    return keep


def plan_retention(
    entries: list[CatalogEntry],
    databases: Iterable[str],
    *,
    until: datetime,
    daily: int,
    weekly: int,
    monthly: int,
) -> tuple[list[str], list[str]]:
    """(kept, to delete) dump keys. Per database: GFS over verified backups taken up to `until`, always
    keeping the newest verified one and anything newer than `until`. Dumps without a manifest that are
    older than the newest verified backup (failed attempts, superseded) are deleted too."""
    kept: list[str] = []
    delete: list[str] = []
    for database in sorted(set(databases)):
        mine = [e for e in entries if e.database == database]
        newest = newest_verified(mine, database, until)
        candidates = {e.key: e.taken_at for e in mine if e.verified and e.taken_at <= until}
        keep = gfs_keep(candidates, daily=daily, weekly=weekly, monthly=monthly)
        if newest is not None:
            keep.add(newest.key)
        for entry in mine:
            if entry.verified:
                (kept if entry.key in keep or entry.taken_at > until else delete).append(entry.key)
            elif newest is not None and entry.taken_at < newest.taken_at:
                delete.append(entry.key)
    return sorted(kept), sorted(delete)


def apply_gfs_retention(
    settings: Settings, entries: list[CatalogEntry], clock: datetime, delete: bool, report: BackupReport
) -> None:
    """Plan GFS retention as of `clock`; with `delete`, remove each expired dump and its manifest from
    both regions (what could not be deleted is a problem)."""
    b = settings.backup
    kept, expired = plan_retention(
        entries,
        report.databases,
        until=clock,
        daily=b.keep_daily,
        weekly=b.keep_weekly,
        monthly=b.keep_monthly,
    )
    report.retention = RetentionReport(kept=kept, deleted=expired, dry_run=not delete)
    if not (delete and expired):
        return
    keys = [k for dump in expired for k in (dump, manifest_key(dump))]
    for region in ("primary", "replica"):
        failed = delete_backup_objects(settings, region, keys)
        if failed:
            report.problem(f"retention could not delete {len(failed)} object(s) in {region}: {failed[:5]}")
    run_logger().info("retention deleted %d backup(s) from both regions", len(expired))
