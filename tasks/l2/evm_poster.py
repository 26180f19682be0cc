"""The exactly-once posting protocol of duty l2-batch-posting, for one EVM chain and one signer.

    lock (chain, signer) -> reconcile -> drain: claim + pack -> quote fees (cap) -> nonce + sign
    -> persist raw tx + hash with the operations moved to `signed` (ONE transaction) -> broadcast
    -> track: receipts, fee bumps at the same nonce, confirmations, reorg re-checks

Why it is exactly once: nothing is broadcast that is not first durably recorded with its nonce; every
signed transaction of a batch (the first and each replacement) is kept, so whichever one is mined is
found; a batch that has a signed transaction is never signed again with another nonce or payload; and
the contract itself skips an operation it already posted (by the outbox's namespace and the operation's id,
one id per key; an operation skipped on chain that was never posted before is failed loudly, see
`skipped_unposted`). Every step is safe to repeat, so a crash (or a
task retry) at any point is followed by a run that reconciles and carries on.

`SCALEOPS_L2_CRASH_AT=<step>` makes the process SIGKILL itself at that step (crash tests only).
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from pydantic import BaseModel, Field

from scaleops.core.settings import ChainSettings
from tasks.l2 import evm
from tasks.l2.fees import bumped, eip1559_fees
from tasks.l2.outbox import Op, fail_unpostable, outbox_namespace

CRASH_ENV = "SCALEOPS_L2_CRASH_AT"
CRASH_STEPS = ("batched", "signed", "sent", "broadcast", "mined", "confirmed", "replaced")
MIN_BUMP_PERCENT = 10
# A node can report the signer's nonce past ours a moment before it serves the receipt that explains it:
# "another transaction took our nonce" is only concluded after this long without a receipt.
NONCE_TAKEN_GRACE_SECONDS = 5.0


UNPOSTED_ERROR = (
    "skipped on chain as already posted, but no OperationPosted of its key exists: its outbox id was "
    "used before with this namespace (outbox database reset or restored?); queue it again under a new key"
)


def crashpoint(step: str) -> None:
    """Failpoint for the crash tests: die here, as abruptly as a power cut, when asked to."""
    if os.environ.get(CRASH_ENV) == step:
        os.kill(os.getpid(), signal.SIGKILL)


B = TypeVar("B")


def track_live_batches(
    live_batches: Callable[[], list[B]], check: Callable[[B], None], opts: PostOptions
) -> None:
    """Check every live batch (receipts, confirmations, replacements) until none is left or
    `opts.wait_seconds` have passed; what is still live then is picked up by the next run."""
    deadline = time.monotonic() + opts.wait_seconds
    while True:
        live = live_batches()
        if not live:
            return
        for batch in live:
            check(batch)
        if not live_batches() or time.monotonic() >= deadline:
            return
        time.sleep(opts.poll_seconds)


class PostingError(RuntimeError):
    """The chain cannot be posted to as configured (message names the setting, never a secret)."""


@dataclass
class PostOptions:
    limit: int = 10_000  # operations drained per run
    max_batch_ops: int | None = None  # override of the chain's MAX_BATCH_OPS
    wait_seconds: float = 120.0  # how long to wait for receipts and confirmations
    stuck_after_seconds: float = 30.0  # replace a transaction not mined after this long
    bump_percent: int = 12  # fee raise of a replacement (>= 10, what geth-style pools demand)
    max_bumps: int = 5
    min_priority_fee_wei: int = 1_000_000  # 0.001 gwei
    poll_seconds: float = 0.25
    dry_run: bool = False


class ChainReport(BaseModel):
    chain: str
    kind: str
    signer: str | None = None
    ops_posted: int = 0
    batches: int = 0
    txs: int = 0
    gas_used: int = 0
    l2_fee_wei: int = 0
    l1_fee_wei: int = 0
    fee_per_op: int = 0
    bumped: int = 0
    reorged: int = 0
    failed: int = 0
    pending: int = 0
    fee_capped: int = 0
    resigned: int = Field(default=0, description="Solana: re-signed after the blockhash expired unseen")
    lamports: int | None = Field(default=None, description="Solana: fees paid this run")
    max_tx_bytes: int | None = Field(default=None, description="Solana: largest transaction signed")
    batch_hashes: list[str] = Field(default_factory=list)
    problems: list[str] = Field(default_factory=list)


@dataclass
class Batch:
    id: int
    status: str
    nonce: int | None
    op_count: int
    gas_limit: int | None
    est_l1_fee_wei: int
    block_number: int | None
    block_hash: str | None
    bumps: int
    last_sent_at: datetime | None
    attempts: list[dict[str, Any]] = field(default_factory=list)


def lock_key(chain: str, signer: str) -> str:
    return f"scaleops.l2:{chain}:{signer.lower()}"


class Poster:
    def __init__(
        self,
        conn: Any,
        w3: Any,
        chain: str,
        cfg: ChainSettings,
        options: PostOptions,
        log: logging.Logger | logging.LoggerAdapter[Any] | None = None,
    ):
        if cfg.kind == "solana":
            raise PostingError(f"chain {chain}: kind solana is posted by the Solana poster, not the EVM one")
        missing = [n for n in ("contract", "signer_address", "signer_key") if getattr(cfg, n) is None]
        if missing:
            names = ", ".join(f"SCALEOPS_CHAINS__{chain.upper()}__{n.upper()}" for n in missing)
            raise PostingError(f"chain {chain}: {names} not set")
        if options.bump_percent < MIN_BUMP_PERCENT:
            raise PostingError(f"bump_percent must be at least {MIN_BUMP_PERCENT}")
        from eth_utils import to_checksum_address

        self.conn, self.w3, self.chain, self.cfg, self.opts = conn, w3, chain, cfg, options
        self.log = log or logging.getLogger(__name__)
        self.signer = to_checksum_address(str(cfg.signer_address))
        self.contract = to_checksum_address(str(cfg.contract))
        self.report = ChainReport(chain=chain, kind=cfg.kind, signer=self.signer)
        self.max_ops = min(options.max_batch_ops or cfg.max_batch_ops, cfg.max_batch_ops)
        self._capped_bump_noted: set[int] = set()
        self._nonce_passed_at: dict[int, float] = {}
        self.outbox = 0  # the outbox's namespace on chain, read once the lock is held

    # -- the run -------------------------------------------------------------------------------------
    def run(self) -> ChainReport:
        key = lock_key(self.chain, self.signer)
        got = self.conn.execute("select pg_try_advisory_lock(hashtextextended(%s, 0))", (key,)).fetchone()[0]
        if not got:
            self.report.problems.append(
                f"{self.chain}: another run holds the posting lock for signer {self.signer}; nothing done"
            )
            self.report.pending = self.count_open()
            return self.report
        try:
            self.outbox = outbox_namespace(self.conn)
            if not self.opts.dry_run:  # a dry run signs and sends nothing, not even a replacement
                self.check_from_block()
                self.reconcile()
                self.drain()
                self.track()
        finally:
            self.conn.execute("select pg_advisory_unlock(hashtextextended(%s, 0))", (key,))
        self.report.pending = self.count_open()
        total = self.report.l2_fee_wei + self.report.l1_fee_wei
        self.report.fee_per_op = total // self.report.ops_posted if self.report.ops_posted else 0
        return self.report

    def check_from_block(self) -> None:
        """FROM_BLOCK past the head means another chain or a typo; searched from there, the safeguard
        of skipped_unposted would find no earlier post and fail operations that are on chain."""
        last = evm.head(self.w3) if self.cfg.from_block else 0
        if self.cfg.from_block > last:
            name = f"SCALEOPS_CHAINS__{self.chain.upper()}__FROM_BLOCK"
            raise PostingError(
                f"chain {self.chain}: {name} {self.cfg.from_block} is past the chain's head {last}:"
                " set it to the OperationLog's deployment block"
            )

    def count_open(self) -> int:
        row = self.conn.execute(
            "select count(*) from l2_operations where chain = %s and status not in ('confirmed', 'failed')",
            (self.chain,),
        ).fetchone()
        return int(row[0])

    # -- reconcile -----------------------------------------------------------------------------------
    def reconcile(self) -> None:
        """Batches left unsigned go back to pending; every live batch is checked once (receipt,
        rebroadcast of a signed-but-unseen transaction) before anything new is signed."""
        with self.conn.transaction():
            released = self.conn.execute(
                "with b as (update l2_batches set status = 'abandoned', updated_at = now(),"
                "   error = 'released: not signed before the previous run stopped'"
                "   where chain = %s and signer = %s and status = 'batched' returning id)"
                " update l2_operations set status = 'pending', batch_id = null, updated_at = now()"
                " where batch_id in (select id from b) and status = 'batched'",
                (self.chain, self.signer),
            ).rowcount
        if released:
            self.log.info("%s: %d operation(s) of unsigned batches back to pending", self.chain, released)
        live = self.live_batches()
        if live:
            self.log.info("%s: reconciling %d live batch(es)", self.chain, len(live))
        for batch in live:
            self.check(batch)

    def live_batches(self) -> list[Batch]:
        rows = self.conn.execute(
            "select id, status, nonce, op_count, gas_limit, coalesce(est_l1_fee_wei, 0), block_number,"
            " block_hash, bumps, last_sent_at from l2_batches"
            " where chain = %s and signer = %s and status in ('signed', 'broadcast', 'mined') order by nonce",
            (self.chain, self.signer),
        ).fetchall()
        batches = [Batch(r[0], r[1], r[2], r[3], r[4], int(r[5]), r[6], r[7], r[8], r[9]) for r in rows]
        if batches:
            attempts = self.conn.execute(
                "select batch_id, tx_hash, raw_tx, max_fee_per_gas, max_priority_fee_per_gas, created_at"
                " from l2_batch_txs where batch_id = any(%s) order by created_at, tx_hash",
                ([b.id for b in batches],),
            ).fetchall()
            by_id = {b.id: b for b in batches}
            for a in attempts:
                by_id[a[0]].attempts.append(
                    {"hash": a[1], "raw": bytes(a[2]), "max_fee": int(a[3]), "priority": int(a[4])}
                )
        return batches

    # -- drain ---------------------------------------------------------------------------------------
    def drain(self) -> None:
        remaining = self.opts.limit
        while remaining > 0:
            claimed = self.claim(min(self.max_ops, remaining))
            if claimed is None:
                return
            batch_id, ops = claimed
            crashpoint("batched")
            if not self.sign_and_send(batch_id, ops):
                return
            remaining -= len(ops)

    def claim(self, limit: int) -> tuple[int, list[Op]] | None:
        """Pack the oldest pending operations into a new batch (status `batched`), in one transaction.
        An operation that cannot fit even alone is failed with the reason."""
        with self.conn.transaction():
            rows = self.conn.execute(
                "select id, key, kind, payload from l2_operations where chain = %s and status = 'pending'"
                " order by id limit %s for update skip locked",
                (self.chain, limit),
            ).fetchall()
            if not rows:
                return None
            ops = [Op(r[0], r[1], r[2], r[3]) for r in rows]
            packed: list[Op] = []
            packed_bytes = 0  # the packed operations' bytes in postBatch's `ops`
            too_big: list[tuple[int, str]] = []
            for op in ops:
                size = len(op.payload_bytes())
                alone = evm.calldata_size([size])
                if alone > self.cfg.max_batch_bytes:
                    reason = f"{alone} calldata bytes > MAX_BATCH_BYTES {self.cfg.max_batch_bytes}"
                    too_big.append((op.id, f"payload does not fit: {reason}"))
                    continue
                if size > evm.MAX_PAYLOAD_BYTES:
                    reason = f"{size} bytes > {evm.MAX_PAYLOAD_BYTES} per operation"
                    too_big.append((op.id, f"payload does not fit: {reason}"))
                    continue
                grown = packed_bytes + evm.OP_HEADER_BYTES + size
                if evm.calldata_bytes(grown) > self.cfg.max_batch_bytes:
                    break
                packed.append(op)
                packed_bytes = grown
            fail_unpostable(self.conn, self.report, self.chain, too_big)
            if not packed:
                return (0, []) if too_big else None
            batch_id = self.conn.execute(
                "insert into l2_batches (chain, signer, status, op_count, calldata_bytes)"
                " values (%s, %s, 'batched', %s, %s) returning id",
                (self.chain, self.signer, len(packed), evm.calldata_bytes(packed_bytes)),
            ).fetchone()[0]
            self.conn.execute(
                "update l2_operations set status = 'batched', batch_id = %s, updated_at = now()"
                " where id = any(%s)",
                (batch_id, [op.id for op in packed]),
            )
        return int(batch_id), packed

    def next_nonce(self) -> int:
        chain_nonce = evm.nonce_at(self.w3, self.signer, "pending")
        row = self.conn.execute(
            "select max(nonce) from l2_batches where chain = %s and signer = %s"
            " and status in ('signed', 'broadcast', 'mined')",
            (self.chain, self.signer),
        ).fetchone()
        return max(chain_nonce, row[0] + 1) if row[0] is not None else chain_nonce

    def release(self, batch_id: int, reason: str) -> None:
        with self.conn.transaction():
            self.conn.execute(
                "update l2_batches set status = 'abandoned', error = %s, updated_at = now() where id = %s",
                (reason, batch_id),
            )
            self.conn.execute(
                "update l2_operations set status = 'pending', batch_id = null, updated_at = now()"
                " where batch_id = %s and status = 'batched'",
                (batch_id,),
            )

    def sign_and_send(self, batch_id: int, ops: list[Op]) -> bool:
        """Quote, check the cap, sign, persist, broadcast. False: stop draining (fee cap)."""
        if not ops:
            return True
        calldata = evm.post_batch_calldata(
            self.outbox, batch_id, [o.id for o in ops], [o.key for o in ops], [o.payload_bytes() for o in ops]
        )
        nonce = self.next_nonce()
        quote = evm.quote_fees(
            self.w3,
            self.cfg.kind,
            self.signer,
            self.contract,
            calldata,
            self.cfg.chain_id,
            nonce,
            self.opts.min_priority_fee_wei,
        )
        if quote.total_wei > self.cfg.max_fee_per_batch:
            reason = (
                f"fee cap: batch of {len(ops)} ops would cost up to {quote.total_wei} wei "
                f"(L2 {quote.l2_fee_wei} + L1 {quote.l1_fee_wei}) > MAX_FEE_PER_BATCH "
                f"{self.cfg.max_fee_per_batch}"
            )
            self.release(batch_id, reason)
            self.report.fee_capped += len(ops)
            self.report.problems.append(f"{self.chain}: {reason}; operations left pending")
            self.log.warning("%s: %s", self.chain, reason)
            return False
        fields = evm.tx_fields(
            self.cfg.chain_id,
            nonce,
            self.contract,
            calldata,
            quote.gas_limit,
            quote.max_fee_per_gas,
            quote.max_priority_fee_per_gas,
        )
        raw, tx_hash = evm.sign(fields, self.cfg.signer_key.get_secret_value())  # type: ignore[union-attr]
        with self.conn.transaction():
            self.conn.execute(
                "update l2_batches set status = 'signed', nonce = %s, tx_hash = %s, raw_tx = %s,"
                " gas_limit = %s, max_fee_per_gas = %s, max_priority_fee_per_gas = %s,"
                " est_l2_fee_wei = %s, est_l1_fee_wei = %s, signed_at = now(), updated_at = now()"
                " where id = %s and status = 'batched'",
                (
                    nonce,
                    tx_hash,
                    raw,
                    quote.gas_limit,
                    quote.max_fee_per_gas,
                    quote.max_priority_fee_per_gas,
                    quote.l2_fee_wei,
                    quote.l1_fee_wei,
                    batch_id,
                ),
            )
            self.conn.execute(
                "insert into l2_batch_txs (tx_hash, batch_id, nonce, raw_tx, max_fee_per_gas,"
                " max_priority_fee_per_gas) values (%s, %s, %s, %s, %s, %s)",
                (tx_hash, batch_id, nonce, raw, quote.max_fee_per_gas, quote.max_priority_fee_per_gas),
            )
            self.conn.execute(
                "update l2_operations set status = 'signed', updated_at = now()"
                " where batch_id = %s and status = 'batched'",
                (batch_id,),
            )
        self.report.txs += 1
        crashpoint("signed")
        if not self.broadcast(batch_id, raw, nonce):
            return False
        self.log.info(
            "%s: batch %d (%d ops) sent at nonce %d: %s", self.chain, batch_id, len(ops), nonce, tx_hash
        )
        return True

    def rejected(self, batch_id: int, nonce: int, reason: str) -> None:
        """The node refused a signed transaction outright (not "already known", not "nonce too low"): it
        is not in the pool and cannot be mined as it is, so the batch fails, its nonce is free again and
        its operations go back to pending (should the refused bytes ever land after all, the contract
        skips the operations they carry a second time)."""
        self.requeue(batch_id, f"rejected by the node: {reason}")
        self.report.problems.append(
            f"{self.chain}: batch {batch_id} at nonce {nonce} was rejected by the node ({reason}); "
            "its operations are pending again"
        )

    def requeue(self, batch_id: int, reason: str) -> None:
        """The batch failed as a whole and none of its transactions can land: its operations go back
        to pending, to be posted in a later batch."""
        with self.conn.transaction():
            self.conn.execute(
                "update l2_batches set status = 'failed', error = %s, updated_at = now() where id = %s",
                (reason, batch_id),
            )
            self.conn.execute(
                "update l2_operations set status = 'pending', batch_id = null, updated_at = now()"
                " where batch_id = %s",
                (batch_id,),
            )

    def broadcast(self, batch_id: int, raw: bytes, nonce: int) -> bool:
        """Send the signed bytes; False when the node rejects them outright (see `rejected`)."""
        try:
            evm.send_raw(self.w3, raw)
        except evm.RpcFailure as exc:
            self.rejected(batch_id, nonce, str(exc))
            return False
        crashpoint("sent")
        with self.conn.transaction():
            self.conn.execute(
                "update l2_batches set status = 'broadcast', broadcast_at = coalesce(broadcast_at, now()),"
                " last_sent_at = now(), updated_at = now()"
                " where id = %s and status in ('signed', 'broadcast')",
                (batch_id,),
            )
            self.conn.execute(
                "update l2_operations set status = 'broadcast', updated_at = now()"
                " where batch_id = %s and status = 'signed'",
                (batch_id,),
            )
        crashpoint("broadcast")
        return True

    # -- track ---------------------------------------------------------------------------------------
    def track(self) -> None:
        track_live_batches(self.live_batches, self.check, self.opts)

    def check(self, batch: Batch) -> None:
        if not batch.attempts:  # cannot happen: signed batches always have their transaction recorded
            raise PostingError(f"batch {batch.id} is {batch.status} without a signed transaction")
        latest = batch.attempts[-1]
        if batch.status == "signed":  # signed, maybe sent: (re)broadcast the very same bytes
            self.broadcast(batch.id, latest["raw"], int(batch.nonce or 0))
            return
        found = self.find_receipt(batch)
        if found is not None:
            self.on_receipt(batch, *found)
            return
        if batch.status == "mined":  # it had a receipt and lost it: a reorg
            self.on_reorg(batch, "receipt vanished")
            return
        if evm.nonce_at(self.w3, self.signer, "latest") > int(batch.nonce or 0):
            found = self.find_receipt(batch)  # mined between the two calls?
            if found is not None:
                self.on_receipt(batch, *found)
                return
            first_seen = self._nonce_passed_at.setdefault(batch.id, time.monotonic())
            if time.monotonic() - first_seen >= NONCE_TAKEN_GRACE_SECONDS:
                self.on_nonce_taken(batch)
            return
        age = (datetime.now(UTC) - batch.last_sent_at).total_seconds() if batch.last_sent_at else 0.0
        if age >= self.opts.stuck_after_seconds and batch.bumps < self.opts.max_bumps:
            self.replace(batch, latest)
        elif not evm.transaction_known(self.w3, latest["hash"]):  # dropped from the pool: send it again
            evm.send_raw(self.w3, latest["raw"])

    def find_receipt(self, batch: Batch) -> tuple[dict[str, Any], dict[str, Any]] | None:
        for attempt in reversed(batch.attempts):
            found = evm.receipt(self.w3, attempt["hash"])
            if found:
                return attempt, found
        return None

    def on_receipt(self, batch: Batch, attempt: dict[str, Any], rcpt: dict[str, Any]) -> None:
        number, block_hash = int(rcpt["blockNumber"], 16), str(rcpt["blockHash"])
        if int(rcpt["status"], 16) != 1:
            self.fail_batch(batch, f"transaction {attempt['hash']} reverted in block {number}")
            return
        if batch.status != "mined" or batch.block_hash != block_hash:
            gas_used = int(rcpt["gasUsed"], 16)
            price = int(rcpt.get("effectiveGasPrice") or "0x0", 16)
            l1 = int(rcpt["l1Fee"], 16) if rcpt.get("l1Fee") else batch.est_l1_fee_wei
            with self.conn.transaction():
                self.conn.execute(
                    "update l2_batches set status = 'mined', tx_hash = %s, raw_tx = %s, block_number = %s,"
                    " block_hash = %s, gas_used = %s, effective_gas_price = %s, l1_fee_wei = %s,"
                    " updated_at = now() where id = %s",
                    (attempt["hash"], attempt["raw"], number, block_hash, gas_used, price, l1, batch.id),
                )
            batch.status, batch.block_number, batch.block_hash = "mined", number, block_hash
            crashpoint("mined")
        confirmations = evm.head(self.w3) - number + 1
        if confirmations < self.cfg.confirmations:
            return
        if evm.block_hash_at(self.w3, number) != block_hash:
            self.on_reorg(batch, f"block {number} changed hash")
            return
        unposted = self.skipped_unposted(batch, rcpt)
        with self.conn.transaction():
            if unposted:
                self.conn.execute(
                    "update l2_operations set status = 'failed', error = %s, updated_at = now()"
                    " where id = any(%s) and batch_id = %s and status <> 'confirmed'",
                    (UNPOSTED_ERROR, list(unposted), batch.id),
                )
            row = self.conn.execute(
                "update l2_batches set status = 'confirmed', confirmations = %s, confirmed_at = now(),"
                " updated_at = now() where id = %s and status = 'mined'"
                " returning op_count, gas_used, effective_gas_price, l1_fee_wei, tx_hash",
                (confirmations, batch.id),
            ).fetchone()
            self.conn.execute(
                "update l2_operations set status = 'confirmed', confirmed_at = now(), updated_at = now()"
                " where batch_id = %s and status <> 'failed'",
                (batch.id,),
            )
        crashpoint("confirmed")
        if row:
            ops, gas, price, l1, tx_hash = row
            if unposted:
                self.report.failed += len(unposted)
                self.report.problems.append(
                    f"{self.chain}: batch {batch.id}: {len(unposted)} operation(s) failed: {UNPOSTED_ERROR}"
                )
            self.report.ops_posted += int(ops) - len(unposted)
            self.report.batches += 1
            self.report.gas_used += int(gas)
            self.report.l2_fee_wei += int(gas) * int(price)
            self.report.l1_fee_wei += int(l1 or 0)
            self.report.batch_hashes.append(str(tx_hash))

    def skipped_unposted(self, batch: Batch, rcpt: dict[str, Any]) -> set[int]:
        """Ids of the batch's operations the contract skipped although no OperationPosted of their opKey
        exists anywhere on chain: their (namespace, id) bit was set by another operation, which only
        happens if the outbox reused ids (a database reset or restored from an old backup while the
        contract kept its state). Such an operation is NOT posted; it must fail loudly, never be
        confirmed. The common case (every operation has its event in this receipt) costs no call."""
        topic = evm.OPERATION_POSTED_TOPIC
        contract = self.contract.lower()
        in_receipt = {
            str(log["topics"][1])
            for log in rcpt.get("logs") or []
            if str(log.get("address", "")).lower() == contract and log["topics"] and log["topics"][0] == topic
        }
        if len(in_receipt) >= batch.op_count:
            return set()
        rows = self.conn.execute(
            "select id, key from l2_operations where batch_id = %s", (batch.id,)
        ).fetchall()
        missing = {"0x" + evm.op_key(str(key)).hex(): int(op_id) for op_id, key in rows}
        missing = {topic: op_id for topic, op_id in missing.items() if topic not in in_receipt}
        found = evm.posted_op_keys(
            self.w3, self.contract, list(missing), self.cfg.from_block, self.cfg.logs_block_range
        )
        unposted = {op_id for topic, op_id in missing.items() if topic not in found}
        if unposted:
            self.log.error(
                "%s: batch %d: %d operation(s) skipped by the contract but never posted: %s",
                self.chain,
                batch.id,
                len(unposted),
                UNPOSTED_ERROR,
            )
        return unposted

    def on_reorg(self, batch: Batch, why: str) -> None:
        """The receipt is gone or its block changed: the same signed bytes go out again (same nonce,
        same payload), so the batch is posted again and can still never land twice."""
        self.log.warning("%s: batch %d reorged out (%s); re-posting it", self.chain, batch.id, why)
        with self.conn.transaction():
            self.conn.execute(
                "update l2_batches set status = 'broadcast', block_number = null, block_hash = null,"
                " reorgs = reorgs + 1, last_sent_at = now(), updated_at = now() where id = %s",
                (batch.id,),
            )
        self.report.reorged += 1
        for attempt in reversed(batch.attempts):
            if evm.send_raw(self.w3, attempt["raw"]) == "sent":
                break

    def on_nonce_taken(self, batch: Batch) -> None:
        """Our nonce was used by a transaction that is not ours (the signer key is used elsewhere):
        none of this batch's transactions can land any more; its operations go back to pending."""
        reason = f"nonce {batch.nonce} was used by another transaction of {self.signer}"
        self.requeue(batch.id, reason)
        self.report.problems.append(
            f"{self.chain}: batch {batch.id}: {reason}; its operations are pending again"
        )

    def fail_batch(self, batch: Batch, reason: str) -> None:
        with self.conn.transaction():
            self.conn.execute(
                "update l2_batches set status = 'failed', error = %s, updated_at = now() where id = %s",
                (reason, batch.id),
            )
            self.conn.execute(
                "update l2_operations set status = 'failed', error = %s, updated_at = now()"
                " where batch_id = %s",
                (reason, batch.id),
            )
        self.report.failed += batch.op_count
        self.report.problems.append(f"{self.chain}: batch {batch.id} failed: {reason}")

    def replace(self, batch: Batch, latest: dict[str, Any]) -> None:
        """Same nonce, same call data, fees raised by >= bump_percent and to what the node asks now."""
        from eth_account.typed_transactions import TypedTransaction
        from hexbytes import HexBytes

        base_fees, rewards = evm.fee_history(self.w3)
        now_max, now_priority = eip1559_fees(base_fees, rewards, self.opts.min_priority_fee_wei)
        priority = max(bumped(latest["priority"], self.opts.bump_percent), now_priority)
        max_fee = max(bumped(latest["max_fee"], self.opts.bump_percent), now_max, priority)
        gas = int(batch.gas_limit or 0)
        if gas * max_fee + batch.est_l1_fee_wei > self.cfg.max_fee_per_batch:
            if batch.id not in self._capped_bump_noted:
                self._capped_bump_noted.add(batch.id)
                self.report.problems.append(
                    f"{self.chain}: batch {batch.id} is stuck at nonce {batch.nonce} and a fee bump "
                    "would pass MAX_FEE_PER_BATCH; left as is"
                )
            return
        previous = TypedTransaction.from_bytes(HexBytes(latest["raw"])).as_dict()
        fields = evm.tx_fields(
            self.cfg.chain_id,
            int(batch.nonce or 0),
            self.contract,
            bytes(previous["data"]),
            gas,
            max_fee,
            priority,
        )
        raw, tx_hash = evm.sign(fields, self.cfg.signer_key.get_secret_value())  # type: ignore[union-attr]
        with self.conn.transaction():
            self.conn.execute(
                "insert into l2_batch_txs (tx_hash, batch_id, nonce, raw_tx, max_fee_per_gas,"
                " max_priority_fee_per_gas) values (%s, %s, %s, %s, %s, %s)",
                (tx_hash, batch.id, batch.nonce, raw, max_fee, priority),
            )
            self.conn.execute(
                "update l2_batches set tx_hash = %s, raw_tx = %s, max_fee_per_gas = %s,"
                " max_priority_fee_per_gas = %s, bumps = bumps + 1, last_sent_at = now(), updated_at = now()"
                " where id = %s",
                (tx_hash, raw, max_fee, priority, batch.id),
            )
        crashpoint("replaced")
        self.report.txs += 1
        self.report.bumped += 1
        self.log.warning(
            "%s: batch %d stuck at nonce %s; replaced with %s (max fee %d, tip %d)",
            self.chain,
            batch.id,
            batch.nonce,
            tx_hash,
            max_fee,
            priority,
        )
        evm.send_raw(self.w3, raw)


def post_chain(settings: Any, chain: str, options: PostOptions, log: Any = None) -> ChainReport:
    """Connect, make sure the schema exists, and run the protocol for one chain."""
    from scaleops.core.clients import evm_client, postgres_connect
    from tasks.l2.outbox import ensure_schema

    cfg = settings.chains[chain]
    with postgres_connect(settings, autocommit=True) as conn:
        ensure_schema(conn)
        poster = Poster(conn, evm_client(settings, chain), chain, cfg, options, log)
        return poster.run()
