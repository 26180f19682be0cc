"""The PostgreSQL outbox of on-chain operations (duty l2-batch-posting): add, count, claim, move.

Operations go `pending -> batched -> signed -> broadcast -> confirmed` (or `failed`); a batch row holds
the transaction (nonce, signed raw bytes, hash, fees, block) that carries a group of operations, and
`l2_batch_txs` every transaction ever signed for it. Every SQL statement of the duty is here, as a plain
function taking a connection; every state change that matters for exactly-once is one function and one
database transaction (a savepoint when the caller holds a transaction already).
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from scaleops.core.migrations import migrate

KEY_MAX = 256
KIND_RE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
OP_STATUSES = ("pending", "batched", "signed", "broadcast", "confirmed", "failed")
LIVE_BATCH = ("signed", "broadcast", "mined")
ANCHOR_KIND = "anchor"
SHA256_HEX = re.compile(r"[0-9a-f]{64}")


class OutboxInputError(ValueError):
    """An operation to add is malformed; the message names the line/field."""


@dataclass(frozen=True)
class NewOp:
    key: str
    kind: str
    payload: Any


@dataclass(frozen=True)
class Op:
    id: int
    key: str
    kind: str
    payload: Any

    def payload_bytes(self) -> bytes:
        """What goes on chain as the OperationPosted payload (see onchain_payload)."""
        return onchain_payload(self.kind, self.payload)


@dataclass
class Attempt:
    """One transaction signed for a batch (the first, a fee-bumped replacement or a re-signed one)."""

    tx_hash: str
    raw: bytes
    max_fee_per_gas: int | None = None  # EVM: max fee per gas; Solana: the compute-unit price
    max_priority_fee_per_gas: int | None = None  # EVM only
    last_valid_block_height: int | None = None  # Solana only


@dataclass
class Batch:
    """A live batch (a transaction of it was signed, so it may land) with every transaction signed for it."""

    id: int
    status: str
    nonce: int | None  # EVM only
    op_count: int
    gas_limit: int | None  # EVM: gas limit; Solana: compute-unit limit
    max_fee_per_gas: int | None  # EVM: of the newest transaction; Solana: the compute-unit price
    est_l1_fee_wei: int
    block_number: int | None
    block_hash: str | None
    bumps: int
    last_sent_at: datetime | None
    attempts: list[Attempt] = field(default_factory=list)


@dataclass
class SignedTx:
    """A batch's signed transaction, as it is written ahead of its broadcast."""

    raw: bytes
    tx_hash: str
    gas_limit: int
    max_fee_per_gas: int
    est_l2_fee_wei: int
    nonce: int | None = None
    max_priority_fee_per_gas: int | None = None
    est_l1_fee_wei: int | None = None
    last_valid_block_height: int | None = None
    tx_bytes: int | None = None  # the batch's size when it is the signed transaction's (Solana)


@dataclass
class Landing:
    """Where and at what cost a batch's transaction landed."""

    tx_hash: str
    raw: bytes
    block_number: int  # EVM: block; Solana: slot
    gas_used: int | None  # EVM: gas; Solana: the compute-unit limit
    block_hash: str | None = None
    effective_gas_price: int | None = None
    l1_fee_wei: int | None = None
    fee_paid: int | None = None  # Solana: lamports charged


def onchain_payload(kind: str, payload: Any) -> bytes:
    """The bytes an operation's OperationPosted event carries, as small as the meaning allows, since
    every byte is paid for twice on a rollup (call data and log data):
    - an anchor of a SHA-256 digest, `{"sha256": "<64 lowercase hex>"}`, is its raw 32-byte digest;
    - anything else is the canonical JSON `{"k": kind, "p": payload}` (sorted keys, no spaces), with one
      trailing space if it would be exactly 32 bytes long, so that length alone tells the two apart.
    `decode_onchain_payload` is the inverse."""
    if kind == ANCHOR_KIND and isinstance(payload, dict) and payload.keys() == {"sha256"}:
        digest = payload["sha256"]
        if isinstance(digest, str) and SHA256_HEX.fullmatch(digest):
            return bytes.fromhex(digest)
    data = canonical_json({"k": kind, "p": payload})
    return data + b" " if len(data) == 32 else data


def decode_onchain_payload(data: bytes) -> tuple[str, Any]:
    """(kind, payload) of an OperationPosted payload written by onchain_payload."""
    if len(data) == 32:
        return ANCHOR_KIND, {"sha256": data.hex()}
    value = json.loads(data)
    if not isinstance(value, dict) or value.keys() != {"k", "p"}:
        raise ValueError("not an OperationPosted payload: expected 32 bytes or JSON {k, p}")
    return str(value["k"]), value["p"]


def canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def validate_op(key: Any, kind: Any, payload: Any, where: str = "") -> NewOp:
    prefix = f"{where}: " if where else ""
    if not isinstance(key, str) or not key.strip():
        raise OutboxInputError(f"{prefix}key: must be a non-empty string")
    if len(key) > KEY_MAX:
        raise OutboxInputError(f"{prefix}key: longer than {KEY_MAX} characters")
    if not isinstance(kind, str) or not KIND_RE.match(kind):
        raise OutboxInputError(f"{prefix}kind: must match {KIND_RE.pattern}")
    if payload is None:
        raise OutboxInputError(f"{prefix}payload: missing")
    try:
        json.dumps(payload, allow_nan=False)
    except ValueError:  # Python's json reads NaN and Infinity; JSON, PostgreSQL's jsonb and the chain do not
        raise OutboxInputError(f"{prefix}payload: NaN and Infinity are not JSON numbers") from None
    return NewOp(key, kind, payload)


def parse_jsonl(lines: Iterable[str]) -> Iterator[NewOp]:
    """`{"key": ..., "kind": ..., "payload": ...}` per line; blank lines skipped; errors name the line.
    A key twice in one input is an error naming both lines (which of the two was meant?)."""
    seen: dict[str, int] = {}
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise OutboxInputError(f"line {number}: not JSON ({exc.msg})") from None
        if not isinstance(item, dict):
            raise OutboxInputError(f"line {number}: expected an object with key, kind, payload")
        op = validate_op(item.get("key"), item.get("kind"), item.get("payload"), f"line {number}")
        if op.key in seen:
            raise OutboxInputError(f"line {number}: key {op.key!r} repeats line {seen[op.key]}")
        seen[op.key] = number
        yield op


def ensure_schema(conn: Any) -> None:
    migrate(conn)


def outbox_namespace(conn: Any) -> int:
    """The random namespace of this outbox's operation ids on chain (drawn once by migration 3)."""
    row = conn.execute("select namespace from l2_outbox").fetchone()
    if row is None:
        raise RuntimeError("l2_outbox has no namespace row: run `scaleops db migrate`")
    return int(row[0])


def add_operations(conn: Any, chain: str, ops: Iterable[NewOp], chunk: int = 1000) -> tuple[int, int]:
    """Insert operations; a key that exists already is left alone. Returns (added, already there)."""
    added = existing = 0
    buffer: list[NewOp] = []

    def flush() -> None:
        nonlocal added, existing
        if not buffer:
            return
        with conn.transaction():
            rows = conn.execute(
                "insert into l2_operations (key, chain, kind, payload)"
                " select * from unnest(%s::text[], %s::text[], %s::text[], %s::jsonb[])"
                " on conflict (key) do nothing returning key",
                (
                    [o.key for o in buffer],
                    [chain] * len(buffer),
                    [o.kind for o in buffer],
                    [json.dumps(o.payload) for o in buffer],
                ),
            ).fetchall()
        unique = len({o.key for o in buffer})
        added += len(rows)
        existing += unique - len(rows)
        buffer.clear()

    for op in ops:
        buffer.append(op)
        if len(buffer) >= chunk:
            flush()
    flush()
    return added, existing


def outbox_status(conn: Any, chain: str | None = None, now: datetime | None = None) -> dict[str, Any]:
    """{chain: {"counts": {status: n}, "oldest_pending_age_seconds": float | None}}."""
    where, args = ("where chain = %s", [chain]) if chain else ("", [])
    out: dict[str, Any] = {}
    rows = conn.execute(
        f"select chain, status, count(*), min(created_at) filter (where status = 'pending')"
        f" from l2_operations {where} group by chain, status order by chain, status",
        args,
    ).fetchall()
    clock = now or conn.execute("select now()").fetchone()[0]
    for name, status, count, oldest in rows:
        entry = out.setdefault(
            name, {"counts": dict.fromkeys(OP_STATUSES, 0), "oldest_pending_age_seconds": None}
        )
        entry["counts"][status] = int(count)
        if oldest is not None:
            entry["oldest_pending_age_seconds"] = round((clock - oldest).total_seconds(), 3)
    if chain and chain not in out:
        out[chain] = {"counts": dict.fromkeys(OP_STATUSES, 0), "oldest_pending_age_seconds": None}
    return out


# -- posting: the batch lifecycle (tasks/l2/poster.py) ----------------------------------------------------


