"""The archive ledger in PostgreSQL (migration 4): every SQL statement of duty arweave-archival.

One row per unique content, keyed by its SHA-256: `queued -> signed -> posted -> confirmed -> verified`
(or `failed`/`corrupt`/`missing`). Bundles are written ahead: the signed transaction and its bytes are
stored (and its items moved to `signed`) in ONE transaction before anything is posted.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from scaleops.core.migrations import migrate

ITEM_STATUSES = ("queued", "signed", "posted", "confirmed", "verified", "failed", "corrupt", "missing")


@dataclass(frozen=True)
class NewContent:
    key: str
    body: bytes | None
    content_type: str = "application/octet-stream"
    sha256: str = ""
    size: int = 0
    source_url: str | None = None
    tags: tuple[tuple[str, str], ...] = ()  # given by hand, added to the data item's tags

    @staticmethod
    def of(
        key: str,
        body: bytes,
        content_type: str = "application/octet-stream",
        tags: Sequence[tuple[str, str]] = (),
    ) -> NewContent:
        digest = hashlib.sha256(body).hexdigest()
        return NewContent(key, body, content_type, digest, len(body), tags=tuple(tags))


@dataclass
class Item:
    sha256: str
    size: int
    content_type: str
    first_key: str
    keys: list[str]
    status: str
    item_id: str | None = None
    bundle_id: str | None = None
    ipfs_cid: str | None = None
    winston: int = 0
    reposts: int = 0
    body: bytes | None = None
    source_url: str | None = None
    tags: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class Bundle:
    tx_id: str
    mode: str
    status: str
    raw_tx: dict[str, Any]
    items: int
    size: int
    winston: int
    posted_height: int | None = None
    data: bytes = b""
    item_ids: list[str] = field(default_factory=list)


ITEM_COLUMNS = (
    "sha256, size, content_type, first_key, keys, status, item_id, bundle_id, ipfs_cid, winston, reposts,"
    " tags"
)
EXTRA = len(ITEM_COLUMNS.split(","))  # index of the first column selected after ITEM_COLUMNS


def ensure_schema(conn: Any) -> None:
    migrate(conn)


def _item(row: Sequence[Any], body: bytes | None = None, source_url: str | None = None) -> Item:
    sha, size, kind, first, keys, status, item_id, bundle_id, cid, winston, reposts, tags = row[:EXTRA]
    return Item(
        sha,
        size,
        kind,
        first,
        list(keys),
        status,
        item_id,
        bundle_id,
        cid,
        winston,
        reposts,
        bytes(body) if body is not None else None,
        source_url,
        [(str(n), str(v)) for n, v in tags or []],
    )


def add_content(conn: Any, contents: Iterable[NewContent]) -> tuple[int, int]:
    """Queue content; bytes already in the ledger only gain the new key (and, while still queued, the
    tags it does not carry yet). (added, deduplicated)."""
    added = deduplicated = 0
    with conn.transaction():
        for c in contents:
            tags = json.dumps([list(t) for t in c.tags])
            row = conn.execute(
                "insert into archive_items"
                " (sha256, size, content_type, keys, first_key, body, source_url, tags)"
                " values (%s, %s, %s, array[%s], %s, %s, %s, %s::jsonb)"
                " on conflict (sha256) do update set keys = case when %s::text = any(archive_items.keys)"
                "   then archive_items.keys else array_append(archive_items.keys, %s::text) end,"
                " tags = case when archive_items.status <> 'queued' then archive_items.tags"
                "   else archive_items.tags || (select coalesce(jsonb_agg(t), '[]'::jsonb)"
                "     from jsonb_array_elements(excluded.tags) t"
                "     where not archive_items.tags @> jsonb_build_array(t)) end,"
                " updated_at = now()"
                " returning (xmax = 0)",
                (c.sha256, c.size, c.content_type, c.key, c.key, c.body, c.source_url, tags, c.key, c.key),
            ).fetchone()
            if row[0]:
                added += 1
            else:
                deduplicated += 1
    return added, deduplicated


def source_watermark(conn: Any, name: str) -> str | None:
    row = conn.execute("select watermark from archive_sources where name = %s", (name,)).fetchone()
    return str(row[0]) if row and row[0] is not None else None


def set_source_watermark(conn: Any, name: str, watermark: str | None) -> None:
    """Record how far a source was collected (called only once what it found is in the ledger)."""
    conn.execute(
        "insert into archive_sources (name, watermark) values (%s, %s) on conflict (name) do update"
        " set watermark = coalesce(excluded.watermark, archive_sources.watermark), updated_at = now()",
        (name, watermark),
    )


def queued(conn: Any, limit: int = 10_000) -> list[Item]:
    rows = conn.execute(
        f"select {ITEM_COLUMNS}, body, source_url from archive_items where status = 'queued'"
        " order by created_at, sha256 limit %s",
        (limit,),
    ).fetchall()
    return [_item(r, r[EXTRA], r[EXTRA + 1]) for r in rows]


def items(conn: Any, statuses: Sequence[str], limit: int = 100_000) -> list[Item]:
    rows = conn.execute(
        f"select {ITEM_COLUMNS} from archive_items where status = any(%s) order by sha256 limit %s",
        (list(statuses), limit),
    ).fetchall()
    return [_item(r) for r in rows]


def item_body(conn: Any, sha256: str) -> tuple[bytes | None, str | None]:
    row = conn.execute("select body, source_url from archive_items where sha256 = %s", (sha256,)).fetchone()
    return (bytes(row[0]) if row and row[0] is not None else None, row[1] if row else None)


def write_ahead(conn: Any, bundle: Bundle, data: bytes, members: Sequence[tuple[str, str, int]]) -> None:
    """Store the signed bundle transaction and move its items (sha256, item id, winston) to `signed`,
    in one transaction, before anything is posted."""
    with conn.transaction():
        conn.execute(
            "insert into archive_bundles (tx_id, mode, status, raw_tx, data, items, bytes, winston)"
            " values (%s, %s, 'signed', %s, %s, %s, %s, %s)",
            (
                bundle.tx_id,
                bundle.mode,
                json.dumps(bundle.raw_tx),
                data,
                bundle.items,
                bundle.size,
                bundle.winston,
            ),
        )
        for sha, item_id, winston in members:
            updated = conn.execute(
                "update archive_items set status = 'signed', item_id = %s, bundle_id = %s, winston = %s,"
                " signed_at = now(), updated_at = now(), error = null"
                " where sha256 = %s and status = 'queued'",
                (item_id, bundle.tx_id, winston, sha),
            )
            if updated.rowcount != 1:
                raise RuntimeError(f"archive item {sha} is no longer queued: another run signed it")


def adopt(conn: Any, found: Sequence[tuple[str, str, str | None]]) -> int:
    """Queued items found already archived (sha256, item id, bundle id or None): `confirmed` with that
    id, nothing paid by this ledger. Returns how many were adopted."""
    n = 0
    with conn.transaction():
        for sha, item_id, bundle_id in found:
            cur = conn.execute(
                "update archive_items set status = 'confirmed', item_id = %s, bundle_id = %s, winston = 0,"
                " confirmed_at = now(), updated_at = now(), error = null"
                " where sha256 = %s and status = 'queued'",
                (item_id, bundle_id, sha),
            )
            n += cur.rowcount
    return n


def live_bundles(conn: Any) -> list[Bundle]:
    """Bundles signed or posted and not yet confirmed (with their bytes, to post again if needed)."""
    rows = conn.execute(
        "select tx_id, mode, status, raw_tx, items, bytes, winston, posted_height, data from archive_bundles"
        " where status in ('signed', 'posted') order by created_at"
    ).fetchall()
    return [Bundle(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], bytes(r[8])) for r in rows]


def mark_posted(
    conn: Any,
    tx_id: str,
    height: int | None,
    receipts: dict[str, Any] | None = None,
    winston: int | None = None,
) -> None:
    """The bundle reached the gateway (or, mode bundler, every item reached the upload service: its
    receipts kept, and what the service charged in place of the estimate written ahead)."""
    with conn.transaction():
        conn.execute(
            "update archive_bundles set status = 'posted', posted_at = coalesce(posted_at, now()),"
            " posted_height = coalesce(posted_height, %s), receipt = coalesce(%s::jsonb, receipt),"
            " winston = coalesce(%s, winston) where tx_id = %s and status = 'signed'",
            (height, json.dumps(receipts) if receipts is not None else None, winston, tx_id),
        )
        conn.execute(
            "update archive_items set status = 'posted', posted_at = now(), updated_at = now()"
            " where bundle_id = %s and status = 'signed'",
            (tx_id,),
        )


def mark_confirmed(conn: Any, tx_id: str, block_height: int | None) -> int:
    with conn.transaction():
        conn.execute(
            "update archive_bundles set status = 'confirmed', block_height = %s, confirmed_at = now()"
            " where tx_id = %s",
            (block_height, tx_id),
        )
        cur = conn.execute(
            "update archive_items set status = 'confirmed', confirmed_at = now(), updated_at = now()"
            " where bundle_id = %s and status in ('signed', 'posted')",
            (tx_id,),
        )
        return int(cur.rowcount)


def confirm_items(conn: Any, batch: str, confirmed: Sequence[tuple[str, str]]) -> int:
    """Mode bundler: items (id, the bundle the service put it in) with enough confirmations become
    `confirmed` in that bundle; the batch is confirmed once none of its items waits. Returns the count."""
    n = 0
    with conn.transaction():
        for item_id, bundle_id in confirmed:
            cur = conn.execute(
                "update archive_items set status = 'confirmed', bundle_id = %s, confirmed_at = now(),"
                " updated_at = now() where item_id = %s and bundle_id = %s"
                " and status in ('signed', 'posted')",
                (bundle_id, item_id, batch),
            )
            n += cur.rowcount
        conn.execute(
            "update archive_bundles set status = 'confirmed', confirmed_at = now() where tx_id = %s"
            " and not exists (select 1 from archive_items where bundle_id = %s"
            "   and status in ('signed', 'posted'))",
            (batch, batch),
        )
    return n


def mark_dropped(conn: Any, tx_id: str, max_reposts: int = 1) -> tuple[list[str], list[str]]:
    """The gateway forgot `tx_id`: its items go back to the queue (to be signed anew) once; items
    already re-posted `max_reposts` times fail. (re-queued keys, failed keys)."""
    with conn.transaction():
        conn.execute("update archive_bundles set status = 'dropped' where tx_id = %s", (tx_id,))
        requeued = conn.execute(
            "update archive_items set status = 'queued', item_id = null, bundle_id = null, winston = 0,"
            " reposts = reposts + 1, updated_at = now() where bundle_id = %s and reposts < %s"
            " returning first_key",
            (tx_id, max_reposts),
        ).fetchall()
        failed = conn.execute(
            "update archive_items set status = 'failed', error = 'dropped by the gateway after a re-post',"
            " updated_at = now() where bundle_id = %s and status in ('signed', 'posted') returning first_key",
            (tx_id,),
        ).fetchall()
    return [r[0] for r in requeued], [r[0] for r in failed]


def set_item_status(conn: Any, updates: Sequence[tuple[str, str, str | None]]) -> None:
    """(sha256, status, error) for each item; `verified` stamps verified_at."""
    with conn.transaction():
        for sha, status, error in updates:
            conn.execute(
                "update archive_items set status = %s, error = %s, updated_at = now(),"
                " verified_at = case when %s = 'verified' then now() else verified_at end"
                " where sha256 = %s",
                (status, error, status, sha),
            )


def set_cids(conn: Any, cids: Sequence[tuple[str, str, dict[str, Any]]]) -> None:
    with conn.transaction():
        for sha, cid, params in cids:
            conn.execute(
                "update archive_items set ipfs_cid = %s, ipfs_params = %s, updated_at = now()"
                " where sha256 = %s",
                (cid, json.dumps(params), sha),
            )


def bundle_data(conn: Any, tx_id: str) -> bytes | None:
    row = conn.execute("select data from archive_bundles where tx_id = %s", (tx_id,)).fetchone()
    return bytes(row[0]) if row else None


def winston_paid(conn: Any) -> int:
    row = conn.execute(
        "select coalesce(sum(winston), 0) from archive_bundles where status in ('posted', 'confirmed')"
    ).fetchone()
    return int(row[0])


def status_counts(conn: Any) -> dict[str, Any]:
    counts = dict.fromkeys(ITEM_STATUSES, 0)
    for status, n in conn.execute("select status, count(*) from archive_items group by status").fetchall():
        counts[status] = int(n)
    paid = winston_paid(conn)
    return {"items": counts, "winston_paid": paid}


def items_of_bundle(conn: Any, tx_id: str) -> list[Item]:
    rows = conn.execute(
        f"select {ITEM_COLUMNS} from archive_items where bundle_id = %s order by sha256", (tx_id,)
    ).fetchall()
    return [_item(r) for r in rows]


def without_cid(conn: Any, limit: int = 1000) -> list[Item]:
    """Items on their way to Arweave (or there) that are not on IPFS yet, with their bytes if kept."""
    rows = conn.execute(
        f"select {ITEM_COLUMNS}, body, source_url from archive_items where ipfs_cid is null"
        " and status in ('signed', 'posted', 'confirmed', 'verified') order by sha256 limit %s",
        (limit,),
    ).fetchall()
    return [_item(r, r[EXTRA], r[EXTRA + 1]) for r in rows]


def with_cid(conn: Any, statuses: Sequence[str]) -> list[tuple[Item, dict[str, Any]]]:
    rows = conn.execute(
        f"select {ITEM_COLUMNS}, ipfs_params from archive_items where ipfs_cid is not null"
        " and status = any(%s) order by sha256",
        (list(statuses),),
    ).fetchall()
    return [(_item(r), dict(r[EXTRA] or {})) for r in rows]


def requeue(conn: Any, shas: Sequence[str]) -> int:
    """Repair: archive these items again (a new data item, paid again: the old one is lost or corrupt)."""
    cur = conn.execute(
        "update archive_items set status = 'queued', item_id = null, bundle_id = null, winston = 0,"
        " updated_at = now() where sha256 = any(%s) and status in ('corrupt', 'missing')",
        (list(shas),),
    )
    return int(cur.rowcount)
