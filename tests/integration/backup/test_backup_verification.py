"""backup-verification against the sandbox: every replication fault class, backup + restore from the
replica region, a restore whose row count differs, a crash between upload and manifest, retention on a
synthetic calendar, and flat memory while streaming a dump much larger than one part."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg import sql

from flows.backup_verification import backup_verification
from scaleops.core.clients import postgres_dsn, s3_bucket, s3_client
from scaleops.core.reporting import PROBLEMS_FOUND, ProblemsFound, report_of
from scaleops.core.settings import load_settings
from tasks.backup.dump import Manifest, dump_key, dump_to_s3, manifest_key, server_conninfo
from tasks.backup.replication import check_replication, wait_for_objects
from tasks.backup.restore import restore_and_check
from tasks.backup.retention import gfs_keep
from tasks.common.s3 import list_objects, put_json, upload_stream

pytestmark = pytest.mark.integration
MIB = 1024 * 1024


@pytest.fixture
def prefix(sandbox_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> str:
    value = f"tests/backup/{uuid.uuid4().hex[:12]}/"
    monkeypatch.setenv("SCALEOPS_BACKUP__PREFIX", value)
    monkeypatch.setenv("SCALEOPS_BACKUP__RESTORE_WAIT_SECONDS", "30")
    return value


@pytest.fixture(scope="module")
def database(sandbox_env: dict[str, str]) -> Iterator[str]:
    """A database with tables of known size: single and compound primary keys, and an empty one."""
    settings = load_settings()
    name = f"scaleops_test_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(postgres_dsn(settings), autocommit=True) as conn:
        conn.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
    with psycopg.connect(postgres_dsn(settings), dbname=name, autocommit=True) as conn:
        conn.execute("create table items (id bigint primary key, label text not null)")
        conn.execute("insert into items select g, 'item ' || g from generate_series(1, 1500) g")
        conn.execute("create table pairs (a int, b text, n int, primary key (a, b))")
        conn.execute("insert into pairs select g, 'x', g from generate_series(1, 300) g")
        conn.execute("create table empty_keys (id bigint primary key)")  # a queue drained to nothing
    yield name
    with psycopg.connect(postgres_dsn(settings), autocommit=True) as conn:
        conn.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name)))


def clients() -> tuple[Any, str, Any, str]:
    settings = load_settings()
    return (
        s3_client(settings, "primary"),
        s3_bucket(settings, "primary"),
        s3_client(settings, "replica"),
        s3_bucket(settings, "replica"),
    )


def wait_replicated(keys: dict[str, int]) -> None:
    _, _, replica, replica_bucket = clients()
    found = wait_for_objects(replica, replica_bucket, keys, timeout=60, interval=0.3)
    assert found == set(keys), f"not replicated: {sorted(set(keys) - found)}"


def multipart_put(client: Any, bucket: str, key: str, body: bytes, part_size: int) -> None:
    upload_stream(client, bucket, key, io.BytesIO(body), part_size=part_size)


def scratch_databases() -> set[str]:
    with psycopg.connect(postgres_dsn(load_settings()), autocommit=True) as conn:
        rows = conn.execute("select datname from pg_database where datname like 'scaleops_restore_%'")
        return {r[0] for r in rows.fetchall()}


# ------------------------------------------------------------------------------------------------ replication
def test_each_replication_fault_class_is_found_and_other_part_sizes_are_not(prefix: str) -> None:
    primary, primary_bucket, replica, replica_bucket = clients()
    objects = {
        "deleted": os.urandom(1000),
        "extra": b"",
        "grown": os.urandom(1000),
        "corrupted": os.urandom(4096),
        "corrupted_multipart": os.urandom(11 * MIB),
        "other_part_size": os.urandom(12 * MIB),  # 5 MiB parts; the replicator copies it in 8 MiB parts
        "checksummed_copy": os.urandom(11 * MIB),  # copied below in 6 MiB parts with its full-object checksum
        "healthy": os.urandom(2000),
    }
    for name, body in objects.items():
        if name == "extra":
            continue
        key = prefix + name
        if len(body) > 5 * MIB:
            multipart_put(primary, primary_bucket, key, body, 5 * MIB)
        else:
            primary.put_object(Bucket=primary_bucket, Key=key, Body=body)
    wait_replicated({prefix + n: len(b) for n, b in objects.items() if n != "extra"})
    # a replica copied in 8 MiB parts *without* a full-object checksum (what boto3's managed copy makes,
    # and any object uploaded before the backup step wrote checksums): only hashing can decide it
    from boto3.s3.transfer import TransferConfig

    replica.copy(
        {"Bucket": primary_bucket, "Key": prefix + "other_part_size"},
        replica_bucket,
        prefix + "other_part_size",
        SourceClient=primary,
        Config=TransferConfig(multipart_threshold=8 * MIB, multipart_chunksize=8 * MIB),
    )
    unsummed = replica.head_object(
        Bucket=replica_bucket, Key=prefix + "other_part_size", ChecksumMode="ENABLED"
    )
    assert not any(k.startswith("Checksum") and k != "ChecksumType" for k in unsummed)
    listed = list_objects(replica, replica_bucket, prefix)
    source = list_objects(primary, primary_bucket, prefix)
    assert listed[prefix + "other_part_size"].etag != source[prefix + "other_part_size"].etag

    # damage the replica region the ways it really goes wrong
    replica.delete_object(Bucket=replica_bucket, Key=prefix + "deleted")
    replica.put_object(Bucket=replica_bucket, Key=prefix + "extra", Body=b"only here")
    replica.put_object(Bucket=replica_bucket, Key=prefix + "grown", Body=objects["grown"] + b"more")
    flipped = bytes([objects["corrupted"][0] ^ 0xFF]) + objects["corrupted"][1:]
    replica.put_object(Bucket=replica_bucket, Key=prefix + "corrupted", Body=flipped)
    bad = objects["corrupted_multipart"][:-1] + b"\0"
    multipart_put(replica, replica_bucket, prefix + "corrupted_multipart", bad, 6 * MIB)
    # a healthy copy in other parts that, like the backup step's uploads, carries S3's full-object checksum
    # (the sandbox replicator's copies carry none: "other_part_size" above)
    multipart_put(replica, replica_bucket, prefix + "checksummed_copy", objects["checksummed_copy"], 6 * MIB)
    for name in ("corrupted_multipart", "checksummed_copy"):
        copies = [
            c.head_object(Bucket=b, Key=prefix + name, ChecksumMode="ENABLED")
            for c, b in ((primary, primary_bucket), (replica, replica_bucket))
        ]
        assert copies[0]["ETag"] != copies[1]["ETag"]
        assert all(c["ChecksumType"] == "FULL_OBJECT" and c["ChecksumCRC32"] for c in copies)

    # a new object, copied and then lost: pending while younger than the SLA, missing after. It goes in
    # 3 s after the newest object above by S3's own timestamps (which the check compares), no sooner
    newest = max(o.last_modified for o in source.values())
    time.sleep(max(0.0, (newest + timedelta(seconds=3) - datetime.now(UTC)).total_seconds()))
    primary.put_object(Bucket=primary_bucket, Key=prefix + "new", Body=b"fresh")
    wait_replicated({prefix + "new": 5})
    replica.delete_object(Bucket=replica_bucket, Key=prefix + "new")
    new_time = list_objects(primary, primary_bucket, prefix + "new")[prefix + "new"].last_modified

    diff = check_replication(
        primary,
        primary_bucket,
        replica,
        replica_bucket,
        prefix,
        now=new_time + timedelta(seconds=1),
        sla_seconds=2.5,
        deep_sample=1.0,
    )
    assert diff.objects_checked == 8
    assert diff.missing == [prefix + "deleted"]
    assert diff.extra == [prefix + "extra"]
    assert diff.size_mismatch == [prefix + "grown"]
    assert diff.checksum_mismatch == [prefix + "corrupted", prefix + "corrupted_multipart"]
    assert diff.pending == [prefix + "new"]
    # other part size without a checksum on the replica: decided by hashing both, not flagged; other part
    # sizes with full-object checksums on both sides: decided by the checksums (the corrupted one flagged,
    # the healthy copy not), neither downloaded; healthy: equal ETags, deep-sampled
    assert diff.to_hash == [prefix + "other_part_size"]
    assert diff.by_checksum == [prefix + "checksummed_copy", prefix + "corrupted_multipart"]
    assert diff.sampled == [prefix + "healthy"]

    # the same bucket state through the flow, once "new" is older than a 2 s SLA
    time.sleep(max(0.0, (new_time + timedelta(seconds=3) - datetime.now(UTC)).total_seconds()))
    os.environ["SCALEOPS_BACKUP__REPLICATION_SLA_SECONDS"] = "2"
    try:
        state = backup_verification(
            databases=["none"], take_backup=False, restore_test=False, deep_sample=0.0, return_state=True
        )
    finally:
        del os.environ["SCALEOPS_BACKUP__REPLICATION_SLA_SECONDS"]
    assert state.is_failed() and state.name == PROBLEMS_FOUND and "problems found: " in state.message
    report = report_of(state)
    assert report is not None and not report.ok
    assert report.replication.missing == [prefix + "deleted", prefix + "new"]
    assert report.replication.checksum_mismatch == [prefix + "corrupted", prefix + "corrupted_multipart"]
    assert prefix + "other_part_size" not in report.replication.checksum_mismatch
    assert report.replication.hashed == 1 and report.replication.by_checksum == 2
    assert any("missing from s3://" in p for p in report.problems)


# ------------------------------------------------------------------------------------------ backup/restore
def test_backup_then_restore_from_the_replica_region_passes_and_drops_the_scratch_db(
    prefix: str, database: str
) -> None:
    before = scratch_databases()
    report = backup_verification(databases=[database], deep_sample=1.0)
    assert report.ok, report.problems
    (backup,) = report.backups
    assert backup.key.startswith(f"{prefix}{database}/") and backup.bytes > 0
    (restore,) = report.restore
    assert restore.backup_key == backup.key and restore.scratch_database.startswith("scaleops_restore_")
    assert restore.checks_failed == []
    assert "public.items: row count = 1500" in restore.checks_passed
    assert "public.pairs(a, b): unique" in restore.checks_passed
    assert "public.empty_keys: row count = 0" in restore.checks_passed
    assert "public.empty_keys: primary key (empty table, nothing to check)" in restore.checks_passed
    assert restore.dropped and scratch_databases() == before
    assert report.rpo_seconds is not None and report.rto_seconds == restore.seconds
    assert report.newest_verified == {database: backup.key}
    assert report.replica_lag and report.replica_lag[0].state == "streaming"

    # the manifest the replica region holds now disagrees with the dump: the check fails, db dropped
    _, _, replica, replica_bucket = clients()
    mkey = manifest_key(backup.key)
    manifest = json.loads(replica.get_object(Bucket=replica_bucket, Key=mkey)["Body"].read())
    for table in manifest["tables"]:
        if table["name"] == "items":
            table["rows"] = 1499
    put_json(replica, replica_bucket, mkey, manifest)
    settings = load_settings()
    result = restore_and_check(
        server_conninfo(settings, "restore"),
        replica,
        replica_bucket,
        database,
        backup.key,
        f"scaleops_restore_{database}_rowcount",
    )
    assert result.checks_failed == ["public.items: row count = 1499 (observed 1500)"]
    assert result.dropped and scratch_databases() == before


def test_restore_refuses_the_source_database(prefix: str, database: str) -> None:
    _, _, replica, replica_bucket = clients()
    with pytest.raises(ValueError, match="refusing to restore"):
        restore_and_check(
            server_conninfo(load_settings(), "restore"), replica, replica_bucket, database, "x.dump", database
        )


def test_crash_between_upload_and_manifest_leaves_an_unverified_backup(prefix: str, database: str) -> None:
    settings = load_settings()
    primary, primary_bucket, _, _ = clients()
    good = dump_key(prefix, database, datetime.now(UTC))
    dump_to_s3(
        server_conninfo(settings, "primary"), database, primary, primary_bucket, good, part_size=5 * MIB
    )

    def crash(manifest: Manifest) -> None:
        raise RuntimeError("killed before the manifest")

    orphan = dump_key(prefix, database, datetime.now(UTC) + timedelta(seconds=1))
    with pytest.raises(RuntimeError, match="killed"):
        dump_to_s3(
            server_conninfo(settings, "primary"),
            database,
            primary,
            primary_bucket,
            orphan,
            part_size=5 * MIB,
            write_manifest=crash,
        )
    assert orphan in list_objects(primary, primary_bucket, prefix)  # the dump object is there...
    with pytest.raises(ProblemsFound) as found:  # a direct call of a run that finds problems raises
        backup_verification(databases=[database], take_backup=False, restore_test=False)
    report = found.value.report
    assert report.newest_verified == {database: good}  # ...but it does not count
    assert report.unverified == [orphan]
    assert any(orphan in p and "no manifest" in p for p in report.problems)
    assert not report.ok


# ------------------------------------------------------------------------------------------------ retention
def test_gfs_retention_on_a_synthetic_calendar_dry_run_then_both_regions(
    prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SCALEOPS_BACKUP__KEEP_DAILY", "7")
    monkeypatch.setenv("SCALEOPS_BACKUP__KEEP_WEEKLY", "4")
    monkeypatch.setenv("SCALEOPS_BACKUP__KEEP_MONTHLY", "3")
    primary, primary_bucket, replica, replica_bucket = clients()
    start = datetime(2026, 6, 1, 2, 0, tzinfo=UTC)
    times = {}
    expected: dict[str, int] = {}
    for day in range(120):  # one nightly backup for 120 days
        taken = start + timedelta(days=day)
        key = dump_key(prefix, "calendar", taken)
        body = f"dump {day}".encode()
        primary.put_object(Bucket=primary_bucket, Key=key, Body=body)
        manifest = Manifest(
            database="calendar",
            key=key,
            server_version="15",
            started_at=taken,
            finished_at=taken + timedelta(minutes=1),
            bytes=len(body),
            sha256="0" * 64,
            etag="",
            parts=1,
        )
        put_json(primary, primary_bucket, manifest_key(key), manifest.model_dump(mode="json"))
        times[key] = taken
        expected[key] = len(body)
    orphan = dump_key(prefix, "calendar", start + timedelta(days=100, hours=3))  # failed attempt
    primary.put_object(Bucket=primary_bucket, Key=orphan, Body=b"half")
    expected[orphan] = 4
    wait_replicated(expected)
    as_of = start + timedelta(days=119, hours=1)
    keep = gfs_keep(times, daily=7, weekly=4, monthly=3)

    def newest_of_periods(period: Any, count: int) -> set[str]:
        groups: dict[Any, list[str]] = {}
        for key, taken in times.items():
            groups.setdefault(period(taken), []).append(key)
        return {max(groups[p], key=lambda k: times[k]) for p in sorted(groups, reverse=True)[:count]}

    assert keep == (
        newest_of_periods(lambda t: t.date(), 7)
        | newest_of_periods(lambda t: t.isocalendar()[:2], 4)
        | newest_of_periods(lambda t: (t.year, t.month), 3)
    )
    assert len(keep) == 11  # 28 Sep 2026 is a Monday: 7 days span 2 weeks; 2 more Sundays; Aug 31, Jul 31

    dry = backup_verification(
        as_of=as_of, databases=["calendar"], take_backup=False, restore_test=False, apply_retention=True
    )
    assert dry.retention.dry_run and sorted(dry.retention.kept) == sorted(keep)
    assert sorted(dry.retention.deleted) == sorted((set(times) - keep) | {orphan})
    assert len(list_objects(replica, replica_bucket, prefix)) == 241  # nothing deleted on a dry run

    applied = backup_verification(
        as_of=as_of,
        databases=["calendar"],
        take_backup=False,
        restore_test=False,
        apply_retention=True,
        dry_run=False,
    )
    assert not applied.retention.dry_run and applied.retention.deleted == dry.retention.deleted
    newest = max(times, key=lambda k: times[k])
    assert newest in applied.retention.kept
    for client, bucket in ((primary, primary_bucket), (replica, replica_bucket)):
        left = set(list_objects(client, bucket, prefix))
        assert left == keep | {manifest_key(k) for k in keep}


# ------------------------------------------------------------------------------------------------ memory
CHILD = r"""
import json, sys
from pathlib import Path
from scaleops.core.settings import load_settings
from scaleops.core.clients import s3_client, s3_bucket
from tasks.backup.dump import dump_to_s3, server_conninfo

