"""The demo source table the sandbox's `demo` warm set reads (`scaleops_demo.cache_source`).

Not a process: a seed step on the sandbox's PostgreSQL primary, so `scaleops demo` can warm a cache with
no configuration. It creates the table once (5,000 rows with a hotness score and `updated_at`) and never
touches it again, so tests and people may change rows to watch invalidation work.
"""

from __future__ import annotations

import json
from pathlib import Path

from scaleops.sandbox.services import LOCAL, Postgres, Service

SCHEMA = "scaleops_demo"
TABLE = f"{SCHEMA}.cache_source"
ROWS = 5000
# What `scaleops sandbox env` exports as SCALEOPS_CACHE__WARM_SETS: production has no default warm set.
DEMO_WARM_SETS = {
    "demo": {
        "query": f"select key, value, updated_at from {TABLE} order by hits desc, key",
        "key_prefix": "demo:item:",
        "ttl_seconds": 3600,
    }
}

SEED_SQL = f"""
create schema if not exists {SCHEMA};
create table if not exists {TABLE} (
    key text primary key,
    value text not null,
    hits bigint not null,
    updated_at timestamptz not null default now()
);
insert into {TABLE} (key, value, hits)
select i::text, 'token ' || i || ': ' || md5(i::text), ({ROWS} - i) * 10
from generate_series(1, {ROWS}) as i
where not exists (select 1 from {TABLE});
"""


class CacheSource(Service):
    name = "cache_source"
    requires = ("postgres",)
    description = f"demo rows for cache-warming ({TABLE} on the primary)"

    @property
    def postgres(self) -> Postgres:
        return self.sb.service("postgres")  # type: ignore[return-value]

    def port_keys(self) -> list[str]:
        return []

    def pidfiles(self) -> list[Path]:
        return []

    def running(self) -> bool:  # no process: "running" means seeded
        try:
            return self.probe()
        except Exception:
            return False

    def start(self) -> None:
        with self.postgres.connect() as conn:
            conn.execute(SEED_SQL)

    def probe(self) -> bool:
        with self.postgres.connect() as conn:
            row = conn.execute("select to_regclass(%s) is not null", (TABLE,)).fetchone()
        return bool(row and row[0])

    def stop(self) -> None:
        """Nothing runs; the rows live in PostgreSQL's data directory."""

    def url(self) -> str:
        return f"postgresql://postgres:****@{LOCAL}:{self.postgres.port}/postgres#{TABLE}"

    def env(self) -> dict[str, str]:
        return {"SCALEOPS_CACHE__WARM_SETS": json.dumps(DEMO_WARM_SETS)}
