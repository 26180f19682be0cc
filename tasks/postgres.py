"""PostgreSQL: everything scaleops asks of the primary, the replica and the restore server."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import queue
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Generator, Iterable, Iterator
from datetime import datetime
from typing import IO, Any, TypeVar

import psycopg  # imported once here, not first inside concurrent task threads
from psycopg import sql
from pydantic import BaseModel, Field

from scaleops.clients import PostgresRole, postgres_connect
from scaleops.reporting import utcnow
from scaleops.retry import io_task
from scaleops.settings import Settings
from tasks.health import Check, timed_check

log = logging.getLogger(__name__)
T = TypeVar("T")


def server_facts(conn: Any) -> dict[str, Any]:
    """Version, recovery state and, on a replica, how far behind replay is."""
    row = conn.execute(
        "select current_setting('server_version'), pg_is_in_recovery(),"
        " case when pg_is_in_recovery()"
        "   then extract(epoch from now() - coalesce(pg_last_xact_replay_timestamp(), now())) end"
    ).fetchone()
    version, in_recovery, replay_delay = row
    facts: dict[str, Any] = {"server_version": version, "in_recovery": bool(in_recovery)}
    if replay_delay is not None:
        facts["replay_delay_seconds"] = float(replay_delay)
    return facts


def check_postgres(settings: Settings, role: PostgresRole) -> Check:
    """Connect as `role`; a replica must be in recovery, a primary must not."""

    def probe() -> tuple[bool, str, dict[str, Any]]:
        with postgres_connect(settings, role, autocommit=True) as conn:
            facts = server_facts(conn)
        want_recovery = role == "replica"
        if facts["in_recovery"] != want_recovery:
            expected = "in recovery (a replica)" if want_recovery else "writable (a primary)"
            return False, f"expected the server to be {expected}", facts
        return True, f"PostgreSQL {facts['server_version']}", facts

    return timed_check(f"postgres_{role}", role, probe)


@io_task(task_run_name="postgres-health-{role}")
def postgres_health(settings: Settings, role: PostgresRole) -> Check:
    return check_postgres(settings, role)


# ------------------------------------------------------------------------------------------------ backups
# Duty backup-verification: dump, restore, check and measure. Plain functions, thin tasks at the end.

SCRATCH_PREFIX = "scaleops_restore_"
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


class ReplicaLag(BaseModel):
    """Streaming replication as the primary sees it (pg_stat_replication)."""

    application_name: str
    state: str
    bytes: int | None
    seconds: float | None


class CheckOutcome(BaseModel):
    passed: list[str] = Field(default_factory=list)
    failed: list[str] = Field(default_factory=list)


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
    from tasks.s3 import upload_stream

    started = utcnow()
    target, env = libpq_target(conninfo, dbname)
    with snapshot(conninfo, dbname) as (conn, snapshot_id), tempfile.TemporaryFile() as errors:
        version = conn.execute("select current_setting('server_version')").fetchone()[0]
        tables = table_facts(conn)
        log.info("dumping %s: %d table(s), %d row(s)", dbname, len(tables), sum(t.rows for t in tables))
        proc = subprocess.Popen(
            [pg_tool("pg_dump"), "-Fc", f"--snapshot={snapshot_id}", "--dbname", target],
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
        from tasks.s3 import put_json

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


def replica_lag(conn: Any) -> list[ReplicaLag]:
    """Every streaming replica's lag as the primary sees it (replay position and replay_lag)."""
    rows = conn.execute(
        "select coalesce(application_name, ''), coalesce(state, ''),"
        " pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::bigint,"
        " extract(epoch from replay_lag)::float8"
        " from pg_stat_replication order by 1"
    ).fetchall()
    lags = []
    for name, state, lag_bytes, seconds in rows:
        if seconds is None and lag_bytes == 0:
            seconds = 0.0  # idle and caught up: PostgreSQL reports no lag sample
        lags.append(ReplicaLag(application_name=name, state=state, bytes=lag_bytes, seconds=seconds))
    return lags


@io_task(task_run_name="postgres-replica-lag")
def replica_lag_task(settings: Settings) -> list[ReplicaLag]:
    with postgres_connect(settings, "primary", autocommit=True) as conn:
        return replica_lag(conn)


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


def server_conninfo(settings: Settings, role: PostgresRole) -> str:
    from psycopg.conninfo import make_conninfo

    from scaleops.clients import postgres_dsn

    return make_conninfo(
        postgres_dsn(settings, role), connect_timeout=int(settings.postgres.connect_timeout_seconds)
    )


