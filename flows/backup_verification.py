"""Duty `backup-verification`: prove every night (and whenever an alert asks) that the PostgreSQL
backups exist, are intact in both regions, and restore.

Steps: back up each database (`pg_dump -Fc` streamed to the primary bucket with a SHA-256 manifest),
check replication primary vs replica from listings (hashing only what the listings cannot decide plus a
deep sample), restore the newest backup from the replica region into a scratch database and check it
with great-expectations, read the streaming replica's lag, compute RPO and RTO, and apply
grandfather-father-son retention in both regions. One report, one artifact, one event.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated

from pydantic import Field

from scaleops.core.duties import duty
from scaleops.core.reporting import as_datetime, utcnow
from scaleops.core.settings import Settings
from tasks.backup.catalog import backup_listing, measure_rpo, read_catalog
from tasks.backup.dump import check_databases, first_named, take_backups
from tasks.backup.lag import check_replica_lag
from tasks.backup.leftovers import clean_leftovers
from tasks.backup.replication import apply_replication, replication_check
from tasks.backup.report import BackupReport
from tasks.backup.restore import run_restore_tests
from tasks.backup.retention import apply_gfs_retention


def needs(settings: Settings) -> list[str]:
    if not settings.backup.databases:
        return ["no databases to back up (SCALEOPS_BACKUP__DATABASES, or the `databases` parameter)"]
    return []


@duty(
    "backup-verification",
    namespace="backup",
    report=BackupReport,
    summary="back up each PostgreSQL database to S3, verify the replica region holds the same bytes, "
    "restore the newest backup from the replica region and check it, RPO/RTO, GFS retention",
    needs=needs,
)
def backup_verification(
    settings: Settings,
    as_of: datetime | date | None = None,
    databases: list[str] | None = None,
    take_backup: bool = True,
    deep_sample: Annotated[float, Field(ge=0, le=1)] = 0.01,
    restore_test: bool = True,
    apply_retention: bool = False,
    dry_run: bool = True,
    first: str | None = None,
) -> BackupReport:
    """Back up, check both regions, restore from the replica, measure RPO/RTO/lag, apply retention.

    `as_of` is the partition (default now): RPO and retention are computed as of it. `deep_sample` is
    the fraction of objects with equal ETags that are downloaded and hashed in both regions anyway.
    Retention deletes only with `apply_retention=true` and `dry_run=false`.

    Args:
        as_of: the partition (default now): RPO and retention are computed as of it.
        databases: databases to back up and check (default: SCALEOPS_BACKUP__DATABASES).
        take_backup: take a new backup of each database first.
        deep_sample: fraction (0-1) of objects with equal ETags hashed in both regions anyway.
        restore_test: restore the newest backup from the replica region into a scratch database and check it.
        apply_retention: plan grandfather-father-son retention in both regions.
        dry_run: with apply_retention, only report what would be deleted.
        first: back up and check this database first (alert triggers pass the alert's `database` label).
    """
    clock = as_datetime(as_of)
    names = first_named(check_databases(databases or settings.backup.databases), first)
    report = BackupReport(as_of=clock, databases=names)

    clean_leftovers(settings, utcnow(), report)
    if take_backup:
        take_backups(settings, names, report)
    if as_of is None:
        clock = utcnow()  # "now" includes the backups just taken

    listing = backup_listing(settings, "primary")
    catalog = read_catalog(settings, listing, names, clock, report)

    diff = replication_check(settings, utcnow(), deep_sample, int(clock.timestamp()))
    apply_replication(report, diff, settings)

    if restore_test:
        run_restore_tests(settings, catalog, listing, clock, report)
    check_replica_lag(settings, report)
    measure_rpo(settings, catalog, clock, report)
    apply_gfs_retention(settings, catalog, clock, apply_retention and not dry_run, report)
    return report
