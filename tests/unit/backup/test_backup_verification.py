"""backup-verification's plain logic: the listing diff, GFS retention, the catalog, names and guards."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from flows.backup_verification import backup_verification
from scaleops.cli.runner import BadInput, check_params
from scaleops.core.reporting import as_datetime
from scaleops.core.settings import Settings
from tasks.backup.catalog import BackupListing, build_catalog, parse_dump_key
from tasks.backup.dump import Manifest, check_databases, dump_key, libpq_target, manifest_key
from tasks.backup.replication import diff_listings, is_plain_md5
from tasks.backup.report import BackupReport, render_markdown
from tasks.backup.restore import guard_scratch, scratch_name
from tasks.backup.retention import gfs_keep, plan_retention
from tasks.common.s3 import ObjectInfo, upload_stream

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
MD5_A, MD5_B = "a" * 32, "b" * 32


def obj(key: str, size: int = 10, etag: str = MD5_A, age: float = 3600) -> ObjectInfo:
    return ObjectInfo(key=key, size=size, etag=etag, last_modified=NOW - timedelta(seconds=age))


def test_diff_decides_from_listings_and_names_what_needs_hashing() -> None:
    primary = {
        k.key: k
        for k in (
            obj("same"),
            obj("gone"),
            obj("young", age=5),
            obj("grown"),
            obj("md5s_differ"),
            obj("multipart", etag="c" * 32 + "-3"),
        )
    }
    replica = {
        k.key: k
        for k in (
            obj("same"),
            obj("grown", size=11),
            obj("md5s_differ", etag=MD5_B),
            obj("multipart", etag="d" * 32 + "-2"),
            obj("extra"),
        )
    }
    diff = diff_listings(primary, replica, now=NOW, sla_seconds=60, deep_sample=1.0)
    assert diff.missing == ["gone"]
    assert diff.pending == ["young"]
    assert diff.size_mismatch == ["grown"]
    assert diff.checksum_mismatch == ["md5s_differ"]
    assert diff.to_hash == ["multipart"]  # another part size is not a finding by itself
    assert diff.extra == ["extra"]
    assert diff.sampled == ["same"]
    assert diff.lag_seconds == pytest.approx(5)  # the newest ("young") is not copied yet: its age
    assert diff.since["gone"] == NOW - timedelta(hours=1)


def test_deep_sample_takes_a_fraction_rounded_up_and_is_reproducible() -> None:
    primary = {f"k{i}": obj(f"k{i}") for i in range(1000)}
    first = diff_listings(primary, dict(primary), now=NOW, sla_seconds=60, deep_sample=0.01, seed=7)
    again = diff_listings(primary, dict(primary), now=NOW, sla_seconds=60, deep_sample=0.01, seed=7)
    assert len(first.sampled) == 10 and first.sampled == again.sampled
    assert diff_listings(primary, dict(primary), now=NOW, sla_seconds=60).sampled == []
    assert first.lag_seconds == 0.0


def test_plain_md5_etags_are_told_from_multipart_ones() -> None:
    assert is_plain_md5("0cc175b9c0f1b6a831c399e269772661")
    assert not is_plain_md5("0cc175b9c0f1b6a831c399e269772661-2")


def test_gfs_keeps_days_weeks_months_on_a_synthetic_calendar() -> None:
    start = datetime(2025, 1, 1, 1, tzinfo=UTC)
    times = {f"b{d:03d}": start + timedelta(days=d) for d in range(365)}  # nightly for a year
    times["b364-second"] = times["b364"] + timedelta(hours=5)  # two on the last day
    keep = gfs_keep(times, daily=7, weekly=4, monthly=12)
    days = {times[k].date() for k in keep}
    assert "b364-second" in keep and "b364" not in keep  # the newest of a day stands for the day
    assert {date(2025, 12, 31) - timedelta(days=i) for i in range(7)} <= days
    month_ends = {date(2025, m + 1, 1) - timedelta(days=1) for m in range(1, 12)} | {date(2025, 12, 31)}
    assert month_ends <= days
    assert len(keep) == len(days) <= 7 + 4 + 12
    assert gfs_keep(times, daily=0, weekly=0, monthly=0) == set()


def entry_listing(prefix: str, db: str, stamps: list[datetime], orphans: list[datetime]) -> BackupListing:
    listing = BackupListing()
    for when in stamps + orphans:
        key = dump_key(prefix, db, when)
        listing.dumps[key] = ObjectInfo(key=key, size=3, etag=MD5_A, last_modified=when)
        if when in stamps:
            manifest = Manifest(
                database=db,
                key=key,
                server_version="15",
                started_at=when,
                finished_at=when,
                bytes=3,
                sha256="0" * 64,
                etag=MD5_A,
                parts=1,
            )
            listing.manifests[manifest_key(key)] = manifest.model_dump(mode="json")
    return listing


def test_retention_never_deletes_the_newest_verified_and_sweeps_superseded_orphans() -> None:
    days = [NOW - timedelta(days=d) for d in range(30)]
    old_orphan, new_orphan = NOW - timedelta(days=3, hours=1), NOW + timedelta(minutes=5)
    listing = entry_listing("p/", "db", days, [old_orphan, new_orphan])
    entries, findings = build_catalog("p/", listing)
    assert findings == []
    kept, delete = plan_retention(entries, ["db"], until=NOW, daily=0, weekly=0, monthly=0)
    assert kept == [dump_key("p/", "db", NOW)]  # the newest verified, whatever the counts say
    assert dump_key("p/", "db", old_orphan) in delete
    assert dump_key("p/", "db", new_orphan) not in delete + kept  # may be a backup in progress
    kept, delete = plan_retention(
        entries, ["db"], until=NOW - timedelta(days=10), daily=2, weekly=0, monthly=0
    )
    assert dump_key("p/", "db", NOW) in kept  # newer than as_of: never touched


def test_catalog_counts_only_dumps_whose_manifest_agrees() -> None:
    listing = entry_listing("p/", "db", [NOW], [NOW + timedelta(seconds=1)])
    key = dump_key("p/", "db", NOW)
    listing.dumps[key] = listing.dumps[key].model_copy(update={"size": 99})
    listing.manifests["p/db/db-20200101T000000Z.manifest.json"] = {"database": "db"}
    entries, findings = build_catalog("p/", listing)
    assert [e.verified for e in entries] == [False, False]
    assert "no manifest" in (entries[0].why_unverified or "")
    assert "object has 99" in (entries[1].why_unverified or "")
    assert findings == ["manifest p/db/db-20200101T000000Z.manifest.json has no dump object"]


def test_dump_keys_round_trip_and_scratch_names_fit_postgres() -> None:
    key = dump_key("backups/", "my-db", NOW)
    assert key == "backups/my-db/my-db-20261127T120000.000000Z.dump"
    assert parse_dump_key("backups/", key) == ("my-db", NOW)
    assert parse_dump_key("backups/", "backups/other/my-db-20261127T120000Z.dump") is None
    name = scratch_name("x" * 80, NOW)
    assert len(name) <= 63 and name.startswith("scaleops_restore_x") and name.endswith("_20261127120000")


def test_restore_refuses_the_source_and_non_scratch_databases() -> None:
    dsn = "postgresql://u:pw@h:5432/postgres"
    guard_scratch("scaleops_restore_app_1", "app", dsn)
    for bad, source in (("app", "app"), ("postgres", "app"), ("other", "app")):
        with pytest.raises(ValueError, match="refusing to restore"):
            guard_scratch(bad, source, dsn)


def test_pg_tools_get_no_password_on_the_command_line() -> None:
    target, env = libpq_target("postgresql://u:s3cret@h:5432/postgres?sslmode=prefer", "app")
    assert "s3cret" not in target and "dbname=app" in target and env["PGPASSWORD"] == "s3cret"


def test_as_of_partitions_and_database_names() -> None:
    assert as_datetime(date(2026, 11, 26)) == datetime(2026, 11, 26, tzinfo=UTC)
    assert as_datetime(datetime(2026, 1, 1)) == datetime(2026, 1, 1, tzinfo=UTC)
    assert check_databases(["a", "b", "a"]) == ["a", "b"]
    with pytest.raises(ValueError, match="databases"):
        check_databases(["scaleops_restore_x"])


def test_parameters_are_validated_before_a_run() -> None:
    check_params(backup_verification, "backup-verification", {"deep_sample": 0.5, "dry_run": False})
    with pytest.raises(BadInput, match="deep_sample"):
        check_params(backup_verification, "backup-verification", {"deep_sample": 2})
    with pytest.raises(BadInput, match="unknown"):
        check_params(backup_verification, "backup-verification", {"sample": 0.5})


def test_markdown_says_what_is_wrong_where_and_since_when() -> None:
    report = BackupReport(databases=["app"])
    report.replication.missing = ["backups/app/app-1.dump"]
    report.since["backups/app/app-1.dump"] = "2026-11-26T01:00:00+00:00"
    report.problem("1 object(s) missing from s3://replica (us-west-2): backups/app/app-1.dump")
    text = render_markdown(report, Settings())
    assert "PROBLEMS FOUND" in text and "## What is wrong" in text and "How to act" in text
    assert "| missing | `backups/app/app-1.dump` | 2026-11-26T01:00:00+00:00 |" in text


class FakeS3:
    """Records multipart calls; fails the part numbered `fail_part`."""

    def __init__(self, fail_part: int = 0):
        self.fail_part = fail_part
        self.parts: dict[int, int] = {}
        self.aborted = False
        self.completed: list[dict[str, object]] = []
        self.created: dict[str, object] = {}
        self.complete_args: dict[str, object] = {}

    def create_multipart_upload(self, **kwargs: object) -> dict[str, str]:
        self.created = kwargs
        return {"UploadId": "u1"}

    def upload_part(self, PartNumber: int, Body: bytes, **kwargs: object) -> dict[str, str]:  # noqa: N803
        if PartNumber == self.fail_part:
            raise ConnectionError("reset")
        assert kwargs["ChecksumAlgorithm"] == "CRC32"
        self.parts[PartNumber] = len(Body)
        return {"ETag": f'"e{PartNumber}"', "ChecksumCRC32": f"c{PartNumber}"}

    def complete_multipart_upload(self, MultipartUpload: dict, **kwargs: object) -> dict[str, str]:  # noqa: N803
        self.completed = MultipartUpload["Parts"]
        self.complete_args = kwargs
        return {"ETag": '"x-3"'}

    def abort_multipart_upload(self, **_: object) -> None:
        self.aborted = True

    def put_object(self, Body: bytes, **_: object) -> dict[str, str]:  # noqa: N803
        self.parts[0] = len(Body)
        return {"ETag": '"' + "f" * 32 + '"'}


def test_upload_stream_hashes_in_order_and_aborts_on_a_failed_part() -> None:
    import base64
    import hashlib
    import io
    import zlib

    data = bytes(range(256)) * 41  # 10,496 bytes: parts of 4096, 4096, 2304
    fake = FakeS3()
    done = upload_stream(fake, "b", "k", io.BytesIO(data), part_size=4096, in_flight=2)
    assert done.sha256 == hashlib.sha256(data).hexdigest() and done.bytes == len(data) and done.parts == 3
    assert fake.completed == [
        {"ETag": f'"e{n}"', "PartNumber": n, "ChecksumCRC32": f"c{n}"} for n in (1, 2, 3)
    ]
    # S3's full-object CRC32 (the same whatever the part sizes): asked at creation, the whole object's sent
    assert fake.created["ChecksumAlgorithm"] == "CRC32" and fake.created["ChecksumType"] == "FULL_OBJECT"
    whole = base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()
    assert (
        fake.complete_args["ChecksumType"] == "FULL_OBJECT" and fake.complete_args["ChecksumCRC32"] == whole
    )
    assert fake.parts == {1: 4096, 2: 4096, 3: 2304}

    small = FakeS3()
    done = upload_stream(small, "b", "k", io.BytesIO(data[:4095]), part_size=4096)
    assert small.parts == {0: 4095} and is_plain_md5(done.etag) and done.parts == 1  # one PUT

    failing = FakeS3(fail_part=2)
    with pytest.raises(ConnectionError):
        upload_stream(failing, "b", "k", io.BytesIO(data * 4), part_size=4096, in_flight=2)
    assert failing.aborted and failing.completed == []


def test_only_full_object_checksums_decide_a_pair() -> None:
    from tasks.backup.replication import full_object_checksum

    multipart = {"ETag": '"4d26-3"', "ChecksumType": "FULL_OBJECT", "ChecksumCRC32": "CoS9DQ=="}
    assert full_object_checksum(multipart) == ("ChecksumCRC32", "CoS9DQ==")
    single = {"ETag": '"9e107d9d372bb6826bd81d3542a419d6"', "ChecksumSHA256": "abc=", "ChecksumCRC32": "x=="}
    assert full_object_checksum(single) == ("ChecksumSHA256", "abc=")  # the strongest one
    # composite (of the parts: depends on part sizes), none stored, or a multipart ETag without a type
    assert (
        full_object_checksum({"ETag": '"a-3"', "ChecksumType": "COMPOSITE", "ChecksumSHA256": "s-3"}) is None
    )
    assert full_object_checksum({"ETag": '"a-3"', "ChecksumType": "FULL_OBJECT"}) is None
    assert full_object_checksum({"ETag": '"a-3"', "ChecksumCRC32": "CoS9DQ=="}) is None