def restore_and_check(
    restore_conninfo: str, client: Any, bucket: str, database: str, key: str, scratch: str
) -> RestoreResult:
    """Restore `bucket/key` (read from the region `client` talks to) into `scratch`, check it, drop it.

    The manifest is read from the same region (the disaster case: the other region is gone). A dump
    that does not restore or whose SHA-256 differs from its manifest is a failed check, not an error;
    the scratch database is dropped in every case.
    """
    from tasks.s3 import get_json, iter_object

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


@io_task(task_run_name="postgres-backup-{database}")
def backup_database(settings: Settings, database: str, key: str) -> Manifest:
    from scaleops.clients import s3_bucket, s3_client

    return dump_to_s3(
        server_conninfo(settings, "primary"),
        database,
        s3_client(settings, "primary"),
        s3_bucket(settings, "primary"),
        key,
        part_size=settings.backup.part_size_mb * 1024 * 1024,
    )


@io_task(task_run_name="postgres-restore-test-{database}")
def restore_test(settings: Settings, database: str, key: str, scratch: str) -> RestoreResult:
    from scaleops.clients import s3_bucket, s3_client

    return restore_and_check(
        server_conninfo(settings, "restore"),
        s3_client(settings, "replica"),
        s3_bucket(settings, "replica"),
        database,
        key,
        scratch,
    )


# ------------------------------------------------------------------------------------------------ cache
# The warm set's query is wrapped, never edited: `(<query>) as q(k, v[, u])` names its columns by position,
# so a warm set may return any column names; PostgreSQL serialises the value (C speed, not per row in
# Python) and prepends the key prefix, so rows arrive as ready-to-send bytes.
VALUE_SQL = {
    "text": "convert_to(q.v::text, 'UTF8')",
    "json": "convert_to(to_json(q.v)::text, 'UTF8')",
    "bytea": "q.v::bytea",
}


class WarmQueryError(ValueError):
    """The warm set's SQL does not run or does not return `key, value[, updated_at]`; never retried."""


def _escaped(query: str) -> str:
    """The query as text inside a statement that also has parameters: psycopg reads `%` as a placeholder
    there, so a `like 'a%'` in a warm set must be written `%%` to reach PostgreSQL unchanged."""
    return query.replace("%", "%%")


def _alias(columns: int) -> str:
    return "q(k, v, u)" if columns == 3 else "q(k, v)"


def describe_warm_query(conn: Any, name: str, query: str) -> int:
    """Run the query with `limit 0`: fail fast with PostgreSQL's message; return its column count (2 or 3)."""
    try:
        with conn.cursor() as cur:
            cur.execute(f"select * from ({query}) as q limit 0")
            columns = len(cur.description or [])
    except psycopg.Error as exc:
        if not isinstance(exc, psycopg.ProgrammingError | psycopg.DataError | psycopg.errors.InternalError_):
            raise  # connection trouble: transient, let the retry policy judge it
        message = (getattr(exc.diag, "message_primary", None) or str(exc)).splitlines()[0]
        raise WarmQueryError(f"warm set {name!r}: the query failed in PostgreSQL: {message}") from None
    finally:
        conn.rollback()
    if columns not in (2, 3):
        raise WarmQueryError(
            f"warm set {name!r}: the query returns {columns} columns; expected key, value[, updated_at]"
        )
    if columns == 3:
        with conn.cursor() as cur:
            try:
                cur.execute(f"select q.u::timestamptz from ({query}) as {_alias(3)} limit 0")
            except psycopg.Error:
                raise WarmQueryError(
                    f"warm set {name!r}: the third column (updated_at) is not a timestamp"
                ) from None
            finally:
                conn.rollback()
    return columns


def warm_rows_sql(query: str, columns: int, serializer: str, limit: int | None) -> str:
    """SELECT (key bytes with prefix, value bytes), hottest first; NULL keys/values are skipped later."""
    sql = (
        f"select convert_to(%(prefix)s || q.k::text, 'UTF8'), {VALUE_SQL[serializer]}"
        f" from ({_escaped(query)}) as {_alias(columns)}"
    )
    return sql + (f" limit {int(limit)}" if limit is not None else "")


def stream_batches(
    conn: Any, sql: str, params: dict[str, Any], batch_size: int
) -> Iterator[list[tuple[bytes | None, bytes | None]]]:
    """Rows of `sql` through a server-side cursor, `batch_size` at a time: memory stays flat."""
    with conn.cursor(name="scaleops_cache_warm", binary=True) as cur:
        cur.itersize = batch_size
        cur.execute(sql, params)
        while batch := cur.fetchmany(batch_size):
            yield batch
    conn.rollback()


