"""The PostgreSQL side of cache warming: a warm set's SQL, streamed in batches hottest first, and the
rows that changed or vanished since the last run."""

from __future__ import annotations

import queue
import threading
from collections.abc import Generator, Iterator
from datetime import datetime
from typing import Any, TypeVar

import psycopg  # imported once here, not first inside concurrent task threads
from pydantic import BaseModel

from scaleops.core.clients import postgres_connect
from scaleops.core.retry import io_task
from scaleops.core.settings import Settings, WarmSet

T = TypeVar("T")


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


def pick_warm_set(settings: Settings, name: str | None) -> tuple[str, WarmSet]:
    sets = settings.cache.warm_sets
    known = ", ".join(sorted(sets)) or "none configured"
    if name is None:
        if len(sets) != 1:
            raise ValueError(f"warm_set: choose one of the warm sets in SCALEOPS_CACHE__WARM_SETS ({known})")
        name = next(iter(sets))
    if name not in sets:
        raise ValueError(f"warm_set: unknown warm set {name!r}; SCALEOPS_CACHE__WARM_SETS has: {known}")
    return name, sets[name]
