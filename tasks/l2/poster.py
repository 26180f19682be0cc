"""The exactly-once posting protocol of duty l2-batch-posting, for one chain and one signer.

    lock (chain, signer) -> reconcile -> drain: claim + pack -> price (fee cap) -> sign
    -> write ahead: raw tx + hash with the operations moved to `signed` (ONE transaction) -> broadcast
    -> track: confirmations, replacements or re-signing, reorg re-checks

`BatchPoster` owns that lifecycle. A chain family declares itself in a subclass that supplies only what
differs: which operations fit a transaction (`pack`), what it costs (`price`), the signed bytes (`sign`),
handing them to the node (`send`) and following a broadcast batch until it is confirmed (`follow`):
tasks/l2/evm_poster.py (nonces, fee bumps at the same nonce, receipts, reorgs) and
tasks/l2/solana_poster.py (blockhash expiry, re-signing, signature statuses). The outbox's SQL is in
tasks/l2/outbox.py.

Why it is exactly once: nothing is broadcast that is not first durably recorded; every transaction
signed for a batch is kept, so whichever one lands is found; a batch is signed again only where no
earlier transaction of it can land any more (the same nonce on EVM, an expired blockhash on Solana);
and on EVM the contract itself skips an operation it already posted. Every step is safe to repeat, so a
crash (or a task retry) at any point is followed by a run that reconciles and carries on.

`SCALEOPS_L2_CRASH_AT=<step>` makes the process SIGKILL itself at that step (crash tests only).
"""

from __future__ import annotations

import logging
import os
import signal
import time
from abc import ABC, abstractmethod
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, Field

from scaleops.core.settings import ChainSettings
from tasks.l2 import outbox
from tasks.l2.outbox import Batch, Landing, Op, SignedTx

CRASH_ENV = "SCALEOPS_L2_CRASH_AT"
CRASH_STEPS = ("batched", "signed", "sent", "broadcast", "mined", "confirmed", "replaced")


def crashpoint(step: str) -> None:
    """Failpoint for the crash tests: die here, as abruptly as a power cut, when asked to."""
    if os.environ.get(CRASH_ENV) == step:
        os.kill(os.getpid(), signal.SIGKILL)


def lock_key(chain: str, signer: str) -> str:
    """The advisory lock that keeps two runs for one (chain, signer) apart."""
    return f"scaleops.l2:{chain}:{signer.lower()}"


class PostingError(RuntimeError):
    """The chain cannot be posted to as configured (message names the setting, never a secret)."""


class Unpostable(PostingError):
    """This batch can never be posted as it is (e.g. its simulation fails): it fails with the message."""


class OverBlockLimit(Exception):
    """The batch's transaction needs more than one block can hold (its gas limit above the block gas
    limit): the node would refuse it every time. Fewer operations may fit."""


class Rejected(Exception):
    """The node refused a signed transaction outright: it is not in the pool and cannot land as it is."""


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
    split: int = Field(default=0, description="batches cut down to fit the block gas limit")
    resigned: int = Field(default=0, description="Solana: re-signed after the blockhash expired unseen")
    lamports: int | None = Field(default=None, description="Solana: fees paid this run")
    max_tx_bytes: int | None = Field(default=None, description="Solana: largest transaction signed")
    batch_hashes: list[str] = Field(default_factory=list)
    problems: list[str] = Field(default_factory=list)


@dataclass
class Packing:
    """What `pack` made of the oldest pending operations."""

    ops: list[Op]  # the operations of the new batch, in order
    size_bytes: int  # the batch's size as the chain limits it (EVM call data, Solana transaction)
    unfit: list[tuple[int, str]] = field(default_factory=list)  # (operation id, why no batch can carry it)


@dataclass
class Draft:
    """A batch's transaction built and priced, not signed yet."""

    max_cost: int  # the most it can cost (wei, lamports): what MAX_FEE_PER_BATCH caps
    cost: str  # that cost in words, for the fee-cap problem


DraftT = TypeVar("DraftT", bound=Draft)


def at_nonce(nonce: int | None) -> str:
    return "" if nonce is None else f" at nonce {nonce}"


