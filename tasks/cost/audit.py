"""The audit log: every mark, unmark, action, skip and error of a non-dry run is a row in PostgreSQL
(`scaleops_cost_audit`), so "what did the janitor delete last Tuesday" has an answer:

    select at, policy, resource_id, scope, what, action, detail from scaleops_cost_audit
    where action not in ('mark', 'unmark') and at::date = '2026-12-01' order by at;
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from tasks.cost.lifecycle import AuditRow

TABLE = "scaleops_cost_audit"
SCHEMA_SQL = f"""
create table if not exists {TABLE} (
    id bigserial primary key,
    at timestamptz not null default now(),
    as_of timestamptz not null,
    run_id text,
    policy text not null,
    resource text not null,
    resource_id text not null,
    scope text not null,
    what text not null default '',
    action text not null,
    detail text not null default ''
);
create index if not exists {TABLE}_at on {TABLE} (at);
create index if not exists {TABLE}_resource_id on {TABLE} (resource_id);
"""


def ensure_schema(conn: Any) -> None:
    conn.execute(SCHEMA_SQL)


def write_rows(conn: Any, rows: list[AuditRow], as_of: datetime, run_id: str | None) -> int:
    """One COPY for the batch; returns the rows written."""
    if not rows:
        return 0
    columns = "as_of, run_id, policy, resource, resource_id, scope, what, action, detail"
    with conn.cursor() as cur, cur.copy(f"copy {TABLE} ({columns}) from stdin") as copy:
        for r in rows:
            copy.write_row(
                (as_of, run_id, r.policy, r.resource, r.resource_id, r.scope, r.what, r.action, r.detail)
            )
    return len(rows)


def read_rows(conn: Any, run_id: str | None = None) -> list[dict[str, Any]]:
    """The audit rows of one run (or all), oldest first."""
    sql = f"select policy, resource, resource_id, scope, what, action, detail, run_id from {TABLE}"
    params: tuple[Any, ...] = ()
    if run_id is not None:
        sql, params = sql + " where run_id = %s", (run_id,)
    with conn.cursor() as cur:
        cur.execute(sql + " order by id", params)
        names = [d.name for d in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
