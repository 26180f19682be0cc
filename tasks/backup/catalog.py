"""The backup catalog (duty backup-verification): dump keys, which backups are verified, which the
replica region holds, and which one a restore test uses."""

from __future__ import annotations

import re
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import boto3  # noqa: F401 - imported once here, not first inside concurrent task threads
from pydantic import BaseModel, Field

from scaleops.core.clients import S3Region, s3_bucket, s3_client
from scaleops.core.reporting import run_logger
from scaleops.core.retry import io_task
from scaleops.core.settings import Settings
from tasks.backup.dump import Manifest, manifest_key
from tasks.backup.replication import wait_for_replica
from tasks.common.s3 import ObjectInfo, get_json, list_objects

if TYPE_CHECKING:
    from tasks.backup.report import BackupReport


class BackupListing(BaseModel):
    """Backup objects under the prefix in one region: dumps and manifests from a listing, plus each
    manifest's content (one small GET per backup, never per data object)."""

    dumps: dict[str, ObjectInfo] = Field(default_factory=dict)
    manifests: dict[str, dict[str, Any]] = Field(default_factory=dict, description="manifest key -> content")
    unreadable: dict[str, str] = Field(default_factory=dict, description="manifest key -> why")
    manifest_sizes: dict[str, int] = Field(default_factory=dict, description="manifest key -> bytes")


def list_backups(client: Any, bucket: str, prefix: str) -> BackupListing:
    objects = list_objects(client, bucket, prefix)
    listing = BackupListing(dumps={k: o for k, o in objects.items() if k.endswith(".dump")})
    manifest_keys = [k for k in objects if k.endswith(".manifest.json")]
    listing.manifest_sizes = {k: objects[k].size for k in manifest_keys}
    with ThreadPoolExecutor(max_workers=8) as pool:

        def read(key: str) -> tuple[str, dict[str, Any] | str]:
            try:
                return key, get_json(client, bucket, key)
            except (ValueError, UnicodeDecodeError) as exc:  # a corrupt manifest is a finding, not a crash
                return key, f"{type(exc).__name__}: {exc}"

        for key, content in pool.map(read, manifest_keys):
            if isinstance(content, dict):
                listing.manifests[key] = content
            else:
                listing.unreadable[key] = content
    return listing


@io_task(task_run_name="s3-list-backups-{region}")
def backup_listing(settings: Settings, region: S3Region) -> BackupListing:
    return list_backups(s3_client(settings, region), s3_bucket(settings, region), settings.backup.prefix)


DUMP_KEY = re.compile(r"^(?P<db>.+)-(?P<ts>\d{8}T\d{6}(?:\.\d{6})?)Z\.dump$")


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


def read_catalog(
    settings: Settings, listing: BackupListing, databases: list[str], clock: datetime, report: BackupReport
) -> list[CatalogEntry]:
    """The primary region's backups of these databases; record the newest verified one of each and
    every unverified dump (a problem when it is newer than the newest verified one)."""
    prefix = settings.backup.prefix
    entries, findings = build_catalog(prefix, listing)
    for finding in findings:
        report.problem(finding)
    mine = [e for e in entries if e.database in databases]
    for database in databases:
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
    run_logger().info("catalog: %d backup(s), %d verified", len(entries), sum(e.verified for e in entries))
    return mine


def measure_rpo(
    settings: Settings, entries: list[CatalogEntry], clock: datetime, report: BackupReport
) -> None:
    """RPO: how old the oldest of the databases' newest verified backups is at `clock`."""
    finished = [
        e.manifest.finished_at
        for e in entries
        if e.manifest is not None and e.key in report.newest_verified.values()
    ]
    if finished and len(finished) == len(report.databases):
        report.rpo_seconds = round(max(0.0, max((clock - f).total_seconds() for f in finished)), 3)
        target = settings.backup.rpo_target_seconds
        if report.rpo_seconds > target:
            report.problem(f"RPO {report.rpo_seconds:.0f} s is over the target of {target:.0f} s")