class BatchPoster(ABC, Generic[DraftT]):
    """The posting lifecycle for one chain and one signer; subclasses supply the chain's side."""

    def __init__(
        self,
        conn: Any,
        chain: str,
        cfg: ChainSettings,
        options: PostOptions,
        signer: str,
        log: logging.Logger | logging.LoggerAdapter[Any] | None = None,
    ):
        self.conn, self.chain, self.cfg, self.opts, self.signer = conn, chain, cfg, options, signer
        self.log = log or logging.getLogger(type(self).__module__)
        self.max_ops = min(options.max_batch_ops or cfg.max_batch_ops, cfg.max_batch_ops)
        self.report = ChainReport(chain=chain, kind=cfg.kind, signer=signer)

    # -- what a chain family supplies -----------------------------------------------------------------
    def before_posting(self) -> None:
        """Checks and reads that posting needs, with the lock held (not on a dry run)."""

    @abstractmethod
    def pack(self, ops: list[Op]) -> Packing:
        """Which of `ops` (oldest first) go into one transaction; those no transaction can carry are unfit."""

    @abstractmethod
    def price(self, batch_id: int, ops: list[Op]) -> DraftT:
        """The batch's transaction, built and priced (raise Unpostable if it can never be posted,
        OverBlockLimit if it needs more than one block holds)."""

    @abstractmethod
    def sign(self, draft: DraftT) -> SignedTx:
        """The signed transaction of a priced draft."""

    @abstractmethod
    def send(self, raw: bytes) -> None:
        """Hand signed bytes to the node; "already known" is an answer, an outright refusal is Rejected."""

    @abstractmethod
    def follow(self, batch: Batch) -> None:
        """One look at a broadcast (or mined) batch: confirm, replace, re-sign, rebroadcast or wait."""

    @abstractmethod
    def count_fees(self, landing: Landing) -> None:
        """Add what a confirmed batch's transaction paid to the report."""

    @abstractmethod
    def fees_paid(self) -> int:
        """Everything this run's confirmed batches paid, in the chain's fee unit."""

    def count_signed(self, tx: SignedTx) -> None:
        """Count a transaction signed this run (first, replacement or re-signed) in the report."""
        self.report.txs += 1

    # -- the run --------------------------------------------------------------------------------------
    def run(self) -> ChainReport:
        """Reconcile, drain and track under the (chain, signer) lock; a dry run only counts what waits."""
        with outbox.posting_lock(self.conn, lock_key(self.chain, self.signer)) as locked:
            if not locked:
                self.report.problems.append(
                    f"{self.chain}: another run holds the posting lock for signer {self.signer}; nothing done"
                )
            elif not self.opts.dry_run:  # a dry run signs and sends nothing, not even a replacement
                self.before_posting()
                self.reconcile()
                self.drain()
                self.track()
        self.report.pending = outbox.count_open(self.conn, self.chain)
        posted = self.report.ops_posted
        self.report.fee_per_op = self.fees_paid() // posted if posted else 0
        return self.report

    def reconcile(self) -> None:
        """Batches left unsigned go back to pending; every live batch is checked once (confirmation,
        rebroadcast of a signed-but-unseen transaction) before anything new is signed."""
        released = outbox.release_unsigned_batches(self.conn, self.chain, self.signer)
        if released:
            self.log.info("%s: %d operation(s) of unsigned batches back to pending", self.chain, released)
        live = self.live_batches()
        if live:
            self.log.info("%s: reconciling %d live batch(es)", self.chain, len(live))
        for batch in live:
            self.check(batch)

    def live_batches(self) -> list[Batch]:
        return outbox.live_batches(self.conn, self.chain, self.signer)

    # -- drain ----------------------------------------------------------------------------------------
    def drain(self) -> None:
        """Claim, sign and send batches until `opts.limit` operations went out, none is pending, or one
        must stop the run (fee cap, refused by the node)."""
        remaining = self.opts.limit
        while remaining > 0:
            claimed = self.claim(min(self.max_ops, remaining))
            if claimed is None:
                return
            batch_id, ops = claimed
            crashpoint("batched")
            sent = self.sign_and_send(batch_id, ops)
            if sent is None:
                return
            remaining -= sent

    def claim(self, limit: int) -> tuple[int, list[Op]] | None:
        """Pack the oldest pending operations into a new batch (status `batched`), in one transaction;
        those no batch can carry are failed with the reason. None: nothing is pending; (0, []): all
        claimed operations were unfit."""
        with self.conn.transaction():
            pending = outbox.pending_operations(self.conn, self.chain, limit)
            if not pending:
                return None
            packing = self.pack(pending)
            outbox.fail_unpostable(self.conn, self.report, self.chain, packing.unfit)
            if not packing.ops:
                return 0, []
            batch_id = outbox.create_batch(
                self.conn, self.chain, self.signer, packing.ops, packing.size_bytes
            )
        return batch_id, packing.ops

    def sign_and_send(self, batch_id: int, ops: list[Op]) -> int | None:
        """Price (cutting the batch down until it fits a block), check the fee cap, sign, write ahead,
        broadcast. Returns how many operations the batch kept; None: stop draining."""
        if not ops:
            return 0
        try:
            draft = self.fitted(batch_id, ops)
        except Unpostable as exc:
            self.fail_batch(batch_id, len(ops), str(exc))
            return len(ops)
        if draft.max_cost > self.cfg.max_fee_per_batch:
            reason = f"fee cap: {draft.cost} > MAX_FEE_PER_BATCH {self.cfg.max_fee_per_batch}"
            outbox.release_batch(self.conn, batch_id, reason)
            self.report.fee_capped += len(ops)
            self.report.problems.append(f"{self.chain}: {reason}; operations left pending")
            self.log.warning("%s: %s", self.chain, reason)
            return None
        tx = self.sign(draft)
        outbox.record_signed(self.conn, batch_id, tx)
        self.count_signed(tx)
        crashpoint("signed")
        if not self.broadcast(batch_id, tx.raw, tx.nonce):
            return None
        self.log.info(
            "%s: batch %d (%d ops) sent%s: %s", self.chain, batch_id, len(ops), at_nonce(tx.nonce), tx.tx_hash
        )
        return len(ops)

    def fitted(self, batch_id: int, ops: list[Op]) -> DraftT:
        """The batch priced, halved (still unsigned, `ops` cut in place) until its transaction fits a
        block: the operations cut off are pending again and go into the next batch of this run, which
        starts at the size that fitted. A single operation that does not fit is Unpostable. Sent as it
        is, a transaction over the block gas limit is refused by the node every time, and its batch
        would go back to pending and be retried, whole, by every run."""
        while True:
            try:
                return self.price(batch_id, ops)
            except OverBlockLimit as exc:
                if len(ops) == 1:
                    raise Unpostable(f"one operation alone does not fit a block: {exc}") from None
                keep = ops[: len(ops) // 2]
                released = outbox.shrink_batch(
                    self.conn, batch_id, [o.id for o in keep], self.pack(keep).size_bytes
                )
                self.report.split += 1
                self.max_ops = len(keep)
                self.log.warning(
                    "%s: batch %d of %d ops does not fit a block (%s): cut to %d, %d pending again",
                    self.chain,
                    batch_id,
                    len(ops),
                    exc,
                    len(keep),
                    released,
                )
                del ops[len(keep) :]

    def broadcast(self, batch_id: int, raw: bytes, nonce: int | None) -> bool:
        """Send signed bytes that are written ahead; False when the node refuses them (see `rejected`)."""
        try:
            self.send(raw)
        except Rejected as exc:
            self.rejected(batch_id, nonce, str(exc))
            return False
        crashpoint("sent")
        outbox.mark_broadcast(self.conn, batch_id)
        crashpoint("broadcast")
        return True

    def rejected(self, batch_id: int, nonce: int | None, reason: str) -> None:
        """The node refused a signed transaction outright (not "already known", not "nonce too low"): it
        is not in the pool and cannot land as it is, so the batch fails, its nonce is free again and its
        operations go back to pending (should the refused bytes ever land after all, the contract skips
        the operations they carry a second time)."""
        self.requeue(batch_id, f"rejected by the node: {reason}")
        self.report.problems.append(
            f"{self.chain}: batch {batch_id}{at_nonce(nonce)} was rejected by the node ({reason}); "
            "its operations are pending again"
        )

    def requeue(self, batch_id: int, reason: str) -> None:
        """The batch failed as a whole and none of its transactions can land: its operations go back to
        pending, to be posted in a later batch."""
        outbox.requeue_batch(self.conn, batch_id, reason)

    def fail_batch(self, batch_id: int, op_count: int, reason: str) -> None:
        """The batch and its operations fail for good (reverted, or it can never be posted)."""
        outbox.fail_batch(self.conn, batch_id, reason)
        self.report.failed += op_count
        self.report.problems.append(f"{self.chain}: batch {batch_id} failed: {reason}")

    # -- track ----------------------------------------------------------------------------------------
    def track(self) -> None:
        """Check every live batch until none is left or `opts.wait_seconds` have passed; what is still
        live then is picked up by the next run."""
        deadline = time.monotonic() + self.opts.wait_seconds
        while True:
            live = self.live_batches()
            if not live:
                return
            for batch in live:
                self.check(batch)
            if not self.live_batches() or time.monotonic() >= deadline:
                return
            time.sleep(self.opts.poll_seconds)

    def check(self, batch: Batch) -> None:
        """A signed batch is (re)broadcast with the very same bytes; a broadcast one is followed."""
        if not batch.attempts:  # cannot happen: a live batch always has its transaction recorded
            raise PostingError(f"batch {batch.id} is {batch.status} without a signed transaction")
        if batch.status == "signed":  # signed, maybe sent
            self.broadcast(batch.id, batch.attempts[-1].raw, batch.nonce)
            return
        self.follow(batch)

    def confirm(
        self,
        batch: Batch,
        landing: Landing,
        confirmations: int,
        unposted: Collection[int] = (),
        unposted_error: str = "",
    ) -> None:
        """The batch and its operations are confirmed (those in `unposted` fail with `unposted_error`:
        they are not on chain), in one transaction, and counted once in the report."""
        op_count = outbox.confirm_batch(self.conn, batch.id, landing, confirmations, unposted, unposted_error)
        crashpoint("confirmed")
        if op_count is None:  # confirmed before: counted by the run that did it
            return
        if unposted:
            self.report.failed += len(unposted)
            self.report.problems.append(
                f"{self.chain}: batch {batch.id}: {len(unposted)} operation(s) failed: {unposted_error}"
            )
        self.report.ops_posted += op_count - len(unposted)
        self.report.batches += 1
        self.report.batch_hashes.append(landing.tx_hash)
        self.count_fees(landing)
