"""Versioned PostgreSQL schema migrations (`scaleops db migrate`).

Each migration is (version, name, SQL), applied once, in order, in its own transaction, under an advisory
lock so two processes (a flow and the CLI, two workers) never apply one twice. Applied versions are
recorded in `scaleops_migrations`. Migrations are append-only: never edit one that has shipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

MIGRATION_LOCK = 7_403_512_001  # pg_advisory_xact_lock key of the migration runner


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


L2_OUTBOX = """
create table l2_batches (
    id bigserial primary key,
    chain text not null,
    signer text not null,
    status text not null check (status in
        ('batched', 'signed', 'broadcast', 'mined', 'confirmed', 'failed', 'abandoned')),
    nonce bigint,
    op_count integer not null,
    calldata_bytes integer not null default 0,
    tx_hash text,
    raw_tx bytea,
    gas_limit bigint,
    max_fee_per_gas numeric(78, 0),
    max_priority_fee_per_gas numeric(78, 0),
    est_l2_fee_wei numeric(78, 0),
    est_l1_fee_wei numeric(78, 0),
    gas_used bigint,
    effective_gas_price numeric(78, 0),
    l1_fee_wei numeric(78, 0),
    block_number bigint,
    block_hash text,
    confirmations integer not null default 0,
    bumps integer not null default 0,
    reorgs integer not null default 0,
    error text,
    created_at timestamptz not null default now(),
    signed_at timestamptz,
    broadcast_at timestamptz,
    last_sent_at timestamptz,
    confirmed_at timestamptz,
    updated_at timestamptz not null default now()
);
-- one live transaction per (chain, signer, nonce): the database refuses a second payload at a used nonce
create unique index l2_batches_live_nonce on l2_batches (chain, signer, nonce)
    where status in ('signed', 'broadcast', 'mined', 'confirmed');
create index l2_batches_live on l2_batches (chain, status) where status not in ('confirmed', 'abandoned');

-- every transaction ever signed for a batch (the first and each fee-bumped replacement): any may be mined
create table l2_batch_txs (
    tx_hash text primary key,
    batch_id bigint not null references l2_batches (id),
    nonce bigint not null,
    raw_tx bytea not null,
    max_fee_per_gas numeric(78, 0) not null,
    max_priority_fee_per_gas numeric(78, 0) not null,
    created_at timestamptz not null default now()
);
create index l2_batch_txs_batch on l2_batch_txs (batch_id);

create table l2_operations (
    id bigserial primary key,
    key text not null unique,
    chain text not null,
    kind text not null,
    payload jsonb not null,
    status text not null default 'pending' check (status in
        ('pending', 'batched', 'signed', 'broadcast', 'confirmed', 'failed')),
    batch_id bigint references l2_batches (id),
    error text,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    confirmed_at timestamptz
);
create index l2_operations_queue on l2_operations (chain, status, id);
create index l2_operations_batch on l2_operations (batch_id);
"""

SOLANA_BLOCKHASH = """
-- Solana transactions have no nonce: they expire with their blockhash instead
alter table l2_batches add column last_valid_block_height bigint;
alter table l2_batches add column fee_paid numeric(78, 0);  -- Solana: lamports the cluster charged
alter table l2_batch_txs add column last_valid_block_height bigint;
alter table l2_batch_txs alter column nonce drop not null;
alter table l2_batch_txs alter column max_fee_per_gas drop not null;
alter table l2_batch_txs alter column max_priority_fee_per_gas drop not null;
"""

OUTBOX_NAMESPACE = """
-- The contract dedupes an operation on (namespace, l2_operations.id): ids are unique per key and never
-- reused inside one outbox database, and this random 60-bit namespace, drawn once here, keeps two outbox
-- databases posting to one contract apart. It travels with a dump/restore of the database, as it must.
create table l2_outbox (
    singleton boolean primary key default true check (singleton),
    namespace bigint not null check (namespace > 0),
    created_at timestamptz not null default now()
);
insert into l2_outbox (namespace)
    select greatest(1, ('x' || lpad(substr(md5(gen_random_uuid()::text), 1, 15), 16, '0'))::bit(64)::bigint);
"""

ARCHIVE_LEDGER = """
-- duty arweave-archival: one row per unique content (its SHA-256), whatever its names
create table archive_items (
    sha256 text primary key check (sha256 ~ '^[0-9a-f]{64}$'),
    size bigint not null check (size >= 0),
    content_type text not null default 'application/octet-stream',
    keys text[] not null default '{}',  -- every source key that pointed at these bytes
    first_key text not null,
    body bytea,  -- queued local content until it is posted (sources with a url are read again)
    source_url text,
    status text not null default 'queued' check (status in
        ('queued', 'signed', 'posted', 'confirmed', 'verified', 'failed', 'corrupt', 'missing')),
    item_id text unique,  -- the ANS-104 data item id (fixed by its signature)
    bundle_id text,
    ipfs_cid text,
    ipfs_params jsonb,  -- cid_version, raw_leaves, chunker
    winston bigint not null default 0,  -- this item's share of what its bundle paid
    reposts integer not null default 0,
    error text,
    created_at timestamptz not null default now(),
    signed_at timestamptz,
    posted_at timestamptz,
    confirmed_at timestamptz,
    verified_at timestamptz,
    updated_at timestamptz not null default now()
);
create index archive_items_live on archive_items (status) where status not in ('verified');

