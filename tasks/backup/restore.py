"""Restore tests (duty backup-verification): restore a dump into a scratch database, check it with
great-expectations against its manifest, drop the scratch database."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import subprocess
import tempfile
import time
from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any

import psycopg  # imported once here, not first inside concurrent task threads
from psycopg import sql
from pydantic import BaseModel, Field

from scaleops.core.reporting import run_logger, utcnow
from scaleops.core.retry import io_task
from scaleops.core.settings import Settings
from tasks.backup.catalog import BackupListing, CatalogEntry, pick_restore_source, replica_copies
from tasks.backup.dump import (
    DumpFailed,
    Manifest,
    TableFacts,
    _stderr_tail,
    libpq_target,
    manifest_key,
    pg_tool,
    server_conninfo,
)

if TYPE_CHECKING:
    from tasks.backup.report import BackupReport

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------------ backups
# Duty backup-verification: dump, restore, check and measure. Plain functions, thin tasks at the end.

SCRATCH_PREFIX = "scaleops_restore_"


class CheckOutcome(BaseModel):
    passed: list[str] = Field(default_factory=list)
    failed: list[str] = Field(default_factory=list)


def scratch_name(database: str, when: datetime) -> str:
    """`scaleops_restore_<db>_<timestamp>`, cut to PostgreSQL's 63-byte identifier limit."""
    stamp = when.strftime("%Y%m%d%H%M%S")
    room = 63 - len(SCRATCH_PREFIX) - len(stamp) - 1
    return f"{SCRATCH_PREFIX}{database[:room]}_{stamp}"


def guard_scratch(scratch: str, source: str, restore_conninfo: str) -> None:
    """Refuse anything but a scratch database: never the source, never the server's own database."""
    from psycopg.conninfo import conninfo_to_dict

    own = conninfo_to_dict(restore_conninfo).get("dbname")
    if scratch in (source, own) or not scratch.startswith(SCRATCH_PREFIX):
        raise ValueError(f"refusing to restore into {scratch!r}: only {SCRATCH_PREFIX}* scratch databases")


def restore_stream(
    restore_conninfo: str,
    scratch: str,
    source: str,
    chunks: Iterable[bytes],
) -> tuple[str, int]:
    """Create `scratch`, feed the dump's chunks into `pg_restore` (streamed), return (SHA-256, bytes).

    The caller drops the scratch database (see `drop_database`), also when this raises.
    """
    guard_scratch(scratch, source, restore_conninfo)
    with psycopg.connect(restore_conninfo, autocommit=True) as conn:
        conn.execute(sql.SQL("create database {}").format(sql.Identifier(scratch)))
    target, env = libpq_target(restore_conninfo, scratch)
    hasher = hashlib.sha256()
    size = 0
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen(
            [pg_tool("pg_restore"), "--no-owner", "--no-acl", "--exit-on-error", "--dbname", target],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=errors,
            env=env,
        )
        assert proc.stdin is not None
        try:
            for chunk in chunks:
                hasher.update(chunk)
                size += len(chunk)
                proc.stdin.write(chunk)
        except BrokenPipeError:
            pass  # pg_restore stopped reading: its exit code and stderr say why
        finally:
            with contextlib.suppress(BrokenPipeError):
                proc.stdin.close()
            code = proc.wait()
        if code != 0:
            raise DumpFailed(f"pg_restore exited {code}: {_stderr_tail(errors)}")
    return hasher.hexdigest(), size


def drop_database(restore_conninfo: str, scratch: str, source: str) -> None:
    """Drop a scratch database (forcing other sessions off); refuses anything that is not scratch."""
    guard_scratch(scratch, source, restore_conninfo)
    with psycopg.connect(restore_conninfo, autocommit=True) as conn:
        conn.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(scratch)))


def expectation_checks(conninfo: str, dbname: str, tables: list[TableFacts]) -> CheckOutcome:
    """great-expectations on the restored database (SQL datasource: the checks run as queries).

    For every table of the manifest: it exists, its row count equals the manifest's, and its primary-key
    columns are non-null and unique (compound keys as a whole).
    """
    import great_expectations as gx
    import great_expectations.expectations as gxe
    from great_expectations.data_context.types.base import ProgressBarsConfig
    from psycopg.conninfo import conninfo_to_dict, make_conninfo
    from sqlalchemy.engine import URL

    outcome = CheckOutcome()
    if not tables:
        outcome.passed.append("the manifest lists no tables: nothing to compare")
        return outcome
    with psycopg.connect(conninfo, dbname=dbname, autocommit=True) as conn:
        present = {
            (s, n)
            for s, n in conn.execute(
                "select table_schema, table_name from information_schema.tables"
                " where table_schema not in ('pg_catalog', 'information_schema')"
            ).fetchall()
        }
    params = {k: str(v) for k, v in conninfo_to_dict(make_conninfo(conninfo, dbname=dbname)).items()}
    url = URL.create(
        "postgresql+psycopg",
        username=params.get("user"),
        password=params.get("password"),
        host=params.get("host"),
        port=int(params["port"]) if params.get("port") else None,
        database=dbname,
    ).render_as_string(hide_password=False)
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    source = context.data_sources.add_postgres("restored", connection_string=url)
    for table in tables:
        name = table.qualified
        if (table.schema_name, table.name) not in present:
            outcome.failed.append(f"{name}: table exists (missing from the restore)")
            continue
        outcome.passed.append(f"{name}: table exists")
        asset = source.add_table_asset(name, table_name=table.name, schema_name=table.schema_name)
        batch = asset.add_batch_definition_whole_table("whole").get_batch()
        checks: list[tuple[str, Any]] = [
            (f"{name}: row count = {table.rows}", gxe.ExpectTableRowCountToEqual(value=table.rows))
        ]
        if table.primary_key and not table.rows:
            # an empty table has no key to check (GX reports no unique proportion for zero rows);
            # the row-count check above still catches rows that should not be there
            outcome.passed.append(f"{name}: primary key (empty table, nothing to check)")
        elif table.primary_key:
            for column in table.primary_key:
                checks.append(
                    (f"{name}.{column}: not null", gxe.ExpectColumnValuesToNotBeNull(column=column))
                )
            if len(table.primary_key) == 1:
                # with the not-null check above, "distinct / non-null = 1" is uniqueness, and GX computes
                # it with one count(distinct) instead of listing the duplicates (5x faster on 1M rows)
                column = table.primary_key[0]
                unique = gxe.ExpectColumnProportionOfUniqueValuesToBeBetween(
                    column=column, min_value=1, max_value=1
                )
                checks.append((f"{name}.{column}: unique", unique))
            else:
                columns = ", ".join(table.primary_key)
                compound = gxe.ExpectCompoundColumnsToBeUnique(column_list=table.primary_key)
                checks.append((f"{name}({columns}): unique", compound))
        for label, expectation in checks:
            result = batch.validate(expectation)
            if result.success:
                outcome.passed.append(label)
            else:
                observed = (result.result or {}).get("observed_value")
                detail = f" (observed {observed})" if observed is not None else ""
                outcome.failed.append(f"{label}{detail}")
    return outcome


