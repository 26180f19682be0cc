"""Duty `backup-verification`: prove every night (and whenever an alert asks) that the PostgreSQL
backups exist, are intact in both regions, and restore.

Steps: back up each database (`pg_dump -Fc` streamed to the primary bucket with a SHA-256 manifest),
check replication primary vs replica from listings (hashing only what the listings cannot decide plus a
deep sample), restore the newest backup from the replica region into a scratch database and check it
with great-expectations, read the streaming replica's lag, compute RPO and RTO, and apply
grandfather-father-son retention in both regions. One report, one artifact, one event.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, date, datetime, time
from typing import Annotated, Any

from prefect import get_run_logger
from pydantic import BaseModel, Field

from scaleops.duties import duty_flow
from scaleops.redaction import protect
from scaleops.reporting import DutyReport, publish_report, utcnow
from scaleops.settings import Settings, load_settings
from tasks.postgres import (
    Manifest,
    ReplicaLag,
    RestoreResult,
    backup_database,
    manifest_key,
    replica_lag_task,
    scratch_name,
)
from tasks.postgres import (
    restore_test as restore_test_task,
)
from tasks.s3 import (
    BackupListing,
    ReplicationDiff,
    ReplicationFindings,
    backup_listing,
    delete_backup_objects,
    replication_check,
    wait_for_replica,
)

NAMESPACE = "backup"
DUMP_KEY = re.compile(r"^(?P<db>.+)-(?P<ts>\d{8}T\d{6}(?:\.\d{6})?)Z\.dump$")
MAX_KEYS_IN_MARKDOWN = 25


# ------------------------------------------------------------------------------------------------ report
class BackupRecord(BaseModel):
    database: str
    key: str
    bytes: int
    sha256: str
    started_at: datetime
    finished_at: datetime


class ReplicationReport(ReplicationFindings):
    hashed: int = Field(default=0, description="objects downloaded and hashed in both regions")
    sampled: int = Field(default=0, description="of those, the deep sample (equal ETags)")


class RetentionReport(BaseModel):
    kept: list[str] = Field(default_factory=list)
    deleted: list[str] = Field(default_factory=list, description="deleted, or would be on a dry run")
    dry_run: bool = True


class BackupReport(DutyReport):
    duty: str = "backup-verification"
    databases: list[str] = Field(default_factory=list)
    backups: list[BackupRecord] = Field(default_factory=list, description="taken by this run")
    replication: ReplicationReport = Field(default_factory=ReplicationReport)
    restore: list[RestoreResult] = Field(default_factory=list, description="one per database")
    replica_lag: list[ReplicaLag] = Field(default_factory=list)
    rpo_seconds: float | None = None
    rto_seconds: float | None = None
    retention: RetentionReport = Field(default_factory=RetentionReport)
    newest_verified: dict[str, str] = Field(default_factory=dict, description="database -> dump key")
    unverified: list[str] = Field(default_factory=list, description="dump objects without a valid manifest")
    since: dict[str, str] = Field(default_factory=dict, description="finding key -> first seen (ISO time)")


# ------------------------------------------------------------------------------------------------ catalog
class CatalogEntry(BaseModel):
    """One backup as the primary region holds it."""

    database: str
    key: str
    taken_at: datetime
    bytes: int
    manifest: Manifest | None = None
    why_unverified: str | None = None

    @property
    def verified(self) -> bool:
        return self.manifest is not None and self.why_unverified is None


def dump_key(prefix: str, database: str, when: datetime) -> str:
    """`<prefix><db>/<db>-<UTC time>Z.dump` (sorts by time; the manifest sits beside it)."""
    stamp = when.astimezone(UTC).strftime("%Y%m%dT%H%M%S.%f")
    return f"{prefix}{database}/{database}-{stamp}Z.dump"


def parse_dump_key(prefix: str, key: str) -> tuple[str, datetime] | None:
    rest = key.removeprefix(prefix)
    folder, _, name = rest.partition("/")
    match = DUMP_KEY.match(name)
    if not match or match["db"] != folder:
        return None
    stamp = match["ts"]
    fmt = "%Y%m%dT%H%M%S.%f" if "." in stamp else "%Y%m%dT%H%M%S"
    return folder, datetime.strptime(stamp, fmt).replace(tzinfo=UTC)


def build_catalog(prefix: str, listing: BackupListing) -> tuple[list[CatalogEntry], list[str]]:
    """Backups by database from a listing; a dump counts as verified only with a manifest that names
    it and agrees with the object's size. Returns (entries newest first, findings about manifests)."""
    entries: list[CatalogEntry] = []
    findings: list[str] = []
    for key, obj in listing.dumps.items():
        parsed = parse_dump_key(prefix, key)
        if parsed is None:
            continue
        database, taken_at = parsed
        entry = CatalogEntry(database=database, key=key, taken_at=taken_at, bytes=obj.size)
        mkey = manifest_key(key)
        content = listing.manifests.get(mkey)
        if mkey in listing.unreadable:
            entry.why_unverified = f"manifest unreadable ({listing.unreadable[mkey]})"
        elif content is None:
            entry.why_unverified = "no manifest (the backup did not finish)"
        else:
            try:
                entry.manifest = Manifest.model_validate(content)
            except ValueError as exc:
                entry.why_unverified = f"manifest invalid ({str(exc).splitlines()[0]})"
            else:
                if entry.manifest.key != key or entry.manifest.bytes != obj.size:
                    entry.why_unverified = (
                        f"manifest says {entry.manifest.bytes} bytes of {entry.manifest.key}, "
                        f"object has {obj.size}"
                    )
        entries.append(entry)
    dumps = set(listing.dumps)
    for mkey in sorted(set(listing.manifests) | set(listing.unreadable)):
        if mkey.removesuffix(".manifest.json") + ".dump" not in dumps:
            findings.append(f"manifest {mkey} has no dump object")
    entries.sort(key=lambda e: (e.taken_at, e.key), reverse=True)
    return entries, findings