def status_kib(field):
    line = next(l for l in Path("/proc/self/status").read_text().splitlines() if l.startswith(field + ":"))
    return int(line.split()[1])

settings = load_settings()
client, bucket = s3_client(settings), s3_bucket(settings)
client.list_objects_v2(Bucket=bucket, MaxKeys=1)
Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to the current RSS
before = status_kib("VmRSS")
conninfo = server_conninfo(settings, "primary")
m = dump_to_s3(conninfo, sys.argv[1], client, bucket, sys.argv[2], part_size=5 * 1024 * 1024)
after = status_kib("VmHWM")
print(json.dumps({"before_kib": before, "after_kib": after, "bytes": m.bytes, "parts": m.parts}))
"""


def test_streaming_a_dump_keeps_memory_flat(prefix: str) -> None:
    """A 64 MiB incompressible dump through 5 MiB parts: peak RSS grows by a few parts, not the dump."""
    settings = load_settings()
    name = f"scaleops_test_big_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(postgres_dsn(settings), autocommit=True) as conn:
        conn.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
    try:
        with psycopg.connect(postgres_dsn(settings), dbname=name, autocommit=True) as conn:
            conn.execute("create table blobs (id int primary key, b bytea)")
            conn.execute("alter table blobs alter column b set storage external")  # no TOAST compression
            with conn.cursor().copy("copy blobs (id, b) from stdin") as copy:
                for i in range(64):
                    copy.write_row((i, os.urandom(MIB)))
        key = dump_key(prefix, name, datetime.now(UTC))
        out = subprocess.run(
            [sys.executable, "-c", CHILD, name, key], capture_output=True, text=True, timeout=300, check=False
        )
        assert out.returncode == 0, out.stderr[-3000:]
        facts = json.loads(out.stdout.strip().splitlines()[-1])
        assert facts["bytes"] > 64 * MIB and facts["parts"] >= 13
        growth_mib = (facts["after_kib"] - facts["before_kib"]) / 1024
        print(f"peak RSS growth {growth_mib:.1f} MiB for a {facts['bytes'] / MIB:.0f} MiB dump")
        assert growth_mib < 32, f"peak RSS grew {growth_mib:.0f} MiB while streaming a 64 MiB dump"
    finally:
        with psycopg.connect(postgres_dsn(settings), autocommit=True) as conn:
            conn.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name)))