def prefetched(batches: Iterator[T], depth: int = 2) -> Generator[T, None, None]:
    """Read `batches` in a thread, `depth` ahead: PostgreSQL produces the next batch while the caller
    writes this one to Redis (the socket waits release the GIL). Errors surface in the caller; stopping
    early (budget) stops the thread."""
    items: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: tuple[str, Any]) -> bool:
        while not stop.is_set():
            try:
                items.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def run() -> None:
        try:
            for batch in batches:
                if not put(("batch", batch)):
                    return
            put(("end", None))
        except BaseException as exc:  # handed to the consumer, raised there
            put(("error", exc))

    thread = threading.Thread(target=run, name="scaleops-cache-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            kind, value = items.get()
            if kind == "end":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        stop.set()
        thread.join(timeout=30)


def estimate_set(conn: Any, query: str, columns: int, serializer: str, limit: int | None) -> tuple[int, int]:
    """(rows, key+value bytes) the warm set would load: the noeviction check before anything is written."""
    inner = warm_rows_sql(query, columns, serializer, limit)
    row = conn.execute(
        f"select count(*), coalesce(sum(octet_length(x.k) + octet_length(x.v)), 0)"
        f" from ({inner}) as x(k, v) where x.k is not null and x.v is not null",
        {"prefix": ""},
    ).fetchone()
    conn.rollback()
    return int(row[0]), int(row[1])


def max_updated_at(conn: Any, query: str) -> datetime | None:
    row = conn.execute(f"select max(q.u::timestamptz) from ({query}) as {_alias(3)}").fetchone()
    conn.rollback()
    return row[0] if row else None


def changed_key_batches(
    conn: Any, query: str, since: datetime, batch_size: int
) -> Iterator[tuple[list[str], datetime | None]]:
    """Keys of rows with updated_at > since, in batches, each with the newest updated_at in it."""
    with conn.cursor(name="scaleops_cache_changed") as cur:
        cur.itersize = batch_size
        cur.execute(
            f"select q.k::text, q.u::timestamptz from ({_escaped(query)}) as {_alias(3)} where q.u > %s",
            (since,),
        )
        while batch := cur.fetchmany(batch_size):
            keys = [k for k, _ in batch if k is not None]
            newest = max((u for _, u in batch if u is not None), default=None)
            yield keys, newest
    conn.rollback()


def present_keys(conn: Any, query: str, columns: int, keys: list[str]) -> set[str]:
    """Which of `keys` the warm set's query still returns (rows not deleted)."""
    rows = conn.execute(
        f"select q.k::text from ({_escaped(query)}) as {_alias(columns)} where q.k::text = any(%s)", (keys,)
    ).fetchall()
    conn.rollback()
    return {r[0] for r in rows}


class WarmSetFacts(BaseModel):
    columns: int
    estimate_rows: int | None = None
    estimate_bytes: int | None = None
    max_updated_at: datetime | None = None


@io_task(task_run_name="postgres-inspect-warm-set-{name}")
def inspect_warm_set(
    settings: Settings,
    name: str,
    query: str,
    serializer: str,
    limit: int | None,
    estimate: bool = False,
    watermark: bool = False,
) -> WarmSetFacts:
    """Check the warm set's SQL (fails fast, never retried, when it is wrong) and measure what is asked."""
    with postgres_connect(settings) as conn:
        facts = WarmSetFacts(columns=describe_warm_query(conn, name, query))
        if estimate:
            rows, size = estimate_set(conn, query, facts.columns, serializer, limit)
            facts.estimate_rows, facts.estimate_bytes = rows, size
        if watermark and facts.columns == 3:
            facts.max_updated_at = max_updated_at(conn, query)
    return facts


def fetch_postgres_series(conn: Any, specs: Any, start: float, end: float) -> list[Any]:
    """Capacity series from SQL: each spec's query returns (timestamp, value) rows and may use the
    parameters %(start)s and %(end)s (timestamptz). A failing query is that series' error."""
    from datetime import UTC, datetime

    from scaleops.retry import is_transient
    from tasks.forecasting import SeriesData, epoch_seconds

    params = {"start": datetime.fromtimestamp(start, UTC), "end": datetime.fromtimestamp(end, UTC)}
    out = []
    for spec in specs:
        try:
            with conn.transaction():
                rows = conn.execute(spec.query, params).fetchall()
        except Exception as exc:
            if is_transient(exc):
                raise
            out.append(SeriesData(spec.name, error=f"query failed: {str(exc).splitlines()[0]}"))
            continue
        stamps = [
            float(r[0]) if isinstance(r[0], int | float) else float(epoch_seconds([r[0]])[0]) for r in rows
        ]
        values = [float("nan") if r[1] is None else float(r[1]) for r in rows]
        out.append(SeriesData(spec.name, timestamps=stamps, values=values))
    return out


@io_task(task_run_name="postgres-fetch-{count}-series")
def postgres_fetch(settings: Settings, specs: list[Any], start: float, end: float, count: int) -> list[Any]:
    with postgres_connect(settings, "primary", autocommit=True) as conn:
        return fetch_postgres_series(conn, specs, start, end)
