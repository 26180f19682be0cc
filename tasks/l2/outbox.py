"""The PostgreSQL outbox of on-chain operations (duty l2-batch-posting): add, count, claim, move.

Operations go `pending -> batched -> signed -> broadcast -> confirmed` (or `failed`); a batch row holds
the one transaction (nonce, signed raw bytes, hash, fees, block) that carries a group of operations.
Every state change that matters for exactly-once happens in one database transaction.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
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
    return NewOp(key, kind, payload)


def parse_jsonl(lines: Iterable[str]) -> Iterator[NewOp]:
    """`{"key": ..., "kind": ..., "payload": ...}` per line; blank lines skipped; errors name the line."""
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise OutboxInputError(f"line {number}: not JSON ({exc.msg})") from None
        if not isinstance(item, dict):
            raise OutboxInputError(f"line {number}: expected an object with key, kind, payload")
        yield validate_op(item.get("key"), item.get("kind"), item.get("payload"), f"line {number}")


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
