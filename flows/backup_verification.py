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

from prefect import get_run_logger
from pydantic import Field

from scaleops.core.duties import duty_flow
from scaleops.core.redaction import protect
from scaleops.core.reporting import as_datetime, publish_report, utcnow
from scaleops.core.settings import load_settings
from tasks.backup.catalog import (
    BackupListing,
    backup_listing,
    build_catalog,
    dump_key,
    newest_verified,
    pick_restore_source,
    replica_copies,
)
from tasks.backup.dump import Manifest, backup_database, check_databases, manifest_key
from tasks.backup.lag import replica_lag_task
from tasks.backup.replication import ReplicationDiff, replication_check
from tasks.backup.report import (
    BackupRecord,
    BackupReport,
    RetentionReport,
    _table,
    apply_replication,
    render_markdown,
)
from tasks.backup.restore import RestoreResult, scratch_name
from tasks.backup.restore import restore_test as restore_test_task
from tasks.backup.retention import delete_backup_objects, plan_retention

NAMESPACE = "backup"


@duty_flow("backup-verification", NAMESPACE)
def backup_verification(
    as_of: datetime | date | None = None,
    databases: list[str] | None = None,
    take_backup: bool = True,
    deep_sample: Annotated[float, Field(ge=0, le=1)] = 0.01,
    restore_test: bool = True,
    apply_retention: bool = False,
    dry_run: bool = True,
) -> BackupReport:
    """Back up, check both regions, restore from the replica, measure RPO/RTO/lag, apply retention.

    `as_of` is the partition (default now): RPO and retention are computed as of it. `deep_sample` is
    the fraction of objects with equal ETags that are downloaded and hashed in both regions anyway.
    Retention deletes only with `apply_retention=true` and `dry_run=false`.
    """
    settings = load_settings()
    redactor = protect(settings.secrets())
    clock = as_datetime(as_of)
    names = check_databases(databases or settings.backup.databases)
    prefix = settings.backup.prefix
    report = BackupReport(as_of=clock, databases=names)
    logger = get_run_logger()

    # 1. backups
    if take_backup:
        for database in names:
            key = dump_key(prefix, database, utcnow())
            try:
                manifest: Manifest = backup_database(settings, database, key)
            except Exception as exc:  # one database failing does not hide the others' state
                report.problem(f"backup of {database} failed: {redactor.text(str(exc))}")
                continue
            report.backups.append(
                BackupRecord(
                    database=database,
                    key=manifest.key,
                    bytes=manifest.bytes,
                    sha256=manifest.sha256,
                    started_at=manifest.started_at,
                    finished_at=manifest.finished_at,
                )
            )
        logger.info("took %d backup(s)", len(report.backups))

    if as_of is None:
        clock = utcnow()  # "now" includes the backups just taken
    # catalog of the primary region
    listing: BackupListing = backup_listing(settings, "primary")
    entries, findings = build_catalog(prefix, listing)
    for finding in findings:
        report.problem(finding)
    mine = [e for e in entries if e.database in names]
    for database in names:
        newest = newest_verified(mine, database, clock)
        for entry in mine:
            if entry.database == database and not entry.verified:
                report.unverified.append(entry.key)
                report.since[entry.key] = entry.taken_at.isoformat()
                if newest is None or entry.taken_at > newest.taken_at:
                    report.problem(f"{database}: {entry.key} is not verified: {entry.why_unverified}")
        if newest is None:
            report.problem(f"{database}: no verified backup under s3://{settings.s3.primary_bucket}/{prefix}")
            continue
        report.newest_verified[database] = newest.key
    report.unverified.sort()
    logger.info("catalog: %d backup(s), %d verified", len(entries), sum(e.verified for e in entries))

    # 2. replication check
    diff: ReplicationDiff = replication_check(settings, utcnow(), deep_sample, int(clock.timestamp()))
    apply_replication(report, diff, settings)
    logger.info(
        "replication: %d checked, %d missing, %d extra, %d size, %d checksum, %d pending",
        diff.objects_checked,
        len(diff.missing),
        len(diff.extra),
        len(diff.size_mismatch),
        len(diff.checksum_mismatch),
        len(diff.pending),
    )

    # 3. restore tests from the replica region
    if restore_test:
        newest_keys = set(report.newest_verified.values())
        in_replica = replica_copies(
            settings, mine, listing, newest_keys, settings.backup.restore_wait_seconds
        )
        if len(in_replica) < len(newest_keys):
            # the newest is not there yet: fall back to the newest older backup the replica holds
            older = {e.key for e in mine if e.verified and e.key not in newest_keys}
            in_replica |= replica_copies(settings, mine, listing, older, 0)
        for database in names:
            source = pick_restore_source(mine, database, clock, in_replica)
            if source is None:
                if database in report.newest_verified:
                    report.problem(f"{database}: no verified backup in the replica region to restore from")
                continue
            scratch = scratch_name(database, utcnow())
            result: RestoreResult = restore_test_task(settings, database, source.key, scratch)
            report.restore.append(result)
            for failed in result.checks_failed:
                report.problem(f"restore test of {database} ({source.key}): {failed}")
            logger.info(
                "restore test %s: %d passed, %d failed",
                database,
                len(result.checks_passed),
                len(result.checks_failed),
            )

    # 4. streaming replica lag
    report.replica_lag = replica_lag_task(settings)
    if settings.postgres.replica_dsn is not None:
        if not report.replica_lag:
            report.problem("PostgreSQL primary reports no streaming replica (pg_stat_replication is empty)")
        for lag in report.replica_lag:
            if lag.state != "streaming":
                report.problem(f"PostgreSQL replica {lag.application_name} is {lag.state}, not streaming")

    # 5. RPO and RTO
    finished = [
        e.manifest.finished_at
        for e in mine
        if e.manifest is not None and e.key in report.newest_verified.values()
    ]
    if finished and len(finished) == len(names):
        report.rpo_seconds = round(max(0.0, max((clock - f).total_seconds() for f in finished)), 3)
        target = settings.backup.rpo_target_seconds
        if report.rpo_seconds > target:
            report.problem(f"RPO {report.rpo_seconds:.0f} s is over the target of {target:.0f} s")
    restored = [x.seconds for x in report.restore if x.seconds is not None]
    report.rto_seconds = max(restored) if restored else None

    # 6. retention
    b = settings.backup
    kept, delete = plan_retention(
        mine, names, until=clock, daily=b.keep_daily, weekly=b.keep_weekly, monthly=b.keep_monthly
    )
    really = apply_retention and not dry_run
    report.retention = RetentionReport(kept=kept, deleted=delete, dry_run=not really)
    if really and delete:
        keys = [k for dump in delete for k in (dump, manifest_key(dump))]
        for region in ("primary", "replica"):
            failed = delete_backup_objects(settings, region, keys)
            if failed:
                report.problem(
                    f"retention could not delete {len(failed)} object(s) in {region}: {failed[:5]}"
                )
        logger.info("retention deleted %d backup(s) from both regions", len(delete))

    report.finish()
    publish_report(
        report,
        namespace=NAMESPACE,
        outcome="verified" if report.ok else "drift",
        resource_id=f"scaleops.backup.{settings.s3.primary_bucket}.{prefix.rstrip('/')}",
        markdown=render_markdown(report, settings),
        table=_table(report),
        redactor=redactor,
    )
    return report