class RestoreResult(BaseModel):
    """One restore test: which backup, into which scratch database, how long, what the checks said."""

    database: str
    backup_key: str
    scratch_database: str
    seconds: float | None = None
    checks_seconds: float | None = None
    checks_passed: list[str] = Field(default_factory=list)
    checks_failed: list[str] = Field(default_factory=list)
    dropped: bool = False


def restore_and_check(
    restore_conninfo: str, client: Any, bucket: str, database: str, key: str, scratch: str
) -> RestoreResult:
    """Restore `bucket/key` (read from the region `client` talks to) into `scratch`, check it, drop it.

    The manifest is read from the same region (the disaster case: the other region is gone). A dump
    that does not restore or whose SHA-256 differs from its manifest is a failed check, not an error;
    the scratch database is dropped in every case.
    """
    from tasks.common.s3 import get_json, iter_object

    result = RestoreResult(database=database, backup_key=key, scratch_database=scratch)
    guard_scratch(scratch, database, restore_conninfo)
    manifest = Manifest.model_validate(get_json(client, bucket, manifest_key(key)))
    started = time.perf_counter()
    try:
        try:
            sha, size = restore_stream(restore_conninfo, scratch, database, iter_object(client, bucket, key))
        except DumpFailed as exc:
            result.checks_failed.append(f"restore: {exc}")
            return result
        result.seconds = round(time.perf_counter() - started, 3)
        label = (
            f"dump sha256 and size equal the manifest's ({manifest.sha256[:12]}..., {manifest.bytes} bytes)"
        )
        if sha == manifest.sha256 and size == manifest.bytes:
            result.checks_passed.append(label)
        else:
            result.checks_failed.append(f"{label}: got {sha[:12]}..., {size} bytes")
        log.info(
            "restored %s into %s in %.1f s; checking %d table(s)",
            key,
            scratch,
            result.seconds,
            len(manifest.tables),
        )
        checked = time.perf_counter()
        outcome = expectation_checks(restore_conninfo, scratch, manifest.tables)
        result.checks_seconds = round(time.perf_counter() - checked, 3)
        result.checks_passed += outcome.passed
        result.checks_failed += outcome.failed
        return result
    finally:
        drop_database(restore_conninfo, scratch, database)
        result.dropped = True


@io_task(task_run_name="postgres-restore-test-{database}")
def restore_test(settings: Settings, database: str, key: str, scratch: str) -> RestoreResult:
    from scaleops.core.clients import s3_bucket, s3_client

    return restore_and_check(
        server_conninfo(settings, "restore"),
        s3_client(settings, "replica"),
        s3_bucket(settings, "replica"),
        database,
        key,
        scratch,
    )


def run_restore_tests(
    settings: Settings,
    entries: list[CatalogEntry],
    listing: BackupListing,
    clock: datetime,
    report: BackupReport,
) -> None:
    """Restore each database's newest verified backup that the replica region holds (waiting for the
    newest to arrive, else falling back to an older one) into a scratch database and check it; RTO is
    the slowest restore."""
    newest_keys = set(report.newest_verified.values())
    in_replica = replica_copies(settings, entries, listing, newest_keys, settings.backup.restore_wait_seconds)
    if len(in_replica) < len(newest_keys):
        older = {e.key for e in entries if e.verified and e.key not in newest_keys}
        in_replica |= replica_copies(settings, entries, listing, older, 0)
    for database in report.databases:
        source = pick_restore_source(entries, database, clock, in_replica)
        if source is None:
            if database in report.newest_verified:
                report.problem(f"{database}: no verified backup in the replica region to restore from")
            continue
        result = restore_test(settings, database, source.key, scratch_name(database, utcnow()))
        report.restore.append(result)
        for failed in result.checks_failed:
            report.problem(f"restore test of {database} ({source.key}): {failed}")
        run_logger().info(
            "restore test %s: %d passed, %d failed",
            database,
            len(result.checks_passed),
            len(result.checks_failed),
        )
    restored = [x.seconds for x in report.restore if x.seconds is not None]
    report.rto_seconds = max(restored) if restored else None