-- every bundle transaction ever signed, stored before it is posted (write-ahead)
create table archive_bundles (
    tx_id text primary key,
    mode text not null check (mode in ('gateway', 'bundler')),
    status text not null check (status in ('signed', 'posted', 'confirmed', 'dropped', 'failed')),
    raw_tx jsonb not null,  -- the signed transaction header (its id is fixed by the signature)
    data bytea not null,    -- the bundle bytes
    items integer not null,
    bytes bigint not null,
    winston bigint not null,
    posted_height bigint,
    block_height bigint,
    receipt jsonb,
    created_at timestamptz not null default now(),
    posted_at timestamptz,
    confirmed_at timestamptz
);
create index archive_bundles_live on archive_bundles (status) where status in ('signed', 'posted');

-- source watermarks (S3: newest LastModified seen per source)
create table archive_sources (
    name text primary key,
    watermark text,
    updated_at timestamptz not null default now()
);
"""

ALERT_EMISSIONS = """
-- the alert bridge: every alert event it emitted, so a repeat (Alertmanager's repeat_interval, a bridge
-- or Prefect restart) is emitted once; 'claimed' rows whose request died go stale and are claimed again
create table alert_emissions (
    fingerprint text not null,
    starts_at timestamptz not null,
    status text not null check (status in ('firing', 'resolved')),
    event_id uuid not null unique,
    alertname text not null,
    source text not null,
    state text not null check (state in ('claimed', 'emitted')),
    repeats integer not null default 0,
    claimed_at timestamptz not null default now(),
    emitted_at timestamptz,
    last_seen_at timestamptz not null default now(),
    primary key (fingerprint, starts_at, status)
);
create index alert_emissions_last_seen on alert_emissions (last_seen_at);
"""

ARCHIVE_TAGS = """
-- arweave-archival: tags given by hand (`scaleops archive add --tag k=v`), added to the data item's tags
alter table archive_items add column tags jsonb not null default '[]';  -- [[name, value], ...]
"""

ALERT_WINDOWS = """
-- the alert bridge: one coalescing window per duty at a time; the alert that opens it starts the duty,
-- the others that arrive before it closes are attached to it (alert_emissions.window_id)
create table alert_windows (
    id uuid primary key,
    duty text not null,
    lead_event_id uuid not null unique,
    state text not null check (state in ('claimed', 'emitted')),
    alerts integer not null default 1,
    opened_at timestamptz not null default now(),
    closes_at timestamptz not null,
    claimed_at timestamptz not null default now()
);
create index alert_windows_open on alert_windows (duty, closes_at);
alter table alert_emissions add column window_id uuid;
"""

ALERT_FOLLOW_UPS = """
-- the alert bridge: a window opened for alerts that came after the run of an earlier window had reported
-- (at most one such follow-up per storm); it closes when the window it follows would have closed
alter table alert_windows add column follows uuid;
"""

MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "l2 outbox: operations, batches, signed transactions", L2_OUTBOX),
    Migration(2, "l2 outbox: Solana blockhash expiry", SOLANA_BLOCKHASH),
    Migration(3, "l2 outbox: namespace of its operation ids on chain", OUTBOX_NAMESPACE),
    Migration(4, "arweave archival: ledger of items, bundles and source watermarks", ARCHIVE_LEDGER),
    Migration(5, "alert bridge: emitted alerts, for durable dedupe", ALERT_EMISSIONS),
    Migration(6, "arweave archival: tags of an item given by hand", ARCHIVE_TAGS),
    Migration(7, "alert bridge: coalescing windows, one run per duty per alert storm", ALERT_WINDOWS),
    Migration(8, "alert bridge: one follow-up run for alerts after a storm's run reported", ALERT_FOLLOW_UPS),
)


def applied_versions(conn: Any) -> set[int]:
    row = conn.execute("select to_regclass('scaleops_migrations')").fetchone()
    if not row or row[0] is None:
        return set()
    return {int(r[0]) for r in conn.execute("select version from scaleops_migrations").fetchall()}


def migrate(conn: Any) -> list[Migration]:
    """Apply every migration not yet applied (idempotent); return the ones applied now.

    `conn` is a psycopg connection in autocommit mode or not; each migration commits on its own.
    """
    done: list[Migration] = []
    for migration in MIGRATIONS:
        with conn.transaction():
            conn.execute("select pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            conn.execute(
                "create table if not exists scaleops_migrations ("
                " version integer primary key, name text not null,"
                " applied_at timestamptz not null default now())"
            )
            if migration.version in applied_versions(conn):
                continue
            conn.execute(migration.sql)
            conn.execute(
                "insert into scaleops_migrations (version, name) values (%s, %s)",
                (migration.version, migration.name),
            )
            done.append(migration)
    return done