@contextmanager
def posting_lock(conn: Any, key: str) -> Iterator[bool]:
    """Try the session-level advisory lock `key`; yields whether it is held, releases it on exit."""
    got = bool(conn.execute("select pg_try_advisory_lock(hashtextextended(%s, 0))", (key,)).fetchone()[0])
    try:
        yield got
    finally:
        if got:
            conn.execute("select pg_advisory_unlock(hashtextextended(%s, 0))", (key,))


def count_open(conn: Any, chain: str) -> int:
    """Operations of the chain not yet confirmed or failed."""
    row = conn.execute(
        "select count(*) from l2_operations where chain = %s and status not in ('confirmed', 'failed')",
        (chain,),
    ).fetchone()
    return int(row[0])


def release_unsigned_batches(conn: Any, chain: str, signer: str) -> int:
    """Batches claimed but never signed are abandoned and their operations pending again; returns how
    many operations."""
    with conn.transaction():
        released = conn.execute(
            "with b as (update l2_batches set status = 'abandoned', updated_at = now(),"
            "   error = 'released: not signed before the previous run stopped'"
            "   where chain = %s and signer = %s and status = 'batched' returning id)"
            " update l2_operations set status = 'pending', batch_id = null, updated_at = now()"
            " where batch_id in (select id from b) and status = 'batched'",
            (chain, signer),
        ).rowcount
    return int(released)


def live_batches(conn: Any, chain: str, signer: str) -> list[Batch]:
    """The signer's batches with a signed transaction (signed, broadcast or mined), oldest nonce (EVM)
    or id (Solana) first, each with every transaction signed for it, oldest first."""
    rows = conn.execute(
        "select id, status, nonce, op_count, gas_limit, max_fee_per_gas, coalesce(est_l1_fee_wei, 0),"
        " block_number, block_hash, bumps, last_sent_at from l2_batches"
        " where chain = %s and signer = %s and status in ('signed', 'broadcast', 'mined') order by nonce, id",
        (chain, signer),
    ).fetchall()
    batches = [
        Batch(r[0], r[1], r[2], r[3], r[4], optional_int(r[5]), int(r[6]), r[7], r[8], r[9], r[10])
        for r in rows
    ]
    if batches:
        attempts = conn.execute(
            "select batch_id, tx_hash, raw_tx, max_fee_per_gas, max_priority_fee_per_gas,"
            " last_valid_block_height from l2_batch_txs where batch_id = any(%s)"
            " order by created_at, tx_hash",
            ([b.id for b in batches],),
        ).fetchall()
        by_id = {b.id: b for b in batches}
        for a in attempts:
            by_id[a[0]].attempts.append(
                Attempt(a[1], bytes(a[2]), optional_int(a[3]), optional_int(a[4]), optional_int(a[5]))
            )
    return batches


def optional_int(value: Any) -> int | None:
    return None if value is None else int(value)


def pending_operations(conn: Any, chain: str, limit: int) -> list[Op]:
    """The oldest pending operations of the chain, locked (skipping those another session holds) until
    the caller's transaction ends."""
    rows = conn.execute(
        "select id, key, kind, payload from l2_operations where chain = %s and status = 'pending'"
        " order by id limit %s for update skip locked",
        (chain, limit),
    ).fetchall()
    return [Op(r[0], r[1], r[2], r[3]) for r in rows]


def create_batch(conn: Any, chain: str, signer: str, ops: Collection[Op], size_bytes: int) -> int:
    """A new `batched` batch holding `ops` (moved to `batched`); returns its id."""
    with conn.transaction():
        batch_id = conn.execute(
            "insert into l2_batches (chain, signer, status, op_count, calldata_bytes)"
            " values (%s, %s, 'batched', %s, %s) returning id",
            (chain, signer, len(ops), size_bytes),
        ).fetchone()[0]
        conn.execute(
            "update l2_operations set status = 'batched', batch_id = %s, updated_at = now()"
            " where id = any(%s)",
            (batch_id, [op.id for op in ops]),
        )
    return int(batch_id)


def batch_operations(conn: Any, batch_id: int) -> list[Op]:
    rows = conn.execute(
        "select id, key, kind, payload from l2_operations where batch_id = %s order by id", (batch_id,)
    ).fetchall()
    return [Op(r[0], r[1], r[2], r[3]) for r in rows]


def highest_live_nonce(conn: Any, chain: str, signer: str) -> int | None:
    """The highest nonce of the signer's live batches (EVM), None when there is none."""
    row = conn.execute(
        "select max(nonce) from l2_batches where chain = %s and signer = %s"
        " and status in ('signed', 'broadcast', 'mined')",
        (chain, signer),
    ).fetchone()
    return optional_int(row[0])