def newest_verified(entries: Iterable[CatalogEntry], database: str, until: datetime) -> CatalogEntry | None:
    for entry in entries:  # newest first
        if entry.database == database and entry.verified and entry.taken_at <= until:
            return entry
    return None


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


# ------------------------------------------------------------------------------------------------ flow
def as_datetime(as_of: datetime | date | None) -> datetime:
    """The run's clock: now, a datetime (naive = UTC), or a date (its midnight UTC, as a date string
    passed on the command line is read too)."""
    if as_of is None:
        return utcnow()
    if isinstance(as_of, datetime):
        return as_of if as_of.tzinfo else as_of.replace(tzinfo=UTC)
    return datetime.combine(as_of, time.min, tzinfo=UTC)


def check_databases(names: list[str]) -> list[str]:
    bad = [n for n in names if not n or len(n) > 63 or "/" in n or n.startswith("scaleops_restore_")]
    if bad or not names:
        raise ValueError(f"databases: not valid database names: {bad or names}")
    return list(dict.fromkeys(names))


def apply_replication(report: BackupReport, diff: ReplicationDiff, settings: Settings) -> None:
    report.replication = ReplicationReport(
        **diff.model_dump(include=set(ReplicationFindings.model_fields)),
        hashed=len(diff.to_hash) + len(diff.sampled),
        sampled=len(diff.sampled),
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


def pick_restore_source(
    entries: list[CatalogEntry], database: str, until: datetime, in_replica: set[str]
) -> CatalogEntry | None:
    """The newest verified backup whose dump and manifest the replica region holds."""
    for entry in entries:
        if (
            entry.database == database
            and entry.verified
            and entry.taken_at <= until
            and entry.key in in_replica
        ):
            return entry
    return None


def render_markdown(report: BackupReport, settings: Settings) -> str:
    s3 = settings.s3
    status = "all backups verified" if report.ok else "PROBLEMS FOUND"
    lines = [f"# Backup verification: {status}", ""]
    lines.append(f"as of `{report.as_of.isoformat()}` · databases: {', '.join(report.databases)}")
    lines.append(
        f"· primary `s3://{s3.primary_bucket}` ({s3.primary_region}) · replica `s3://{s3.replica_bucket}` "
        f"({s3.replica_region}) · prefix `{settings.backup.prefix}`"
    )
    rpo = f"{report.rpo_seconds:.0f} s" if report.rpo_seconds is not None else "no verified backup"
    rto = f"{report.rto_seconds:.1f} s" if report.rto_seconds is not None else "no restore"
    lag = report.replication.lag_seconds
    lines += [
        "",
        f"**RPO** {rpo} · **RTO** {rto} · **S3 replication lag** "
        f"{f'{lag:.1f} s' if lag is not None else 'n/a'}",
    ]
    if report.problems:
        lines += ["", "## What is wrong", ""]
        lines += [f"- {p}" for p in report.problems]
        lines += ["", "### How to act", ""]
        r = report.replication
        if r.missing or r.size_mismatch or r.checksum_mismatch:
            lines.append(
                "- Replica objects missing or different: check the bucket replication rule and its failed-"
                "replication metrics, then re-copy each key (`aws s3 cp s3://PRIMARY/KEY s3://REPLICA/KEY "
                "--source-region ... --region ...`) and rerun this duty."
            )
        if r.extra:
            lines.append(
                "- Objects only in the replica: retention or a person deleted them from the primary only. "
                "Decide whether the primary lost data (restore it from the replica) or delete the extras."
            )
        if any(x.checks_failed for x in report.restore):
            lines.append(
                "- A restore check failed: the backup does not reproduce the database. Take a new backup "
                "now (`scaleops run backup-verification`), and keep the failed one for analysis."
            )
        if report.unverified:
            lines.append(
                "- Dumps without a manifest: a backup was interrupted between upload and manifest. The "
                "newest verified backup still stands; look at the failed flow run of that time."
            )
    table_rows = []
    for label, keys in (
        ("missing", report.replication.missing),
        ("extra", report.replication.extra),
        ("size_mismatch", report.replication.size_mismatch),
        ("checksum_mismatch", report.replication.checksum_mismatch),
        ("pending", report.replication.pending),
        ("unverified", report.unverified),
    ):
        for key in keys[:MAX_KEYS_IN_MARKDOWN]:
            table_rows.append(f"| {label} | `{key}` | {report.since.get(key, '')} |")
        if len(keys) > MAX_KEYS_IN_MARKDOWN:
            table_rows.append(
                f"| {label} | ... {len(keys) - MAX_KEYS_IN_MARKDOWN} more (see the JSON report) | |"
            )
    if table_rows:
        lines += ["", "## Findings by object", "", "| finding | key | since |", "|---|---|---|", *table_rows]
    if report.backups:
        lines += [
            "",
            "## Backups taken",
            "",
            "| database | key | bytes | sha256 | seconds |",
            "|---|---|---|---|---|",
        ]
        for b in report.backups:
            seconds = (b.finished_at - b.started_at).total_seconds()
            lines.append(f"| {b.database} | `{b.key}` | {b.bytes} | `{b.sha256[:16]}…` | {seconds:.1f} |")
    if report.newest_verified:
        lines += ["", "## Newest verified backup", ""]
        lines += [f"- {db}: `{key}`" for db, key in sorted(report.newest_verified.items())]
    r = report.replication
    lines += [
        "",
        "## Replication",
        "",
        f"{r.objects_checked} object(s) checked from listings; {r.hashed} hashed in both regions "
        f"({r.sampled} as deep sample); pending within SLA: {len(r.pending)}.",
    ]
    for x in report.restore:
        verdict = "passed" if not x.checks_failed else "FAILED"
        lines += [
            "",
            f"## Restore test {x.database}: {verdict}",
            "",
            f"`{x.backup_key}` from the replica region into `{x.scratch_database}` "
            f"({x.seconds if x.seconds is not None else '-'} s restore, "
            f"{x.checks_seconds if x.checks_seconds is not None else '-'} s checks; "
            f"scratch database {'dropped' if x.dropped else 'NOT dropped: drop it by hand'}).",
            "",
        ]
        lines += [f"- failed: {c}" for c in x.checks_failed]
        lines.append(f"- passed: {len(x.checks_passed)} check(s)")
    if report.replica_lag:
        lines += ["", "## PostgreSQL streaming replica", "", "| replica | state | bytes behind | seconds |"]
        lines.append("|---|---|---|---|")
        for replica in report.replica_lag:
            lines.append(
                f"| {replica.application_name} | {replica.state} | {replica.bytes} | {replica.seconds} |"
            )
    t = report.retention
    lines += [
        "",
        f"## Retention ({'dry run: nothing deleted' if t.dry_run else 'applied'})",
        "",
        f"kept {len(t.kept)}, {'would delete' if t.dry_run else 'deleted'} {len(t.deleted)}"
        f" (GFS {settings.backup.keep_daily} daily / {settings.backup.keep_weekly} weekly / "
        f"{settings.backup.keep_monthly} monthly, both regions)",
    ]
    lines += [f"- `{k}`" for k in t.deleted[:MAX_KEYS_IN_MARKDOWN]]
    return "\n".join(lines)


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


def replica_copies(
    settings: Settings, entries: list[CatalogEntry], listing: BackupListing, keys: set[str], wait: float
) -> set[str]:
    """Which of these dumps the replica region holds with their manifests (waiting up to `wait` s)."""
    expected: dict[str, int] = {}
    for entry in entries:
        if entry.key in keys:
            mkey = manifest_key(entry.key)
            expected[entry.key] = entry.bytes
            expected[mkey] = listing.manifest_sizes.get(mkey, -1)
    if not expected:
        return set()
    present: set[str] = wait_for_replica(settings, expected, wait)
    return {k for k in present if k.endswith(".dump") and manifest_key(k) in present}


def _table(report: BackupReport) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    r = report.replication
    for finding, keys in (
        ("missing", r.missing),
        ("extra", r.extra),
        ("size_mismatch", r.size_mismatch),
        ("checksum_mismatch", r.checksum_mismatch),
        ("pending", r.pending),
        ("unverified", report.unverified),
    ):
        rows += [{"finding": finding, "key": k, "since": report.since.get(k, "")} for k in keys]
    return rows[:500]
