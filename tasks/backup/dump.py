"""Backups (duty backup-verification): `pg_dump -Fc` streamed to S3 with a SHA-256 manifest whose row
counts come from the same snapshot, and the PostgreSQL helpers the restore test shares."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import IO, TYPE_CHECKING, Any

import psycopg  # imported once here, not first inside concurrent task threads
from psycopg import sql
from pydantic import BaseModel, Field

from scaleops.core.clients import PostgresRole
from scaleops.core.redaction import REDACTOR
from scaleops.core.reporting import run_logger, utcnow
from scaleops.core.retry import io_task
from scaleops.core.settings import Settings

if TYPE_CHECKING:
    from tasks.backup.report import BackupReport

log = logging.getLogger(__name__)
MANIFEST_VERSION = 1


class TableFacts(BaseModel):
    """One table at backup time: exact row count and primary-key columns (empty: no primary key)."""

    schema_name: str
    name: str
    rows: int
    primary_key: list[str] = Field(default_factory=list)

    @property
    def qualified(self) -> str:
        return f"{self.schema_name}.{self.name}"


class Manifest(BaseModel):
    """What a backup holds; written after its dump object, so no manifest means not verified."""

    version: int = MANIFEST_VERSION
    database: str
    key: str
    server_version: str
    started_at: datetime
    finished_at: datetime
    bytes: int
    sha256: str
    etag: str
    parts: int
    tables: list[TableFacts] = Field(default_factory=list)


def libpq_target(conninfo: str, dbname: str) -> tuple[str, dict[str, str]]:
    """(conninfo without the password, env with PGPASSWORD) for pg_dump/pg_restore: no secret in argv."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    params = conninfo_to_dict(conninfo)
    password = params.pop("password", None)
    params["dbname"] = dbname
    env = {**os.environ}
    if password:
        env["PGPASSWORD"] = str(password)
    return make_conninfo("", **params), env


def table_facts(conn: Any) -> list[TableFacts]:
    """Every user table with its exact row count and primary key (in the caller's snapshot)."""
    tables = conn.execute(
        "select n.nspname, c.relname,"
        " coalesce((select array_agg(a.attname order by k.ord)"
        "   from pg_constraint p cross join lateral unnest(p.conkey) with ordinality k(attnum, ord)"
        "   join pg_attribute a on a.attrelid = c.oid and a.attnum = k.attnum"
        "   where p.conrelid = c.oid and p.contype = 'p'), '{}')"
        " from pg_class c join pg_namespace n on n.oid = c.relnamespace"
        " where c.relkind in ('r', 'p') and not c.relispartition"
        "   and n.nspname not in ('pg_catalog', 'information_schema') and n.nspname not like 'pg_toast%'"
        " order by 1, 2"
    ).fetchall()
    facts = []
    for schema, name, pk in tables:
        query = sql.SQL("select count(*) from {}.{}").format(sql.Identifier(schema), sql.Identifier(name))
        (rows,) = conn.execute(query).fetchone() or (0,)
        facts.append(TableFacts(schema_name=schema, name=name, rows=int(rows), primary_key=list(pk)))
    return facts


@contextlib.contextmanager
def snapshot(conninfo: str, dbname: str) -> Iterator[tuple[Any, str]]:
    """A repeatable-read transaction whose snapshot pg_dump imports: counts and dump see the same data."""
    with psycopg.connect(conninfo, dbname=dbname, application_name="scaleops-backup") as conn:
        conn.execute("set transaction isolation level repeatable read, read only")
        (snapshot_id,) = conn.execute("select pg_export_snapshot()").fetchone() or (None,)
        yield conn, snapshot_id
        conn.rollback()


def dump_to_s3(
    conninfo: str,
    dbname: str,
    client: Any,
    bucket: str,
    key: str,
    *,
    part_size: int,
    write_manifest: Callable[[Manifest], None] | None = None,
) -> Manifest:
    """`pg_dump -Fc` of `dbname` streamed into `bucket/key` (memory: one part), then its manifest.

    The table counts and the dump come from one exported snapshot. The manifest is written only after
    the dump object is complete; if anything fails before, there is no manifest and the backup does
    not count. A failed pg_dump aborts the multipart upload (no object at all).
    """
    from tasks.common.s3 import upload_stream

    started = utcnow()
    target, env = libpq_target(conninfo, dbname)
    with snapshot(conninfo, dbname) as (conn, snapshot_id), tempfile.TemporaryFile() as errors:
        version = conn.execute("select current_setting('server_version')").fetchone()[0]
        pg_dump = pg_tool("pg_dump")
        check_pg_dump_version(pg_dump_version(pg_dump), str(version), path=pg_dump)
        tables = table_facts(conn)
        log.info("dumping %s: %d table(s), %d row(s)", dbname, len(tables), sum(t.rows for t in tables))
        proc = subprocess.Popen(
            [pg_dump, "-Fc", f"--snapshot={snapshot_id}", "--dbname", target],
            stdout=subprocess.PIPE,
            stderr=errors,
            env=env,
        )
        assert proc.stdout is not None
        try:
            upload = upload_stream(client, bucket, key, _Checked(proc, errors), part_size=part_size)
        finally:
            proc.stdout.close()
            proc.wait()
    manifest = Manifest(
        database=dbname,
        key=key,
        server_version=str(version),
        started_at=started,
        finished_at=utcnow(),
        bytes=upload.bytes,
        sha256=upload.sha256,
        etag=upload.etag,
        parts=upload.parts,
        tables=tables,
    )
    if write_manifest is None:
        from tasks.common.s3 import put_json

        put_json(client, bucket, manifest_key(key), manifest.model_dump(mode="json"))
    else:
        write_manifest(manifest)
    log.info("backed up %s: %d bytes in %d part(s) to %s", dbname, upload.bytes, upload.parts, key)
    return manifest