def release_batch(conn: Any, batch_id: int, reason: str) -> None:
    """An unsigned batch is abandoned with the reason; its operations are pending again."""
    with conn.transaction():
        conn.execute(
            "update l2_batches set status = 'abandoned', error = %s, updated_at = now() where id = %s",
            (reason, batch_id),
        )
        conn.execute(
            "update l2_operations set status = 'pending', batch_id = null, updated_at = now()"
            " where batch_id = %s and status = 'batched'",
            (batch_id,),
        )


def shrink_batch(conn: Any, batch_id: int, keep: Collection[int], size_bytes: int) -> int:
    """An unsigned batch keeps only the operations `keep` (ids); the others are pending again, for a
    later batch. Returns how many went back to pending."""
    with conn.transaction():
        released = conn.execute(
            "update l2_operations set status = 'pending', batch_id = null, updated_at = now()"
            " where batch_id = %s and status = 'batched' and not (id = any(%s))",
            (batch_id, list(keep)),
        ).rowcount
        conn.execute(
            "update l2_batches set op_count = %s, calldata_bytes = %s, updated_at = now()"
            " where id = %s and status = 'batched'",
            (len(keep), size_bytes, batch_id),
        )
    return int(released)


def insert_attempt(conn: Any, batch_id: int, tx: SignedTx) -> None:
    conn.execute(
        "insert into l2_batch_txs (tx_hash, batch_id, nonce, raw_tx, max_fee_per_gas,"
        " max_priority_fee_per_gas, last_valid_block_height) values (%s, %s, %s, %s, %s, %s, %s)",
        (
            tx.tx_hash,
            batch_id,
            tx.nonce,
            tx.raw,
            tx.max_fee_per_gas,
            tx.max_priority_fee_per_gas,
            tx.last_valid_block_height,
        ),
    )


def record_signed(conn: Any, batch_id: int, tx: SignedTx) -> None:
    """The write-ahead: the batch's signed transaction (raw bytes, hash, nonce, fees) is stored and its
    operations move to `signed`, in one transaction, before anything is broadcast."""
    with conn.transaction():
        conn.execute(
            "update l2_batches set status = 'signed', nonce = %s, tx_hash = %s, raw_tx = %s,"
            " gas_limit = %s, max_fee_per_gas = %s, max_priority_fee_per_gas = %s,"
            " est_l2_fee_wei = %s, est_l1_fee_wei = %s, last_valid_block_height = %s,"
            " calldata_bytes = coalesce(%s, calldata_bytes), signed_at = now(), updated_at = now()"
            " where id = %s and status = 'batched'",
            (
                tx.nonce,
                tx.tx_hash,
                tx.raw,
                tx.gas_limit,
                tx.max_fee_per_gas,
                tx.max_priority_fee_per_gas,
                tx.est_l2_fee_wei,
                tx.est_l1_fee_wei,
                tx.last_valid_block_height,
                tx.tx_bytes,
                batch_id,
            ),
        )
        insert_attempt(conn, batch_id, tx)
        conn.execute(
            "update l2_operations set status = 'signed', updated_at = now()"
            " where batch_id = %s and status = 'batched'",
            (batch_id,),
        )


def record_replacement(conn: Any, batch_id: int, tx: SignedTx) -> None:
    """A fee-bumped replacement at the batch's nonce (EVM), written ahead like the first transaction."""
    with conn.transaction():
        insert_attempt(conn, batch_id, tx)
        conn.execute(
            "update l2_batches set tx_hash = %s, raw_tx = %s, max_fee_per_gas = %s,"
            " max_priority_fee_per_gas = %s, bumps = bumps + 1, last_sent_at = now(), updated_at = now()"
            " where id = %s",
            (tx.tx_hash, tx.raw, tx.max_fee_per_gas, tx.max_priority_fee_per_gas, batch_id),
        )


def record_resigned(conn: Any, batch_id: int, tx: SignedTx) -> None:
    """The batch signed again with a fresh blockhash (Solana), written ahead; the batch is `signed`
    until it is broadcast."""
    with conn.transaction():
        insert_attempt(conn, batch_id, tx)
        conn.execute(
            "update l2_batches set status = 'signed', tx_hash = %s, raw_tx = %s, gas_limit = %s,"
            " est_l2_fee_wei = %s, last_valid_block_height = %s, updated_at = now() where id = %s",
            (tx.tx_hash, tx.raw, tx.gas_limit, tx.est_l2_fee_wei, tx.last_valid_block_height, batch_id),
        )


