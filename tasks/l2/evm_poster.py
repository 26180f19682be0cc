"""Posting to EVM chains (OP-stack, Arbitrum, zkSync, plain EVM): what differs from the lifecycle in
tasks/l2/poster.py.

One nonce per batch: max(node's pending nonce, highest live nonce + 1). A batch that has a signed
transaction is never signed again with another nonce or payload: a stuck one is replaced at the same
nonce with the same call data and raised fees, and every replacement is kept, so whichever is mined is
found. A receipt is re-checked against the block hash at its height before the batch is confirmed; a
vanished receipt or a changed block hash is a reorg, and the same signed bytes go out again. The
contract skips an operation it already posted (by the outbox's namespace and the operation's id, one id
per key); an operation skipped on chain that was never posted before is failed loudly (see
`skipped_unposted`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from scaleops.core.settings import ChainSettings
from tasks.l2 import evm, outbox
from tasks.l2.fees import bumped, eip1559_fees
from tasks.l2.outbox import Attempt, Batch, Landing, Op, SignedTx
from tasks.l2.poster import (
    CRASH_ENV,
    CRASH_STEPS,
    BatchPoster,
    ChainReport,
    Draft,
    OverBlockLimit,
    Packing,
    PostingError,
    PostOptions,
    Rejected,
    crashpoint,
    lock_key,
)

# the protocol's public names stay importable from here (flows/l2_batch_posting.py, tasks/l2/report.py)
__all__ = [
    "CRASH_ENV",
    "CRASH_STEPS",
    "ChainReport",
    "EvmPoster",
    "PostOptions",
    "PostingError",
    "crashpoint",
    "lock_key",
    "post_chain",
]

MIN_BUMP_PERCENT = 10
# A node can report the signer's nonce past ours a moment before it serves the receipt that explains it:
# "another transaction took our nonce" is only concluded after this long without a receipt.
NONCE_TAKEN_GRACE_SECONDS = 5.0

# how nodes say an estimate needs more gas than a block holds (geth: "gas required exceeds allowance (N)")
OVER_BLOCK_ERRORS = ("exceeds allowance", "exceeds block gas limit")

UNPOSTED_ERROR = (
    "skipped on chain as already posted, but no OperationPosted of its key exists: its outbox id was "
    "used before with this namespace (outbox database reset or restored?); queue it again under a new key"
)


@dataclass
class EvmDraft(Draft):
    calldata: bytes
    nonce: int
    quote: evm.FeeQuote


class EvmPoster(BatchPoster[EvmDraft]):
    """postBatch transactions to the OperationLog contract, EIP-1559 fees with the stack's L1 data fee."""

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

        super().__init__(conn, chain, cfg, options, to_checksum_address(str(cfg.signer_address)), log)
        self.w3 = w3
        self.contract = to_checksum_address(str(cfg.contract))
        self.namespace = 0  # the outbox's namespace on chain, read once the lock is held
        self._capped_bump_noted: set[int] = set()
        self._nonce_passed_at: dict[int, float] = {}

    def before_posting(self) -> None:
        self.namespace = outbox.outbox_namespace(self.conn)
        self.check_from_block()

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

    # -- build, price, sign, send -----------------------------------------------------------------------
    def pack(self, ops: list[Op]) -> Packing:
        """As many operations as fit MAX_BATCH_BYTES of postBatch call data."""
        packed: list[Op] = []
        packed_bytes = 0  # the packed operations' bytes in postBatch's `ops`
        unfit: list[tuple[int, str]] = []
        for op in ops:
            size = len(op.payload_bytes())
            alone = evm.calldata_size([size])
            if alone > self.cfg.max_batch_bytes:
                reason = f"{alone} calldata bytes > MAX_BATCH_BYTES {self.cfg.max_batch_bytes}"
                unfit.append((op.id, f"payload does not fit: {reason}"))
                continue
            if size > evm.MAX_PAYLOAD_BYTES:
                reason = f"{size} bytes > {evm.MAX_PAYLOAD_BYTES} per operation"
                unfit.append((op.id, f"payload does not fit: {reason}"))
                continue
            grown = packed_bytes + evm.OP_HEADER_BYTES + size
            if evm.calldata_bytes(grown) > self.cfg.max_batch_bytes:
                break
            packed.append(op)
            packed_bytes = grown
        return Packing(packed, evm.calldata_bytes(packed_bytes), unfit)

    def next_nonce(self) -> int:
        chain_nonce = evm.nonce_at(self.w3, self.signer, "pending")
        highest = outbox.highest_live_nonce(self.conn, self.chain, self.signer)
        return chain_nonce if highest is None else max(chain_nonce, highest + 1)

    def price(self, batch_id: int, ops: list[Op]) -> EvmDraft:
        """postBatch call data at the next nonce, quoted: L2 gas x max fee plus the stack's L1 data fee.
        A gas limit above the latest block's is OverBlockLimit (on zkSync the pubdata part of the gas
        limit grows with the batch's state diffs and the L1 price)."""
        calldata = evm.post_batch_calldata(
            self.namespace,
            batch_id,
            [o.id for o in ops],
            [o.key for o in ops],
            [o.payload_bytes() for o in ops],
        )
        nonce = self.next_nonce()
        try:
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
        except evm.RpcFailure as exc:
            # the node cannot even estimate it: executing the batch alone needs more than a block's gas
            if any(words in str(exc).lower() for words in OVER_BLOCK_ERRORS):
                raise OverBlockLimit(str(exc)) from None
            raise
        block_limit = evm.block_gas_limit(self.w3)
        if quote.gas_limit > block_limit:
            raise OverBlockLimit(f"gas limit {quote.gas_limit} > block gas limit {block_limit}")
        cost = (
            f"batch of {len(ops)} ops would cost up to {quote.total_wei} wei "
            f"(L2 {quote.l2_fee_wei} + L1 {quote.l1_fee_wei})"
        )
        return EvmDraft(quote.total_wei, cost, calldata, nonce, quote)

    def sign(self, draft: EvmDraft) -> SignedTx:
        quote = draft.quote
        return self.signed(
            draft.nonce,
            draft.calldata,
            quote.gas_limit,
            quote.max_fee_per_gas,
            quote.max_priority_fee_per_gas,
            est_l2_fee_wei=quote.l2_fee_wei,
            est_l1_fee_wei=quote.l1_fee_wei,
        )

    def signed(
        self,
        nonce: int,
        calldata: bytes,
        gas: int,
        max_fee: int,
        priority: int,
        est_l2_fee_wei: int = 0,
        est_l1_fee_wei: int = 0,
    ) -> SignedTx:
        fields = evm.tx_fields(self.cfg.chain_id, nonce, self.contract, calldata, gas, max_fee, priority)
        raw, tx_hash = evm.sign(fields, self.cfg.signer_key.get_secret_value())  # type: ignore[union-attr]
        return SignedTx(
            raw,
            tx_hash,
            gas,
            max_fee,
            est_l2_fee_wei,
            nonce=nonce,
            max_priority_fee_per_gas=priority,
            est_l1_fee_wei=est_l1_fee_wei,
        )

    def send(self, raw: bytes) -> None:
        try:
            evm.send_raw(self.w3, raw)
        except evm.RpcFailure as exc:
            raise Rejected(str(exc)) from None

    # -- follow: receipts, confirmations, reorgs, replacements ------------------------------------------
    def follow(self, batch: Batch) -> None:
        latest = batch.attempts[-1]
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
        elif not evm.transaction_known(self.w3, latest.tx_hash):  # dropped from the pool: send it again
            evm.send_raw(self.w3, latest.raw)

    def find_receipt(self, batch: Batch) -> tuple[Attempt, dict[str, Any]] | None:
        for attempt in reversed(batch.attempts):
            found = evm.receipt(self.w3, attempt.tx_hash)
            if found:
                return attempt, found
        return None

    def on_receipt(self, batch: Batch, attempt: Attempt, rcpt: dict[str, Any]) -> None:
        """Mined: recorded at once; confirmed after CONFIRMATIONS blocks if the block hash still holds."""
        number, block_hash = int(rcpt["blockNumber"], 16), str(rcpt["blockHash"])
        if int(rcpt["status"], 16) != 1:
            self.fail_batch(
                batch.id, batch.op_count, f"transaction {attempt.tx_hash} reverted in block {number}"
            )
            return
        landing = Landing(
            attempt.tx_hash,
            attempt.raw,
            number,
            int(rcpt["gasUsed"], 16),
            block_hash,
            effective_gas_price=int(rcpt.get("effectiveGasPrice") or "0x0", 16),
            l1_fee_wei=int(rcpt["l1Fee"], 16) if rcpt.get("l1Fee") else batch.est_l1_fee_wei,
        )
        if batch.status != "mined" or batch.block_hash != block_hash:
            outbox.mark_mined(self.conn, batch.id, landing)
            batch.status, batch.block_number, batch.block_hash = "mined", number, block_hash
            crashpoint("mined")
        confirmations = evm.head(self.w3) - number + 1
        if confirmations < self.cfg.confirmations:
            return
        if evm.block_hash_at(self.w3, number) != block_hash:
            self.on_reorg(batch, f"block {number} changed hash")
            return
        self.confirm(batch, landing, confirmations, self.skipped_unposted(batch, rcpt), UNPOSTED_ERROR)

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
        ops = outbox.batch_operations(self.conn, batch.id)
        missing = {"0x" + evm.op_key(op.key).hex(): op.id for op in ops}
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
        outbox.mark_reorged(self.conn, batch.id)
        self.report.reorged += 1
        for attempt in reversed(batch.attempts):
            if evm.send_raw(self.w3, attempt.raw) == "sent":
                break

    def on_nonce_taken(self, batch: Batch) -> None:
        """Our nonce was used by a transaction that is not ours (the signer key is used elsewhere):
        none of this batch's transactions can land any more; its operations go back to pending."""
        reason = f"nonce {batch.nonce} was used by another transaction of {self.signer}"
        self.requeue(batch.id, reason)
        self.report.problems.append(
            f"{self.chain}: batch {batch.id}: {reason}; its operations are pending again"
        )

    def replace(self, batch: Batch, latest: Attempt) -> None:
        """Same nonce, same call data, fees raised by >= bump_percent and to what the node asks now."""
        from eth_account.typed_transactions import TypedTransaction
        from hexbytes import HexBytes

        base_fees, rewards = evm.fee_history(self.w3)
        now_max, now_priority = eip1559_fees(base_fees, rewards, self.opts.min_priority_fee_wei)
        priority = max(
            bumped(int(latest.max_priority_fee_per_gas or 0), self.opts.bump_percent), now_priority
        )
        max_fee = max(bumped(int(latest.max_fee_per_gas or 0), self.opts.bump_percent), now_max, priority)
        gas = int(batch.gas_limit or 0)
        if gas * max_fee + batch.est_l1_fee_wei > self.cfg.max_fee_per_batch:
            if batch.id not in self._capped_bump_noted:
                self._capped_bump_noted.add(batch.id)
                self.report.problems.append(
                    f"{self.chain}: batch {batch.id} is stuck at nonce {batch.nonce} and a fee bump "
                    "would pass MAX_FEE_PER_BATCH; left as is"
                )
            return
        previous = TypedTransaction.from_bytes(HexBytes(latest.raw)).as_dict()
        tx = self.signed(int(batch.nonce or 0), bytes(previous["data"]), gas, max_fee, priority)
        outbox.record_replacement(self.conn, batch.id, tx)
        crashpoint("replaced")
        self.count_signed(tx)
        self.report.bumped += 1
        self.log.warning(
            "%s: batch %d stuck at nonce %s; replaced with %s (max fee %d, tip %d)",
            self.chain,
            batch.id,
            batch.nonce,
            tx.tx_hash,
            max_fee,
            priority,
        )
        evm.send_raw(self.w3, tx.raw)

    # -- the report -----------------------------------------------------------------------------------
    def count_fees(self, landing: Landing) -> None:
        gas = int(landing.gas_used or 0)
        self.report.gas_used += gas
        self.report.l2_fee_wei += gas * int(landing.effective_gas_price or 0)
        self.report.l1_fee_wei += int(landing.l1_fee_wei or 0)

    def fees_paid(self) -> int:
        return self.report.l2_fee_wei + self.report.l1_fee_wei


def post_chain(settings: Any, chain: str, options: PostOptions, log: Any = None) -> ChainReport:
    """Connect, make sure the schema exists, and run the protocol for one EVM chain."""
    from scaleops.core.clients import evm_client, postgres_connect

    cfg = settings.chains[chain]
    with postgres_connect(settings, autocommit=True) as conn:
        outbox.ensure_schema(conn)
        poster = EvmPoster(conn, evm_client(settings, chain), chain, cfg, options, log)
        return poster.run()