class _Checked:
    """pg_dump's stdout that raises at end of stream if pg_dump failed (so the upload aborts)."""

    def __init__(self, proc: subprocess.Popen[bytes], errors: IO[bytes]):
        self.proc = proc
        self.errors = errors

    def read(self, size: int = -1) -> bytes:
        assert self.proc.stdout is not None
        chunk = self.proc.stdout.read(size)
        if not chunk and self.proc.wait() != 0:
            raise DumpFailed(f"pg_dump exited {self.proc.returncode}: {_stderr_tail(self.errors)}")
        return chunk


class DumpFailed(RuntimeError):
    """pg_dump or pg_restore failed; the message carries its last error lines (no secrets)."""


def _stderr_tail(errors: IO[bytes]) -> str:
    errors.seek(0)
    lines = errors.read().decode(errors="replace").strip().splitlines()
    return " / ".join(lines[-5:])


def manifest_key(dump_key: str) -> str:
    return dump_key.removesuffix(".dump") + ".manifest.json"


def pg_tool(name: str) -> str:
    """The newest installed PostgreSQL client tool (Debian keeps them under /usr/lib/postgresql/N/bin)."""
    import glob
    import shutil

    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=lambda p: int(p.split("/")[4]))
    path = found[-1] if found else shutil.which(name)
    if not path:
        raise FileNotFoundError(f"{name} not found: install the PostgreSQL client (postgresql-client)")
    return path


def pg_major(version: str) -> tuple[int, ...]:
    """The major version in `pg_dump --version` output or a server_version: "17.2" -> (17,),
    "pg_dump (PostgreSQL) 15.10 (Debian 15.10-0+deb12u1)" -> (15,), "9.6.24" -> (9, 6)."""
    match = re.search(r"(\d+)(?:\.(\d+))?", version)
    if not match:
        raise ValueError(f"not a PostgreSQL version: {version!r}")
    first = int(match.group(1))
    return (first, int(match.group(2) or 0)) if first < 10 else (first,)


def check_pg_dump_version(client: str, server: str, *, path: str = "pg_dump") -> None:
    """Raise PgDumpTooOld unless pg_dump's major version is at least the server's: an older pg_dump
    refuses to dump a newer server, and finding that out at the start beats a failed upload."""
    if pg_major(client) < pg_major(server):
        wanted = ".".join(map(str, pg_major(server)))
        raise PgDumpTooOld(
            f"pg_dump is older than the server: {client.strip()} ({path}) cannot dump PostgreSQL {server};"
            f" install postgresql-client-{wanted} (image build arg PG_MAJOR={wanted}, deployments/Dockerfile)"
        )


def pg_dump_version(path: str) -> str:
    """`pg_dump --version`, e.g. "pg_dump (PostgreSQL) 17.2"."""
    return subprocess.run([path, "--version"], capture_output=True, text=True, check=True, timeout=30).stdout


class PgDumpTooOld(DumpFailed):
    """The installed pg_dump's major version is older than the server's."""


def server_conninfo(settings: Settings, role: PostgresRole) -> str:
    from psycopg.conninfo import make_conninfo

    from scaleops.core.clients import postgres_dsn

    return make_conninfo(
        postgres_dsn(settings, role), connect_timeout=int(settings.postgres.connect_timeout_seconds)
    )


@io_task(task_run_name="postgres-backup-{database}")
def backup_database(settings: Settings, database: str, key: str) -> Manifest:
    from scaleops.core.clients import s3_bucket, s3_client

    return dump_to_s3(
        server_conninfo(settings, "primary"),
        database,
        s3_client(settings, "primary"),
        s3_bucket(settings, "primary"),
        key,
        part_size=settings.backup.part_size_mb * 1024 * 1024,
    )


def check_databases(names: list[str]) -> list[str]:
    bad = [n for n in names if not n or len(n) > 63 or "/" in n or n.startswith("scaleops_restore_")]
    if bad or not names:
        raise ValueError(f"databases: not valid database names: {bad or names}")
    return list(dict.fromkeys(names))


def first_named(names: list[str], first: str | None) -> list[str]:
    """`names` with `first` moved to the front (an alert's `database` label: check that one first).
    A `first` that is not one of them changes nothing: the alert may name a database not backed up here."""
    if not first or first not in names:
        return names
    return [first, *(n for n in names if n != first)]


class BackupRecord(BaseModel):
    database: str
    key: str
    bytes: int
    sha256: str
    started_at: datetime
    finished_at: datetime


def dump_key(prefix: str, database: str, when: datetime) -> str:
    """`<prefix><db>/<db>-<UTC time>Z.dump` (sorts by time; the manifest sits beside it)."""
    stamp = when.astimezone(UTC).strftime("%Y%m%dT%H%M%S.%f")
    return f"{prefix}{database}/{database}-{stamp}Z.dump"


def take_backups(settings: Settings, databases: list[str], report: BackupReport) -> None:
    """Back up each database; one that fails is a problem of its own and does not stop the others."""
    for database in databases:
        key = dump_key(settings.backup.prefix, database, utcnow())
        try:
            manifest: Manifest = backup_database(settings, database, key)
        except Exception as exc:
            report.step_failed(f"backup of {database} failed: {REDACTOR.text(str(exc))}")
            continue
        fields = manifest.model_dump(include=set(BackupRecord.model_fields) - {"database"})
        report.backups.append(BackupRecord(database=database, **fields))
    run_logger().info("took %d backup(s)", len(report.backups))