def mark_broadcast(conn: Any, batch_id: int) -> None:
    """The batch's transaction was handed to the node (again: `last_sent_at` moves)."""
    with conn.transaction():
        conn.execute(
            "update l2_batches set status = 'broadcast', broadcast_at = coalesce(broadcast_at, now()),"
            " last_sent_at = now(), updated_at = now()"
            " where id = %s and status in ('signed', 'broadcast')",
            (batch_id,),
        )
        conn.execute(
            "update l2_operations set status = 'broadcast', updated_at = now()"
            " where batch_id = %s and status = 'signed'",
            (batch_id,),
        )


def mark_mined(conn: Any, batch_id: int, landing: Landing) -> None:
    """A receipt was seen (EVM): the batch is `mined` at that block, not yet confirmed."""
    conn.execute(
        "update l2_batches set status = 'mined', tx_hash = %s, raw_tx = %s, block_number = %s,"
        " block_hash = %s, gas_used = %s, effective_gas_price = %s, l1_fee_wei = %s,"
        " updated_at = now() where id = %s",
        (
            landing.tx_hash,
            landing.raw,
            landing.block_number,
            landing.block_hash,
            landing.gas_used,
            landing.effective_gas_price,
            landing.l1_fee_wei,
            batch_id,
        ),
    )


def mark_reorged(conn: Any, batch_id: int) -> None:
    """The batch's block is gone (EVM): it is `broadcast` again, its reorg counted."""
    conn.execute(
        "update l2_batches set status = 'broadcast', block_number = null, block_hash = null,"
        " reorgs = reorgs + 1, last_sent_at = now(), updated_at = now() where id = %s",
        (batch_id,),
    )


def confirm_batch(
    conn: Any,
    batch_id: int,
    landing: Landing,
    confirmations: int,
    unposted: Collection[int] = (),
    unposted_error: str = "",
) -> int | None:
    """The batch and its operations `confirmed` where `landing` says, in one transaction; operations in
    `unposted` are `failed` with `unposted_error` instead. Returns the batch's operation count, or None
    if it was confirmed before (or is no longer live)."""
    with conn.transaction():
        if unposted:
            conn.execute(
                "update l2_operations set status = 'failed', error = %s, updated_at = now()"
                " where id = any(%s) and batch_id = %s and status <> 'confirmed'",
                (unposted_error, list(unposted), batch_id),
            )
        row = conn.execute(
            "update l2_batches set status = 'confirmed', tx_hash = %s, raw_tx = %s, block_number = %s,"
            " block_hash = %s, gas_used = %s, effective_gas_price = %s, l1_fee_wei = %s, fee_paid = %s,"
            " confirmations = %s, confirmed_at = now(), updated_at = now()"
            " where id = %s and status in ('broadcast', 'mined') returning op_count",
            (
                landing.tx_hash,
                landing.raw,
                landing.block_number,
                landing.block_hash,
                landing.gas_used,
                landing.effective_gas_price,
                landing.l1_fee_wei,
                landing.fee_paid,
                confirmations,
                batch_id,
            ),
        ).fetchone()
        conn.execute(
            "update l2_operations set status = 'confirmed', confirmed_at = now(), updated_at = now()"
            " where batch_id = %s and status <> 'failed'",
            (batch_id,),
        )
    return None if row is None else int(row[0])


def fail_batch(conn: Any, batch_id: int, reason: str) -> None:
    """The batch and all its operations `failed` with the reason (a reverted or refused payload)."""
    with conn.transaction():
        conn.execute(
            "update l2_batches set status = 'failed', error = %s, updated_at = now() where id = %s",
            (reason, batch_id),
        )
        conn.execute(
            "update l2_operations set status = 'failed', error = %s, updated_at = now() where batch_id = %s",
            (reason, batch_id),
        )


def requeue_batch(conn: Any, batch_id: int, reason: str) -> None:
    """The batch `failed` as a whole, none of its transactions can land: its operations are pending again."""
    with conn.transaction():
        conn.execute(
            "update l2_batches set status = 'failed', error = %s, updated_at = now() where id = %s",
            (reason, batch_id),
        )
        conn.execute(
            "update l2_operations set status = 'pending', batch_id = null, updated_at = now()"
            " where batch_id = %s",
            (batch_id,),
        )


def fail_unpostable(conn: Any, report: Any, chain: str, failures: list[tuple[int, str]]) -> None:
    """Operations no batch can ever carry (too big, unsupported kind): failed with their reason, counted
    in the chain's report and named in its problems. The caller holds the transaction."""
    for op_id, reason in failures:
        conn.execute(
            "update l2_operations set status = 'failed', error = %s, updated_at = now() where id = %s",
            (reason, op_id),
        )
    if failures:
        report.failed += len(failures)
        report.problems.append(f"{chain}: {len(failures)} operation(s) failed: {failures[0][1]}")
