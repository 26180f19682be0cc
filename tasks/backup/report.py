"""The backup-verification report: its model, how replication findings become problems, and its
markdown and table artifacts."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from scaleops.core.reporting import DutyReport
from scaleops.core.settings import Settings
from tasks.backup.dump import BackupRecord
from tasks.backup.lag import ReplicaLag
from tasks.backup.replication import ReplicationReport
from tasks.backup.restore import RestoreResult
from tasks.backup.retention import RetentionReport

MAX_KEYS_IN_MARKDOWN = 25


class BackupReport(DutyReport):
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

    def outcome(self) -> str:
        return "verified" if self.ok else "drift"

    def resource_id(self, settings: Settings) -> str:
        return f"scaleops.backup.{settings.s3.primary_bucket}.{settings.backup.prefix.rstrip('/')}"

    def markdown(self, settings: Settings) -> str:
        return render_markdown(self, settings)

    def table(self) -> list[dict[str, Any]]:
        return _table(self)


def render_markdown(report: BackupReport, settings: Settings) -> str:
    s3 = settings.s3
    status = "all backups verified" if report.ok else "PROBLEMS FOUND"
    lines = [f"# Backup verification: {status}", ""]
    lines.append(f"as of `{report.as_of.isoformat()}` · databases: {', '.join(report.databases)}")
    lines.append(
        f"· primary `s3://{s3.primary_bucket}` ({s3.primary_region}) · replica `s3://{s3.replica_bucket}` "
        f"({s3.replica_region}) · prefix `{settings.backup.prefix}`"
    )
    rpo = "no verified backup"
    if report.rpo_seconds is not None:  # in the target's unit too: 93600 s is 26.0 h
        hours = f" ({report.rpo_seconds / 3600:.1f} h)" if report.rpo_seconds >= 3600 else ""
        rpo = f"{report.rpo_seconds:.0f} s{hours}"
    rto = f"{report.rto_seconds:.1f} s" if report.rto_seconds is not None else "no restore"
    lag = report.replication.lag_seconds
    target, sla = settings.backup.rpo_target_seconds, settings.backup.replication_sla_seconds
    lines += [
        "",
        f"**RPO** {rpo} (target {duration(target)}) · **RTO** {rto} · **S3 replication lag** "
        f"{f'{lag:.1f} s' if lag is not None else 'n/a'} (SLA {duration(sla)})",
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
            "| database | key | size (GiB) | size (bytes) | sha256 | took (s) |",
            "|---|---|---|---|---|---|",
        ]
        for b in report.backups:
            seconds = (b.finished_at - b.started_at).total_seconds()
            lines.append(
                f"| {b.database} | `{b.key}` | {b.bytes / 1024**3:.2f} | {b.bytes:,} | `{b.sha256[:16]}…` "
                f"| {seconds:.1f} |"
            )
    if report.newest_verified:
        lines += ["", "## Newest verified backup", ""]
        lines += [f"- {db}: `{key}`" for db, key in sorted(report.newest_verified.items())]
    r = report.replication
    lines += [
        "",
        "## Replication",
        "",
        f"{r.objects_checked} object(s) checked from listings; {r.by_checksum} compared by S3's full-object "
        f"checksums; {r.hashed} hashed in both regions ({r.sampled} as deep sample); "
        f"pending within SLA: {len(r.pending)}.",
    ]
    for x in report.restore:
        verdict = "passed" if not x.checks_failed else "FAILED"
        lines += [
            "",
            f"## Restore test {x.database}: {verdict}",
            "",
            f"`{x.backup_key}` from the replica region into `{x.scratch_database}` "
            f"(restore {'n/a' if x.seconds is None else f'{x.seconds} s'}, "
            f"checks {'n/a' if x.checks_seconds is None else f'{x.checks_seconds} s'}; "
            f"scratch database {'dropped' if x.dropped else 'NOT dropped: drop it by hand'}).",
            "",
        ]
        lines += [f"- failed: {c}" for c in x.checks_failed]
        lines.append(f"- passed: {len(x.checks_passed)} check(s)")
    if report.replica_lag:
        lines += [
            "",
            "## PostgreSQL streaming replica",
            "",
            "| replica | state | behind (bytes of WAL) | replay lag (s) |",
            "|---|---|---|---|",
        ]
        for replica in report.replica_lag:
            behind = "n/a" if replica.bytes is None else f"{replica.bytes:,}"
            replay = "n/a" if replica.seconds is None else f"{replica.seconds:.1f}"
            lines.append(f"| {replica.application_name} | {replica.state} | {behind} | {replay} |")
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


def duration(seconds: float) -> str:
    """900 -> '900 s', 93600 -> '26 h' (whole hours above an hour)."""
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:g} h"
    return f"{seconds:g} s"


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
