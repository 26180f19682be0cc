"""Sandbox sample data for duty backup-verification: a database `scaleops_sample` with a few tables
(single and compound primary keys), so the demo backs up, restores and checks something real.

It has no process of its own: it is "running" when the PostgreSQL primary is, and `ready()` creates the
database and its rows once (idempotent). Its `env()` adds the database to SCALEOPS_BACKUP__DATABASES.
"""

from __future__ import annotations

import json
from typing import Any

from scaleops.sandbox.services import Postgres, Service

DATABASE = "scaleops_sample"
SCHEMA = """
create table if not exists accounts (
    id bigint primary key, address text not null, created_at timestamptz not null);
create table if not exists transfers (
    id bigint primary key, account_id bigint not null references accounts(id),
    amount numeric(38, 0) not null, tx_hash text not null);
create table if not exists balances (
    account_id bigint not null references accounts(id), asset text not null, amount numeric(38, 0) not null,
    primary key (account_id, asset));
"""
ROWS = """
insert into accounts
  select g, '0x' || md5(g::text) || substr(md5((g * 7)::text), 1, 8),
         '2026-01-01'::timestamptz + g * interval '1 min'
  from generate_series(1, 2000) g;
insert into transfers
  select g, 1 + g % 2000, (g::bigint * 1000003) % 1000000007, '0x' || md5('tx' || g) || md5('h' || g)
  from generate_series(1, 20000) g;
insert into balances
  select a, asset, (a * 31) % 100000 from generate_series(1, 2000) a, unnest(array['ETH', 'USDC']) asset;
"""


class BackupSample(Service):
    name = "backup_sample"
    requires = ("postgres",)
    description = f"sample database {DATABASE} that backup-verification backs up and restores"

    @property
    def postgres(self) -> Postgres:
        return self.sb.service("postgres")  # type: ignore[return-value]

    def port_keys(self) -> list[str]:
        return []

    def pidfiles(self) -> list[Any]:
        return []

    def running(self) -> bool:
        return self.postgres.running()

    def start(self) -> None:  # nothing to start: the data lives in the primary
        return None

    def probe(self) -> bool:
        return self.postgres.probe()

    def ready(self) -> None:
        with self.postgres.connect() as conn:
            exists = conn.execute("select 1 from pg_database where datname = %s", (DATABASE,)).fetchone()
            if not exists:
                conn.execute(f'create database "{DATABASE}"')
        with self.postgres.connect(DATABASE) as conn:
            conn.execute(SCHEMA)
            if not conn.execute("select exists (select 1 from accounts)").fetchone()[0]:
                with conn.transaction():
                    conn.execute(ROWS)

    def stop(self) -> None:
        return None

    def url(self) -> str:
        return self.postgres.url().rsplit("/", 1)[0] + f"/{DATABASE}"

    def env(self) -> dict[str, str]:
        return {"SCALEOPS_BACKUP__DATABASES": json.dumps(["postgres", DATABASE])}
